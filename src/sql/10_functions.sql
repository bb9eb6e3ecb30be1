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

-- Internal: placeholders, user information and allowed_hosts of a URL
-- template (src/urls.c): a {placeholder} in the host requires allowed_hosts.
CREATE FUNCTION oauth._check_url_template(what text, url text, allowed_hosts text[]) RETURNS void
    AS 'MODULE_PATHNAME', 'oauth_check_url_template_sql' LANGUAGE C IMMUTABLE;

-- Internal: a provider URL names its host by DNS name, not by IP address
-- in any spelling, unless oauth.allow_private_addresses (src/addresses.c).
CREATE FUNCTION oauth._check_url_address(what text, url text) RETURNS void
    AS 'MODULE_PATHNAME', 'oauth_check_url_address_sql' LANGUAGE C STABLE;

-- Internal: the due connections, fairly ordered: the oldest due of every
-- workspace first, then the second of each, and so on; paused providers are
-- skipped.  Used by the worker's sweep and by refresh_due().
CREATE FUNCTION oauth._due_connections(max_connections int)
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

CREATE FUNCTION oauth._event(p_event text, p_workspace text, p_connection uuid,
                             p_provider text, p_detail jsonb DEFAULT '{}')
RETURNS void LANGUAGE sql AS $$
    INSERT INTO oauth.events (workspace_id, connection_id, provider, event, detail)
    VALUES (p_workspace, p_connection, p_provider, p_event, coalesce(p_detail, '{}'))
$$;

-- Internal: a state change (reauth_required, reauthorized, revoked) sends
-- NOTIFY oauth_connection_state with the event's id, and nothing else: LISTEN
-- needs no privilege, so the payload names no workspace, connection,
-- provider or error; a granted reader resolves it with
-- oauth.connection_event().  A short integer of our own, never user input:
-- no input can make the notification (and with it the state change) fail.
CREATE FUNCTION oauth._event_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.pg_notify('oauth_connection_state', NEW.id::pg_catalog.text);
    RETURN NULL;
END $$;
CREATE TRIGGER events_notify AFTER INSERT ON oauth.events
    FOR EACH ROW WHEN (NEW.event IN ('reauth_required', 'reauthorized', 'revoked'))
    EXECUTE FUNCTION oauth._event_notify();

-- Public: what a notification on oauth_connection_state says, for a reader
-- who may see its workspace (the transaction's binding and
-- oauth.require_workspace apply, as for valid_token).  No row for an id that
-- is not a state change, or of another workspace.
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

CREATE FUNCTION oauth._not_null(what text, val anyelement) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF val IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = 'null_value_not_allowed';
    END IF;
END $$;

-- Internal: the documented limits of identifiers (README, "Limits of
-- identifiers"), checked at the door of the functions that store them: not
-- empty (22023), at most max_bytes bytes (22001).  NULL passes (_not_null
-- says what is required).  The value itself is never echoed.
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

-- Internal: an account id that comes from a provider or a client id (not
-- from the caller) as stored: itself up to 256 bytes, else 'sha256:' and
-- the hex of its SHA-256, so a long one never fails a grant.
CREATE FUNCTION oauth._account_key(val text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN octet_length(val) <= 256 THEN val
                ELSE 'sha256:' || encode(sha256(convert_to(val, 'UTF8')), 'hex') END
$$;

CREATE FUNCTION oauth._check_interval(what text, val interval, allow_zero boolean DEFAULT true)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF val IS NOT NULL AND (val < interval '0' OR (NOT allow_zero AND val = interval '0')) THEN
        RAISE EXCEPTION '% must be %', what, CASE WHEN allow_zero THEN 'zero or positive' ELSE 'positive' END
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('Got %s.', val);
    END IF;
END $$;

-- The tenant boundary (src/tenant.c).  Public: bind the current
-- transaction to one workspace.
CREATE FUNCTION oauth.bind_workspace(workspace_id text) RETURNS void
    AS 'MODULE_PATHNAME', 'oauth_bind_workspace' LANGUAGE C VOLATILE;
-- Internal: may this transaction see the workspace?  Bound: only its own.
-- Unbound: all, unless oauth.require_workspace is on (then 42501).
CREATE FUNCTION oauth._workspace_admitted(workspace_id text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'oauth_workspace_admitted_sql' LANGUAGE C STABLE PARALLEL RESTRICTED;

-- Internal: refuse (42501) a new connection for a workspace this
-- transaction may not see.
CREATE FUNCTION oauth._check_workspace_binding(p_workspace text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT oauth._workspace_admitted(p_workspace) THEN
        RAISE EXCEPTION 'this transaction is bound to another workspace'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'A transaction bound with oauth.bind_workspace() works on that workspace only.';
    END IF;
END $$;

-- Internal: the connection row of a workspace, or OA001 (also for a
-- workspace other than the one the transaction is bound to).
CREATE FUNCTION oauth._connection(p_workspace text, p_id uuid, lock boolean DEFAULT true)
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

-- Internal: re-encrypt committed connections (and pending answers) under the
-- active key, in batches of `batch` rows, each its own transaction.
CREATE FUNCTION oauth._rotate_connections(batch int DEFAULT 1000) RETURNS bigint
    AS 'MODULE_PATHNAME', 'oauth_rotate_connections' LANGUAGE C VOLATILE;

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

-- Issue 8 (engine): the refresh jobs in the shared request table, with their
-- state (queued, sending, answered, done); see the README's state model.
CREATE FUNCTION oauth.refresh_jobs(
    OUT connection_id uuid, OUT state text, OUT requested_by text,
    OUT forced boolean, OUT token_rejected boolean, OUT waiters int,
    OUT state_since timestamptz)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'oauth_refresh_jobs' LANGUAGE C VOLATILE;
