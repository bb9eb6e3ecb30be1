--
-- 50_authorize_url: providers registered from presets with only a client id
-- and secret, and the exact URLs oauth.authorize_url() builds for them:
-- each provider's own requirements for getting a refresh token (Google's
-- access_type=offline and prompt=consent, Dropbox's token_access_type,
-- Microsoft's and Atlassian's offline_access scope, Atlassian's audience),
-- the scope separator of each provider, {placeholders} filled from metadata,
-- and RFC 3986 percent-encoding of every parameter.  Then the errors.
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

-- Test helper: 'ok', or the error's SQLSTATE and message.
CREATE FUNCTION pg_temp.t50_err(sql text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- Presets need only a client id and secret (token_url NULL).
SELECT oauth.register_provider('au50_google', NULL, 'my-client', 'sec', preset => 'google');
SELECT oauth.register_provider('au50_ms', NULL, 'my-client', 'sec', preset => 'microsoft');
SELECT oauth.register_provider('au50_dropbox', NULL, 'my-client', 'sec', preset => 'dropbox');
SELECT oauth.register_provider('au50_atl', NULL, 'my-client', 'sec', preset => 'atlassian');
SELECT oauth.register_provider('au50_slack', NULL, 'my-client', 'sec', preset => 'slack');
SELECT oauth.register_provider('au50_notion', NULL, 'my-client', 'sec', preset => 'notion');
SELECT oauth.register_provider('au50_sf', NULL, 'my-client', 'sec', preset => 'salesforce');
SELECT oauth.register_provider('au50_shop', NULL, 'my-client', 'sec', preset => 'shopify');
SELECT oauth.register_provider('au50_github', NULL, 'my-client', 'sec', preset => 'github');
-- a client id that itself needs encoding
SELECT oauth.register_provider('au50_enc', NULL, 'app id/1+2=3', 'sec', preset => 'google');

-- What the presets filled in.
\x on
SELECT name, preset, token_url, revoke_url, auth_method, body_format, extra_headers,
       authorize_params, required_scopes, quote_literal(scope_separator) AS scope_separator,
       scope_on_refresh, default_lifetime
  FROM oauth.providers WHERE name LIKE 'au50\_%' ORDER BY name;
\x off

-- Google: access_type=offline and prompt=consent; space-separated scopes;
-- redirect_uri with its own query (?, &, =, space) and a state with spaces,
-- "/", "+", "&" and non-ASCII characters are all percent-encoded; PKCE S256.
SELECT oauth.authorize_url('au50_google',
    'https://app.example.com/oauth/callback?src=a&b=c d',
    'st 1+2/é&ü',
    '{openid,email,https://www.googleapis.com/auth/drive.readonly}',
    'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM');
-- no scope, no challenge: neither parameter appears
SELECT oauth.authorize_url('au50_google', 'http://localhost:8080/cb', 'xyz');
-- the client id is encoded too
SELECT oauth.authorize_url('au50_enc', 'https://app.example.com/cb', 's');

-- Microsoft: {tenant} from metadata; offline_access first, once, even when
-- the caller asks for it too; space-separated.
SELECT oauth.authorize_url('au50_ms', 'https://app.example.com/cb', 's1',
    '{User.Read,Mail.Read}', metadata => '{"tenant": "common"}');
SELECT oauth.authorize_url('au50_ms', 'https://app.example.com/cb', 's2',
    '{offline_access,User.Read,User.Read}', metadata => '{"tenant": "contoso.onmicrosoft.com"}');
SELECT oauth.authorize_url('au50_ms', 'https://app.example.com/cb', 's3',
    metadata => '{"tenant": "11111111-2222-3333-4444-555555555555"}');

-- Dropbox: token_access_type=offline.
SELECT oauth.authorize_url('au50_dropbox', 'https://app.example.com/cb', 'd1');
SELECT oauth.authorize_url('au50_dropbox', 'https://app.example.com/cb', 'd2',
    '{files.content.read,account_info.read}');

-- Atlassian: audience and prompt, offline_access, space-separated.
SELECT oauth.authorize_url('au50_atl', 'https://app.example.com/cb', 'a1',
    '{read:jira-work,read:jira-user}');

-- Slack and Shopify: comma-separated scopes.
SELECT oauth.authorize_url('au50_slack', 'https://app.example.com/cb', 'sl1',
    '{chat:write,channels:read}');
SELECT oauth.authorize_url('au50_shop', 'https://app.example.com/cb', 'sh1',
    '{read_products,write_orders}', metadata => '{"shop": "my-shop"}');

-- GitHub: space-separated scopes, nothing else.
SELECT oauth.authorize_url('au50_github', 'https://app.example.com/cb', 'gh1',
    '{repo,read:org}');

-- Notion: owner=user, no scope.
SELECT oauth.authorize_url('au50_notion', 'https://app.example.com/cb', 'n1');

-- Salesforce: {instance} from metadata.
SELECT oauth.authorize_url('au50_sf', 'https://app.example.com/cb', 'sf1',
    '{api,refresh_token}', metadata => '{"instance": "login.salesforce.com"}');
SELECT oauth.authorize_url('au50_sf', 'https://app.example.com/cb', 'sf2',
    metadata => '{"instance": "acme.my.salesforce.com", "unused": "x"}');

-- Empty and NULL scope elements are skipped; a NULL scope array is no scope.
SELECT oauth.authorize_url('au50_github', 'https://app.example.com/cb', 'gh2',
    ARRAY['', 'repo', NULL, 'repo']);
SELECT oauth.authorize_url('au50_github', 'https://app.example.com/cb', 'gh3', NULL);

-- A provider without preset, whose authorize URL already has a query.
SELECT oauth.register_provider('au50_plain', 'https://auth.example.com/token', 'c1', 's1',
    authorize_url => 'https://auth.example.com/authorize?tenant=t1');
SELECT oauth.authorize_url('au50_plain', 'https://app.example.com/cb', 'p1', '{a,b}');

-- Errors.
-- unknown provider (OA004)
SELECT pg_temp.t50_err($$SELECT oauth.authorize_url('au50_nope', 'https://app.example.com/cb', 's')$$);
-- no authorize_url (OA004)
SELECT oauth.register_provider('au50_noauth', 'https://auth.example.com/token', 'c1', 's1');
SELECT pg_temp.t50_err($$SELECT oauth.authorize_url('au50_noauth', 'https://app.example.com/cb', 's')$$);
-- NULL arguments (22004)
SELECT pg_temp.t50_err($$SELECT oauth.authorize_url(NULL, 'https://app.example.com/cb', 's')$$);
SELECT pg_temp.t50_err($$SELECT oauth.authorize_url('au50_google', NULL, 's')$$);
SELECT pg_temp.t50_err($$SELECT oauth.authorize_url('au50_google', 'https://app.example.com/cb', NULL)$$);
-- a redirect_uri that is not an absolute URL (22023)
SELECT pg_temp.t50_err($$SELECT oauth.authorize_url('au50_google', '/cb', 's')$$);
-- bad code_challenge (22023): too short, too long, padding, base64 (not url) alphabet
SELECT pg_temp.t50_err($$SELECT oauth.authorize_url('au50_google', 'https://app.example.com/cb', 's',
    code_challenge => 'short')$$);
SELECT pg_temp.t50_err($$SELECT oauth.authorize_url('au50_google', 'https://app.example.com/cb', 's',
    code_challenge => 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cMx')$$);
SELECT pg_temp.t50_err($$SELECT oauth.authorize_url('au50_google', 'https://app.example.com/cb', 's',
    code_challenge => 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c=')$$);
SELECT pg_temp.t50_err($$SELECT oauth.authorize_url('au50_google', 'https://app.example.com/cb', 's',
    code_challenge => 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM')$$);
-- the verifier instead of the challenge is also 43 characters and passes the
-- format check: only the format can be checked here
SELECT pg_temp.t50_err($$SELECT oauth.authorize_url('au50_google', 'https://app.example.com/cb', 's',
    code_challenge => 'dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk')$$);
-- missing placeholder values (22023)
SELECT pg_temp.t50_err($$SELECT oauth.authorize_url('au50_sf', 'https://app.example.com/cb', 's')$$);
SELECT pg_temp.t50_err($$SELECT oauth.authorize_url('au50_ms', 'https://app.example.com/cb', 's',
    metadata => '{"tenant": null}')$$);
SELECT pg_temp.t50_err($$SELECT oauth.authorize_url('au50_shop', 'https://app.example.com/cb', 's',
    metadata => NULL)$$);
-- placeholder values that are not a host or path part are refused (22023)
SELECT pg_temp.t50_err($$SELECT oauth.authorize_url('au50_sf', 'https://app.example.com/cb', 's',
    metadata => '{"instance": "evil.example.com/x?"}')$$);
SELECT pg_temp.t50_err($$SELECT oauth.authorize_url('au50_shop', 'https://app.example.com/cb', 's',
    metadata => '{"shop": ""}')$$);
SELECT pg_temp.t50_err($$SELECT oauth.authorize_url('au50_shop', 'https://app.example.com/cb', 's',
    metadata => '{"shop": "a@b"}')$$);
-- unknown preset (OA004), and nothing registered
SELECT pg_temp.t50_err($$SELECT oauth.register_provider('au50_bad', NULL, 'c', 's', preset => 'nosuch')$$);
SELECT count(*) FROM oauth.providers WHERE name = 'au50_bad';
-- a preset still needs the client secret for its auth method
SELECT pg_temp.t50_err($$SELECT oauth.register_provider('au50_bad', NULL, 'c', preset => 'google')$$);
-- without preset, token_url stays required
SELECT pg_temp.t50_err($$SELECT oauth.register_provider('au50_bad', NULL, 'c', 's')$$);

-- authorize_url() writes nothing: no connection and no event of these providers
SELECT count(*) AS connections FROM oauth.connections WHERE provider LIKE 'au50\_%';
SELECT event, count(*) FROM oauth.events WHERE provider LIKE 'au50\_%' GROUP BY event ORDER BY event;
