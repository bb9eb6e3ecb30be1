# Fairness of the sweep: a workspace with a big backlog on a slow provider
# does not hold up another workspace's due connection; the global limit
# (oauth.max_concurrent_refreshes) and a provider's max_concurrency hold.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $NA = 2000;

my $slow = OAuthProvider->new;
my $fast = OAuthProvider->new;
$slow->set_default(latency_ms => 1000);

my $node = oauth_node('fairness', sweep_interval => '1s',
	conf => "oauth.max_concurrent_refreshes = 16\n");

sub sql { return $node->safe_psql('postgres', $_[0]) }

oauth_register($node, 'slow', $slow->token_url, ", refresh_buffer => '5 minutes'");
oauth_register($node, 'fast', $fast->token_url, ", refresh_buffer => '5 minutes'");

# ---- workspace A: a backlog of 2,000 due connections on the slow provider --
my $t = time();
is( sql(
		"SELECT count(oauth.create_connection('wsA', 'slow', 'a' || g, 'at-a', 'ga' || g || '.0',
		                                      now() + interval '2 minutes'))
		   FROM generate_series(1, $NA) g"),
	$NA,
	"$NA due connections created in workspace A");
note(sprintf('created in %.1f s', time() - $t));

# The sweep works on A's backlog at full concurrency before B's connection
# becomes due (sweep work holds all slots but one, kept for callers).
my $max_inflight = 0;
ok( oauth_poll(30, 0.1, sub {
			my $n = sql('SELECT in_flight FROM oauth.stats()');
			$max_inflight = $n if $n > $max_inflight;
			return $n >= 15;
		}),
	'the sweep runs 15 refreshes of A at once');

# ---- workspace B: one due connection on the fast provider ------------------
my $t_b = time();
my $id_b = oauth_create_conn($node, 'wsB', 'fast', 'b1', 'at-b', 'gb.0',
	"now() + interval '2 minutes'");
my ($b_done, $a_left);
ok( oauth_poll(60, 0.1, sub {
			my ($done, $left, $inflight) = split /\|/, sql(
				"SELECT (SELECT refreshed_at IS NOT NULL FROM oauth.connections WHERE id = '$id_b'),
				        (SELECT count(*) FROM oauth.connections
				          WHERE workspace_id = 'wsA' AND refreshed_at IS NULL),
				        (SELECT in_flight FROM oauth.stats())");
			$max_inflight = $inflight if $inflight > $max_inflight;
			($b_done, $a_left) = ($done, $left);
			return $done eq 't';
		}),
	"B's connection was refreshed");
my $b_wait = time() - $t_b;
note(sprintf("B refreshed %.1f s after it was created; A still had %d to go",
		$b_wait, $a_left));
cmp_ok($b_wait, '<', 5, "B's connection was refreshed within a sweep round or so")
  or diag("A had $a_left connections left when B was refreshed");
cmp_ok($a_left, '>', 1500,
	"B did not wait for A's backlog (more than 1,500 of A were still due)");
is($fast->stats->{by_grant}{gb}, 1, 'the fast provider saw one request for B');
is( sql(
		"SELECT detail->>'trigger' FROM oauth.events
		  WHERE connection_id = '$id_b' AND event = 'refreshed'"),
	'sweep',
	"B's refresh came from the sweep");
cmp_ok($max_inflight, '<=', 16,
	'oauth.stats().in_flight never exceeded oauth.max_concurrent_refreshes');

# The slow provider saw no more requests than 16 slots of 1 s allow, and
# A keeps going at about that rate (B's turn did not stall A either).
{
	my $n0 = $slow->stats->{total};
	my $t0 = time();
	ok( oauth_poll(30, 0.1, sub {
				my $n = sql('SELECT in_flight FROM oauth.stats()');
				$max_inflight = $n if $n > $max_inflight;
				return time() - $t0 >= 3;
			}),
		'watched A for 3 s');
	my $elapsed = time() - $t;
	my $n = $slow->stats->{total};
	note(sprintf('slow provider: %d requests in %.1f s, %d in the last %.1f s',
			$n, $elapsed, $n - $n0, time() - $t0));
	cmp_ok($n, '<=', 16 * (int($elapsed) + 2),
		'the slow provider never got more than 16 requests a second');
	cmp_ok($n - $n0, '>=', 24, 'A progressed at more than 8 refreshes a second');
	cmp_ok($max_inflight, '<=', 16,
		'oauth.stats().in_flight never exceeded oauth.max_concurrent_refreshes');
}

# ---- a provider's max_concurrency -------------------------------------------
# Drop A's backlog, let what is in flight finish, then give the slow
# provider a limit of 4 and a fresh backlog in workspace C.
sql("DELETE FROM oauth.connections WHERE workspace_id = 'wsA'");
ok($node->poll_query_until('postgres', 'SELECT in_flight = 0 FROM oauth.stats()'),
	"A's refreshes in flight finished");
oauth_register($node, 'slow', $slow->token_url,
	", refresh_buffer => '5 minutes', max_concurrency => 4");
$slow->reset;
$slow->set_default(latency_ms => 1000);
is( sql(
		"SELECT count(oauth.create_connection('wsC', 'slow', 'c' || g, 'at-c', 'gc' || g || '.0',
		                                      now() + interval '2 minutes'))
		   FROM generate_series(1, 40) g"),
	40,
	'40 due connections created in workspace C');

# Sample the slow provider's request count and the worker's in-flight count
# for 4 s.  With 1 s per answer and 4 slots, any window shorter than 1 s
# sees at most 4 new requests.
my @samples;
my $max_c = 0;
my $t_c = time();
while (time() - $t_c < 4.5)
{
	my $n = sql('SELECT in_flight FROM oauth.stats()');
	$max_c = $n if $n > $max_c;
	push @samples, [ time(), $slow->stats->{total} ];
	usleep(100_000);
}
my $worst = 0;
for my $i (0 .. $#samples)
{
	for my $j ($i + 1 .. $#samples)
	{
		last if $samples[$j][0] - $samples[$i][0] > 0.8;
		my $d = $samples[$j][1] - $samples[$i][1];
		$worst = $d if $d > $worst;
	}
}
my $total_c = $samples[-1][1];
note("max_concurrency 4: $total_c requests in 4.5 s, at most $worst new in any 0.8 s, in_flight max $max_c");
cmp_ok($max_c, '<=', 4, 'in_flight never exceeded the provider limit of 4');
cmp_ok($worst, '<=', 4, 'the provider never saw more than 4 new requests within 0.8 s');
cmp_ok($total_c, '<=', 4 * 6, 'at most 4 requests a second overall');
cmp_ok($total_c, '>=', 8, 'but the limit was used (at least 8 requests in 4.5 s)');

$node->stop;
$slow->stop;
$fast->stop;
done_testing();
