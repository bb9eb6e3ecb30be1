# Attacker: a provider that echoes what it was sent (a debugging proxy, an
# error page that quotes the request, a careless error_description).
# Whatever it echoes, and however it spells it, no secret the call sent
# reaches anything another role reads: oauth.connections.last_refresh_error
# (the application reads it through connection_status), oauth.events, the
# errors callers get (OA002/OA003/OA004 detail), the providers' pause
# reasons, or the server log (issue 14, item 3; README "Redaction").
#
# The test provider (test/provider.py, mode echo) echoes each secret (the
# client secret, the refresh token, the authorization code, the
# code_verifier, a revoked token, the Basic header's value, the base64 of the
# raw client_id:secret pair), each in each encoded form (raw, URL-encoded
# with %20 or + and upper or lower hex, JSON-escaped with and without \/ and
# \uXXXX), and the whole request headers and body, padded so that the echo
# starts at every offset around each clipping limit (120 for an
# error_description, 100 for a transient one, 60 for an error code), in
# error_description, in error, in a form body and in a text body; for
# client_secret_post and client_secret_basic, with form and JSON request
# bodies; through the worker's refreshes and through exchange_code,
# client_credentials and revoke, which run in the caller's session.
#
# The assertion: no 8-byte run of any form of any secret (the provider lists
# every form it saw, GET /_control/echoed) appears anywhere above.  Eight
# bytes is the redaction window (src/answer.h, REDACT_WINDOW): a provider
# that cuts its own echo, or a clip that cuts ours, must not leave a
# recognisable piece; shorter runs of a random 40-byte secret say little.
#
# Before the fix: text was clipped before it was redacted (a secret
# straddling the cut left its first bytes), and the Basic header's value was
# not a secret at all.
use strict;
use warnings;

use Encode qw(encode_utf8);
use FindBin;
use lib "$FindBin::RealBin/..";
use JSON::PP;
use OAuthLifecycleUtil;
use OAuthProvider;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
my $base = $p->base_url;
# log_statement off and no STATEMENT lines: the test's own SQL carries the
# secrets it plants, that is not the extension's leak
my $node = lc_node('redaction',
	conf => "log_min_messages = debug1\nlog_statement = none\nlog_min_error_statement = panic\n");

sub sql { return lc_sql($node, encode_utf8($_[0])) }
sub lq { return lc_quote($_[0]) }

# secrets with every character an encoder treats differently
my $csecret = "Cs/7+q%2e \"Kx\\Rt\x{e9}<&>~*!(Vw)'Zj_0.Lm-Np9Hd";
my $rt_mid = "+a=b&c\"d<e>~*!/Rq";

sql("CREATE TABLE cases (tag text PRIMARY KEY, ws text, id uuid, kind text, err text)");

my %limit = (desc => 120, transient => 100, code => 60, form => 120, text => 0);
my @secret_templates = map { "{client_secret|$_}" }
  qw(raw url url_lower url_plus url_plus_lower json json_slash json_u json_u_upper);
push @secret_templates, map { "{refresh_token|$_}" } qw(raw url json_slash json_u);
my @basic_templates = ('{authorization}', '{authorization|url}', '{authorization|json_slash}',
	'{basic_raw}', '{basic_raw|url}');
my @whole = ('{headers}', '{body}');

# the behaviour of one echo case
sub echo_behaviour
{
	my ($case, $template, $pad) = @_;
	my %b = (mode => 'echo', echo => $template, echo_pad => $pad);
	if ($case eq 'desc') { %b = (%b, echo_in => 'error_description', echo_error => 'invalid_grant') }
	elsif ($case eq 'transient')
	{
		%b = (%b, echo_in => 'error_description', echo_error => 'temporarily_unavailable',
			echo_status => 400);
	}
	elsif ($case eq 'code') { %b = (%b, echo_in => 'error') }
	elsif ($case eq 'form') { %b = (%b, echo_in => 'form', echo_error => 'invalid_grant') }
	else { %b = (%b, echo_in => 'text', echo_status => 400) }
	return %b;
}

# pads that put the echo's start at every offset around a limit
sub pads
{
	my ($l) = @_;
	return $l == 0 ? (0, 40) : (($l - 20) .. ($l + 5));
}

