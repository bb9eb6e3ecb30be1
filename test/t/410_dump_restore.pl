# Backups and copies.  pg_dump of a database with providers, connections,
# events and code redemptions, restored with pg_restore:
#  - into a fresh cluster with the same key file: the same tokens are served;
#    nothing is sent to any provider (not by the worker's sweep, not by a
#    caller, refresh, refresh_due, revoke or exchange_code), each refused
#    with OA006 and a hint naming oauth.adopt_copy(), until the copy is
#    adopted (an event records it); then the due connections refresh;
#  - into another database of the same cluster: a copy as well;
#  - into a fresh cluster with another key file: a clear error naming
#    oauth.key_file;
# and the presets are not duplicated, identities continue.
use strict;
use warnings;

use File::Temp qw(tempdir);
use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
$p->add_client(client_id => 'cid', client_secret => 'csecret');
$p->set_grant($_, rotate => 1, strict => 1) for qw(g1 g2 g3);

my $prod = oauth_node('prod');
sub prod_sql { return $prod->safe_psql('postgres', $_[0]) }

oauth_register($prod, 'p1', $p->token_url,
	", refresh_buffer => '5 minutes', revoke_url => '" . $p->base_url . "/revoke'");
my $fresh = oauth_create_conn($prod, 'ws1', 'p1', 'a1', 'at-fresh-1', 'g1.0',
	"now() + interval '1 day'");
my $due = oauth_create_conn($prod, 'ws1', 'p1', 'a2', 'at-due-2', 'g2.0',
	"now() + interval '2 minutes'");
my $expired = oauth_create_conn($prod, 'ws2', 'p1', 'a3', 'at-expired-3', 'g3.0',
	"now() - interval '1 minute'");
$p->add_code(code => 'code-1', grant => 'gx', redirect_uri => 'https://app.example/cb');
my $exchanged = prod_sql(
	"SELECT oauth.exchange_code('ws3', 'p1', 'code-1', 'https://app.example/cb', provider_account_id => 'a4')"
);
my $presets = prod_sql("SELECT count(*) FROM oauth.provider_presets");
my $events = prod_sql("SELECT count(*) FROM oauth.events");
my $requests = $p->stats->{total};
cmp_ok($presets, '>', 5, "the presets ($presets) are there");

# every table of the extension (and every sequence) is dumped, except the
# presets that CREATE EXTENSION writes: a table added later without
# pg_extension_config_dump fails here
is( prod_sql(
		"SELECT string_agg(c.oid::regclass::text, ', ' ORDER BY 1)
		   FROM pg_depend d
		   JOIN pg_class c ON c.oid = d.objid AND c.relkind IN ('r', 'S')
		   JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'oauth_tokens'
		  WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e'
		    AND c.oid::regclass <> 'oauth.provider_presets'::regclass
		    AND c.oid <> ALL (coalesce(e.extconfig, '{}'))"),
	'', 'every table and sequence of the extension but the presets is marked for pg_dump');

my $dir = tempdir(CLEANUP => 1);
my $dump = "$dir/prod.dump";
$prod->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $prod->connstr('postgres') ],
	'pg_dump of the production database');

# ---- a fresh cluster with the same key file ----------------------------------
my $copy = oauth_node('copy', create_extension => 0, sweep_interval => '200ms');
oauth_write_keys($copy, [ [ 'k1', oauth_key_b64($prod) ] ]);
my $log_offset = -s $copy->logfile;
my ($out, $err) = ('', '');
my $ok = IPC::Run::run(
	[ 'pg_restore', '-d', $copy->connstr('postgres'), $dump ],
	'>', \$out, '2>', \$err);
ok($ok, 'pg_restore into a fresh cluster succeeds') or diag($err);
is($err, '', 'pg_restore reports nothing (no duplicate preset, no failed row)');
sub copy_sql { return $copy->safe_psql('postgres', $_[0]) }

is(copy_sql("SELECT count(*) FROM oauth.providers"), '1', 'the provider was restored');
is(copy_sql("SELECT count(*) FROM oauth.connections"), '4', 'the connections were restored');
is(copy_sql("SELECT count(*) FROM oauth.code_redemptions"), '1', 'the code redemption was restored');
is(copy_sql("SELECT count(*) FROM oauth.provider_presets"), $presets,
	'the presets are not duplicated');
is(copy_sql("SELECT count(*) FROM oauth.events"), $events, 'the events were restored');
is(copy_sql("SELECT oauth.valid_token('ws1', '$fresh')"), 'at-fresh-1',
	'the copy serves the same fresh token');
is(copy_sql("SELECT oauth.valid_token('ws1', '$due')"), 'at-due-2',
	'the copy serves a token inside its refresh window');
is(copy_sql("SELECT oauth.valid_token('ws3', '$exchanged')"), 'at-gx-1',
	'the copy serves the exchanged connection\'s token');
like(copy_sql("SELECT oauth.provider_traffic_status()"), qr/copy of database "postgres" of system/,
	'provider_traffic_status() says it is a copy');

