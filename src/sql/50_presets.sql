-- 50_presets.sql: built-in catalogue of OAuth 2.0 provider presets.
--
-- One row per provider. Values come from shared/PROVIDERS.md (facts as of 2026);
-- authorize URLs not listed there come from the providers' public documentation.
-- Every fact that PROVIDERS.md marks "(?)" is named as uncertain in the row's
-- notes. Check such facts against the provider's live docs before relying on them.

CREATE TABLE oauth.provider_presets (
    name                   text    PRIMARY KEY,
    authorize_url          text,
    token_url              text    NOT NULL,
    revoke_url             text,
    auth_method            text    NOT NULL
        CHECK (auth_method IN ('client_secret_post', 'client_secret_basic', 'none')),
    body_format            text    NOT NULL DEFAULT 'form'
        CHECK (body_format IN ('form', 'json')),
    extra_headers          jsonb   NOT NULL DEFAULT '{}',
    extra_params           jsonb   NOT NULL DEFAULT '{}',
    authorize_params       jsonb   NOT NULL DEFAULT '{}',
    required_scopes        text[]  NOT NULL DEFAULT '{}',
    scope_separator        text    NOT NULL DEFAULT ' ',
    scope_on_refresh       boolean NOT NULL DEFAULT false,
    default_lifetime       interval,
    refresh_token_idle_ttl interval,
    reauth_errors          text[]  NOT NULL DEFAULT '{}',
    notes                  text    NOT NULL DEFAULT '',
    allowed_hosts          text[]  NOT NULL DEFAULT '{}'
);

COMMENT ON TABLE oauth.provider_presets IS
    'Built-in catalogue of OAuth 2.0 provider presets shipped with oauth_tokens: '
    'endpoints, client authentication style, request format and refresh-token '
    'behaviour for each known provider. Facts marked uncertain in notes should be '
    'checked against the provider''s live documentation.';

COMMENT ON COLUMN oauth.provider_presets.name IS
    'Preset key, a lower-case provider name such as google or microsoft.';
COMMENT ON COLUMN oauth.provider_presets.authorize_url IS
    'Authorization endpoint the user is sent to. May hold {placeholders} such as '
    '{tenant}, {instance}, {shop} or {subdomain}, filled in per connection.';
COMMENT ON COLUMN oauth.provider_presets.token_url IS
    'Token endpoint for the code exchange and for refresh. May hold the same '
    '{placeholders} as authorize_url.';
COMMENT ON COLUMN oauth.provider_presets.revoke_url IS
    'RFC 7009-style revocation endpoint (POST with the token and client credentials). '
    'NULL when the provider has none that can be called that way; notes then say how '
    'the provider revokes, if at all.';
COMMENT ON COLUMN oauth.provider_presets.auth_method IS
    'Where client credentials go on token requests: client_secret_post (request body), '
    'client_secret_basic (HTTP Basic header) or none (public client). Pinned per '
    'provider; the engine never probes.';
COMMENT ON COLUMN oauth.provider_presets.body_format IS
    'Encoding of token request bodies: form (application/x-www-form-urlencoded) or json.';
COMMENT ON COLUMN oauth.provider_presets.extra_headers IS
    'HTTP headers sent on every token request, as a JSON object (e.g. Notion-Version). '
    'Accept: application/json is always sent by the engine and is not listed here.';
COMMENT ON COLUMN oauth.provider_presets.extra_params IS
    'Extra fields, as a JSON object, added to the body of refresh requests.';
COMMENT ON COLUMN oauth.provider_presets.authorize_params IS
    'Extra query parameters, as a JSON object, added to the authorize URL (e.g. '
    'access_type=offline, prompt=consent, token_access_type=offline).';
COMMENT ON COLUMN oauth.provider_presets.required_scopes IS
    'Scopes always requested in addition to the connection''s own (e.g. offline_access).';
COMMENT ON COLUMN oauth.provider_presets.scope_separator IS
    'Separator used to join scopes in the scope parameter: a space, or a comma for '
    'providers documented as comma-separated.';
COMMENT ON COLUMN oauth.provider_presets.scope_on_refresh IS
    'When true, the connection''s scope is sent again on every refresh request '
    '(required by Microsoft).';
