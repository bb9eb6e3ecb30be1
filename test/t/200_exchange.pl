# The authorization-code grant: oauth.exchange_code() against the fake
# provider, with PKCE (S256).  A successful exchange stores a connection
# with the answer's scope, expiry and non-secret extra fields; a rejected
# code, a code sent twice and an unreachable provider store nothing.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthLifecycleUtil;
use OAuthProvider;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
my $node = lc_node('exchange');
my $base = $p->base_url;
my $redirect = 'https://app.example.com/oauth/callback?from=test';
my $rq = lc_quote($redirect);

lc_sql($node, "SELECT oauth.register_provider('ex', '$base/token', 'cid', 'sec')");

sub conn_count
{
	return lc_sql($node, "SELECT count(*) FROM oauth.connections");
}

sub exchange
{
	my ($code, $verifier, %o) = @_;
	my $args = join(', ',
		lc_quote($o{ws} // 'ws1'),
		lc_quote($o{provider} // 'ex'),
		lc_quote($code), lc_quote($o{redirect} // $redirect),
		defined $verifier ? lc_quote($verifier) : 'NULL',
		defined $o{account} ? lc_quote($o{account}) : 'NULL',
		lc_quote($o{metadata} // '{}'));
	return lc_try($node, "SELECT oauth.exchange_code($args)");
}

# RFC 7636 appendix B: the verifier and its S256 challenge.
my $verifier = 'dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk';
my $challenge = lc_pkce_challenge($verifier);
is($challenge, 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
	'test helper: S256 challenge of the RFC 7636 example');

# --- 1. success ----------------------------------------------------------
$p->set_grant('gx1', expires_in => 1800, refresh_token_expires_in => 86400);
$p->add_code(
	code => 'code-ok',
	grant => 'gx1',
	redirect_uri => $redirect,
	code_challenge => $challenge,
	scope => 'read write',
	extra => {
		instance_url => 'https://na1.example.com',
		id => 'https://login.example.com/id/00D/005',
		secret_thing => 'not-kept'
	});
my $r = exchange('code-ok', $verifier, metadata => '{"tenant": "t1"}');
is($r->{ret}, 0, 'exchange: succeeds') or diag($r->{err});
my $id = $r->{out};
like($id, qr/^[0-9a-f-]{36}$/, 'exchange: returns the connection id');

my $c = lc_conn($node, $id);
is($c->{state}, 'active', 'exchange: connection active');
is($c->{workspace_id}, 'ws1', 'exchange: workspace stored');
is($c->{grant_type}, 'authorization_code', 'exchange: grant type');
is_deeply($c->{scope}, [ 'read', 'write' ], "exchange: scope from the answer's scope");
ok($c->{expires_in_s} > 1790 && $c->{expires_in_s} <= 1800,
	"exchange: expires_at = now + the answer's expires_in")
  or diag("expires in $c->{expires_in_s} s");
ok($c->{rt_expires_in_s} > 86390 && $c->{rt_expires_in_s} <= 86400,
	'exchange: refresh_token_expires_at from refresh_token_expires_in')
  or diag(explain $c);
ok($c->{has_refresh_token}, 'exchange: refresh token stored');
ok(defined $c->{refresh_after} && $c->{refresh_after_in_s} > 1000,
	'exchange: next refresh scheduled before expiry') or diag(explain $c);
is($c->{metadata}{instance_url}, 'https://na1.example.com',
	"exchange: metadata keeps the answer's instance_url");
is($c->{metadata}{tenant}, 't1', "exchange: metadata keeps the caller's fields");
ok(!exists $c->{metadata}{secret_thing}, 'exchange: unknown answer fields are not kept');
is($c->{provider_account_id}, 'https://login.example.com/id/00D/005',
	"exchange: account id taken from the answer's id when not given");
is(lc_sql($node, "SELECT oauth.valid_token('ws1', '$id')"), 'at-gx1-1',
	'exchange: valid_token serves the access token from the exchange');

my $ev = lc_events($node, $id, 'created');
is(scalar @$ev, 1, 'exchange: one created event');
is($ev->[0]{grant_type}, 'authorization_code', 'exchange: event names the grant type');
ok($ev->[0]{has_refresh_token}, 'exchange: event says a refresh token came');
is(lc_sql($node,
	"SELECT count(*) FROM oauth.events WHERE detail::text LIKE '%code-ok%' OR detail::text LIKE '%gx1.0%'"),
	0, 'exchange: neither code nor token in events');

my $st = $p->stats;
is($st->{by_code}{'code-ok'}, 1, 'exchange: the provider saw the code once');
my ($req) = grep { $_->{grant_type} eq 'authorization_code' } @{ $st->{requests} };
is($req->{auth}, 'post', 'exchange: client_secret_post');
is($req->{client_id}, 'cid', 'exchange: client id sent');
is($req->{params}{redirect_uri}, $redirect, 'exchange: redirect_uri sent as given');
is($req->{params}{code_verifier}, '<redacted>', 'exchange: code_verifier sent');
like($req->{accept} // '', qr{application/json}, 'exchange: Accept: application/json');
is(lc_sql($node,
	"SELECT outcome || ' ' || (connection_id = '$id') FROM oauth.code_redemptions "
	  . "WHERE code_sha256 = sha256('code-ok')"),
	'success true', 'exchange: the redemption is recorded by hash');

# the same account consenting again updates the same connection
$p->add_code(code => 'code-again', grant => 'gx1', redirect_uri => $redirect,
	code_challenge => $challenge, extra => { id => 'https://login.example.com/id/00D/005' });
$r = exchange('code-again', $verifier);
is($r->{ret}, 0, 'second consent: succeeds') or diag($r->{err});
is($r->{out}, $id, 'second consent: same connection id for the same account');
is(lc_sql($node, "SELECT oauth.valid_token('ws1', '$id')"), 'at-gx1-2',
	'second consent: the new access token is served');
is(scalar @{ lc_events($node, $id, 'reauthorized') }, 1,
	'second consent: event reauthorized');

# --- 2. wrong verifier: OA002, nothing stored ---------------------------
my $n0 = conn_count();
my $e0 = lc_sql($node, 'SELECT count(*) FROM oauth.events');
$p->add_code(code => 'code-pkce', grant => 'gx2', redirect_uri => $redirect,
	code_challenge => $challenge);
$r = exchange('code-pkce', 'x' x 43, account => 'acct-pkce');
is($r->{sqlstate}, 'OA002', 'wrong verifier: OA002') or diag($r->{err});
like($r->{err}, qr/invalid_grant/, 'wrong verifier: detail names invalid_grant');
is(conn_count(), $n0, 'wrong verifier: no connection stored');
is(lc_sql($node, 'SELECT count(*) FROM oauth.events'), $e0, 'wrong verifier: no event');
is(lc_sql($node, "SELECT count(*) FROM oauth.code_redemptions WHERE code_sha256 = sha256('code-pkce')"),
	0, 'wrong verifier: no redemption row');
# the code was sent once; it is not sent again, even with the right verifier
$r = exchange('code-pkce', $verifier, account => 'acct-pkce');
is($r->{sqlstate}, '22023', 'wrong verifier: a retry of the same code is refused') or diag($r->{err});
is($p->stats->{by_code}{'code-pkce'}, 1, 'wrong verifier: the provider saw the code once');

# no verifier at all for a code bound to a challenge
$p->add_code(code => 'code-nover', grant => 'gx3', redirect_uri => $redirect,
	code_challenge => $challenge);
$r = exchange('code-nover', undef, account => 'acct-nover');
is($r->{sqlstate}, 'OA002', 'missing verifier: OA002') or diag($r->{err});
is(conn_count(), $n0, 'missing verifier: no connection stored');

# a redirect_uri that differs from the authorize step's
$p->add_code(code => 'code-redir', grant => 'gx4', redirect_uri => $redirect);
$r = exchange('code-redir', undef, redirect => 'https://evil.example.com/cb');
is($r->{sqlstate}, 'OA002', 'redirect_uri mismatch: OA002') or diag($r->{err});
is(conn_count(), $n0, 'redirect_uri mismatch: no connection stored');

# --- 3. the same code twice ---------------------------------------------
$p->add_code(code => 'code-twice', grant => 'gx5', redirect_uri => $redirect,
	code_challenge => $challenge);
$r = exchange('code-twice', $verifier, account => 'acct-twice');
is($r->{ret}, 0, 'code twice: first exchange succeeds') or diag($r->{err});
my $n1 = conn_count();
$r = exchange('code-twice', $verifier, account => 'acct-twice');
is($r->{sqlstate}, '22023', 'code twice: second call refused with 22023') or diag($r->{err});
like($r->{err}, qr/already/, 'code twice: the error says the code was already sent');
is($p->stats->{by_code}{'code-twice'}, 1, 'code twice: the provider saw the code once');
is(conn_count(), $n1, 'code twice: nothing more stored');
# also in another workspace (the code is the provider's, not the workspace's)
$r = exchange('code-twice', $verifier, ws => 'ws2', account => 'acct-twice');
is($r->{sqlstate}, '22023', 'code twice: refused from another workspace too');
is($p->stats->{by_code}{'code-twice'}, 1, 'code twice: still sent once');

# a code sent once survives a restart as "already sent" (code_redemptions)
$node->restart;
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'oauth_tokens worker'");
$r = exchange('code-ok', $verifier);
is($r->{sqlstate}, '22023', 'after restart: a redeemed code is still refused') or diag($r->{err});
is($p->stats->{by_code}{'code-ok'}, 1, 'after restart: the provider saw the code once');

# --- 4. provider down: OA003, nothing stored -----------------------------
my $closed = lc_closed_port();
lc_sql($node,
	"SELECT oauth.register_provider('ex_down', 'http://127.0.0.1:$closed/token', 'cid', 'sec')");
my $n2 = conn_count();
my $e2 = lc_sql($node, "SELECT count(*) FROM oauth.events WHERE event <> 'provider_registered'");
$r = exchange('code-down', $verifier, provider => 'ex_down', account => 'acct-down');
is($r->{sqlstate}, 'OA003', 'provider down: OA003') or diag($r->{err});
like($r->{err}, qr/connection error/i, 'provider down: detail says connection error');
is(conn_count(), $n2, 'provider down: no connection stored');
is(lc_sql($node, "SELECT count(*) FROM oauth.events WHERE event <> 'provider_registered'"),
	$e2, 'provider down: no event');

# a provider answering 503
$p->set_grant('gx6', mode => '503');
$p->add_code(code => 'code-503', grant => 'gx6', redirect_uri => $redirect);
$r = exchange('code-503', undef, account => 'acct-503');
is($r->{sqlstate}, 'OA003', 'provider 503: OA003') or diag($r->{err});
is(conn_count(), $n2, 'provider 503: no connection stored');

# --- 5. a paused provider: refused before the code is used up -------------
lc_sql($node, "SELECT oauth.register_provider('ex_pause', '$base/token', 'cid', 'sec')");
$p->set_grant('gp1', mode => 'invalid_client');
my $pid = lc_sql($node,
	"SELECT oauth.create_connection('ws1', 'ex_pause', 'acct-p', 'at-p', 'gp1.0', now() - interval '1 minute')");
$r = lc_try($node, "SELECT oauth.valid_token('ws1', '$pid')");
is($r->{sqlstate}, 'OA004', 'paused: invalid_client on refresh gives OA004') or diag($r->{err});
is(lc_sql($node, "SELECT paused_at IS NOT NULL FROM oauth.providers WHERE name = 'ex_pause'"),
	't', 'paused: the provider is paused');
$p->add_code(code => 'code-paused', grant => 'gp2', redirect_uri => $redirect);
my $n3 = conn_count();
$r = exchange('code-paused', undef, provider => 'ex_pause', account => 'acct-p2');
is($r->{sqlstate}, 'OA004', 'paused: exchange_code raises OA004') or diag($r->{err});
is($p->stats->{by_code}{'code-paused'} // 0, 0, 'paused: the code was not sent');
is(conn_count(), $n3, 'paused: nothing stored');
lc_sql($node, "SELECT oauth.register_provider('ex_pause', '$base/token', 'cid', 'sec')");
$r = exchange('code-paused', undef, provider => 'ex_pause', account => 'acct-p2');
is($r->{ret}, 0, 'paused: after the provider is fixed, the same code can be exchanged')
  or diag($r->{err});
is($p->stats->{by_code}{'code-paused'}, 1, 'paused: the provider saw the code once');

# --- 6. argument errors ----------------------------------------------------
my $n4 = conn_count();
$r = exchange('code-x', undef, provider => 'no_such_provider');
is($r->{sqlstate}, 'OA004', 'unknown provider: OA004');
$r = lc_try($node, "SELECT oauth.exchange_code('ws1', 'ex', NULL, $rq)");
is($r->{sqlstate}, '22004', 'NULL code: 22004');
$r = lc_try($node, "SELECT oauth.exchange_code(NULL, 'ex', 'c', $rq)");
is($r->{sqlstate}, '22004', 'NULL workspace: 22004');
$r = lc_try($node, "SELECT oauth.exchange_code('ws1', 'ex', 'c', NULL)");
is($r->{sqlstate}, '22004', 'NULL redirect_uri: 22004');
$r = lc_try($node, "SELECT oauth.exchange_code('ws1', 'ex', 'c', $rq, metadata => '[1]')");
is($r->{sqlstate}, '22023', 'metadata not an object: 22023');
is($p->stats->{by_code}{'c'} // 0, 0, 'argument errors: nothing sent to the provider');
is(conn_count(), $n4, 'argument errors: nothing stored');

$node->stop;
$p->stop;
done_testing();
