--
-- 20_connections: storing connections, reading a valid token, tenant
-- scoping, status without secrets, deletion, re-authorization, and the
-- re-auth / revoked states.
--
\set VERBOSITY terse

SELECT try($$SELECT oauth.register_provider('p20', 'https://127.0.0.1:1/token', 'client-20', 'secret-20')$$);

-- Ordinary connection: tokens stored encrypted, the id returned.
SELECT oauth.create_connection('ws20_a', 'p20', 'acct-1', 'at-secret-1', 'rt-secret-1',
                               now() + interval '1 day', '{read,write}', '{"region": "eu1"}') AS c1 \gset
-- refresh_token and expires_at may be NULL
SELECT oauth.create_connection('ws20_b', 'p20', 'acct-1', 'at-secret-2', NULL, NULL) AS c2 \gset
SELECT workspace_id, provider, provider_account_id, grant_type, scope, metadata, version,
       expires_at > now() + interval '23 hours' AS expires_in_a_day,
       refresh_after = expires_at - interval '5 minutes' AS refresh_due_at_buffer,
       access_token_ciphertext IS NOT NULL AS has_access_ct,
       refresh_token_ciphertext IS NOT NULL AS has_refresh_ct,
       oauth._key_id(access_token_ciphertext) AS key_id,
       failure_count, reauth_required_at IS NULL AS no_reauth, revoked_at IS NULL AS not_revoked
  FROM oauth.connections WHERE workspace_id LIKE 'ws20_%' ORDER BY workspace_id;
-- the ciphertexts do not contain the tokens
SELECT count(*) AS plaintext_tokens_in_table FROM oauth.connections
 WHERE position(convert_to('at-secret', 'UTF8') in access_token_ciphertext) > 0
    OR position(convert_to('rt-secret', 'UTF8') in coalesce(refresh_token_ciphertext, '')) > 0;

-- valid_token returns the access token
SELECT oauth.valid_token('ws20_a', :'c1');
SELECT oauth.valid_token('ws20_a', :'c1', interval '1 hour');
SELECT oauth.valid_token('ws20_a', :'c1', interval '0');
-- a token without expiry is valid for any min_validity
SELECT oauth.valid_token('ws20_b', :'c2');
SELECT oauth.valid_token('ws20_b', :'c2', interval '30 days');
-- reading is no write
SELECT version, updated_at = created_at AS untouched FROM oauth.connections WHERE id = :'c1';

-- create_connection: NULL where a value is required is 22004, nothing written
SELECT try($$SELECT oauth.create_connection(NULL, 'p20', 'acct-9', 'at-secret-9', 'rt-secret-9', now() + interval '1 day')$$);
SELECT try($$SELECT oauth.create_connection('ws20_a', NULL, 'acct-9', 'at-secret-9', 'rt-secret-9', now() + interval '1 day')$$);
SELECT try($$SELECT oauth.create_connection('ws20_a', 'p20', NULL, 'at-secret-9', 'rt-secret-9', now() + interval '1 day')$$);
SELECT try($$SELECT oauth.create_connection('ws20_a', 'p20', 'acct-9', NULL, 'rt-secret-9', now() + interval '1 day')$$);
SELECT try($$SELECT oauth.create_connection('ws20_a', 'p20', 'acct-9', 'at-secret-9', 'rt-secret-9', now() + interval '1 day', NULL)$$);
SELECT try($$SELECT oauth.create_connection('ws20_a', 'p20', 'acct-9', 'at-secret-9', 'rt-secret-9', now() + interval '1 day', '{}', NULL)$$);
-- malformed values: 22023
SELECT try($$SELECT oauth.create_connection('', 'p20', 'acct-9', 'at-secret-9', 'rt-secret-9', now() + interval '1 day')$$);
SELECT try($$SELECT oauth.create_connection('ws20_a', 'p20', 'acct-9', '', 'rt-secret-9', now() + interval '1 day')$$);
SELECT try($$SELECT oauth.create_connection('ws20_a', 'p20', 'acct-9', 'at-secret-9', 'rt-secret-9', now() + interval '1 day', '{}', '[1]')$$);
-- unknown provider: OA004
SELECT try($$SELECT oauth.create_connection('ws20_a', 'p20_nope', 'acct-9', 'at-secret-9', 'rt-secret-9', now() + interval '1 day')$$, true);
-- (workspace, provider, account) is unique: 23505, nothing half-written
SELECT try($$SELECT oauth.create_connection('ws20_a', 'p20', 'acct-1', 'at-secret-dup', 'rt-secret-dup', now() + interval '1 day')$$);
SELECT count(*) AS acct1_in_ws20_a FROM oauth.connections
 WHERE workspace_id = 'ws20_a' AND provider = 'p20' AND provider_account_id = 'acct-1';
