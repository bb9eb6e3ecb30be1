-- oauth_tokens upgrade script: 1.0 -> 1.1.
--
-- ALTER EXTENSION oauth_tokens UPDATE runs this file on a database that has
-- the frozen 1.0 (oauth_tokens--1.0.sql).  The result must equal a fresh
-- CREATE EXTENSION of 1.1 (the concatenation of src/sql/*.sql):
-- test/t/400_upgrade.pl compares every function, table, column, constraint,
-- index, view, sequence, trigger, grant, comment and dump marking of the two.
--
-- Rules for every block below:
--  - one block per task, headed by a comment naming it; add blocks at the
--    end, never edit another task's block;
--  - the same change as in src/sql/*.sql, written so that it applies to a
--    1.0 schema (ALTER TABLE ... ADD COLUMN appends: C code reads columns by
--    name, never by position; name constraints that you add or replace);
--  - a function created here is granted to nobody: revoke EXECUTE from PUBLIC
--    for it, as src/sql/90_grants.sql does at install time;
--  - CREATE OR REPLACE FUNCTION keeps the function's grants; a changed
--    signature needs DROP FUNCTION first (and the grants written again);
--  - a new table that holds users' data is marked for pg_dump with
--    pg_catalog.pg_extension_config_dump (and its sequences too).

\echo Use "ALTER EXTENSION oauth_tokens UPDATE TO '1.1'" to load this file. \quit

-- Issue 8 (engine): oauth.refresh_jobs(), the refresh jobs by state.
CREATE FUNCTION oauth.refresh_jobs(
    OUT connection_id uuid, OUT state text, OUT requested_by text,
    OUT forced boolean, OUT token_rejected boolean, OUT waiters int,
    OUT state_since timestamptz)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'oauth_refresh_jobs' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION oauth.refresh_jobs() FROM PUBLIC;

-- ==== security (issue 10): templated hosts fail closed, one URL filler in
-- C (src/urls.c) for token, revoke and authorize URLs, hostile answers,
-- concurrent code exchanges.  Function bodies are copies of src/sql;
-- register_provider and _store_grant, which later blocks replace, are
-- written once, in their last block (durable, grant).
DROP FUNCTION oauth._fill_url(text, jsonb);
CREATE FUNCTION oauth._fill_url(provider text, url text, metadata jsonb, allowed_hosts text[])
RETURNS text AS 'MODULE_PATHNAME', 'oauth_fill_url_sql' LANGUAGE C STABLE;
CREATE FUNCTION oauth._check_url_template(what text, url text, allowed_hosts text[]) RETURNS void
    AS 'MODULE_PATHNAME', 'oauth_check_url_template_sql' LANGUAGE C IMMUTABLE;
REVOKE ALL ON FUNCTION oauth._fill_url(text, text, jsonb, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION oauth._check_url_template(text, text, text[]) FROM PUBLIC;

CREATE OR REPLACE FUNCTION oauth._due_connections(max_connections int)
RETURNS TABLE (id uuid, version bigint, workspace_id text, provider text)
LANGUAGE sql STABLE
-- refresh_due() runs this in the caller's session: resolve in pg_catalog only
SET search_path = pg_catalog, pg_temp AS $$
    SELECT d.id, d.version, d.workspace_id, d.provider
      FROM (SELECT c.id, c.version, c.workspace_id, c.provider, c.refresh_after,
                   row_number() OVER (PARTITION BY c.workspace_id ORDER BY c.refresh_after) AS rn
              FROM oauth.connections c
             WHERE c.refresh_after <= now()
               AND c.reauth_required_at IS NULL
               AND c.revoked_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM oauth.providers p
                                WHERE p.name = c.provider AND p.paused_at IS NOT NULL)) d
     ORDER BY d.rn, d.refresh_after
     LIMIT max_connections
$$;

CREATE OR REPLACE FUNCTION oauth.authorize_url(provider text, redirect_uri text, state text,
                                    scope text[] DEFAULT '{}', code_challenge text DEFAULT NULL,
                                    metadata jsonb DEFAULT '{}')
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p oauth.providers;
    scopes text[] := '{}';
    s text;
    q text;
    k text;
    v text;
BEGIN
    PERFORM oauth._not_null('provider', provider);
    PERFORM oauth._not_null('redirect_uri', redirect_uri);
    PERFORM oauth._not_null('state', state);
    p := oauth._provider(provider);
    IF p.authorize_url IS NULL THEN
        RAISE EXCEPTION 'provider "%" has no authorize_url', provider
            USING ERRCODE = 'OA004', HINT = 'Set authorize_url with oauth.register_provider().';
    END IF;
    IF redirect_uri !~ '^[A-Za-z][A-Za-z0-9+.-]*://' THEN
        RAISE EXCEPTION 'invalid redirect_uri "%"', redirect_uri USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF code_challenge IS NOT NULL AND code_challenge !~ '^[A-Za-z0-9_-]{43}$' THEN
        RAISE EXCEPTION 'code_challenge must be an S256 challenge (43 base64url characters)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- the provider's required scopes first, then the requested ones, once each
    FOREACH s IN ARRAY p.required_scopes || coalesce(scope, '{}') LOOP
        IF s <> '' AND NOT s = ANY (scopes) THEN
            scopes := scopes || s;
        END IF;
    END LOOP;
    q := 'response_type=code'
      || '&client_id=' || oauth._urlencode(p.client_id)
      || '&redirect_uri=' || oauth._urlencode(redirect_uri);
    IF cardinality(scopes) > 0 THEN
        q := q || '&scope=' || oauth._urlencode(array_to_string(scopes, p.scope_separator));
    END IF;
    q := q || '&state=' || oauth._urlencode(state);
    IF code_challenge IS NOT NULL THEN
        q := q || '&code_challenge=' || oauth._urlencode(code_challenge)
               || '&code_challenge_method=S256';
    END IF;
    FOR k, v IN SELECT e.key, e.value FROM jsonb_each_text(p.authorize_params) e ORDER BY e.key LOOP
        q := q || '&' || oauth._urlencode(k) || '=' || oauth._urlencode(v);
    END LOOP;
    RETURN oauth._fill_url(p.name, p.authorize_url, coalesce(metadata, '{}'), p.allowed_hosts)
        || CASE WHEN p.authorize_url LIKE '%?%' THEN '&' ELSE '?' END || q;
END $$;

CREATE OR REPLACE FUNCTION oauth.exchange_code(workspace_id text, provider text, code text, redirect_uri text,
                                    code_verifier text DEFAULT NULL,
                                    provider_account_id text DEFAULT NULL,
                                    metadata jsonb DEFAULT '{}')
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    h bytea;
    r record;
    v_id uuid;
    v_account text;
    v_token_url text;
    v_allowed_hosts text[];
    v_paused boolean;
    v_pause_reason text;
BEGIN
    PERFORM oauth._not_null('workspace_id', workspace_id);
    PERFORM oauth._not_null('provider', provider);
    PERFORM oauth._not_null('code', code);
    PERFORM oauth._not_null('redirect_uri', redirect_uri);
    PERFORM oauth._not_null('metadata', metadata);
    PERFORM oauth._check_identifier('workspace_id', workspace_id, 256);
    PERFORM oauth._check_identifier('provider_account_id', provider_account_id, 256);
    PERFORM oauth._check_identifier('code', code, 8192);
    PERFORM oauth._check_identifier('redirect_uri', redirect_uri, 2048);
    PERFORM oauth._check_workspace_binding(workspace_id);
    IF workspace_id = '' OR code = '' THEN
        RAISE EXCEPTION 'workspace_id and code must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_typeof(metadata) <> 'object' THEN
        RAISE EXCEPTION 'metadata must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT pr.token_url, pr.allowed_hosts, pr.paused_at IS NOT NULL, pr.pause_reason
      INTO v_token_url, v_allowed_hosts, v_paused, v_pause_reason
      FROM oauth._provider(provider) pr;
    -- what would stop the request before it is sent (a paused provider, a
    -- token URL that cannot be built) fails before the code is claimed: a
    -- code that was never sent stays usable for a corrected call
    IF v_paused THEN
        RAISE EXCEPTION 'provider "%" is paused after a client authentication failure', provider
            USING ERRCODE = 'OA004', DETAIL = coalesce(v_pause_reason, ''),
                  HINT = 'Fix its client credentials with oauth.register_provider(); that resumes it.';
    END IF;
    PERFORM oauth._fill_url(provider, v_token_url, metadata, v_allowed_hosts);
    h := sha256(convert_to(code, 'UTF8'));
    IF EXISTS (SELECT 1 FROM oauth.code_redemptions cr WHERE cr.code_sha256 = h)
       OR NOT oauth._claim_code(h) THEN
        RAISE EXCEPTION 'authorization code was already sent to the provider'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Codes are single use; send the customer through oauth.authorize_url() again.';
    END IF;
    r := oauth._provider_call(provider, 'token',
            jsonb_strip_nulls(jsonb_build_object('grant_type', 'authorization_code', 'code', code,
                'redirect_uri', redirect_uri, 'code_verifier', code_verifier)),
            metadata);
    IF r.klass <> 'success' THEN
        PERFORM oauth._raise_call_failure('authorization code', provider, r);
    END IF;
    -- an account id the provider sends is kept as it is up to the limit, and
    -- stands for itself by its hash beyond: the grant is stored either way
    v_account := coalesce(provider_account_id,
                          oauth._account_key(coalesce(r.metadata ->> 'user_id', r.metadata ->> 'team.id',
                              r.metadata ->> 'realmId', r.metadata ->> 'bot_id', r.metadata ->> 'id')),
                          encode(h, 'hex'));
    v_id := oauth._store_grant(workspace_id, provider, v_account, 'authorization_code', r, '{}', metadata);
    INSERT INTO oauth.code_redemptions (code_sha256, provider, workspace_id, connection_id, outcome)
    VALUES (h, provider, workspace_id, v_id, 'success');
    RETURN v_id;
END $$;

-- Presets with a templated host carry allowed_hosts (Salesforce loses
-- *.force.com, which hosts customers' sites); providers registered from
-- those presets with the old lists get the new ones.
COMMENT ON COLUMN oauth.provider_presets.allowed_hosts IS
    'Hosts ("*.example.com" or exact) that a {placeholder} host in any of the preset''s URLs may name.';
UPDATE oauth.provider_presets
   SET allowed_hosts = CASE name
       WHEN 'salesforce' THEN '{login.salesforce.com,test.salesforce.com,*.my.salesforce.com}'::text[]
       WHEN 'shopify' THEN '{*.myshopify.com}'::text[]
       WHEN 'zendesk' THEN '{*.zendesk.com}'::text[] END
 WHERE name IN ('salesforce', 'shopify', 'zendesk');
UPDATE oauth.providers p
   SET allowed_hosts = pr.allowed_hosts, updated_at = now()
  FROM oauth.provider_presets pr
 WHERE p.preset = pr.name AND pr.name IN ('salesforce', 'shopify', 'zendesk')
   AND p.allowed_hosts IN ('{}', '{*.salesforce.com,*.force.com,*.salesforce-setup.com}');
-- ==== end of security (issue 10)

-- ---- ops (issue 9): backups, copies, standbys --------------------------------

-- a new event: a copy adopted by oauth.adopt_copy()
ALTER TABLE oauth.events DROP CONSTRAINT events_event_check;
ALTER TABLE oauth.events ADD CONSTRAINT events_event_check CHECK (event IN (
                      'created', 'refreshed', 'refresh_failed', 'reauth_required',
                      'reauthorized', 'revoked', 'deleted', 'token_rejected',
                      'provider_registered', 'key_rotated',
                      'copy_adopted'));

-- src/sql/60_operations.sql, except that the database being upgraded is
-- recorded as the one that refreshes (1.0 recorded nothing).
-- Where this data refreshes.  One row: the cluster (system identifier, as
-- pg_control_system() shows it) and the database (oid and name) that may
-- talk to providers with these grants.  Recorded by CREATE EXTENSION; a
-- restored dump brings the source's row with it.  The block of issue 14,
-- item 7 (memsafe) at the end gives it the shape of a fresh 1.1: home marks,
-- no singleton key, no trigger-sent invalidation.
CREATE TABLE oauth.refresh_home (
    singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    system_identifier  bigint NOT NULL,
    database_oid       oid NOT NULL,
    database_name      text NOT NULL,
    recorded_at        timestamptz NOT NULL DEFAULT now(),
    recorded_by        text NOT NULL DEFAULT current_user,
    how                text NOT NULL CHECK (how IN ('create extension', 'upgrade', 'adopt_copy'))
);
COMMENT ON TABLE oauth.refresh_home IS
    'The cluster and database that refresh these grants; elsewhere (a restored copy, a clone) nothing is sent to providers until oauth.adopt_copy().';

-- Internal: every process caches the row (src/identity.c); a change of it
-- reaches them as a relcache invalidation of the table.
CREATE FUNCTION oauth._refresh_home_changed() RETURNS void
    AS 'MODULE_PATHNAME', 'oauth_refresh_home_changed' LANGUAGE C VOLATILE;

-- One row: a row inserted (CREATE EXTENSION's, a restored one, adopt_copy's)
-- replaces the one there.
CREATE FUNCTION oauth._refresh_home_replace() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM oauth.refresh_home;
    RETURN NEW;
END $$;
CREATE FUNCTION oauth._refresh_home_notify() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM oauth._refresh_home_changed();
    RETURN NULL;
END $$;
CREATE TRIGGER refresh_home_replace BEFORE INSERT ON oauth.refresh_home
    FOR EACH ROW EXECUTE FUNCTION oauth._refresh_home_replace();
CREATE TRIGGER refresh_home_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON oauth.refresh_home FOR EACH STATEMENT EXECUTE FUNCTION oauth._refresh_home_notify();

INSERT INTO oauth.refresh_home (system_identifier, database_oid, database_name, how)
SELECT (SELECT system_identifier FROM pg_catalog.pg_control_system()), d.oid, d.datname,
       'upgrade'
  FROM pg_catalog.pg_database d
 WHERE d.datname = pg_catalog.current_database();

-- Restores in the right order: pg_dump loads the data of an extension's
-- tables in the order of the foreign keys between them, so this key makes a
-- restore write oauth.refresh_home (the source's row) before any provider or
-- connection arrives; a copy never sees connections while it still thinks
-- it is home.
ALTER TABLE oauth.providers ADD COLUMN refresh_home boolean NOT NULL DEFAULT true
    REFERENCES oauth.refresh_home (singleton);

-- oauth.adopt_copy(): this database becomes the one that refreshes these
-- grants.  Run it on a copy only once the original no longer refreshes
-- (every refresh rotates refresh tokens out from under the other).
CREATE FUNCTION oauth.adopt_copy() RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    old   oauth.refresh_home;
    sysid bigint;
    db    oid;
    rows  int;
    mark  uuid;
BEGIN
    IF pg_is_in_recovery() THEN
        RAISE EXCEPTION 'cannot adopt a copy on a hot standby'
            USING ERRCODE = 'read_only_sql_transaction',
                  HINT = 'A standby follows its primary; after promotion it refreshes by itself.';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_subscription_rel
                WHERE srrelid = 'oauth.connections'::regclass) THEN
        RAISE EXCEPTION 'this database is a logical replication subscriber of oauth.connections'
            USING ERRCODE = 'OA006',
                  HINT = 'Drop the subscription (or its oauth tables) first: the publisher refreshes these grants.';
    END IF;
    SELECT system_identifier INTO sysid FROM pg_control_system();
    SELECT d.oid INTO db FROM pg_database d WHERE d.datname = current_database();
    LOCK TABLE oauth.refresh_home IN EXCLUSIVE MODE;
    SELECT count(*), min(nonce::text)::uuid INTO rows, mark FROM oauth.refresh_home;
    -- home (src/identity.c): one row, naming here, and every row marked by it
    IF rows = 1
       AND EXISTS (SELECT 1 FROM oauth.refresh_home
                    WHERE system_identifier = sysid AND database_oid = db)
       AND NOT EXISTS (SELECT 1 FROM oauth.providers WHERE home_nonce <> mark)
       AND NOT EXISTS (SELECT 1 FROM oauth.connections WHERE home_nonce <> mark) THEN
        RETURN 'already_home';
    END IF;
    -- the row of the place these grants came from, if one says so
    SELECT * INTO old FROM oauth.refresh_home
     WHERE NOT (system_identifier = sysid AND database_oid = db)
     ORDER BY recorded_at DESC LIMIT 1;
    DELETE FROM oauth.refresh_home;
    INSERT INTO oauth.refresh_home (system_identifier, database_oid, database_name, how)
    VALUES (sysid, db, current_database(), 'adopt_copy')
    RETURNING nonce INTO mark;
    UPDATE oauth.providers SET home_nonce = mark WHERE home_nonce <> mark;
    UPDATE oauth.connections SET home_nonce = mark WHERE home_nonce <> mark;
    PERFORM oauth._event('copy_adopted', NULL, NULL, NULL, jsonb_build_object(
        'from', CASE WHEN old IS NULL THEN NULL ELSE jsonb_build_object(
                    'system_identifier', old.system_identifier::text,
                    'database_oid', old.database_oid, 'database', old.database_name) END,
        'to', jsonb_build_object('system_identifier', sysid::text,
                                 'database_oid', db, 'database', current_database()),
        'by', session_user));
    RETURN 'adopted';
END $$;
COMMENT ON FUNCTION oauth.adopt_copy() IS
    'Make this database the one that refreshes its grants (after a restore, a clone or pg_upgrade); only once the original has stopped refreshing.';

-- 'on', or why nothing is sent to providers from this database.
CREATE FUNCTION oauth.provider_traffic_status() RETURNS text
    AS 'MODULE_PATHNAME', 'oauth_provider_traffic_status' LANGUAGE C STABLE;

-- pg_dump keeps users' data: every row of these tables (and the events'
-- identity sequence).  The presets (oauth.provider_presets) belong to the
-- extension and are not dumped; CREATE EXTENSION writes them.
SELECT pg_catalog.pg_extension_config_dump('oauth.providers', '');
SELECT pg_catalog.pg_extension_config_dump('oauth.connections', '');
SELECT pg_catalog.pg_extension_config_dump('oauth.events', '');
SELECT pg_catalog.pg_extension_config_dump('oauth.events_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('oauth.code_redemptions', '');
SELECT pg_catalog.pg_extension_config_dump('oauth.refresh_home', '');

REVOKE ALL ON FUNCTION oauth._refresh_home_changed(), oauth._refresh_home_replace(),
    oauth._refresh_home_notify(), oauth.adopt_copy(), oauth.provider_traffic_status() FROM PUBLIC;
REVOKE ALL ON TABLE oauth.refresh_home FROM PUBLIC;

-- revoke: a copy or a standby (OA006 from the provider call) stops the
-- revocation instead of erasing the tokens with remote = failed
CREATE OR REPLACE FUNCTION oauth.revoke(workspace_id text, connection_id uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c oauth.connections;
    now_row oauth.connections;
    p oauth.providers;
    r record;
    remote text := 'none';
    err text;
    tok text;
    hint text;
BEGIN
    -- No row lock across the provider call (the worker must not wait on it);
    -- if a refresh rotated the token meanwhile, revoke the new one too.
    c := oauth._connection(workspace_id, connection_id, false);
    IF c.revoked_at IS NOT NULL THEN
        RETURN;
    END IF;
    SELECT * INTO p FROM oauth.providers pr WHERE pr.name = c.provider;
    FOR attempt IN 1..3 LOOP
        EXIT WHEN p.revoke_url IS NULL;
        IF c.refresh_token_ciphertext IS NOT NULL THEN
            tok := oauth._open(c.refresh_token_ciphertext, 'connection/' || c.id || '/refresh');
            hint := 'refresh_token';
        ELSE
            tok := oauth._open(c.access_token_ciphertext, 'connection/' || c.id || '/access');
            hint := 'access_token';
        END IF;
        BEGIN
            r := oauth._provider_call(c.provider, 'revoke',
                    jsonb_build_object('token', tok, 'token_type_hint', hint), c.metadata);
            remote := CASE WHEN r.klass = 'success' THEN 'revoked' ELSE 'failed' END;
            err := CASE WHEN r.klass <> 'success' THEN r.error END;
        EXCEPTION WHEN OTHERS THEN
            -- a cancel is the caller's word, and a copy or a standby sends nothing: stop here
            IF SQLSTATE IN ('57014', 'OA006') THEN
                RAISE;
            END IF;
            remote := 'failed';
            err := SQLERRM;
        END;
        tok := NULL;
        SELECT * INTO now_row FROM oauth.connections WHERE id = c.id FOR UPDATE;
        EXIT WHEN NOT FOUND OR now_row.version = c.version OR now_row.revoked_at IS NOT NULL;
        c := now_row;
    END LOOP;
    UPDATE oauth.connections SET access_token_ciphertext = NULL, refresh_token_ciphertext = NULL,
           revoked_at = now(), refresh_after = NULL, next_attempt_at = NULL,
           version = version + 1, updated_at = now()
     WHERE id = c.id AND revoked_at IS NULL;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM oauth._event('revoked', c.workspace_id, c.id, c.provider,
                         jsonb_strip_nulls(jsonb_build_object('remote', remote, 'error', err)));
END $$;

-- Operator counters by provider (src/stats.c): calls to the provider's
-- endpoints since the start or oauth.stats_reset(), latency percentiles,
-- and the provider's connections in each state.
CREATE FUNCTION oauth._provider_counters(
    OUT provider text, OUT attempts bigint, OUT successes bigint,
    OUT failures_transient bigint, OUT failures_permanent bigint,
    OUT latency_p50_ms double precision, OUT latency_p99_ms double precision,
    OUT since timestamptz)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'oauth_provider_counters' LANGUAGE C VOLATILE;
CREATE FUNCTION oauth.provider_stats()
RETURNS TABLE (provider text, attempts bigint, successes bigint,
               failures_transient bigint, failures_permanent bigint,
               latency_p50_ms double precision, latency_p99_ms double precision,
               connections_active bigint, connections_backing_off bigint,
               connections_reauth_required bigint, connections_revoked bigint,
               paused boolean, since timestamptz)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH k AS (SELECT * FROM oauth._provider_counters()),
    c AS (SELECT c.provider,
                 count(*) FILTER (WHERE c.revoked_at IS NULL AND c.reauth_required_at IS NULL) AS active,
                 count(*) FILTER (WHERE c.revoked_at IS NULL AND c.reauth_required_at IS NULL
                                    AND c.next_attempt_at > now()) AS backing_off,
                 count(*) FILTER (WHERE c.revoked_at IS NULL AND c.reauth_required_at IS NOT NULL) AS reauth,
                 count(*) FILTER (WHERE c.revoked_at IS NOT NULL) AS revoked
            FROM oauth.connections c GROUP BY c.provider)
    SELECT coalesce(p.name, k.provider),
           coalesce(k.attempts, 0), coalesce(k.successes, 0),
           coalesce(k.failures_transient, 0), coalesce(k.failures_permanent, 0),
           k.latency_p50_ms, k.latency_p99_ms,
           coalesce(c.active, 0), coalesce(c.backing_off, 0),
           coalesce(c.reauth, 0), coalesce(c.revoked, 0),
           p.paused_at IS NOT NULL,
           (SELECT max(since) FROM oauth._provider_counters())
      FROM oauth.providers p
      FULL JOIN k ON k.provider = p.name
      LEFT JOIN c ON c.provider = p.name
     ORDER BY 1
$$;
CREATE FUNCTION oauth.stats_reset() RETURNS void
    AS 'MODULE_PATHNAME', 'oauth_stats_reset' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION oauth._provider_counters(), oauth.provider_stats(), oauth.stats_reset()
    FROM PUBLIC;

-- ---- issue 8, part 2 (durable): answers never lost, lost answers, tenant
-- isolation, worker hardening.  Same objects as src/sql/70_durable.sql and
-- the changed functions of src/sql/10_functions.sql.

-- How long a provider keeps accepting the previous refresh token after it
-- rotated it: a request that was sent but never answered may have spent the
-- token, and a retry with the same token recovers only inside this window.
-- NULL: unknown; '0': strict single use.  Providers that never rotate, or
-- never revoke the old token, have a window longer than any retry.
ALTER TABLE oauth.providers
    ADD COLUMN rotation_grace interval CHECK (rotation_grace >= interval '0');
ALTER TABLE oauth.provider_presets ADD COLUMN rotation_grace interval;
COMMENT ON COLUMN oauth.provider_presets.rotation_grace IS
    'How long the previous refresh token stays usable after a rotation (a lost answer '
    'is retried with it only inside this window); 0 = strict single use, NULL = unknown.';
UPDATE oauth.provider_presets p SET rotation_grace = v.g
  FROM (VALUES ('google', interval '1 day'),        -- no rotation: a retry is always safe
               ('microsoft', interval '1 day'),     -- new RT each time, old not revoked
               ('dropbox', interval '1 day'),       -- no rotation
               ('asana', interval '1 day'),         -- no rotation
               ('linkedin', interval '1 day'),      -- no rotation
               ('xero', interval '30 minutes'),
               ('atlassian', interval '10 minutes'),
               ('shopify', interval '30 days'),     -- until the new RT is first used (was 60 min before 2026-08-28)
               ('salesforce', interval '0'),        -- strict single use when rotation is on
               ('github', interval '0'),
               ('zoom', interval '0'),
               ('zendesk', interval '0'),
               ('slack', interval '0'),
               ('box', interval '0')) AS v(name, g)
 WHERE p.name = v.name;

-- Answers received from a provider but not yet applied to their connection.
-- The worker records an answer with tokens here first, in a short
-- transaction of its own that takes no lock on the connection (hence no
-- foreign key: a session holding the connection's row lock must not block
-- it), then applies it and deletes it.  What is left (a locked row, a failed
-- write, a worker exit or crash) is applied later, and at start-up.  The
-- whole answer is sealed with the connection's binding (context
-- connection/<id>/pending): it decrypts for that connection only.
CREATE TABLE oauth.pending_answers (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connection_id      uuid NOT NULL,
    generation         bigint NOT NULL,     -- the worker's request generation
    seen_version       bigint NOT NULL,     -- the row version the request was made for
    answer_ciphertext  bytea NOT NULL,
    received_at        timestamptz NOT NULL,
    attempts           int NOT NULL DEFAULT 0,
    last_error         text
);
CREATE INDEX pending_answers_connection_idx ON oauth.pending_answers (connection_id);
REVOKE ALL ON oauth.pending_answers FROM PUBLIC;
REVOKE ALL ON SEQUENCE oauth.pending_answers_id_seq FROM PUBLIC;
-- answers not yet applied are part of a backup: pg_dump keeps them
SELECT pg_catalog.pg_extension_config_dump('oauth.pending_answers', '');
SELECT pg_catalog.pg_extension_config_dump('oauth.pending_answers_id_seq', '');

-- register_provider gains rotation_grace (last parameter, DEFAULT NULL)
DROP FUNCTION oauth.register_provider(text, text, text, text, text, text, interval, interval,
    interval, jsonb, int, text, text, jsonb, text[], text, text[]);
CREATE FUNCTION oauth.register_provider(
    name text, token_url text, client_id text, client_secret text DEFAULT NULL,
    auth_method text DEFAULT 'client_secret_post', revoke_url text DEFAULT NULL,
    refresh_buffer interval DEFAULT '5 minutes', default_lifetime interval DEFAULT NULL,
    refresh_token_idle_ttl interval DEFAULT NULL, extra_params jsonb DEFAULT '{}',
    max_concurrency int DEFAULT NULL, authorize_url text DEFAULT NULL,
    body_format text DEFAULT 'form', extra_headers jsonb DEFAULT '{}',
    reauth_errors text[] DEFAULT '{}', preset text DEFAULT NULL,
    allowed_hosts text[] DEFAULT NULL, rotation_grace interval DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_name text := name;
    pr oauth.provider_presets;
    v_token_url text := token_url;
    v_authorize_url text := authorize_url;
    v_revoke_url text := revoke_url;
    v_auth_method text := auth_method;
    v_body_format text := body_format;
    v_extra_params jsonb := extra_params;
    v_extra_headers jsonb := extra_headers;
    v_reauth_errors text[] := reauth_errors;
    v_default_lifetime interval := default_lifetime;
    v_idle_ttl interval := refresh_token_idle_ttl;
    v_authorize_params jsonb := '{}';
    v_required_scopes text[] := '{}';
    v_scope_separator text := ' ';
    v_scope_on_refresh boolean := false;
    v_allowed_hosts text[] := allowed_hosts;
    v_rotation_grace interval := rotation_grace;
    existed boolean;
    v_old oauth.providers;
    v_caller text := CASE WHEN current_setting('role') = 'none' THEN session_user::text
                          ELSE current_setting('role') END;
    v_superuser boolean;
    v_moved text[];
    v_changed jsonb;
    v_live bigint;
BEGIN
    PERFORM oauth._not_null('name', v_name);
    PERFORM oauth._not_null('client_id', client_id);
    IF preset IS NOT NULL THEN
        SELECT * INTO pr FROM oauth.provider_presets p WHERE p.name = preset;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'unknown preset "%"', preset
                USING ERRCODE = 'OA004',
                      HINT = 'SELECT name FROM oauth.provider_presets lists the built-in presets.';
        END IF;
        -- fields left at their defaults come from the preset
        v_token_url := coalesce(v_token_url, pr.token_url);
        v_authorize_url := coalesce(v_authorize_url, pr.authorize_url);
        v_revoke_url := coalesce(v_revoke_url, pr.revoke_url);
        IF v_auth_method = 'client_secret_post' THEN v_auth_method := pr.auth_method; END IF;
        IF v_body_format = 'form' THEN v_body_format := pr.body_format; END IF;
        v_extra_params := pr.extra_params || coalesce(v_extra_params, '{}');
        v_extra_headers := pr.extra_headers || coalesce(v_extra_headers, '{}');
        IF v_reauth_errors IS NULL OR v_reauth_errors = '{}' THEN v_reauth_errors := pr.reauth_errors; END IF;
        v_default_lifetime := coalesce(v_default_lifetime, pr.default_lifetime);
        v_idle_ttl := coalesce(v_idle_ttl, pr.refresh_token_idle_ttl);
        v_authorize_params := pr.authorize_params;
        v_required_scopes := pr.required_scopes;
        v_scope_separator := pr.scope_separator;
        v_scope_on_refresh := pr.scope_on_refresh;
        v_allowed_hosts := coalesce(v_allowed_hosts, pr.allowed_hosts);
        v_rotation_grace := coalesce(v_rotation_grace, pr.rotation_grace);
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(coalesce(v_allowed_hosts, '{}')) h
                WHERE h IS NULL OR h !~ '^(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$') THEN
        RAISE EXCEPTION 'allowed_hosts must hold host names or "*.domain" patterns'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM oauth._not_null('token_url', v_token_url);
    PERFORM oauth._not_null('auth_method', v_auth_method);
    PERFORM oauth._not_null('refresh_buffer', refresh_buffer);
    PERFORM oauth._not_null('body_format', v_body_format);
    IF v_name !~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid provider name "%"', v_name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use letters, digits, "_", "." and "-", at most 63 characters.';
    END IF;
    IF client_id = '' THEN
        RAISE EXCEPTION 'client_id must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_auth_method NOT IN ('client_secret_post', 'client_secret_basic', 'none') THEN
        RAISE EXCEPTION 'invalid auth_method "%"', v_auth_method
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use client_secret_post, client_secret_basic or none.';
    END IF;
    IF v_auth_method <> 'none' AND client_secret IS NULL
       AND NOT EXISTS (SELECT 1 FROM oauth.providers p WHERE p.name = v_name
                        AND p.client_secret_ciphertext IS NOT NULL) THEN
        RAISE EXCEPTION 'client_secret is required for auth_method %', v_auth_method
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF v_body_format NOT IN ('form', 'json') THEN
        RAISE EXCEPTION 'invalid body_format "%"', v_body_format
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use form or json.';
    END IF;
    PERFORM oauth._check_url('token_url', v_token_url);
    PERFORM oauth._check_url('revoke_url', v_revoke_url);
    PERFORM oauth._check_url('authorize_url', v_authorize_url);
    PERFORM oauth._check_url_template('token_url', v_token_url, v_allowed_hosts);
    PERFORM oauth._check_url_template('revoke_url', v_revoke_url, v_allowed_hosts);
    PERFORM oauth._check_url_template('authorize_url', v_authorize_url, v_allowed_hosts);
    PERFORM oauth._check_url_address('token_url', v_token_url);
    PERFORM oauth._check_url_address('revoke_url', v_revoke_url);
    PERFORM oauth._check_url_address('authorize_url', v_authorize_url);
    PERFORM oauth._check_interval('refresh_buffer', refresh_buffer);
    PERFORM oauth._check_interval('default_lifetime', v_default_lifetime, false);
    PERFORM oauth._check_interval('refresh_token_idle_ttl', v_idle_ttl, false);
    PERFORM oauth._check_interval('rotation_grace', v_rotation_grace);
    IF max_concurrency IS NOT NULL AND max_concurrency < 1 THEN
        RAISE EXCEPTION 'max_concurrency must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_typeof(coalesce(v_extra_params, '{}')) <> 'object'
       OR jsonb_typeof(coalesce(v_extra_headers, '{}')) <> 'object' THEN
        RAISE EXCEPTION 'extra_params and extra_headers must be JSON objects'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_each(coalesce(v_extra_headers, '{}')) h
                WHERE jsonb_typeof(h.value) <> 'string' OR h.key !~ '^[A-Za-z0-9-]+$'
                   OR h.value #>> '{}' ~ '[\x01-\x1f\x7f]') THEN
        RAISE EXCEPTION 'extra_headers must map header names to strings'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Changing where requests go needs the credentials again (README,
    -- "Changing where a provider's requests go").  The row is locked first,
    -- so two calls cannot both pass the check against the same old row.
    SELECT * INTO v_old FROM oauth.providers p WHERE p.name = v_name FOR UPDATE;
    existed := FOUND;
    IF existed THEN
        -- token and revoke URLs receive the client secret and the refresh
        -- tokens: any change counts (a path on a shared host may be someone
        -- else's); the authorize URL, to which only browsers go: its origin
        SELECT coalesce(array_agg(f), '{}') INTO v_moved
          FROM (VALUES ('token_url', v_old.token_url, v_token_url, false),
                       ('revoke_url', v_old.revoke_url, v_revoke_url, false),
                       ('authorize_url', v_old.authorize_url, v_authorize_url, true)) AS u(f, o, n, origin_only)
         WHERE n IS NOT NULL
           AND CASE WHEN origin_only
                    THEN lower(substring(n FROM '^[^:/?#]+://[^/?#]*'))
                         IS DISTINCT FROM lower(substring(o FROM '^[^:/?#]+://[^/?#]*'))
                    ELSE n IS DISTINCT FROM o END;
        -- a templated host may name more hosts than before
        IF EXISTS (SELECT unnest(coalesce(v_allowed_hosts, '{}')) EXCEPT SELECT unnest(v_old.allowed_hosts)) THEN
            v_moved := array_append(v_moved, 'allowed_hosts');
        END IF;
        SELECT r.rolsuper INTO v_superuser FROM pg_roles r WHERE r.rolname = v_caller;
        IF v_moved <> '{}' AND NOT coalesce(v_superuser, false) THEN
            IF v_old.client_secret_ciphertext IS NOT NULL THEN
                IF client_secret IS NULL
                   OR sha256(convert_to(client_secret, 'UTF8'))
                      <> sha256(convert_to(oauth._open(v_old.client_secret_ciphertext,
                                                       'provider/' || v_name || '/client_secret'), 'UTF8')) THEN
                    RAISE EXCEPTION 'changing % of provider "%" requires its client secret',
                                    array_to_string(v_moved, ', '), v_name
                        USING ERRCODE = 'insufficient_privilege',
                              DETAIL = CASE WHEN client_secret IS NULL
                                            THEN 'No client_secret was given.'
                                            ELSE 'The client_secret given is not the stored one.' END,
                              HINT = 'Pass the provider''s current client_secret again in the same call. '
                                     'To move it and change its secret, move it with the current secret first, '
                                     'then register the new secret.';
                END IF;
            ELSE
                -- a public client has no secret to give again, but its
                -- connections' refresh tokens would go to the new address
                SELECT count(*) INTO v_live FROM oauth.connections c
                 WHERE c.provider = v_name AND c.revoked_at IS NULL;
                IF v_live > 0 THEN
                    RAISE EXCEPTION 'changing % of provider "%" requires a superuser',
                                    array_to_string(v_moved, ', '), v_name
                        USING ERRCODE = 'insufficient_privilege',
                              DETAIL = format('The provider has no client secret to give again, and the tokens of its %s live connections would go to the new address.', v_live),
                              HINT = 'Ask a superuser to make this change, or revoke its connections first.';
                END IF;
            END IF;
        END IF;
    END IF;
    INSERT INTO oauth.providers AS p (name, authorize_url, token_url, revoke_url, client_id,
        client_secret_ciphertext, auth_method, refresh_buffer, default_lifetime,
        refresh_token_idle_ttl, extra_params, extra_headers, body_format, reauth_errors,
        max_concurrency, authorize_params, required_scopes, scope_separator, scope_on_refresh,
        allowed_hosts, preset, rotation_grace)
    VALUES (v_name, v_authorize_url, v_token_url, v_revoke_url, client_id,
        oauth._seal(client_secret, 'provider/' || v_name || '/client_secret'),
        v_auth_method, refresh_buffer, v_default_lifetime, v_idle_ttl,
        coalesce(v_extra_params, '{}'), coalesce(v_extra_headers, '{}'), v_body_format,
        coalesce(v_reauth_errors, '{}'), max_concurrency, v_authorize_params,
        v_required_scopes, v_scope_separator, v_scope_on_refresh,
        coalesce(v_allowed_hosts, '{}'), preset, v_rotation_grace)
    ON CONFLICT ON CONSTRAINT providers_pkey DO UPDATE SET
        authorize_url = EXCLUDED.authorize_url, token_url = EXCLUDED.token_url,
        revoke_url = EXCLUDED.revoke_url, client_id = EXCLUDED.client_id,
        client_secret_ciphertext = coalesce(EXCLUDED.client_secret_ciphertext, p.client_secret_ciphertext),
        auth_method = EXCLUDED.auth_method, refresh_buffer = EXCLUDED.refresh_buffer,
        default_lifetime = EXCLUDED.default_lifetime,
        refresh_token_idle_ttl = EXCLUDED.refresh_token_idle_ttl,
        extra_params = EXCLUDED.extra_params, extra_headers = EXCLUDED.extra_headers,
        body_format = EXCLUDED.body_format, reauth_errors = EXCLUDED.reauth_errors,
        max_concurrency = EXCLUDED.max_concurrency, authorize_params = EXCLUDED.authorize_params,
        required_scopes = EXCLUDED.required_scopes, scope_separator = EXCLUDED.scope_separator,
        scope_on_refresh = EXCLUDED.scope_on_refresh, allowed_hosts = EXCLUDED.allowed_hosts,
        preset = EXCLUDED.preset, rotation_grace = EXCLUDED.rotation_grace,
        paused_at = NULL, pause_reason = NULL, updated_at = now();
    -- a changed buffer moves every connection's next refresh
    UPDATE oauth.connections c
       SET refresh_after = oauth._refresh_after(c.expires_at, refresh_buffer, v_idle_ttl,
                                                c.refresh_token_expires_at,
                                                coalesce(c.refreshed_at, c.created_at),
                                                c.refresh_token_ciphertext IS NOT NULL)
     WHERE existed AND c.provider = v_name AND c.reauth_required_at IS NULL
       AND c.revoked_at IS NULL AND c.next_attempt_at IS NULL;
    -- who changed what: field names, old and new values of what is not
    -- secret (extra_params and extra_headers by their names only), never a
    -- secret
    IF NOT existed THEN
        PERFORM oauth._event('provider_registered', NULL, NULL, v_name,
            jsonb_build_object('updated', false, 'auth_method', v_auth_method, 'preset', preset,
                               'by', v_caller, 'session_user', session_user));
        RETURN;
    END IF;
    SELECT coalesce(jsonb_object_agg(f, jsonb_build_object('old', o, 'new', n)), '{}') INTO v_changed
      FROM (VALUES ('token_url', to_jsonb(v_old.token_url), to_jsonb(v_token_url)),
                   ('revoke_url', to_jsonb(v_old.revoke_url), to_jsonb(v_revoke_url)),
                   ('authorize_url', to_jsonb(v_old.authorize_url), to_jsonb(v_authorize_url)),
                   ('client_id', to_jsonb(v_old.client_id), to_jsonb(client_id)),
                   ('auth_method', to_jsonb(v_old.auth_method), to_jsonb(v_auth_method)),
                   ('refresh_buffer', to_jsonb(v_old.refresh_buffer), to_jsonb(refresh_buffer)),
                   ('default_lifetime', to_jsonb(v_old.default_lifetime), to_jsonb(v_default_lifetime)),
                   ('refresh_token_idle_ttl', to_jsonb(v_old.refresh_token_idle_ttl), to_jsonb(v_idle_ttl)),
                   ('extra_params', to_jsonb(ARRAY(SELECT jsonb_object_keys(v_old.extra_params))),
                                    to_jsonb(ARRAY(SELECT jsonb_object_keys(coalesce(v_extra_params, '{}'))))),
                   ('extra_headers', to_jsonb(ARRAY(SELECT jsonb_object_keys(v_old.extra_headers))),
                                     to_jsonb(ARRAY(SELECT jsonb_object_keys(coalesce(v_extra_headers, '{}'))))),
                   ('body_format', to_jsonb(v_old.body_format), to_jsonb(v_body_format)),
                   ('reauth_errors', to_jsonb(v_old.reauth_errors), to_jsonb(coalesce(v_reauth_errors, '{}'))),
                   ('max_concurrency', to_jsonb(v_old.max_concurrency), to_jsonb(max_concurrency)),
                   ('allowed_hosts', to_jsonb(v_old.allowed_hosts), to_jsonb(coalesce(v_allowed_hosts, '{}'))),
                   ('preset', to_jsonb(v_old.preset), to_jsonb(preset)),
                   ('rotation_grace', to_jsonb(v_old.rotation_grace), to_jsonb(v_rotation_grace))) AS d(f, o, n)
     WHERE o IS DISTINCT FROM n;
    -- extra_params and extra_headers may hold keys: values changed under
    -- the same names show as changed, without them
    IF v_old.extra_params IS DISTINCT FROM coalesce(v_extra_params, '{}') AND NOT v_changed ? 'extra_params' THEN
        v_changed := v_changed || '{"extra_params": "changed"}';
    END IF;
    IF v_old.extra_headers IS DISTINCT FROM coalesce(v_extra_headers, '{}') AND NOT v_changed ? 'extra_headers' THEN
        v_changed := v_changed || '{"extra_headers": "changed"}';
    END IF;
    IF client_secret IS NOT NULL THEN
        v_changed := v_changed || jsonb_build_object('client_secret',
            CASE WHEN v_old.client_secret_ciphertext IS NOT NULL
                      AND oauth._open(v_old.client_secret_ciphertext, 'provider/' || v_name || '/client_secret')
                          = client_secret
                 THEN 'given again' ELSE 'changed' END);
    END IF;
    PERFORM oauth._event('provider_changed', NULL, NULL, v_name,
        jsonb_build_object('changed', v_changed, 'moved', to_jsonb(v_moved),
                           'resumed', v_old.paused_at IS NOT NULL,
                           'pause_reason', v_old.pause_reason,
                           'by', v_caller, 'session_user', session_user));
END $$;

-- rotate_key re-encrypts in batches, by a worker of its own (src/rotate.c)
CREATE FUNCTION oauth._rotate_connections(batch int DEFAULT 1000) RETURNS bigint
    AS 'MODULE_PATHNAME', 'oauth_rotate_connections' LANGUAGE C VOLATILE;

CREATE OR REPLACE FUNCTION oauth.rotate_key() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k text := oauth._active_key_id();
    n bigint := 0;
    r record;
    ctx text;
BEGIN
    -- committed rows: in batches, by a worker of its own (src/rotate.c), so
    -- that no transaction ever holds every connection's row lock
    n := oauth._rotate_connections(1000);
    -- what it could not see or lock (this transaction's own rows): here
    FOR r IN SELECT c.id, c.access_token_ciphertext AS a, c.refresh_token_ciphertext AS rt
               FROM oauth.connections c
              WHERE oauth._key_id(c.access_token_ciphertext) <> k
                 OR oauth._key_id(c.refresh_token_ciphertext) <> k
                FOR UPDATE
    LOOP
        ctx := 'connection/' || r.id;
        IF r.a IS NOT NULL AND oauth._key_id(r.a) <> k THEN
            UPDATE oauth.connections
               SET access_token_ciphertext = oauth._seal(oauth._open(r.a, ctx || '/access'), ctx || '/access')
             WHERE id = r.id;
            n := n + 1;
        END IF;
        IF r.rt IS NOT NULL AND oauth._key_id(r.rt) <> k THEN
            UPDATE oauth.connections
               SET refresh_token_ciphertext = oauth._seal(oauth._open(r.rt, ctx || '/refresh'), ctx || '/refresh')
             WHERE id = r.id;
            n := n + 1;
        END IF;
    END LOOP;
    FOR r IN SELECT p.name, p.client_secret_ciphertext AS s FROM oauth.providers p
              WHERE oauth._key_id(p.client_secret_ciphertext) <> k FOR UPDATE
    LOOP
        ctx := 'provider/' || r.name || '/client_secret';
        UPDATE oauth.providers SET client_secret_ciphertext = oauth._seal(oauth._open(r.s, ctx), ctx)
         WHERE name = r.name;
        n := n + 1;
    END LOOP;
    PERFORM oauth._event('key_rotated', NULL, NULL, NULL,
                         jsonb_build_object('key_id', k, 're_encrypted', n));
    RETURN n;
END $$;

REVOKE ALL ON FUNCTION oauth.register_provider(text, text, text, text, text, text, interval, interval,
    interval, jsonb, int, text, text, jsonb, text[], text, text[], interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION oauth._rotate_connections(int) FROM PUBLIC;
REVOKE ALL ON FUNCTION oauth.rotate_key() FROM PUBLIC;
-- ---- end of issue 8, part 2 (durable)

-- ---- issue 8, part 1 (grant): one mechanism stores a grant ------------------
-- oauth._store_answers writes what token answers store, for the worker's
-- refreshes (a batch) and for exchange_code / client_credentials (via
-- _store_grant, one row).
-- Internal: the one writer of what token answers store in connections, a
-- set of them at once: for the worker's refreshes (a batch, src/finish.c)
-- and for exchange_code and client_credentials (oauth._store_grant, one
-- row) alike, so the paths cannot drift:
--   * the sealed access token; the refresh token the answer sent, else the
--     stored one; never one for a client-credentials grant;
--   * the answer's scope, else the stored one (a new grant: the requested);
--   * expires_at counted from its answered_at, when the answer arrived (else
--     the provider's default_lifetime); refresh_token_expires_at from the
--     answer, else the stored one (a new grant: none);
--   * the answer's kept non-secret fields merged into metadata;
--   * refreshed_at, refresh_after, failure_count and next_attempt_at reset;
--     a new grant (p_new_grant) also clears reauth_required_at/revoked_at.
-- The arrays are parallel, one element per answer.  A refresh (p_new_grant
-- false) applies only to a live connection at its version (NULL: any).  A
-- row locked by another transaction is skipped, never waited for: one
-- locked row must not hold back the others (the worker stores it alone
-- later).  Returns the ids stored; an id not returned stored nothing.
CREATE FUNCTION oauth._store_answers(p_ids uuid[], p_versions bigint[],
                                     p_answered_at timestamptz[], p_access bytea[],
                                     p_refresh bytea[], p_expires_in bigint[],
                                     p_rt_expires_in bigint[], p_scope text[],
                                     p_metadata jsonb[], p_new_grant boolean,
                                     p_requested_scope text[] DEFAULT NULL,
                                     p_grant_type text DEFAULT NULL)
RETURNS SETOF uuid
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH a AS (
        SELECT * FROM unnest(p_ids, p_versions, p_answered_at, p_access, p_refresh,
                             p_expires_in, p_rt_expires_in, p_scope, p_metadata)
               AS a(id, version, answered_at, access, refresh, expires_in,
                    rt_expires_in, scope, metadata)
    ), locked AS (
        SELECT cn.id, cn.version, cn.provider, cn.grant_type, cn.refresh_token_ciphertext,
               cn.refresh_token_expires_at, cn.scope
          FROM oauth.connections cn
         WHERE cn.id = ANY (p_ids)
           AND (p_new_grant OR (cn.revoked_at IS NULL AND cn.reauth_required_at IS NULL))
           FOR UPDATE SKIP LOCKED
    ), v AS (
        SELECT l.id, a.answered_at, a.access, a.metadata,
               coalesce(p_grant_type, l.grant_type) AS grant_type,
               CASE WHEN coalesce(p_grant_type, l.grant_type) = 'client_credentials' THEN NULL
                    ELSE coalesce(a.refresh, l.refresh_token_ciphertext) END AS rt,
               a.answered_at + CASE WHEN a.expires_in IS NOT NULL
                                    THEN make_interval(secs => a.expires_in::float8)
                                    ELSE p.default_lifetime END AS exp,
               CASE WHEN a.rt_expires_in IS NOT NULL
                    THEN a.answered_at + make_interval(secs => a.rt_expires_in::float8)
                    WHEN p_new_grant THEN NULL
                    ELSE l.refresh_token_expires_at END AS rt_exp,
               CASE WHEN a.scope IS NOT NULL AND a.scope <> ''
                    THEN regexp_split_to_array(btrim(a.scope), '[ ,]+')
                    WHEN p_new_grant THEN coalesce(p_requested_scope, '{}')
                    ELSE l.scope END AS scope,
               p.refresh_buffer, p.refresh_token_idle_ttl
          FROM locked l
          JOIN a ON a.id = l.id
          JOIN oauth.providers p ON p.name = l.provider
         WHERE a.version IS NULL OR l.version = a.version
    )
    UPDATE oauth.connections cn SET
        grant_type = v.grant_type,
        access_token_ciphertext = v.access,
        refresh_token_ciphertext = v.rt,
        scope = v.scope,
        expires_at = v.exp,
        refresh_token_expires_at = v.rt_exp,
        metadata = cn.metadata || coalesce(v.metadata, '{}'),
        refreshed_at = v.answered_at,
        refresh_after = oauth._refresh_after(v.exp, v.refresh_buffer, v.refresh_token_idle_ttl,
                                             v.rt_exp, v.answered_at, v.rt IS NOT NULL, true),
        failure_count = 0, next_attempt_at = NULL, last_refresh_error = NULL,
        reauth_required_at = NULL, revoked_at = NULL,
        version = cn.version + 1, updated_at = now()
      FROM v
     WHERE cn.id = v.id
       AND cn.id = ANY (p_ids)      -- the target by its key, not a scan of every row
    RETURNING cn.id
$$;

-- Internal: store a token answer as a connection (new, or an existing one of
-- the same account re-authorized).  Returns the id.  The insert comes first,
-- with ON CONFLICT DO NOTHING: of two concurrent exchanges for the same
-- account, the second waits for the first, then updates the row it made,
-- so a redeemed code never ends in a unique violation.  What the grant
-- stores is written by oauth._store_answers, as for a refresh.
CREATE OR REPLACE FUNCTION oauth._store_grant(p_workspace text, p_provider text, p_account text,
                                   p_grant_type text, r record, p_scope text[], p_metadata jsonb)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    -- called as soon as the provider's answer is in: its expiry counts from here
    p_answered_at timestamptz := clock_timestamp();
    c oauth.connections;
    v_id uuid := gen_random_uuid();
    v_new uuid;
    v_at bytea;
BEGIN
    v_at := oauth._seal(r.access_token, 'connection/' || v_id || '/access');
    INSERT INTO oauth.connections (id, workspace_id, provider, provider_account_id, grant_type,
        access_token_ciphertext, metadata)
    VALUES (v_id, p_workspace, p_provider, p_account, p_grant_type, v_at, p_metadata)
    ON CONFLICT (workspace_id, provider, provider_account_id) DO NOTHING
    RETURNING id INTO v_new;
    IF v_new IS NULL THEN
        SELECT * INTO c FROM oauth.connections
         WHERE workspace_id = p_workspace AND provider = p_provider AND provider_account_id = p_account
           FOR UPDATE;
        IF NOT FOUND THEN
            -- only in REPEATABLE READ or SERIALIZABLE, against a row committed meanwhile
            RAISE EXCEPTION 'could not store the grant: a concurrent call stored this account''s connection'
                USING ERRCODE = 'serialization_failure',
                      HINT = 'Call exchange_code in a READ COMMITTED transaction.';
        END IF;
        v_id := c.id;
        v_at := oauth._seal(r.access_token, 'connection/' || v_id || '/access');
    END IF;
    PERFORM oauth._store_answers(ARRAY[v_id], ARRAY[NULL::bigint], ARRAY[p_answered_at], ARRAY[v_at],
        ARRAY[CASE WHEN r.refresh_token IS NOT NULL
                   THEN oauth._seal(r.refresh_token, 'connection/' || v_id || '/refresh') END],
        ARRAY[r.expires_in::bigint], ARRAY[r.rt_expires_in::bigint], ARRAY[r.scope::text],
        ARRAY[CASE WHEN v_new IS NULL THEN p_metadata ELSE '{}' END || coalesce(r.metadata, '{}')],
        true, coalesce(p_scope, '{}'), p_grant_type);
    IF v_new IS NOT NULL THEN
        PERFORM oauth._event('created', p_workspace, v_id, p_provider,
            jsonb_build_object('grant_type', p_grant_type, 'provider_account_id', p_account,
                               'has_refresh_token', r.refresh_token IS NOT NULL));
        RETURN v_id;
    END IF;
    PERFORM oauth._event('reauthorized', p_workspace, v_id, p_provider,
                         jsonb_build_object('grant_type', p_grant_type));
    RETURN v_id;
END $$;

REVOKE ALL ON FUNCTION oauth._store_answers(uuid[], bigint[], timestamptz[], bytea[], bytea[], bigint[], bigint[],
    text[], jsonb[], boolean, text[], text) FROM PUBLIC;
-- ---- end of issue 8, part 1 (grant)

-- ---- issue 14, item 2 (provider): changing where a provider's requests go
-- needs its credentials again; every change is a provider_changed event
-- (register_provider above is edited in place).
ALTER TABLE oauth.events DROP CONSTRAINT events_event_check;
ALTER TABLE oauth.events ADD CONSTRAINT events_event_check CHECK (event IN (
                      'created', 'refreshed', 'refresh_failed', 'reauth_required',
                      'reauthorized', 'revoked', 'deleted', 'token_rejected',
                      'provider_registered', 'key_rotated',
                      'copy_adopted', 'provider_changed'));
-- ---- end of issue 14, item 2 (provider)

-- ---- issue 14, item 8 (provider): outbound addresses.  register_provider
-- (above, edited in place) refuses IP literals unless
-- oauth.allow_private_addresses; connect time is checked in C (src/http.c).
CREATE FUNCTION oauth._check_url_address(what text, url text) RETURNS void
    AS 'MODULE_PATHNAME', 'oauth_check_url_address_sql' LANGUAGE C STABLE;
REVOKE ALL ON FUNCTION oauth._check_url_address(text, text) FROM PUBLIC;
-- ---- end of issue 14, item 8 (provider)

-- ---- tenant (issue 14, item 1): the tenant boundary.  oauth.bind_workspace()
-- binds a transaction to one workspace (src/tenant.c); valid_token,
-- token_rejected, refresh, the connection lookups and connection_status see
-- that workspace only; oauth.require_workspace makes the binding mandatory.
CREATE FUNCTION oauth._bound_workspace() RETURNS text
    AS 'MODULE_PATHNAME', 'oauth_bound_workspace_sql' LANGUAGE C STABLE PARALLEL RESTRICTED;
REVOKE ALL ON FUNCTION oauth._bound_workspace() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oauth._bound_workspace() TO PUBLIC;
CREATE OR REPLACE VIEW oauth.connection_status WITH (security_barrier) AS
SELECT c.id,
       c.workspace_id,
       c.provider,
       c.provider_account_id,
       CASE WHEN c.revoked_at IS NOT NULL THEN 'revoked'
            WHEN c.reauth_required_at IS NOT NULL THEN 'reauth_required'
            ELSE 'active' END AS state,
       c.grant_type,
       c.scope,
       c.expires_at,
       c.refresh_after,
       c.refreshed_at,
       c.refresh_token_expires_at,
       c.refresh_token_ciphertext IS NOT NULL AS has_refresh_token,
       c.last_refresh_error,
       c.failure_count,
       c.next_attempt_at,
       c.reauth_required_at,
       c.revoked_at,
       c.metadata,
       c.version,
       c.created_at,
       c.updated_at
  FROM oauth.connections c
 WHERE oauth._bound_workspace() IS NULL OR c.workspace_id = oauth._bound_workspace();
CREATE FUNCTION oauth.bind_workspace(workspace_id text) RETURNS void
    AS 'MODULE_PATHNAME', 'oauth_bind_workspace' LANGUAGE C VOLATILE;
CREATE FUNCTION oauth._workspace_admitted(workspace_id text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'oauth_workspace_admitted_sql' LANGUAGE C STABLE PARALLEL RESTRICTED;
CREATE FUNCTION oauth._check_workspace_binding(p_workspace text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT oauth._workspace_admitted(p_workspace) THEN
        RAISE EXCEPTION 'this transaction is bound to another workspace'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'A transaction bound with oauth.bind_workspace() works on that workspace only.';
    END IF;
END $$;
REVOKE ALL ON FUNCTION oauth.bind_workspace(text), oauth._workspace_admitted(text),
    oauth._check_workspace_binding(text) FROM PUBLIC;
CREATE OR REPLACE FUNCTION oauth._connection(p_workspace text, p_id uuid, lock boolean DEFAULT true)
RETURNS oauth.connections LANGUAGE plpgsql AS $$
DECLARE
    c oauth.connections;
BEGIN
    PERFORM oauth._not_null('workspace_id', p_workspace);
    PERFORM oauth._not_null('connection_id', p_id);
    IF NOT oauth._workspace_admitted(p_workspace) THEN
        RAISE EXCEPTION 'connection not found' USING ERRCODE = 'OA001';
    END IF;
    IF lock THEN
        SELECT * INTO c FROM oauth.connections WHERE id = p_id AND workspace_id = p_workspace FOR UPDATE;
    ELSE
        SELECT * INTO c FROM oauth.connections WHERE id = p_id AND workspace_id = p_workspace;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'connection not found' USING ERRCODE = 'OA001';
    END IF;
    RETURN c;
END $$;
CREATE OR REPLACE FUNCTION oauth.create_connection(
    workspace_id text, provider text, provider_account_id text, access_token text,
    refresh_token text, expires_at timestamptz, scope text[] DEFAULT '{}',
    metadata jsonb DEFAULT '{}')
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p oauth.providers;
    v_id uuid := gen_random_uuid();
BEGIN
    PERFORM oauth._not_null('workspace_id', workspace_id);
    PERFORM oauth._not_null('provider', provider);
    PERFORM oauth._not_null('provider_account_id', provider_account_id);
    PERFORM oauth._not_null('access_token', access_token);
    PERFORM oauth._not_null('scope', scope);
    PERFORM oauth._not_null('metadata', metadata);
    PERFORM oauth._check_identifier('workspace_id', workspace_id, 256);
    PERFORM oauth._check_identifier('provider_account_id', provider_account_id, 256);
    PERFORM oauth._check_workspace_binding(workspace_id);
    IF workspace_id = '' OR access_token = '' OR refresh_token = '' THEN
        RAISE EXCEPTION 'workspace_id, access_token and refresh_token must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_typeof(metadata) <> 'object' THEN
        RAISE EXCEPTION 'metadata must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    p := oauth._provider(provider);
    IF expires_at IS NULL AND p.default_lifetime IS NOT NULL THEN
        expires_at := now() + p.default_lifetime;
    END IF;
    INSERT INTO oauth.connections (id, workspace_id, provider, provider_account_id,
        access_token_ciphertext, refresh_token_ciphertext, scope, expires_at,
        refresh_after, metadata)
    VALUES (v_id, workspace_id, provider, provider_account_id,
        oauth._seal(access_token, 'connection/' || v_id || '/access'),
        oauth._seal(refresh_token, 'connection/' || v_id || '/refresh'),
        scope, expires_at,
        oauth._refresh_after(expires_at, p.refresh_buffer, p.refresh_token_idle_ttl, NULL, now(),
                             refresh_token IS NOT NULL),
        metadata);
    PERFORM oauth._event('created', workspace_id, v_id, provider,
        jsonb_build_object('provider_account_id', provider_account_id,
                           'has_refresh_token', refresh_token IS NOT NULL));
    RETURN v_id;
END $$;
CREATE OR REPLACE FUNCTION oauth.client_credentials(workspace_id text, provider text, scope text[] DEFAULT '{}')
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p oauth.providers;
    r record;
BEGIN
    PERFORM oauth._not_null('workspace_id', workspace_id);
    PERFORM oauth._not_null('provider', provider);
    PERFORM oauth._not_null('scope', scope);
    PERFORM oauth._check_identifier('workspace_id', workspace_id, 256);
    PERFORM oauth._check_workspace_binding(workspace_id);
    p := oauth._provider(provider);
    r := oauth._provider_call(provider, 'token',
            CASE WHEN cardinality(scope) > 0
                 THEN jsonb_build_object('grant_type', 'client_credentials',
                                         'scope', array_to_string(scope, p.scope_separator))
                 ELSE jsonb_build_object('grant_type', 'client_credentials') END,
            '{}');
    IF r.klass <> 'success' THEN
        PERFORM oauth._raise_call_failure('client credentials grant', provider, r);
    END IF;
    -- a provider that sends a refresh token here is ignored: renewal uses the client's credentials
    r.refresh_token := NULL;
    RETURN oauth._store_grant(workspace_id, provider, oauth._account_key('client:' || p.client_id),
                              'client_credentials', r, scope, '{}');
END $$;
-- ---- end of tenant, item 1

-- ---- tenant (issue 14, item 5): NOTIFY oauth_connection_state carries the
-- event id only (a trigger on oauth.events); oauth.connection_event()
-- resolves it for a reader who may see the workspace.  reauthorize, revoke
-- and _store_grant no longer notify themselves.
CREATE FUNCTION oauth._event_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.pg_notify('oauth_connection_state', NEW.id::pg_catalog.text);
    RETURN NULL;
END $$;
CREATE TRIGGER events_notify AFTER INSERT ON oauth.events
    FOR EACH ROW WHEN (NEW.event IN ('reauth_required', 'reauthorized', 'revoked'))
    EXECUTE FUNCTION oauth._event_notify();
CREATE FUNCTION oauth.connection_event(id bigint)
RETURNS TABLE (event_id bigint, at timestamptz, workspace_id text, connection_id uuid,
               provider text, state text, error text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT e.id, e.at, e.workspace_id, e.connection_id, e.provider,
           CASE e.event WHEN 'reauthorized' THEN 'active' ELSE e.event END,
           e.detail ->> 'error'
      FROM oauth.events e
     WHERE e.id = connection_event.id
       AND e.event IN ('reauth_required', 'reauthorized', 'revoked')
       AND oauth._workspace_admitted(e.workspace_id)
$$;
REVOKE ALL ON FUNCTION oauth._event_notify(), oauth.connection_event(bigint) FROM PUBLIC;
CREATE OR REPLACE FUNCTION oauth.reauthorize(
    workspace_id text, connection_id uuid, access_token text, refresh_token text,
    expires_at timestamptz, scope text[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c oauth.connections;
    p oauth.providers;
BEGIN
    c := oauth._connection(workspace_id, connection_id);
    PERFORM oauth._not_null('access_token', access_token);
    IF access_token = '' OR refresh_token = '' THEN
        RAISE EXCEPTION 'access_token and refresh_token must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO p FROM oauth.providers pr WHERE pr.name = c.provider;
    IF expires_at IS NULL AND p.default_lifetime IS NOT NULL THEN
        expires_at := now() + p.default_lifetime;
    END IF;
    UPDATE oauth.connections SET
        access_token_ciphertext = oauth._seal(access_token, 'connection/' || c.id || '/access'),
        -- a provider that does not send a new refresh token keeps the old one valid
        refresh_token_ciphertext = coalesce(oauth._seal(refresh_token, 'connection/' || c.id || '/refresh'),
                                            c.refresh_token_ciphertext),
        scope = coalesce(reauthorize.scope, c.scope),
        expires_at = reauthorize.expires_at,
        refresh_token_expires_at = NULL,
        refresh_after = oauth._refresh_after(reauthorize.expires_at, p.refresh_buffer,
                                             p.refresh_token_idle_ttl, NULL, now(),
                                             refresh_token IS NOT NULL OR c.refresh_token_ciphertext IS NOT NULL,
                                             true),
        refreshed_at = now(), reauth_required_at = NULL, revoked_at = NULL,
        last_refresh_error = NULL, failure_count = 0, next_attempt_at = NULL,
        version = c.version + 1, updated_at = now()
     WHERE id = c.id;
    PERFORM oauth._event('reauthorized', c.workspace_id, c.id, c.provider,
        jsonb_build_object('was', CASE WHEN c.revoked_at IS NOT NULL THEN 'revoked'
                                       WHEN c.reauth_required_at IS NOT NULL THEN 'reauth_required'
                                       ELSE 'active' END));
END $$;
-- ---- end of tenant, item 5

-- ---- tenant (issue 14, item 6): bounded identifiers at the door
-- (create_connection, exchange_code, client_credentials are edited in place above).
CREATE FUNCTION oauth._check_identifier(what text, val text, max_bytes int) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF val = '' THEN
        RAISE EXCEPTION '% must not be empty', what USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF octet_length(val) > max_bytes THEN
        RAISE EXCEPTION '% is too long', what
            USING ERRCODE = 'string_data_right_truncation',
                  DETAIL = format('It has %s bytes; at most %s are accepted.', octet_length(val), max_bytes);
    END IF;
END $$;
CREATE FUNCTION oauth._account_key(val text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN octet_length(val) <= 256 THEN val
                ELSE 'sha256:' || encode(sha256(convert_to(val, 'UTF8')), 'hex') END
$$;
REVOKE ALL ON FUNCTION oauth._check_identifier(text, text, int), oauth._account_key(text) FROM PUBLIC;
-- ---- end of tenant, item 6

-- ---- issue 14, item 7 (memsafe): the copy guard holds without triggers.
-- oauth.refresh_home may hold more than one row (a restore with
-- --disable-triggers keeps CREATE EXTENSION's next to the source's: never
-- home); a random home mark (nonce) is copied into every provider and
-- connection row, so rows restored from elsewhere are found whatever the
-- restore did (src/identity.c).  adopt_copy above is edited in place.
ALTER TABLE oauth.providers DROP COLUMN refresh_home;
ALTER TABLE oauth.refresh_home DROP COLUMN singleton;
DROP TRIGGER refresh_home_changed ON oauth.refresh_home;
DROP FUNCTION oauth._refresh_home_notify();
DROP FUNCTION oauth._refresh_home_changed();
ALTER TABLE oauth.refresh_home ADD COLUMN nonce uuid NOT NULL DEFAULT gen_random_uuid();
CREATE FUNCTION oauth._home_nonce() RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT nonce FROM oauth.refresh_home ORDER BY recorded_at DESC LIMIT 1),
                    '00000000-0000-0000-0000-000000000000')
$$;
REVOKE ALL ON FUNCTION oauth._home_nonce() FROM PUBLIC;
ALTER TABLE oauth.providers ADD COLUMN home_nonce uuid NOT NULL DEFAULT oauth._home_nonce();
ALTER TABLE oauth.connections ADD COLUMN home_nonce uuid NOT NULL DEFAULT oauth._home_nonce();
CREATE INDEX providers_home_nonce_idx ON oauth.providers (home_nonce);
CREATE INDEX connections_home_nonce_idx ON oauth.connections (home_nonce);
-- ---- end of issue 14, item 7 (memsafe)
