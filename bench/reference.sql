-- bench/reference.sql: what the benchmarks compare oauth.valid_token with,
-- loaded into the benchmark's scratch database by bench/run.sh.
--
--  * The reference pattern: the usual way of keeping OAuth tokens in an
--    application table, written in PL/pgSQL.  Each call takes the connection
--    row with SELECT ... FOR UPDATE (so concurrent callers of one connection
--    queue behind each other) and decrypts the stored access token with
--    pgcrypto's pgp_sym_decrypt and its default options (an iterated S2K key
--    derivation on every call).  Only a fresh token is modelled: that is the
--    path a busy application takes on nearly every call.
--  * The floor: the same tokens in plain text, read by primary key.  No token
--    function can be faster than this lookup; ratios against it are what the
--    benchmark reports.
--
-- Both live in schema seedref: 10,000 connections over 100 workspaces, and
-- seedref.ids(n, id) numbering them so that a pgbench script picks one with
--   \set n random(1, 10000)
--   SELECT seedref.get_valid_access_token((SELECT id FROM seedref.ids WHERE n = :n), 'k3y');
-- Needs pgcrypto (gen_random_uuid is built in since PostgreSQL 13).

CREATE SCHEMA IF NOT EXISTS seedref;

CREATE TABLE seedref.oauth_connections (
    id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id              text NOT NULL,
    provider                  text NOT NULL,
    provider_account_id       text NOT NULL,
    access_token_ciphertext   bytea NOT NULL,
    refresh_token_ciphertext  bytea,
    scope                     text[] NOT NULL DEFAULT '{}',
    expires_at                timestamptz,
    refresh_after             timestamptz,
    refreshed_at              timestamptz,
    last_refresh_error        text,
    reauth_required_at        timestamptz,
    version                   int NOT NULL DEFAULT 0
);

-- the floor: the same access tokens, unencrypted
CREATE TABLE seedref.plain (
    id            uuid PRIMARY KEY,
    workspace_id  text NOT NULL,
    access_token  text NOT NULL
);

-- the reference pattern: lock the row, check it, decrypt
CREATE FUNCTION seedref.get_valid_access_token(p_id uuid, p_key text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    conn seedref.oauth_connections;
BEGIN
    SELECT * INTO STRICT conn
      FROM seedref.oauth_connections WHERE id = p_id
       FOR UPDATE;
    IF conn.reauth_required_at IS NOT NULL THEN
        RAISE EXCEPTION 'connection % needs re-authorization', p_id;
    END IF;
    IF conn.expires_at IS NULL OR conn.expires_at <= now() + interval '5 minutes' THEN
        RAISE EXCEPTION 'the refresh path is not part of this reference';
    END IF;
    RETURN pgp_sym_decrypt(conn.access_token_ciphertext, p_key);
END $$;

INSERT INTO seedref.oauth_connections
       (workspace_id, provider, provider_account_id,
        access_token_ciphertext, refresh_token_ciphertext, expires_at)
SELECT 'ws' || (i % 100), 'hubspot', 'acct' || i,
       pgp_sym_encrypt('access-token-' || i || repeat('x', 200), 'k3y'),
       pgp_sym_encrypt('refresh-token-' || i, 'k3y'),
       now() + interval '1 day'
  FROM generate_series(1, 10000) AS i;

CREATE TABLE seedref.ids AS
SELECT row_number() OVER (ORDER BY id) AS n, id FROM seedref.oauth_connections;
CREATE UNIQUE INDEX ON seedref.ids (n);

INSERT INTO seedref.plain (id, workspace_id, access_token)
SELECT c.id, c.workspace_id, pgp_sym_decrypt(c.access_token_ciphertext, 'k3y')
  FROM seedref.oauth_connections c;

ANALYZE seedref.oauth_connections, seedref.plain, seedref.ids;
