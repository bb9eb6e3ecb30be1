# No answer thrown away (issue 8, deliverable 4): an answer with tokens is
# recorded in oauth.pending_answers before it is applied, so a locked row, a
# failed write, the worker's exit and a restart never lose it.  The worker's
# transactions are READ COMMITTED whatever the server's default.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
my $node = oauth_node('answers_kept',
	conf => "default_transaction_isolation = 'serializable'\n");
oauth_register($node, 'p1', $p->token_url);

sub q1 { return $node->safe_psql('postgres', $_[0]) }
sub pending { return q1("SELECT count(*) FROM oauth.pending_answers WHERE connection_id = '$_[0]'") }
my $exp = "now() - interval '1 minute'";

# A rotated answer meets a row held by another session; the worker is then
# killed, or the server restarted.  The answer is applied once the row is free.
for my $how ('terminate', 'restart')
{
	my $g = "g$how";
	$p->set_grant($g, rotate => 1, strict => 1);
	my $id = oauth_create_conn($node, 'ws1', 'p1', $how, 'at-old', "$g.0", $exp);
	my $holder = oauth_session($node);
	$holder->query("BEGIN; SELECT 1 FROM oauth.connections WHERE id = '$id' FOR UPDATE");
	my $r = oauth_psql($node, "SELECT oauth.refresh('ws1', '$id')");
	like($r->{out}, qr/transient_failure: .*locked/, "$how: the caller hears the row is locked")
	  or diag($r->{out} . $r->{err});
	is($p->grant_info($g)->{current_refresh_token}, "$g.1", "$how: the provider rotated");
	is(pending($id), 1, "$how: the answer is recorded");
	unlike(q1("SELECT encode(answer_ciphertext, 'escape') FROM oauth.pending_answers "
			  . "WHERE connection_id = '$id'"), qr/at-$g|$g\.1/, "$how: recorded as ciphertext only");

	if ($how eq 'terminate')
	{
		my $pid = oauth_worker_pid($node);
		q1("SELECT pg_terminate_backend($pid)");
		oauth_wait_worker($node, $pid);
		# the new worker replays it, and meets the lock again
		is(pending($id), 1, 'terminate: still recorded after the worker exited');
		$holder->query('COMMIT');
	}
	else
	{
		$holder->kill;
		$node->restart;
		oauth_wait_worker($node);
	}
	$holder->quit;
	ok(oauth_poll(30, 0.1, sub { pending($id) == 0 }), "$how: the recorded answer was applied");
	is(q1("SELECT oauth.valid_token('ws1', '$id')"), "at-$g-1", "$how: its token is served");
	is(oauth_psql($node, "SELECT oauth.refresh('ws1', '$id')")->{out}, 'refreshed',
		"$how: the rotated refresh token was kept (the strict provider accepts it)");
	is(oauth_status($node, $id)->{state}, 'active', "$how: the connection is active");
}

# A write that fails (a trigger raising an error) keeps the answer until it works.
{
	q1(q{CREATE TABLE public.fail_writes (on_ boolean);
		INSERT INTO public.fail_writes VALUES (true);
		CREATE FUNCTION public.fail_writes_trg() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF (SELECT on_ FROM public.fail_writes) AND NEW.access_token_ciphertext IS DISTINCT FROM OLD.access_token_ciphertext THEN
				RAISE EXCEPTION 'writes are failing';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER fail_writes BEFORE UPDATE ON oauth.connections
			FOR EACH ROW EXECUTE FUNCTION public.fail_writes_trg();});
	$p->set_grant('gfail', rotate => 1, strict => 1);
	my $id = oauth_create_conn($node, 'ws1', 'p1', 'fail', 'at-old', 'gfail.0', $exp);
	my $r = oauth_psql($node, "SELECT oauth.refresh('ws1', '$id')");
	like($r->{out}, qr/transient_failure: .*writes are failing/, 'failed write: the caller hears why')
	  or diag($r->{out} . $r->{err});
	is(pending($id), 1, 'failed write: the answer is recorded');
	$r = oauth_psql($node, "SELECT oauth.refresh('ws1', '$id')");
	is($p->grant_info('gfail')->{requests}, 1, 'failed write: no new request while it is kept');
	q1('UPDATE public.fail_writes SET on_ = false');
	ok(oauth_poll(30, 0.1, sub { pending($id) == 0 }), 'failed write: applied once writes work');
	is(q1("SELECT oauth.valid_token('ws1', '$id')"), 'at-gfail-1', 'failed write: its token is served');
	is(oauth_psql($node, "SELECT oauth.refresh('ws1', '$id')")->{out}, 'refreshed',
		'failed write: the rotated refresh token was kept');
	q1('DROP TRIGGER fail_writes ON oauth.connections');
}

# The window that remains: answer received -> recorded (events' durable_us).
{
	my $us = q1("SELECT max((detail->>'durable_us')::bigint) FROM oauth.events WHERE event = 'refreshed'");
	cmp_ok($us, '>', 0, "the refreshed events carry the durable window ($us us)");
}

# The worker's updates reach pg_stat_user_tables (autovacuum sees them).
ok( oauth_poll(20, 0.2,
		sub { q1("SELECT n_tup_upd FROM pg_stat_user_tables WHERE relid = 'oauth.connections'::regclass") > 0 }),
	'the worker\'s row updates appear in pg_stat_user_tables');

$node->stop;
done_testing();
