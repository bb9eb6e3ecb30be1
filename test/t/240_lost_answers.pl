# Lost answers (issue 8, deliverable 5): a request that was sent and not
# answered may have spent the refresh token.  The worker keeps it open up to
# oauth.answer_timeout (callers stop waiting after oauth.http_timeout), and
# when no answer comes it retries at once inside the provider's rotation
# grace window; a dead grant after a lost answer is reported as lost.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
# A second endpoint for the strict provider: libcurl re-sends a request by
# itself when a *reused* connection gives nothing back (the worker counts
# that as the retry of a lost answer); a fresh connection shows our own rule.
my $p2 = OAuthProvider->new;
my $node = oauth_node('lost_answers', http_timeout => '1s',
	conf => "oauth.answer_timeout = '20s'\n");
# the same endpoint, registered with and without a grace window
oauth_register($node, 'pgrace', $p->token_url, ", rotation_grace => '1 minute'");
oauth_register($node, 'pstrict', $p2->token_url, ", rotation_grace => '0'");

sub requests { return $p->grant_info($_[0])->{requests} + $p2->grant_info($_[0])->{requests} }
sub q1 { return $node->safe_psql('postgres', $_[0]) }
my $exp = "now() - interval '1 minute'";

# ---- 1. dropped answer, inside the grace window: the at-once retry recovers
{
	$p->set_grant('g1', rotate => 1, strict => 1, grace_seconds => 60,
		mode => 'drop', mode_times => 1);
	my $id = oauth_create_conn($node, 'ws1', 'pgrace', 'a1', 'at-old-1', 'g1.0', $exp);
	my $r = oauth_psql($node, "SELECT oauth.refresh('ws1', '$id')");
	is($r->{out}, 'refreshed', 'grace: the refresh recovered from the dropped answer')
	  or diag($r->{err});
	is(requests('g1'), 2, 'grace: the provider saw the request and one retry');
	is(q1("SELECT oauth.valid_token('ws1', '$id')"), 'at-g1-2', 'grace: the new token is served');
	is(q1("SELECT detail->>'recovered' FROM oauth.events WHERE connection_id = '$id' "
		  . "AND event = 'refreshed'"), 'answer_lost', 'grace: the event says it recovered a lost answer');
	# the stored refresh token is the provider's current one
	is(oauth_psql($node, "SELECT oauth.refresh('ws1', '$id')")->{out}, 'refreshed',
		'grace: the next refresh works with the stored refresh token');
	is($p->grant_info('g1')->{current_refresh_token}, 'g1.3', 'grace: provider rotated once more');
}

# ---- 2. dropped answer, the retry gets invalid_grant: answer_lost
{
	$p->set_grant('g2', rotate => 1, strict => 1, mode => 'drop', mode_times => 1);
	my $id = oauth_create_conn($node, 'ws1', 'pgrace', 'a2', 'at-old-2', 'g2.0', $exp);
	my $r = oauth_psql($node, "SELECT oauth.refresh('ws1', '$id')");
	like($r->{out}, qr/reauth_required/, 'lost, retry refused: reauth_required') or diag($r->{err});
	is(requests('g2'), 2, 'lost, retry refused: one retry');
	my $st = oauth_status($node, $id);
	is($st->{state}, 'reauth_required', 'lost, retry refused: state');
	is($st->{last_refresh_error}, 'answer_lost: invalid_grant',
		'lost, retry refused: last_refresh_error says the answer was lost');
	is(q1("SELECT detail->>'reason' FROM oauth.events WHERE connection_id = '$id' "
		  . "AND event = 'reauth_required'"), 'answer_lost', 'lost, retry refused: event reason');
	$r = oauth_psql($node, "SELECT oauth.valid_token('ws1', '$id')");
	is($r->{sqlstate}, 'OA002', 'lost, retry refused: OA002');
	like($r->{err}, qr/answer_lost: invalid_grant/, 'lost, retry refused: the error detail says so');
}

# ---- 3. strict provider (no grace): no retry; the next attempt's invalid_grant is a lost answer
{
	$p2->set_grant('g3', rotate => 1, strict => 1, mode => 'drop', mode_times => 1);
	my $id = oauth_create_conn($node, 'ws1', 'pstrict', 'a3', 'at-old-3', 'g3.0', $exp);
	my $r = oauth_psql($node, "SELECT oauth.refresh('ws1', '$id')");
	like($r->{out}, qr/transient_failure: .*sent, no answer/, 'strict: a transient failure that says no answer came')
	  or diag($r->{out} . $r->{err});
	is(requests('g3'), 1, 'strict: no retry without a grace window');
	like(oauth_status($node, $id)->{last_refresh_error}, qr/^sent, no answer/, 'strict: recorded as such');
	$r = oauth_psql($node, "SELECT oauth.refresh('ws1', '$id')");
	like($r->{out}, qr/reauth_required/, 'strict: the next attempt finds the grant dead');
	is(oauth_status($node, $id)->{last_refresh_error}, 'answer_lost: invalid_grant',
		'strict: reported as a lost answer, not a revoked grant');
}

