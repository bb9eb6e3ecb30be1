# Mutual TLS client authentication (issue 16, item 2): a provider with
# auth_method tls_client_auth presents its client certificate (stored with
# oauth.set_client_auth(), the key sealed, handed to libcurl from memory)
# on refreshes through the worker, code exchanges and revocations; the test
# provider asks for a client certificate and verifies it against the test
# CA (test/gen_certs.sh), and checks the certificate is this client's.  An
# unknown certificate is refused in the TLS handshake; a certificate that
# is not the key's is refused when stored.  The certificate's key never
# reaches the server log (debug5), events or errors.  Before issue 16 no
# request carried a client certificate.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new(tls => 1, client_ca => 1);
my $base = $p->base_url;
my $certs = $p->cert_dir;
my $node = oauth_node('mtls', ca_file => $p->ca_file, log_min_messages => 'debug5',
	conf => "log_statement = none\nlog_min_error_statement = panic\n");

sub sql { return $node->safe_psql('postgres', $_[0]) }
sub lq { my $s = shift; $s =~ s/'/''/g; return "'$s'" }
sub slurp { return PostgreSQL::Test::Utils::slurp_file($_[0]) }
my %pem = map { $_ => slurp("$certs/$_") }
  qw(client.crt client.key untrusted.crt untrusted.key server.crt);

$p->add_client(client_id => 'cid-tls', auth => 'tls_client_auth', tls_subject => 'oauth-test-client');
sql("SELECT oauth.register_provider('mtls', '$base/token', 'cid-tls', auth_method => 'none', "
	  . "revoke_url => '$base/revoke')");

# no certificate: the provider refuses the client
my $id0 = oauth_create_conn($node, 'ws0', 'mtls', 'a0', 'at-old', 'g0.0', "now() - interval '1 minute'");
oauth_psql($node, "SELECT oauth.valid_token('ws0', '$id0')");
like(sql("SELECT pause_reason FROM oauth.providers WHERE name = 'mtls'"),
	qr/invalid_client: no client certificate/, 'without a certificate the provider refuses the client');

# a certificate that is not the key's is refused when stored
my $r = oauth_psql($node, "SELECT oauth.set_client_auth('mtls', 'tls_client_auth', client_certificate => "
	  . lq($pem{'server.crt'}) . ", private_key => " . lq($pem{'client.key'}) . ")");
is($r->{sqlstate}, '22023', 'a certificate of another key is refused');
$r = oauth_psql($node, "SELECT oauth.set_client_auth('mtls', 'tls_client_auth', private_key => "
	  . lq($pem{'client.key'}) . ")");
is($r->{sqlstate}, '22004', 'a key without its certificate is refused');

sql("SELECT oauth.set_client_auth('mtls', 'tls_client_auth', client_certificate => "
	  . lq($pem{'client.crt'}) . ", private_key => " . lq($pem{'client.key'}) . ")");
is(sql("SELECT kind || ' ' || (not_after > now()) FROM oauth.provider_credentials WHERE provider = 'mtls'"),
	'client_certificate true', 'the certificate is stored with its expiry');
is(sql("SELECT paused_at IS NULL FROM oauth.providers WHERE name = 'mtls'"), 't',
	'set_client_auth resumed the paused provider');

# refresh through the worker, code exchange, revocation
my $n_before = scalar @{ $p->stats->{requests} };
my $id = oauth_create_conn($node, 'ws1', 'mtls', 'a1', 'at-old', 'g1.0', "now() - interval '1 minute'");
is(sql("SELECT oauth.valid_token('ws1', '$id')"), 'at-g1-1', 'the worker\'s refresh with the client certificate');
$p->add_code(code => 'code-1', grant => 'gx');
my $xid = sql("SELECT oauth.exchange_code('ws1', 'mtls', 'code-1', 'https://app.example/cb', "
	  . "provider_account_id => 'a2')");
is(sql("SELECT oauth.valid_token('ws1', '$xid')"), 'at-gx-1', 'exchange_code with the client certificate');
my @reqs = @{ $p->stats->{requests} }[ $n_before .. $#{ $p->stats->{requests} } ];
is(join(',', map { "$_->{auth}/$_->{tls_client}/$_->{client_id}/$_->{status}" } @reqs),
	join(',', ('tls/oauth-test-client/cid-tls/200') x 2),
	'both requests came with the client certificate and client_id, and were accepted');
sql("SELECT oauth.revoke('ws1', '$id')");
my $rev = $p->stats->{revocations}[-1];
is("$rev->{auth}/$rev->{client_id}/" . ($rev->{refused} ? 'refused' : 'ok'), 'tls/cid-tls/ok',
	'the revocation with the client certificate');

# an unknown certificate (self-signed, not the CA's): refused at TLS
sql("SELECT oauth.set_client_auth('mtls', 'tls_client_auth', client_certificate => "
	  . lq($pem{'untrusted.crt'}) . ", private_key => " . lq($pem{'untrusted.key'}) . ")");
is(sql("SELECT detail->'changed'->>'client_certificate' FROM oauth.events WHERE provider = 'mtls' "
		  . "AND event = 'provider_changed' ORDER BY id DESC LIMIT 1"),
	'changed', 'a new certificate is a provider change');
my $total = $p->stats->{total};
my $id2 = oauth_create_conn($node, 'ws2', 'mtls', 'a3', 'at-old', 'g2.0', "now() - interval '1 minute'");
$r = oauth_psql($node, "SELECT oauth.valid_token('ws2', '$id2')");
isnt($r->{ret}, 0, 'with an unknown certificate the refresh fails');
ok(oauth_poll(30, 0.1, sub {
			sql("SELECT last_refresh_error IS NOT NULL FROM oauth.connections WHERE id = '$id2'") eq 't' }),
	'... and the connection records the failure');
is($p->stats->{total}, $total, 'no token request reached the provider: refused in the handshake');
note(sql("SELECT last_refresh_error FROM oauth.connections WHERE id = '$id2'"));

# the keys never appear anywhere
my $everything = join("\n",
	sql("SELECT string_agg(coalesce(last_refresh_error, ''), E'\\n') FROM oauth.connections"),
	sql("SELECT string_agg(detail::text, E'\\n') FROM oauth.events"),
	sql("SELECT string_agg(coalesce(pause_reason, ''), E'\\n') FROM oauth.providers"),
	$r->{err}, slurp($node->logfile));
my $leaks = 0;
for my $k ($pem{'client.key'}, $pem{'untrusted.key'})
{
	(my $b = $k) =~ s/-----[^-]+-----|\s//g;
	for (my $i = 0; $i + 16 <= length($b); $i += 8)
	{
		next if index($everything, substr($b, $i, 16)) < 0;
		$leaks++;
		last;
	}
}
is($leaks, 0, 'no 16-byte run of a certificate key in errors, events, pause reasons or the log');

done_testing();
