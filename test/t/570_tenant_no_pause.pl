# Attacker: a customer who controls several workspaces, each with a tenant of
# its own behind a templated token URL (a directory it created, a host it
# runs).  Each of its tenants answers invalid_client, unauthorized_client or a
# bare 401.  Those answers say something about the tenant, never about the
# client configuration the other customers share: each marks its own
# connection (reauth_required, "tenant_rejected: <code>") and none counts
# toward pausing the provider, however many workspaces send them, through a
# placeholder in the path or in the host.  The other customers keep
# refreshing.  (On an untemplated URL the same answers still pause the
# provider: 260_tenant_isolation.pl.)
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthLifecycleUtil;
use OAuthProvider;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
my $port = $p->port;
my $node = lc_node('tenant_no_pause');

# Microsoft-style ({tenant} in the path) and Salesforce-style ({sub} in the
# host; the provider sees the tenant in the path, curl resolves *.localhost
# to loopback).
lc_sql($node, <<"SQL");
SELECT oauth.register_provider('ms', '${\ $p->base_url}/t/{tenant}/token', 'cid', 'csecret');
SELECT oauth.register_provider('sf', 'http://{sub}.sf.localhost:$port/t/{sub}/token', 'cid', 'csecret',
    allowed_hosts => '{*.sf.localhost}');
SQL

sub paused
{
	return lc_sql($node, "SELECT paused_at IS NOT NULL FROM oauth.providers WHERE name = '$_[0]'");
}

sub conn
{
	my ($ws, $prov, $meta, $grant) = @_;
	return lc_sql($node,
		"SELECT oauth.create_connection('$ws', '$prov', '$grant', 'at-old', '$grant.0', "
		  . "now() - interval '1 minute', '{}', " . lc_quote($meta) . ')');
}

my %expect = (unauthorized_client => 'unauthorized_client', invalid_client => 'invalid_client',
	'401' => '(invalid_client|http_401)');

for my $prov (qw(ms sf))
{
	my $key = $prov eq 'ms' ? 'tenant' : 'sub';
	my $good = conn("good-$prov", $prov, qq({"$key": "good$prov"}), "ggood$prov");

	# nine workspaces of one customer, three of each answer, each with its
	# own tenant
	my @bad;
	my $i = 0;
	for my $mode (qw(unauthorized_client invalid_client 401))
	{
		for (1 .. 3)
		{
			$i++;
			my $t = "evil$prov$i";
			$p->control('tenant', { tenant => $t, mode => $mode });
			push @bad, [ "evil-$prov-$i", conn("evil-$prov-$i", $prov, qq({"$key": "$t"}), "gevil$prov$i"), $mode ];
		}
	}
	for my $b (@bad)
	{
		my ($ws, $id, $mode) = @$b;
		my $r = lc_try($node, "SELECT oauth.refresh('$ws', '$id')");
		like($r->{out}, qr/reauth_required/, "$prov: $ws ($mode) fails its own connection")
		  or diag($r->{out} . $r->{err});
		like(lc_conn($node, $id)->{last_refresh_error}, qr/^tenant_rejected: $expect{$mode}$/,
			"$prov: $ws is marked tenant_rejected");
		is(paused($prov), 'f', "$prov: the provider is not paused after $ws");
	}
	is(lc_sql($node, "SELECT count(*) FROM oauth.events WHERE event = 'reauth_required' "
		  . "AND provider = '$prov' AND detail->>'reason' = 'tenant_rejected'"),
		scalar(@bad), "$prov: one tenant_rejected event for each");

	# the other customer still refreshes, on demand and through valid_token
	is(lc_sql($node, "SELECT oauth.refresh('good-$prov', '$good')"), 'refreshed',
		"$prov: another workspace still refreshes");
	my $r = lc_try($node, "SELECT oauth.valid_token('good-$prov', '$good')");
	is($r->{sqlstate}, undef, "$prov: valid_token answers, no OA004") or diag($r->{err});
	is(lc_sql($node, "SELECT pause_reason IS NULL FROM oauth.providers WHERE name = '$prov'"), 't',
		"$prov: no pause reason recorded");
}

$node->stop;
done_testing();
