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

-- Internal: fill {name} placeholders of a URL from metadata (src/urls.c).
-- The one filler of every URL the extension builds: token, revoke and
-- authorize URLs go through the same value and allowed_hosts checks.
CREATE FUNCTION oauth._fill_url(provider text, url text, metadata jsonb, allowed_hosts text[])
RETURNS text AS 'MODULE_PATHNAME', 'oauth_fill_url_sql' LANGUAGE C STABLE;

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
    RETURN oauth._fill_url(p.name, p.authorize_url, coalesce(metadata, '{}'), p.allowed_hosts)
        || CASE WHEN p.authorize_url LIKE '%?%' THEN '&' ELSE '?' END || q;
END $$;

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
CREATE FUNCTION oauth._store_grant(p_workspace text, p_provider text, p_account text,
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
