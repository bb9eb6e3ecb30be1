# The refresh engine's edges: a waiter honours statement_timeout and cancel
# and leaves nothing behind; token_rejected refreshes only the token still
# stored; without preloading a fresh token still reads and a refresh gives
# OA006 with a hint; the worker waits politely for a missing extension.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
my $node = oauth_node('misc', http_timeout => '20s');
oauth_register($node, 'p1', $p->token_url);

# --- a waiter honours statement_timeout, and cancel ---------------------------
$p->set_grant('hang', mode => 'hang', hang_seconds => 6);
my $hang = oauth_create_conn($node, 'ws1', 'p1', 'acct-h', 'at-h', 'hang.0',
	"now() - interval '1 minute'");
my $r = oauth_psql($node,
	"SET statement_timeout = '1s'; SELECT oauth.valid_token('ws1', '$hang')");
is($r->{sqlstate}, '57014', 'a waiting valid_token is stopped by statement_timeout');
cmp_ok($r->{elapsed}, '<', 5, '... long before the provider answers');

my $s = oauth_session($node);
$s->send("SELECT oauth.valid_token('ws1', '$hang')");
ok( oauth_poll(10, 0.1, sub {
		$node->safe_psql('postgres',
			"SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Extension' AND backend_type = 'client backend'"
		) >= 1;
	}),
	'a second caller is waiting on the refresh');
$node->safe_psql('postgres',
	"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event_type = 'Extension' AND backend_type = 'client backend'"
);
my $w = $s->wait(10);
like($w->{err}, qr/canceling statement due to user request/, 'cancel interrupts the wait');
$s->quit;

# the hung refresh ends (transient: timeout or answer), the entry is released,
# and a new request for the same connection is served
$p->set_grant('hang', mode => 'ok');
ok( oauth_poll(30, 0.2, sub {
		my $x = oauth_psql($node, "SELECT oauth.refresh('ws1', '$hang')");
		$x->{out} eq 'refreshed';
	}),
	'after the cancelled waits, the connection refreshes normally');
is($node->safe_psql('postgres', "SELECT in_flight FROM oauth.stats()"),
	'0', 'nothing is left in flight');

# --- token_rejected -------------------------------------------------------------
my $tr = oauth_create_conn($node, 'ws1', 'p1', 'acct-t', 'at-old', 'tr.0',
	"now() + interval '1 day'");
