--
-- 30_crypto: secrets are bound to their row; the key ring rotates without
-- losing anything; a missing or malformed key gives a clear error that
-- names no secret and no key.
--
\set VERBOSITY terse

SELECT try($$SELECT oauth.register_provider('p30', 'https://auth.example.com/token', 'client-30', 'secret-30')$$);
SELECT oauth.create_connection('ws30_a', 'p30', 'acct-a', 'at-secret-a', 'rt-secret-a',
                               now() + interval '1 day') AS ca \gset
SELECT oauth.create_connection('ws30_b', 'p30', 'acct-b', 'at-secret-b', 'rt-secret-b',
                               now() + interval '1 day') AS cb \gset
SELECT oauth.valid_token('ws30_a', :'ca') AS a, oauth.valid_token('ws30_b', :'cb') AS b;

-- Sealing the same value twice gives different ciphertexts (random IV).
SELECT oauth._seal('same', 'ctx') <> oauth._seal('same', 'ctx') AS randomized;

-- A ciphertext copied into another tenant's row does not decrypt there:
-- data_corrupted (XX001), and the error names no token.
UPDATE oauth.connections c SET access_token_ciphertext = o.access_token_ciphertext
  FROM oauth.connections o
 WHERE (c.id, o.id) IN ((:'ca'::uuid, :'cb'::uuid), (:'cb'::uuid, :'ca'::uuid));
SELECT try(format('SELECT oauth.valid_token(%L, %L)', 'ws30_a', :'ca'), true) AS error_a;
SELECT try(format('SELECT oauth.valid_token(%L, %L)', 'ws30_b', :'cb'), true) AS error_b;
SELECT try(format('SELECT oauth.valid_token(%L, %L)', 'ws30_a', :'ca'), true) !~ 'secret-|at-|rt-' AS names_no_token;
-- the same for a refresh token and for a field of the same row
SELECT try(format($q$SELECT oauth._open(refresh_token_ciphertext, 'connection/%s/refresh')
                       FROM oauth.connections WHERE id = %L$q$, :'cb', :'ca')) AS other_rows_refresh_token;
SELECT try(format($q$SELECT oauth._open(refresh_token_ciphertext, 'connection/%s/access')
                       FROM oauth.connections WHERE id = %L$q$, :'ca', :'ca')) AS refresh_token_as_access_token;
-- swapped back, both read again
UPDATE oauth.connections c SET access_token_ciphertext = o.access_token_ciphertext
  FROM oauth.connections o
 WHERE (c.id, o.id) IN ((:'ca'::uuid, :'cb'::uuid), (:'cb'::uuid, :'ca'::uuid));
SELECT oauth.valid_token('ws30_a', :'ca') AS a, oauth.valid_token('ws30_b', :'cb') AS b;