# ---- 4. a grant revoked for real is still plain invalid_grant
{
	$p->set_grant('g4', mode => 'invalid_grant');
	my $id = oauth_create_conn($node, 'ws1', 'pgrace', 'a4', 'at-old-4', 'g4.0', $exp);
	oauth_psql($node, "SELECT oauth.refresh('ws1', '$id')");
	is(oauth_status($node, $id)->{last_refresh_error}, 'invalid_grant', 'revoked: plain invalid_grant');
}

# ---- 5. the answer comes after http_timeout, having rotated: kept, because the worker waits
{
	$p2->set_grant('g5', rotate => 1, strict => 1, answer_delay_ms => 4000);
	my $id = oauth_create_conn($node, 'ws1', 'pstrict', 'a5', 'at-old-5', 'g5.0', $exp);
	my $r = oauth_psql($node, "SELECT oauth.valid_token('ws1', '$id')");
	is($r->{sqlstate}, 'OA003', 'slow: the caller gets OA003') or diag($r->{err});
	cmp_ok($r->{elapsed}, '<', 3.5, 'slow: after about oauth.http_timeout, not the 4 s answer');
	like($r->{err}, qr/next attempt at/, 'slow: the detail says when the next attempt is');
	# another caller meanwhile: no second request with the same refresh token
	$r = oauth_psql($node, "SELECT oauth.valid_token('ws1', '$id')");
	is($r->{sqlstate}, 'OA003', 'slow: a second caller gets OA003 too');
	is(requests('g5'), 1, 'slow: and sends nothing: one request in flight');
	ok( oauth_poll(20, 0.1,
			sub { q1("SELECT coalesce(last_refresh_error, '') || failure_count FROM oauth.connection_status WHERE id = '$id'") eq '0' }),
		'slow: the late answer was stored');
	is(q1("SELECT oauth.valid_token('ws1', '$id')"), 'at-g5-1', 'slow: its token is served');
	$p2->set_grant('g5', answer_delay_ms => 0);
	is(oauth_psql($node, "SELECT oauth.refresh('ws1', '$id')")->{out}, 'refreshed',
		'slow: its rotated refresh token works');
	is(requests('g5'), 2, 'slow: two requests in all');
}

# ---- 6. not sent (connection refused) is not a lost answer
{
	oauth_register($node, 'pdead', 'http://127.0.0.1:' . oauth_closed_port() . '/token',
		", rotation_grace => '1 minute'");
	my $id = oauth_create_conn($node, 'ws1', 'pdead', 'a6', 'at-old-6', 'g6.0', $exp);
	oauth_psql($node, "SELECT oauth.refresh('ws1', '$id')");
	my $e = oauth_status($node, $id)->{last_refresh_error};
	like($e, qr/connection error/, 'refused: a connection error');
	unlike($e, qr/no answer/, 'refused: not taken for a lost answer');
}

# ---- 7. a dead keep-alive connection: libcurl sends the request again on a
# fresh connection, the provider rotates, and that answer is lost too.  The
# worker retries at once inside the grace window: libcurl's re-send is not
# the worker's at-once retry.
{
	$p->set_grant('g7w');
	my $warm = oauth_create_conn($node, 'ws1', 'pgrace', 'a7w', 'at-old-7w', 'g7w.0', $exp);
	is(oauth_psql($node, "SELECT oauth.refresh('ws1', '$warm')")->{out}, 'refreshed',
		'resent: a keep-alive connection to the provider is open');
	$p->set_grant('g7', rotate => 1, strict => 1, grace_seconds => 60,
		mode => 'resent_drop', mode_times => 1);
	my $id = oauth_create_conn($node, 'ws1', 'pgrace', 'a7', 'at-old-7', 'g7.0', $exp);
	my $r = oauth_psql($node, "SELECT oauth.refresh('ws1', '$id')");
	is($r->{out}, 'refreshed', 'resent: recovered at once from the lost answer to the re-sent request')
	  or diag($r->{out} . $r->{err});
	is(requests('g7'), 3,
		'resent: the dead connection, the re-sent request, the worker\'s retry');
	is(q1("SELECT oauth.valid_token('ws1', '$id')"), 'at-g7-2', 'resent: the new token is served');
	is(oauth_status($node, $id)->{state}, 'active', 'resent: the grant is alive');
	is($p->grant_info('g7')->{current_refresh_token}, 'g7.2', 'resent: the provider rotated twice');
	is(q1("SELECT detail->>'recovered' FROM oauth.events WHERE connection_id = '$id' "
		  . "AND event = 'refreshed'"), 'answer_lost', 'resent: the event says it recovered a lost answer');
}

$node->stop;
done_testing();
