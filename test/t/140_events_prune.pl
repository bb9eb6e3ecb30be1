# oauth.event_retention: the worker prunes events older than the retention
# (at its start, then every 10 minutes); newer events stay.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
my $node = oauth_node('events_prune', conf => "oauth.event_retention = '1min'\n");

sub sql { return $node->safe_psql('postgres', $_[0]) }

is(sql('SHOW oauth.event_retention'), '1min', 'event_retention is 1 minute');
my $r = oauth_psql($node, "ALTER SYSTEM SET oauth.event_retention = '30s'");
is($r->{sqlstate}, '22023', 'a retention under 60 s is refused');

oauth_register($node, 'p1', $p->token_url);
my @ids = map {
	oauth_create_conn($node, 'ws1', 'p1', "acct$_", 'at-x', "g$_.0", "now() + interval '1 day'")
} 1 .. 4;
is(sql("SELECT oauth.refresh('ws1', '$ids[0]')"), 'refreshed', 'a refresh adds an event');

my $total = sql('SELECT count(*) FROM oauth.events');
cmp_ok($total, '>=', 6, "$total events recorded");

# Backdate half of them: some far past the retention, one just past it; one
# event stays inside the retention although it is not new.
my $half = int($total / 2);
sql("UPDATE oauth.events SET at = now() - interval '2 hours'
      WHERE id IN (SELECT id FROM oauth.events ORDER BY id LIMIT $half - 1)");
sql("UPDATE oauth.events SET at = now() - interval '90 seconds'
      WHERE id = (SELECT id FROM oauth.events ORDER BY id OFFSET $half - 1 LIMIT 1)");
sql("UPDATE oauth.events SET at = now() - interval '20 seconds'
      WHERE id = (SELECT max(id) FROM oauth.events)");
my $old_ids = sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM oauth.events
                    WHERE at < now() - interval '1 minute'");
my $kept_ids = sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM oauth.events
                     WHERE at >= now() - interval '1 minute'");
my @old = split /,/, $old_ids;
is(scalar(@old), $half, "$half events are older than the retention");

# The worker pruned at its start, before the backdating, and prunes again
# only in 10 minutes: they are still there.
is(sql('SELECT count(*) FROM oauth.events'), $total, 'nothing is pruned before the next prune');

# A restarted worker prunes at once.
$node->restart;
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM oauth.events WHERE id IN ($old_ids)"),
	'the restarted worker pruned the events older than the retention');
is( sql(
		"SELECT string_agg(id::text, ',' ORDER BY id) FROM oauth.events WHERE id IN ($kept_ids)"),
	$kept_ids,
	'events inside the retention stay (including one 20 s old)');
is(sql("SELECT count(*) FROM oauth.connections"), 4, 'connections are untouched');
is(sql("SELECT oauth.valid_token('ws1', '$ids[0]')"), 'at-g1-1',
	'and still serve their tokens');

$node->stop;
$p->stop;
done_testing();
