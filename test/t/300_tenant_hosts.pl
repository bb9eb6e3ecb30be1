# Attacker: a tenant who controls its connection's metadata (create_connection,
# exchange_code, authorize_url all take it) and points a templated provider
# URL at a host of its choosing: 127.0.0.1, an IP literal in any spelling, a
# port, a user-information part, a host outside allowed_hosts.  Every URL the
# extension builds (token, revoke, authorize; worker and session alike) goes
# through the one filler (src/urls.c), so each attempt fails before any byte
# is sent: the provider sees no request, the client secret and the refresh
# token go nowhere, the provider is not paused for the other tenants.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthLifecycleUtil;
use OAuthProvider;
use PostgreSQL::Test::Utils;
use JSON::PP;
use Test::More;

my $p = OAuthProvider->new;
my $port = $p->port;
my $node = lc_node('tenant_hosts', conf => "log_min_messages = debug5\nlog_statement = none\n");  # our own SQL text holds the tokens it creates

# The whole host from metadata ({host}), and a subdomain ({sub}); both allow
# only names under sh.localhost (curl resolves *.localhost to loopback, so
# the good tenants reach the fake provider).
lc_sql($node, <<"SQL");
SELECT oauth.register_provider('hosts', 'http://{host}:$port/token', 'cid', 'client-secret-300',
    revoke_url => 'http://{host}:$port/revoke', authorize_url => 'http://{host}:$port/authorize',
    allowed_hosts => '{*.sh.localhost}');
SELECT oauth.register_provider('subs', 'http://{sub}.sh.localhost:$port/token', 'cid', 'client-secret-300',
    revoke_url => 'http://{sub}.sh.localhost:$port/revoke', allowed_hosts => '{*.sh.localhost}');
SQL

sub conn
{
	my ($prov, $acct, $meta) = @_;
	return lc_sql($node,
		"SELECT oauth.create_connection('ws-$acct', '$prov', '$acct', 'at-$acct', '$acct.0', "
		  . "now() - interval '1 minute', '{}', " . lc_quote($meta) . ')');
}

sub requests { return scalar @{ $p->stats->{requests} } }

# A good tenant works through the template.
my $good = conn('hosts', 'good', '{"host": "acme.sh.localhost"}');
is(lc_sql($node, "SELECT oauth.refresh('ws-good', '$good')"), 'refreshed',
	'a host inside allowed_hosts is used');
my $good2 = conn('subs', 'good2', '{"sub": "acme"}');
is(lc_sql($node, "SELECT oauth.refresh('ws-good2', '$good2')"), 'refreshed',
	'a subdomain inside allowed_hosts is used');

# Hostile metadata: each one is refused before anything is sent.
my @attacks = (
	[ hosts => { host => '127.0.0.1' } ],
	[ hosts => { host => "127.0.0.1:$port" } ],
	[ hosts => { host => '2130706433' } ],
	[ hosts => { host => '0x7f000001' } ],
	[ hosts => { host => '0177.0.0.1' } ],
	[ hosts => { host => '[::1]' } ],
	[ hosts => { host => 'localhost' } ],
	[ hosts => { host => 'evil.localhost' } ],
	[ hosts => { host => "x\@127.0.0.1" } ],
	[ hosts => { host => "127.0.0.1:$port/token#" } ],
	[ hosts => { host => 'acme.sh.localhost%2f' } ],
	[ subs => { sub => "x\@127.0.0.1:$port/" } ],
	[ subs => { sub => "evil.localhost:$port/token?" } ],
	[ subs => { sub => '' } ],
);
my $n = 0;
for my $a (@attacks)
{
	my ($prov, $meta) = @$a;
	my $json = JSON::PP->new->canonical->encode($meta);
	$n++;
	my $before = requests();
	my $id = conn($prov, "bad$n", $json);
	my $out = lc_sql($node, "SELECT oauth.refresh('ws-bad$n', '$id')");
	like($out, qr/^transient_failure: .*(not allowed|not a valid host)/, "refresh, $prov $json: refused")
	  or diag($out);
	is(requests(), $before, "refresh, $prov $json: the provider saw no request");
	my $r = lc_try($node, "SELECT oauth.revoke('ws-bad$n', '$id')");
	is(requests(), $before, "revoke, $prov $json: the provider saw no request");
	like(lc_sql($node, "SELECT detail->>'error' FROM oauth.events WHERE connection_id = '$id' AND event = 'revoked'"),
		qr/not allowed|not a valid host/, "revoke, $prov $json: recorded as not sent");
	$r = lc_try($node, "SELECT oauth.exchange_code('ws-x$n', '$prov', 'code-$n', 'https://app.example/cb', "
		  . "metadata => " . lc_quote($json) . ')');
	is($r->{sqlstate}, '22023', "exchange_code, $prov $json: 22023");
	is(requests(), $before, "exchange_code, $prov $json: the provider saw no request");
	next unless $prov eq 'hosts';
	$r = lc_try($node, "SELECT oauth.authorize_url('hosts', 'https://app.example/cb', 's', "
		  . "metadata => " . lc_quote($json) . ')');
	is($r->{sqlstate}, '22023', "authorize_url, $json: no URL to send the customer to");
}

# No code was claimed by a refused exchange, nobody was marked, nothing paused.
is(lc_sql($node, "SELECT count(*) FROM oauth.code_redemptions"), '0', 'no code was claimed');
is(lc_sql($node, "SELECT count(*) FROM oauth.providers WHERE paused_at IS NOT NULL"), '0',
	'no provider is paused');
is(lc_sql($node, "SELECT oauth.refresh('ws-good', '$good')"), 'refreshed',
	'the good tenant still refreshes');

# The secrets never left, and never reached the log.
$node->stop;
my $log = slurp_file($node->logfile);
for my $secret ('client-secret-300', map { "bad$_.0" } 1 .. $n)
{
	unlike($log, qr/\Q$secret\E/, "the log does not hold $secret");
}
unlike(JSON::PP->new->encode($p->stats), qr/bad\d+\.0/,
	'no hostile connection\'s refresh token reached the provider');

done_testing();