my $n = 0;
for my $auth (qw(client_secret_post client_secret_basic))
{
	for my $fmt (qw(form json))
	{
		my $prov = "p_${auth}_$fmt";
		sql("SELECT oauth.register_provider('$prov', '$base/token', 'cid', " . lq($csecret)
			  . ", auth_method => '$auth', body_format => '$fmt', revoke_url => '$base/revoke')");
		my @templates = (@secret_templates, @whole,
			$auth eq 'client_secret_basic' ? @basic_templates : ());
		my (@rows, @grants);
		for my $case (qw(desc transient code form text))
		{
			# every form in error_description; the main ones elsewhere
			my @t = $case eq 'desc' || $case eq 'text' ? @templates
			  : ('{client_secret}', '{refresh_token}', '{client_secret|json_u}', @whole,
				$auth eq 'client_secret_basic' ? ('{authorization}') : ());
			for my $template (@t)
			{
				for my $pad (pads($limit{$case}))
				{
					my $tag = 'c' . $n++;
					my $grant = "rT/$tag$rt_mid" . "Zx4Kp9Lm2Vb";
					push @rows, '(' . join(', ', lq($tag), lq("ws-$prov"), lq($prov), lq("$grant.0")) . ')';
					push @grants, { grant => $grant, echo_behaviour($case, $template, $pad) };
				}
			}
		}
		$p->control('grants', { grants => \@grants });
		sql("INSERT INTO cases (tag, ws, id, kind) SELECT tag, ws, "
			  . "oauth.create_connection(ws, prov, tag, 'at-old', rt, now() - interval '1 minute'), 'refresh' "
			  . "FROM (VALUES " . join(', ', @rows) . ") v(tag, ws, prov, rt)");
	}
}
note("$n refresh cases");

# every case: the application asks for a token; the refresh fails with the echo
sql(<<'SQL');
DO $$
DECLARE
    r record;
    m text; d text; h text;
BEGIN
    FOR r IN SELECT * FROM cases WHERE kind = 'refresh' ORDER BY tag LOOP
        BEGIN
            PERFORM oauth.valid_token(r.ws, r.id);
            UPDATE cases SET err = 'no error' WHERE tag = r.tag;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
            UPDATE cases SET err = concat_ws(E'\n', SQLSTATE, m, d, h) WHERE tag = r.tag;
        END;
    END LOOP;
END $$;
SQL
is(sql("SELECT count(*) FROM cases WHERE kind = 'refresh' AND err IS NOT NULL AND err <> 'no error'"),
	$n, 'every echo case failed its refresh and the caller got an error');
is(sql("SELECT count(*) FROM cases WHERE kind = 'refresh' AND err LIKE 'OA002%'") > 0
	  && sql("SELECT count(*) FROM cases WHERE kind = 'refresh' AND err LIKE 'OA003%'") > 0,
	1, 'both reauth (OA002) and transient (OA003) answers were exercised');
like(sql("SELECT string_agg(last_refresh_error, ' ') FROM oauth.connections"), qr/\[redacted\]/,
	'the echoes were redacted (not merely clipped away)');

# a provider-class answer: pause_reason, OA004 detail and the LOG line
my @pause_rows;
my @pause_grants;
for my $pad (pads(120))
{
	my $tag = 'p' . $pad;
	my $grant = "rT/pause$pad$rt_mid" . "Qw8Er5Ty1";
	push @pause_rows, '(' . join(', ', lq($tag), lq($grant . '.0')) . ')';
	push @pause_grants,
	  { grant => $grant, mode => 'echo', echo => '{client_secret}{refresh_token}', echo_pad => $pad,
		echo_in => 'error_description', echo_error => 'invalid_client', echo_status => 401 };
}
$p->control('grants', { grants => \@pause_grants });
sql("SELECT oauth.register_provider('p_pause', '$base/token', 'cid', " . lq($csecret) . ")");
sql("INSERT INTO cases (tag, ws, id, kind) SELECT tag, 'ws-pause', "
	  . "oauth.create_connection('ws-pause', 'p_pause', tag, 'at-old', rt, now() - interval '1 minute'), 'pause' "
	  . "FROM (VALUES " . join(', ', @pause_rows) . ") v(tag, rt)");
# one transaction each: the pause and the resume must be seen by the worker
for my $tag (map { 'p' . $_ } pads(120))
{
	sql(<<"SQL");
DO \$\$
DECLARE
    r record;
    m text; d text; h text; reason text;
BEGIN
    SELECT * INTO r FROM cases WHERE tag = '$tag';
    PERFORM oauth.valid_token(r.ws, r.id);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
    SELECT pause_reason INTO reason FROM oauth.providers WHERE name = 'p_pause';
    UPDATE cases SET err = concat_ws(E'\\n', SQLSTATE, m, d, h, reason) WHERE tag = '$tag';
END \$\$;
SQL
	sql("SELECT oauth.register_provider('p_pause', '$base/token', 'cid', " . lq($csecret) . ")");
}
is(sql("SELECT count(*) FROM cases WHERE kind = 'pause' AND err LIKE 'OA004%'"), scalar(@pause_rows),
	'invalid_client echoes paused the provider each time (OA004)');
like(slurp_file($node->logfile), qr/provider "p_pause" paused: invalid_client: \.+\[redacted\]/,
	'the LOG line of a pause carries the redacted echo');
is(scalar(() = slurp_file($node->logfile) =~ /provider "p_pause" paused/g), scalar(@pause_rows),
	'each echo reached the provider and paused it');

