# One writer for what a grant stores (oauth._store_answers): the same
# provider answer stored by exchange_code / client_credentials and by a
# refresh through the worker leaves the same columns, counted from when the
# answer arrived: sealed tokens, scope, expiries, refresh_after, metadata,
# and the failure state reset.  Catches the two paths drifting apart.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthLifecycleUtil;
use OAuthProvider;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
my $node = lc_node('grant_paths');
my $base = $p->base_url;
my $redirect = 'https://app.example.com/cb';

# an idle TTL, so that refresh_after has every term to agree on
lc_sql($node, <<"SQL");
SELECT oauth.register_provider('gp', '$base/token', 'cid', 'sec',
    refresh_token_idle_ttl => interval '30 minutes');
SQL

# what a grant stores, relative to when its answer arrived (refreshed_at)
sub stored
{
	my ($id) = @_;
	return lc_json($node, <<"SQL");
SELECT json_build_object(
  'grant_type', grant_type, 'scope', scope,
  'has_access', access_token_ciphertext IS NOT NULL,
  'has_refresh', refresh_token_ciphertext IS NOT NULL,
  'expires', extract(epoch FROM expires_at - refreshed_at),
  'rt_expires', extract(epoch FROM refresh_token_expires_at - refreshed_at),
  'refresh_after', extract(epoch FROM refresh_after - refreshed_at),
  'metadata', metadata, 'failure_count', failure_count,
  'next_attempt_at', next_attempt_at, 'last_refresh_error', last_refresh_error,
  'reauth', reauth_required_at IS NOT NULL, 'revoked', revoked_at IS NOT NULL,
  'answer_recent', refreshed_at > now() - interval '1 minute')::text
  FROM oauth.connections WHERE id = '$id'
SQL
}

# a failed attempt before the refresh, so the reset shows
sub dirty
{
	my ($id) = @_;
	lc_sql($node,
		"UPDATE oauth.connections SET failure_count = 2, last_refresh_error = 'boom', "
		  . "refreshed_at = now() - interval '1 hour' WHERE id = '$id'");
}

# --- 1. authorization code, then a refresh: the same answer ---------------
$p->set_grant('g1', expires_in => 1800, refresh_token_expires_in => 86400,
	extra => { instance_url => 'https://na1.example.com' });
$p->add_code(code => 'c1', grant => 'g1', redirect_uri => $redirect, scope => 'read write');
my $id = lc_sql($node,
	"SELECT oauth.exchange_code('ws1', 'gp', 'c1', '$redirect', provider_account_id => 'acct1', metadata => '{\"tenant\": \"t1\"}')");
my $after_exchange = stored($id);
is_deeply($after_exchange->{scope}, [ 'read', 'write' ], 'exchange: scope from the answer');
is($after_exchange->{expires}, 1800, 'exchange: expires_at = answer + expires_in');
is($after_exchange->{rt_expires}, 86400, 'exchange: refresh_token_expires_at = answer + its lifetime');
ok($after_exchange->{has_refresh} && $after_exchange->{answer_recent}, 'exchange: RT stored');
is($after_exchange->{metadata}{instance_url}, 'https://na1.example.com',
	"exchange: the answer's instance_url kept");

dirty($id);
is(lc_sql($node, "SELECT oauth.refresh('ws1', '$id') IS NOT NULL"), 't', 'refresh: succeeds');
my $after_refresh = stored($id);
is_deeply($after_refresh, $after_exchange,
	'refresh: the same answer stores the same columns as the exchange')
  or diag(explain { exchange => $after_exchange, refresh => $after_refresh });

# --- 2. client credentials, then a renewal --------------------------------
my $cc = lc_sql($node, "SELECT oauth.client_credentials('ws1', 'gp', '{a,b}')");
my $cc_grant = stored($cc);
ok(!$cc_grant->{has_refresh}, 'client credentials: no refresh token stored');
is_deeply($cc_grant->{scope}, [ 'a', 'b' ], 'client credentials: the requested scope');
dirty($cc);
is(lc_sql($node, "SELECT oauth.refresh('ws1', '$cc') IS NOT NULL"), 't',
	'client credentials: renewal succeeds');
my $cc_renewed = stored($cc);
is_deeply($cc_renewed, $cc_grant,
	'client credentials: the renewal stores the same columns as the grant')
  or diag(explain { grant => $cc_grant, renewal => $cc_renewed });

# --- 3. re-authorization after a dead grant clears it, same columns ---------
lc_sql($node, "UPDATE oauth.connections SET reauth_required_at = now(), refresh_after = NULL "
	  . "WHERE id = '$id'");
$p->set_grant('g1', expires_in => 1800, refresh_token_expires_in => 86400,
	extra => { instance_url => 'https://na1.example.com' });
$p->add_code(code => 'c2', grant => 'g1', redirect_uri => $redirect, scope => 'read write');
is(lc_sql($node,
	"SELECT oauth.exchange_code('ws1', 'gp', 'c2', '$redirect', provider_account_id => 'acct1', metadata => '{\"tenant\": \"t1\"}')"),
	$id, 're-authorization: the same connection');
is_deeply(stored($id), $after_exchange, 're-authorization: reauth cleared, the same columns');

done_testing();
