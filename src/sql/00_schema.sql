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
                      'provider_registered', 'key_rotated',
                      'copy_adopted', 'provider_changed')),
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

-- The tenant boundary (src/tenant.c): the workspace this transaction is
-- bound to (oauth.bind_workspace); NULL when unbound and not required (an
-- admin sees everything); '' when unbound and oauth.require_workspace is on
-- (no workspace_id is empty: the view shows nothing).  It tells a session
-- only its own binding, so every role may call it (the view needs it).
CREATE FUNCTION oauth._bound_workspace() RETURNS text
    AS 'MODULE_PATHNAME', 'oauth_bound_workspace_sql' LANGUAGE C STABLE PARALLEL RESTRICTED;

-- Status without any secret; a bound transaction sees its workspace only.
-- security_barrier: a caller's own function in a WHERE clause (pg_temp
-- needs no grant) must not see rows before the binding filters them.
CREATE VIEW oauth.connection_status WITH (security_barrier) AS
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

REVOKE ALL ON ALL TABLES IN SCHEMA oauth FROM PUBLIC;
REVOKE ALL ON SCHEMA oauth FROM PUBLIC;
