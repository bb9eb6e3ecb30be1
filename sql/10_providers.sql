--
-- 10_providers: oauth.register_provider creates or updates a provider, keeps
-- its client secret only as row-bound ciphertext, and refuses malformed
-- input with standard SQLSTATEs without writing anything.
--
\set VERBOSITY terse

-- Ordinary registration, every field given.
SELECT try($$
    SELECT oauth.register_provider(
        name => 'p10_full',
        token_url => 'https://auth.example.com/oauth/token',
        client_id => 'client-10',
        client_secret => 'the-secret',
        auth_method => 'client_secret_basic',
        revoke_url => 'https://auth.example.com/oauth/revoke',
        refresh_buffer => '10 minutes',
        default_lifetime => '1 hour',
        refresh_token_idle_ttl => '30 days',
        extra_params => '{"audience": "api"}',
        max_concurrency => 4,
        authorize_url => 'https://auth.example.com/authorize',
        body_format => 'json',
        extra_headers => '{"X-Api-Version": "2"}',
        reauth_errors => '{bad_refresh_token}')
$$);
\x on
SELECT name, authorize_url, token_url, revoke_url, client_id, auth_method,
       refresh_buffer, default_lifetime, refresh_token_idle_ttl, extra_params,
       extra_headers, body_format, reauth_errors, max_concurrency, preset,
       paused_at IS NULL AS not_paused, updated_at >= created_at AS timestamps_ok
  FROM oauth.providers WHERE name = 'p10_full';
\x off

-- The client secret is stored only as ciphertext, under the active key,
-- bound to the provider's row.
SELECT client_secret_ciphertext IS NOT NULL AS has_ciphertext,
       octet_length(client_secret_ciphertext) > 0 AS not_empty,
       position(convert_to('the-secret', 'UTF8') in client_secret_ciphertext) = 0 AS secret_not_in_plain,
       oauth._key_id(client_secret_ciphertext) AS key_id,
       oauth._open(client_secret_ciphertext, 'provider/p10_full/client_secret') = 'the-secret' AS decrypts
  FROM oauth.providers WHERE name = 'p10_full';
SELECT try($$SELECT oauth._open(client_secret_ciphertext, 'provider/setup_provider/client_secret')
               FROM oauth.providers WHERE name = 'p10_full'$$);
SELECT event, workspace_id, connection_id, provider, detail - '{by,session_user}'::text[] AS detail,
       detail ->> 'by' = current_user AS by_me
  FROM oauth.events WHERE provider = 'p10_full' ORDER BY id;
SELECT client_secret_ciphertext AS p10_ct FROM oauth.providers WHERE name = 'p10_full' \gset

-- Updating: a second call replaces the configuration; a NULL client_secret
-- keeps the stored one (the very same ciphertext).
SELECT try($$
    SELECT oauth.register_provider('p10_full', 'https://auth.example.com/v2/token', 'client-10b',
                                   NULL, 'client_secret_post', refresh_buffer => '2 minutes')
$$);
SELECT token_url, client_id, auth_method, revoke_url, refresh_buffer, default_lifetime,
       body_format, extra_headers, max_concurrency,
       client_secret_ciphertext = :'p10_ct'::bytea AS same_ciphertext,
       oauth._open(client_secret_ciphertext, 'provider/p10_full/client_secret') = 'the-secret' AS secret_kept
  FROM oauth.providers WHERE name = 'p10_full';
SELECT event, provider, detail - '{by,session_user}'::text[] AS detail FROM oauth.events
 WHERE provider = 'p10_full' ORDER BY id DESC LIMIT 1;

-- a new secret replaces it
SELECT try($$
    SELECT oauth.register_provider('p10_full', 'https://auth.example.com/v2/token', 'client-10b',
                                   'the-new-secret')
$$);
SELECT client_secret_ciphertext = :'p10_ct'::bytea AS same_ciphertext,
       oauth._open(client_secret_ciphertext, 'provider/p10_full/client_secret') AS secret_now
  FROM oauth.providers WHERE name = 'p10_full';

-- A public client needs no secret; any other auth_method does.
SELECT try($$SELECT oauth.register_provider('p10_public', 'https://auth.example.com/token', 'public-client',
                                            auth_method => 'none')$$);
SELECT client_secret_ciphertext IS NULL AS no_secret FROM oauth.providers WHERE name = 'p10_public';
SELECT try($$SELECT oauth.register_provider('p10_nosecret', 'https://auth.example.com/token', 'c')$$);
SELECT try($$SELECT oauth.register_provider('p10_nosecret', 'https://auth.example.com/token', 'c',
                                            auth_method => 'client_secret_basic')$$);

-- Everything below fails; the "[rows: ...]" suffix of try() would show any
-- row written, and the totals are compared at the end.
SELECT count(*) AS providers_before FROM oauth.providers \gset
SELECT count(*) AS events_before FROM oauth.events \gset

