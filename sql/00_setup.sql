--
-- 00_setup: install the extension and create the key ring.
--
-- The temp instance starts without oauth.key_file.  Installing needs no key,
-- but anything that encrypts must fail with an error that names the key file
-- (the path holds the temp directory, so only a stable part is printed).
--
\set VERBOSITY terse
CREATE EXTENSION oauth_tokens CASCADE;
SELECT extname, extrelocatable FROM pg_extension
 WHERE extname IN ('pgcrypto', 'oauth_tokens') ORDER BY 1;

-- Test helper (superuser only, used by later files too): print an error's
-- SQLSTATE and message with any absolute path shortened to ".../file".
CREATE FUNCTION public.try(sql text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, '"/[^"]*/', '".../', 'g');
END $$;
REVOKE ALL ON FUNCTION public.try(text) FROM PUBLIC;

-- Test helper: replace the key file atomically with the given lines, mode
-- 0600 (COPY TO PROGRAM under umask 077, then rename over the old file).
CREATE FUNCTION public.write_key_file(VARIADIC lines text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    path text := current_setting('data_directory') || '/oauth_tokens.keys';
    q text := '''' || replace(path, '''', '''\''''') || '''';
    tmpq text := '''' || replace(path || '.tmp', '''', '''\''''') || '''';
BEGIN
    EXECUTE format('COPY (SELECT unnest(%L::text[])) TO PROGRAM %L', lines,
                   format('umask 077 && cat > %s && mv %s %s', tmpq, tmpq, q));
END $$;
REVOKE ALL ON FUNCTION public.write_key_file(text[]) FROM PUBLIC;

-- no key file yet: registering a provider with a client secret fails clearly
SELECT try($$SELECT oauth.register_provider('setup_provider', 'https://auth.example.com/token',
                                            'client-1', 'setup-secret')$$);
-- and nothing was written
SELECT count(*) AS providers FROM oauth.providers;
SELECT count(*) AS events FROM oauth.events;
SELECT try($$SELECT oauth._active_key_id()$$);

-- a key file that other users can read is refused: COPY TO a file creates it
-- with mode 0644
DO $$
BEGIN
    EXECUTE format('COPY (SELECT %L) TO %L',
                   'k1:' || encode(gen_random_bytes(32), 'base64'),
                   current_setting('data_directory') || '/oauth_tokens.keys');
END $$;
SELECT try($$SELECT oauth.register_provider('setup_provider', 'https://auth.example.com/token',
                                            'client-1', 'setup-secret')$$);
SELECT count(*) AS providers FROM oauth.providers;

-- the key ring: one key k1, mode 0600
SELECT write_key_file('k1:' || encode(gen_random_bytes(32), 'base64'));
SELECT (pg_stat_file(current_setting('data_directory') || '/oauth_tokens.keys')).size AS key_file_size;
SELECT oauth._active_key_id();

-- now it works
SELECT oauth.register_provider('setup_provider', 'https://auth.example.com/token',
                               'client-1', 'setup-secret');
SELECT name, client_id, client_secret_ciphertext IS NOT NULL AS has_secret,
       oauth._key_id(client_secret_ciphertext) AS key_id
  FROM oauth.providers;
SELECT event, provider, detail FROM oauth.events ORDER BY id;
