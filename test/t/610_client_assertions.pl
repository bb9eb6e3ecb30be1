# Client authentication by signed assertion (issue 16, item 1): providers
# registered with private_key_jwt (RS256, ES256, with a kid) and
# client_secret_jwt (HS256) authenticate their refreshes (through the
# worker), code exchanges and revocations with a client_assertion that the
# test provider verifies (test/provider.py: signature by the key the kid
# names, iss = sub = client_id, aud, exp, iat, a jti never seen before).
# Refused with invalid_client: a wrong aud, a wrong kid, a bad signature, a
# replayed jti, an expired assertion.  The private key and the assertions
# never reach the server log (debug5), events, last_refresh_error, pause
# reasons or errors, even from a provider that echoes the assertion back.
# Before issue 16 none of these methods existed (auth_method was refused).
use strict;
use warnings;

use Digest::SHA qw(hmac_sha256);
use MIME::Base64 qw(encode_base64url);
use FindBin;
use lib "$FindBin::RealBin/..";
use JSON::PP;
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
my $base = $p->base_url;
# log_statement off and no STATEMENT lines: the test's own SQL carries the
# keys it stores (README: as for client secrets), that is not the
# extension's leak; everything the extension logs, at debug5, is checked
my $node = oauth_node('assertions', log_min_messages => 'debug5',
	conf => "log_statement = none\nlog_min_error_statement = panic\n");
my $dir = PostgreSQL::Test::Utils::tempdir();