# the calls made in the caller's session: exchange_code, client_credentials, revoke
my $i = 0;
my $npads = () = pads(120);
for my $prov (qw(p_client_secret_post_form p_client_secret_basic_json))
{
	my @x;
	for my $template ('{code}', '{code_verifier}', '{client_secret}', '{body}', '{headers}')
	{
		for my $pad (pads(120))
		{
			my $code = "AuthCode/+&=\"<>~*!" . $i++ . "Kd8Jf2Mn";
			my $verifier = "vErIfIeR-" . ('k3Xq9' x 8) . "-$i";
			my $grant = "gx$i";
			$p->add_code(code => $code, grant => $grant);
			$p->control('grant', { grant => $grant, mode => 'echo', echo => $template,
				echo_pad => $pad });
			push @x, "oauth.exchange_code('ws-x', '$prov', " . lq($code)
			  . ", 'https://app.example/cb', code_verifier => " . lq($verifier) . ")";
		}
	}
	my $body = '';
	my $k = 0;
	for my $call (@x)
	{
		$k++;
		$body .= "BEGIN PERFORM $call; EXCEPTION WHEN OTHERS THEN GET STACKED DIAGNOSTICS "
		  . "m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL; INSERT INTO cases VALUES "
		  . "('x-$prov-$k', NULL, NULL, 'exchange', concat_ws(E'\\n', SQLSTATE, m, d)); END;\n";
	}
	sql("DO \$\$ DECLARE m text; d text; BEGIN\n$body END \$\$");
	is(sql("SELECT count(*) FROM cases WHERE kind = 'exchange' AND tag LIKE 'x-$prov-%' AND err LIKE 'OA002%'"),
		scalar(@x), "$prov: every echoing code exchange failed with OA002");

	$k = 0;
	for my $pad (pads(120))
	{
		$k++;
		$p->set_default(mode => 'echo', echo => '{client_secret}{body}', echo_pad => $pad,
			echo_in => 'error_description', echo_error => 'invalid_grant');
		sql("DO \$\$ DECLARE m text; d text; BEGIN PERFORM oauth.client_credentials('ws-cc', '$prov'); "
			  . "EXCEPTION WHEN OTHERS THEN GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL; "
			  . "INSERT INTO cases VALUES ('cc-$prov-$k', NULL, NULL, 'cc', concat_ws(E'\\n', SQLSTATE, m, d)); END \$\$");
	}
	$p->set_default(mode => 'ok', echo => '');
	is(sql("SELECT count(*) FROM cases WHERE kind = 'cc' AND tag LIKE 'cc-$prov-%' AND err LIKE 'OA002%'"),
		$npads, "$prov: every echoing client-credentials grant failed with OA002");

	$k = 0;
	for my $pad (pads(120))
	{
		$k++;
		my $tok = "RevokeMe/+&=\"<>~*!$k" . "Hq7Wn3Ls";
		my $id = sql("SELECT oauth.create_connection('ws-rv', '$prov', 'rv$k', 'at-rv', " . lq($tok)
			  . ", now() + interval '1 hour')");
		$p->control('revoke_status', { status => 400, echo => '{token}{client_secret}{body}',
			echo_pad => $pad, echo_in => 'error_description' });
		sql("SELECT oauth.revoke('ws-rv', '$id')");
	}
	$p->control('revoke_status', { status => 200 });
	is(sql("SELECT count(*) FROM oauth.events WHERE event = 'revoked' AND provider = '$prov' "
		  . "AND detail->>'remote' = 'failed'"), $npads, "$prov: every echoing revocation failed");
}

# What must never appear: every 8-byte run of every form of every secret.
my @forms = map { encode_utf8($_) } @{ $p->_get('/_control/echoed')->{forms} };
push @forms, encode_utf8($csecret);
my %gram;
for my $f (@forms)
{
	next if length($f) < 8;
	$gram{ substr($f, $_, 8) } = $f for 0 .. length($f) - 8;
}
ok(scalar(@forms) > 50, scalar(@forms) . ' secret forms were echoed');

my %where = (
	'last_refresh_error' => sql("SELECT string_agg(coalesce(last_refresh_error, ''), E'\\n') FROM oauth.connections"),
	'connection_status' => sql("SELECT string_agg(s::text, E'\\n') FROM oauth.connection_status s"),
	'events (as text)' => sql("SELECT string_agg(detail::text, E'\\n') FROM oauth.events"),
	'events (values)' => sql("SELECT string_agg(v, E'\\n') FROM oauth.events, jsonb_each_text(detail) j(k, v)"),
	'errors to callers' => sql("SELECT string_agg(err, E'\\n') FROM cases"),
	'pause reasons' => sql("SELECT string_agg(coalesce(pause_reason, ''), E'\\n') FROM oauth.providers"),
	'server log' => slurp_file($node->logfile));

for my $w (sort keys %where)
{
	my $text = $where{$w};
	my @leaks;
	for my $k (0 .. length($text) - 8)
	{
		my $g = substr($text, $k, 8);
		push @leaks, $g if exists $gram{$g};
	}
	is(scalar(@leaks), 0, "$w: no 8-byte run of any secret form")
	  or diag("leaked: " . join(' | ', (sort { $a cmp $b } keys %{ { map { $_ => 1 } @leaks } })[0 .. 9]));
}

$node->stop;
done_testing();
