# TLS: a provider whose certificate the configured CA signed works; one
# with a certificate nobody vouches for fails as a transient TLS error; the
# system store (empty oauth.ca_file) does not trust the test CA; http:// is
# refused unless oauth.allow_http.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $good = OAuthProvider->new(tls => 1);
# same certificate directory: the untrusted certificate is self-signed
my $bad = OAuthProvider->new(tls => 1, cert => 'untrusted', dir => $good->cert_dir);
like($good->base_url, qr{^https://}, 'the providers speak https');

my $node = oauth_node('tls', allow_http => 0, ca_file => $good->ca_file);
oauth_register($node, 'pgood', $good->token_url);
oauth_register($node, 'pbad', $bad->token_url);

my $exp = "now() - interval '1 minute'";

# ---- trusted certificate ---------------------------------------------------------
my $id = oauth_create_conn($node, 'ws1', 'pgood', 'good', 'at-good', 'gtls.0', $exp);
my $r = oauth_psql($node, "SELECT oauth.valid_token('ws1', '$id')");
is($r->{out}, 'at-gtls-1', 'refresh over https with the configured CA')
  or diag($r->{err});
is($good->stats->{by_grant}{gtls}, 1, 'the provider saw the request');

# ---- untrusted certificate ---------------------------------------------------------
my $bid = oauth_create_conn($node, 'ws1', 'pbad', 'bad', 'at-bad', 'gbad.0',
	"now() + interval '30 seconds'");
$r = oauth_psql($node, "SELECT oauth.valid_token('ws1', '$bid', interval '1 minute')");
is($r->{out}, 'at-bad', 'untrusted certificate: the still-valid token is served')
  or diag($r->{err});
my $st = oauth_status($node, $bid);
is($st->{state}, 'active', 'untrusted certificate: connection stays active');
is($st->{failure_count}, 1, 'untrusted certificate: a transient failure');
like($st->{last_refresh_error} // '', qr/TLS|SSL|certificate/i,
	'untrusted certificate: last_refresh_error names the TLS problem');
is($bad->stats->{total}, 0, 'untrusted certificate: no request was sent');

$r = oauth_psql($node, "SELECT oauth.refresh('ws1', '$bid')");
like($r->{out}, qr/^transient_failure: .*(TLS|SSL|certificate)/i,
	'untrusted certificate: a forced refresh reports the TLS failure');

# ---- the system store does not know the test CA -----------------------------------
$node->append_conf('postgresql.conf', "oauth.ca_file = ''\n");
$node->reload;
# the worker applies the reload on its next wake-up: poll with forced refreshes
ok( $node->poll_query_until('postgres',
		"SELECT oauth.refresh('ws1', '$id') ~ '^transient_failure: .*(TLS|SSL|certificate)'"),
	'without oauth.ca_file the test CA is not trusted');

# ---- http:// refused without oauth.allow_http -----------------------------------
$r = oauth_psql($node,
	"SELECT oauth.register_provider('phttp', 'http://127.0.0.1:1/token', 'cid', 'csecret')");
is($r->{sqlstate}, '22023', 'http:// token_url refused (22023)') or diag($r->{err});
like($r->{err}, qr/https/, 'the error asks for https');
is($node->safe_psql('postgres', "SELECT count(*) FROM oauth.providers WHERE name = 'phttp'"),
	0, 'nothing was written');
$r = oauth_psql($node,
	"SELECT oauth.register_provider('pgood', 'http://127.0.0.1:1/token', 'cid', 'csecret')");
is($r->{sqlstate}, '22023', 'an existing provider cannot be switched to http://');
is($node->safe_psql('postgres', "SELECT token_url FROM oauth.providers WHERE name = 'pgood'"),
	$good->token_url, 'its token_url is unchanged');

$node->stop;
$good->stop;
$bad->stop;
done_testing();
