-- oauth_tokens install script, part 1: tables and the status view.
-- The whole script is the concatenation of src/sql/*.sql in name order.

\echo Use "CREATE EXTENSION oauth_tokens CASCADE" to load this file. \quit

-- Providers: one row per token endpoint configuration.
CREATE TABLE oauth.providers (
    name                     text PRIMARY KEY
                             CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    authorize_url            text,
    token_url                text NOT NULL,
    revoke_url               text,
    client_id                text NOT NULL CHECK (client_id <> ''),
    client_secret_ciphertext bytea,
    auth_method              text NOT NULL DEFAULT 'client_secret_post'
                             CHECK (auth_method IN ('client_secret_post', 'client_secret_basic', 'none')),
    refresh_buffer           interval NOT NULL DEFAULT '5 minutes'
                             CHECK (refresh_buffer >= interval '0'),
    default_lifetime         interval CHECK (default_lifetime > interval '0'),
    refresh_token_idle_ttl   interval CHECK (refresh_token_idle_ttl > interval '0'),
    extra_params             jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(extra_params) = 'object'),
    extra_headers            jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(extra_headers) = 'object'),
    body_format              text NOT NULL DEFAULT 'form' CHECK (body_format IN ('form', 'json')),
    reauth_errors            text[] NOT NULL DEFAULT '{}',
    max_concurrency          int CHECK (max_concurrency > 0),
    authorize_params         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(authorize_params) = 'object'),
    required_scopes          text[] NOT NULL DEFAULT '{}',
    scope_separator          text NOT NULL DEFAULT ' ',
    scope_on_refresh         boolean NOT NULL DEFAULT false,
    allowed_hosts            text[] NOT NULL DEFAULT '{}',  -- hosts a {placeholder} host may be
    preset                   text,
    paused_at                timestamptz,
    pause_reason             text,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);

-- Connections: one row per customer grant.  Secrets only as ciphertext bound
-- to the row's id (see src/crypto.c).
CREATE TABLE oauth.connections (
    id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id              text NOT NULL CHECK (workspace_id <> ''),
    provider                  text NOT NULL REFERENCES oauth.providers (name),
    provider_account_id       text NOT NULL,
    grant_type                text NOT NULL DEFAULT 'authorization_code'
                              CHECK (grant_type IN ('authorization_code', 'client_credentials')),
    access_token_ciphertext   bytea,
    refresh_token_ciphertext  bytea,
    scope                     text[] NOT NULL DEFAULT '{}',
    expires_at                timestamptz,
    refresh_after             timestamptz,
    refreshed_at              timestamptz,
    last_refresh_error        text,
    reauth_required_at        timestamptz,
    revoked_at                timestamptz,
    failure_count             int NOT NULL DEFAULT 0,
    next_attempt_at           timestamptz,
    refresh_token_expires_at  timestamptz,
    metadata                  jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    version                   bigint NOT NULL DEFAULT 1,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, provider, provider_account_id),
    -- an active connection has an access token; a revoked one has none
    CHECK (revoked_at IS NOT NULL OR access_token_ciphertext IS NOT NULL),
    CHECK (revoked_at IS NULL OR (access_token_ciphertext IS NULL AND refresh_token_ciphertext IS NULL))
);

-- The sweep's index: refresh_after is NULL for connections that are never
-- swept (re-auth required, revoked, no expiry), so the index holds only
-- candidates.
CREATE INDEX connections_refresh_after_idx ON oauth.connections (refresh_after)
    WHERE refresh_after IS NOT NULL;
CREATE INDEX connections_provider_idx ON oauth.connections (provider);

-- Audit trail.  Never a token, secret or key in any column.
CREATE TABLE oauth.events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    workspace_id  text,
    connection_id uuid,
    provider      text,
    event         text NOT NULL CHECK (event IN (
                      'created', 'refreshed', 'refresh_failed', 'reauth_required',
                      'reauthorized', 'revoked', 'deleted', 'token_rejected',
                      'provider_registered', 'key_rotated')),
    detail        jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX events_at_idx ON oauth.events (at);
CREATE INDEX events_connection_idx ON oauth.events (connection_id, id);

-- Authorization codes already sent to a provider (SHA-256 of the code), so a
-- retried exchange_code never redeems a code twice.
CREATE TABLE oauth.code_redemptions (
    code_sha256   bytea PRIMARY KEY,
    provider      text NOT NULL,
    workspace_id  text NOT NULL,
    at            timestamptz NOT NULL DEFAULT now(),
    connection_id uuid,
    outcome       text
);

-- Status without any secret.
CREATE VIEW oauth.connection_status AS
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
  FROM oauth.connections c;

REVOKE ALL ON ALL TABLES IN SCHEMA oauth FROM PUBLIC;
REVOKE ALL ON SCHEMA oauth FROM PUBLIC;
-- oauth_tokens install script, part 2: functions.
-- Admin functions are SQL, SECURITY DEFINER with a fixed search_path; the hot
-- path (valid_token) and the refresh engine's entry points are C and read the
-- tables directly, so they depend on neither the caller's search_path nor its
-- privileges.

-- Internal: encryption helpers (src/crypto.c).  Owner only.
CREATE FUNCTION oauth._seal(plaintext text, context text) RETURNS bytea
    AS 'MODULE_PATHNAME', 'oauth_seal_sql' LANGUAGE C VOLATILE;
CREATE FUNCTION oauth._open(ciphertext bytea, context text) RETURNS text
    AS 'MODULE_PATHNAME', 'oauth_open_sql' LANGUAGE C STABLE;
CREATE FUNCTION oauth._key_id(ciphertext bytea) RETURNS text
    AS 'MODULE_PATHNAME', 'oauth_key_id_sql' LANGUAGE C IMMUTABLE STRICT;
CREATE FUNCTION oauth._active_key_id() RETURNS text
    AS 'MODULE_PATHNAME', 'oauth_active_key_id_sql' LANGUAGE C VOLATILE;
CREATE FUNCTION oauth._reload_keys() RETURNS void
    AS 'MODULE_PATHNAME', 'oauth_reload_keys_sql' LANGUAGE C VOLATILE;

-- Internal: when the next proactive refresh is due.  The earliest of: the
-- refresh buffer before expiry; three quarters into the idle TTL of the
-- refresh token (keep-alive); shortly before the refresh token's own expiry.
-- With fresh (the token was issued at base), a token that lives no longer
-- than the buffer is refreshed halfway through its life instead of at once,
-- so that short-lived tokens are not refreshed on every sweep.
-- NULL when nothing ever needs refreshing.
CREATE FUNCTION oauth._refresh_after(expires_at timestamptz, refresh_buffer interval,
                                     idle_ttl interval, rt_expires_at timestamptz,
                                     base timestamptz, has_refresh_token boolean,
                                     fresh boolean DEFAULT false)
RETURNS timestamptz LANGUAGE sql IMMUTABLE AS $$
    SELECT LEAST(CASE WHEN fresh AND expires_at > base AND expires_at - base <= refresh_buffer
                      THEN base + (expires_at - base) / 2
                      ELSE expires_at - refresh_buffer END,
                 CASE WHEN has_refresh_token AND idle_ttl IS NOT NULL
                      THEN base + idle_ttl * 0.75 END,
                 CASE WHEN has_refresh_token
                      THEN rt_expires_at - GREATEST(refresh_buffer, interval '1 hour') END)
$$;

-- Internal: URL checks shared by register_provider.
CREATE FUNCTION oauth._check_url(what text, url text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF url IS NULL THEN
        RETURN;
    END IF;
    IF url !~ '^https?://[^/?#\s]+(/[^\s]*)?$' THEN
        RAISE EXCEPTION 'invalid % "%"', what, url
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give an absolute https:// URL.';
    END IF;
    IF url ~ '^http://' AND NOT current_setting('oauth.allow_http')::boolean THEN
        RAISE EXCEPTION '% must use https', what
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Got "%s".', url),
                  HINT = 'Only loopback test providers may use http://, with oauth.allow_http = on.';
    END IF;
END $$;

-- Internal: the due connections, fairly ordered: the oldest due of every
-- workspace first, then the second of each, and so on; paused providers are
-- skipped.  Used by the worker's sweep and by refresh_due().
CREATE FUNCTION oauth._due_connections(max_connections int)
RETURNS TABLE (id uuid, version bigint, workspace_id text, provider text)
LANGUAGE sql STABLE AS $$
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

CREATE FUNCTION oauth._event(p_event text, p_workspace text, p_connection uuid,
                             p_provider text, p_detail jsonb DEFAULT '{}')
RETURNS void LANGUAGE sql AS $$
    INSERT INTO oauth.events (workspace_id, connection_id, provider, event, detail)
    VALUES (p_workspace, p_connection, p_provider, p_event, coalesce(p_detail, '{}'))
$$;

CREATE FUNCTION oauth._not_null(what text, val anyelement) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF val IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
    END IF;
END $$;

CREATE FUNCTION oauth._check_interval(what text, val interval, allow_zero boolean DEFAULT true)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF val IS NOT NULL AND (val < interval '0' OR (NOT allow_zero AND val = interval '0')) THEN
        RAISE EXCEPTION '% must be %', what, CASE WHEN allow_zero THEN 'zero or positive' ELSE 'positive' END
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('Got %s.', val);
    END IF;
END $$;

-- Internal: the connection row of a workspace, or OA001.
CREATE FUNCTION oauth._connection(p_workspace text, p_id uuid, lock boolean DEFAULT true)
RETURNS oauth.connections LANGUAGE plpgsql AS $$
DECLARE
    c oauth.connections;
BEGIN
    PERFORM oauth._not_null('workspace_id', p_workspace);
    PERFORM oauth._not_null('connection_id', p_id);
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

-- Internal: a provider's row, or OA004.
CREATE FUNCTION oauth._provider(p_name text) RETURNS oauth.providers
LANGUAGE plpgsql STABLE AS $$
DECLARE
    p oauth.providers;
BEGIN
    SELECT * INTO p FROM oauth.providers WHERE name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown provider "%"', p_name
            USING ERRCODE = 'OA004', HINT = 'Register it first with oauth.register_provider().';
    END IF;
    RETURN p;
END $$;

-- Public: create or update a provider.
CREATE FUNCTION oauth.register_provider(
    name text, token_url text, client_id text, client_secret text DEFAULT NULL,
    auth_method text DEFAULT 'client_secret_post', revoke_url text DEFAULT NULL,
    refresh_buffer interval DEFAULT '5 minutes', default_lifetime interval DEFAULT NULL,
    refresh_token_idle_ttl interval DEFAULT NULL, extra_params jsonb DEFAULT '{}',
    max_concurrency int DEFAULT NULL, authorize_url text DEFAULT NULL,
    body_format text DEFAULT 'form', extra_headers jsonb DEFAULT '{}',
    reauth_errors text[] DEFAULT '{}', preset text DEFAULT NULL,
    allowed_hosts text[] DEFAULT NULL)
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
        allowed_hosts, preset)
    VALUES (v_name, v_authorize_url, v_token_url, v_revoke_url, client_id,
        oauth._seal(client_secret, 'provider/' || v_name || '/client_secret'),
        v_auth_method, refresh_buffer, v_default_lifetime, v_idle_ttl,
        coalesce(v_extra_params, '{}'), coalesce(v_extra_headers, '{}'), v_body_format,
        coalesce(v_reauth_errors, '{}'), max_concurrency, v_authorize_params,
        v_required_scopes, v_scope_separator, v_scope_on_refresh,
        coalesce(v_allowed_hosts, '{}'), preset)
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
        preset = EXCLUDED.preset,
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

-- Public: store tokens obtained elsewhere.
CREATE FUNCTION oauth.create_connection(
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

-- Public: fresh tokens after the customer consented again.
CREATE FUNCTION oauth.reauthorize(
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
    PERFORM pg_notify('oauth_connection_state', json_build_object('workspace_id', c.workspace_id,
        'connection_id', c.id, 'provider', c.provider, 'state', 'active')::text);
END $$;

-- Public: remove a connection; its events stay.
CREATE FUNCTION oauth.delete_connection(workspace_id text, connection_id uuid)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    c oauth.connections;
BEGIN
    c := oauth._connection(workspace_id, connection_id);
    DELETE FROM oauth.connections WHERE id = c.id;
    PERFORM oauth._event('deleted', c.workspace_id, c.id, c.provider, '{}');
END $$;

-- Public: re-encrypt every secret under the active key (the first line of
-- oauth.key_file).  Returns how many values it re-encrypted.  Once it has
-- run, older keys can be removed from the file.
CREATE FUNCTION oauth.rotate_key() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k text := oauth._active_key_id();
    n bigint := 0;
    r record;
    ctx text;
BEGIN
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

-- C entry points.
CREATE FUNCTION oauth.valid_token(workspace_id text, connection_id uuid,
                                  min_validity interval DEFAULT NULL)
RETURNS text AS 'MODULE_PATHNAME', 'oauth_valid_token' LANGUAGE C VOLATILE;
CREATE FUNCTION oauth.token_rejected(workspace_id text, connection_id uuid, access_token text)
RETURNS void AS 'MODULE_PATHNAME', 'oauth_token_rejected' LANGUAGE C VOLATILE;
CREATE FUNCTION oauth.refresh(workspace_id text, connection_id uuid)
RETURNS text AS 'MODULE_PATHNAME', 'oauth_refresh' LANGUAGE C VOLATILE;
CREATE FUNCTION oauth.refresh_due(max_connections int DEFAULT 1000)
RETURNS TABLE (connection_id uuid, workspace_id text, provider text, outcome text)
AS 'MODULE_PATHNAME', 'oauth_refresh_due' LANGUAGE C VOLATILE;
CREATE FUNCTION oauth.stats(
    OUT refreshes_attempted bigint, OUT refreshes_succeeded bigint,
    OUT refreshes_failed_transient bigint, OUT refreshes_failed_permanent bigint,
    OUT waits bigint, OUT waiters_served_by_another bigint, OUT in_flight bigint)
RETURNS record AS 'MODULE_PATHNAME', 'oauth_stats' LANGUAGE C VOLATILE;
-- oauth_tokens install script, part 3: the connection lifecycle around
-- refreshes: authorize URL, code exchange, client credentials, revocation.

CREATE FUNCTION oauth._urlencode(text) RETURNS text
    AS 'MODULE_PATHNAME', 'oauth_urlencode' LANGUAGE C IMMUTABLE STRICT;
CREATE FUNCTION oauth._claim_code(code_sha256 bytea) RETURNS boolean
    AS 'MODULE_PATHNAME', 'oauth_claim_code' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION oauth._provider_call(provider text, kind text, fields jsonb, metadata jsonb,
    OUT klass text, OUT access_token text, OUT refresh_token text, OUT expires_in bigint,
    OUT rt_expires_in bigint, OUT scope text, OUT metadata jsonb, OUT error text,
    OUT http_status int)
    AS 'MODULE_PATHNAME', 'oauth_provider_call' LANGUAGE C VOLATILE;

-- Internal: fill {name} placeholders of a URL from metadata.
CREATE FUNCTION oauth._fill_url(url text, metadata jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    m text[];
    v text;
BEGIN
    FOR m IN SELECT regexp_matches(url, '\{([A-Za-z0-9_]+)\}', 'g') LOOP
        v := metadata ->> m[1];
        IF v IS NULL OR v !~ '^[A-Za-z0-9._:-]+$' THEN
            RAISE EXCEPTION 'URL placeholder {%} has no valid value in metadata', m[1]
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Pass metadata => ''{"%s": "..."}''.', m[1]);
        END IF;
        url := replace(url, '{' || m[1] || '}', v);
    END LOOP;
    RETURN url;
END $$;

-- Public: step 1 of the flow, the URL to send the customer to.
CREATE FUNCTION oauth.authorize_url(provider text, redirect_uri text, state text,
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
    RETURN oauth._fill_url(p.authorize_url, coalesce(metadata, '{}'))
        || CASE WHEN p.authorize_url LIKE '%?%' THEN '&' ELSE '?' END || q;
END $$;

-- Internal: store a token answer as a connection (new, or an existing one of
-- the same account re-authorized).  Returns the id.
CREATE FUNCTION oauth._store_grant(p_workspace text, p_provider text, p_account text,
                                   p_grant_type text, r record, p_scope text[], p_metadata jsonb)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    p oauth.providers;
    c oauth.connections;
    v_id uuid;
    v_exp timestamptz;
    v_rt_exp timestamptz;
    v_scope text[];
BEGIN
    SELECT * INTO p FROM oauth.providers WHERE name = p_provider;
    v_exp := CASE WHEN r.expires_in IS NOT NULL THEN now() + r.expires_in * interval '1 second'
                  ELSE now() + p.default_lifetime END;
    v_rt_exp := CASE WHEN r.rt_expires_in IS NOT NULL THEN now() + r.rt_expires_in * interval '1 second' END;
    v_scope := CASE WHEN r.scope IS NOT NULL AND r.scope <> ''
                    THEN regexp_split_to_array(trim(r.scope), '[ ,]+') ELSE coalesce(p_scope, '{}') END;
    SELECT * INTO c FROM oauth.connections
     WHERE workspace_id = p_workspace AND provider = p_provider AND provider_account_id = p_account
       FOR UPDATE;
    IF FOUND THEN
        v_id := c.id;
        UPDATE oauth.connections SET
            access_token_ciphertext = oauth._seal(r.access_token, 'connection/' || v_id || '/access'),
            refresh_token_ciphertext = CASE WHEN r.refresh_token IS NOT NULL
                THEN oauth._seal(r.refresh_token, 'connection/' || v_id || '/refresh')
                ELSE refresh_token_ciphertext END,
            grant_type = p_grant_type, scope = v_scope, expires_at = v_exp,
            refresh_token_expires_at = v_rt_exp, metadata = c.metadata || p_metadata || r.metadata,
            refreshed_at = now(), reauth_required_at = NULL, revoked_at = NULL,
            last_refresh_error = NULL, failure_count = 0, next_attempt_at = NULL,
            version = c.version + 1, updated_at = now()
         WHERE id = v_id
        RETURNING * INTO c;
        UPDATE oauth.connections SET refresh_after = oauth._refresh_after(v_exp, p.refresh_buffer,
                p.refresh_token_idle_ttl, v_rt_exp, now(),
                c.refresh_token_ciphertext IS NOT NULL OR p_grant_type = 'client_credentials', true)
         WHERE id = v_id;
        PERFORM oauth._event('reauthorized', p_workspace, v_id, p_provider,
                             jsonb_build_object('grant_type', p_grant_type));
        PERFORM pg_notify('oauth_connection_state', json_build_object('workspace_id', p_workspace,
            'connection_id', v_id, 'provider', p_provider, 'state', 'active')::text);
    ELSE
        v_id := gen_random_uuid();
        INSERT INTO oauth.connections (id, workspace_id, provider, provider_account_id, grant_type,
            access_token_ciphertext, refresh_token_ciphertext, scope, expires_at,
            refresh_token_expires_at, refresh_after, refreshed_at, metadata)
        VALUES (v_id, p_workspace, p_provider, p_account, p_grant_type,
            oauth._seal(r.access_token, 'connection/' || v_id || '/access'),
            oauth._seal(r.refresh_token, 'connection/' || v_id || '/refresh'),
            v_scope, v_exp, v_rt_exp,
            oauth._refresh_after(v_exp, p.refresh_buffer, p.refresh_token_idle_ttl, v_rt_exp, now(),
                                 r.refresh_token IS NOT NULL OR p_grant_type = 'client_credentials', true),
            now(), p_metadata || r.metadata);
        PERFORM oauth._event('created', p_workspace, v_id, p_provider,
            jsonb_build_object('grant_type', p_grant_type, 'provider_account_id', p_account,
                               'has_refresh_token', r.refresh_token IS NOT NULL));
    END IF;
    RETURN v_id;
END $$;

-- Internal: raise the error for a failed token call.
CREATE FUNCTION oauth._raise_call_failure(what text, p_provider text, r record) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF r.klass = 'reauth' THEN
        RAISE EXCEPTION '% rejected by the provider', what
            USING ERRCODE = 'OA002', DETAIL = format('The provider answered: %s.', r.error),
                  HINT = 'Send the customer through oauth.authorize_url() again.';
    ELSIF r.klass = 'provider' THEN
        RAISE EXCEPTION 'provider "%" is misconfigured', p_provider
            USING ERRCODE = 'OA004', DETAIL = r.error,
                  HINT = 'Check the client id, secret and auth_method with oauth.register_provider().';
    ELSE
        RAISE EXCEPTION '% failed: the provider is unavailable', what
            USING ERRCODE = 'OA003', DETAIL = r.error, HINT = 'Nothing was stored; try again later.';
    END IF;
END $$;

-- Public: the authorization-code grant (RFC 6749 4.1, with PKCE).
CREATE FUNCTION oauth.exchange_code(workspace_id text, provider text, code text, redirect_uri text,
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
    v_paused boolean;
    v_pause_reason text;
BEGIN
    PERFORM oauth._not_null('workspace_id', workspace_id);
    PERFORM oauth._not_null('provider', provider);
    PERFORM oauth._not_null('code', code);
    PERFORM oauth._not_null('redirect_uri', redirect_uri);
    PERFORM oauth._not_null('metadata', metadata);
    IF workspace_id = '' OR code = '' THEN
        RAISE EXCEPTION 'workspace_id and code must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_typeof(metadata) <> 'object' THEN
        RAISE EXCEPTION 'metadata must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT pr.token_url, pr.paused_at IS NOT NULL, pr.pause_reason
      INTO v_token_url, v_paused, v_pause_reason
      FROM oauth._provider(provider) pr;
    -- what would stop the request before it is sent (a paused provider, a
    -- token URL that cannot be built) fails before the code is claimed: a
    -- code that was never sent stays usable for a corrected call
    IF v_paused THEN
        RAISE EXCEPTION 'provider "%" is paused after a client authentication failure', provider
            USING ERRCODE = 'OA004', DETAIL = coalesce(v_pause_reason, ''),
                  HINT = 'Fix its client credentials with oauth.register_provider(); that resumes it.';
    END IF;
    PERFORM oauth._fill_url(v_token_url, metadata);
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
    v_account := coalesce(provider_account_id, r.metadata ->> 'user_id', r.metadata ->> 'team.id',
                          r.metadata ->> 'realmId', r.metadata ->> 'bot_id', r.metadata ->> 'id',
                          encode(h, 'hex'));
    v_id := oauth._store_grant(workspace_id, provider, v_account, 'authorization_code', r, '{}', metadata);
    INSERT INTO oauth.code_redemptions (code_sha256, provider, workspace_id, connection_id, outcome)
    VALUES (h, provider, workspace_id, v_id, 'success');
    RETURN v_id;
END $$;

-- Public: a connection for the client-credentials grant (no refresh token).
CREATE FUNCTION oauth.client_credentials(workspace_id text, provider text, scope text[] DEFAULT '{}')
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p oauth.providers;
    r record;
BEGIN
    PERFORM oauth._not_null('workspace_id', workspace_id);
    PERFORM oauth._not_null('provider', provider);
    PERFORM oauth._not_null('scope', scope);
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
    RETURN oauth._store_grant(workspace_id, provider, 'client:' || p.client_id,
                              'client_credentials', r, scope, '{}');
END $$;

-- Public: revoke at the provider (RFC 7009) where it can, erase both tokens.
CREATE FUNCTION oauth.revoke(workspace_id text, connection_id uuid) RETURNS void
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
            IF SQLSTATE = '57014' THEN  -- a cancel is the caller's word: stop here
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
-- 50_presets.sql: built-in catalogue of OAuth 2.0 provider presets.
--
-- One row per provider. Values come from shared/PROVIDERS.md (facts as of 2026);
-- authorize URLs not listed there come from the providers' public documentation.
-- Every fact that PROVIDERS.md marks "(?)" is named as uncertain in the row's
-- notes. Check such facts against the provider's live docs before relying on them.

CREATE TABLE oauth.provider_presets (
    name                   text    PRIMARY KEY,
    authorize_url          text,
    token_url              text    NOT NULL,
    revoke_url             text,
    auth_method            text    NOT NULL
        CHECK (auth_method IN ('client_secret_post', 'client_secret_basic', 'none')),
    body_format            text    NOT NULL DEFAULT 'form'
        CHECK (body_format IN ('form', 'json')),
    extra_headers          jsonb   NOT NULL DEFAULT '{}',
    extra_params           jsonb   NOT NULL DEFAULT '{}',
    authorize_params       jsonb   NOT NULL DEFAULT '{}',
    required_scopes        text[]  NOT NULL DEFAULT '{}',
    scope_separator        text    NOT NULL DEFAULT ' ',
    scope_on_refresh       boolean NOT NULL DEFAULT false,
    default_lifetime       interval,
    refresh_token_idle_ttl interval,
    reauth_errors          text[]  NOT NULL DEFAULT '{}',
    notes                  text    NOT NULL DEFAULT '',
    allowed_hosts          text[]  NOT NULL DEFAULT '{}'
);

COMMENT ON TABLE oauth.provider_presets IS
    'Built-in catalogue of OAuth 2.0 provider presets shipped with oauth_tokens: '
    'endpoints, client authentication style, request format and refresh-token '
    'behaviour for each known provider. Facts marked uncertain in notes should be '
    'checked against the provider''s live documentation.';

COMMENT ON COLUMN oauth.provider_presets.name IS
    'Preset key, a lower-case provider name such as google or microsoft.';
COMMENT ON COLUMN oauth.provider_presets.authorize_url IS
    'Authorization endpoint the user is sent to. May hold {placeholders} such as '
    '{tenant}, {instance}, {shop} or {subdomain}, filled in per connection.';
COMMENT ON COLUMN oauth.provider_presets.token_url IS
    'Token endpoint for the code exchange and for refresh. May hold the same '
    '{placeholders} as authorize_url.';
COMMENT ON COLUMN oauth.provider_presets.revoke_url IS
    'RFC 7009-style revocation endpoint (POST with the token and client credentials). '
    'NULL when the provider has none that can be called that way; notes then say how '
    'the provider revokes, if at all.';
COMMENT ON COLUMN oauth.provider_presets.auth_method IS
    'Where client credentials go on token requests: client_secret_post (request body), '
    'client_secret_basic (HTTP Basic header) or none (public client). Pinned per '
    'provider; the engine never probes.';
COMMENT ON COLUMN oauth.provider_presets.body_format IS
    'Encoding of token request bodies: form (application/x-www-form-urlencoded) or json.';
COMMENT ON COLUMN oauth.provider_presets.extra_headers IS
    'HTTP headers sent on every token request, as a JSON object (e.g. Notion-Version). '
    'Accept: application/json is always sent by the engine and is not listed here.';
COMMENT ON COLUMN oauth.provider_presets.extra_params IS
    'Extra fields, as a JSON object, added to the body of refresh requests.';
COMMENT ON COLUMN oauth.provider_presets.authorize_params IS
    'Extra query parameters, as a JSON object, added to the authorize URL (e.g. '
    'access_type=offline, prompt=consent, token_access_type=offline).';
COMMENT ON COLUMN oauth.provider_presets.required_scopes IS
    'Scopes always requested in addition to the connection''s own (e.g. offline_access).';
COMMENT ON COLUMN oauth.provider_presets.scope_separator IS
    'Separator used to join scopes in the scope parameter: a space, or a comma for '
    'providers documented as comma-separated.';
COMMENT ON COLUMN oauth.provider_presets.scope_on_refresh IS
    'When true, the connection''s scope is sent again on every refresh request '
    '(required by Microsoft).';
COMMENT ON COLUMN oauth.provider_presets.default_lifetime IS
    'Access token lifetime assumed when a token response omits expires_in. NULL only '
    'for providers whose access tokens never expire; a missing expires_in must never '
    'be read as "never expires" otherwise.';
COMMENT ON COLUMN oauth.provider_presets.refresh_token_idle_ttl IS
    'Provider''s inactivity limit for refresh tokens: an idle connection must be '
    'refreshed at least this often to keep its refresh token alive. Stores the '
    'provider''s own figure; the engine subtracts its safety margin. A refresh-token '
    'expiry sent in the response (refresh_token_expires_in, x_refresh_token_expires_in) '
    'takes precedence. NULL when there is no known idle limit.';
COMMENT ON COLUMN oauth.provider_presets.reauth_errors IS
    'Error codes, beyond invalid_grant, that mean the grant is dead and the user must '
    'authorise again (matched against error, or a vendor field such as HubSpot''s status).';
COMMENT ON COLUMN oauth.provider_presets.notes IS
    'Plain-English facts about the provider''s quirks, including everything the engine '
    'cannot express in the other columns. Uncertain facts are named as such.';

-- Row layout:
--   (name, authorize_url,
--    token_url,
--    revoke_url,
--    auth_method, body_format, extra_headers, extra_params, authorize_params,
--    required_scopes, scope_separator, scope_on_refresh, default_lifetime, refresh_token_idle_ttl, reauth_errors,
--    notes)
-- Adjacent string literals separated by a newline form one literal (standard SQL).
INSERT INTO oauth.provider_presets
    (name, authorize_url,
     token_url,
     revoke_url,
     auth_method, body_format, extra_headers, extra_params, authorize_params,
     required_scopes, scope_separator, scope_on_refresh, default_lifetime, refresh_token_idle_ttl, reauth_errors,
     notes)
VALUES
  ('google',     'https://accounts.google.com/o/oauth2/v2/auth',
   'https://oauth2.googleapis.com/token',
   'https://oauth2.googleapis.com/revoke',
   'client_secret_post',  'form', '{}',                               '{}', '{"access_type": "offline", "prompt": "consent"}',
   '{}',               ' ', false, '1 hour',     '6 months', '{}',
   'A refresh token is issued only when the authorize URL has access_type=offline; '
   'prompt=consent makes Google issue one again for a user who already consented. Access '
   'tokens last 1 hour (expires_in is sent). No rotation: refresh responses omit '
   'refresh_token, so keep the stored one. A refresh token dies after 6 months unused, '
   'after only 7 days while the app''s consent screen is in Testing status, and the '
   'oldest one dies once a user holds more than 100 refresh tokens for the same client. '
   'Dead grant: 400 invalid_grant.'),

  ('microsoft',  'https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize',
   'https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token',
   NULL,
   'client_secret_post',  'form', '{}',                               '{}', '{}',
   '{offline_access}', ' ', true,  '1 hour',     '90 days',  '{interaction_required}',
   '{tenant} is a directory id or domain, or common, organizations or consumers. The '
   'offline_access scope is required to get a refresh token. Scopes are space-separated '
   'and the connection''s scope must be sent again on every refresh. Access tokens last '
   '60-90 minutes (expires_in is sent; default_lifetime is the 1-hour lower bound, used '
   'only if it is missing). Every refresh returns a new refresh token and the old one is '
   'not revoked; always store the new one. Refresh tokens expire after 90 days of '
   'inactivity. Dead grant: 400 invalid_grant, with the reason only in the AADSTS code '
   'of error_description (for example AADSTS700082, expired after inactivity); '
   'interaction_required (MFA, conditional access, new consent) also needs the user '
   'back. There is no RFC 7009 revocation endpoint, so revoke_url is NULL.'),

  ('salesforce', 'https://{instance}/services/oauth2/authorize',
   'https://{instance}/services/oauth2/token',
   'https://{instance}/services/oauth2/revoke',
   'client_secret_post',  'form', '{}',                               '{}', '{}',
   '{}',               ' ', false, '2 hours',    NULL,       '{}',
   '{instance} is the login host for the authorize step (login.salesforce.com, '
   'test.salesforce.com for sandboxes, or the org''s My Domain host); keep instance_url '
   'from every token response and use it for API calls. The token response has no '
   'expires_in: access tokens live for the org''s session timeout, which each org sets '
   'itself. default_lifetime assumes the Salesforce default of 2 hours; this is an '
   'assumption, not a value Salesforce reports, so set it per org where known. Refresh '
   'token rotation is optional per connected app and refresh token lifetime follows the '
   'app''s refresh token policy, so always store whatever refresh token comes back and '
   'no idle refresh is scheduled. Dead grant: 400 invalid_grant.'),

  ('hubspot',    'https://app.hubspot.com/oauth/authorize',
   'https://api.hubapi.com/oauth/v1/token',
   NULL,
   'client_secret_post',  'form', '{}',                               '{}', '{}',
   '{}',               ' ', false, '30 minutes', NULL,       '{BAD_REFRESH_TOKEN}',
   'Access tokens last 30 minutes (expires_in is sent). The v1 token endpoint is '
   'deprecated on 2027-02-16; check its replacement before then. Revocation is DELETE '
   'https://api.hubapi.com/oauth/v1/refresh-tokens/{token}, which is not an RFC 7009 '
   'endpoint, so revoke_url is NULL. Dead grant: 400 with a vendor body '
   '{"status":"BAD_REFRESH_TOKEN",...}; the code is in the status field, not in error. '
   'Uncertain: that refresh tokens are never rotated (keep the old one when none comes '
   'back), and the refresh token lifetime, which is undocumented, so no idle refresh is '
   'scheduled.'),

  ('slack',      'https://slack.com/oauth/v2/authorize',
   'https://slack.com/api/oauth.v2.access',
   'https://slack.com/api/auth.revoke',
   'client_secret_post',  'form', '{}',                               '{}', '{}',
   '{}',               ',', false, '12 hours',   NULL,       '{invalid_refresh_token}',
   'Refresh tokens exist only when token rotation is turned on for the app; then access '
   'tokens last 12 hours (expires_in is sent) and every refresh returns a new refresh '
   'token, which stays valid as long as it keeps being rotated. The token endpoint '
   'accepts client_secret_basic or client_secret_post; post is pinned here. Errors come '
   'back as HTTP 200 with {"ok":false,"error":...}; invalid_refresh_token means the '
   'grant is dead. User tokens are nested under authed_user in the response (the bot '
   'token is at the top level). Scopes are comma-separated; user scopes go in the '
   'separate user_scope parameter. revoke_url is the Web API method auth.revoke, which '
   'revokes the token passed as token and answers HTTP 200 {"ok":...} rather than a '
   'plain RFC 7009 response.'),

  ('github',     'https://github.com/login/oauth/authorize',
   'https://github.com/login/oauth/access_token',
   NULL,
   'client_secret_post',  'form', '{}',                               '{}', '{}',
   '{}',               ' ', false, '8 hours',    '6 months', '{bad_refresh_token}',
   'Refresh tokens come only from GitHub Apps with expiring user tokens; classic OAuth '
   'Apps get non-expiring tokens and no refresh token. Access tokens last 8 hours '
   '(expires_in is sent). Refresh tokens last 6 months (refresh_token_expires_in is sent '
   'and should win over refresh_token_idle_ttl) and are strictly single use: store the '
   'new one from every refresh. Responses are form-encoded unless the request sends '
   'Accept: application/json; the engine always sends it, so it is not repeated in '
   'extra_headers. Errors come back as HTTP 200; error=bad_refresh_token means the grant '
   'is dead. Scopes on the authorize URL are space-separated (the token response lists '
   'them comma-separated). Uncertain: revocation seems to be only through the app-level '
   'REST API (DELETE /applications/{client_id}/token or /grant with the client '
   'credentials), not an RFC 7009 endpoint, so revoke_url is NULL.'),

  ('xero',       'https://login.xero.com/identity/connect/authorize',
   'https://identity.xero.com/connect/token',
   'https://identity.xero.com/connect/revocation',
   'client_secret_basic', 'form', '{}',                               '{}', '{}',
   '{offline_access}', ' ', false, '30 minutes', '60 days',  '{}',
   'The offline_access scope is required to get a refresh token. Access tokens last 30 '
   'minutes (expires_in is sent). Every refresh returns a new refresh token; the old one '
   'stays usable for 30 minutes, so a retry after a lost response can still succeed. '
   'Refresh tokens expire after 60 days unused. Dead grant: 400 invalid_grant. The '
   'organisation to call is chosen per connection from the /connections endpoint '
   '(xero-tenant-id header), not through the token URL.'),

  ('quickbooks', 'https://appcenter.intuit.com/connect/oauth2',
   'https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer',
   'https://developer.api.intuit.com/v2/oauth2/tokens/revoke',
   'client_secret_basic', 'form', '{}',                               '{}', '{}',
   '{}',               ' ', false, '1 hour',     '100 days', '{}',
   'Intuit QuickBooks Online. Access tokens last 1 hour (expires_in is sent). The '
   'refresh token value changes about every 24 hours: always store the one returned. '
   'Refresh tokens have a 100-day rolling lifetime, reported in '
   'x_refresh_token_expires_in (which should win over refresh_token_idle_ttl), and a '
   '5-year hard cap. Keep realmId (the company id, returned on the authorize redirect) '
   'per connection. Dead grant: 400 invalid_grant. Uncertain: Intuit documents the '
   'revoke call with a JSON body {"token": ...} and Basic auth; whether it also accepts '
   'a form body has not been checked.'),

  ('zoom',       'https://zoom.us/oauth/authorize',
   'https://zoom.us/oauth/token',
   'https://zoom.us/oauth/revoke',
   'client_secret_basic', 'form', '{}',                               '{}', '{}',
   '{}',               ' ', false, '1 hour',     NULL,       '{}',
   'Access tokens last 1 hour (expires_in is sent). Refresh tokens are strictly single '
   'use: store the new one from every refresh. Dead grant: 400 invalid_grant. Scopes are '
   'space-separated. Uncertain: the refresh token lifetime is disputed between sources, '
   'so no idle refresh is scheduled.'),

  ('atlassian',  'https://auth.atlassian.com/authorize',
   'https://auth.atlassian.com/oauth/token',
   NULL,
   'client_secret_post',  'json', '{}',                               '{}', '{"audience": "api.atlassian.com", "prompt": "consent"}',
   '{offline_access}', ' ', false, '1 hour',     '90 days',  '{unauthorized_client}',
   'Atlassian Cloud (OAuth 2.0 3LO). Token requests use a JSON body carrying the client '
   'credentials. The authorize URL needs audience=api.atlassian.com and prompt=consent, '
   'plus the offline_access scope for a refresh token. Access tokens last 1 hour '
   '(expires_in is sent). Every refresh returns a new refresh token; the old one stays '
   'usable for about 10 minutes. Refresh tokens expire after 90 days of inactivity and '
   'have a 365-day absolute cap, after which the user must authorise again. Dead grant: '
   'HTTP 403 with invalid_grant or unauthorized_client. unauthorized_client normally '
   'means a client misconfiguration, but Atlassian returns it for a dead refresh token, '
   'so it is treated as needing re-auth for this provider only; if it comes back right '
   'after a fresh consent, check the app configuration instead. Uncertain: whether there '
   'is any public revocation endpoint; none is known, so revoke_url is NULL.'),

  ('dropbox',    'https://www.dropbox.com/oauth2/authorize',
   'https://api.dropboxapi.com/oauth2/token',
   NULL,
   'client_secret_post',  'form', '{}',                               '{}', '{"token_access_type": "offline"}',
   '{}',               ' ', false, '4 hours',    NULL,       '{}',
   'A refresh token is issued only with token_access_type=offline on the authorize URL; '
   'it is never rotated and lasts until revoked. Access tokens last about 4 hours '
   '(expires_in is sent). The token endpoint accepts client_secret_post or '
   'client_secret_basic; post is pinned here. Dead grant: 400 invalid_grant. Revocation '
   'is https://api.dropboxapi.com/2/auth/token/revoke, an API call authenticated with '
   'the access token as a Bearer header and no token parameter; it is not an RFC 7009 '
   'endpoint, so revoke_url is NULL.'),

  ('notion',     'https://api.notion.com/v1/oauth/authorize',
   'https://api.notion.com/v1/oauth/token',
   'https://api.notion.com/v1/oauth/revoke',
   'client_secret_basic', 'json', '{"Notion-Version": "2022-06-28"}', '{}', '{"owner": "user"}',
   '{}',               ' ', false, '1 hour',     NULL,       '{}',
   'Client credentials go only in an HTTP Basic header, and token requests use a JSON '
   'body. Every token request carries the Notion-Version header (2022-06-28 pinned '
   'here). The authorize URL needs owner=user. Notion does not use OAuth scopes. Every '
   'refresh returns a new refresh token. Keep workspace_id and bot_id from the token '
   'response. Uncertain: the access token lifetime is undocumented, so default_lifetime '
   'assumes 1 hour; the refresh token lifetime is unknown, so no idle refresh is '
   'scheduled; the dead-grant signal is unknown (invalid_grant assumed).'),

  ('shopify',    'https://{shop}.myshopify.com/admin/oauth/authorize',
   'https://{shop}.myshopify.com/admin/oauth/access_token',
   NULL,
   'client_secret_post',  'form', '{}',                               '{}', '{}',
   '{}',               ',', false, '1 hour',     '90 days',  '{}',
   '{shop} is the shop''s myshopify.com subdomain. Expiring offline tokens are opt-in: '
   'the authorization-code exchange must send expiring=1, otherwise Shopify returns a '
   'non-expiring token and no refresh token; extra_params only covers refresh, so the '
   'code exchange has to add it. Access tokens last 1 hour; default_lifetime covers a '
   'response without expires_in. Every refresh returns a new refresh token; the old one '
   'stays valid until the new one is used. Scopes are comma-separated. There is no '
   'revocation endpoint; uninstalling the app revokes access. Uncertain: the refresh '
   'token lifetime of about 90 days (stored as refresh_token_idle_ttl), and the '
   'dead-grant signal (invalid_grant assumed).'),

  ('zendesk',    'https://{subdomain}.zendesk.com/oauth/authorizations/new',
   'https://{subdomain}.zendesk.com/oauth/tokens',
   NULL,
   'client_secret_post',  'json', '{}',                               '{}', '{}',
   '{}',               ' ', false, '30 minutes', '30 days',  '{}',
   '{subdomain} is the account''s zendesk.com subdomain. Token requests use a JSON body '
   'carrying the client credentials. By default access tokens last 30 minutes and '
   'refresh tokens 30 days, and every refresh returns a new refresh token. Older OAuth '
   'clients get a refresh token (and an expiring access token) only when the token '
   'request sends expires_in (in seconds): the code exchange should send it, and a '
   'response without expires_in must not be taken to mean the token never expires. '
   'Nothing extra is sent on refresh. Revocation is by deleting the token by id (DELETE '
   '/api/v2/oauth/tokens/{id}), not an RFC 7009 endpoint, so revoke_url is NULL. '
   'Uncertain: the dead-grant signal (invalid_grant assumed).'),

  ('linkedin',   'https://www.linkedin.com/oauth/v2/authorization',
   'https://www.linkedin.com/oauth/v2/accessToken',
   'https://www.linkedin.com/oauth/v2/revoke',
   'client_secret_post',  'form', '{}',                               '{}', '{}',
   '{}',               ' ', false, '60 days',    NULL,       '{}',
   'Refresh tokens are issued only to approved partner apps (programmatic refresh); '
   'other apps must send the user through authorisation again when the access token '
   'expires. Access tokens last 60 days; default_lifetime covers a response without '
   'expires_in. Refresh tokens are never rotated and expire 365 days after issue (an '
   'absolute cap, not an idle limit, so no idle refresh is scheduled). Scopes are '
   'space-separated. Uncertain: that a dead grant is reported as 400 invalid_grant.'),

  ('asana',      'https://app.asana.com/-/oauth_authorize',
   'https://app.asana.com/-/oauth_token',
   'https://app.asana.com/-/oauth_revoke',
   'client_secret_post',  'form', '{}',                               '{}', '{}',
   '{}',               ' ', false, '1 hour',     NULL,       '{}',
   'Access tokens last 1 hour; default_lifetime covers a response without expires_in. '
   'Refresh tokens are never rotated (keep the stored one) and are long-lived, with no '
   'documented expiry. Dead grant: 400 invalid_grant.'),

  ('linear',     'https://linear.app/oauth/authorize',
   'https://api.linear.app/oauth/token',
   'https://api.linear.app/oauth/revoke',
   'client_secret_post',  'form', '{}',                               '{}', '{}',
   '{}',               ',', false, '24 hours',   NULL,       '{}',
   'Refresh tokens are mandatory for Linear OAuth apps since 2026-04. Access tokens last '
   '24 hours; default_lifetime covers a response without expires_in. Scopes on the '
   'authorize URL are comma-separated (for example read,write). Dead grant: 400 '
   'invalid_grant. Uncertain: that every refresh rotates the refresh token (always store '
   'what comes back), and the refresh token lifetime, which is unknown, so no idle '
   'refresh is scheduled. Also unchecked: whether the revoke endpoint takes the token as '
   'an RFC 7009 form field or only as a Bearer header.'),

  ('box',        'https://account.box.com/api/oauth2/authorize',
   'https://api.box.com/oauth2/token',
   'https://api.box.com/oauth2/revoke',
   'client_secret_post',  'form', '{}',                               '{}', '{}',
   '{}',               ' ', false, '1 hour',     '60 days',  '{}',
   'Access tokens last 1 hour; default_lifetime covers a response without expires_in. '
   'Refresh tokens are strictly single use and last 60 days; each refresh returns a new '
   'one with a fresh 60 days, so idle connections must be refreshed within that window. '
   'Dead grant: 400 invalid_grant.'),

  ('stripe',     'https://connect.stripe.com/oauth/authorize',
   'https://connect.stripe.com/oauth/token',
   NULL,
   'client_secret_post',  'form', '{}',                               '{}', '{}',
   '{}',               ' ', false, NULL,         NULL,       '{}',
   'Stripe Connect OAuth. The platform''s secret key (sk_live_... or sk_test_...) is the '
   'client secret and goes in the form body as client_secret. Access tokens never expire '
   'and the response has no expires_in, so default_lifetime is NULL; a refresh token is '
   'returned but is rarely needed. Keep stripe_user_id (the connected account id) per '
   'connection. Scope is a single value, read_write or read_only. Disconnecting is POST '
   'https://connect.stripe.com/oauth/deauthorize with client_id and stripe_user_id '
   'rather than a token, which is not RFC 7009, so revoke_url is NULL.'),

  ('intercom',   'https://app.intercom.com/oauth',
   'https://api.intercom.io/auth/eagle/token',
   NULL,
   'client_secret_post',  'form', '{}',                               '{}', '{}',
   '{}',               ' ', false, NULL,         NULL,       '{}',
   'Access tokens never expire and no refresh token is issued, so nothing is ever '
   'refreshed and default_lifetime is NULL. The token URL is the US host; workspaces '
   'hosted in Europe or Australia use regional API hosts (api.eu.intercom.io, '
   'api.au.intercom.io), so token_url may need overriding for them. Permissions are '
   'configured in the Intercom app, not passed as scopes. There is no revocation '
   'endpoint. Uncertain: the authorize URL for regionally hosted workspaces.');

-- Hosts that a URL whose host is a {placeholder} may name: the placeholder is
-- filled from a connection's metadata, which tenants may influence, and the
-- token request carries the shared client secret.
COMMENT ON COLUMN oauth.provider_presets.allowed_hosts IS
    'Hosts ("*.example.com" or exact) that a {placeholder} host in the token URL may resolve to.';
UPDATE oauth.provider_presets
   SET allowed_hosts = '{*.salesforce.com,*.force.com,*.salesforce-setup.com}'
 WHERE name = 'salesforce';
-- oauth_tokens install script, last part: nothing is open to PUBLIC.
-- The README shows the grants for an application role and an admin role.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA oauth FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA oauth FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA oauth FROM PUBLIC;
