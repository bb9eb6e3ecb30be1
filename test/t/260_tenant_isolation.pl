# Tenants cannot touch each other (issue 8, deliverable 6): invalid_client,
# unauthorized_client or a 401 from a token URL filled from a connection's
# metadata (host or path, as Microsoft's {tenant}) fails that connection
# only; the provider is paused only on an untemplated URL.  The same answer
# from any number of workspaces never pauses it (570_tenant_no_pause.pl).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
my $node = oauth_node('tenants');
oauth_register($node, 'ms', $p->base_url . '/t/{tenant}/token');
oauth_register($node, 'plain', $p->token_url);

sub q1 { return $node->safe_psql('postgres', $_[0]) }
sub paused { return q1("SELECT paused_at IS NOT NULL FROM oauth.providers WHERE name = '$_[0]'") }
my $exp = "now() - interval '1 minute'";

sub conn
{
	my ($ws, $prov, $tenant, $grant) = @_;
	return q1("SELECT oauth.create_connection('$ws', '$prov', '$grant', 'at-old', '$grant.0', $exp, "
		  . "'{}', '{\"tenant\": \"$tenant\"}')");
}

# one tenant's unauthorized_client
$p->control('tenant', { tenant => 'bad', mode => 'unauthorized_client' });
my $bad = conn('ws1', 'ms', 'bad', 'gbad');
my @good = map { conn("ws$_", 'ms', "good$_", "ggood$_") } 2 .. 3;

my $r = oauth_psql($node, "SELECT oauth.refresh('ws1', '$bad')");
like($r->{out}, qr/reauth_required/, 'the rejected tenant\'s connection fails') or diag($r->{err});
my $st = oauth_status($node, $bad);
is($st->{state}, 'reauth_required', 'its state');
is($st->{last_refresh_error}, 'tenant_rejected: unauthorized_client', 'with an error that names the cause');
is(q1("SELECT detail->>'reason' FROM oauth.events WHERE connection_id = '$bad' AND event = 'reauth_required'"),
	'tenant_rejected', 'and an event that says so');
is(paused('ms'), 'f', 'the provider is not paused');
$r = oauth_psql($node, "SELECT oauth.valid_token('ws1', '$bad')");
is($r->{sqlstate}, 'OA002', 'the rejected connection answers OA002');
like($r->{err}, qr/tenant_rejected: unauthorized_client/, 'naming the tenant rejection');

for my $i (0 .. $#good)
{
	my $ws = 'ws' . ($i + 2);
	is(q1("SELECT oauth.valid_token('$ws', '$good[$i]')"), 'at-ggood' . ($i + 2) . '-1',
		"another workspace ($ws) keeps refreshing");
}
is($p->stats->{by_tenant}{bad}, 1, 'the rejected tenant was asked once');

# the same answer (a bare 401) for three workspaces: still each tenant's own
$p->control('tenant', { tenant => "t$_", mode => '401' }) for 4 .. 6;
my @c = map { conn("ws$_", 'ms', "t$_", "g401x$_") } 4 .. 6;
for my $k (0 .. 2)
{
	my $ws = 'ws' . ($k + 4);
	$r = oauth_psql($node, "SELECT oauth.refresh('$ws', '$c[$k]')");
	like($r->{out}, qr/reauth_required/, "$ws: a bare 401 fails that connection") or diag($r->{out} . $r->{err});
	like(oauth_status($node, $c[$k])->{last_refresh_error}, qr/^tenant_rejected: (invalid_client|http_401)$/,
		"$ws: marked tenant_rejected");
}
is(paused('ms'), 'f', 'three workspaces with the same answer do not pause the provider');
is(q1("SELECT oauth.refresh('ws2', '$good[0]')"), 'refreshed', 'and another workspace still refreshes');

# an untemplated URL: invalid_client is the provider's configuration at once
$p->set_grant('gplain', mode => 'invalid_client');
my $pc = q1("SELECT oauth.create_connection('ws7', 'plain', 'a', 'at-old', 'gplain.0', $exp)");
oauth_psql($node, "SELECT oauth.refresh('ws7', '$pc')");
is(paused('plain'), 't', 'untemplated URL: invalid_client pauses the provider');
is(oauth_status($node, $pc)->{state}, 'active', 'untemplated URL: the connection is not marked');

$node->stop;
done_testing();
