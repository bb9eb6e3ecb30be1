# Callers first (issue 8): 200 connections due on a slow provider (1.5 s a
# call) with oauth.max_concurrent_refreshes = 4.  A caller of another,
# healthy provider whose expired connection the sweep queued behind that
# backlog is answered at once: its request promotes the sweep's job, and
# sweeps never hold the last slot.  A caller of the slow provider is
# answered after about one call, not after the backlog.  Asserted on the
# provider's request counts, not on timings.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $N = 200;
my $p = OAuthProvider->new;
$p->set_default(latency_ms => 1500);
$p->set_grant('fast', latency_ms => 0);

my $node = oauth_node('callers_first', sweep_interval => '1s',
	http_timeout => '20s',
	conf => "oauth.max_concurrent_refreshes = 4\n");
sub sql { return $node->safe_psql('postgres', $_[0]) }
oauth_register($node, 'slow', $p->token_url);
oauth_register($node, 'fast', $p->token_url);
sub slow_requests { my $s = $p->stats; return ($s->{total} // 0) - ($s->{by_grant}{fast} // 0) }

# One workspace, so the fair order puts the two callers' connections last.
sql("SELECT oauth.create_connection('wsb', 'slow', 'acct-' || i, 'at-s' || i || '-0', 's' || i || '.0',
                                    now() - interval '1 hour' + i * interval '1 second')
       FROM generate_series(1, $N) i");
my $slow_last = sql("SELECT id FROM oauth.connections WHERE provider_account_id = 'acct-$N'");
my $fast = oauth_create_conn($node, 'wsb', 'fast', 'acct-fast', 'at-fast-0', 'fast.0',
	"now() - interval '1 minute'");

ok( oauth_poll(30, 0.1, sub {
		sql("SELECT requested_by || '/' || state FROM oauth.refresh_jobs()
		      WHERE connection_id = '$fast'") eq 'sweep/queued';
	}),
	"the sweep queued the other provider's expired connection behind the backlog");
ok( oauth_poll(30, 0.1, sub { slow_requests() >= 3 }), 'the backlog is being worked through');
ok( oauth_poll(10, 0.05, sub {
		sql("SELECT count(*) FROM oauth.refresh_jobs() WHERE state = 'sending'") == 3;
	}),
	'sweep work holds 3 of the 4 slots');
cmp_ok(sql("SELECT count(*) FROM oauth.refresh_jobs() WHERE state = 'sending'"), '<=', 3,
	'... never the fourth');

my $r = oauth_psql($node, "SELECT oauth.valid_token('wsb', '$fast')");
my $done_then = slow_requests();
is($r->{out}, 'at-fast-1', 'the caller of the healthy provider got its new token')
  or diag($r->{err});
cmp_ok($done_then, '<', 40,
	"... while the slow provider's backlog was far from drained ($done_then of $N requests)");
is(sql("SELECT detail->>'trigger' FROM oauth.events WHERE connection_id = '$fast' AND event = 'refreshed'"),
	'caller', "the sweep's job was promoted to the caller's");

is(sql("SELECT requested_by || '/' || state FROM oauth.refresh_jobs() WHERE connection_id = '$slow_last'"),
	'sweep/queued', "the slow provider's last due connection is still queued by the sweep");
$r = oauth_psql($node, "SELECT oauth.valid_token('wsb', '$slow_last')");
$done_then = slow_requests();
is($r->{out}, "at-s$N-1", 'the caller of the slow provider got its new token') or diag($r->{err});
cmp_ok($done_then, '<', 60,
	"... after about one call, not after the backlog ($done_then of $N requests)");
is($p->stats->{by_grant}{"s$N"}, 1, '... with one request for its connection');

$node->stop('immediate');
$p->stop;
done_testing();
