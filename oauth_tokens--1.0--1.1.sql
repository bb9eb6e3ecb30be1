-- oauth_tokens upgrade from 1.0 to 1.1.  Each part names the task that
-- made the change; a fresh 1.1 install and 1.0 + this script must give the
-- same objects.

\echo Use "ALTER EXTENSION oauth_tokens UPDATE TO '1.1'" to load this file. \quit

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

-- The sweep's list is read by the worker and by refresh_due() in the
-- caller's session: it must not resolve anything through the caller's
-- search_path (a planted public.now() would run with the caller's rights).
ALTER FUNCTION oauth._due_connections(int) SET search_path = pg_catalog, pg_temp;

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
                WHERE jsonb_typeof(h.value) <> 'string' OR h.key !~ '^[A-Za-z0-9-]+$') THEN
        RAISE EXCEPTION 'extra_headers must map header names to strings'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    existed := EXISTS (SELECT 1 FROM oauth.providers p WHERE p.name = v_name);
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
    PERFORM oauth._event('provider_registered', NULL, NULL, v_name,
        jsonb_build_object('updated', existed, 'auth_method', v_auth_method, 'preset', preset));
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
