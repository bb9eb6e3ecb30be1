# No token, client secret or key reaches the server log, at any
# log_min_messages level, nor the events, connection_status, error
# messages or the worker's pg_stat_activity (SPEC 7).
#
# Every secret of this test carries a random tag, so one search finds any of
# them.  The statements below that carry tokens or secrets as literals
# (create_connection, register_provider, reauthorize, token_rejected,
# exchange_code) must not fail: the text of a failing statement is logged
# as a STATEMENT line (log_min_error_statement), and that is the
# application's own SQL, not a leak by the extension.  log_statement is off
# for the same reason (PostgreSQL::Test::Cluster turns it on).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $tag = lc(unpack('H*', pack('N', int(rand(2**32)))) . 'x');
my $p = OAuthProvider->new;

my $node = oauth_node(
	'leak',
	log_min_messages => 'debug5',
	http_timeout => '1s',
	conf => "log_min_error_statement = error\n"
	  . "log_statement = none\n"
	  . "log_error_verbosity = verbose\n"
	  . "client_min_messages = notice\n");

my $k1 = oauth_key_b64($node);
my $k2 = oauth_random_b64(32);
my $cs1 = "cs1-$tag-secret";
my $cs2 = "cs2-$tag-secret";
my $cs2b = "cs2b-$tag-secret";
my @errors;    # every error message a client saw

sub g { return "g$_[0]$tag" }    # grant name; its tokens contain it

sub run_sql
{
	my ($sql) = @_;
	my $r = oauth_psql($node, $sql);
	push @errors, $r->{err} if $r->{err} ne '';
	return $r;
}

sub safe
{
	my ($sql, $what) = @_;
	my $r = run_sql($sql);
	is($r->{err}, '', "$what: no error") or diag($r->{err});
	return $r->{out};
}

oauth_register($node, 'p1', $p->token_url,
	", revoke_url => '" . $p->base_url . "/revoke'", secret => $cs1);
oauth_register($node, 'p2', $p->token_url, undef, secret => $cs2);
my $exp = "now() - interval '1 minute'";

sub conn
{
	my ($prov, $acct, $grant, $expires) = @_;
	return safe(
		"SELECT oauth.create_connection('ws1', '$prov', '$acct', 'at-init-$acct-$tag', '"
		  . g($grant) . ".0', $expires)",
		"create_connection $acct");
}

# 1. refresh with rotation, forced refresh, token_rejected
$p->set_grant(g('rot'), rotate => 1, strict => 1);
my $a = conn('p1', 'rot', 'rot', $exp);
is(safe("SELECT oauth.valid_token('ws1', '$a')", 'valid_token'),
	'at-' . g('rot') . '-1', 'refresh with rotation');
is(safe("SELECT oauth.refresh('ws1', '$a')", 'refresh'), 'refreshed', 'forced refresh');
safe("SELECT oauth.token_rejected('ws1', '$a', 'at-" . g('rot') . "-2')", 'token_rejected');
is(safe("SELECT oauth.valid_token('ws1', '$a')", 'valid_token'),
	'at-' . g('rot') . '-3', 'token_rejected refreshed the connection');

# 2. transient failures
$p->set_grant(g('503'), mode => '503');
my $b = conn('p1', 't503', '503', "now() + interval '30 seconds'");
is(safe("SELECT oauth.valid_token('ws1', '$b', interval '1 minute')", 'valid_token 503'),
	"at-init-t503-$tag", '503: old token served');
$p->set_grant(g('garb'), mode => 'garbage');
my $c = conn('p1', 'garb', 'garb', $exp);
is(run_sql("SELECT oauth.valid_token('ws1', '$c')")->{sqlstate}, 'OA003', 'garbage: OA003');
$p->set_grant(g('noat'), mode => 'no_access_token');
my $c2 = conn('p1', 'noat', 'noat', $exp);
is(run_sql("SELECT oauth.valid_token('ws1', '$c2')")->{sqlstate}, 'OA003', 'no access_token: OA003');
$p->set_grant(g('hang'), mode => 'hang', hang_seconds => 3);
my $c3 = conn('p1', 'hang', 'hang', $exp);
is(run_sql("SELECT oauth.valid_token('ws1', '$c3')")->{sqlstate}, 'OA003', 'timeout: OA003');

# 3. invalid_grant, then reauthorize
$p->set_grant(g('dead'), mode => 'invalid_grant');
my $d = conn('p1', 'dead', 'dead', $exp);
is(run_sql("SELECT oauth.valid_token('ws1', '$d')")->{sqlstate}, 'OA002', 'invalid_grant: OA002');
safe("SELECT oauth.reauthorize('ws1', '$d', 'at-reauth-$tag', '" . g('re') . ".0', $exp)",
	'reauthorize');
is(safe("SELECT oauth.valid_token('ws1', '$d')", 'valid_token after reauthorize'),
	'at-' . g('re') . '-1', 'refresh after reauthorize');

