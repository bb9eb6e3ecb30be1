# The worker dies while refreshes wait on a hanging provider.
#  - SIGKILL: the server restarts after the crash, the worker comes back,
#    the waiting session ends (error or token, never a hang), and nothing
#    is lost: in strict mode the provider still accepts the stored refresh
#    token.
#  - SIGTERM: the worker exits at once, the waiting session gets OA006.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $p = OAuthProvider->new;
# The hang outlasts the test: the provider never answers these requests
# (an answer after the client left would rotate the refresh token).
$p->set_grant('gk', mode => 'hang', hang_seconds => 120, rotate => 1, strict => 1);
$p->set_grant('gt', mode => 'hang', hang_seconds => 120, rotate => 1, strict => 1);

my $node = oauth_node('crash',
	http_timeout => '30s',
	conf => "restart_after_crash = on\n");
oauth_register($node, 'p1', $p->token_url);
my $exp = "now() - interval '1 minute'";
my $ck = oauth_create_conn($node, 'ws1', 'p1', 'k', 'at-k', 'gk.0', $exp);
my $ct = oauth_create_conn($node, 'ws1', 'p1', 't', 'at-t', 'gt.0', $exp);

sub grant_count { return $p->stats->{by_grant}{ $_[0] } // 0 }

# ---- SIGKILL ----------------------------------------------------------------------
{
	my $w1 = oauth_wait_worker($node);
	my $s = oauth_session($node);
	$s->send("SELECT oauth.valid_token('ws1', '$ck')");
	ok(oauth_poll(30, 0.05, sub { grant_count('gk') == 1 }),
		'SIGKILL: the refresh is in flight at the provider');

	ok(kill('KILL', $w1), "SIGKILL sent to the worker ($w1)");

	my $r = $s->wait(60);
	ok($r->{done} || $r->{exited}, 'SIGKILL: the waiting session did not hang');
	ok($r->{err} ne '' || $r->{out} =~ /^at-/,
		'SIGKILL: it got an error or a token');
	note("waiting session after SIGKILL: out=[$r->{out}] err=[$r->{err}]");
	$s->kill;

	my $w2 = oauth_wait_worker($node, $w1, 60);
	ok($w2 && $w2 != $w1, "SIGKILL: the server recovered and the worker is back ($w2)");

	$p->set_grant('gk', mode => 'ok');
	is($node->safe_psql('postgres', "SELECT oauth.valid_token('ws1', '$ck')"),
		'at-gk-1', 'SIGKILL: valid_token succeeds afterwards');
	is($p->stats->{by_refresh_token}{'gk.0'},
		2, 'SIGKILL: the stored refresh token was still gk.0, and accepted');
	is($node->safe_psql('postgres', "SELECT oauth.refresh('ws1', '$ck')"),
		'refreshed', 'SIGKILL: the rotated refresh token gk.1 was stored');
	is($p->grant_info('gk')->{current_refresh_token}, 'gk.2',
		'SIGKILL: the provider rotated twice, nothing lost');
	is(oauth_status($node, $ck)->{state}, 'active', 'SIGKILL: connection active');
}

# ---- SIGTERM ----------------------------------------------------------------------
{
	my $w = oauth_wait_worker($node);
	my $s = oauth_session($node);
	$s->send("SELECT oauth.valid_token('ws1', '$ct')");
	ok(oauth_poll(30, 0.05, sub { grant_count('gt') == 1 }),
		'SIGTERM: the refresh is in flight at the provider');
	ok(!$s->done, 'SIGTERM: its caller waits');

	my $t0 = time();
	ok(kill('TERM', $w), "SIGTERM sent to the worker ($w)");
	# kill 0 works on the server's processes: the tests run as its user
	ok(oauth_poll(10, 0.01, sub { !kill(0, $w) }), 'SIGTERM: the worker exited');
	my $took = time() - $t0;
	cmp_ok($took, '<', 1.5, sprintf('SIGTERM: it exited within a second (%.2f s)', $took));

	my $r = $s->wait(10);
	ok($r->{done}, 'SIGTERM: the waiting session returned');
	is($r->{sqlstate}, 'OA006', 'SIGTERM: with OA006 (refresh service unavailable)')
	  or diag("out=[$r->{out}] err=[$r->{err}]");
	cmp_ok(time() - $t0, '<', 5, 'SIGTERM: soon after the worker left');
	$s->quit;

	# The postmaster starts it again (bgw_restart_time = 5 s).
	my $w2 = eval { oauth_wait_worker($node, $w, 30) };
	ok($w2, 'SIGTERM: the worker is restarted');
	SKIP:
	{
		skip 'no worker', 2 unless $w2;
		$p->set_grant('gt', mode => 'ok');
		is($node->safe_psql('postgres', "SELECT oauth.valid_token('ws1', '$ct')"),
			'at-gt-1', 'SIGTERM: refreshes work again with the new worker');
		is($p->stats->{by_refresh_token}{'gt.0'}, 2,
			'SIGTERM: with the stored refresh token');
	}
}

$node->stop;
$p->stop;
done_testing();
