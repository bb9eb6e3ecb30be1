# Attacker: an oauth_admin who points a provider at what only the server can
# reach (cloud metadata at 169.254.169.254, loopback services, the private
# network), by IP literal in any spelling libcurl accepts or by a DNS name
# that resolves there; and a server environment with https_proxy set.
# With oauth.allow_private_addresses off (the default):
#  - registration refuses IP literals (22023, naming the setting);
#  - a name that resolves to a non-public address registers, but every
#    call (the worker's refresh, a session's code exchange, client
#    credentials grant and revocation) is refused at connect time, before a
#    byte is sent: the provider gets nothing, the refresh is a provider
#    configuration error (OA004, the provider paused), counted as not sent;
#  - the setting is a superuser's;
# and proxies from the environment are never used; oauth.http_proxy is.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use JSON::PP ();
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
my $port = $p->port;
my $node = oauth_node('outbound', allow_private_addresses => 0);
is($node->safe_psql('postgres', 'SHOW oauth.allow_private_addresses'), 'off', 'the default is off');

# ---- registration: no IP literal in any spelling ------------------------------
my @literals = (
	"http://127.0.0.1:$port/token", 'http://169.254.169.254/latest/token',
	"http://[::1]:$port/token", "http://0x7f000001:$port/token",
	"http://2130706433:$port/token", "http://0177.0.0.1:$port/token",
	"http://127.1:$port/token", "http://[::ffff:127.0.0.1]:$port/token",
	'https://10.0.0.1/token', 'https://192.168.1.10/token',
	'https://100.64.0.1/token', 'https://[fd00::1]/token', 'https://[fe80::1%25eth0]/token',
	'https://224.0.0.1/token', 'https://255.255.255.255/token', 'https://0.0.0.0/token',
	'https://93.184.216.34/token', 'https://127.0.0.1./token');
for my $url (@literals)
{
	my $r = oauth_psql($node, "SELECT oauth.register_provider('lit', '$url', 'cid', 'sec')");
	is($r->{sqlstate}, '22023', "token_url $url: refused (22023)") or diag($r->{err});
	like($r->{err}, qr/must name its host by DNS name.*HINT:.*oauth\.allow_private_addresses/s,
		'... the error names the rule and the setting');
}
for my $more ("revoke_url => 'https://169.254.169.254/revoke'",
	"authorize_url => 'https://[::1]/authorize'")
{
	my $r = oauth_psql($node,
		"SELECT oauth.register_provider('lit', 'https://auth.example.com/token', 'cid', 'sec', $more)");
	is($r->{sqlstate}, '22023', "$more: refused") or diag($r->{err});
}
like(oauth_psql($node, "SELECT oauth.register_provider('lit', 'http://169.254.169.254/t', 'cid', 'sec')")->{err},
	qr/Host "169\.254\.169\.254" is an IPv4 address \(link-local\)/, 'the detail names the range');
is($node->safe_psql('postgres', "SELECT count(*) FROM oauth.providers WHERE name = 'lit'"), '0',
	'nothing was stored');
is($node->safe_psql('postgres', "SELECT count(*) FROM oauth.events WHERE provider = 'lit'"), '0',
	'and no event written');

# the setting is a superuser's
$node->safe_psql('postgres', 'CREATE ROLE adm LOGIN; GRANT USAGE ON SCHEMA oauth TO adm');
my $r = oauth_psql($node, 'SET ROLE adm; SET oauth.allow_private_addresses = on');
is($r->{sqlstate}, '42501', 'a non-superuser cannot set oauth.allow_private_addresses');
$r = oauth_psql($node, 'SET ROLE adm; SHOW oauth.http_proxy');
is($r->{sqlstate}, '42501', 'nor read oauth.http_proxy (it may hold proxy credentials)');
$r = oauth_psql($node,
	"SET oauth.allow_private_addresses = on; SELECT oauth.register_provider('lit', 'http://127.0.0.1:$port/token', 'cid', 'sec')");
is($r->{ret}, 0, 'a superuser session with the setting on may register an IP literal') or diag($r->{err});