$node->safe_psql('postgres', "SELECT oauth.token_rejected('ws1', '$tr', 'not-the-stored-token')");
is($p->stats->{by_grant}{tr} // 0, 0, 'a token that is not the stored one: no refresh');
$node->safe_psql('postgres', "SELECT oauth.token_rejected('ws1', '$tr', 'at-old')");
is($p->stats->{by_grant}{tr}, 1, 'the stored token rejected: one refresh');
is($node->safe_psql('postgres', "SELECT oauth.valid_token('ws1', '$tr')"),
	'at-tr-1', 'the next valid_token returns the new token');
is(oauth_event_count($node, $tr, 'token_rejected'), 1, 'event token_rejected recorded');
$node->safe_psql('postgres', "SELECT oauth.token_rejected('ws1', '$tr', 'at-old')");
is($p->stats->{by_grant}{tr}, 1, 'the old token reported again (already replaced): nothing happens');
$r = oauth_psql($node, "SELECT oauth.token_rejected('ws2', '$tr', 'at-tr-1')");
is($r->{sqlstate}, 'OA001', 'token_rejected of another workspace: not found');
# a rejected token whose refresh fails is not served again: OA003
$p->set_grant('tr', mode => '503');
$node->safe_psql('postgres', "SELECT oauth.token_rejected('ws1', '$tr', 'at-tr-1')");
$r = oauth_psql($node, "SELECT oauth.valid_token('ws1', '$tr')");
is($r->{sqlstate}, 'OA003', 'a rejected token is not served while its refresh fails');
$p->set_grant('tr', mode => 'ok');

# --- a locked row: no stall, no deadlock, no lost rotated refresh token ---------
$p->set_grant('lk', rotate => 1, strict => 1);
my $lk = oauth_create_conn($node, 'ws1', 'p1', 'acct-l', 'at-l', 'lk.0',
	"now() - interval '1 minute'");
# the session holds the row lock and, in the same transaction, asks for a
# refresh: the worker cannot store it until the lock goes
my $t0 = time();
my $out = $node->safe_psql('postgres', qq{
	BEGIN;
	SELECT 1 FROM oauth.connections WHERE id = '$lk' FOR UPDATE;
	SELECT oauth.refresh('ws1', '$lk');
	COMMIT;
});
like($out, qr/transient_failure: .*locked/, 'refresh under our own row lock reports the lock instead of hanging');
cmp_ok(time() - $t0, '<', 10, '... promptly');
# until it is stored, callers hear OA003 at once (no second refresh starts)
ok( oauth_poll(10, 0.1, sub {
		my $x = oauth_psql($node, "SELECT oauth.valid_token('ws1', '$lk')");
		$x->{out} eq 'at-lk-1';
	}),
	'once the lock is released the answer is stored');
is($p->stats->{by_grant}{lk}, 1, 'one provider call: the kept answer was stored, not refreshed again');
is($node->safe_psql('postgres', "SELECT oauth.refresh('ws1', '$lk')"),
	'refreshed', 'the rotated refresh token was kept (strict provider accepts the next refresh)');

# --- a host from metadata must be one the provider allows -----------------------
$node->safe_psql('postgres',
	"SELECT oauth.register_provider('sf', NULL, 'cid', 'sec', preset => 'salesforce')");
my $sf = $node->safe_psql('postgres', q{
	SELECT oauth.create_connection('ws1', 'sf', 'acct-sf', 'at-sf', 'sf.0',
	       now() - interval '1 minute', '{}', '{"instance": "evil.example.com"}')});
like($node->safe_psql('postgres', "SELECT oauth.refresh('ws1', '$sf')"),
	qr/transient_failure: host "evil.example.com" from the connection's metadata is not allowed/,
	'a tenant cannot point the token request (and the client secret) at its own host');
is($node->safe_psql('postgres', "SELECT paused_at IS NULL FROM oauth.providers WHERE name = 'sf'"),
	't', '... and the provider is not paused for the others');
my $r2 = oauth_psql($node, "SELECT oauth.register_provider('sf2', NULL, 'cid', 'sec', preset => 'salesforce', allowed_hosts => '{\"bad host\"}')");
is($r2->{sqlstate}, '22023', 'allowed_hosts entries must be host names or *.domain patterns');

$node->stop;

# --- without preloading ---------------------------------------------------------
my $bare = PostgreSQL::Test::Cluster->new('bare');
$bare->init;
$bare->append_conf('postgresql.conf', "oauth.allow_http = on\noauth.allow_private_addresses = on\n");
oauth_write_keys($bare, [ [ 'k1', oauth_random_b64(32) ] ]);
$bare->start;
$bare->safe_psql('postgres', 'CREATE EXTENSION oauth_tokens CASCADE');
oauth_register($bare, 'p1', $p->token_url);
my $fresh = oauth_create_conn($bare, 'ws1', 'p1', 'acct-f', 'at-fresh', 'f.0',
	"now() + interval '1 day'");
my $stale = oauth_create_conn($bare, 'ws1', 'p1', 'acct-s', 'at-stale', 's.0',
	"now() - interval '1 minute'");
is($bare->safe_psql('postgres', "SELECT oauth.valid_token('ws1', '$fresh')"),
	'at-fresh', 'not preloaded: a fresh token still reads');
$r = oauth_psql($bare, "SELECT oauth.valid_token('ws1', '$stale')");
is($r->{sqlstate}, 'OA006', 'not preloaded: a refresh gives OA006');
like($r->{err}, qr/HINT:.*shared_preload_libraries/, '... with a hint that says what to set');
$r = oauth_psql($bare, "SELECT oauth.refresh('ws1', '$fresh')");
is($r->{sqlstate}, 'OA006', 'not preloaded: refresh() gives OA006');
$bare->stop;

# --- the worker waits politely for a database without the extension -----------
my $empty = PostgreSQL::Test::Cluster->new('empty');
$empty->init;
$empty->append_conf('postgresql.conf',
	"shared_preload_libraries = 'oauth_tokens'\noauth.database = 'postgres'\n");
$empty->start;
ok( oauth_poll(20, 0.2, sub {
		slurp_file($empty->logfile) =~ /extension not installed in database "postgres"; waiting/;
	}),
	'worker logs that the extension is missing');
my $pid1 = oauth_worker_pid($empty);
ok($pid1, 'and keeps running');
sleep 1;    # observation window, not synchronisation: no restart may happen
is(oauth_worker_pid($empty), $pid1, 'no crash loop: the same worker process');
my $log = slurp_file($empty->logfile);
my $n = () = $log =~ /extension not installed/g;
is($n, 1, 'the missing extension is logged once');
$empty->safe_psql('postgres', 'CREATE EXTENSION oauth_tokens CASCADE');
$empty->stop;

done_testing();
