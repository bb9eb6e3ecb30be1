# Attacker: any role that can connect, with no grant at all, listening on
# oauth_connection_state (LISTEN needs no privilege).  A connection's grant
# dies (the worker marks it reauth_required), an admin revokes another and
# re-authorizes the first.  The listener gets three notifications whose
# payloads are bare event ids: no workspace, connection, account, provider
# or error code.  It cannot resolve them (42501); the application role
# resolves them with oauth.connection_event() for its bound workspace only.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
my $node = oauth_node('notify_payloads');
oauth_register($node, 'prov-secret-520', $p->token_url, ", revoke_url => '" . $p->base_url . "/revoke'");
$node->safe_psql('postgres', <<'SQL');
CREATE ROLE nobody LOGIN;
CREATE ROLE app LOGIN;
GRANT USAGE ON SCHEMA oauth TO app;
GRANT EXECUTE ON FUNCTION oauth.bind_workspace(text), oauth.valid_token(text, uuid, interval),
                          oauth.connection_event(bigint) TO app;
ALTER ROLE app SET oauth.require_workspace = on;
SQL
$p->set_grant('gdead520', mode => 'invalid_grant');
my $dead = oauth_create_conn($node, 'ws-secret-520', 'prov-secret-520', 'acct-secret-520',
	'at-dead-520', 'gdead520.0', "now() - interval '1 minute'");
my $rev = oauth_create_conn($node, 'ws-secret-520', 'prov-secret-520', 'acct-rev-520',
	'at-rev-520', 'grev520.0', "now() + interval '1 hour'");

my $l = oauth_session($node);
my $r = $l->query('SET SESSION AUTHORIZATION nobody; LISTEN oauth_connection_state; SELECT current_user');
is($r->{out}, 'nobody', 'a role without any grant listens');

# three state changes
$r = oauth_psql($node, "SELECT oauth.valid_token('ws-secret-520', '$dead')");
is($r->{sqlstate}, 'OA002', 'the dead grant is marked (OA002)');
$node->safe_psql('postgres', "SELECT oauth.revoke('ws-secret-520', '$rev')");
$node->safe_psql('postgres', "SELECT oauth.reauthorize('ws-secret-520', '$dead', 'at-new-520', "
	  . "'gnew520.0', now() + interval '1 hour')");

my $seen = '';
ok( oauth_poll(
		20, 0.1,
		sub {
			$seen .= $l->query('SELECT 1')->{out};
			my @n = $seen =~ /Asynchronous notification "oauth_connection_state"/g;
			return @n >= 3;
		}),
	'the listener got three notifications');
my @payloads = $seen =~ /Asynchronous notification "oauth_connection_state" with payload "([^"]*)"/g;
is(scalar(@payloads), 3, 'three payloads');
is(scalar(grep { /^[0-9]{1,19}$/ } @payloads), 3, 'each payload is a bare event id') or diag($seen);
unlike($seen, qr/ws-secret|acct-|prov-secret|\Q$dead\E|\Q$rev\E|invalid_grant|reauth|revoked|at-/,
	'the listener learns no workspace, connection, account, provider, state or error');

# the listener cannot resolve them
$r = $l->query("SELECT * FROM oauth.connection_event($payloads[0])");
is($r->{sqlstate}, '42501', 'the role without grants cannot resolve an event');
$l->quit;

# the superuser (and an admin) sees what each one was
is( $node->safe_psql('postgres',
		"SELECT string_agg(e.state || ':' || e.connection_id, ' ' ORDER BY e.event_id) "
		  . "FROM unnest('{" . join(',', @payloads) . "}'::bigint[]) i, oauth.connection_event(i) e"),
	"reauth_required:$dead revoked:$rev active:$dead",
	'the ids resolve to reauth_required, revoked, active of the right connections');
is($node->safe_psql('postgres', "SELECT error FROM oauth.connection_event($payloads[0])"),
	'invalid_grant', 'with the error code of the dead grant');

# the application: its bound workspace only; unbound (require_workspace): refused
sub as_app
{
	my ($sql) = @_;
	my ($out, $err) = ('', '');
	$node->psql('postgres', $sql, stdout => \$out, stderr => \$err, on_error_stop => 0,
		extra_params => [ '-U', 'app', '-v', 'VERBOSITY=verbose' ]);
	my @states = $err =~ /ERROR:\s+([0-9A-Z]{5}):/g;
	return { out => $out, err => $err, states => join(' ', @states) };
}
$r = as_app("BEGIN; SELECT oauth.bind_workspace('ws-secret-520') \\gset\n"
	  . "SELECT state || ':' || connection_id FROM oauth.connection_event($payloads[0]); COMMIT;");
is($r->{out}, "reauth_required:$dead", 'the app bound to the workspace learns which connection needs re-auth');
$r = as_app("BEGIN; SELECT oauth.bind_workspace('ws-other-520') \\gset\n"
	  . "SELECT count(*) FROM oauth.connection_event($payloads[0]); COMMIT;");
is($r->{out}, '0', 'bound to another workspace: nothing');
$r = as_app("SELECT * FROM oauth.connection_event($payloads[0])");
is($r->{states}, '42501', 'unbound, with require_workspace: refused');
unlike($r->{out}, qr/\Q$dead\E/, '... and nothing shown');
is($node->safe_psql('postgres', "SELECT count(*) FROM oauth.connection_event("
		  . "(SELECT max(id) FROM oauth.events WHERE event = 'created'))"),
	'0', 'an event that is not a state change does not resolve');

done_testing();
