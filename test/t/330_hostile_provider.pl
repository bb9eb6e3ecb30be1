# Attacker: a hostile (or broken) token endpoint.  Bodies over 1 MiB, invalid
# UTF-8, NUL bytes, nesting deep enough to exhaust a recursive parser, absurd
# expires_in values, a redirect, control characters meant to forge log lines,
# tokens that are not tokens, an untrusted certificate.  Each answer is a
# transient failure or a success by the stated rules (provider.c header): the
# worker survives, no connection is marked dead, nothing invalid reaches a
# table, an event or the log, and no redirect is followed.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthLifecycleUtil;
use OAuthProvider;
use OAuthTestUtil qw(oauth_worker_pid);
use PostgreSQL::Test::Utils;
use Test::More;

# the hostile endpoint
my ($dir, $port) = lc_hostile_provider();
sub arrived { return grep { length } split /\n/, slurp_file("$dir/port.log") }

my $node = lc_node('hostile', conf => "log_min_messages = debug5\nlog_statement = none\n");
my $worker = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'oauth_tokens worker'");

my $n = 0;
sub refresh_via
{
	my ($name, %o) = @_;
	$n++;
	lc_sql($node, "SELECT oauth.register_provider('h_$name', 'http://127.0.0.1:$port/$name', 'cid', 'sec-330', "
		  . "default_lifetime => '2 hours'"
		  . ($o{revoke} ? ", revoke_url => 'http://127.0.0.1:$port/$o{revoke}'" : '') . ')');
	my $id = lc_sql($node, "SELECT oauth.create_connection('ws1', 'h_$name', 'acct$n', 'at-old$n', 'rt-330-$n', "
		  . "now() - interval '1 minute')");
	return ($id, lc_sql($node, "SELECT oauth.refresh('ws1', '$id')"));
}

sub conn_row
{
	my ($id) = @_;
	return lc_json($node, "SELECT row_to_json(c) FROM (SELECT state, scope, metadata, last_refresh_error, "
		  . "extract(epoch FROM expires_at - now())::int AS left_s FROM oauth.connection_status WHERE id = '$id') c");
}

