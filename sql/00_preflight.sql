--
-- 00_preflight: what this suite needs of the server it runs on.
--
-- `make installcheck` runs these tests against the server that PGHOST,
-- PGPORT and PGUSER name; `make check-temp` (what `make test` runs) starts a
-- temporary instance configured by test/regress.conf instead.  The server
-- must be one for tests (pg_buildext installcheck's, a pg_createcluster
-- cluster of your own, ...): the suite writes and deletes the key ring in
-- its data directory.  Each line below says ok, or what to change.
--
SELECT CASE WHEN rolsuper THEN 'ok'
            ELSE 'connect as a superuser (PGUSER): the suite creates the extension and writes its key ring' END
       AS superuser
  FROM pg_roles WHERE rolname = current_user;
SELECT CASE WHEN 'oauth_tokens' = ANY (string_to_array(
                 replace(current_setting('shared_preload_libraries'), ' ', ''), ','))
            THEN 'ok'
            ELSE 'add oauth_tokens to shared_preload_libraries and restart the server '
                 '(pg_virtualenv -o shared_preload_libraries=oauth_tokens, or pg_conftool)' END
       AS preloaded;
SELECT CASE WHEN current_setting('oauth.database', true) = current_database() THEN 'ok'
            ELSE 'set oauth.database = ' || current_database() || ' and restart the server '
                 '(exchange_code and the worker''s tests need the worker in this database)' END
       AS worker_database;
SELECT CASE WHEN coalesce(current_setting('oauth.key_file', true), 'oauth_tokens.keys') = 'oauth_tokens.keys'
            THEN 'ok'
            ELSE 'the suite needs oauth.key_file at its default, oauth_tokens.keys' END
       AS key_file_setting;
SELECT CASE WHEN pg_stat_file(current_setting('data_directory') || '/oauth_tokens.keys', true) IS NULL
            THEN 'ok'
            ELSE 'the data directory has a key ring already: this suite needs a server without one '
                 '(a failed earlier run leaves its ring: remove it with rm "'
                 || current_setting('data_directory') || '/oauth_tokens.keys")' END
       AS no_key_ring_yet;
SELECT CASE WHEN current_setting('oauth.allow_private_addresses', true) = 'on' THEN 'ok'
            ELSE 'set oauth.allow_private_addresses = on and reload the server '
                 '(the suite''s providers are on 127.0.0.1)' END
       AS private_addresses;
-- 99_cleanup removes the ring the suite wrote only when this passed
CREATE TABLE public.preflight AS
SELECT pg_stat_file(current_setting('data_directory') || '/oauth_tokens.keys', true) IS NULL
       AND coalesce(current_setting('oauth.key_file', true), 'oauth_tokens.keys') = 'oauth_tokens.keys'
       AS passed;