SELECT oauth.valid_token('ws20_a', :'c1') AS still_the_first_token;

-- valid_token: NULL workspace or id is 22004; a negative min_validity is 22023
SELECT try(format('SELECT oauth.valid_token(NULL, %L)', :'c1'));
SELECT try($$SELECT oauth.valid_token('ws20_a', NULL)$$);
SELECT try(format('SELECT oauth.valid_token(%L, %L, %L)', 'ws20_a', :'c1', '-1 second'));
SELECT try(format('SELECT oauth.valid_token(%L, %L, %L)', 'ws20_a', :'c1', '-1 day'));

-- Tenant scoping: a connection of another workspace is reported exactly as
-- a missing one (same SQLSTATE, message, detail and hint), by every function
-- that takes a connection.
SELECT f AS function,
       try(format(sql, 'ws20_b', :'c1'), true) AS other_workspace,
       try(format(sql, 'ws20_b', :'c1'), true) = try(format(sql, 'ws20_b', gen_random_uuid()), true) AS same_as_missing,
       try(format(sql, 'ws20_a', gen_random_uuid()), true) = try(format(sql, 'ws20_b', gen_random_uuid()), true) AS same_for_any_workspace
  FROM (VALUES
    ('valid_token',       'SELECT oauth.valid_token(%L, %L)'),
    ('token_rejected',    'SELECT oauth.token_rejected(%L, %L, ''at-secret-1'')'),
    ('refresh',           'SELECT oauth.refresh(%L, %L)'),
    ('reauthorize',       'SELECT oauth.reauthorize(%L, %L, ''at-x'', ''rt-x'', now() + interval ''1 day'')'),
    ('delete_connection', 'SELECT oauth.delete_connection(%L, %L)'),
    ('revoke',            'SELECT oauth.revoke(%L, %L)')
  ) AS t(f, sql);
-- ... and none of those calls changed the connection
SELECT workspace_id, version, oauth.valid_token('ws20_a', id) AS token
  FROM oauth.connections WHERE id = :'c1';

-- connection_status: the derived state, and no column holding a secret
SELECT workspace_id, provider, provider_account_id, state, grant_type, scope,
       has_refresh_token, failure_count, metadata, version
  FROM oauth.connection_status WHERE workspace_id LIKE 'ws20_%' ORDER BY workspace_id;
SELECT column_name, data_type FROM information_schema.columns
 WHERE table_schema = 'oauth' AND table_name = 'connection_status'
 ORDER BY ordinal_position;
SELECT count(*) AS secret_columns FROM information_schema.columns
 WHERE table_schema = 'oauth' AND table_name = 'connection_status'
   AND (column_name LIKE '%ciphertext%' OR column_name IN ('access_token', 'refresh_token')
        OR data_type = 'bytea');

-- Re-authorization stores new tokens; the state stays active, version + 1.
SELECT oauth.create_connection('ws20_a', 'p20', 'acct-3', 'at-secret-3', 'rt-secret-3',
                               now() + interval '1 day') AS c3 \gset
SELECT try(format('SELECT oauth.reauthorize(%L, %L, %L, %L, now() + interval ''2 hours'', ''{email}'')',
                  'ws20_a', :'c3', 'at-secret-3b', 'rt-secret-3b'));
SELECT state, version, scope, failure_count, expires_at < now() + interval '3 hours' AS new_expiry
  FROM oauth.connection_status WHERE id = :'c3';