# ---- connect time: a name that resolves to loopback ---------------------------
my $local = "http://localhost:$port";
oauth_register($node, 'loc', "$local/token");
my $id = oauth_create_conn($node, 'ws1', 'loc', 'acct1', 'at-550', 'g550.0', "now() + interval '1 hour'");
my $out = $node->safe_psql('postgres', "SELECT oauth.refresh('ws1', '$id')");
like($out, qr/^provider_error: not sent: the provider's host resolves to (127\.0\.0\.1|\[::1\]) \(loopback\)/,
	'the worker refuses to connect: a provider configuration error naming the address')
  or diag($out);
like($out, qr/oauth\.allow_private_addresses is off/, '... and the setting');
is($p->stats->{total}, 0, 'the provider got no request');
my $ev = JSON::PP::decode_json($node->safe_psql('postgres',
	"SELECT detail FROM oauth.events WHERE connection_id = '$id' AND event = 'refresh_failed' ORDER BY id DESC LIMIT 1"));
is($ev->{class}, 'provider', 'event refresh_failed, class provider');
unlike($ev->{error}, qr/sent, no answer/, '... not counted as sent without an answer');
is($node->safe_psql('postgres', "SELECT paused_at IS NOT NULL FROM oauth.providers WHERE name = 'loc'"), 't',
	'the provider is paused: its configuration must change');
is($node->safe_psql('postgres',
	"SELECT attempts || ' ' || failures_permanent || ' ' || failures_transient FROM oauth.provider_stats() WHERE provider = 'loc'"),
	'1 1 0', 'provider_stats: one attempt, a permanent (configuration) failure');
$r = oauth_psql($node, "SELECT oauth.valid_token('ws1', '$id', interval '2 hours')");
is($r->{sqlstate}, 'OA004', 'a caller that needs a refresh gets OA004');
is($node->safe_psql('postgres', "SELECT state FROM oauth.connection_status WHERE id = '$id'"), 'active',
	'the connection itself is not marked');

# a session's own calls go through the same rule
oauth_register($node, 'loc2', "$local/token", ", revoke_url => '$local/revoke'");
$p->add_code(code => 'code-550', grant => 'gcode550');
$r = oauth_psql($node, "SELECT oauth.exchange_code('ws1', 'loc2', 'code-550', 'https://app.example.com/cb')");
is($r->{sqlstate}, 'OA004', 'exchange_code: refused at connect time (OA004)') or diag($r->{err});
like($r->{err}, qr/not sent: .*oauth\.allow_private_addresses/, '... naming the rule');
$r = oauth_psql($node, "SELECT oauth.client_credentials('ws1', 'loc2')");
is($r->{sqlstate}, 'OA004', 'client_credentials: refused at connect time (OA004)') or diag($r->{err});
my $id2 = oauth_create_conn($node, 'ws1', 'loc2', 'acct2', 'at-550b', 'g550b.0', "now() + interval '1 hour'");
$node->safe_psql('postgres', "SELECT oauth.revoke('ws1', '$id2')");
$ev = JSON::PP::decode_json($node->safe_psql('postgres',
	"SELECT detail FROM oauth.events WHERE connection_id = '$id2' AND event = 'revoked'"));
like(JSON::PP->new->canonical->encode($ev), qr/oauth\.allow_private_addresses/,
	'revoke: the provider call was refused, recorded in the event (the tokens are erased locally)');
my $st = $p->stats;
is($st->{total}, 0, 'the provider got no token request from the sessions');
is(scalar @{ $st->{revocations} }, 0, '... and no revocation');

# a host filled from a connection's metadata: that connection's failure only
oauth_register($node, 'tpl', "http://{host}:$port/token", ", allowed_hosts => '{localhost}'");
my $id3 = $node->safe_psql('postgres',
	"SELECT oauth.create_connection('ws3', 'tpl', 'acct3', 'at-550c', 'g550c.0', now() + interval '1 hour', '{}', '{\"host\": \"localhost\"}')");
$out = $node->safe_psql('postgres', "SELECT oauth.refresh('ws3', '$id3')");
like($out, qr/^transient_failure: not sent: .*\(loopback\).*oauth\.allow_private_addresses/,
	'a templated host that resolves to loopback: a transient failure of that connection')
  or diag($out);
is($node->safe_psql('postgres', "SELECT paused_at IS NULL FROM oauth.providers WHERE name = 'tpl'"), 't',
	'... the provider is not paused for the others');