sub sql { return $node->safe_psql('postgres', $_[0]) }
sub lq { my $s = shift; $s =~ s/'/''/g; return "'$s'" }
sub slurp { return PostgreSQL::Test::Utils::slurp_file($_[0]) }

# keys: RSA 2048, EC P-256, and another RSA key (a bad signature)
for (['rsa', 'RSA', '-pkeyopt rsa_keygen_bits:2048'],
	['ec', 'EC', '-pkeyopt ec_paramgen_curve:P-256'],
	['other', 'RSA', '-pkeyopt rsa_keygen_bits:2048'])
{
	my ($name, $alg, $opt) = @$_;
	system("openssl genpkey -algorithm $alg $opt -out $dir/$name.key 2>/dev/null") == 0
	  or die "openssl genpkey $name failed";
	system("openssl pkey -in $dir/$name.key -pubout -out $dir/$name.pub 2>/dev/null") == 0
	  or die "openssl pkey $name failed";
}
my %key = map { $_ => slurp("$dir/$_.key") } qw(rsa ec other);
my %pub = map { $_ => slurp("$dir/$_.pub") } qw(rsa ec other);
my $hs_secret = 'hs-Secret/0123456789abcdefghijklmnopqrstuv';

# the provider's side: who may authenticate how
$p->add_client(client_id => 'cid-rs', auth => 'private_key_jwt', keys => { rs1 => $pub{rsa} });
$p->add_client(client_id => 'cid-es', auth => 'private_key_jwt', keys => { es1 => $pub{ec} });
$p->add_client(client_id => 'cid-hs', auth => 'client_secret_jwt', client_secret => $hs_secret);

# our side: register_provider, then set_client_auth for the keys
sql("SELECT oauth.register_provider('pk_rs', '$base/token', 'cid-rs', auth_method => 'none', "
	  . "revoke_url => '$base/revoke')");
my $r = oauth_psql($node, "SELECT oauth.register_provider('pk_rs', '$base/token', 'cid-rs', "
	  . "auth_method => 'private_key_jwt', revoke_url => '$base/revoke')");
is($r->{sqlstate}, '22004', 'register_provider refuses private_key_jwt while no key is stored');
$r = oauth_psql($node, "SELECT oauth.set_client_auth('pk_rs', 'private_key_jwt', key_id => 'rs1', "
	  . "private_key => 'not a key')");
is($r->{sqlstate}, '22023', 'set_client_auth refuses what is not a private key');
unlike($r->{err}, qr/not a key/, '... without echoing it');
sql("SELECT oauth.set_client_auth('pk_rs', 'private_key_jwt', key_id => 'rs1', private_key => "
	  . lq($key{rsa}) . ")");
sql("SELECT oauth.register_provider('pk_es', '$base/token', 'cid-es', auth_method => 'none', "
	  . "revoke_url => '$base/revoke')");
sql("SELECT oauth.set_client_auth('pk_es', 'private_key_jwt', key_id => 'es1', private_key => "
	  . lq($key{ec}) . ")");
sql("SELECT oauth.register_provider('cs_hs', '$base/token', 'cid-hs', " . lq($hs_secret)
	  . ", auth_method => 'client_secret_jwt', revoke_url => '$base/revoke')");
is(sql("SELECT string_agg(provider || ':' || kind || ':' || algorithm || ':' || coalesce(key_id, '-'), ' ' "
		  . "ORDER BY provider) FROM oauth.provider_credentials"),
	'pk_es:private_key:ES256:es1 pk_rs:private_key:RS256:rs1',
	'one credential row per key, the algorithm read from the key');
is(sql("SELECT count(*) FROM oauth.provider_credentials "
		  . "WHERE position(convert_to('PRIVATE', 'UTF8') in key_ciphertext) > 0"),
	'0', 'the keys are stored sealed');
is(sql("SELECT detail->'changed'->>'private_key' || ' ' || (detail->'changed'->'auth_method'->>'new') "
		  . "FROM oauth.events WHERE provider = 'pk_rs' AND event = 'provider_changed' ORDER BY id DESC LIMIT 1"),
	'set private_key_jwt', 'storing the key is a provider_changed event (what changed, not the key)');

# each method: a refresh through the worker, a code exchange, a revocation
my %cid = (pk_rs => 'cid-rs', pk_es => 'cid-es', cs_hs => 'cid-hs');
for my $prov (qw(pk_rs pk_es cs_hs))
{
	my $n_before = scalar @{ $p->stats->{requests} };
	my $id = oauth_create_conn($node, "ws-$prov", $prov, 'a1', 'at-old', "g-$prov.0",
		"now() - interval '1 minute'");
	is(sql("SELECT oauth.valid_token('ws-$prov', '$id')"), "at-g-$prov-1",
		"$prov: the worker's refresh authenticated by assertion");
	$p->add_code(code => "code-$prov", grant => "gx-$prov");
	my $xid = sql("SELECT oauth.exchange_code('ws-$prov', '$prov', 'code-$prov', "
		  . "'https://app.example/cb', provider_account_id => 'a2')");
	is(sql("SELECT oauth.valid_token('ws-$prov', '$xid')"), "at-gx-$prov-1",
		"$prov: exchange_code authenticated by assertion");
	my @reqs = @{ $p->stats->{requests} }[ $n_before .. $#{ $p->stats->{requests} } ];
	is(join(',', map { "$_->{auth}/$_->{client_id}/$_->{status}" } @reqs),
		join(',', ("assertion/$cid{$prov}/200") x 2),
		"$prov: both requests carried an assertion and client_id, and were accepted");
	sql("SELECT oauth.revoke('ws-$prov', '$id')");
	my $rev = $p->stats->{revocations}[-1];
	is("$rev->{auth}/$rev->{client_id}/" . ($rev->{refused} ? 'refused' : 'ok'),
		"assertion/$cid{$prov}/ok", "$prov: the revocation authenticated by assertion");
}

# refusals: the provider answers invalid_client, the provider pauses; the
# reason (the provider's error_description) says which check failed
sub refused_with
{
	my ($prov, $set, $why, $name) = @_;
	sql($set);
	my $id = oauth_create_conn($node, "ws-r", $prov, "r" . int(rand(1e9)), 'at-old',
		"gr" . int(rand(1e9)) . ".0", "now() - interval '1 minute'");
	my $res = oauth_psql($node, "SELECT oauth.valid_token('ws-r', '$id')");
	my $reason = sql("SELECT pause_reason FROM oauth.providers WHERE name = '$prov'");
	like($reason, qr/invalid_client: \Q$why\E/, "$name: refused with invalid_client ($why)");
	return;
}
my $fix_rs = "SELECT oauth.set_client_auth('pk_rs', 'private_key_jwt', key_id => 'rs1', "
  . "private_key => " . lq($key{rsa}) . ")";
refused_with('pk_rs', "SELECT oauth.set_client_auth('pk_rs', 'private_key_jwt', key_id => 'rs1', "
	  . "audience => 'https://elsewhere.example/token')", 'wrong aud', 'a wrong aud');
refused_with('pk_rs', "SELECT oauth.set_client_auth('pk_rs', 'private_key_jwt', key_id => 'rs9')",
	'unknown kid rs9', 'a wrong kid');
refused_with('pk_rs', "SELECT oauth.set_client_auth('pk_rs', 'private_key_jwt', key_id => 'rs1', "
	  . "private_key => " . lq($key{other}) . ")", 'bad signature', 'a signature by another key');
is(sql("SELECT detail->'changed'->>'private_key' FROM oauth.events WHERE provider = 'pk_rs' "
		  . "AND event = 'provider_changed' ORDER BY id DESC LIMIT 1"),
	'changed', 'a new key is a change');
# an audience the provider names works
$p->add_client(client_id => 'cid-rs', auth => 'private_key_jwt', keys => { rs1 => $pub{rsa} },
	audience => 'https://issuer.example');
sql("$fix_rs; SELECT oauth.set_client_auth('pk_rs', 'private_key_jwt', audience => 'https://issuer.example')");
my $aid = oauth_create_conn($node, "ws-aud", 'pk_rs', 'a1', 'at-old', "g-aud.0",
	"now() - interval '1 minute'");
is(sql("SELECT oauth.valid_token('ws-aud', '$aid')"), 'at-g-aud-1',
	'the audience set_client_auth names is the assertion\'s aud');

# replay and expiry, straight at the provider: it does check them
my $last = $p->_get('/_control/last_assertion/cid-rs')->{assertion};
ok(length($last) > 100, 'the provider kept the last assertion it accepted');
my ($st, $body) = $p->http('POST', '/token', { grant_type => 'refresh_token',
		refresh_token => 'g-aud.0', client_id => 'cid-rs',
		client_assertion_type => 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
		client_assertion => $last });
is($st, 401, 'a replayed assertion is refused');
like($body, qr/invalid_client.*replayed jti/, '... as invalid_client, for its jti');
for my $case (['expired', -10, 'assertion expired'], ['fresh', 60, undef])
{
	my ($name, $exp_in, $why) = @$case;
	my $h = encode_base64url('{"alg":"HS256","typ":"JWT"}');
	my $c = encode_base64url(encode_json({ iss => 'cid-hs', sub => 'cid-hs',
		aud => "$base/token", jti => "jti-$name", iat => time() - 20, exp => time() + $exp_in }));
	my $jwt = "$h.$c." . encode_base64url(hmac_sha256("$h.$c", $hs_secret));
	($st, $body) = $p->http('POST', '/token', { grant_type => 'client_credentials',
			client_id => 'cid-hs',
			client_assertion_type => 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
			client_assertion => $jwt });
	if ($why)
	{
		is($st, 401, 'an expired assertion is refused');
		like($body, qr/\Q$why\E/, '... for its exp');
	}
	else
	{
		is($st, 200, 'the same assertion, unexpired, is accepted (the check is the expiry)');
	}
}

# a provider that echoes the assertion (and the whole body) back: redacted
sql($fix_rs . "; SELECT oauth.set_client_auth('pk_rs', 'private_key_jwt')");
my @echo_ids;
for my $t ('{client_assertion}', '{client_assertion|url}', '{client_assertion|json_slash}', '{body}')
{
	my $g = 'ge' . scalar(@echo_ids);
	$p->set_grant($g, mode => 'echo', echo => $t, echo_in => 'error_description',
		echo_error => @echo_ids % 2 ? 'invalid_grant' : 'temporarily_unavailable');
	push @echo_ids, oauth_create_conn($node, 'ws-echo', 'pk_rs', "e$g", 'at-old', "$g.0",
		"now() - interval '1 minute'");
}
my @errs;
for my $id (@echo_ids)
{
	my $res = oauth_psql($node, "SELECT oauth.valid_token('ws-echo', '$id')");
	push @errs, $res->{err};
}
my $forms = $p->_get('/_control/echoed')->{forms};
ok(scalar(@$forms) >= 4, 'the provider echoed the assertions (' . scalar(@$forms) . ' forms)');
like(join(' ', @errs, sql("SELECT string_agg(last_refresh_error, ' ') FROM oauth.connections "
			  . "WHERE workspace_id = 'ws-echo'")),
	qr/\[redacted\]/, 'the echoes were redacted');

# nothing of a key or an assertion anywhere another role reads, or in the log
my $everything = join("\n",
	sql("SELECT string_agg(coalesce(last_refresh_error, ''), E'\\n') FROM oauth.connections"),
	sql("SELECT string_agg(detail::text, E'\\n') FROM oauth.events"),
	sql("SELECT string_agg(coalesce(pause_reason, ''), E'\\n') FROM oauth.providers"),
	@errs, slurp($node->logfile));
my @secrets = @$forms;
for my $k (values %key)
{
	(my $b = $k) =~ s/-----[^-]+-----|\s//g;
	push @secrets, $b;
}
my $leaks = 0;
for my $s (@secrets)
{
	for (my $i = 0; $i + 16 <= length($s); $i += 8)
	{
		my $w = substr($s, $i, 16);
		next if $w =~ /^eyJhbGciOi/;	# the JWS header's first bytes: public
		if (index($everything, $w) >= 0)
		{
			$leaks++;
			diag("leaked: $w");
			last;
		}
	}
}
is($leaks, 0, 'no 16-byte run of a key or an assertion in errors, events, pause reasons or the log');
like(slurp($node->logfile), qr/DEBUG/, 'the log was written at debug levels');

done_testing();
