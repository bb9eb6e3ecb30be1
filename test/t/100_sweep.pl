# The worker's own sweep: it refreshes due connections with no application
# call, keeps idle refresh tokens alive (refresh_token_idle_ttl), backs off
# after transient failures, and never touches connections that need
# re-authorization, are revoked, or belong to a paused provider.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $p = OAuthProvider->new;
$p->set_grant('g3', mode => '503');

my $node = oauth_node('sweep', sweep_interval => '1s');

sub sql { return $node->safe_psql('postgres', $_[0]) }
sub grant_count { return $p->stats->{by_grant}{ $_[0] } // 0 }

oauth_register($node, 'p1', $p->token_url, ", refresh_buffer => '5 minutes'");
oauth_register($node, 'p2', $p->token_url,
	", refresh_buffer => '1 minute', refresh_token_idle_ttl => '4 seconds'");
oauth_register($node, 'p3', $p->token_url, ", refresh_buffer => '5 minutes'");

# Connections that must never be swept: each is created and marked in one
# transaction, so the sweep never sees it unmarked.  All are due by time.
my $due = "now() + interval '2 minutes'";
my $id_reauth = sql(
	"BEGIN;
	 SELECT oauth.create_connection('ws4', 'p1', 'acct-reauth', 'at-r', 'g4r.0', $due) AS id \\gset
	 UPDATE oauth.connections SET reauth_required_at = now() WHERE id = :'id';
	 COMMIT;
	 SELECT :'id';");
my $id_revoked = sql(
	"BEGIN;
	 SELECT oauth.create_connection('ws4', 'p1', 'acct-revoked', 'at-v', 'g4v.0', $due) AS id \\gset
	 SELECT FROM oauth.revoke('ws4', :'id');
	 COMMIT;
	 SELECT :'id';");
my $id_paused = sql(
	"BEGIN;
	 UPDATE oauth.providers SET paused_at = now(), pause_reason = 'test' WHERE name = 'p3';
	 SELECT oauth.create_connection('ws4', 'p3', 'acct-paused', 'at-p', 'g4p.0', $due);
	 COMMIT;");
($_) = (split /\n/, $_)[-1] for ($id_reauth, $id_revoked, $id_paused);
like($_, qr/^[0-9a-f-]{36}$/, 'marked connection created')
  for ($id_reauth, $id_revoked, $id_paused);
my $t_marked = sql("SELECT now()");

# (a) a due connection, (b) a keep-alive one, (c) a failing one.
my $id_a = oauth_create_conn($node, 'ws1', 'p1', 'acct1', 'at-initial', 'g1.0', $due);
my $id_b = oauth_create_conn($node, 'ws2', 'p2', 'acct2', 'at-initial', 'g2.0',
	"now() + interval '1 day'");
is( sql(
		"SELECT refresh_after = created_at + interval '3 seconds'
		   FROM oauth.connections WHERE id = '$id_b'"),
	't',
	'(b) refresh_after of an idle connection is created_at + 0.75 x idle ttl');
my $id_c = oauth_create_conn($node, 'ws3', 'p1', 'acct3', 'at-initial', 'g3.0', $due);

# ---- (a) the sweep refreshes a due connection on its own ------------------
ok( $node->poll_query_until('postgres',
		"SELECT refreshed_at IS NOT NULL FROM oauth.connections WHERE id = '$id_a'"),
	'(a) the sweep refreshed the due connection without any application call');
is(grant_count('g1'), 1, '(a) the provider saw exactly one request for the grant');
is( sql(
		"SELECT string_agg(detail->>'trigger', ',') FROM oauth.events
		  WHERE connection_id = '$id_a' AND event = 'refreshed'"),
	'sweep',
	"(a) one 'refreshed' event, with trigger = sweep");
is( sql(
		"SELECT state = 'active' AND failure_count = 0
		        AND expires_at > now() + interval '50 minutes'
		        AND refresh_after = expires_at - interval '5 minutes'
		   FROM oauth.connection_status WHERE id = '$id_a'"),
	't',
	'(a) new expiry stored and the next refresh moved to expires_at - buffer');

# ---- (b) keep-alive: refresh_after = base + 0.75 * idle ttl -----------------
ok( $node->poll_query_until('postgres',
		"SELECT refreshed_at IS NOT NULL FROM oauth.connections WHERE id = '$id_b'"),
	'(b) the sweep refreshed a connection whose token is valid for a day');
my $b_delay = sql(
	"SELECT extract(epoch FROM refreshed_at - created_at)
	   FROM oauth.connections WHERE id = '$id_b'");
cmp_ok($b_delay, '>=', 2.9, '(b) not before refresh_after (created_at + 3 s)');
cmp_ok($b_delay, '<', 6, '(b) within a couple of sweep rounds of refresh_after');
is(sql("SELECT detail->>'trigger' FROM oauth.events WHERE connection_id = '$id_b' AND event = 'refreshed'"),
	'sweep', '(b) the keep-alive refresh came from the sweep');
is( sql(
		"SELECT refresh_after = refreshed_at + interval '3 seconds'
		        AND expires_at > now() + interval '50 minutes'
		   FROM oauth.connections WHERE id = '$id_b'"),
	't',
	'(b) after the refresh, the next keep-alive is 3 s after it');

# ---- (c) back-off after a transient failure --------------------------------
ok( $node->poll_query_until('postgres',
		"SELECT failure_count >= 1 FROM oauth.connections WHERE id = '$id_c'"),
	'(c) the sweep attempted the failing connection');
my ($fc, $next_s, $ra_s, $state, $err) = split /\|/, sql(
	"SELECT c.failure_count,
	        extract(epoch FROM c.next_attempt_at - e.at),
	        extract(epoch FROM c.refresh_after - e.at),
	        s.state, c.last_refresh_error
	   FROM oauth.connections c
	   JOIN oauth.connection_status s USING (id)
	   JOIN oauth.events e ON e.connection_id = c.id AND e.event = 'refresh_failed'
	  WHERE c.id = '$id_c'");
is($fc, 1, '(c) failure_count = 1 after the first failed attempt');
is(grant_count('g3'), 1, '(c) the provider saw one request');
is($state, 'active', '(c) a transient failure keeps the connection active');
like($err, qr/503/, '(c) last_refresh_error names the HTTP status');
note("(c) first back-off: next_attempt_at in $next_s s, refresh_after in $ra_s s");
cmp_ok($next_s, '>=', 2.4, '(c) next_attempt_at is at least 5 s x 0.5 ahead');
cmp_ok($next_s, '<=', 5.2, '(c) next_attempt_at is at most 5 s ahead');
cmp_ok($ra_s, '>=', 2.4, '(c) refresh_after moved into the future too');
is( sql(
		"SELECT refresh_after >= next_attempt_at FROM oauth.connections WHERE id = '$id_c'"),
	't',
	'(c) refresh_after is not before next_attempt_at');
is( sql(
		"SELECT count(*) FROM oauth.events
		  WHERE connection_id = '$id_c' AND event = 'refresh_failed'
		    AND detail->>'class' = 'transient'"),
	1,
	"(c) one 'refresh_failed' event of class transient");

# Just before next_attempt_at: still one request, however many sweeps ran.
ok( $node->poll_query_until('postgres',
		"SELECT now() >= next_attempt_at - interval '300 milliseconds'
		   FROM oauth.connections WHERE id = '$id_c'"),
	'(c) reached the moment just before next_attempt_at');
my $before = grant_count('g3');
my $still_before = sql(
	"SELECT clock_timestamp() < next_attempt_at FROM oauth.connections WHERE id = '$id_c'");
is($before, 1, '(c) no retry before next_attempt_at');
note("(c) checked while still before next_attempt_at: $still_before");

ok( $node->poll_query_until('postgres',
		"SELECT failure_count >= 2 FROM oauth.connections WHERE id = '$id_c'"),
	'(c) the sweep retried after the back-off');
is(grant_count('g3'), 2, '(c) the provider saw the second request');
my ($fc2, $gap, $next2) = split /\|/, sql(
	"SELECT c.failure_count,
	        extract(epoch FROM e2.at - (e1.detail->>'next_attempt_at')::timestamptz),
	        extract(epoch FROM c.next_attempt_at - e2.at)
	   FROM oauth.connections c,
	        LATERAL (SELECT * FROM oauth.events WHERE connection_id = c.id AND event = 'refresh_failed'
	                  ORDER BY id LIMIT 1) e1,
	        LATERAL (SELECT * FROM oauth.events WHERE connection_id = c.id AND event = 'refresh_failed'
	                  ORDER BY id OFFSET 1 LIMIT 1) e2
	  WHERE c.id = '$id_c'");
is($fc2, 2, '(c) failure_count = 2');
cmp_ok($gap, '>=', 0, '(c) the retry was recorded after the first next_attempt_at');
note("(c) second back-off: next_attempt_at in $next2 s");
cmp_ok($next2, '>=', 4.9, '(c) the second back-off is longer (10 s x 0.5..1)');
cmp_ok($next2, '<=', 10.2, '(c) the second back-off is at most 10 s');

# ---- never swept: reauth_required, revoked, paused provider ---------------
# (c)'s two attempts took > 2.5 s of 1 s sweeps; make sure at least 4 s of
# sweeping passed since the marked connections were committed, and that the
# keep-alive connection (b) was swept again meanwhile.
ok( $node->poll_query_until('postgres',
		"SELECT now() > '$t_marked'::timestamptz + interval '4 seconds'
		        AND (SELECT count(*) FROM oauth.events
		              WHERE connection_id = '$id_b' AND event = 'refreshed') >= 2"),
	'several sweep rounds passed (keep-alive connection refreshed twice)');
my ($r1, $r2) = split /\n/, sql(
	"SELECT extract(epoch FROM at) FROM oauth.events
	  WHERE connection_id = '$id_b' AND event = 'refreshed' ORDER BY id LIMIT 2");
cmp_ok($r2 - $r1, '>=', 2.9, '(b) the keep-alive refreshes are about 3 s apart');
is(grant_count('g4r'), 0, 'a reauth_required connection is never swept');
is(grant_count('g4v'), 0, 'a revoked connection is never swept');
is(grant_count('g4p'), 0, 'a connection of a paused provider is never swept');
is( sql(
		"SELECT count(*) FROM oauth.events
		  WHERE workspace_id = 'ws4' AND event IN ('refreshed', 'refresh_failed')"),
	0,
	'no refresh events for the marked connections');

# Re-registering the paused provider unpauses it: its connection is swept.
oauth_register($node, 'p3', $p->token_url, ", refresh_buffer => '5 minutes'");
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM oauth.connections
		  WHERE provider = 'p3' AND refreshed_at IS NOT NULL"),
	'once the provider is unpaused, the sweep refreshes its connection');
is(grant_count('g4p'), 1, 'one request for the formerly paused grant');
is(grant_count('g4r') + grant_count('g4v'), 0,
	'still nothing for the reauth_required and revoked connections');
is(grant_count('g1'), 1, '(a) the refreshed connection was not refreshed again');

$node->stop;
$p->stop;
done_testing();
