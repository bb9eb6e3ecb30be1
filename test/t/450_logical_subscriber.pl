# A logical-replication subscriber that receives oauth.connections (with the
# key file) serves still-valid tokens and sends nothing to any provider,
# whatever its oauth.refresh_home says: the publisher refreshes.
# oauth.adopt_copy() is refused while the subscription exists; once it is
# dropped (the cut-over of a migration), the subscriber still holds the
# publisher's rows (their home mark is the publisher's): a copy until
# oauth.adopt_copy(), then it refreshes.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
$p->set_grant($_, rotate => 1, strict => 1) for qw(g1 g2);

my $pub = oauth_node('pub', allows_streaming => 'logical');
my $sub = oauth_node('sub', allows_streaming => 'logical', sweep_interval => '200ms');
oauth_write_keys($sub, [ [ 'k1', oauth_key_b64($pub) ] ]);
sub pub_sql { return $pub->safe_psql('postgres', $_[0]) }
sub sub_sql { return $sub->safe_psql('postgres', $_[0]) }

oauth_register($pub, 'p1', $p->token_url, ", refresh_buffer => '5 minutes'");
my $fresh = oauth_create_conn($pub, 'ws1', 'p1', 'a1', 'at-fresh', 'g1.0',
	"now() + interval '1 day'");
my $due = oauth_create_conn($pub, 'ws1', 'p1', 'a2', 'at-due', 'g2.0',
	"now() + interval '2 minutes'");
pub_sql("CREATE PUBLICATION oauth_pub FOR TABLE oauth.providers, oauth.connections");

my $log_offset = -s $sub->logfile;
my $connstr = $pub->connstr('postgres');
$connstr =~ s/'/''/g;
sub_sql("CREATE SUBSCRIPTION oauth_sub CONNECTION '$connstr' PUBLICATION oauth_pub");
$sub->wait_for_subscription_sync($pub, 'oauth_sub');
my $requests = $p->stats->{total};

is(sub_sql("SELECT count(*) FROM oauth.connections"), '2', 'the connections arrived');
is(sub_sql("SELECT oauth.valid_token('ws1', '$fresh')"), 'at-fresh',
	'the subscriber serves a fresh token');
is(sub_sql("SELECT oauth.provider_traffic_status()"),
	'this database is a logical replication subscriber of oauth.connections',
	'provider_traffic_status() says why nothing is sent');
$sub->wait_for_log(qr/no requests are sent to providers: this database is a logical replication subscriber/,
	$log_offset);
my $r = oauth_psql($sub, "SELECT oauth.refresh('ws1', '$due')");
is($r->{sqlstate}, 'OA006', 'refresh on the subscriber: OA006');
like($r->{err}, qr/logical replication subscriber.*HINT:.*drop the subscription/s,
	'the error says it is a subscriber and what to do');
$r = oauth_psql($sub, "SELECT oauth.adopt_copy()");
is($r->{sqlstate}, 'OA006', 'adopt_copy() is refused while subscribed');
is($p->stats->{total}, $requests, 'the subscriber sent nothing (its sweep saw a due connection)');

# the cut-over: the subscription goes, the publisher stops (its worker does
# not sweep in this test, so it refreshes nothing meanwhile)
sub_sql("DROP SUBSCRIPTION oauth_sub");
$pub->stop;
like(sub_sql("SELECT oauth.provider_traffic_status()"),
	qr/this database is a copy: it holds providers or connections that came from another database/,
	'without the subscription: a copy of the publisher\'s rows');
is($p->stats->{total}, $requests, 'the former subscriber sent nothing before adoption');
is(sub_sql("SELECT oauth.adopt_copy()"), 'adopted', 'adopt_copy() after the cut-over');
is(sub_sql("SELECT oauth.provider_traffic_status()"), 'on', 'adopted: traffic on');
ok( $sub->poll_query_until('postgres',
		"SELECT refresh_after > now() FROM oauth.connections WHERE id = '$due'"),
	'the worker refreshes the due connection');
is($p->grant_info('g2')->{current_refresh_token}, 'g2.1', 'with the replicated refresh token');

$sub->stop;
done_testing();