# transient failures, the connection stays active
for my $case (
	[ big => qr/response body over 1 MiB/ ],
	[ big_stream => qr/response body over 1 MiB/ ],
	[ badutf8 => qr/neither JSON nor a form/ ],
	[ badutf8_error => qr/neither JSON nor a form/ ],
	[ nul_escape => qr/neither JSON nor a form/ ],
	[ nul_raw => qr/neither JSON nor a form/ ],
	[ form_nul => qr/not 1 to 65536 bytes of printable ASCII/ ],
	[ deep => qr/nested deeper than 32/ ],
	[ deep_array => qr/nested deeper than 32/ ],
	[ long_token => qr/printable ASCII/ ],
	[ nonascii_token => qr/printable ASCII/ ],
	[ crlf_token => qr/printable ASCII/ ],
	[ not_object => qr/neither JSON nor a form/ ],
	[ redirect => qr/HTTP 302 / ],
	[ ctrl => qr/invalid_request FAKE: line1 LOG:  forged line/ ])
{
	my ($name, $want) = @$case;
	my ($id, $out) = refresh_via($name);
	like($out, qr/^transient_failure: .*$want/, "$name: a transient failure") or diag($out);
	my $c = conn_row($id);
	is($c->{state}, 'active', "$name: the connection is not marked");
	unlike($c->{last_refresh_error} // '', qr/[\x00-\x1f\x7f]/, "$name: no control character stored");
}
is(scalar(grep { m{/ok$} } arrived()), 0, 'the redirect was not followed');

# successes, by the stated rules
my ($id, $out) = refresh_via('form_junk');
is($out, 'refreshed', 'form_junk: the token is good, the rest is ignored');
my $c = conn_row($id);
is_deeply($c->{scope}, [], 'form_junk: invalid scope bytes are not stored');
ok(!exists $c->{metadata}{instance_url}, 'form_junk: a kept field with a control character is not kept');

($id, $out) = refresh_via('deep_ok');
is($out, 'refreshed', 'deep_ok: moderate nesting is fine');

($id, $out) = refresh_via('long_scope');
is($out, 'refreshed', 'long_scope: refreshed');
is_deeply(conn_row($id)->{scope}, [], 'long_scope: a scope over 8 KiB is ignored');

for my $name (qw(neg huge nan text bigint))
{
	($id, $out) = refresh_via($name);
	is($out, 'refreshed', "$name: refreshed");
	my $left = conn_row($id)->{left_s};
	ok($left > 7100 && $left <= 7200, "$name: an absurd expires_in is ignored: default_lifetime (2 hours)")
	  or diag("expires in $left s");
}
($id, $out) = refresh_via('frac');
my $left = conn_row($id)->{left_s};
ok($left > 1700 && $left <= 1800, 'frac: a fractional expires_in is rounded down') or diag($left);

# HubSpot-style status in a success body: not an error, for refresh and revoke
($id, $out) = refresh_via('status_ok', revoke => 'revoke_status');
is($out, 'refreshed', 'status "SUCCESS" in a token answer is not an error');
lc_sql($node, "SELECT oauth.revoke('ws1', '$id')");
is(lc_sql($node, "SELECT detail->>'remote' FROM oauth.events WHERE connection_id = '$id' AND event = 'revoked'"),
	'revoked', 'revoke answered 200 {"status": "SUCCESS"} is recorded as revoked');

# the session-side calls (code exchange) survive the same bodies
for my $name (qw(deep deep_array big badutf8 ctrl))
{
	my $r = lc_try($node, "SELECT oauth.exchange_code('ws1', 'h_$name', 'code-$name', 'https://app.example/cb')");
	is($r->{sqlstate}, 'OA003', "exchange_code against $name: OA003, not a crash") or diag($r->{err});
	unlike($r->{err}, qr/stack depth|\nLOG:  forged/, "exchange_code against $name: no parser error, no forged line");
}

# events hold no control characters
is(lc_sql($node, "SELECT count(*) FROM oauth.events WHERE detail::text ~ '[\\x01-\\x08\\x0b\\x0c\\x0e-\\x1f]' "
	  . "OR detail::text ~ '\\\\n|\\\\r|\\\\u001b'"),
	'0', 'no event detail holds a control character');

is($node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'oauth_tokens worker'"),
	$worker, 'the worker survived every answer');

# an untrusted certificate: the TLS handshake fails, no request is sent
my $tls = OAuthProvider->new(tls => 1, cert => 'untrusted');
my $good = OAuthProvider->new(tls => 1);
$node->append_conf('postgresql.conf', "oauth.ca_file = '" . $good->ca_file . "'\n");
$node->reload;
sleep(1);
lc_sql($node, "SELECT oauth.register_provider('h_tls', 'https://127.0.0.1:" . $tls->port . "/token', 'cid', 'sec-330')");
$id = lc_sql($node, "SELECT oauth.create_connection('ws1', 'h_tls', 'acct-tls', 'at-tls', 'rt-330-tls', now() - interval '1 minute')");
like(lc_sql($node, "SELECT oauth.refresh('ws1', '$id')"), qr/^transient_failure: TLS error/,
	'an untrusted certificate: TLS error');
is(scalar @{ $tls->stats->{requests} }, 0, '... and the provider saw no request');

$node->stop;
my $log = slurp_file($node->logfile);
unlike($log, qr/sec-330/, 'the client secret never reached the log');
unlike($log, qr/rt-330-/, 'no refresh token reached the log');
unlike($log, qr/at-(ok|neg|huge|nan|text|frac|bigint|status|ls|form|deep)\b/, 'no issued access token reached the log');
unlike($log, qr/^LOG:  forged/m, 'no forged log line');

done_testing();
