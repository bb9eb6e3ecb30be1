# Hot standby and failover: a streaming standby serves fresh and in-window
# tokens; what needs a refresh fails with OA006 saying it is a standby and
# to call on the primary, and nothing reaches the provider from it.  After
# the primary stops and the standby is promoted, the worker starts there and
# refreshes with the refresh tokens the old primary rotated: nothing lost.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
$p->add_client(client_id => 'cid', client_secret => 'csecret');
$p->set_grant($_, rotate => 1, strict => 1) for qw(g1 g2 g3 g4);

my $primary = oauth_node('primary', allows_streaming => 1);
sub psql_p { return $primary->safe_psql('postgres', $_[0]) }

oauth_register($primary, 'p1', $p->token_url, ", refresh_buffer => '5 minutes'");
my $fresh = oauth_create_conn($primary, 'ws1', 'p1', 'a1', 'at-fresh', 'g1.0',
	"now() + interval '1 day'");
my $window = oauth_create_conn($primary, 'ws1', 'p1', 'a2', 'at-window', 'g2.0',
	"now() + interval '3 minutes'");
my $expired = oauth_create_conn($primary, 'ws1', 'p1', 'a3', 'at-expired', 'g3.0',
	"now() - interval '1 minute'");
my $rotated = oauth_create_conn($primary, 'ws2', 'p1', 'a4', 'at-rot', 'g4.0',
	"now() + interval '1 day'");
is(psql_p("SELECT oauth.refresh('ws2', '$rotated')"), 'refreshed',
	'the primary refreshes a connection (its refresh token rotates to g4.1)');

$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
# the base backup carries the key file (it lives in the data directory);
# the test harness copies it without its mode
chmod(0600, $standby->data_dir . '/oauth_tokens.keys') or die "chmod: $!";
$standby->start;
$primary->wait_for_catchup($standby);
sub psql_s { return $standby->safe_psql('postgres', $_[0]) }
my $requests = $p->stats->{total};

is(psql_s("SELECT pg_is_in_recovery()"), 't', 'the standby is in recovery');
is(psql_s("SELECT oauth.valid_token('ws1', '$fresh')"), 'at-fresh',
	'standby: a fresh token is served');
is(psql_s("SELECT oauth.valid_token('ws1', '$window')"), 'at-window',
	'standby: a token inside its refresh window (still valid for min_validity) is served');
is(psql_s("SELECT oauth.valid_token('ws2', '$rotated')"), 'at-g4-1',
	'standby: the token the primary refreshed is served');
for my $call (
	[ 'an expired token', "SELECT oauth.valid_token('ws1', '$expired')" ],
	[ 'a token valid for less than min_validity',
		"SELECT oauth.valid_token('ws1', '$window', interval '10 minutes')" ],
	[ 'refresh()', "SELECT oauth.refresh('ws1', '$fresh')" ],
	[ 'refresh_due()', "SELECT * FROM oauth.refresh_due()" ],
	[ 'token_rejected()', "SELECT oauth.token_rejected('ws1', '$fresh', 'at-fresh')" ],
  )
{
	my $r = oauth_psql($standby, $call->[1]);
	is($r->{sqlstate}, 'OA006', "standby: $call->[0] fails with OA006");
	like($r->{err}, qr/hot standby.*HINT:\s+Call this on the primary/s,
		"standby: $call->[0] says it is a standby and to call on the primary")
	  or diag($r->{err});
}
is($p->stats->{total}, $requests, 'the standby sent nothing to the provider');

# ---- failover --------------------------------------------------------------------
$primary->stop;
$standby->promote;
oauth_wait_worker($standby);
is(psql_s("SELECT oauth.provider_traffic_status()"), 'on',
	'the promoted standby is the same cluster and database: traffic on');
is(psql_s("SELECT oauth.valid_token('ws1', '$expired')"), 'at-g3-1',
	'after promotion an expired token is refreshed');
is(psql_s("SELECT oauth.refresh('ws2', '$rotated')"), 'refreshed',
	'the connection rotated on the old primary refreshes on the new one');
is($p->grant_info('g4')->{current_refresh_token}, 'g4.2',
	'with the rotated refresh token (g4.1): no rotated token lost');
is(psql_s("SELECT oauth.valid_token('ws2', '$rotated')"), 'at-g4-2',
	'the new token is served');

$standby->stop;
done_testing();
