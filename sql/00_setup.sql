--
-- 00_setup: install the extension, test helpers, and the key ring.
--
-- The temp instance starts without a key file (oauth.key_file defaults to
-- oauth_tokens.keys in the data directory).  Installing needs no key, but
-- anything that encrypts must fail with an error that names the key file.
-- Paths hold the temp directory, so errors are printed with absolute paths
-- shortened to ".../file".
--
\set VERBOSITY terse
CREATE EXTENSION oauth_tokens CASCADE;
SELECT extname, extrelocatable FROM pg_extension
 WHERE extname IN ('pgcrypto', 'oauth_tokens') ORDER BY 1;
SELECT nspname FROM pg_namespace n JOIN pg_extension e ON e.extnamespace = n.oid
 WHERE e.extname = 'oauth_tokens';

-- Test helper: row counts of the extension's tables.  SECURITY DEFINER so
-- that try() can report them for any role (test database only).
CREATE FUNCTION public.row_counts() RETURNS bigint[]
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS $$
    SELECT ARRAY[(SELECT count(*) FROM oauth.providers),
                 (SELECT count(*) FROM oauth.connections),
                 (SELECT count(*) FROM oauth.events)]
$$;

-- Test helper: run one statement; return 'ok' or 'SQLSTATE: message'
-- (with details, also the DETAIL and HINT), absolute paths shortened.  Any
-- change in the number of rows of providers, connections or events is
-- appended, so "nothing half-written" is visible: a failing call must show
-- no "[rows: ...]" suffix.
CREATE FUNCTION public.try(sql text, details boolean DEFAULT false) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    n0 bigint[] := public.row_counts();
    n1 bigint[];
    res text;
    d text;
    h text;
BEGIN
    BEGIN
        EXECUTE sql;
        res := 'ok';
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
        res := SQLSTATE || ': ' || SQLERRM;
        IF details AND d <> '' THEN res := res || E'\nDETAIL: ' || d; END IF;
        IF details AND h <> '' THEN res := res || E'\nHINT: ' || h; END IF;
    END;
    n1 := public.row_counts();
    IF n1 <> n0 THEN
        res := res || format(' [rows: providers %s, connections %s, events %s]',
                             to_char(n1[1] - n0[1], 'S999999FM'),
                             to_char(n1[2] - n0[2], 'S999999FM'),
                             to_char(n1[3] - n0[3], 'S999999FM'));
    END IF;
    RETURN regexp_replace(res, '"/[^"]*/', '".../', 'g');
END $$;
GRANT EXECUTE ON FUNCTION public.try(text, boolean), public.row_counts() TO PUBLIC;

-- Test helper (superuser only): replace the key file atomically with the
-- given lines, mode 0600 (COPY TO PROGRAM under umask 077, then rename).
CREATE FUNCTION public.write_key_file(VARIADIC lines text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    path text := current_setting('data_directory') || '/oauth_tokens.keys';
    q text := '''' || replace(path, '''', '''\''''') || '''';
    tmpq text := '''' || replace(path || '.tmp', '''', '''\''''') || '''';
BEGIN
    EXECUTE format('COPY (SELECT unnest(%L::text[])) TO PROGRAM %L', lines,
                   format('umask 077 && cat > %s && mv %s %s', tmpq, tmpq, q));
    -- sessions look at the file at most once a second; look now
    IF to_regproc('oauth._reload_keys') IS NOT NULL THEN
        PERFORM oauth._reload_keys();
    END IF;
END $$;
REVOKE ALL ON FUNCTION public.write_key_file(text[]) FROM PUBLIC;

-- No key file yet: registering a provider with a client secret fails with
-- config_file_error naming the file, and writes nothing.
SELECT try($$SELECT oauth.register_provider('setup_provider', 'https://auth.example.com/token',
                                            'client-1', 'setup-secret')$$, true);
SELECT try($$SELECT oauth._active_key_id()$$);
SELECT row_counts();

-- A key file that other users can read is refused (COPY TO a file creates
-- it with mode 0644).
DO $$
BEGIN
    EXECUTE format('COPY (SELECT %L) TO %L',
                   'k1:' || encode(gen_random_bytes(32), 'base64'),
                   current_setting('data_directory') || '/oauth_tokens.keys');
END $$;
SELECT try($$SELECT oauth.register_provider('setup_provider', 'https://auth.example.com/token',
                                            'client-1', 'setup-secret')$$, true);

-- The key ring for the following tests: one key k1, mode 0600.
SELECT write_key_file('k1:' || encode(gen_random_bytes(32), 'base64'));
SELECT (pg_stat_file(current_setting('data_directory') || '/oauth_tokens.keys')).size AS key_file_bytes;
SELECT oauth._active_key_id();

-- now encryption works
SELECT try($$SELECT oauth.register_provider('setup_provider', 'https://auth.example.com/token',
                                            'client-1', 'setup-secret')$$);
SELECT name, client_id, client_secret_ciphertext IS NOT NULL AS has_secret,
       oauth._key_id(client_secret_ciphertext) AS key_id
  FROM oauth.providers;
SELECT event, provider, detail - '{by,session_user}'::text[] AS detail FROM oauth.events ORDER BY id;