SELECT oauth.valid_token('ws20_a', :'c3');
SELECT oauth._open(refresh_token_ciphertext, 'connection/' || id || '/refresh') AS stored_refresh_token
  FROM oauth.connections WHERE id = :'c3';
SELECT try(format('SELECT oauth.reauthorize(%L, %L, NULL, %L, now() + interval ''1 day'')',
                  'ws20_a', :'c3', 'rt-secret-3c'));
SELECT try(format('SELECT oauth.reauthorize(NULL, %L, %L, %L, now() + interval ''1 day'')',
                  :'c3', 'at-secret-3c', 'rt-secret-3c'));
SELECT version FROM oauth.connections WHERE id = :'c3';

-- A connection marked reauth_required answers OA002, with the provider's
-- error code as detail and a hint on how to re-authorize.
UPDATE oauth.connections
   SET reauth_required_at = now(), last_refresh_error = 'invalid_grant', refresh_after = NULL
 WHERE id = :'c3';
SELECT state FROM oauth.connection_status WHERE id = :'c3';
SELECT try(format('SELECT oauth.valid_token(%L, %L)', 'ws20_a', :'c3'), true);
-- ... until it is re-authorized
SELECT try(format('SELECT oauth.reauthorize(%L, %L, %L, %L, now() + interval ''1 day'')',
                  'ws20_a', :'c3', 'at-secret-3d', 'rt-secret-3d'));
SELECT state, version, last_refresh_error FROM oauth.connection_status WHERE id = :'c3';
SELECT oauth.valid_token('ws20_a', :'c3');

-- A revoked connection (no tokens left) answers OA005.
UPDATE oauth.connections
   SET revoked_at = now(), access_token_ciphertext = NULL, refresh_token_ciphertext = NULL,
       refresh_after = NULL
 WHERE id = :'c3';
SELECT state, has_refresh_token FROM oauth.connection_status WHERE id = :'c3';
SELECT try(format('SELECT oauth.valid_token(%L, %L)', 'ws20_a', :'c3'), true);
SELECT try(format('SELECT oauth.token_rejected(%L, %L, %L)', 'ws20_a', :'c3', 'at-secret-3d'));
SELECT try(format('SELECT oauth.valid_token(%L, %L)', 'ws20_b', :'c3'));

-- delete_connection: another workspace's connection is not found and stays
SELECT try(format('SELECT oauth.delete_connection(%L, %L)', 'ws20_b', :'c1'));
SELECT count(*) AS c1_rows FROM oauth.connections WHERE id = :'c1';
SELECT try(format('SELECT oauth.delete_connection(NULL, %L)', :'c1'));
-- the owner deletes it; afterwards it is not found
SELECT try(format('SELECT oauth.delete_connection(%L, %L)', 'ws20_a', :'c1'));
SELECT count(*) AS c1_rows FROM oauth.connections WHERE id = :'c1';
SELECT try(format('SELECT oauth.valid_token(%L, %L)', 'ws20_a', :'c1'));
SELECT try(format('SELECT oauth.delete_connection(%L, %L)', 'ws20_a', :'c1'));

-- Events: created, reauthorized and deleted are recorded (the events of a
-- deleted connection stay); none holds a token.
SELECT event, workspace_id, provider,
       CASE connection_id WHEN :'c1' THEN 'c1' WHEN :'c2' THEN 'c2' WHEN :'c3' THEN 'c3' END AS conn,
       detail
  FROM oauth.events WHERE workspace_id LIKE 'ws20_%' ORDER BY id;
SELECT NOT EXISTS (SELECT 1 FROM oauth.events
                    WHERE detail::text LIKE '%at-secret%' OR detail::text LIKE '%rt-secret%'
                       OR workspace_id LIKE '%secret%' OR provider LIKE '%secret%') AS events_hold_no_token;

-- An expired token needs a refresh.  This provider cannot be reached (and
-- the refresh service may not be serving yet), so the call fails with one
-- of the extension's errors: OA003 (refresh failed) or OA006 (service
-- unavailable); timing decides which, so only the class is shown.
SELECT oauth.create_connection('ws20_a', 'p20', 'acct-4', 'at-secret-4', 'rt-secret-4',
                               now() - interval '1 hour') AS c4 \gset
