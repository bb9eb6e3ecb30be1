# Versions and upgrades: CREATE EXTENSION ... VERSION '1.0' (the frozen
# script), data made through 1.0's functions, ALTER EXTENSION UPDATE; the
# upgraded database then has exactly the objects of a fresh install of the
# default version (catalogue comparison, see test/OAuthSchema.pm), and the
# old rows still decrypt and refresh.  The new library also serves a 1.0
# schema for the time between the restart and ALTER EXTENSION UPDATE.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthSchema;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
# the provider checks the client secret: a refresh proves it still decrypts
$p->add_client(client_id => 'cid', client_secret => 'csecret');
$p->set_grant('g2', rotate => 1, strict => 1);
$p->set_grant('g3', rotate => 1, strict => 1);

my $node = oauth_node('upgrade', ext_version => '1.0');
sub sql { return $node->safe_psql('postgres', $_[0]) }

my $default = sql("SELECT default_version FROM pg_available_extensions WHERE name = 'oauth_tokens'");
isnt($default, '1.0', "default_version has moved past 1.0 (it is $default)");
is(sql("SELECT extversion FROM pg_extension WHERE extname = 'oauth_tokens'"),
	'1.0', 'version 1.0 installed from the frozen script');

# ---- data made by 1.0 ----------------------------------------------------------
oauth_register($node, 'p1', $p->token_url, ", refresh_buffer => '5 minutes'");
my $fresh = oauth_create_conn($node, 'ws1', 'p1', 'a1', 'at-fresh', 'g1.0',
	"now() + interval '1 day'");
my $due = oauth_create_conn($node, 'ws1', 'p1', 'a2', 'at-old', 'g2.0',
	"now() - interval '1 minute'");
my $due_after = oauth_create_conn($node, 'ws2', 'p1', 'a3', 'at-old3', 'g3.0',
	"now() - interval '1 minute'");
$p->add_code(code => 'code-1', grant => 'gx', redirect_uri => 'https://app.example/cb');
my $exchanged = sql(
	"SELECT oauth.exchange_code('ws3', 'p1', 'code-1', 'https://app.example/cb', provider_account_id => 'a4')"
);
like($exchanged, qr/^[0-9a-f-]{36}$/, '1.0: exchange_code stored a connection');

# the new library on the old schema (after the restart, before the update)
is(sql("SELECT oauth.valid_token('ws1', '$due')"), 'at-g2-1',
	'1.0 schema, new library: an expired token is refreshed');
is($p->grant_info('g2')->{current_refresh_token}, 'g2.1', 'the provider rotated g2');

my $events_before = sql("SELECT count(*) FROM oauth.events");
cmp_ok($events_before, '>=', 5, "1.0 wrote events ($events_before)");

# ---- the upgrade -------------------------------------------------------------------
sql("ALTER EXTENSION oauth_tokens UPDATE");
is(sql("SELECT extversion FROM pg_extension WHERE extname = 'oauth_tokens'"),
	$default, "ALTER EXTENSION UPDATE reached $default");

sql("CREATE DATABASE fresh");
$node->safe_psql('fresh', 'CREATE EXTENSION oauth_tokens CASCADE');
my @upgraded = oauth_schema_lines($node, 'postgres');
my @installed = oauth_schema_lines($node, 'fresh');
cmp_ok(scalar(@installed), '>', 100,
	'the catalogue listing sees the extension (' . scalar(@installed) . ' lines)');
oauth_schema_compare(\@upgraded, \@installed,
	"1.0 + ALTER EXTENSION UPDATE has exactly the objects of a fresh $default");

# ---- old rows after the upgrade --------------------------------------------------
is(sql("SELECT oauth.valid_token('ws1', '$fresh')"), 'at-fresh',
	'a fresh 1.0 token still decrypts');
is(sql("SELECT oauth.valid_token('ws1', '$due')"), 'at-g2-1',
	'the token refreshed before the update still decrypts');
is(sql("SELECT oauth.valid_token('ws2', '$due_after')"), 'at-g3-1',
	'an expired 1.0 connection refreshes after the update');
is(sql("SELECT oauth.refresh('ws1', '$due')"), 'refreshed',
	'refresh() uses the refresh token rotated before the update');
is($p->grant_info('g2')->{current_refresh_token}, 'g2.2',
	'the provider saw the rotated refresh token, not a stale one');
is(sql("SELECT oauth.valid_token('ws3', '$exchanged')"), 'at-gx-1',
	'the connection made by exchange_code in 1.0 still decrypts');
cmp_ok(sql("SELECT count(*) FROM oauth.events"), '>', $events_before,
	'events are still written after the update (identity sequence intact)');
is(sql("SELECT count(*) FROM oauth.providers WHERE name = 'p1' AND client_secret_ciphertext IS NOT NULL"),
	'1', 'the provider row survived with its ciphertext');

$node->stop;
done_testing();
