# Provider presets against the fake provider imitating each provider's quirk.
# Every provider is registered from its preset with only the token URL
# overridden (the fake provider listens on 127.0.0.1), so what is tested is
# the preset's auth method, body format, headers, scope handling, default
# lifetime and dead-grant codes together with the engine.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthLifecycleUtil;
use OAuthProvider;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
my $node = lc_node('presets');
my $base = $p->base_url;
my $hostport = '127.0.0.1:' . $p->port;
# a templated host must be a name in allowed_hosts: curl resolves *.localhost
# to the loopback interface itself
my $sfhost = 'na1.sf.localhost';

$p->add_client(client_id => 'cid', client_secret => 'sec');
$p->add_client(client_id => 'notion-cid', client_secret => 'notion-sec',
	basic_only => 1, json_only => 1);

lc_sql($node, <<"SQL");
SELECT oauth.register_provider('slack1', '$base/api/oauth.v2.access', 'cid', 'sec', preset => 'slack');
SELECT oauth.register_provider('github1', '$base/login/oauth/access_token', 'cid', 'sec', preset => 'github');
SELECT oauth.register_provider('hubspot1', '$base/oauth/v1/token', 'cid', 'sec', preset => 'hubspot');
SELECT oauth.register_provider('sf1', 'http://{instance}:@{[ $p->port ]}/token', 'cid', 'sec', preset => 'salesforce',
                               allowed_hosts => '{*.sf.localhost}');
SELECT oauth.register_provider('atl1', '$base/atl/oauth/token', 'cid', 'sec', preset => 'atlassian');
SELECT oauth.register_provider('ms1', 'http://$hostport/{tenant}/oauth2/v2.0/token', 'cid', 'sec',
                               preset => 'microsoft');
SELECT oauth.register_provider('notion1', '$base/v1/oauth/token', 'notion-cid', 'notion-sec',
                               revoke_url => '$base/v1/oauth/revoke', preset => 'notion');
SELECT oauth.register_provider('notion_plain', '$base/plain/v1/oauth/token', 'notion-cid', 'notion-sec');
SELECT oauth.register_provider('google1', '$base/google/token', 'cid', 'sec', preset => 'google');
SQL

