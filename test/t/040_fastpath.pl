# The fast path takes no lock and writes nothing; stale-while-revalidate
# serves the old token at once and refreshes in the background; a token
# that is too close to expiry makes the caller wait for the new one.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
$p->set_grant('gswr', latency_ms => 2000);
$p->set_grant('gwait', latency_ms => 2000);

my $node = oauth_node('fastpath');
oauth_register($node, 'p1', $p->token_url);    # refresh_buffer 5 minutes

# ---- 1. fast path: no row lock, no write, no wait -------------------------
my $fresh = oauth_create_conn($node, 'ws1', 'p1', 'fresh', 'at-fresh', 'gfresh.0',
	"now() + interval '1 hour'");

my $a = oauth_session($node);
my $apid = $a->query('SELECT pg_backend_pid()')->{out};
my $r = $a->query("BEGIN; SELECT oauth.valid_token('ws1', '$fresh');");
is($r->{out}, 'at-fresh', 'A: valid_token inside an open transaction');
$r = $a->query('SELECT pg_current_xact_id_if_assigned() IS NULL');
is($r->{out}, 't', 'A: valid_token wrote nothing (no transaction id assigned)');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_locks WHERE pid = $apid "
		  . "AND (locktype IN ('tuple', 'transactionid') OR mode NOT IN ('AccessShareLock', 'ExclusiveLock'))"),
	0,
	'A holds no tuple or transaction-id lock');

# B: the same connection while A's transaction stays open
my $b = oauth_psql($node,
	"SET statement_timeout = '2s'; SELECT oauth.valid_token('ws1', '$fresh');");
is($b->{ret}, 0, 'B: valid_token did not block on A') or diag($b->{err});
is($b->{out}, 'at-fresh', 'B: got the token');
note(sprintf('B took %.2f s', $b->{elapsed}));

# nobody holds the row: an update of it does not wait either
$b = oauth_psql($node,
	"SET lock_timeout = '1s'; SELECT 1 FROM oauth.connections WHERE id = '$fresh' FOR UPDATE NOWAIT;"
);
is($b->{ret}, 0, 'the row is not locked by A') or diag($b->{err});

$r = $a->query('COMMIT');
is($r->{err}, '', 'A: commit');
$a->quit;
is($p->stats->{total}, 0, 'the fast path never called the provider');

# ---- 2. stale-while-revalidate ----------------------------------------------
# Inside the 5-minute buffer, but valid beyond min_validity: the old token
# comes back at once; the refresh (2 s at the provider) runs behind.
my $swr = oauth_create_conn($node, 'ws1', 'p1', 'swr', 'at-swr-old', 'gswr.0',
	"now() + interval '2 minutes'");
$r = oauth_psql($node,
	"SET statement_timeout = '1s'; SELECT oauth.valid_token('ws1', '$swr', interval '1 minute');"
);
is($r->{ret}, 0, 'SWR: valid_token returned within the statement timeout')
  or diag($r->{err});
is($r->{out}, 'at-swr-old', 'SWR: it returned the old token');
# statement_timeout (1 s, the provider takes 2 s) proves it did not wait
note(sprintf('SWR call took %.2f s', $r->{elapsed}));

ok( oauth_poll(30, 0.1, sub { ($p->stats->{by_grant}{gswr} // 0) >= 1 }),
	'SWR: a background refresh reached the provider');
ok( $node->poll_query_until('postgres',
		"SELECT oauth.valid_token('ws1', '$swr', interval '1 minute') = 'at-gswr-1'"),
	'SWR: the new token is stored and served afterwards');
is($p->stats->{by_grant}{gswr}, 1, 'SWR: exactly one background refresh');
is($node->safe_psql('postgres',
	"SELECT expires_at > now() + interval '50 minutes' FROM oauth.connection_status WHERE id = '$swr'"),
	't', 'SWR: new expiry from expires_in');
is($node->safe_psql('postgres',
	"SELECT detail->>'trigger' FROM oauth.events WHERE connection_id = '$swr' AND event = 'refreshed'"),
	'caller', 'SWR: one refreshed event');

# ---- 3. wait ----------------------------------------------------------------
# Valid for 30 s, min_validity 1 minute: the caller waits for the refresh.
my $wait = oauth_create_conn($node, 'ws1', 'p1', 'wait', 'at-wait-old', 'gwait.0',
	"now() + interval '30 seconds'");
$r = oauth_psql($node,
	"SELECT oauth.valid_token('ws1', '$wait', interval '1 minute');");
is($r->{ret}, 0, 'wait: valid_token succeeded') or diag($r->{err});
is($r->{out}, 'at-gwait-1', 'wait: it returned the new token');
cmp_ok($r->{elapsed}, '>=', 1.9, 'wait: it waited for the provider (2 s latency)');
is($p->stats->{by_grant}{gwait}, 1, 'wait: one provider request');

$node->stop;
$p->stop;
done_testing();