COMMENT ON COLUMN oauth.provider_presets.default_lifetime IS
    'Access token lifetime assumed when a token response omits expires_in. NULL only '
    'for providers whose access tokens never expire; a missing expires_in must never '
    'be read as "never expires" otherwise.';
COMMENT ON COLUMN oauth.provider_presets.refresh_token_idle_ttl IS
    'Provider''s inactivity limit for refresh tokens: an idle connection must be '
    'refreshed at least this often to keep its refresh token alive. Stores the '
    'provider''s own figure; the engine subtracts its safety margin. A refresh-token '
    'expiry sent in the response (refresh_token_expires_in, x_refresh_token_expires_in) '
    'takes precedence. NULL when there is no known idle limit.';
COMMENT ON COLUMN oauth.provider_presets.reauth_errors IS
    'Error codes, beyond invalid_grant, that mean the grant is dead and the user must '
    'authorise again (matched against error, or a vendor field such as HubSpot''s status).';
COMMENT ON COLUMN oauth.provider_presets.notes IS
    'Plain-English facts about the provider''s quirks, including everything the engine '
    'cannot express in the other columns. Uncertain facts are named as such.';

-- Row layout:
--   (name, authorize_url,
--    token_url,
--    revoke_url,
--    auth_method, body_format, extra_headers, extra_params, authorize_params,
--    required_scopes, scope_separator, scope_on_refresh, default_lifetime, refresh_token_idle_ttl, reauth_errors,
--    notes)
-- Adjacent string literals separated by a newline form one literal (standard SQL).
INSERT INTO oauth.provider_presets
    (name, authorize_url,
     token_url,
     revoke_url,
     auth_method, body_format, extra_headers, extra_params, authorize_params,
     required_scopes, scope_separator, scope_on_refresh, default_lifetime, refresh_token_idle_ttl, reauth_errors,
     notes)
