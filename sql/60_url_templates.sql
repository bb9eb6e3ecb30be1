--
-- 60_url_templates: the one URL filler (src/urls.c).  A {placeholder} in the
-- host of any provider URL (token, revoke, authorize) needs allowed_hosts;
-- filled values may not carry a port, user information, an IP address or
-- URL delimiters; a filled host outside allowed_hosts is refused, for
-- authorize_url, exchange_code and (TAP: 300_tenant_hosts) the worker alike.
--
-- Self-sufficient: when 00_setup has not run, the extension and a key file
-- (mode 0600) are created here.
--
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS oauth_tokens CASCADE;
DO $$
DECLARE
    path text := current_setting('data_directory') || '/oauth_tokens.keys';
BEGIN
    IF pg_stat_file(path, true) IS NULL THEN
        EXECUTE format('COPY (SELECT %L) TO PROGRAM %L',
                       'k1:' || encode(gen_random_bytes(32), 'base64'),
                       format('umask 077 && cat > %s', quote_literal(path)));
    END IF;
END $$;
RESET client_min_messages;

CREATE FUNCTION pg_temp.t60(sql text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- Registration: a templated host without allowed_hosts is refused, in every URL.
SELECT pg_temp.t60($$SELECT oauth.register_provider('u60_a', 'https://{host}/token', 'c', 's')$$);
SELECT pg_temp.t60($$SELECT oauth.register_provider('u60_a', 'https://{sub}.example.com/token', 'c', 's')$$);
SELECT pg_temp.t60($$SELECT oauth.register_provider('u60_a', 'https://auth.example.com/token', 'c', 's',
    revoke_url => 'https://{host}/revoke')$$);
SELECT pg_temp.t60($$SELECT oauth.register_provider('u60_a', 'https://auth.example.com/token', 'c', 's',
    authorize_url => 'https://{host}/authorize')$$);
SELECT count(*) AS registered FROM oauth.providers WHERE name = 'u60_a';
-- a placeholder in the path needs no list
SELECT pg_temp.t60($$SELECT oauth.register_provider('u60_path', 'https://auth.example.com/{tenant}/token', 'c', 's',
    authorize_url => 'https://auth.example.com/{tenant}/authorize')$$);
-- templates: user information, a templated port, malformed placeholders
SELECT pg_temp.t60($$SELECT oauth.register_provider('u60_b', 'https://user@{h}.example.com/token', 'c', 's',
    allowed_hosts => '{*.example.com}')$$);
SELECT pg_temp.t60($$SELECT oauth.register_provider('u60_b', 'https://u:p@auth.example.com/token', 'c', 's')$$);
SELECT pg_temp.t60($$SELECT oauth.register_provider('u60_b', 'https://auth.example.com:{port}/token', 'c', 's',
    allowed_hosts => '{auth.example.com}')$$);
SELECT pg_temp.t60($$SELECT oauth.register_provider('u60_b', 'https://auth.example.com/{ten ant}/token', 'c', 's')$$);
SELECT pg_temp.t60($$SELECT oauth.register_provider('u60_b', 'https://auth.example.com/{tenant/token', 'c', 's')$$);
SELECT pg_temp.t60($$SELECT oauth.register_provider('u60_b', 'https://auth.example.com/tenant}/token', 'c', 's')$$);
-- allowed_hosts entries: names or "*." and two labels; no IP, port, TLD wildcard
SELECT pg_temp.t60($$SELECT oauth.register_provider('u60_b', 'https://{h}.example.com/token', 'c', 's',
    allowed_hosts => '{*.com}')$$);
SELECT pg_temp.t60($$SELECT oauth.register_provider('u60_b', 'https://{h}/token', 'c', 's',
    allowed_hosts => '{127.0.0.1}')$$);
SELECT pg_temp.t60($$SELECT oauth.register_provider('u60_b', 'https://{h}/token', 'c', 's',
    allowed_hosts => '{auth.example.com:443}')$$);
SELECT pg_temp.t60($$SELECT oauth.register_provider('u60_b', 'https://{h}/token', 'c', 's',
    allowed_hosts => '{*}')$$);
SELECT count(*) AS registered FROM oauth.providers WHERE name = 'u60_b';

-- A provider with a templated host and its list.
SELECT oauth.register_provider('u60_t', 'https://{sub}.example.com/token', 'c', 's',
    revoke_url => 'https://{sub}.example.com/revoke',
    authorize_url => 'https://{sub}.example.com/authorize',
    allowed_hosts => '{*.example.com,login.example.org}');

-- authorize_url goes through the same filler: allowed hosts pass ...
SELECT oauth.authorize_url('u60_t', 'https://app.example.net/cb', 's', metadata => '{"sub": "acme"}');
SELECT oauth.authorize_url('u60_t', 'https://app.example.net/cb', 's', metadata => '{"sub": "eu.acme"}');
-- ... and everything that would leave the list is refused (22023)
SELECT left(v, 16) AS value, pg_temp.t60(format($$SELECT oauth.authorize_url('u60_t', 'https://app.example.net/cb', 's',
           metadata => %L)$$, jsonb_build_object('sub', v))) AS outcome
  FROM unnest(ARRAY['evil.com/', 'evil.com#', 'evil.com?', 'evil.com:8443', 'x@evil.com',
                    'evil.com%2f', '127.0.0.1', '..', '', 'a b', repeat('a', 254)]) v;
-- a number is not a host part
SELECT pg_temp.t60($$SELECT oauth.authorize_url('u60_t', 'https://app.example.net/cb', 's',
    metadata => '{"sub": 1}')$$);

-- Host placeholders: the whole host from metadata.
SELECT oauth.register_provider('u60_h', 'https://{host}/token', 'c', 's',
    authorize_url => 'https://{host}/authorize', allowed_hosts => '{*.example.com,login.example.org}');
SELECT oauth.authorize_url('u60_h', 'https://app.example.net/cb', 's', metadata => '{"host": "login.example.org"}');
SELECT oauth.authorize_url('u60_h', 'https://app.example.net/cb', 's', metadata => '{"host": "A.Example.COM"}');
-- IP literals in every spelling, suffix tricks, the bare domain, a trailing dot
SELECT v AS value, pg_temp.t60(format($$SELECT oauth.authorize_url('u60_h', 'https://app.example.net/cb', 's',
           metadata => %L)$$, jsonb_build_object('host', v))) AS outcome
  FROM unnest(ARRAY['127.0.0.1', '2130706433', '0x7f000001', '0177.0.0.1', '0x7f.1', '10.0.0.1.',
                    '[::1]', '::1', 'example.com', 'badexample.com', 'example.com.evil.net',
                    'login.example.org.', 'evil.net', 'a..example.com', 'localhost']) v;

-- Path placeholders stay free within their characters.
SELECT oauth.authorize_url('u60_path', 'https://app.example.net/cb', 's',
    metadata => '{"tenant": "contoso.onmicrosoft.com"}');
SELECT pg_temp.t60($$SELECT oauth.authorize_url('u60_path', 'https://app.example.net/cb', 's',
    metadata => '{"tenant": "../../evil"}')$$);
SELECT pg_temp.t60($$SELECT oauth.authorize_url('u60_path', 'https://app.example.net/cb', 's',
    metadata => '{"tenant": "a%2f.."}')$$);

-- exchange_code checks the token URL before the code is claimed or sent.
SELECT pg_temp.t60($$SELECT oauth.exchange_code('ws60', 'u60_t', 'code-1', 'https://app.example.net/cb',
    metadata => '{"sub": "evil.com/"}')$$);
SELECT pg_temp.t60($$SELECT oauth.exchange_code('ws60', 'u60_h', 'code-1', 'https://app.example.net/cb',
    metadata => '{"host": "127.0.0.1"}')$$);
SELECT count(*) AS codes_claimed FROM oauth.code_redemptions WHERE workspace_id = 'ws60';

-- A row stored without a list (registered before the rule) fails closed.
UPDATE oauth.providers SET allowed_hosts = '{}' WHERE name = 'u60_t';
SELECT pg_temp.t60($$SELECT oauth.authorize_url('u60_t', 'https://app.example.net/cb', 's',
    metadata => '{"sub": "acme"}')$$);

-- Shipped presets with a templated host carry a list.
SELECT name, allowed_hosts FROM oauth.provider_presets
 WHERE token_url ~ '^https?://[^/]*\{' OR authorize_url ~ '^https?://[^/]*\{' OR revoke_url ~ '^https?://[^/]*\{'
 ORDER BY name;
SELECT oauth.register_provider('u60_sf', NULL, 'c', 's', preset => 'salesforce');
SELECT oauth.register_provider('u60_zd', NULL, 'c', 's', preset => 'zendesk');
SELECT oauth.authorize_url('u60_sf', 'https://app.example.net/cb', 's', metadata => '{"instance": "acme.my.salesforce.com"}');
SELECT oauth.authorize_url('u60_zd', 'https://app.example.net/cb', 's', metadata => '{"subdomain": "acme"}');
-- a Salesforce customer site is not a login host
SELECT pg_temp.t60($$SELECT oauth.authorize_url('u60_sf', 'https://app.example.net/cb', 's',
    metadata => '{"instance": "acme.my.site.com"}')$$);
SELECT pg_temp.t60($$SELECT oauth.authorize_url('u60_sf', 'https://app.example.net/cb', 's',
    metadata => '{"instance": "acme.force.com"}')$$);

-- Header values cannot smuggle a header of their own (CR/LF), at registration
-- and, for rows stored before, when a request is built.
SELECT pg_temp.t60($$SELECT oauth.register_provider('u60_hdr', 'https://auth.example.com/token', 'c', 's',
    extra_headers => '{"X-Api": "1\r\nAuthorization: Basic eA=="}')$$);
SELECT pg_temp.t60($$SELECT oauth.register_provider('u60_hdr', 'https://auth.example.com/token', 'c', 's',
    extra_headers => '{"X-Api": "1\u0007"}')$$);
SELECT count(*) AS registered FROM oauth.providers WHERE name = 'u60_hdr';
SELECT oauth.register_provider('u60_hdr', 'https://auth.example.com/token', 'c', 's',
    extra_headers => '{"X-Api": "1"}');
UPDATE oauth.providers SET extra_headers = '{"X-Api": "1\r\nX-Evil: 1"}' WHERE name = 'u60_hdr';
-- (a new code each run: the server remembers the codes it sent, across runs
-- of make installcheck against it)
SELECT pg_temp.t60(format($$SELECT oauth.exchange_code('ws60', 'u60_hdr', %L, 'https://app.example.net/cb')$$,
                          'code-hdr-' || gen_random_uuid()));

-- Values are read within their length (a jsonb string has no terminating
-- NUL): ".." stored just before "." is still "..", and the last value of an
-- object is not read past its end.  Each is refused, never filled.
SELECT oauth.register_provider('u60_dots', 'https://api.example.com/t/{a}/token', 'c', 's',
    authorize_url => 'https://api.example.com/t/{b}/authorize');
SELECT pg_temp.t60($$SELECT oauth._fill_url('u60_dots', 'https://api.example.com/t/{a}/token',
    '{"a": "..", "b": "."}', NULL)$$);
SELECT pg_temp.t60($$SELECT oauth._fill_url('u60_dots', 'https://api.example.com/t/{b}/token',
    '{"a": "..", "b": "."}', NULL)$$);
SELECT pg_temp.t60($$SELECT oauth._fill_url('u60_dots', 'https://api.example.com/t/{a}/token',
    '{"a": ".", "b": "ok"}', NULL)$$);
SELECT pg_temp.t60($$SELECT oauth.authorize_url('u60_dots', 'https://app.example.net/cb', 's',
    metadata => '{"a": "..", "b": "."}')$$);
-- and good values are filled exactly
SELECT oauth._fill_url('u60_dots', 'https://api.example.com/t/{a}/{b}/token',
    '{"a": "a..b", "b": "c.d"}', NULL);
