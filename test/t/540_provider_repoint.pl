# Attacker: an oauth_admin (the README's grants) who does not know a
# provider's client secret re-points the provider to a host of its own, to
# collect the client secret and every customer's refresh token from the
# next refreshes.  Changing where a provider's requests go (token_url,
# revoke_url, the authorize_url's host, a wider allowed_hosts, a preset that
# brings other URLs) is refused unless the current client secret is given
# again in the same call; a public client (no secret) with live connections
# needs a superuser.  The table itself is closed to the admin.  Every change
# is an event that names who made it and what changed, never the secret.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use JSON::PP ();
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $good = OAuthProvider->new;
my $evil = OAuthProvider->new;
my $node = oauth_node('repoint');
my $secret = 'prod-secret-540-' . oauth_random_b64(12);

$node->safe_psql('postgres', <<'SQL');
CREATE ROLE oauth_admin LOGIN;
GRANT USAGE ON SCHEMA oauth TO oauth_admin;
GRANT EXECUTE ON FUNCTION
    oauth.register_provider(text, text, text, text, text, text, interval, interval, interval,
                            jsonb, int, text, text, jsonb, text[], text, text[], interval),
    oauth.create_connection(text, text, text, text, text, timestamptz, text[], jsonb),
    oauth.refresh(text, uuid),
    oauth.revoke(text, uuid) TO oauth_admin;
GRANT SELECT ON oauth.connection_status, oauth.events, oauth.provider_presets TO oauth_admin;
SQL
my $token_url = $good->token_url;
my $revoke_url = $good->base_url . '/revoke';
$node->safe_psql('postgres',
	"SELECT oauth.register_provider('prod', '$token_url', 'prod-client', '$secret', "
	  . "revoke_url => '$revoke_url', authorize_url => 'https://login.example.com/authorize')");
my $id = oauth_create_conn($node, 'ws1', 'prod', 'acct1', 'at-540', 'g540.0',
	"now() + interval '1 hour'");

# psql logged in as oauth_admin
sub as_admin
{
	my ($sql) = @_;
	my ($out, $err) = ('', '');
	my $ret = $node->psql('postgres', $sql, stdout => \$out, stderr => \$err,
		extra_params => [ '-U', 'oauth_admin', '-v', 'VERBOSITY=verbose' ]);
	my ($state) = $err =~ /ERROR:\s+([0-9A-Z]{5}):/;
	return { ret => $ret, out => $out, err => $err, sqlstate => $state };
}

sub row
{
	return $node->safe_psql('postgres',
		"SELECT concat_ws(' | ', token_url, revoke_url, authorize_url, client_id, "
		  . "allowed_hosts::text, paused_at IS NOT NULL, "
		  . "oauth._open(client_secret_ciphertext, 'provider/prod/client_secret') = '$secret') "
		  . "FROM oauth.providers WHERE name = 'prod'");
}

sub events_of
{
	my ($event, $provider) = @_;
	$provider //= 'prod';
	my $j = $node->safe_psql('postgres',
		"SELECT coalesce(json_agg(detail ORDER BY id), '[]') FROM oauth.events "
		  . "WHERE provider = '$provider' AND event = '$event'");
	return JSON::PP::decode_json($j);
}

# the provider is paused (a client authentication failure): the attack
# re-registered it and resumed it at the same time
$node->safe_psql('postgres',
	"UPDATE oauth.providers SET paused_at = now(), pause_reason = 'invalid_client' WHERE name = 'prod'");
my $before = row();
my $changes_before = scalar @{ events_of('provider_changed') };