like($node->safe_psql('postgres', "SELECT last_refresh_error FROM oauth.connection_status WHERE id = '$id3'"),
	qr/^not sent: /, '... its last_refresh_error says it was not sent');
is($p->stats->{total}, 0, '... and the provider got nothing');

# ---- with the setting on, everything works ------------------------------------
$node->append_conf('postgresql.conf', "oauth.allow_private_addresses = on\n");
$node->reload;
$node->poll_query_until('postgres', 'SHOW oauth.allow_private_addresses', 'on');
# until the worker has reloaded: each re-registration resumes the provider
ok( oauth_poll(10, 0.2, sub {
			oauth_register($node, 'loc', "$local/token");
			$node->safe_psql('postgres', "SELECT oauth.refresh('ws1', '$id')") eq 'refreshed';
		}),
	'with the setting on, the refresh works');
is($p->stats->{total}, 1, 'with the setting on, the provider got the refresh');

# ---- proxies: never the environment's ---------------------------------------
my $proxy = OAuthProvider->new;    # answers a proxied token request as its own
{
	local $ENV{http_proxy} = $proxy->base_url;
	local $ENV{https_proxy} = $proxy->base_url;
	local $ENV{HTTPS_PROXY} = $proxy->base_url;
	local $ENV{all_proxy} = $proxy->base_url;
	local $ENV{ALL_PROXY} = $proxy->base_url;
	$node->restart;
}
oauth_wait_worker($node);
is($node->safe_psql('postgres', "SELECT oauth.refresh('ws1', '$id')"), 'refreshed',
	'with https_proxy and friends in the server environment, a refresh works');
is($proxy->stats->{total}, 0, '... and nothing went through the environment\'s proxy');
is($p->stats->{total}, 2, '... it went to the provider directly');
$p->add_code(code => 'code-550-2', grant => 'gcode550b');
$r = oauth_psql($node, "SELECT oauth.exchange_code('ws1', 'loc2', 'code-550-2', 'https://app.example.com/cb')");
is($r->{ret}, 0, "a session's code exchange works too") or diag($r->{err});
is($proxy->stats->{total}, 0, '... not through the proxy either');

# oauth.http_proxy names one: then every request goes through it
$node->append_conf('postgresql.conf', "oauth.http_proxy = '" . $proxy->base_url . "'\n");
$node->reload;
oauth_poll(10, 0.1, sub { $node->safe_psql('postgres', 'SHOW oauth.http_proxy') ne '' });
ok( oauth_poll(10, 0.2, sub {
			$node->safe_psql('postgres', "SELECT oauth.refresh('ws1', '$id')");
			$proxy->stats->{total} > 0;
		}),
	'oauth.http_proxy: requests go through the proxy it names');
my $direct = $p->stats->{total};
is($node->safe_psql('postgres', "SELECT oauth.refresh('ws1', '$id')"), 'refreshed', 'a refresh through the proxy works');
is($proxy->stats->{total}, 2, '... it went through the proxy');
is($p->stats->{total}, $direct, '... and not directly');

# a connection kept alive from while the setting was on is checked again
# before each request: turning the setting off takes effect at once
$node->append_conf('postgresql.conf', "oauth.http_proxy = ''\n");
$node->reload;
ok( oauth_poll(10, 0.2, sub {
			$node->safe_psql('postgres', "SELECT oauth.refresh('ws1', '$id')");
			$p->stats->{total} > $direct;
		}),
	'without oauth.http_proxy, refreshes go directly again (on a kept-alive connection)');
$node->append_conf('postgresql.conf', "oauth.allow_private_addresses = off\n");
$node->reload;
ok( oauth_poll(10, 0.2, sub {
			oauth_register($node, 'loc', "$local/token");
			$node->safe_psql('postgres', "SELECT oauth.refresh('ws1', '$id')") =~ /^provider_error: not sent: /;
		}),
	'the setting turned off: the next refresh is refused, kept-alive connection or not');
my $before_off = $p->stats->{total};
oauth_register($node, 'loc', "$local/token");
like($node->safe_psql('postgres', "SELECT oauth.refresh('ws1', '$id')"), qr/^provider_error: not sent: /,
	'... and every one after it');
is($p->stats->{total}, $before_off, '... the provider gets nothing');

$node->stop;
done_testing();
