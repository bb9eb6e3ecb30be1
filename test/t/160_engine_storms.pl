# Refresh engine v2, part 1 (issue 8): the job state model seen from SQL,
# no refresh storm, token_rejected's promise in every path.
#
# - tokens of 30 s and the default min_validity (1 minute): 20 valid_token
#   calls in a row cost one provider request; 30 concurrent token_rejected
#   of the same token, one request; 30 concurrent valid_token after it, none;
# - a rejected token is never served again: when the rejection joins a
#   refresh in flight that then fails, a refresh queued behind its
#   provider's limit, or when the provider is paused;
# - oauth.refresh_jobs() shows the jobs and their state.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
my $node = oauth_node('storms', conf => "max_connections = 100\n");
oauth_register($node, 'p1', $p->token_url);
sub sql { return $node->safe_psql('postgres', $_[0]) }
sub grant_count { return $p->stats->{by_grant}{ $_[0] } // 0 }

# --- 1. tokens shorter than min_validity: one refresh, not one per call -------
$p->set_grant('st', expires_in => 30);
my $st = oauth_create_conn($node, 'ws1', 'p1', 'acct-st', 'at-st-0', 'st.0',
	"now() - interval '1 minute'");
my @tok = map { sql("SELECT oauth.valid_token('ws1', '$st')") } 1 .. 20;
is_deeply([ grep { $_ ne 'at-st-1' } @tok ], [],
	'20 valid_token calls in a row all got the first refreshed token');
is(grant_count('st'), 1,
	'tokens of 30 s, min_validity 1 minute: 20 calls made exactly 1 provider request');
is(sql("SELECT oauth.valid_token('ws1', '$st', interval '1 day')"), 'at-st-1',
	'a min_validity beyond the token lifetime gets the newest token');
is(grant_count('st'), 1, '... without another request');

# --- 2. 30 concurrent token_rejected of the same token: one refresh -----------
$p->set_grant('st', expires_in => 30, latency_ms => 300);
my @s = map { oauth_session($node) } 1 .. 30;
$_->send("SELECT oauth.token_rejected('ws1', '$st', 'at-st-1')") for @s;
my @r = map { $_->wait(60) } @s;
is(scalar(grep { $_->{done} && $_->{err} eq '' } @r), 30,
	'30 concurrent token_rejected calls returned without error')
  or diag(join("\n", map { $_->{err} } grep { $_->{err} ne '' } @r));
is(grant_count('st'), 2, '30 concurrent token_rejected: exactly 1 more provider request');
is(oauth_event_count($node, $st, 'token_rejected'), 1, 'one token_rejected event');

$_->send("SELECT oauth.valid_token('ws1', '$st')") for @s;
@r = map { $_->wait(60) } @s;
is(scalar(grep { $_->{out} eq 'at-st-2' } @r), 30,
	'30 concurrent valid_token calls after it got the new token');
is(grant_count('st'), 2, '... with no further provider request');
$_->quit for @s;

# --- 3. token_rejected joins a refresh in flight that then fails --------------
# The token is inside its refresh window (served, refreshed in background);
# the background refresh is slow and fails.  The rejection joins it while it
# is being sent: the refused token must not be served even so.
$p->set_grant('fl', mode => '503', latency_ms => 2000);
my $fl = oauth_create_conn($node, 'ws1', 'p1', 'acct-fl', 'at-fl-0', 'fl.0',
	"now() + interval '3 minutes'");
is(sql("SELECT oauth.valid_token('ws1', '$fl')"), 'at-fl-0',
	'in flight: the token inside its refresh window is served (refresh started)');
ok( oauth_poll(10, 0.05, sub {
		sql("SELECT state FROM oauth.refresh_jobs() WHERE connection_id = '$fl'") eq 'sending';
	}),
	'in flight: oauth.refresh_jobs() shows the background job sending');
is(sql("SELECT requested_by || ',' || forced || ',' || token_rejected
          FROM oauth.refresh_jobs() WHERE connection_id = '$fl'"),
	'caller,false,false', 'in flight: requested by a caller, not forced, no rejection yet');
my $rej = oauth_session($node);
$rej->send("SELECT oauth.token_rejected('ws1', '$fl', 'at-fl-0')");
ok( oauth_poll(10, 0.05, sub {
		sql("SELECT token_rejected FROM oauth.refresh_jobs() WHERE connection_id = '$fl'") eq 't';
	}),
	'in flight: the rejection joined the job in flight');
my $w = $rej->wait(30);
is($w->{err}, '', 'in flight: token_rejected returned');
my $v = oauth_psql($node, "SELECT oauth.valid_token('ws1', '$fl')");
isnt($v->{out}, 'at-fl-0', 'in flight: the refused token is not served after the refresh failed');
is($v->{sqlstate}, 'OA003', '... the caller hears OA003 (no valid token, next attempt)');
is(grant_count('fl'), 1, 'in flight: one provider request for the rejection and the refresh');
$rej->quit;

# --- 4. token_rejected joins a refresh queued behind its provider's limit ---
# Provider p2 allows one call at a time; a slow refresh of another
# connection holds it.  The rejected connection's background refresh waits
# in the queue; the rejection joins it there.  Meanwhile nobody gets the
# refused token.
oauth_register($node, 'p2', $p->token_url, ", max_concurrency => 1");
$p->set_grant('busy', latency_ms => 5000);
$p->set_grant('qd', latency_ms => 0);
my $busy = oauth_create_conn($node, 'ws1', 'p2', 'acct-busy', 'at-busy-0', 'busy.0',
	"now() - interval '1 minute'");
my $qd = oauth_create_conn($node, 'ws1', 'p2', 'acct-qd', 'at-qd-0', 'qd.0',
	"now() + interval '3 minutes'");
my $b = oauth_session($node);
$b->send("SELECT oauth.valid_token('ws1', '$busy')");
ok( oauth_poll(10, 0.05, sub { grant_count('busy') == 1 }),
	'queued: the provider is busy with a slow call');
is(sql("SELECT oauth.valid_token('ws1', '$qd')"), 'at-qd-0',
	'queued: the token inside its refresh window is served (refresh queued)');
ok( oauth_poll(10, 0.05, sub {
		sql("SELECT state FROM oauth.refresh_jobs() WHERE connection_id = '$qd'") eq 'queued';
	}),
	'queued: oauth.refresh_jobs() shows its refresh queued');
$rej = oauth_session($node);
$rej->send("SELECT oauth.token_rejected('ws1', '$qd', 'at-qd-0')");
ok( oauth_poll(10, 0.05, sub {
		sql("SELECT token_rejected FROM oauth.refresh_jobs() WHERE connection_id = '$qd'") eq 't';
	}),
	'queued: the rejection joined the queued job');
ok( oauth_poll(10, 0.05, sub { oauth_event_count($node, $qd, 'token_rejected') == 1 }),
	'queued: the refused token is marked at once (event), while the job still waits');
is(sql("SELECT state FROM oauth.refresh_jobs() WHERE connection_id = '$qd'"), 'queued',
	'queued: ... and the job is still queued');
$v = oauth_psql($node, "SET statement_timeout = '300ms'; SELECT oauth.valid_token('ws1', '$qd')");
isnt($v->{out}, 'at-qd-0', 'queued: another caller is not served the refused token meanwhile');
$w = $rej->wait(30);
is($w->{err}, '', 'queued: token_rejected returned once the refresh ran');
is(sql("SELECT oauth.valid_token('ws1', '$qd')"), 'at-qd-1', 'queued: the new token is served');
is(grant_count('qd'), 1, 'queued: one provider request');
$b->wait(30);
$b->quit;
$rej->quit;

# --- 5. token_rejected while the provider is paused ------------------------
oauth_register($node, 'p3', $p->token_url);
my $pz = oauth_create_conn($node, 'ws1', 'p3', 'acct-pz', 'at-pz-0', 'pz.0',
	"now() + interval '1 hour'");
sql("UPDATE oauth.providers SET paused_at = now(), pause_reason = 'invalid_client (test)' WHERE name = 'p3'");
is(sql("SELECT oauth.valid_token('ws1', '$pz')"), 'at-pz-0', 'paused: a fresh token is still served');
sql("SELECT oauth.token_rejected('ws1', '$pz', 'at-pz-0')");
$v = oauth_psql($node, "SELECT oauth.valid_token('ws1', '$pz')");
isnt($v->{out}, 'at-pz-0', 'paused: the refused token is not served again');
is($v->{sqlstate}, 'OA004', '... the caller hears that the provider is misconfigured');
is(grant_count('pz'), 0, 'paused: no provider request');

# --- 6. the worker says what it does, in pg_stat_activity -------------------------
ok( oauth_poll(10, 0.1, sub {
		sql("SELECT query FROM pg_stat_activity WHERE backend_type = 'oauth_tokens worker'")
		  =~ /^oauth_tokens: \d+ sending \(\d+ sweep\), \d+ queued for callers, \d+ queued by sweeps/;
	}),
	"the worker's pg_stat_activity shows its jobs by state");

$node->stop;
$p->stop;
done_testing();
