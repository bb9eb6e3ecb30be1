# The client-credentials grant: oauth.client_credentials() stores a
# connection without a refresh token; renewing it asks the token endpoint
# for a new token with the client's own credentials and the connection's
# scope (through the worker, as for refreshes), and never stores a refresh
# token.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthLifecycleUtil;
use OAuthProvider;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
my $node = lc_node('client_credentials');
my $base = $p->base_url;

# Only these clients are accepted from now on.
$p->add_client(client_id => 'cid', client_secret => 'sec');
$p->add_client(client_id => 'lin', client_secret => 'lsec');

lc_sql($node, <<"SQL");
SELECT oauth.register_provider('cc1', '$base/token', 'cid', 'sec');
SELECT oauth.register_provider('cc_bad', '$base/token', 'cid', 'wrong');
SELECT oauth.register_provider('cc_lin', '$base/oauth/token', 'lin', 'lsec', preset => 'linear');
SQL

sub cc_requests
{
	return [ grep { $_->{grant_type} eq 'client_credentials' } @{ $p->stats->{requests} } ];
}

# --- 1. the grant ----------------------------------------------------------
my $r = lc_try($node, "SELECT oauth.client_credentials('ws1', 'cc1', '{a,b}')");
is($r->{ret}, 0, 'grant: succeeds') or diag($r->{err});
my $id = $r->{out};
my $c = lc_conn($node, $id);
is($c->{grant_type}, 'client_credentials', 'grant: grant_type client_credentials');
ok(!$c->{has_refresh_token} && !$c->{refresh_ct}, 'grant: no refresh token stored');
is($c->{state}, 'active', 'grant: active');
is($c->{provider_account_id}, 'client:cid', 'grant: account is the client');
is_deeply($c->{scope}, [ 'a', 'b' ], 'grant: scope stored');
ok($c->{expires_in_s} > 3590 && $c->{expires_in_s} <= 3600, 'grant: expiry from expires_in');
ok(defined $c->{refresh_after}, 'grant: a renewal is scheduled although there is no refresh token');
is(lc_sql($node, "SELECT oauth.valid_token('ws1', '$id')"), 'cc-cid-1',
	'grant: valid_token returns the client-credentials token');
my $ev = lc_events($node, $id, 'created');
is($ev->[0]{grant_type}, 'client_credentials', 'grant: created event names the grant');
is($ev->[0]{has_refresh_token}, JSON::PP::false, 'grant: created event: no refresh token');

my $reqs = cc_requests();
is(scalar @$reqs, 1, 'grant: one request');
is($reqs->[0]{params}{scope}, 'a b', "grant: scope sent as 'a b'");
is($reqs->[0]{auth}, 'post', 'grant: client_secret_post');
ok(!exists $reqs->[0]{params}{refresh_token}, 'grant: no refresh_token parameter');

# --- 2. renewal when it nears expiry: valid_token waits for the worker ------
# (a token granted an hour ago, for an hour: valid_token's cap at half the
# lifetime does not apply)
lc_sql($node, "UPDATE oauth.connections SET expires_at = now() + interval '10 seconds', "
	  . "refreshed_at = now() - interval '1 hour' WHERE id = '$id'");
is(lc_sql($node, "SELECT oauth.valid_token('ws1', '$id')"), 'cc-cid-2',
	'renewal: valid_token (min_validity 1 min) returns a new token');
$c = lc_conn($node, $id);
ok(!$c->{has_refresh_token} && !$c->{refresh_ct}, 'renewal: still no refresh token stored');
is($c->{grant_type}, 'client_credentials', 'renewal: still client_credentials');
ok($c->{expires_in_s} > 3590, 'renewal: new expiry stored');
is($c->{failure_count}, 0, 'renewal: no failure');
$reqs = cc_requests();
is(scalar @$reqs, 2, 'renewal: the provider got a second client-credentials request');
is($reqs->[1]{grant_type}, 'client_credentials', 'renewal: grant_type=client_credentials');
is($reqs->[1]{params}{scope}, 'a b', "renewal: scope 'a b'");
is($reqs->[1]{client_id}, 'cid', 'renewal: with the client id');
ok(!exists $reqs->[1]{params}{refresh_token}, 'renewal: no refresh_token parameter');
$ev = lc_events($node, $id, 'refreshed');
is(scalar @$ev, 1, 'renewal: event refreshed');
is($ev->[0]{rotated}, JSON::PP::false, 'renewal: event: no refresh token came back');