-- NULL for a required argument: null_value_not_allowed (22004)
SELECT try($$SELECT oauth.register_provider(NULL, 'https://auth.example.com/token', 'c', 's')$$);
SELECT try($$SELECT oauth.register_provider('p10_x', NULL, 'c', 's')$$);
SELECT try($$SELECT oauth.register_provider('p10_x', 'https://auth.example.com/token', NULL, 's')$$);
SELECT try($$SELECT oauth.register_provider('p10_x', 'https://auth.example.com/token', 'c', 's',
                                            auth_method => NULL)$$);
SELECT try($$SELECT oauth.register_provider('p10_x', 'https://auth.example.com/token', 'c', 's',
                                            refresh_buffer => NULL)$$);
SELECT try($$SELECT oauth.register_provider('p10_x', 'https://auth.example.com/token', 'c', 's',
                                            body_format => NULL)$$);

-- malformed URLs: invalid_parameter_value (22023)
SELECT try($$SELECT oauth.register_provider('p10_x', 'not a url', 'c', 's')$$, true);
SELECT try($$SELECT oauth.register_provider('p10_x', 'auth.example.com/token', 'c', 's')$$);
SELECT try($$SELECT oauth.register_provider('p10_x', 'ftp://auth.example.com/token', 'c', 's')$$);
SELECT try($$SELECT oauth.register_provider('p10_x', 'https:///token', 'c', 's')$$);
SELECT try($$SELECT oauth.register_provider('p10_x', 'https://auth.example.com/token', 'c', 's',
                                            revoke_url => 'mailto:admin@example.com')$$);
SELECT try($$SELECT oauth.register_provider('p10_x', 'https://auth.example.com/token', 'c', 's',
                                            authorize_url => 'javascript:alert(1)')$$);

-- http:// only with oauth.allow_http (a superuser setting)
SHOW oauth.allow_http;
SELECT try($$SELECT oauth.register_provider('p10_http', 'http://127.0.0.1:8080/token', 'c', 's')$$, true);
SELECT try($$SELECT oauth.register_provider('p10_http', 'https://auth.example.com/token', 'c', 's',
                                            revoke_url => 'http://auth.example.com/revoke')$$);

-- other malformed values: invalid_parameter_value (22023)
SELECT try($$SELECT oauth.register_provider('p10_x', 'https://auth.example.com/token', 'c', 's',
                                            auth_method => 'client_secret_jwt')$$, true);
SELECT try($$SELECT oauth.register_provider('p10_x', 'https://auth.example.com/token', 'c', 's',
                                            body_format => 'xml')$$, true);
SELECT try($$SELECT oauth.register_provider('p10_x', 'https://auth.example.com/token', 'c', 's',
                                            refresh_buffer => '-1 minute')$$, true);
SELECT try($$SELECT oauth.register_provider('p10_x', 'https://auth.example.com/token', 'c', 's',
                                            default_lifetime => '0')$$);
SELECT try($$SELECT oauth.register_provider('p10_x', 'https://auth.example.com/token', 'c', 's',
                                            default_lifetime => '-1 hour')$$);
SELECT try($$SELECT oauth.register_provider('p10_x', 'https://auth.example.com/token', 'c', 's',
                                            refresh_token_idle_ttl => '0')$$);
SELECT try($$SELECT oauth.register_provider('p10_x', 'https://auth.example.com/token', 'c', 's',
                                            max_concurrency => 0)$$);
SELECT try($$SELECT oauth.register_provider('p10_x', 'https://auth.example.com/token', 'c', 's',
                                            max_concurrency => -3)$$);
SELECT try($$SELECT oauth.register_provider('p10_x', 'https://auth.example.com/token', 'c', 's',
                                            extra_headers => '["X-A", "1"]')$$);
SELECT try($$SELECT oauth.register_provider('p10_x', 'https://auth.example.com/token', 'c', 's',
                                            extra_headers => '{"X-A": 1}')$$);
SELECT try($$SELECT oauth.register_provider('p10_x', 'https://auth.example.com/token', 'c', 's',
                                            extra_headers => '{"Bad Header\r\nX": "1"}')$$);
SELECT try($$SELECT oauth.register_provider('p10_x', 'https://auth.example.com/token', 'c', 's',
                                            extra_params => '"audience=api"')$$);
SELECT try($$SELECT oauth.register_provider('bad name', 'https://auth.example.com/token', 'c', 's')$$);
SELECT try($$SELECT oauth.register_provider('', 'https://auth.example.com/token', 'c', 's')$$);
SELECT try($$SELECT oauth.register_provider('p10_x', 'https://auth.example.com/token', '', 's')$$);

