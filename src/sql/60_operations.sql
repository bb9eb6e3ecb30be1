-- oauth_tokens install script: operations (backups, copies, standbys).

-- Where this data refreshes: the cluster (system identifier, as
-- pg_control_system() shows it) and the database (oid and name) that may
-- talk to providers with these grants, and a random home mark (nonce)
-- that every provider and connection row takes when it is written.
-- Recorded by CREATE EXTENSION.  A restored dump brings the source's row
-- (which replaces CREATE EXTENSION's while triggers run) and rows that
-- carry the source's mark.  src/identity.c trusts this database as home
-- only when the table holds exactly one row, naming this cluster and
-- database, and no provider or connection carries another mark; so a copy
-- is found whatever the restore did (no trigger, any order, a table left
-- out).  Anywhere else the extension serves still-valid tokens and sends
-- nothing to any provider until a DBA runs oauth.adopt_copy().
CREATE TABLE oauth.refresh_home (
    system_identifier  bigint NOT NULL,
    database_oid       oid NOT NULL,
    database_name      text NOT NULL,
    recorded_at        timestamptz NOT NULL DEFAULT now(),
    recorded_by        text NOT NULL DEFAULT current_user,
    how                text NOT NULL CHECK (how IN ('create extension', 'upgrade', 'adopt_copy')),
    nonce              uuid NOT NULL DEFAULT gen_random_uuid()
);
COMMENT ON TABLE oauth.refresh_home IS
    'The cluster and database that refresh these grants; elsewhere (a restored copy, a clone) nothing is sent to providers until oauth.adopt_copy().';

-- A row inserted (CREATE EXTENSION's, a restored one, adopt_copy's)
-- replaces the ones there.  Without triggers (a restore with
-- --disable-triggers) both stay, and two rows are never home.
CREATE FUNCTION oauth._refresh_home_replace() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM oauth.refresh_home;
    RETURN NEW;
END $$;
CREATE TRIGGER refresh_home_replace BEFORE INSERT ON oauth.refresh_home
    FOR EACH ROW EXECUTE FUNCTION oauth._refresh_home_replace();

INSERT INTO oauth.refresh_home (system_identifier, database_oid, database_name, how)
SELECT (SELECT system_identifier FROM pg_catalog.pg_control_system()), d.oid, d.datname,
       'create extension'
  FROM pg_catalog.pg_database d
 WHERE d.datname = pg_catalog.current_database();

-- The home mark new provider and connection rows take (the default of
-- their home_nonce); a restore writes the source's mark instead.  The
-- all-zero uuid (never a gen_random_uuid()) when there is no row.
CREATE FUNCTION oauth._home_nonce() RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT nonce FROM oauth.refresh_home ORDER BY recorded_at DESC LIMIT 1),
                    '00000000-0000-0000-0000-000000000000')
$$;
ALTER TABLE oauth.providers ADD COLUMN home_nonce uuid NOT NULL DEFAULT oauth._home_nonce();
ALTER TABLE oauth.connections ADD COLUMN home_nonce uuid NOT NULL DEFAULT oauth._home_nonce();
-- src/identity.c looks for a row with another mark through these (two
-- probes, < and >, on each check)
CREATE INDEX providers_home_nonce_idx ON oauth.providers (home_nonce);
CREATE INDEX connections_home_nonce_idx ON oauth.connections (home_nonce);

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

-- pg_dump keeps users' data: every row of these tables (and the events'
-- identity sequence).  The presets (oauth.provider_presets) belong to the
-- extension and are not dumped; CREATE EXTENSION writes them.
SELECT pg_catalog.pg_extension_config_dump('oauth.providers', '');
SELECT pg_catalog.pg_extension_config_dump('oauth.connections', '');
SELECT pg_catalog.pg_extension_config_dump('oauth.events', '');
SELECT pg_catalog.pg_extension_config_dump('oauth.events_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('oauth.code_redemptions', '');
SELECT pg_catalog.pg_extension_config_dump('oauth.refresh_home', '');
