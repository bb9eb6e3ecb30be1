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
-- restored dump brings the source's row with it (the BEFORE INSERT trigger
-- lets the restored row replace the one CREATE EXTENSION wrote), so a copy
-- knows it is one.  Anywhere else the extension serves still-valid tokens and
-- sends nothing to any provider until a DBA runs oauth.adopt_copy().  Read by
-- the C code (src/identity.c), cached per process.
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
    SELECT * INTO old FROM oauth.refresh_home;
    IF FOUND AND old.system_identifier = sysid AND old.database_oid = db THEN
        RETURN 'already_home';
    END IF;
    IF FOUND THEN
        UPDATE oauth.refresh_home
           SET system_identifier = sysid, database_oid = db, database_name = current_database(),
               recorded_at = now(), recorded_by = current_user, how = 'adopt_copy';
    ELSE
        INSERT INTO oauth.refresh_home (system_identifier, database_oid, database_name, how)
        VALUES (sysid, db, current_database(), 'adopt_copy');
    END IF;
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
    PERFORM pg_notify('oauth_connection_state', json_build_object('workspace_id', c.workspace_id,
        'connection_id', c.id, 'provider', c.provider, 'state', 'revoked')::text);
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

-- Issue 8 (engine): oauth.refresh_jobs(), the refresh jobs by state.
CREATE FUNCTION oauth.refresh_jobs(
    OUT connection_id uuid, OUT state text, OUT requested_by text,
    OUT forced boolean, OUT token_rejected boolean, OUT waiters int,
    OUT state_since timestamptz)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'oauth_refresh_jobs' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION oauth.refresh_jobs() FROM PUBLIC;
