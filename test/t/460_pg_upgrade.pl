# A major-version upgrade with pg_upgrade (here 15 to 15, the same steps):
# the new cluster keeps the database's oid but has its own system
# identifier, so it serves still-valid tokens and refreshes nothing until
# oauth.adopt_copy(), as the README's upgrade steps say; then it refreshes
# with the refresh tokens rotated before the upgrade.
use strict;
use warnings;

use File::Copy qw(copy);
use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
$p->set_grant($_, rotate => 1, strict => 1) for qw(g1 g2);

my $old = oauth_node('old');
oauth_register($old, 'p1', $p->token_url);
my $fresh = oauth_create_conn($old, 'ws1', 'p1', 'a1', 'at-fresh', 'g1.0', "now() + interval '1 day'");
my $expired = oauth_create_conn($old, 'ws1', 'p1', 'a2', 'at-old', 'g2.0', "now() - interval '1 minute'");
is($old->safe_psql('postgres', "SELECT oauth.refresh('ws1', '$fresh')"), 'refreshed',
	'before the upgrade: a refresh rotates g1.0 to g1.1');
my $sysid_old = $old->safe_psql('postgres', "SELECT system_identifier FROM pg_control_system()");
$old->stop;

# the new cluster: same settings, the key ring carried over
my $new = PostgreSQL::Test::Cluster->new('new');
$new->init;
$new->append_conf('postgresql.conf',
	"shared_preload_libraries = 'oauth_tokens'\noauth.database = 'postgres'\n"
	  . "oauth.allow_http = on\noauth.allow_private_addresses = on\n"
	  . "oauth.sweep_interval = 0\n");
copy($old->data_dir . '/oauth_tokens.keys', $new->data_dir . '/oauth_tokens.keys') or die "copy: $!";
chmod(0600, $new->data_dir . '/oauth_tokens.keys') or die "chmod: $!";
my $bindir = $new->config_data('--bindir');
my $cwd = PostgreSQL::Test::Utils::tempdir;
chdir $cwd or die "chdir: $!";
command_ok(
	[ 'pg_upgrade', '--no-sync', '-b', $bindir, '-B', $bindir,
		'-d', $old->data_dir, '-D', $new->data_dir,
		'-p', $old->port, '-P', $new->port ],
	'pg_upgrade');
$new->start;
oauth_wait_worker($new);
sub sql { return $new->safe_psql('postgres', $_[0]) }

isnt(sql("SELECT system_identifier FROM pg_control_system()"), $sysid_old,
	'the upgraded cluster has a system identifier of its own');
is(sql("SELECT oauth.valid_token('ws1', '$fresh')"), 'at-g1-1',
	'it serves the token refreshed before the upgrade');
my $requests = $p->stats->{total};
my $r = oauth_psql($new, "SELECT oauth.valid_token('ws1', '$expired')");
is($r->{sqlstate}, 'OA006', 'an expired token is not refreshed before adoption');
like($r->{err}, qr/this database is a copy.*oauth\.adopt_copy\(\)/s, 'the hint names oauth.adopt_copy()');
is($p->stats->{total}, $requests, 'nothing was sent');

is(sql("SELECT oauth.adopt_copy()"), 'adopted', 'adopt_copy(), the last step of the upgrade');
is(sql("SELECT oauth.valid_token('ws1', '$expired')"), 'at-g2-1', 'then expired tokens refresh');
is(sql("SELECT oauth.refresh('ws1', '$fresh')"), 'refreshed',
	'and the refresh token rotated before the upgrade (g1.1) is used');
is($p->grant_info('g1')->{current_refresh_token}, 'g1.2', 'the provider agrees');

$new->stop;
done_testing();