# 4. invalid_client: the provider pauses; a new secret resumes it
$p->set_grant(g('cli'), mode => 'invalid_client');
my $e = conn('p2', 'cli', 'cli', $exp);
is(run_sql("SELECT oauth.valid_token('ws1', '$e')")->{sqlstate}, 'OA004', 'invalid_client: OA004');
oauth_register($node, 'p2', $p->token_url, undef, secret => $cs2b);
$p->set_grant(g('cli'), mode => 'ok');
is(safe("SELECT oauth.valid_token('ws1', '$e')", 'valid_token after re-register'),
	'at-' . g('cli') . '-1', 'refresh after re-registering');

# 5. Slack-style error in a 200 body
oauth_register($node, 'pslack', $p->token_url, ", reauth_errors => '{invalid_refresh_token}'",
	secret => $cs1);
$p->set_grant(g('slack'), mode => 'error200');
my $f = conn('pslack', 'slack', 'slack', $exp);
is(run_sql("SELECT oauth.valid_token('ws1', '$f')")->{sqlstate}, 'OA002', 'error200: OA002');

# 6. authorization code, client credentials, revocation
my $code = "code-$tag";
$p->add_code(code => $code, grant => g('ex'), redirect_uri => 'https://app.example/cb');
my $x = safe("SELECT oauth.exchange_code('ws1', 'p1', '$code', 'https://app.example/cb', provider_account_id => 'ex')",
	'exchange_code');
is(safe("SELECT oauth.valid_token('ws1', '$x')", 'valid_token of the exchanged code'),
	'at-' . g('ex') . '-1', 'exchange_code stored the tokens');
my $cc = safe("SELECT oauth.client_credentials('ws2', 'p1')", 'client_credentials');
like(safe("SELECT oauth.valid_token('ws2', '$cc')", 'valid_token client credentials'),
	qr/^cc-cid-\d+$/, 'client credentials token');
safe("SELECT oauth.revoke('ws1', '$x')", 'revoke');
is($p->stats->{revocations}[0]{token}, g('ex') . '.0', 'the refresh token was revoked at the provider');

# 7. key rotation
oauth_write_keys($node, [ [ 'k2', $k2 ], [ 'k1', $k1 ] ]);
cmp_ok(safe('SELECT oauth.rotate_key()', 'rotate_key'), '>', 0, 'rotate_key re-encrypted secrets');
is( $node->safe_psql('postgres',
		"SELECT bool_and(oauth._key_id(access_token_ciphertext) = 'k2') FROM oauth.connections WHERE revoked_at IS NULL"),
	't', 'every access token is under the new key');
is(safe("SELECT oauth.refresh('ws1', '$a')", 'refresh after rotation'),
	'refreshed', 'refresh works under the new key');

# ---- what to look for ----------------------------------------------------------------
my @secrets = ($k1, $k2, $cs1, $cs2, $cs2b, $code);
for my $g (keys %{ $p->stats->{by_grant} })
{
	my $gi = $p->grant_info($g);
	push @secrets, "at-$g-$_" for 1 .. $gi->{issued};
	my ($n) = ($gi->{current_refresh_token} // '') =~ /\.(\d+)$/;
	push @secrets, "$g.$_" for 0 .. ($n // 0);    # every refresh token
}
push @secrets, map { "at-init-$_-$tag" } qw(rot t503 garb noat hang dead cli slack);
push @secrets, "at-reauth-$tag";
my %seen;
@secrets = grep { !$seen{$_}++ } @secrets;
note('secrets checked: ' . scalar(@secrets));

sub no_secret_in
{
	my ($what, $text) = @_;
	my @found = grep { index($text, $_) >= 0 } @secrets;
	is(scalar(@found), 0, "no secret in $what")
	  or diag("found in $what: " . join(', ', @found));
	unlike($text, qr/\Q$tag\E/, "no token or secret of this test in $what");
	unlike($text, qr/cc-cid-\d/, "no client credentials token in $what");
}

my $worker_activity = $node->safe_psql('postgres',
	"SELECT string_agg(coalesce(query, ''), ' ') FROM pg_stat_activity WHERE backend_type = 'oauth_tokens worker'"
);
my %tables;
for my $t (qw(events connections providers code_redemptions))
{
	$tables{$t} = $node->safe_psql('postgres', "SELECT string_agg(t::text, E'\\n') FROM oauth.$t t");
}
my $status = $node->safe_psql('postgres',
	"SELECT string_agg(s::text, E'\\n') FROM oauth.connection_status s");

$node->stop;
my $log = slurp_file($node->logfile);
cmp_ok(length($log), '>', 100_000, 'the debug5 log is substantial');
like($log, qr/DEBUG:/, 'the log has debug messages');
like($log, qr/provider "p2" paused/, 'the log has the paused provider');
like($log, qr/STATEMENT:\s+SELECT oauth\.valid_token/,
	'failing statements were logged (log_min_error_statement works)');

no_secret_in('the server log', $log);
no_secret_in('client error messages', join("\n", @errors));
no_secret_in('the worker\'s pg_stat_activity', $worker_activity);
no_secret_in('connection_status', $status);
for my $t (sort keys %tables)
{
	no_secret_in("oauth.$t", $tables{$t});
	# bytea shows as hex: no secret in its hex form either
	my @hex = grep { index($tables{$t}, unpack('H*', $_)) >= 0 } @secrets;
	is(scalar(@hex), 0, "no plaintext secret inside oauth.$t ciphertexts")
	  or diag("found in hex: @hex");
}

$p->stop;
done_testing();