VALUES
  ('google',     'https://accounts.google.com/o/oauth2/v2/auth',
   'https://oauth2.googleapis.com/token',
   'https://oauth2.googleapis.com/revoke',
   'client_secret_post',  'form', '{}',                               '{}', '{"access_type": "offline", "prompt": "consent"}',
   '{}',               ' ', false, '1 hour',     '6 months', '{}',
   'A refresh token is issued only when the authorize URL has access_type=offline; '
   'prompt=consent makes Google issue one again for a user who already consented. Access '
   'tokens last 1 hour (expires_in is sent). No rotation: refresh responses omit '
   'refresh_token, so keep the stored one. A refresh token dies after 6 months unused, '
   'after only 7 days while the app''s consent screen is in Testing status, and the '
   'oldest one dies once a user holds more than 100 refresh tokens for the same client. '
   'Dead grant: 400 invalid_grant.'),

  ('microsoft',  'https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize',
   'https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token',
   NULL,
   'client_secret_post',  'form', '{}',                               '{}', '{}',
   '{offline_access}', ' ', true,  '1 hour',     '90 days',  '{interaction_required}',
   '{tenant} is a directory id or domain, or common, organizations or consumers. The '
   'offline_access scope is required to get a refresh token. Scopes are space-separated '
   'and the connection''s scope must be sent again on every refresh. Access tokens last '
   '60-90 minutes (expires_in is sent; default_lifetime is the 1-hour lower bound, used '
   'only if it is missing). Every refresh returns a new refresh token and the old one is '
   'not revoked; always store the new one. Refresh tokens expire after 90 days of '
   'inactivity. Dead grant: 400 invalid_grant, with the reason only in the AADSTS code '
   'of error_description (for example AADSTS700082, expired after inactivity); '
   'interaction_required (MFA, conditional access, new consent) also needs the user '
   'back. There is no RFC 7009 revocation endpoint, so revoke_url is NULL.'),

  ('salesforce', 'https://{instance}/services/oauth2/authorize',
   'https://{instance}/services/oauth2/token',
   'https://{instance}/services/oauth2/revoke',
   'client_secret_post',  'form', '{}',                               '{}', '{}',
   '{}',               ' ', false, '2 hours',    NULL,       '{}',
   '{instance} is the login host for the authorize step (login.salesforce.com, '
   'test.salesforce.com for sandboxes, or the org''s My Domain host); keep instance_url '
   'from every token response and use it for API calls. The token response has no '
   'expires_in: access tokens live for the org''s session timeout, which each org sets '
   'itself. default_lifetime assumes the Salesforce default of 2 hours; this is an '
   'assumption, not a value Salesforce reports, so set it per org where known. Refresh '
   'token rotation is optional per connected app and refresh token lifetime follows the '
   'app''s refresh token policy, so always store whatever refresh token comes back and '
   'no idle refresh is scheduled. Dead grant: 400 invalid_grant.'),

  ('hubspot',    'https://app.hubspot.com/oauth/authorize',
   'https://api.hubapi.com/oauth/v1/token',
   NULL,
   'client_secret_post',  'form', '{}',                               '{}', '{}',
   '{}',               ' ', false, '30 minutes', NULL,       '{BAD_REFRESH_TOKEN}',
   'Access tokens last 30 minutes (expires_in is sent). The v1 token endpoint is '
   'deprecated on 2027-02-16; check its replacement before then. Revocation is DELETE '
   'https://api.hubapi.com/oauth/v1/refresh-tokens/{token}, which is not an RFC 7009 '
   'endpoint, so revoke_url is NULL. Dead grant: 400 with a vendor body '
   '{"status":"BAD_REFRESH_TOKEN",...}; the code is in the status field, not in error. '
   'Uncertain: that refresh tokens are never rotated (keep the old one when none comes '
   'back), and the refresh token lifetime, which is undocumented, so no idle refresh is '
   'scheduled.'),

  ('slack',      'https://slack.com/oauth/v2/authorize',
   'https://slack.com/api/oauth.v2.access',
   'https://slack.com/api/auth.revoke',
   'client_secret_post',  'form', '{}',                               '{}', '{}',
   '{}',               ',', false, '12 hours',   NULL,       '{invalid_refresh_token}',
   'Refresh tokens exist only when token rotation is turned on for the app; then access '
   'tokens last 12 hours (expires_in is sent) and every refresh returns a new refresh '
   'token, which stays valid as long as it keeps being rotated. The token endpoint '
   'accepts client_secret_basic or client_secret_post; post is pinned here. Errors come '
   'back as HTTP 200 with {"ok":false,"error":...}; invalid_refresh_token means the '
   'grant is dead. User tokens are nested under authed_user in the response (the bot '
   'token is at the top level). Scopes are comma-separated; user scopes go in the '
   'separate user_scope parameter. revoke_url is the Web API method auth.revoke, which '
   'revokes the token passed as token and answers HTTP 200 {"ok":...} rather than a '
   'plain RFC 7009 response.'),

  ('github',     'https://github.com/login/oauth/authorize',
   'https://github.com/login/oauth/access_token',
   NULL,
   'client_secret_post',  'form', '{}',                               '{}', '{}',
   '{}',               ' ', false, '8 hours',    '6 months', '{bad_refresh_token}',
   'Refresh tokens come only from GitHub Apps with expiring user tokens; classic OAuth '
   'Apps get non-expiring tokens and no refresh token. Access tokens last 8 hours '
   '(expires_in is sent). Refresh tokens last 6 months (refresh_token_expires_in is sent '
   'and should win over refresh_token_idle_ttl) and are strictly single use: store the '
   'new one from every refresh. Responses are form-encoded unless the request sends '
   'Accept: application/json; the engine always sends it, so it is not repeated in '
   'extra_headers. Errors come back as HTTP 200; error=bad_refresh_token means the grant '
   'is dead. Scopes on the authorize URL are space-separated (the token response lists '
   'them comma-separated). Uncertain: revocation seems to be only through the app-level '
   'REST API (DELETE /applications/{client_id}/token or /grant with the client '
   'credentials), not an RFC 7009 endpoint, so revoke_url is NULL.'),

  ('xero',       'https://login.xero.com/identity/connect/authorize',
   'https://identity.xero.com/connect/token',
   'https://identity.xero.com/connect/revocation',
   'client_secret_basic', 'form', '{}',                               '{}', '{}',
   '{offline_access}', ' ', false, '30 minutes', '60 days',  '{}',
   'The offline_access scope is required to get a refresh token. Access tokens last 30 '
   'minutes (expires_in is sent). Every refresh returns a new refresh token; the old one '
   'stays usable for 30 minutes, so a retry after a lost response can still succeed. '
   'Refresh tokens expire after 60 days unused. Dead grant: 400 invalid_grant. The '
   'organisation to call is chosen per connection from the /connections endpoint '
   '(xero-tenant-id header), not through the token URL.'),

  ('quickbooks', 'https://appcenter.intuit.com/connect/oauth2',
   'https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer',
   'https://developer.api.intuit.com/v2/oauth2/tokens/revoke',
   'client_secret_basic', 'form', '{}',                               '{}', '{}',
   '{}',               ' ', false, '1 hour',     '100 days', '{}',
   'Intuit QuickBooks Online. Access tokens last 1 hour (expires_in is sent). The '
   'refresh token value changes about every 24 hours: always store the one returned. '
   'Refresh tokens have a 100-day rolling lifetime, reported in '
   'x_refresh_token_expires_in (which should win over refresh_token_idle_ttl), and a '
   '5-year hard cap. Keep realmId (the company id, returned on the authorize redirect) '
   'per connection. Dead grant: 400 invalid_grant. Uncertain: Intuit documents the '
   'revoke call with a JSON body {"token": ...} and Basic auth; whether it also accepts '
   'a form body has not been checked.'),

  ('zoom',       'https://zoom.us/oauth/authorize',
   'https://zoom.us/oauth/token',
   'https://zoom.us/oauth/revoke',
   'client_secret_basic', 'form', '{}',                               '{}', '{}',
   '{}',               ' ', false, '1 hour',     NULL,       '{}',
   'Access tokens last 1 hour (expires_in is sent). Refresh tokens are strictly single '
   'use: store the new one from every refresh. Dead grant: 400 invalid_grant. Scopes are '
   'space-separated. Uncertain: the refresh token lifetime is disputed between sources, '
   'so no idle refresh is scheduled.'),

  ('atlassian',  'https://auth.atlassian.com/authorize',
   'https://auth.atlassian.com/oauth/token',
   NULL,
   'client_secret_post',  'json', '{}',                               '{}', '{"audience": "api.atlassian.com", "prompt": "consent"}',
   '{offline_access}', ' ', false, '1 hour',     '90 days',  '{unauthorized_client}',
   'Atlassian Cloud (OAuth 2.0 3LO). Token requests use a JSON body carrying the client '
   'credentials. The authorize URL needs audience=api.atlassian.com and prompt=consent, '
   'plus the offline_access scope for a refresh token. Access tokens last 1 hour '
   '(expires_in is sent). Every refresh returns a new refresh token; the old one stays '
   'usable for about 10 minutes. Refresh tokens expire after 90 days of inactivity and '
   'have a 365-day absolute cap, after which the user must authorise again. Dead grant: '
   'HTTP 403 with invalid_grant or unauthorized_client. unauthorized_client normally '
   'means a client misconfiguration, but Atlassian returns it for a dead refresh token, '
   'so it is treated as needing re-auth for this provider only; if it comes back right '
   'after a fresh consent, check the app configuration instead. Uncertain: whether there '
   'is any public revocation endpoint; none is known, so revoke_url is NULL.'),

  ('dropbox',    'https://www.dropbox.com/oauth2/authorize',
   'https://api.dropboxapi.com/oauth2/token',
   NULL,
   'client_secret_post',  'form', '{}',                               '{}', '{"token_access_type": "offline"}',
   '{}',               ' ', false, '4 hours',    NULL,       '{}',
   'A refresh token is issued only with token_access_type=offline on the authorize URL; '
   'it is never rotated and lasts until revoked. Access tokens last about 4 hours '
   '(expires_in is sent). The token endpoint accepts client_secret_post or '
   'client_secret_basic; post is pinned here. Dead grant: 400 invalid_grant. Revocation '
   'is https://api.dropboxapi.com/2/auth/token/revoke, an API call authenticated with '
   'the access token as a Bearer header and no token parameter; it is not an RFC 7009 '
   'endpoint, so revoke_url is NULL.'),

  ('notion',     'https://api.notion.com/v1/oauth/authorize',
   'https://api.notion.com/v1/oauth/token',
   'https://api.notion.com/v1/oauth/revoke',
   'client_secret_basic', 'json', '{"Notion-Version": "2022-06-28"}', '{}', '{"owner": "user"}',
   '{}',               ' ', false, '1 hour',     NULL,       '{}',
   'Client credentials go only in an HTTP Basic header, and token requests use a JSON '
   'body. Every token request carries the Notion-Version header (2022-06-28 pinned '
   'here). The authorize URL needs owner=user. Notion does not use OAuth scopes. Every '
   'refresh returns a new refresh token. Keep workspace_id and bot_id from the token '
   'response. Uncertain: the access token lifetime is undocumented, so default_lifetime '
   'assumes 1 hour; the refresh token lifetime is unknown, so no idle refresh is '
   'scheduled; the dead-grant signal is unknown (invalid_grant assumed).'),

  ('shopify',    'https://{shop}.myshopify.com/admin/oauth/authorize',
   'https://{shop}.myshopify.com/admin/oauth/access_token',
   NULL,
   'client_secret_post',  'form', '{}',                               '{}', '{}',
   '{}',               ',', false, '1 hour',     '90 days',  '{}',
   '{shop} is the shop''s myshopify.com subdomain. Expiring offline tokens are opt-in: '
   'the authorization-code exchange must send expiring=1, otherwise Shopify returns a '
   'non-expiring token and no refresh token; extra_params only covers refresh, so the '
   'code exchange has to add it. Access tokens last 1 hour; default_lifetime covers a '
   'response without expires_in. Every refresh returns a new refresh token; the old one '
   'stays valid until the new one is used. Scopes are comma-separated. There is no '
   'revocation endpoint; uninstalling the app revokes access. Uncertain: the refresh '
   'token lifetime of about 90 days (stored as refresh_token_idle_ttl), and the '
   'dead-grant signal (invalid_grant assumed).'),

  ('zendesk',    'https://{subdomain}.zendesk.com/oauth/authorizations/new',
   'https://{subdomain}.zendesk.com/oauth/tokens',
   NULL,
   'client_secret_post',  'json', '{}',                               '{}', '{}',
   '{}',               ' ', false, '30 minutes', '30 days',  '{}',
   '{subdomain} is the account''s zendesk.com subdomain. Token requests use a JSON body '
   'carrying the client credentials. By default access tokens last 30 minutes and '
   'refresh tokens 30 days, and every refresh returns a new refresh token. Older OAuth '
   'clients get a refresh token (and an expiring access token) only when the token '
   'request sends expires_in (in seconds): the code exchange should send it, and a '
   'response without expires_in must not be taken to mean the token never expires. '
   'Nothing extra is sent on refresh. Revocation is by deleting the token by id (DELETE '
   '/api/v2/oauth/tokens/{id}), not an RFC 7009 endpoint, so revoke_url is NULL. '
   'Uncertain: the dead-grant signal (invalid_grant assumed).'),

  ('linkedin',   'https://www.linkedin.com/oauth/v2/authorization',
   'https://www.linkedin.com/oauth/v2/accessToken',
   'https://www.linkedin.com/oauth/v2/revoke',
   'client_secret_post',  'form', '{}',                               '{}', '{}',
   '{}',               ' ', false, '60 days',    NULL,       '{}',
   'Refresh tokens are issued only to approved partner apps (programmatic refresh); '
   'other apps must send the user through authorisation again when the access token '
   'expires. Access tokens last 60 days; default_lifetime covers a response without '
   'expires_in. Refresh tokens are never rotated and expire 365 days after issue (an '
   'absolute cap, not an idle limit, so no idle refresh is scheduled). Scopes are '
   'space-separated. Uncertain: that a dead grant is reported as 400 invalid_grant.'),

  ('asana',      'https://app.asana.com/-/oauth_authorize',
   'https://app.asana.com/-/oauth_token',
   'https://app.asana.com/-/oauth_revoke',
   'client_secret_post',  'form', '{}',                               '{}', '{}',
   '{}',               ' ', false, '1 hour',     NULL,       '{}',
   'Access tokens last 1 hour; default_lifetime covers a response without expires_in. '
   'Refresh tokens are never rotated (keep the stored one) and are long-lived, with no '
   'documented expiry. Dead grant: 400 invalid_grant.'),

  ('linear',     'https://linear.app/oauth/authorize',
   'https://api.linear.app/oauth/token',
   'https://api.linear.app/oauth/revoke',
   'client_secret_post',  'form', '{}',                               '{}', '{}',
   '{}',               ',', false, '24 hours',   NULL,       '{}',
   'Refresh tokens are mandatory for Linear OAuth apps since 2026-04. Access tokens last '
   '24 hours; default_lifetime covers a response without expires_in. Scopes on the '
   'authorize URL are comma-separated (for example read,write). Dead grant: 400 '
   'invalid_grant. Uncertain: that every refresh rotates the refresh token (always store '
   'what comes back), and the refresh token lifetime, which is unknown, so no idle '
   'refresh is scheduled. Also unchecked: whether the revoke endpoint takes the token as '
   'an RFC 7009 form field or only as a Bearer header.'),

  ('box',        'https://account.box.com/api/oauth2/authorize',
   'https://api.box.com/oauth2/token',
   'https://api.box.com/oauth2/revoke',
   'client_secret_post',  'form', '{}',                               '{}', '{}',
   '{}',               ' ', false, '1 hour',     '60 days',  '{}',
   'Access tokens last 1 hour; default_lifetime covers a response without expires_in. '
   'Refresh tokens are strictly single use and last 60 days; each refresh returns a new '
   'one with a fresh 60 days, so idle connections must be refreshed within that window. '
   'Dead grant: 400 invalid_grant.'),

  ('stripe',     'https://connect.stripe.com/oauth/authorize',
   'https://connect.stripe.com/oauth/token',
   NULL,
   'client_secret_post',  'form', '{}',                               '{}', '{}',
   '{}',               ' ', false, NULL,         NULL,       '{}',
   'Stripe Connect OAuth. The platform''s secret key (sk_live_... or sk_test_...) is the '
   'client secret and goes in the form body as client_secret. Access tokens never expire '
   'and the response has no expires_in, so default_lifetime is NULL; a refresh token is '
   'returned but is rarely needed. Keep stripe_user_id (the connected account id) per '
   'connection. Scope is a single value, read_write or read_only. Disconnecting is POST '
   'https://connect.stripe.com/oauth/deauthorize with client_id and stripe_user_id '
   'rather than a token, which is not RFC 7009, so revoke_url is NULL.'),

  ('intercom',   'https://app.intercom.com/oauth',
   'https://api.intercom.io/auth/eagle/token',
   NULL,
   'client_secret_post',  'form', '{}',                               '{}', '{}',
   '{}',               ' ', false, NULL,         NULL,       '{}',
   'Access tokens never expire and no refresh token is issued, so nothing is ever '
   'refreshed and default_lifetime is NULL. The token URL is the US host; workspaces '
   'hosted in Europe or Australia use regional API hosts (api.eu.intercom.io, '
   'api.au.intercom.io), so token_url may need overriding for them. Permissions are '
   'configured in the Intercom app, not passed as scopes. There is no revocation '
   'endpoint. Uncertain: the authorize URL for regionally hosted workspaces.');