-- unknown preset: OA004
SELECT try($$SELECT oauth.register_provider('p10_x', NULL, 'c', 's', preset => 'no-such-provider')$$, true);

-- a failed update leaves the stored provider as it was
SELECT try($$SELECT oauth.register_provider('p10_full', 'https://auth.example.com/v3/token', 'client-10c',
                                            'third-secret', auth_method => 'bogus')$$);
SELECT try($$SELECT oauth.register_provider('p10_full', 'ftp://auth.example.com/v3/token', 'client-10c',
                                            'third-secret')$$);
SELECT token_url, client_id,
       oauth._open(client_secret_ciphertext, 'provider/p10_full/client_secret') AS secret_now
  FROM oauth.providers WHERE name = 'p10_full';

SELECT count(*) - :providers_before AS providers_written,
       (SELECT count(*) FROM oauth.events) - :events_before AS events_written
  FROM oauth.providers;
SELECT name FROM oauth.providers WHERE name IN ('p10_x', 'p10_http', 'bad name', '') ;

-- With oauth.allow_http on (superuser), http:// is accepted for test providers.
SET oauth.allow_http = on;
SELECT try($$SELECT oauth.register_provider('p10_http', 'http://127.0.0.1:8080/token', 'c', 's')$$);
RESET oauth.allow_http;
SELECT token_url FROM oauth.providers WHERE name = 'p10_http';

-- Presets: fields not given come from the catalogue; token_url may be NULL.
SELECT count(*) > 0 AS has_presets FROM oauth.provider_presets;
SELECT try($$SELECT oauth.register_provider('p10_google', NULL, 'google-client', 'google-secret',
                                            preset => 'google')$$);
SELECT p.token_url = g.token_url AS token_url_from_preset,
       p.authorize_url = g.authorize_url AS authorize_url_from_preset,
       p.auth_method = g.auth_method AS auth_method_from_preset,
       p.authorize_params = g.authorize_params AS authorize_params_from_preset,
       p.preset
  FROM oauth.providers p, oauth.provider_presets g
 WHERE p.name = 'p10_google' AND g.name = 'google';
-- an explicit value wins over the preset's
SELECT try($$SELECT oauth.register_provider('p10_google2', 'https://oauth2.example.com/token', 'google-client',
                                            'google-secret', preset => 'google',
                                            default_lifetime => '15 minutes')$$);
SELECT token_url, default_lifetime, preset FROM oauth.providers WHERE name = 'p10_google2';
-- ... but SQL cannot tell a value given equal to the parameter's default from
-- an omitted one: with a preset, a parameter left at its default takes the
-- preset's value (notion's client_secret_basic here).  Override to the default
-- value with a second call without preset.
SELECT try($$SELECT oauth.register_provider('p10_notion', NULL, 'notion-client', 'notion-secret',
                                            auth_method => 'client_secret_post', preset => 'notion')$$);
SELECT p.auth_method, g.auth_method AS preset_auth_method
  FROM oauth.providers p, oauth.provider_presets g
 WHERE p.name = 'p10_notion' AND g.name = 'notion';

-- No event, no column of any table holds a client secret in clear.
SELECT count(*) AS events_with_secret FROM oauth.events
 WHERE detail::text ~ '(the-secret|the-new-secret|third-secret|google-secret|notion-secret)';
SELECT count(*) AS providers_with_secret_in_clear FROM oauth.providers p
 WHERE position(convert_to('secret', 'UTF8') in coalesce(p.client_secret_ciphertext, '')) > 0
    OR p::text ~ 'the-secret|google-secret|notion-secret';
SELECT event, provider, detail - '{by,session_user}'::text[] AS detail FROM oauth.events
 WHERE provider LIKE 'p10%' ORDER BY id;

-- Outbound addresses: with oauth.allow_private_addresses off (a superuser
-- setting; the suite's own configuration turns it on for its loopback
-- providers), a provider URL must name its host by DNS name.
SET oauth.allow_private_addresses = off;
SELECT try($$SELECT oauth.register_provider('p10_ip', 'https://169.254.169.254/token', 'c', 's')$$, true);
SELECT try($$SELECT oauth.register_provider('p10_ip', 'https://0x7f000001/token', 'c', 's')$$, true);
SELECT try($$SELECT oauth.register_provider('p10_ip', 'https://auth.example.com/token', 'c', 's',
                                            revoke_url => 'https://[::1]/revoke')$$, true);
SELECT try($$SELECT oauth.register_provider('p10_ip', 'https://{tenant}.example.com/token', 'c', 's',
                                            allowed_hosts => '{*.example.com}')$$);
RESET oauth.allow_private_addresses;
SELECT name, token_url FROM oauth.providers WHERE name = 'p10_ip';
DELETE FROM oauth.providers WHERE name = 'p10_ip';