# ---- the attack of the issue, and its variants -------------------------------
my $evil_url = $evil->token_url;
my $evil_host = 'http://localhost:' . $evil->port;
my @attacks = (
	[ 'token_url to another host, no secret',
		"SELECT oauth.register_provider('prod', '$evil_url', 'prod-client', revoke_url => '$revoke_url', authorize_url => 'https://login.example.com/authorize')" ],
	[ 'token_url to another host, a secret of its own',
		"SELECT oauth.register_provider('prod', '$evil_url', 'prod-client', 'mine', revoke_url => '$revoke_url', authorize_url => 'https://login.example.com/authorize')" ],
	[ 'token_url: the same port, another host name',
		"SELECT oauth.register_provider('prod', '$evil_host/token', 'prod-client', revoke_url => '$revoke_url', authorize_url => 'https://login.example.com/authorize')" ],
	[ 'token_url: another path on the same host',
		"SELECT oauth.register_provider('prod', '$token_url/../steal/token', 'prod-client', revoke_url => '$revoke_url', authorize_url => 'https://login.example.com/authorize')" ],
	[ 'revoke_url to another host',
		"SELECT oauth.register_provider('prod', '$token_url', 'prod-client', revoke_url => '$evil_host/revoke', authorize_url => 'https://login.example.com/authorize')" ],
	[ 'authorize_url to another host',
		"SELECT oauth.register_provider('prod', '$token_url', 'prod-client', revoke_url => '$revoke_url', authorize_url => 'https://phish.example.net/authorize')" ],
	[ 'a wider allowed_hosts',
		"SELECT oauth.register_provider('prod', '$token_url', 'prod-client', revoke_url => '$revoke_url', authorize_url => 'https://login.example.com/authorize', allowed_hosts => '{*.example.net}')" ],
	[ 'a preset that brings other URLs',
		"SELECT oauth.register_provider('prod', NULL, 'prod-client', preset => 'google')" ],
);
for my $a (@attacks)
{
	my ($what, $sql) = @$a;
	my $r = as_admin($sql);
	is($r->{sqlstate}, '42501', "oauth_admin: $what: refused (42501)") or diag($r->{err});
	like($r->{err}, qr/HINT:.*client_secret again/, '... the hint says to pass client_secret again')
	  if $r->{err} =~ /requires its client secret/;
	unlike($r->{err}, qr/\Q$secret\E/, '... and the error holds no secret');
}
is(row(), $before, 'the provider is as it was: same URLs, same secret, still paused');

# the direct ways: the table is closed to the admin
for my $sql ("UPDATE oauth.providers SET token_url = '$evil_url' WHERE name = 'prod'",
	"INSERT INTO oauth.providers (name, token_url, client_id) VALUES ('x', '$evil_url', 'c')",
	"DELETE FROM oauth.providers WHERE name = 'prod'",
	"SELECT client_secret_ciphertext FROM oauth.providers")
{
	is(as_admin($sql)->{sqlstate}, '42501', "oauth_admin: $sql: permission denied");
}
is(row(), $before, 'still as it was');

# nothing reached the other host: a refresh goes where it went
$node->safe_psql('postgres', "UPDATE oauth.providers SET paused_at = NULL, pause_reason = NULL WHERE name = 'prod'");
is($node->safe_psql('postgres', "SELECT oauth.refresh('ws1', '$id')"), 'refreshed', 'a refresh works');
is($evil->stats->{total}, 0, 'the other host got no request');
is($good->stats->{total}, 1, 'the registered host got it');
$node->safe_psql('postgres',
	"UPDATE oauth.providers SET paused_at = now(), pause_reason = 'invalid_client' WHERE name = 'prod'");
is(scalar @{ events_of('provider_changed') }, $changes_before, 'a refused change writes no event');

# ---- what an admin may do without the secret ---------------------------------
my $r = as_admin("SELECT oauth.register_provider('prod', '$token_url', 'prod-client', "
	  . "revoke_url => '$revoke_url', authorize_url => 'https://login.example.com/oauth2/authorize', "
	  . "refresh_buffer => '7 minutes', extra_headers => '{\"X-Key\": \"hdr-value-540\"}')");
is($r->{ret}, 0, 'oauth_admin: other fields, and a new path on the same authorize host: no secret needed')
  or diag($r->{err});
my $ev = events_of('provider_changed')->[-1];
is($ev->{by}, 'oauth_admin', 'provider_changed names who: by');
is($ev->{session_user}, 'oauth_admin', '... and the session user');
is_deeply([ sort keys %{ $ev->{changed} } ], [qw(authorize_url extra_headers refresh_buffer)],
	'... what changed, by field name')
  or diag(explain($ev));
is($ev->{changed}{authorize_url}{new}, 'https://login.example.com/oauth2/authorize', '... old and new URLs');
is_deeply($ev->{changed}{extra_headers}, { old => [], new => ['X-Key'] }, '... header names, never values');
is_deeply($ev->{moved}, [], '... where requests go did not change');
ok($ev->{resumed}, '... the re-registration resumed the paused provider, and says so');
is($ev->{pause_reason}, 'invalid_client', '... with the reason it had been paused for');
like(row(), qr/ \| f \| t$/, 'resumed, and the secret kept');