-- Hosts that a URL whose host is a {placeholder} may name: the placeholder is
-- filled from a connection's metadata, which tenants may influence, and the
-- token request carries the shared client secret.
COMMENT ON COLUMN oauth.provider_presets.allowed_hosts IS
    'Hosts ("*.example.com" or exact) that a {placeholder} host in any of the preset''s URLs may name.';
--
-- Every preset whose host is a placeholder carries a list (register_provider
-- refuses a templated host without one):
--   salesforce  login.salesforce.com and test.salesforce.com (the shared login
--               hosts) and *.my.salesforce.com (every org's My Domain, sandboxes
--               included as *.sandbox.my.salesforce.com), from Salesforce's "My
--               Domain URL formats".  Not *.force.com, *.my.site.com or
--               *.my.salesforce-sites.com: those host customers' own Sites and
--               Experience Cloud pages.  Uncertain: orgs still on legacy
--               instanced hosts (na123.salesforce.com) or on Government Cloud
--               / China hosts need their host added by hand.
--   shopify     *.myshopify.com (every shop's admin host).
--   zendesk     *.zendesk.com (every account's subdomain).
UPDATE oauth.provider_presets
   SET allowed_hosts = CASE name
       WHEN 'salesforce' THEN '{login.salesforce.com,test.salesforce.com,*.my.salesforce.com}'::text[]
       WHEN 'shopify' THEN '{*.myshopify.com}'::text[]
       WHEN 'zendesk' THEN '{*.zendesk.com}'::text[] END
 WHERE name IN ('salesforce', 'shopify', 'zendesk');
