# Revocation (RFC 7009) and re-authorization.
#
# oauth.revoke() sends the refresh token (or the access token when there is
# none) to the provider's revoke_url with the client's authentication, then
# erases both tokens whatever the provider answered; the connection stays,
# in state revoked.  A connection whose grant died (invalid_grant) is in
# reauth_required until oauth.reauthorize() stores fresh tokens.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthLifecycleUtil;
use OAuthProvider;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
my $node = lc_node('revoke_reauth');
my $base = $p->base_url;

lc_sql($node, <<"SQL");
SELECT oauth.register_provider('rv_post', '$base/token', 'cid', 'sec',
                               revoke_url => '$base/revoke');
SELECT oauth.register_provider('rv_basic', '$base/token', 'cid b', 'sec:2',
                               auth_method => 'client_secret_basic',
                               revoke_url => '$base/oauth2/revoke');
SELECT oauth.register_provider('rv_none', '$base/token', 'cid', 'sec');
SQL

sub conn
{
	my ($prov, $acct, $at, $rt, $exp) = @_;
	$rt = defined $rt ? "'$rt'" : 'NULL';
	$exp //= "now() + interval '1 hour'";
	return lc_sql($node,
		"SELECT oauth.create_connection('ws1', '$prov', '$acct', '$at', $rt, $exp)");
}

sub revocations { return $p->stats->{revocations} }

sub check_revoked
{
	my ($id, $what) = @_;
	my $r = lc_try($node, "SELECT oauth.valid_token('ws1', '$id')");
	is($r->{sqlstate}, 'OA005', "$what: valid_token raises OA005") or diag($r->{err});
	my $c = lc_conn($node, $id);
	is($c->{state}, 'revoked', "$what: state revoked");
	ok(!$c->{access_ct} && !$c->{refresh_ct}, "$what: both ciphertext columns are NULL");
	ok(!defined $c->{refresh_after}, "$what: no refresh scheduled");
	my $ev = lc_events($node, $id, 'revoked');
	is(scalar @$ev, 1, "$what: one revoked event");
	return $ev->[0] // {};
}

# --- 1. revoke_url, client_secret_post ----------------------------------
my $id = conn('rv_post', 'a1', 'at-a1', 'rt-a1');
is(lc_sql($node, "SELECT oauth.valid_token('ws1', '$id')"), 'at-a1', 'post: token usable before');
my $r = lc_try($node, "SELECT oauth.revoke('ws1', '$id')");
is($r->{ret}, 0, 'post: revoke succeeds') or diag($r->{err});
my $rev = revocations();
is(scalar @$rev, 1, 'post: the provider got one revocation request');
is_deeply(
	$rev->[0],
	{ token => 'rt-a1', token_type_hint => 'refresh_token', client_id => 'cid', auth => 'post' },
	'post: RFC 7009 request with the refresh token, hint and client_secret_post');
my $d = check_revoked($id, 'post');
is($d->{remote}, 'revoked', 'post: event detail remote = revoked');
is(lc_sql($node, "SELECT count(*) FROM oauth.events WHERE detail::text ~ '(rt|at)-a1'"),
	0, 'post: no token in any event');

# a second revoke is a no-op: no request, no event
$r = lc_try($node, "SELECT oauth.revoke('ws1', '$id')");
is($r->{ret}, 0, 'post: revoking again succeeds');
is(scalar @{ revocations() }, 1, 'post: revoking again sends nothing');
is(scalar @{ lc_events($node, $id, 'revoked') }, 1, 'post: revoking again adds no event');
# nothing refreshes a revoked connection
$r = lc_try($node, "SELECT oauth.refresh('ws1', '$id')");
is($r->{sqlstate}, 'OA005', 'post: a forced refresh raises OA005');
is($p->stats->{total}, 0, 'post: no token request was ever sent');
# another workspace cannot revoke (or learn about) it
$r = lc_try($node, "SELECT oauth.revoke('ws2', '$id')");
is($r->{sqlstate}, 'OA001', 'revoke from another workspace: OA001');
$r = lc_try($node, "SELECT oauth.revoke('ws1', gen_random_uuid())");
is($r->{sqlstate}, 'OA001', 'revoke of a missing connection: OA001');
$r = lc_try($node, "SELECT oauth.revoke('ws1', NULL)");
is($r->{sqlstate}, '22004', 'revoke with NULL id: 22004');

# --- 2. client_secret_basic ------------------------------------------------
$p->reset;
$id = conn('rv_basic', 'b1', 'at-b1', 'rt-b1');
$r = lc_try($node, "SELECT oauth.revoke('ws1', '$id')");
is($r->{ret}, 0, 'basic: revoke succeeds') or diag($r->{err});
$rev = revocations();
is(scalar @$rev, 1, 'basic: one revocation request');
is($rev->[0]{auth}, 'basic', 'basic: client authenticated with HTTP Basic');
like($rev->[0]{client_id}, qr/^cid(\+|%20)b$/,
	'basic: client id form-encoded before base64 (RFC 6749 2.3.1)');
is($rev->[0]{token}, 'rt-b1', 'basic: the refresh token is revoked');
is($rev->[0]{token_type_hint}, 'refresh_token', 'basic: hint refresh_token');
is(check_revoked($id, 'basic')->{remote}, 'revoked', 'basic: remote = revoked');

