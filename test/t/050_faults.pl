# Failure classes (SPEC 5): transient failures keep serving a still-valid
# token and back off; invalid_grant and a provider's reauth_errors mark the
# connection for re-authorization; invalid_client pauses the provider.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
# answer_timeout = http_timeout: the hang below is a request that never gets
# an answer (test/t/240_lost_answers.pl covers answers after http_timeout)
my $node = oauth_node('faults', http_timeout => '1s',
	conf => "oauth.answer_timeout = '1s'\n");
oauth_register($node, 'p1', $p->token_url);
oauth_register($node, 'pdead',
	'http://127.0.0.1:' . oauth_closed_port() . '/token');

sub grant_count { return $p->stats->{by_grant}{ $_[0] } // 0 }

# ---- transient failures -------------------------------------------------------
my @faults = (
	# name, provider, behaviour, expected last_refresh_error
	[ '503', 'p1', { mode => '503' }, qr/HTTP 503/ ],
	[ '429', 'p1', { mode => '429', retry_after => 30 }, qr/429/ ],
	[ 'hang', 'p1', { mode => 'hang', hang_seconds => 5 }, qr/timeout/i ],
	[ 'garbage', 'p1', { mode => 'garbage' }, qr/neither JSON nor a form/ ],
	[ 'noat', 'p1', { mode => 'no_access_token' }, qr/without access_token/ ],
	[ 'refused', 'pdead', undef, qr/connection error/ ],
);

for my $f (@faults)
{
	my ($name, $prov, $beh, $errre) = @$f;
	my ($gv, $gx) = ("g${name}v", "g${name}x");
	if ($beh)
	{
		$p->set_grant($gv, %$beh);
		$p->set_grant($gx, %$beh);
	}

	# still valid for 30 s, but the caller wants 1 minute
	my $v = oauth_create_conn($node, 'ws1', $prov, "$name-v", "at-old-$name",
		"$gv.0", "now() + interval '30 seconds'");
	my $r = oauth_psql($node,
		"SELECT oauth.valid_token('ws1', '$v', interval '1 minute')");
	is($r->{ret}, 0, "$name: valid_token succeeded") or diag($r->{err});
	is($r->{out}, "at-old-$name", "$name: it returned the still-valid old token");
	is(grant_count($gv), 1, "$name: the provider was asked once") if $beh;
	my $st = oauth_status($node, $v);
	is($st->{state}, 'active', "$name: connection stays active");
	is($st->{failure_count}, 1, "$name: failure_count = 1");
	ok(defined $st->{next_in_s} && $st->{next_in_s} > 0,
		"$name: next_attempt_at is in the future")
	  or diag("next_in_s: " . ($st->{next_in_s} // 'NULL'));
	like($st->{last_refresh_error} // '', $errre, "$name: last_refresh_error");
	if ($name eq '429')
	{
		cmp_ok($st->{next_in_s}, '>=', 27,
			'429: next attempt honours Retry-After: 30');
		cmp_ok($st->{next_in_s}, '<=', 31, '429: and is not much later');
	}
	is(oauth_event_count($node, $v, 'refresh_failed'), 1,
		"$name: refresh_failed event");

	# backing off: the second call serves the token without a provider call
	$r = oauth_psql($node,
		"SELECT oauth.valid_token('ws1', '$v', interval '1 minute')");
	is($r->{out}, "at-old-$name", "$name: second call served the old token");
	is(grant_count($gv), 1, "$name: second call did not reach the provider") if $beh;
	is(oauth_status($node, $v)->{failure_count}, 1, "$name: no second failure");
	is(oauth_event_count($node, $v, 'refresh_failed'), 1,
		"$name: still one refresh_failed event");

	# expired: no valid token now
	my $x = oauth_create_conn($node, 'ws1', $prov, "$name-x", "at-exp-$name",
		"$gx.0", "now() - interval '1 minute'");
	$r = oauth_psql($node, "SELECT oauth.valid_token('ws1', '$x')");
	is($r->{sqlstate}, 'OA003', "$name: expired token gives OA003")
	  or diag($r->{err});
	like($r->{err}, qr/next attempt at/, "$name: the detail says when the next attempt is");
	$st = oauth_status($node, $x);
	is($st->{state}, 'active', "$name: expired connection stays active");
	is($st->{failure_count}, 1, "$name: expired connection failure_count = 1");
	$r = oauth_psql($node, "SELECT oauth.valid_token('ws1', '$x')");
	is($r->{sqlstate}, 'OA003', "$name: OA003 again while backing off");
	is(grant_count($gx), 1, "$name: without another provider call") if $beh;
}

# ---- invalid_grant -----------------------------------------------------------------
{
	$p->set_grant('gig', mode => 'invalid_grant');
	my $id = oauth_create_conn($node, 'ws1', 'p1', 'ig', 'at-ig', 'gig.0',
		"now() - interval '1 minute'");
	my $listener = oauth_session($node);
	$listener->query('LISTEN oauth_connection_state');

	my $r = oauth_psql($node, "SELECT oauth.valid_token('ws1', '$id')");
	is($r->{sqlstate}, 'OA002', 'invalid_grant: OA002') or diag($r->{err});
	like($r->{err}, qr/DETAIL:.*invalid_grant/, 'invalid_grant: the detail names the error');
	my $st = oauth_status($node, $id);
	is($st->{state}, 'reauth_required', 'invalid_grant: state reauth_required');
	is(oauth_event_count($node, $id, 'reauth_required'), 1,
		'invalid_grant: reauth_required event');

	my $seen = '';
	ok( oauth_poll(
			20, 0.1,
			sub {
				$seen .= $listener->query('SELECT 1')->{out};
				return $seen =~ /Asynchronous notification "oauth_connection_state"/;
			}),
		'invalid_grant: a notification arrived on oauth_connection_state');
	# the payload is the event's id; oauth.connection_event() resolves it
	my ($ev) = $seen =~ /payload "(\d+)"/;
	ok(defined $ev, 'invalid_grant: the payload is an event id');
	is($node->safe_psql('postgres',
			"SELECT state || ' ' || connection_id || ' ' || error FROM oauth.connection_event($ev)"),
		"reauth_required $id invalid_grant", 'invalid_grant: it resolves to reauth_required of the connection');
	$listener->quit;

	$r = oauth_psql($node, "SELECT oauth.valid_token('ws1', '$id')");
	is($r->{sqlstate}, 'OA002', 'invalid_grant: OA002 again');
	$r = oauth_psql($node, "SELECT oauth.refresh('ws1', '$id')");
	is($r->{out}, 'reauth_required', 'invalid_grant: a forced refresh reports reauth_required');
	is(grant_count('gig'), 1, 'invalid_grant: no further provider calls');
	is($node->safe_psql('postgres',
		"SELECT count(*) FROM oauth._due_connections(1000) WHERE id = '$id'"),
		0, 'invalid_grant: the connection is no longer due for sweeps');

	# reauthorize brings it back
	$p->set_grant('gig2', mode => 'ok');
	$node->safe_psql('postgres',
		"SELECT oauth.reauthorize('ws1', '$id', 'at-ig-new', 'gig2.0', now() - interval '1 minute')");
	is($node->safe_psql('postgres', "SELECT oauth.valid_token('ws1', '$id')"),
		'at-gig2-1', 'invalid_grant: after reauthorize, refreshes work again');
}

# ---- Slack: error in a 200 body, with the provider's reauth_errors ---------
{
	oauth_register($node, 'pslack', $p->token_url,
		", reauth_errors => '{invalid_refresh_token}'");
	$p->set_grant('gslack', mode => 'error200');
	my $id = oauth_create_conn($node, 'ws1', 'pslack', 'slack', 'at-slack',
		'gslack.0', "now() - interval '1 minute'");
	my $r = oauth_psql($node, "SELECT oauth.valid_token('ws1', '$id')");
	is($r->{sqlstate}, 'OA002', 'error200 + reauth_errors: OA002') or diag($r->{err});
	is(oauth_status($node, $id)->{state}, 'reauth_required',
		'error200 + reauth_errors: state reauth_required');
	is(oauth_event_count($node, $id, 'reauth_required'), 1,
		'error200 + reauth_errors: reauth_required event');

	# the same answer from a provider that does not list the code: transient
	$p->set_grant('gslack2', mode => 'error200');
	$id = oauth_create_conn($node, 'ws1', 'p1', 'slack2', 'at-slack2',
		'gslack2.0', "now() - interval '1 minute'");
	$r = oauth_psql($node, "SELECT oauth.valid_token('ws1', '$id')");
	is($r->{sqlstate}, 'OA003', 'error200 without reauth_errors: transient (OA003)')
	  or diag($r->{err});
	is(oauth_status($node, $id)->{state}, 'active', 'error200 without reauth_errors: still active');
}

# ---- invalid_client: the provider pauses, no connection is marked ------------
{
	oauth_register($node, 'pbad', $p->token_url);
	$p->set_grant('gic', mode => 'invalid_client');
	my $id = oauth_create_conn($node, 'ws1', 'pbad', 'ic', 'at-ic', 'gic.0',
		"now() - interval '1 minute'");
	my $id2 = oauth_create_conn($node, 'ws1', 'pbad', 'ic2', 'at-ic2', 'gic2.0',
		"now() - interval '1 minute'");
	my $r = oauth_psql($node, "SELECT oauth.valid_token('ws1', '$id')");
	is($r->{sqlstate}, 'OA004', 'invalid_client: OA004') or diag($r->{err});
	like($r->{err}, qr/pbad/, 'invalid_client: the error names the provider');
	my $st = oauth_status($node, $id);
	is($st->{state}, 'active', 'invalid_client: the connection is not marked');
	ok(!defined $st->{reauth_required_at}, 'invalid_client: no reauth_required_at');
	is($node->safe_psql('postgres',
		"SELECT paused_at IS NOT NULL FROM oauth.providers WHERE name = 'pbad'"),
		't', 'invalid_client: provider paused');
	is($node->safe_psql('postgres',
		"SELECT paused_at IS NULL FROM oauth.providers WHERE name = 'p1'"),
		't', 'invalid_client: other providers are not paused');

	# paused: another connection of the provider does not reach it
	$r = oauth_psql($node, "SELECT oauth.valid_token('ws1', '$id2')");
	is($r->{sqlstate}, 'OA004', 'paused provider: OA004 for its other connections');
	is(grant_count('gic2'), 0, 'paused provider: no provider call');
	is(grant_count('gic'), 1, 'paused provider: one call in all');

	# fixing the registration resumes it
	oauth_register($node, 'pbad', $p->token_url);
	is($node->safe_psql('postgres',
		"SELECT paused_at IS NULL FROM oauth.providers WHERE name = 'pbad'"),
		't', 'register_provider un-pauses the provider');
	is($node->safe_psql('postgres', "SELECT oauth.valid_token('ws1', '$id2')"),
		'at-gic2-1', 'after un-pausing, refreshes work');
}

$node->stop;
$p->stop;
done_testing();