# --- 3. in the refresh window: served at once, renewed in the background ----
my $v = lc_sql($node, "SELECT version FROM oauth.connections WHERE id = '$id'");
lc_sql($node,
	"UPDATE oauth.connections SET expires_at = now() + interval '3 minutes', "
	  . "refresh_after = now() - interval '1 second' WHERE id = '$id'");
is(lc_sql($node, "SELECT oauth.valid_token('ws1', '$id')"), 'cc-cid-2',
	'background: the still-valid token is served at once');
ok($node->poll_query_until('postgres',
		"SELECT version > $v FROM oauth.connections WHERE id = '$id'"),
	'background: the worker renewed it');
is(lc_sql($node, "SELECT oauth.valid_token('ws1', '$id')"), 'cc-cid-3',
	'background: the renewed token is served next');
ok(!lc_conn($node, $id)->{refresh_ct}, 'background: no refresh token stored');

# --- 4. the sweep renews it too -----------------------------------------------
lc_sql($node, "UPDATE oauth.connections SET refresh_after = now() - interval '1 second' WHERE id = '$id'");
is(lc_sql($node, "SELECT outcome FROM oauth.refresh_due() WHERE connection_id = '$id'"),
	'refreshed', 'sweep: refresh_due renews a due client-credentials connection');
is(lc_sql($node, "SELECT oauth.valid_token('ws1', '$id')"), 'cc-cid-4', 'sweep: new token');
is(cc_requests()->[-1]{params}{scope}, 'a b', 'sweep: scope sent again');

# --- 5. the grant again: the same connection, new token -----------------------
$r = lc_try($node, "SELECT oauth.client_credentials('ws1', 'cc1', '{a,b}')");
is($r->{out}, $id, 'again: the same connection');
is(lc_sql($node, "SELECT oauth.valid_token('ws1', '$id')"), 'cc-cid-5', 'again: new token');
is(scalar @{ lc_events($node, $id, 'reauthorized') }, 1, 'again: event reauthorized');
# another workspace gets its own connection
$r = lc_try($node, "SELECT oauth.client_credentials('ws2', 'cc1')");
isnt($r->{out}, $id, 'other workspace: its own connection');
ok(!exists cc_requests()->[-1]{params}{scope}, 'no scope: no scope parameter');
my $id2 = $r->{out};
$r = lc_try($node, "SELECT oauth.valid_token('ws1', '$id2')");
is($r->{sqlstate}, 'OA001', "other workspace: ws1 cannot read ws2's connection");

# --- 6. comma-separated scopes (Linear's preset) ------------------------------
$r = lc_try($node, "SELECT oauth.client_credentials('ws1', 'cc_lin', '{read,write}')");
is($r->{ret}, 0, 'linear: grant succeeds') or diag($r->{err});
my $id3 = $r->{out};
is(cc_requests()->[-1]{params}{scope}, 'read,write', 'linear: scope joined with commas');
lc_sql($node, "UPDATE oauth.connections SET expires_at = now() + interval '10 seconds', "
	  . "refreshed_at = now() - interval '1 hour' WHERE id = '$id3'");
like(lc_sql($node, "SELECT oauth.valid_token('ws1', '$id3')"), qr/^cc-lin-\d+$/, 'linear: renewed');
is(cc_requests()->[-1]{params}{scope}, 'read,write', 'linear: renewal joins with commas too');

# --- 7. errors: nothing stored ---------------------------------------------------
my $n = lc_sql($node, 'SELECT count(*) FROM oauth.connections');
$r = lc_try($node, "SELECT oauth.client_credentials('ws1', 'cc_bad', '{a}')");
is($r->{sqlstate}, 'OA004', 'bad client secret: OA004') or diag($r->{err});
$r = lc_try($node, "SELECT oauth.client_credentials('ws1', 'nope', '{a}')");
is($r->{sqlstate}, 'OA004', 'unknown provider: OA004');
$r = lc_try($node, "SELECT oauth.client_credentials('ws1', 'cc1', NULL)");
is($r->{sqlstate}, '22004', 'NULL scope: 22004');
$r = lc_try($node, "SELECT oauth.client_credentials(NULL, 'cc1')");
is($r->{sqlstate}, '22004', 'NULL workspace: 22004');
$p->set_default(mode => '503');
$r = lc_try($node, "SELECT oauth.client_credentials('ws3', 'cc1', '{a}')");
is($r->{sqlstate}, 'OA003', 'provider 503: OA003') or diag($r->{err});
is(lc_sql($node, 'SELECT count(*) FROM oauth.connections'), $n, 'errors: nothing stored');

$node->stop;
$p->stop;
done_testing();