-- An altered ciphertext (one bit flipped) or a foreign value is refused.
SELECT access_token_ciphertext AS ca_ct FROM oauth.connections WHERE id = :'ca' \gset
UPDATE oauth.connections
   SET access_token_ciphertext = set_byte(access_token_ciphertext, 30,
                                          get_byte(access_token_ciphertext, 30) # 1)
 WHERE id = :'ca';
SELECT try(format('SELECT oauth.valid_token(%L, %L)', 'ws30_a', :'ca'));
UPDATE oauth.connections SET access_token_ciphertext = convert_to('at-secret-a', 'UTF8') WHERE id = :'ca';
SELECT try(format('SELECT oauth.valid_token(%L, %L)', 'ws30_a', :'ca'));
UPDATE oauth.connections SET access_token_ciphertext = :'ca_ct'::bytea WHERE id = :'ca';
SELECT oauth.valid_token('ws30_a', :'ca') AS a;

-- The key is never visible to SQL: SHOW gives the file name only.
SHOW oauth.key_file;

-- Key rotation.  Every secret is under k1 now.
SELECT oauth._active_key_id();
SELECT 'connections.access' AS what, oauth._key_id(access_token_ciphertext) AS key_id, count(*)
  FROM oauth.connections WHERE access_token_ciphertext IS NOT NULL GROUP BY 2
UNION ALL
SELECT 'connections.refresh', oauth._key_id(refresh_token_ciphertext), count(*)
  FROM oauth.connections WHERE refresh_token_ciphertext IS NOT NULL GROUP BY 2
UNION ALL
SELECT 'providers.client_secret', oauth._key_id(client_secret_ciphertext), count(*)
  FROM oauth.providers WHERE client_secret_ciphertext IS NOT NULL GROUP BY 2
ORDER BY 1;
SELECT (SELECT count(access_token_ciphertext) + count(refresh_token_ciphertext) FROM oauth.connections)
     + (SELECT count(client_secret_ciphertext) FROM oauth.providers) AS ciphertexts \gset

-- A new key k2 goes first; k1 stays on the second line to decrypt.
SELECT write_key_file('k2:' || encode(gen_random_bytes(32), 'base64'),
                      split_part(pg_read_file(current_setting('data_directory') || '/oauth_tokens.keys'), E'\n', 1));
SELECT oauth._active_key_id();
-- old secrets still read; new ones are sealed under k2
SELECT oauth.valid_token('ws30_a', :'ca') AS a, oauth.valid_token('ws30_b', :'cb') AS b;
SELECT oauth.create_connection('ws30_a', 'p30', 'acct-c', 'at-secret-c', NULL,
                               now() + interval '1 day') AS cc \gset
SELECT oauth._key_id(access_token_ciphertext) AS cc_key FROM oauth.connections WHERE id = :'cc';

-- rotate_key re-encrypts every value under k1 and returns how many
SELECT oauth.rotate_key() AS re_encrypted \gset
SELECT :re_encrypted > 0 AS some_re_encrypted, :re_encrypted = :ciphertexts AS every_old_ciphertext;
SELECT 'connections.access' AS what, oauth._key_id(access_token_ciphertext) AS key_id, count(*)
  FROM oauth.connections WHERE access_token_ciphertext IS NOT NULL GROUP BY 2
UNION ALL
SELECT 'connections.refresh', oauth._key_id(refresh_token_ciphertext), count(*)
  FROM oauth.connections WHERE refresh_token_ciphertext IS NOT NULL GROUP BY 2
UNION ALL
SELECT 'providers.client_secret', oauth._key_id(client_secret_ciphertext), count(*)
  FROM oauth.providers WHERE client_secret_ciphertext IS NOT NULL GROUP BY 2
ORDER BY 1;
-- a second rotation has nothing to do
SELECT oauth.rotate_key() AS re_encrypted_again;
-- every secret still reads, bound to the same row
SELECT oauth.valid_token('ws30_a', :'ca') AS a, oauth.valid_token('ws30_b', :'cb') AS b,
       oauth.valid_token('ws30_a', :'cc') AS c;
SELECT count(*) FILTER (WHERE oauth._open(access_token_ciphertext, 'connection/' || id || '/access') IS NULL) AS unreadable_access,
       count(*) FILTER (WHERE refresh_token_ciphertext IS NOT NULL
                          AND oauth._open(refresh_token_ciphertext, 'connection/' || id || '/refresh') IS NULL) AS unreadable_refresh
  FROM oauth.connections WHERE access_token_ciphertext IS NOT NULL;
SELECT oauth._open(refresh_token_ciphertext, 'connection/' || id || '/refresh') AS b_refresh
  FROM oauth.connections WHERE id = :'cb';
SELECT oauth._open(client_secret_ciphertext, 'provider/p30/client_secret') AS p30_secret
  FROM oauth.providers WHERE name = 'p30';

-- the key_rotated events hold the key id and the count, never key material
SELECT event, workspace_id, connection_id, provider, detail->>'key_id' AS key_id,
       CASE (detail->>'re_encrypted')::bigint WHEN :re_encrypted THEN 'as returned'
            WHEN 0 THEN 'none' END AS re_encrypted,
       (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(detail) k) AS detail_keys
  FROM oauth.events WHERE event = 'key_rotated' ORDER BY id;
SELECT count(*) AS events_with_key_material
  FROM oauth.events e,
       regexp_split_to_table(pg_read_file(current_setting('data_directory') || '/oauth_tokens.keys'), E'\n') l
 WHERE l <> '' AND position(split_part(l, ':', 2) IN e::text) > 0;

-- Once rotated, k1 can go: a ring of k2 alone reads everything.
SELECT write_key_file(split_part(pg_read_file(current_setting('data_directory') || '/oauth_tokens.keys'), E'\n', 1));
SELECT oauth._active_key_id();
SELECT oauth.valid_token('ws30_a', :'ca') AS a, oauth.valid_token('ws30_b', :'cb') AS b,
       oauth.valid_token('ws30_a', :'cc') AS c;
SELECT count(*) FILTER (WHERE oauth._open(access_token_ciphertext, 'connection/' || id || '/access') IS NULL) AS unreadable
  FROM oauth.connections WHERE access_token_ciphertext IS NOT NULL;

-- Keep the k2 ring aside (this session only) to restore it below.
CREATE TEMP TABLE saved_ring AS
SELECT pg_read_file(current_setting('data_directory') || '/oauth_tokens.keys') AS content;

-- A ring that lacks the key a secret was sealed with: config_file_error
-- (F0000) naming the missing key id, and how to fix it.
SELECT write_key_file('k3:' || encode(gen_random_bytes(32), 'base64'));
SELECT oauth._active_key_id();
SELECT try(format('SELECT oauth.valid_token(%L, %L)', 'ws30_a', :'ca'), true);
-- rotating cannot help without the old key, and changes nothing
SELECT try('SELECT oauth.rotate_key()');
SELECT oauth._key_id(access_token_ciphertext) AS ca_key FROM oauth.connections WHERE id = :'ca';
-- put k2 back
SELECT write_key_file(VARIADIC (SELECT array_agg(l) FROM regexp_split_to_table(content, E'\n') l WHERE l <> ''))
  FROM saved_ring;
SELECT oauth._active_key_id();
SELECT oauth.valid_token('ws30_a', :'ca') AS a;

-- A malformed ring: F0000 with the line number, never the line's content.
SELECT write_key_file((SELECT split_part(content, E'\n', 1) FROM saved_ring), '', '# comment', 'garbage');
SELECT try(format('SELECT oauth.valid_token(%L, %L)', 'ws30_a', :'ca'), true);
SELECT try($$SELECT oauth.register_provider('p30_new', 'https://auth.example.com/token', 'c', 's')$$);
-- a key that is not 32 bytes
SELECT write_key_file('k4:' || encode(gen_random_bytes(16), 'base64'));
SELECT try('SELECT oauth._active_key_id()');
-- a key id with characters outside [A-Za-z0-9_.-]
SELECT write_key_file('k 5:' || encode(gen_random_bytes(32), 'base64'));
SELECT try('SELECT oauth._active_key_id()');
-- base64 that is not base64
SELECT write_key_file('k6:' || repeat('!', 44));
SELECT try('SELECT oauth._active_key_id()');
-- a file with no key at all
SELECT write_key_file('# only a comment');
SELECT try('SELECT oauth._active_key_id()', true);
-- errors show no key material
SELECT try('SELECT oauth._active_key_id()', true) !~ '[A-Za-z0-9+/]{40}' AS no_key_in_error;

-- Restore k2 for the following tests.
SELECT write_key_file(VARIADIC (SELECT array_agg(l) FROM regexp_split_to_table(content, E'\n') l WHERE l <> ''))
  FROM saved_ring;
DROP TABLE saved_ring;
SELECT oauth._active_key_id();
SELECT oauth.valid_token('ws30_a', :'ca') AS a, oauth.valid_token('ws30_b', :'cb') AS b;