# ---- with the secret given again, the provider moves -------------------------
$r = as_admin("SELECT oauth.register_provider('prod', '$evil_url', 'prod-client', '$secret', "
	  . "revoke_url => '$revoke_url', authorize_url => 'https://login.example.com/oauth2/authorize', "
	  . "refresh_buffer => '7 minutes')");
is($r->{ret}, 0, 'oauth_admin: the secret given again: the token URL may move') or diag($r->{err});
$ev = events_of('provider_changed')->[-1];
is_deeply($ev->{changed}{token_url}, { old => $token_url, new => $evil_url }, 'the event: old and new token URL');
is($ev->{changed}{client_secret}, 'given again', '... the secret: given again, never its value');
is_deeply($ev->{moved}, ['token_url'], '... and what moved');

# a new secret replaces the old one without moving anything; then the old one
# no longer moves it
my $secret2 = 'prod-secret2-540-' . oauth_random_b64(12);
$r = as_admin("SELECT oauth.register_provider('prod', '$evil_url', 'prod-client', '$secret2', "
	  . "revoke_url => '$revoke_url', authorize_url => 'https://login.example.com/oauth2/authorize')");
is($r->{ret}, 0, 'a new secret for the same URLs') or diag($r->{err});
is(events_of('provider_changed')->[-1]{changed}{client_secret}, 'changed', 'the event says: client_secret changed');
$r = as_admin("SELECT oauth.register_provider('prod', '$token_url', 'prod-client', '$secret', "
	  . "revoke_url => '$revoke_url', authorize_url => 'https://login.example.com/oauth2/authorize')");
is($r->{sqlstate}, '42501', 'the old secret no longer moves it');
like($r->{err}, qr/not the stored one/, '... the given secret is not the stored one');

# ---- a public client: no secret to give again -------------------------------
$node->safe_psql('postgres',
	"SELECT oauth.register_provider('pub', '$token_url', 'pub-client', auth_method => 'none')");
$r = as_admin("SELECT oauth.register_provider('pub', '$evil_url', 'pub-client', auth_method => 'none')");
is($r->{ret}, 0, 'a public client without connections: nothing to take, it may move') or diag($r->{err});
$r = as_admin("SELECT oauth.register_provider('pub', '$token_url', 'pub-client', auth_method => 'none')");
oauth_create_conn($node, 'ws1', 'pub', 'acct-pub', 'at-pub-540', 'gpub.0', "now() + interval '1 hour'");
$r = as_admin("SELECT oauth.register_provider('pub', '$evil_url', 'pub-client', auth_method => 'none')");
is($r->{sqlstate}, '42501', 'a public client with live connections: oauth_admin cannot move it');
like($r->{err}, qr/requires a superuser/, '... it needs a superuser');
$r = oauth_psql($node, "SELECT oauth.register_provider('pub', '$evil_url', 'pub-client', auth_method => 'none')");
is($r->{ret}, 0, '... which may') or diag($r->{err});
$r = oauth_psql($node, "SET ROLE oauth_admin; SELECT oauth.register_provider('pub', '$token_url', 'pub-client', auth_method => 'none')");
is($r->{sqlstate}, '42501', 'a superuser session acting as oauth_admin (SET ROLE) is oauth_admin');
is(events_of('provider_changed', 'pub')->[-1]{by}, 'postgres', 'the superuser is named in the event')
  if $node->safe_psql('postgres', 'SELECT current_user') eq 'postgres';

# ---- no event holds a secret ------------------------------------------------
is($node->safe_psql('postgres',
	"SELECT count(*) FROM oauth.events WHERE detail::text ~ '(prod-secret|hdr-value-540)'"),
	'0', 'no event holds a client secret or a header value');
my $all = $node->safe_psql('postgres',
	"SELECT string_agg(event || ' ' || detail::text, E'\\n' ORDER BY id) FROM oauth.events WHERE provider IN ('prod', 'pub')");
unlike($all, qr/\Q$secret\E|\Q$secret2\E/, 'the secrets appear nowhere in the events');
like($all, qr/^provider_registered .*"by": "/m, 'a registration names who made it too');

$node->stop;
done_testing();
