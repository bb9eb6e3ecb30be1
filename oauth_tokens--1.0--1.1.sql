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

-- ==== security (issue 10): templated hosts fail closed, one URL filler in
-- C (src/urls.c) for token, revoke and authorize URLs, hostile answers,
-- concurrent code exchanges.  Function bodies are copies of src/sql.
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

CREATE OR REPLACE FUNCTION oauth.register_provider(
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
    PERFORM oauth._check_url_template('token_url', v_token_url, v_allowed_hosts);
    PERFORM oauth._check_url_template('revoke_url', v_revoke_url, v_allowed_hosts);
    PERFORM oauth._check_url_template('authorize_url', v_authorize_url, v_allowed_hosts);
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
                WHERE jsonb_typeof(h.value) <> 'string' OR h.key !~ '^[A-Za-z0-9-]+$'
                   OR h.value #>> '{}' ~ '[\x01-\x1f\x7f]') THEN
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
    v_account := coalesce(provider_account_id, r.metadata ->> 'user_id', r.metadata ->> 'team.id',
                          r.metadata ->> 'realmId', r.metadata ->> 'bot_id', r.metadata ->> 'id',
                          encode(h, 'hex'));
    v_id := oauth._store_grant(workspace_id, provider, v_account, 'authorization_code', r, '{}', metadata);
    INSERT INTO oauth.code_redemptions (code_sha256, provider, workspace_id, connection_id, outcome)
    VALUES (h, provider, workspace_id, v_id, 'success');
    RETURN v_id;
END $$;

CREATE OR REPLACE FUNCTION oauth._store_grant(p_workspace text, p_provider text, p_account text,
                                   p_grant_type text, r record, p_scope text[], p_metadata jsonb)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    p oauth.providers;
    c oauth.connections;
    v_id uuid := gen_random_uuid();
    v_new uuid;
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
    INSERT INTO oauth.connections (id, workspace_id, provider, provider_account_id, grant_type,
        access_token_ciphertext, refresh_token_ciphertext, scope, expires_at,
        refresh_token_expires_at, refresh_after, refreshed_at, metadata)
    VALUES (v_id, p_workspace, p_provider, p_account, p_grant_type,
        oauth._seal(r.access_token, 'connection/' || v_id || '/access'),
        oauth._seal(r.refresh_token, 'connection/' || v_id || '/refresh'),
        v_scope, v_exp, v_rt_exp,
        oauth._refresh_after(v_exp, p.refresh_buffer, p.refresh_token_idle_ttl, v_rt_exp, now(),
                             r.refresh_token IS NOT NULL OR p_grant_type = 'client_credentials', true),
        now(), p_metadata || r.metadata)
    ON CONFLICT (workspace_id, provider, provider_account_id) DO NOTHING
    RETURNING id INTO v_new;
    IF v_new IS NOT NULL THEN
        PERFORM oauth._event('created', p_workspace, v_id, p_provider,
            jsonb_build_object('grant_type', p_grant_type, 'provider_account_id', p_account,
                               'has_refresh_token', r.refresh_token IS NOT NULL));
        RETURN v_id;
    END IF;

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
