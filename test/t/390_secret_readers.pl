# Attacker: whoever reads what the server writes down: the log at debug5,
# oauth.events, last_refresh_error, errors returned to callers, and
# pg_stat_activity (a monitoring role, a log pipeline), helped by a provider
# that echoes its request (client secret, refresh token, authorization
# code) back in error_description and in fields the extension keeps.  No
# secret reaches any of them: echoed secrets are redacted before a message,
# an event or a kept field is made (src/provider.c), and the worker's and
# callers' pg_stat_activity never show one.  (test/t/090_no_secret_leak.pl
# covers the ordinary lifecycle; this file covers the hostile echo.)
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthLifecycleUtil;
use OAuthTestUtil qw(oauth_session);
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my ($dir, $port) = lc_hostile_provider();
my $base = "http://127.0.0.1:$port";

my $tag = lc(unpack('H*', pack('N', int(rand(2**32)))));
my $cs = "cs390$tag";
my @secrets = ($cs, "rt390$tag", "code390$tag", "rtb390$tag", "rts390$tag");
my $node = lc_node('readers', conf => "log_min_messages = debug5\nlog_statement = none\n"
	  . "log_min_error_statement = panic\nlog_error_verbosity = verbose\n");
my $key = slurp_file($node->data_dir . '/oauth_tokens.keys');
($key) = $key =~ /^k1:(\S+)/;
push @secrets, $key;

my @seen;    # everything a reader could see
sub try_sql { my $r = lc_try($node, $_[0]); push @seen, $r->{out}, $r->{err}; return $r }

lc_sql($node, "SELECT oauth.register_provider('echo', '$base/echo', 'cid', '$cs', revoke_url => '$base/echo')");
lc_sql($node, "SELECT oauth.register_provider('echo_b', '$base/echo', 'cid', '$cs', auth_method => 'client_secret_basic')");
lc_sql($node, "SELECT oauth.register_provider('echo_ok', '$base/echo_ok', 'cid', '$cs')");
lc_sql($node, "SELECT oauth.register_provider('slow', '$base/slow', 'cid', '$cs')");

my $id = lc_sql($node, "SELECT oauth.create_connection('ws1', 'echo', 'a1', 'at-old', 'rt390$tag', now() - interval '1 minute')");
my $r = try_sql("SELECT oauth.refresh('ws1', '$id')");
like($r->{out}, qr/^transient_failure: HTTP 400: invalid_request: got .*\[redacted\]/,
	'an echoed request becomes a redacted message') or diag($r->{out});
my $idb = lc_sql($node, "SELECT oauth.create_connection('ws1', 'echo_b', 'a2', 'at-old', 'rtb390$tag', now() - interval '1 minute')");
try_sql("SELECT oauth.refresh('ws1', '$idb')");
try_sql("SELECT oauth.valid_token('ws1', '$id')");
$r = try_sql("SELECT oauth.exchange_code('ws1', 'echo', 'code390$tag', 'https://app.example/cb')");
is($r->{sqlstate}, 'OA003', 'exchange_code against the echo: OA003');
like($r->{err}, qr/\[redacted\]/, '... with the echoed code redacted');
try_sql("SELECT oauth.revoke('ws1', '$id')");

my $ok = lc_sql($node, "SELECT oauth.create_connection('ws1', 'echo_ok', 'a3', 'at-old', 'rts390$tag', now() - interval '1 minute')");
is(try_sql("SELECT oauth.refresh('ws1', '$ok')")->{out}, 'refreshed', 'an echo inside a success answer');
like(lc_sql($node, "SELECT metadata->>'instance_url' FROM oauth.connection_status WHERE id = '$ok'"),
	qr/^https:\/\/x\/\[redacted\]$/, '... the echoed refresh token is redacted from the kept field');

# pg_stat_activity while a refresh is in flight (the provider answers after 3 s)
my $slow = lc_sql($node, "SELECT oauth.create_connection('ws1', 'slow', 'a4', 'at-old', 'rts390$tag-2', now() - interval '1 minute')");
push @secrets, "rts390$tag-2";
my $s = oauth_session($node);
$s->send("SELECT oauth.valid_token('ws1', '$slow')");
for (1 .. 20)
{
	push @seen, lc_sql($node, "SELECT string_agg(concat_ws(' ', backend_type, application_name, state, "
		  . "wait_event, query), E'\\n') FROM pg_stat_activity");
	usleep(100_000);
}
is($s->wait(30)->{out}, 'at-slow', 'the slow refresh finished');
$s->quit;

push @seen, lc_sql($node, "SELECT string_agg(concat_ws(' ', workspace_id, provider, event, detail), E'\\n') FROM oauth.events");
push @seen, lc_sql($node, "SELECT string_agg(row_to_json(c)::text, E'\\n') FROM oauth.connection_status c");
push @seen, lc_sql($node, "SELECT string_agg(coalesce(pause_reason, ''), ' ') FROM oauth.providers");
$node->stop;
my $log = slurp_file($node->logfile);
my $all = join("\n", @seen);
cmp_ok(length($log), '>', 50_000, 'the debug5 log is substantial');
for my $secret (@secrets)
{
	unlike($all, qr/\Q$secret\E/, "no reader sees $secret in errors, events, status or pg_stat_activity");
	unlike($log, qr/\Q$secret\E/, "the log never holds $secret");
}
done_testing();
