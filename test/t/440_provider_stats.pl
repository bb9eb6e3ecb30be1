# Operator counters: oauth.provider_stats() counts each provider's calls
# (attempts, successes, transient and permanent failures, latency p50/p99)
# from the worker's refreshes and from sessions' code exchanges, lists the
# provider's connections by state, and oauth.stats_reset() zeroes it and
# oauth.stats(); oauth.stats() keeps its columns; the worker is named in
# pg_stat_activity.application_name.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
$p->set_grant('bad', mode => '503');
$p->set_grant('dead', mode => 'invalid_grant');
$p->set_grant('slow', latency_ms => 300);
my $node = oauth_node('provider_stats');
sub sql { return $node->safe_psql('postgres', $_[0]) }

oauth_register($node, 'good', $p->token_url);
oauth_register($node, 'flaky', $p->token_url);
oauth_register($node, 'idle', $p->token_url);
my $expired = "now() - interval '1 minute'";
my @good = map { oauth_create_conn($node, 'ws1', 'good', "g$_", "at-g$_", "g$_.0", $expired) } 1 .. 3;
my $slow = oauth_create_conn($node, 'ws1', 'good', 'slow', 'at-slow', 'slow.0', $expired);
my $bad = oauth_create_conn($node, 'ws1', 'flaky', 'bad', 'at-bad', 'bad.0', $expired);
my $dead = oauth_create_conn($node, 'ws1', 'flaky', 'dead', 'at-dead', 'dead.0', $expired);
my $revoked = oauth_create_conn($node, 'ws1', 'idle', 'rv', 'at-rv', 'rv.0', "now() + interval '1 day'");
sql("SELECT oauth.revoke('ws1', '$revoked')");    # no revoke_url: nothing sent

is(sql("SELECT oauth.refresh('ws1', '$_')"), 'refreshed', 'good: refreshed') for @good, $slow;
like(sql("SELECT oauth.refresh('ws1', '$bad')"), qr/^transient_failure/, 'flaky: transient');
is(sql("SELECT oauth.refresh('ws1', '$dead')"), 'reauth_required', 'flaky: permanent');
$p->add_code(code => 'code-s', grant => 'gx', redirect_uri => 'https://app.example/cb');
sql("SELECT oauth.exchange_code('ws2', 'good', 'code-s', 'https://app.example/cb', provider_account_id => 'x')");

my %row;
for (split /\n/, sql(
		"SELECT provider, attempts, successes, failures_transient, failures_permanent,
		        latency_p50_ms IS NOT NULL, latency_p99_ms >= 300, latency_p99_ms >= latency_p50_ms,
		        connections_active, connections_backing_off, connections_reauth_required,
		        connections_revoked, paused, since <= now()
		   FROM oauth.provider_stats()"))
{
	my @f = split /\|/;
	$row{ $f[0] } = join ',', @f[ 1 .. $#f ];
}
is($row{good}, '5,5,0,0,t,t,t,5,0,0,0,f,t',
	'good: 5 calls (4 refreshes, 1 exchange), all successes, p99 sees the slow call, 5 active')
  or diag(sql("SELECT * FROM oauth.provider_stats()"));
is($row{flaky}, '2,0,1,1,t,f,t,1,1,1,0,f,t',
	'flaky: 2 calls, 1 transient, 1 permanent; 1 active (backing off), 1 reauth_required');
is($row{idle}, '0,0,0,0,f,,,0,0,0,1,f,t',
	'idle: no call, no latency, its revoked connection');

is(sql("SELECT refreshes_attempted, refreshes_succeeded, refreshes_failed_transient,
               refreshes_failed_permanent FROM oauth.stats()"), '6|4|1|1',
	'oauth.stats() keeps its columns and counts');
is(sql("SELECT application_name FROM pg_stat_activity WHERE backend_type = 'oauth_tokens worker'"),
	'oauth_tokens worker', 'the worker sets application_name');

sql("SELECT oauth.stats_reset()");
is(sql("SELECT count(*) FROM oauth.provider_stats() WHERE attempts > 0"), '0',
	'stats_reset() zeroes the provider counters');
is(sql("SELECT refreshes_attempted + refreshes_succeeded FROM oauth.stats()"), '0',
	'and oauth.stats()');
is(sql("SELECT connections_active FROM oauth.provider_stats() WHERE provider = 'good'"), '5',
	'the connection counts are not counters: they stay');
is(sql("SELECT oauth.refresh('ws1', '$good[0]')"), 'refreshed', 'a refresh after the reset');
is(sql("SELECT attempts || ',' || successes FROM oauth.provider_stats() WHERE provider = 'good'"),
	'1,1', 'is counted from zero');

$node->stop;
done_testing();