# --- 3. no refresh token: the access token is revoked ------------------------
$p->reset;
$id = conn('rv_post', 'a2', 'at-a2', undef);
$r = lc_try($node, "SELECT oauth.revoke('ws1', '$id')");
is($r->{ret}, 0, 'access token only: revoke succeeds') or diag($r->{err});
$rev = revocations();
is($rev->[0]{token}, 'at-a2', 'access token only: the access token is sent');
is($rev->[0]{token_type_hint}, 'access_token', 'access token only: hint access_token');
check_revoked($id, 'access token only');

# --- 4. no revoke_url: local revocation only ---------------------------------
$p->reset;
$id = conn('rv_none', 'n1', 'at-n1', 'rt-n1');
$r = lc_try($node, "SELECT oauth.revoke('ws1', '$id')");
is($r->{ret}, 0, 'no revoke_url: revoke succeeds') or diag($r->{err});
is(scalar @{ revocations() }, 0, 'no revoke_url: nothing sent');
is($p->stats->{total}, 0, 'no revoke_url: no token request either');
is(check_revoked($id, 'no revoke_url')->{remote}, 'none', 'no revoke_url: remote = none');

# --- 5. the provider fails: still erased locally ----------------------------
$p->reset;
$p->control('revoke_status', { status => 500 });
$id = conn('rv_post', 'f1', 'at-f1', 'rt-f1');
$r = lc_try($node, "SELECT oauth.revoke('ws1', '$id')");
is($r->{ret}, 0, 'provider 500: revoke still succeeds') or diag($r->{err});
is(scalar @{ revocations() }, 1, 'provider 500: the request was sent');
$d = check_revoked($id, 'provider 500');
is($d->{remote}, 'failed', 'provider 500: remote = failed');
ok(defined $d->{error} && $d->{error} !~ /rt-f1/, 'provider 500: error recorded, without the token')
  or diag(explain $d);

# provider unreachable: same
my $closed = lc_closed_port();
lc_sql($node,
	"SELECT oauth.register_provider('rv_down', '$base/token', 'cid', 'sec', "
	  . "revoke_url => 'http://127.0.0.1:$closed/revoke')");
$id = conn('rv_down', 'd1', 'at-d1', 'rt-d1');
$r = lc_try($node, "SELECT oauth.revoke('ws1', '$id')");
is($r->{ret}, 0, 'provider down: revoke still succeeds') or diag($r->{err});
is(check_revoked($id, 'provider down')->{remote}, 'failed', 'provider down: remote = failed');
$p->control('revoke_status', { status => 200 });

# --- 6. re-authorization ------------------------------------------------------
$p->reset;
$p->set_grant('rg1', mode => 'invalid_grant');
$id = conn('rv_none', 'r1', 'at-old', 'rg1.0', "now() - interval '1 minute'");
$r = lc_try($node, "SELECT oauth.valid_token('ws1', '$id')");
is($r->{sqlstate}, 'OA002', 'dead grant: valid_token raises OA002') or diag($r->{err});
like($r->{err}, qr/invalid_grant/, 'dead grant: detail names invalid_grant');
my $c = lc_conn($node, $id);
is($c->{state}, 'reauth_required', 'dead grant: state reauth_required');
ok(defined $c->{reauth_required_at}, 'dead grant: reauth_required_at set');
is(scalar @{ lc_events($node, $id, 'reauth_required') }, 1, 'dead grant: event reauth_required');
# no more attempts until re-authorized
$r = lc_try($node, "SELECT oauth.valid_token('ws1', '$id')");
is($r->{sqlstate}, 'OA002', 'dead grant: still OA002');
is($p->stats->{by_grant}{rg1}, 1, 'dead grant: the provider was asked once only');

$r = lc_try($node,
	"SELECT oauth.reauthorize('ws2', '$id', 'at-x', 'rt-x', now() + interval '1 hour')");
is($r->{sqlstate}, 'OA001', 'reauthorize from another workspace: OA001');
$r = lc_try($node,
	"SELECT oauth.reauthorize('ws1', '$id', 'at-new', 'rg2.0', now() + interval '1 hour', '{a,b}')");
is($r->{ret}, 0, 'reauthorize: succeeds') or diag($r->{err});
$c = lc_conn($node, $id);
is($c->{state}, 'active', 'reauthorize: state active again');
ok(!defined $c->{reauth_required_at} && !defined $c->{last_refresh_error},
	'reauthorize: reauth_required_at and the error cleared');
is_deeply($c->{scope}, [ 'a', 'b' ], 'reauthorize: new scope stored');
is(lc_sql($node, "SELECT oauth.valid_token('ws1', '$id')"), 'at-new',
	'reauthorize: valid_token returns the new access token');
my $ev = lc_events($node, $id, 'reauthorized');
is(scalar @$ev, 1, 'reauthorize: event reauthorized');
is($ev->[0]{was}, 'reauth_required', 'reauthorize: event says it was reauth_required');

# the new refresh token is the one used next
lc_sql($node, "UPDATE oauth.connections SET expires_at = now() - interval '1 second' WHERE id = '$id'");
is(lc_sql($node, "SELECT oauth.valid_token('ws1', '$id')"), 'at-rg2-1',
	'after reauthorize: a refresh with the new refresh token works');
is($p->stats->{by_refresh_token}{'rg2.0'}, 1, 'after reauthorize: the provider saw the new refresh token');
is($p->stats->{by_grant}{rg1}, 1, 'after reauthorize: the dead one was not sent again');
is(lc_conn($node, $id)->{scope}[0], 'a', 'after reauthorize: scope kept across the refresh');

$r = lc_try($node, "SELECT oauth.reauthorize('ws1', '$id', NULL, 'x', now())");
is($r->{sqlstate}, '22004', 'reauthorize with NULL access token: 22004');

$node->stop;
$p->stop;
done_testing();
