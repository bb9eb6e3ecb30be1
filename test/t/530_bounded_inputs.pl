# Attacker: a caller who passes huge identifiers (an 8,000-character
# workspace_id) to make the extension's own state changes fail: on 1.0 the
# NOTIFY payload grew past its limit, so revoke failed and the worker could
# not mark a dead grant, which was then re-sent to the provider forever.
# Now every door refuses identifiers beyond the documented limits (22001,
# empty 22023) before anything is sent or stored, and a row that already
# holds a huge value (stored before the limits, or restored) is still
# marked reauth_required after exactly one provider call, and revoked.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
my $node = oauth_node('bounded_inputs');
my $base = $p->base_url;
oauth_register($node, 'p1', $p->token_url, ", revoke_url => '$base/revoke'");
$p->add_code(code => 'code-530', grant => 'gcode530', redirect_uri => 'https://app.example/cb');

sub try { return oauth_psql($node, $_[0]) }
sub sql { return $node->safe_psql('postgres', $_[0]) }
my $ws257 = 'w' x 257;
my $ws256 = 'é' x 128;    # 256 bytes
my $ws_mb = 'é' x 129;    # 129 characters, 258 bytes

# ---- the doors: limits in bytes, a clear error, nothing sent or stored ----------
my $r = try("SELECT oauth.create_connection('$ws257', 'p1', 'a1', 'at', 'rt', now() + interval '1 hour')");
is($r->{sqlstate}, '22001', 'create_connection: a 257-byte workspace_id is refused (22001)');
like($r->{err}, qr/workspace_id is too long.*\n.*257 bytes; at most 256/, '... saying which and how long');
unlike($r->{err}, qr/w{20}/, '... without echoing the value');
is(try("SELECT oauth.create_connection('$ws_mb', 'p1', 'a1', 'at', 'rt', NULL)")->{sqlstate}, '22001',
	'create_connection: 129 two-byte characters (258 bytes) are refused');
like(sql("SELECT oauth.create_connection('$ws256', 'p1', 'a1', 'at-256', 'rt', now() + interval '1 hour')"),
	qr/^[0-9a-f-]{36}$/, 'create_connection: 256 bytes are accepted');
is(try("SELECT oauth.create_connection('ws1', 'p1', '" . ('a' x 257) . "', 'at', 'rt', NULL)")->{sqlstate},
	'22001', 'create_connection: a 257-byte provider_account_id is refused');
is(try("SELECT oauth.create_connection('ws1', 'p1', '', 'at', 'rt', NULL)")->{sqlstate}, '22023',
	'create_connection: an empty provider_account_id is refused (22023)');

my $before = $p->stats->{total};
$r = try("SELECT oauth.exchange_code('$ws257', 'p1', 'code-530', 'https://app.example/cb')");
is($r->{sqlstate}, '22001', 'exchange_code: a 257-byte workspace_id is refused');
is(try("SELECT oauth.exchange_code('ws1', 'p1', 'code-530', 'https://app.example/cb', "
		  . "provider_account_id => '" . ('a' x 257) . "')")->{sqlstate}, '22001',
	'exchange_code: a 257-byte provider_account_id is refused');
is(try("SELECT oauth.exchange_code('ws1', 'p1', '" . ('c' x 8193) . "', 'https://app.example/cb')")->{sqlstate},
	'22001', 'exchange_code: a code over 8 KiB is refused');
is(try("SELECT oauth.exchange_code('$ws257', 'p1', 'x', 'https://app.example/cb')")->{sqlstate}, '22001',
	'exchange_code: the workspace is checked before the code');
is(try("SELECT oauth.client_credentials('$ws257', 'p1')")->{sqlstate}, '22001',
	'client_credentials: a 257-byte workspace_id is refused');
is(try("SELECT oauth.bind_workspace('$ws257')")->{sqlstate}, '22001',
	'bind_workspace: a 257-byte workspace_id is refused');
is($p->stats->{total}, $before, 'nothing was sent to the provider');
is(sql("SELECT count(*) FROM oauth.code_redemptions"), '0', 'no code was claimed');
like(sql("SELECT oauth.exchange_code('ws1', 'p1', 'code-530', 'https://app.example/cb')"),
	qr/^[0-9a-f-]{36}$/, 'the refused code still works in a corrected call');

# an account id the provider sends beyond the limit is stored by its hash:
# the grant (whose code is spent) is never lost to the limit
$p->set_grant('glong530', extra => { id => 'i' x 300 });
$p->add_code(code => 'code-530b', grant => 'glong530', redirect_uri => 'https://app.example/cb');
my $cid = sql("SELECT oauth.exchange_code('ws1', 'p1', 'code-530b', 'https://app.example/cb')");
is(sql("SELECT provider_account_id = 'sha256:' || encode(sha256(convert_to(repeat('i', 300), 'UTF8')), 'hex') "
		  . "FROM oauth.connection_status WHERE id = '$cid'"), 't',
	'a 300-byte account id from the provider is stored as its SHA-256');

# ---- a row that already holds an 8,000-character workspace_id -------------------
# (stored before the limits, or restored): written directly, past the door
my $long = 'W' x 8000;
$p->set_grant('gdead530', mode => 'invalid_grant');
my $dead = oauth_create_conn($node, 'ws-short', 'p1', 'acct-dead', 'at-dead', 'gdead530.0',
	"now() - interval '1 minute'");
my $rev = oauth_create_conn($node, 'ws-short', 'p1', 'acct-rev', 'at-rev', 'grev530.0',
	"now() + interval '1 hour'");
sql("UPDATE oauth.connections SET workspace_id = '$long' WHERE id IN ('$dead', '$rev')");
is(sql("SELECT count(*) FROM oauth.connection_status WHERE octet_length(workspace_id) = 8000"), '2',
	'two connections hold an 8,000-byte workspace_id');

my $l = oauth_session($node);
$l->query('LISTEN oauth_connection_state');
is(sql("SELECT outcome FROM oauth.refresh_due() WHERE connection_id = '$dead'"), 'reauth_required',
	'the dead grant is marked reauth_required');
my $st = oauth_status($node, $dead);
is($st->{state}, 'reauth_required', 'its state is reauth_required');
is(sql("SELECT count(*) FROM oauth.events WHERE connection_id = '$dead' AND event = 'reauth_required'"), '1',
	'with its event');
is(sql("SELECT count(*) FROM oauth.refresh_due() WHERE connection_id = '$dead'"), '0',
	'it is not due any more');
$r = try("SELECT oauth.valid_token('$long', '$dead')");
is($r->{sqlstate}, 'OA002', 'valid_token: OA002, not another refresh');
is($p->stats->{by_grant}{gdead530}, 1, 'the provider saw exactly one refresh request for the dead grant');

$r = try("SELECT oauth.revoke('$long', '$rev')");
is($r->{ret}, 0, 'revoke of the connection with the long workspace_id works') or diag($r->{err});
is(oauth_status($node, $rev)->{state}, 'revoked', 'it is revoked');

my $seen = '';
ok(oauth_poll(10, 0.1, sub {
			$seen .= $l->query('SELECT 1')->{out};
			my @n = $seen =~ /payload "\d+"/g;
			return @n >= 2;
		}), 'both state changes were notified (payload: an event id)');
unlike($seen, qr/WWWW/, 'the notifications do not carry the workspace');
$l->quit;

done_testing();