# the worker's sweep (every 200 ms) sees the due connections and sends nothing
$copy->wait_for_log(qr/no requests are sent to providers: this database is a copy/, $log_offset);
for my $call (
	[ 'valid_token of an expired token', "SELECT oauth.valid_token('ws2', '$expired')" ],
	[ 'refresh', "SELECT oauth.refresh('ws1', '$fresh')" ],
	[ 'refresh_due', "SELECT * FROM oauth.refresh_due()" ],
	[ 'revoke', "SELECT oauth.revoke('ws1', '$fresh')" ],
	[ 'exchange_code', "SELECT oauth.exchange_code('ws3', 'p1', 'code-2', 'https://app.example/cb')" ],
  )
{
	my $r = oauth_psql($copy, $call->[1]);
	is($r->{sqlstate}, 'OA006', "copy: $call->[0] fails with OA006");
	like($r->{err}, qr/this database is a copy.*HINT:.*oauth\.adopt_copy\(\)/s,
		"copy: $call->[0] says it is a copy, with the adopt hint");
}
is($p->stats->{total}, $requests, 'the copy sent no request to the provider');
is(copy_sql("SELECT count(*) FROM oauth.connection_status WHERE state = 'active'"), '4',
	'the copy changed no connection');

# ---- the same dump in another database of the production cluster ------------
prod_sql("CREATE DATABASE staging");
$ok = IPC::Run::run([ 'pg_restore', '-d', $prod->connstr('staging'), $dump ],
	'>', \$out, '2>', \$err);
ok($ok, 'pg_restore into another database of the same cluster') or diag($err);
is($prod->safe_psql('staging', "SELECT oauth.valid_token('ws1', '$fresh')"), 'at-fresh-1',
	'staging serves the fresh token');
my $r = $prod->psql('staging', "SELECT oauth.refresh('ws1', '$fresh')",
	stderr => \$err, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/OA006.*this database is a copy/s,
	'staging (same system identifier, another database) refuses to refresh');
is($p->stats->{total}, $requests, 'staging sent nothing either');

# ---- adoption ----------------------------------------------------------------------
# the original stops refreshing first (it is shut down), then the copy adopts
$prod->stop;
is(copy_sql("SELECT oauth.adopt_copy()"), 'adopted', 'adopt_copy() adopts the copy');
is(copy_sql("SELECT oauth.adopt_copy()"), 'already_home', 'a second call changes nothing');
is( copy_sql(
		"SELECT detail->'to'->>'database' || ' from ' || (detail->'from'->>'database')
		   FROM oauth.events WHERE event = 'copy_adopted'"),
	'postgres from postgres',
	'an event records the adoption');
is(copy_sql("SELECT oauth.provider_traffic_status()"), 'on', 'traffic is on');
ok( $copy->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM oauth.connections WHERE refresh_after <= now()"),
	'the worker refreshed the due connections after adoption');
is(copy_sql("SELECT oauth.valid_token('ws2', '$expired')"), 'at-g3-1',
	'the expired connection refreshed with the restored refresh token');
is($p->grant_info('g2')->{current_refresh_token}, 'g2.1',
	'the due connection rotated its refresh token once');
is(copy_sql("SELECT oauth.refresh('ws1', '$due')"), 'refreshed',
	'and refreshes again with the rotated one');

# ---- oauth.provider_traffic = off stops everything at once ---------------------------
$copy->safe_psql('postgres', "ALTER SYSTEM SET oauth.provider_traffic = off");
$log_offset = -s $copy->logfile;
$copy->reload;
ok( $copy->poll_query_until('postgres',
		"SELECT oauth.provider_traffic_status() LIKE 'provider traffic is turned off%'"),
	'provider_traffic = off is seen by new sessions');
copy_sql("UPDATE oauth.connections SET refresh_after = now() WHERE id = '$fresh'");
$copy->wait_for_log(qr/no requests are sent to providers: provider traffic is turned off/, $log_offset);
$requests = $p->stats->{total};
$r = oauth_psql($copy, "SELECT oauth.refresh('ws1', '$fresh')");
is($r->{sqlstate}, 'OA006', 'traffic off: refresh fails with OA006');
like($r->{err}, qr/provider traffic is turned off.*HINT:.*oauth\.provider_traffic = on/s,
	'traffic off: the error says so and how to turn it on');
is(copy_sql("SELECT oauth.valid_token('ws1', '$fresh')"), 'at-fresh-1',
	'traffic off: a still-valid token is served');
is($p->stats->{total}, $requests, 'traffic off: nothing sent (the due connection waits)');
$copy->safe_psql('postgres', "ALTER SYSTEM RESET oauth.provider_traffic");
$copy->reload;
ok($copy->poll_query_until('postgres', "SELECT oauth.provider_traffic_status() = 'on'"),
	'traffic back on');
ok( $copy->poll_query_until('postgres',
		"SELECT refresh_after > now() FROM oauth.connections WHERE id = '$fresh'"),
	'the worker refreshes the due connection again');

# ---- another key file -------------------------------------------------------------
my $other = oauth_node('otherkey', create_extension => 0);
$ok = IPC::Run::run([ 'pg_restore', '-d', $other->connstr('postgres'), $dump ],
	'>', \$out, '2>', \$err);
ok($ok, 'pg_restore into a cluster with another key file') or diag($err);
$r = oauth_psql($other, "SELECT oauth.valid_token('ws1', '$fresh')");
isnt($r->{ret}, 0, 'another key ring cannot serve the token');
like($r->{err}, qr/oauth\.key_file/, 'the error names oauth.key_file');
unlike($r->{err} . $r->{out}, qr/at-fresh-1/, 'and shows no token');

$copy->stop;
$other->stop;
done_testing();
