--
-- 40_privileges: nothing is open to PUBLIC; an application role needs only
-- EXECUTE on valid_token / token_rejected (and may read connection_status);
-- an admin role gets the admin functions.  No role reads the tables, and
-- the functions do not depend on the caller's search_path.
--
\set VERBOSITY terse

-- Roles (dropped first in case an earlier run left them behind).
SET client_min_messages = warning;
DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['app_role', 'admin_role', 'nobody_role'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('DROP OWNED BY %I', r);
            EXECUTE format('DROP ROLE %I', r);
        END IF;
    END LOOP;
END $$;
RESET client_min_messages;
CREATE ROLE app_role NOLOGIN;
CREATE ROLE admin_role NOLOGIN;
CREATE ROLE nobody_role NOLOGIN;

-- Nothing in schema oauth is granted to PUBLIC, except the function the
-- connection_status view calls as its reader (it tells a session only its
-- own workspace binding; the schema itself stays closed).
SELECT has_schema_privilege('nobody_role', 'oauth', 'USAGE') AS schema_usage;
SELECT coalesce(string_agg(oid::regprocedure::text, ', '), '') AS functions_executable_by_public
  FROM pg_proc WHERE pronamespace = 'oauth'::regnamespace
   AND has_function_privilege('nobody_role', oid, 'EXECUTE');
SELECT count(*) AS relations_readable_by_public
  FROM pg_class WHERE relnamespace = 'oauth'::regnamespace AND relkind IN ('r', 'v', 'S', 'm')
   AND (has_table_privilege('nobody_role', oid, 'SELECT')
        OR has_table_privilege('nobody_role', oid, 'INSERT')
        OR has_table_privilege('nobody_role', oid, 'UPDATE')
        OR has_table_privilege('nobody_role', oid, 'DELETE'));
-- every SECURITY DEFINER function pins its search_path
SELECT count(*) AS definer_functions_without_search_path
  FROM pg_proc WHERE pronamespace = 'oauth'::regnamespace AND prosecdef
   AND NOT EXISTS (SELECT 1 FROM unnest(proconfig) c WHERE c LIKE 'search_path=%');

-- The README's grants.  Application role:
GRANT USAGE ON SCHEMA oauth TO app_role;
GRANT EXECUTE ON FUNCTION oauth.valid_token(text, uuid, interval),
                          oauth.token_rejected(text, uuid, text) TO app_role;
GRANT SELECT ON oauth.connection_status TO app_role;
-- Admin role:
GRANT USAGE ON SCHEMA oauth TO admin_role;
GRANT EXECUTE ON FUNCTION
    oauth.register_provider(text, text, text, text, text, text, interval, interval, interval,
                            jsonb, int, text, text, jsonb, text[], text, text[], interval),
    oauth.create_connection(text, text, text, text, text, timestamptz, text[], jsonb),
    oauth.reauthorize(text, uuid, text, text, timestamptz, text[]),
    oauth.delete_connection(text, uuid),
    oauth.refresh(text, uuid),
    oauth.refresh_due(int),
    oauth.rotate_key(),
    oauth.stats()
  TO admin_role;
DO $$
BEGIN
    -- oauth.revoke is granted too where this version has it
    IF to_regprocedure('oauth.revoke(text, uuid)') IS NOT NULL THEN
        GRANT EXECUTE ON FUNCTION oauth.revoke(text, uuid) TO admin_role;
    END IF;
END $$;
GRANT SELECT ON oauth.connection_status, oauth.events TO admin_role;

-- A connection to work with (as superuser).
SELECT try($$SELECT oauth.register_provider('p40', 'https://auth.example.com/token', 'client-40', 'secret-40')$$);
SELECT oauth.create_connection('ws40_a', 'p40', 'acct-1', 'at-secret-40', 'rt-secret-40',
                               now() + interval '1 day') AS c40 \gset

-- A role without grants can do nothing: insufficient_privilege (42501).
SET ROLE nobody_role;
SELECT try('SELECT count(*) FROM oauth.connections');
SELECT try('SELECT count(*) FROM oauth.providers');
SELECT try('SELECT count(*) FROM oauth.events');
SELECT try('SELECT count(*) FROM oauth.connection_status');
SELECT try(format('SELECT oauth.valid_token(%L, %L)', 'ws40_a', :'c40'));
SELECT try($$SELECT oauth.create_connection('ws40_a', 'p40', 'acct-2', 'at-x', 'rt-x', now() + interval '1 day')$$);
RESET ROLE;

-- The application role reads tokens and the status, and nothing else.
SET ROLE app_role;
SELECT oauth.valid_token('ws40_a', :'c40');
SELECT oauth.valid_token('ws40_a', :'c40', interval '1 hour');
SELECT workspace_id, provider, provider_account_id, state, has_refresh_token, version
  FROM oauth.connection_status WHERE workspace_id = 'ws40_a';
-- tenant scoping holds for it too
SELECT try(format('SELECT oauth.valid_token(%L, %L)', 'ws40_other', :'c40'));
-- a rejected token that was already replaced: nothing happens
SELECT try(format('SELECT oauth.token_rejected(%L, %L, %L)', 'ws40_a', :'c40', 'at-some-older-token'));
-- no table, no internal function, no admin function
SELECT try('SELECT count(*) FROM oauth.connections');
SELECT try('SELECT count(*) FROM oauth.providers');
SELECT try('SELECT count(*) FROM oauth.events');
SELECT try('SELECT count(*) FROM oauth.code_redemptions');
SELECT try($$UPDATE oauth.connections SET expires_at = NULL$$);
SELECT try($$SELECT oauth._open('\x00'::bytea, 'x')$$);
SELECT try($$SELECT oauth._seal('x', 'connection/x/access')$$);
SELECT try($$SELECT oauth._active_key_id()$$);
SELECT try($$SELECT oauth.create_connection('ws40_a', 'p40', 'acct-2', 'at-x', 'rt-x', now() + interval '1 day')$$);
SELECT try($$SELECT oauth.register_provider('p40_app', 'https://auth.example.com/token', 'c', 's')$$);
SELECT try(format('SELECT oauth.delete_connection(%L, %L)', 'ws40_a', :'c40'));
SELECT try(format('SELECT oauth.refresh(%L, %L)', 'ws40_a', :'c40'));
SELECT try('SELECT oauth.rotate_key()');
-- oauth.allow_http is a superuser setting
SELECT try('SET oauth.allow_http = on');
-- valid_token does not depend on search_path
SET search_path = pg_catalog;
SELECT oauth.valid_token('ws40_a', :'c40') AS with_pg_catalog_only;
SET search_path = '';
SELECT oauth.valid_token('ws40_a', :'c40') AS with_empty_search_path;
RESET search_path;
RESET ROLE;

-- The admin role manages providers and connections through the functions,
-- but does not read the tables either.
SET ROLE admin_role;
SELECT try($$SELECT oauth.register_provider('p40_admin', 'https://auth.example.com/token', 'client-40a', 'secret-40a')$$);
SELECT oauth.create_connection('ws40_b', 'p40_admin', 'acct-1', 'at-secret-40b', 'rt-secret-40b',
                               now() + interval '1 day') AS c40b \gset
SELECT try(format('SELECT oauth.reauthorize(%L, %L, %L, %L, now() + interval ''2 days'')',
                  'ws40_b', :'c40b', 'at-secret-40c', 'rt-secret-40c'));
SELECT workspace_id, provider, state, version FROM oauth.connection_status WHERE workspace_id = 'ws40_b';
SELECT event, workspace_id, provider FROM oauth.events
 WHERE provider IN ('p40', 'p40_admin') ORDER BY id;
SELECT try('SELECT count(*) FROM oauth.connections');
SELECT try('SELECT count(*) FROM oauth.providers');
SELECT try($$SELECT oauth._open('\x00'::bytea, 'x')$$);
SELECT try(format('SELECT oauth.valid_token(%L, %L)', 'ws40_b', :'c40b'));
SELECT try('SET oauth.allow_http = on');
SELECT oauth.rotate_key() AS re_encrypted;
SELECT refreshes_attempted >= 0 AS stats_readable FROM oauth.stats();
-- search_path does not matter to the SQL functions either
SET search_path = '';
SELECT public.try($$SELECT oauth.create_connection('ws40_b', 'p40_admin', 'acct-2', 'at-secret-40d', NULL, NULL)$$);
RESET search_path;
SELECT state, has_refresh_token, expires_at IS NULL AS no_expiry
  FROM oauth.connection_status WHERE workspace_id = 'ws40_b' AND provider_account_id = 'acct-2';
RESET ROLE;

-- What the admin stored, the application reads.
SET ROLE app_role;
SELECT oauth.valid_token('ws40_b', :'c40b');
RESET ROLE;

-- The admin deletes.
SET ROLE admin_role;
SELECT try(format('SELECT oauth.delete_connection(%L, %L)', 'ws40_b', :'c40b'));
RESET ROLE;
SELECT count(*) AS c40b_rows FROM oauth.connections WHERE id = :'c40b';

-- Clean up the roles so that the test can run again.
DROP OWNED BY app_role, admin_role, nobody_role;
DROP ROLE app_role, admin_role, nobody_role;
SELECT count(*) AS roles_left FROM pg_roles WHERE rolname IN ('app_role', 'admin_role', 'nobody_role');
