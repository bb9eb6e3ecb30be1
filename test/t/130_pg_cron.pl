# pg_cron drives the refreshes: with the worker's own sweep off
# (oauth.sweep_interval = 0), a pg_cron job calling oauth.refresh_due()
# every minute refreshes a due connection.  Takes up to about a minute.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;

# The later shared_preload_libraries line wins over oauth_node's own.
my $node = oauth_node('pg_cron', sweep_interval => '0',
	conf => "shared_preload_libraries = 'oauth_tokens,pg_cron'\n"
	  . "cron.database_name = 'postgres'\n"
	  . "cron.use_background_workers = on\n"
	  . "max_worker_processes = 20\n");

sub sql { return $node->safe_psql('postgres', $_[0]) }

is(sql('SHOW oauth.sweep_interval'), '0', "the worker's own sweep is off");
sql('CREATE EXTENSION pg_cron');
oauth_register($node, 'p1', $p->token_url, ", refresh_buffer => '5 minutes'");

my $due = oauth_create_conn($node, 'ws1', 'p1', 'acct1', 'at-initial', 'g1.0',
	"now() + interval '2 minutes'");
my $later = oauth_create_conn($node, 'ws1', 'p1', 'acct2', 'at-later', 'g2.0',
	"now() + interval '1 day'");

my $jobid = sql(
	"SELECT cron.schedule('oauth-refresh', '* * * * *', 'SELECT count(*) FROM oauth.refresh_due()')");
like($jobid, qr/^\d+$/, 'the refresh job is scheduled');
is(sql("SELECT username = current_user FROM cron.job WHERE jobid = $jobid"),
	't', 'the job runs as the user who scheduled it');

# The job runs at the start of the next minute.
ok( oauth_poll(90, 0.5, sub {
			sql("SELECT refreshed_at IS NOT NULL FROM oauth.connections WHERE id = '$due'") eq 't';
		}),
	'the pg_cron job refreshed the due connection');
is($p->stats->{by_grant}{g1}, 1, 'the provider saw one request for it');
is( sql(
		"SELECT detail->>'trigger' FROM oauth.events
		  WHERE connection_id = '$due' AND event = 'refreshed'"),
	'refresh_due',
	'the refresh came through refresh_due(), not a worker sweep');

ok( oauth_poll(30, 0.2, sub {
			sql("SELECT count(*) > 0 FROM cron.job_run_details
			      WHERE jobid = $jobid AND status IN ('succeeded', 'failed')") eq 't';
		}),
	'the job run is recorded');
my ($status, $msg) = split /\|/, sql(
	"SELECT status, return_message FROM cron.job_run_details
	  WHERE jobid = $jobid AND status IN ('succeeded', 'failed')
	  ORDER BY runid LIMIT 1");
is($status, 'succeeded', 'cron.job_run_details: the job succeeded')
  or diag("return_message: $msg");
note("return_message: $msg");

is( sql(
		"SELECT refreshed_at IS NULL AND version = 1
		   FROM oauth.connections WHERE id = '$later'"),
	't',
	'a connection that is not due was left alone');
is($p->stats->{by_grant}{g2} // 0, 0, 'no request for it');

sql("SELECT cron.unschedule($jobid)");
$node->stop;
$p->stop;
done_testing();
