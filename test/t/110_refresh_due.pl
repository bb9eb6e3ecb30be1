# oauth.refresh_due(): refreshes the due connections through the worker and
# returns one row per attempt; argument checks; and, with the worker's own
# sweep on, two sessions calling it at the same moment as a sweep never make
# the provider see a connection twice.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
$p->set_grant('g3', mode => '503');

my $node = oauth_node('refresh_due', sweep_interval => '0',
	conf => "max_connections = 50\n");

sub sql { return $node->safe_psql('postgres', $_[0]) }
sub grant_count { return $p->stats->{by_grant}{ $_[0] } // 0 }

oauth_register($node, 'p1', $p->token_url, ", refresh_buffer => '5 minutes'");

my $due = "now() + interval '2 minutes'";
my %id;
$id{d1} = oauth_create_conn($node, 'ws1', 'p1', 'a1', 'at-1', 'g1.0', $due);
$id{d2} = oauth_create_conn($node, 'ws2', 'p1', 'a2', 'at-2', 'g2.0', $due);
$id{d3} = oauth_create_conn($node, 'ws1', 'p1', 'a3', 'at-3', 'g3.0', $due);
$id{later} = oauth_create_conn($node, 'ws1', 'p1', 'a4', 'at-4', 'g4.0',
	"now() + interval '1 day'");
$id{reauth} = (split /\n/, sql(
	"BEGIN;
	 SELECT oauth.create_connection('ws1', 'p1', 'a5', 'at-5', 'g5.0', $due) AS id \\gset
	 UPDATE oauth.connections SET reauth_required_at = now() WHERE id = :'id';
	 COMMIT;
	 SELECT :'id';"))[-1];
my %name = reverse %id;

# ---- with the sweep off, nothing happens by itself -------------------------
is(sql("SHOW oauth.sweep_interval"), '0', 'the worker does not sweep');
is($p->stats->{total}, 0, 'no request reached the provider yet');

# ---- one row per attempt ------------------------------------------------------
my $out = sql(
	"SELECT connection_id, workspace_id, provider, outcome FROM oauth.refresh_due()");
my %row;
for (split /\n/, $out)
{
	my ($cid, $ws, $prov, $outcome) = split /\|/;
	$row{ $name{$cid} // $cid } = { ws => $ws, provider => $prov, outcome => $outcome };
}
is_deeply([ sort keys %row ], [qw(d1 d2 d3)],
	'refresh_due returned exactly the three due, active connections')
  or diag($out);
is($row{d1}{outcome}, 'refreshed', 'd1: refreshed');
is($row{d2}{outcome}, 'refreshed', 'd2: refreshed');
like($row{d3}{outcome}, qr/^transient_failure: .*503/,
	'd3: transient_failure naming the HTTP status');
is_deeply([ map { "$row{$_}{ws}/$row{$_}{provider}" } qw(d1 d2 d3) ],
	[ 'ws1/p1', 'ws2/p1', 'ws1/p1' ], 'workspace and provider columns are right');
is(grant_count('g1') . ',' . grant_count('g2') . ',' . grant_count('g3'),
	'1,1,1', 'the provider saw one request for each due connection');
is(grant_count('g4') + grant_count('g5'), 0,
	'nothing for the not-due and the reauth_required connections');
is( sql(
		"SELECT count(*) FROM oauth.events WHERE event = 'refreshed'
		   AND detail->>'trigger' = 'refresh_due'
		   AND connection_id IN ('$id{d1}', '$id{d2}')"),
	2,
	"two 'refreshed' events, with trigger refresh_due");
is( sql(
		"SELECT failure_count = 1 AND next_attempt_at > now()
		   FROM oauth.connections WHERE id = '$id{d3}'"),
	't',
	'd3: failure counted, back-off set');
is(sql("SELECT refreshes_attempted FROM oauth.stats()"), 3,
	'stats: three refreshes attempted');

# ---- a second call finds nothing due: refreshed ones moved on, d3 backs off
is(sql("SELECT count(*) FROM oauth.refresh_due()"), 0,
	'an immediate second call has nothing to do (d3 is in back-off)');
is($p->stats->{total}, 3, 'and sent nothing to the provider');

# ---- max_connections limits the number of attempts -----------------------
my @lim = map { oauth_create_conn($node, 'ws3', 'p1', "l$_", 'at-l', "gl$_.0", $due) } 1 .. 3;
is(sql("SELECT count(*) FROM oauth.refresh_due(2)"), 2,
	'refresh_due(2) attempts two connections');
is(sql("SELECT count(*) FROM oauth.refresh_due(2)"), 1,
	'the next call takes the one left');
is(grant_count('gl1') + grant_count('gl2') + grant_count('gl3'), 3,
	'each of them reached the provider once');

# ---- argument checks ----------------------------------------------------------
my $r = oauth_psql($node, 'SELECT * FROM oauth.refresh_due(0)');
is($r->{sqlstate}, '22023', 'refresh_due(0): invalid_parameter_value');
$r = oauth_psql($node, 'SELECT * FROM oauth.refresh_due(-5)');
is($r->{sqlstate}, '22023', 'refresh_due(-5): invalid_parameter_value');
$r = oauth_psql($node, 'SELECT * FROM oauth.refresh_due(NULL)');
isnt($r->{ret}, 0, 'refresh_due(NULL) fails');
is($r->{sqlstate}, '22004', 'refresh_due(NULL): null_value_not_allowed');
like($r->{err}, qr/max_connections/, 'the error names the argument');

# ---- concurrency: two sessions and the sweep, 50 connections ------------------
my $N = 50;
$p->set_default(latency_ms => 300, rotate => 1, strict => 1);
sql("ALTER SYSTEM SET oauth.sweep_interval = '1s'");
sql("SELECT pg_reload_conf()");
$node->poll_query_until('postgres', "SELECT current_setting('oauth.sweep_interval') = '1s'")
  or die 'sweep_interval did not change';

# All 50 become due at one moment, about 3 s from now (refresh_buffer 5 min).
my $due_at = sql("SELECT now() + interval '5 minutes 3 seconds'");
my $ids = sql(
	"SELECT string_agg(oauth.create_connection('wsc', 'p1', 'c' || g, 'at-c', 'gc' || g || '.0',
	                                           '$due_at'::timestamptz)::text, ',' ORDER BY g)
	   FROM generate_series(1, $N) g");
my @cids = split /,/, $ids;
is(scalar(@cids), $N, "$N connections created");
is( sql(
		"SELECT count(*) FROM oauth.connections
		  WHERE workspace_id = 'wsc' AND refresh_after = '$due_at'::timestamptz - interval '5 minutes'"),
	$N,
	'all due at the same moment');

# The first session starts as they become due, the second half a second
# later, while refreshes are in flight; the sweep joins within a second.
my @s = map { oauth_session($node) } 1 .. 2;
my @start = ('20 milliseconds', '500 milliseconds');
$s[$_]->send(
	"SELECT pg_sleep_until('$due_at'::timestamptz - interval '5 minutes' + interval '$start[$_]');
	 SELECT outcome || '|' || connection_id FROM oauth.refresh_due() WHERE workspace_id = 'wsc'")
  for 0, 1;
my @res = map { $_->wait(60) } @s;
my (%per_conn, %outcomes);
for my $i (0, 1)
{
	ok($res[$i]{done} && $res[$i]{err} eq '', "session $i: refresh_due finished without error")
	  or diag($res[$i]{err});
	my @rows = grep { /\|/ } split /\n/, $res[$i]{out};
	is(scalar(@rows), $N, "session $i: one row for each of the $N connections")
	  if $i == 0;
	for (@rows)
	{
		my ($outcome, $cid) = split /\|/;
		$per_conn{$cid}++;
		$outcomes{$outcome}++;
	}
}
note('session outcomes: ' . join(', ', map { "$_=$outcomes{$_}" } sort keys %outcomes));
is_deeply([ grep { !/^(refreshed|not_needed)$/ } keys %outcomes ], [],
	'every attempt reported refreshed (or not_needed: already done by another)');

ok( $node->poll_query_until('postgres',
		"SELECT count(*) = $N FROM oauth.connections
		  WHERE workspace_id = 'wsc' AND refreshed_at IS NOT NULL"),
	"all $N connections refreshed");
# Give the sweep another round to do anything it should not.
ok( $node->poll_query_until('postgres',
		"SELECT now() > '$due_at'::timestamptz - interval '5 minutes' + interval '3 seconds'"),
	'waited a few sweep rounds');
my $st = $p->stats;
my @bad = grep { ($st->{by_grant}{"gc$_"} // 0) != 1 } 1 .. $N;
is(scalar(@bad), 0, 'every grant received exactly one request')
  or diag('grants with != 1 requests: '
	  . join(', ', map { "gc$_=" . ($st->{by_grant}{"gc$_"} // 0) } @bad));
is( sql(
		"SELECT count(*) FROM oauth.events e JOIN oauth.connections c ON c.id = e.connection_id
		  WHERE c.workspace_id = 'wsc' AND e.event = 'refreshed'"),
	$N,
	"exactly $N 'refreshed' events");
is( sql(
		"SELECT count(*) FROM oauth.connection_status
		  WHERE workspace_id = 'wsc' AND (state <> 'active' OR failure_count <> 0)"),
	0,
	'no connection failed or needs re-authorization (a second refresh with a rotated-away token would)');
note('triggers: ' . sql(
	"SELECT string_agg(t || '=' || n, ', ') FROM (SELECT e.detail->>'trigger' t, count(*) n
	   FROM oauth.events e JOIN oauth.connections c ON c.id = e.connection_id
	  WHERE c.workspace_id = 'wsc' AND e.event = 'refreshed' GROUP BY 1) x"));

$_->quit for @s;
$node->stop;
$p->stop;
done_testing();