SELECT try(format('SELECT oauth.valid_token(%L, %L)', 'ws20_a', :'c4')) ~ '^OA00[36]: ' AS refresh_error_in_class_oa;
SELECT try(format('SELECT oauth.valid_token(%L, %L)', 'ws20_a', :'c4')) ~ '^OA00[36]: ' AS refresh_error_in_class_oa;
-- whatever happened, the expired token was never returned nor lost
SELECT oauth._open(access_token_ciphertext, 'connection/' || id || '/access') AS stored_access_token,
       oauth._open(refresh_token_ciphertext, 'connection/' || id || '/refresh') AS stored_refresh_token,
       reauth_required_at IS NULL AS not_reauth_required
  FROM oauth.connections WHERE id = :'c4';
SELECT count(*) AS tokens_in_events FROM oauth.events
 WHERE detail::text ~ '(at|rt)-secret';

-- Inside the provider's refresh buffer (5 minutes) but valid for longer than
-- min_validity (default 1 minute): the token is returned at once, without
-- waiting for any refresh (stale-while-revalidate).
SELECT oauth.create_connection('ws20_a', 'p20', 'acct-5', 'at-secret-5', 'rt-secret-5',
                               now() + interval '3 minutes') AS c5 \gset
SELECT oauth.valid_token('ws20_a', :'c5');
SELECT oauth.valid_token('ws20_a', :'c5', interval '30 seconds');

-- Without expires_at, the provider's default_lifetime sets the expiry.
SELECT try($$SELECT oauth.register_provider('p20_lifetime', 'https://127.0.0.1:1/token', 'client-20l',
                                            'secret-20l', default_lifetime => '1 hour')$$);
SELECT oauth.create_connection('ws20_a', 'p20_lifetime', 'acct-6', 'at-secret-6', 'rt-secret-6', NULL) AS c6 \gset
SELECT expires_at BETWEEN now() + interval '59 minutes' AND now() + interval '61 minutes' AS expires_in_an_hour,
       refresh_after = expires_at - interval '5 minutes' AS refresh_due_at_buffer
  FROM oauth.connection_status WHERE id = :'c6';
SELECT oauth.valid_token('ws20_a', :'c6');

-- A huge min_validity is not negative: no token can meet it without a
-- refresh (or it is out of range), but it must not be called negative.
SELECT try(format('SELECT oauth.valid_token(%L, %L, %L)', 'ws20_a', :'c6', '100000000 years'))
       !~ 'negative' AS huge_min_validity_not_called_negative;

-- oauth.revoke: with no revocation endpoint (p20 has none) it erases both
-- tokens locally; the state becomes revoked and reads answer OA005.
SELECT oauth.create_connection('ws20_a', 'p20', 'acct-7', 'at-secret-7', 'rt-secret-7',
                               now() + interval '1 day') AS c7 \gset
SELECT try(format('SELECT oauth.revoke(%L, %L)', 'ws20_b', :'c7'));
SELECT try(format('SELECT oauth.revoke(NULL, %L)', :'c7'));
SELECT state FROM oauth.connection_status WHERE id = :'c7';
SELECT try(format('SELECT oauth.revoke(%L, %L)', 'ws20_a', :'c7'));
SELECT state, has_refresh_token, version FROM oauth.connection_status WHERE id = :'c7';
SELECT access_token_ciphertext IS NULL AS access_erased, refresh_token_ciphertext IS NULL AS refresh_erased
  FROM oauth.connections WHERE id = :'c7';
SELECT try(format('SELECT oauth.valid_token(%L, %L)', 'ws20_a', :'c7'));
SELECT event, detail FROM oauth.events WHERE connection_id = :'c7' ORDER BY id;
-- revoking again changes nothing
SELECT try(format('SELECT oauth.revoke(%L, %L)', 'ws20_a', :'c7'));
SELECT version FROM oauth.connection_status WHERE id = :'c7';
