# What a newer PostgreSQL major adds (src/compat.h): from 17 the worker's and
# a caller's waits have names of their own in pg_stat_activity (before 17
# they are all 'Extension'); from 18 the library's magic block names the
# module and its version, which pg_get_loaded_modules() shows.
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
my $node = oauth_node('pgver', http_timeout => '20s');
oauth_register($node, 'p1', $p->token_url);

my $major = $node->safe_psql('postgres',
	"SELECT current_setting('server_version_num')::int / 10000");
my $named = $major >= 17;
note("PostgreSQL $major");

# the wait_event of the processes of backend_type $type that wait as an extension
sub waits_of
{
	my ($type) = @_;
	return $node->safe_psql('postgres',
		"SELECT string_agg(DISTINCT wait_event, ',') FROM pg_stat_activity "
		  . "WHERE backend_type = '$type' AND wait_event_type = 'Extension'");
}

# --- the worker, waiting for work ---------------------------------------------
my $want = $named ? 'OAuthWorkerMain' : 'Extension';
ok(oauth_poll(30, 0.1, sub { waits_of('oauth_tokens worker') eq $want }),
	"the idle worker waits as $want");

# --- a caller, waiting for the refresh it asked for --------------------------
$p->set_grant('slow', mode => 'hang', hang_seconds => 10);
my $id = oauth_create_conn($node, 'ws1', 'p1', 'acct-s', 'at-s', 'slow.0',
	"now() - interval '1 minute'");
my $s = oauth_session($node);
$s->send("SELECT oauth.valid_token('ws1', '$id')");
$want = $named ? 'OAuthRefresh' : 'Extension';
ok(oauth_poll(10, 0.1, sub { waits_of('client backend') eq $want }),
	"a caller waiting on a refresh waits as $want");
$node->safe_psql('postgres',
	"SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
	  . "WHERE backend_type = 'client backend' AND wait_event_type = 'Extension'");
like($s->wait(10)->{err}, qr/canceling statement/, 'the waiting caller is cancelled');
$s->quit;
$p->set_grant('slow', mode => 'ok');

SKIP:
{
	skip 'pg_wait_events lists extensions\' wait events from 17', 1 unless $named;
	is( $node->safe_psql('postgres',
			"SELECT count(*) FROM pg_wait_events WHERE type = 'Extension' "
			  . "AND name IN ('OAuthWorkerMain', 'OAuthRefresh')"),
		'2',
		'pg_wait_events lists the waits seen above');
}

# --- the library's name and version ------------------------------------------
SKIP:
{
	skip 'PG_MODULE_MAGIC_EXT is from 18', 1 if $major < 18;
	my $ext = $node->safe_psql('postgres',
		"SELECT extversion FROM pg_extension WHERE extname = 'oauth_tokens'");
	is( $node->safe_psql('postgres',
			"SELECT version FROM pg_get_loaded_modules() "
			  . "WHERE module_name = 'oauth_tokens'"),
		$ext,
		"pg_get_loaded_modules() names oauth_tokens $ext");
}

$node->stop;
done_testing();