# An expired connection, so that the next valid_token refreshes it.
sub expired
{
	my ($prov, $acct, $rt, %o) = @_;
	return lc_sql($node,
		"SELECT oauth.create_connection('ws1', '$prov', '$acct', 'at-initial', '$rt', "
		  . "now() - interval '1 minute', "
		  . lc_quote($o{scope} // '{}') . ', '
		  . lc_quote($o{metadata} // '{}') . ')');
}

sub last_request
{
	my ($path) = @_;
	my @r = grep { $_->{path} eq $path } @{ $p->stats->{requests} };
	return $r[-1] // {};
}

sub valid_token { return lc_try($node, "SELECT oauth.valid_token('ws1', '$_[0]')") }

sub check_reauth
{
	my ($id, $code, $what) = @_;
	my $r = valid_token($id);
	is($r->{sqlstate}, 'OA002', "$what: valid_token raises OA002") or diag($r->{err});
	like($r->{err}, qr/\Q$code\E/, "$what: the error names $code");
	my $c = lc_conn($node, $id);
	is($c->{state}, 'reauth_required', "$what: state reauth_required");
	like($c->{last_refresh_error} // '', qr/\Q$code\E/, "$what: last_refresh_error names $code");
	ok($c->{refresh_ct}, "$what: the refresh token is kept");
	is(scalar @{ lc_events($node, $id, 'reauth_required') }, 1, "$what: event reauth_required");
}

# --- Slack: HTTP 200 {"ok": false, "error": "invalid_refresh_token"} ----------
$p->set_grant('sl1', mode => 'error200');
my $id = expired('slack1', 'sl1', 'sl1.0');
check_reauth($id, 'invalid_refresh_token', 'slack error200');
is(last_request('/api/oauth.v2.access')->{auth}, 'post', 'slack: client_secret_post (pinned)');
# and a good Slack answer, rotating the refresh token
$p->set_grant('sl2', rotate => 1, strict => 1);
$id = expired('slack1', 'sl2', 'sl2.0');
is(valid_token($id)->{out}, 'at-sl2-1', 'slack ok: refreshed');
lc_sql($node, "UPDATE oauth.connections SET expires_at = now() WHERE id = '$id'");
is(valid_token($id)->{out}, 'at-sl2-2', 'slack ok: the rotated refresh token works (strict provider)');

# --- GitHub: form-encoded answers --------------------------------------------
$p->set_grant('gh1', response_format => 'form', rotate => 1, strict => 1,
	refresh_token_expires_in => 15897600);
$id = expired('github1', 'gh1', 'gh1.0');
my $r = valid_token($id);
is($r->{out}, 'at-gh1-1', 'github form: refresh works') or diag($r->{err});
my $c = lc_conn($node, $id);
ok($c->{expires_in_s} > 3590 && $c->{expires_in_s} <= 3600,
	'github form: expires_in read from the form body');
ok($c->{rt_expires_in_s} > 15897590 && $c->{rt_expires_in_s} <= 15897600,
	'github form: refresh_token_expires_in read from the form body') or diag(explain $c);
is($c->{failure_count}, 0, 'github form: no failure');
lc_sql($node, "UPDATE oauth.connections SET expires_at = now() WHERE id = '$id'");
is(valid_token($id)->{out}, 'at-gh1-2', 'github form: the rotated refresh token from the form body was stored');
like(last_request('/login/oauth/access_token')->{accept} // '', qr{application/json},
	'github: Accept: application/json sent');
# GitHub's dead grant: HTTP 200, form body error=bad_refresh_token
$p->set_grant('gh2', mode => 'github_error');
$id = expired('github1', 'gh2', 'gh2.0');
check_reauth($id, 'bad_refresh_token', 'github_error');

# --- HubSpot: 400 {"status": "BAD_REFRESH_TOKEN", ...} --------------------------
$p->set_grant('hs1', mode => 'hubspot_bad');
$id = expired('hubspot1', 'hs1', 'hs1.0');
check_reauth($id, 'BAD_REFRESH_TOKEN', 'hubspot_bad');

# --- Salesforce: {instance} from metadata, no expires_in, instance_url kept ----
$p->set_grant('sf1', expires_in_style => 'omit',
	extra => { instance_url => 'https://na99.example.com' });
$id = expired('sf1', 'sf1', 'sf1.0', metadata => qq({"instance": "$sfhost"}));
$r = valid_token($id);
is($r->{out}, 'at-sf1-1', 'salesforce: refresh through the {instance} URL works') or diag($r->{err});
is(last_request('/token')->{grant_type}, 'refresh_token', 'salesforce: the request reached /token');
$c = lc_conn($node, $id);
ok($c->{expires_in_s} > 7190 && $c->{expires_in_s} <= 7200,
	"salesforce: no expires_in: expires_at = now + the preset's 2 hours")
  or diag("expires in $c->{expires_in_s} s");
is($c->{metadata}{instance_url}, 'https://na99.example.com', 'salesforce: instance_url kept');
is($c->{metadata}{instance}, $sfhost, 'salesforce: the placeholder value is kept');
# the code exchange too
$p->set_grant('sf2', expires_in_style => 'omit',
	extra => { instance_url => 'https://na98.example.com' });
$p->add_code(code => 'sf-code', grant => 'sf2', redirect_uri => 'https://app.example.com/cb');
$r = lc_try($node,
	"SELECT oauth.exchange_code('ws1', 'sf1', 'sf-code', 'https://app.example.com/cb', "
	  . "provider_account_id => 'sf-user', metadata => '{\"instance\": \"$sfhost\"}')");
is($r->{ret}, 0, 'salesforce exchange: succeeds') or diag($r->{err});
$c = lc_conn($node, $r->{out});
ok($c->{expires_in_s} > 7190 && $c->{expires_in_s} <= 7200,
	'salesforce exchange: expires_at = now + 2 hours');
is($c->{metadata}{instance_url}, 'https://na98.example.com', 'salesforce exchange: instance_url kept');
is($c->{metadata}{instance}, $sfhost, 'salesforce exchange: instance kept');
# without the placeholder value, the code is not used up
$p->add_code(code => 'sf-code2', grant => 'sf3', redirect_uri => 'https://app.example.com/cb');
$r = lc_try($node,
	"SELECT oauth.exchange_code('ws1', 'sf1', 'sf-code2', 'https://app.example.com/cb', "
	  . "provider_account_id => 'sf-user2')");
is($r->{sqlstate}, '22023', 'salesforce exchange without instance: 22023') or diag($r->{err});
$r = lc_try($node,
	"SELECT oauth.exchange_code('ws1', 'sf1', 'sf-code2', 'https://app.example.com/cb', "
	  . "provider_account_id => 'sf-user2', metadata => '{\"instance\": \"$sfhost\"}')");
is($r->{ret}, 0, 'salesforce exchange: retried with the instance, the code still works')
  or diag($r->{err});
is($p->stats->{by_code}{'sf-code2'}, 1, 'salesforce exchange: the provider saw the code once');

# --- Atlassian: JSON body; 403 invalid_grant ---------------------------------------
$p->set_grant('at1', mode => 'atlassian403');
$id = expired('atl1', 'at1', 'at1.0');
check_reauth($id, 'invalid_grant', 'atlassian 403');
my $req = last_request('/atl/oauth/token');
is($req->{status}, 403, 'atlassian: the provider answered 403');
is($req->{body_format}, 'json', 'atlassian: JSON body');
like($req->{content_type} // '', qr{^application/json}, 'atlassian: Content-Type application/json');
is($req->{auth}, 'post', 'atlassian: client credentials in the JSON body');
$p->set_grant('at2', rotate => 1);
$id = expired('atl1', 'at2', 'at2.0');
is(valid_token($id)->{out}, 'at-at2-1', 'atlassian: refresh with a JSON body works');
is(last_request('/atl/oauth/token')->{params}{grant_type}, 'refresh_token',
	'atlassian: grant_type in the JSON body');
is($p->grant_info('at2')->{current_refresh_token}, 'at2.1', 'atlassian: provider rotated');
lc_sql($node, "UPDATE oauth.connections SET expires_at = now() WHERE id = '$id'");
is(valid_token($id)->{out}, 'at-at2-2', 'atlassian: second refresh works');
is($p->stats->{by_refresh_token}{'at2.1'}, 1, 'atlassian: it sent the rotated refresh token');

# --- Microsoft: {tenant}, scope sent on refresh ---------------------------------------
$p->set_grant('ms1', rotate => 1);
$id = expired('ms1', 'ms1', 'ms1.0', scope => '{offline_access,User.Read}',
	metadata => '{"tenant": "common"}');
$r = valid_token($id);
is($r->{out}, 'at-ms1-1', 'microsoft: refresh works') or diag($r->{err});
$req = last_request('/common/oauth2/v2.0/token');
is($req->{grant_type}, 'refresh_token', 'microsoft: {tenant} filled from metadata');
is($req->{params}{scope}, 'offline_access User.Read', 'microsoft: scope sent on refresh, space-separated');
is($req->{auth}, 'post', 'microsoft: client_secret_post');
$c = lc_conn($node, $id);
is_deeply($c->{scope}, [ 'offline_access', 'User.Read' ],
	'microsoft: scope kept (the answer echoed it)');
is($p->grant_info('ms1')->{current_refresh_token}, 'ms1.1', 'microsoft: new refresh token issued');
lc_sql($node, "UPDATE oauth.connections SET expires_at = now() WHERE id = '$id'");
is(valid_token($id)->{out}, 'at-ms1-2', 'microsoft: second refresh');
is($p->stats->{by_refresh_token}{'ms1.1'}, 1, 'microsoft: the new refresh token was stored and used');

# Google, for contrast: no scope on refresh, and no rotation keeps the old refresh token
$id = expired('google1', 'go1', 'go1.0', scope => '{openid,email}');
is(valid_token($id)->{out}, 'at-go1-1', 'google: refresh works');
ok(!exists last_request('/google/token')->{params}{scope}, 'google: no scope on refresh');
lc_sql($node, "UPDATE oauth.connections SET expires_at = now() WHERE id = '$id'");
is(valid_token($id)->{out}, 'at-go1-2', 'google: second refresh');
is($p->stats->{by_refresh_token}{'go1.0'}, 2, 'google: the refresh token was kept (no rotation)');
ok(lc_conn($node, $id)->{has_refresh_token}, 'google: refresh token still stored');

# --- Notion: HTTP Basic only, JSON body only, Notion-Version header ------------------
$p->set_grant('nt1', rotate => 1);
$id = expired('notion1', 'nt1', 'nt1.0');
$r = valid_token($id);
is($r->{out}, 'at-nt1-1', 'notion: refresh works') or diag($r->{err});
$req = last_request('/v1/oauth/token');
is($req->{auth}, 'basic', 'notion: client authenticated with HTTP Basic');
is($req->{client_id}, 'notion-cid', 'notion: the client id');
ok(!exists $req->{params}{client_secret} && !exists $req->{params}{client_id},
	'notion: no client credentials in the body');
is($req->{body_format}, 'json', 'notion: JSON body');
is($req->{headers}{'notion-version'}, '2022-06-28', 'notion: Notion-Version header');
ok(lc_conn($node, $id)->{refresh_ct}, 'notion: refresh token stored');
is($p->grant_info('nt1')->{current_refresh_token}, 'nt1.1', 'notion: rotated');
# revocation uses the same Basic authentication and JSON body
$r = lc_try($node, "SELECT oauth.revoke('ws1', '$id')");
is($r->{ret}, 0, 'notion revoke: succeeds') or diag($r->{err});
is_deeply(
	$p->stats->{revocations}[-1],
	{ token => 'nt1.1', token_type_hint => 'refresh_token', client_id => 'notion-cid', auth => 'basic' },
	'notion revoke: the rotated refresh token, with HTTP Basic');
is(lc_events($node, $id, 'revoked')->[0]{remote}, 'revoked', 'notion revoke: remote = revoked');
# the code exchange: Basic, JSON, Notion-Version; workspace_id and bot_id kept
$p->add_code(code => 'nt-code', grant => 'nt3', redirect_uri => 'https://app.example.com/cb',
	extra => { workspace_id => 'nw-1', workspace_name => 'Acme', bot_id => 'bot-1' });
$r = lc_try($node,
	"SELECT oauth.exchange_code('ws1', 'notion1', 'nt-code', 'https://app.example.com/cb')");
is($r->{ret}, 0, 'notion exchange: succeeds') or diag($r->{err});
$req = last_request('/v1/oauth/token');
is($req->{grant_type}, 'authorization_code', 'notion exchange: code grant');
ok($req->{auth} eq 'basic' && $req->{body_format} eq 'json'
	  && ($req->{headers}{'notion-version'} // '') eq '2022-06-28',
	'notion exchange: Basic, JSON body, Notion-Version');
$c = lc_conn($node, $r->{out});
is_deeply([ @{ $c->{metadata} }{qw(workspace_id workspace_name bot_id)} ],
	[ 'nw-1', 'Acme', 'bot-1' ], 'notion exchange: workspace_id, workspace_name and bot_id kept');
# the same client without the preset (post, form) is refused by this provider
$id = expired('notion_plain', 'nt2', 'nt2.0');
$r = valid_token($id);
is($r->{sqlstate}, 'OA004', 'notion without preset: provider misconfigured (OA004)') or diag($r->{err});
is(last_request('/plain/v1/oauth/token')->{status}, 401, 'notion without preset: 401 from the provider');
is(lc_conn($node, $id)->{state}, 'active', 'notion without preset: the connection is not marked');

$node->stop;
$p->stop;
done_testing();
