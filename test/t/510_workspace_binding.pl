# Attacker: SQL injected into the application's session (the README's `app`
# role), after the request handler bound the transaction to its workspace
# with oauth.bind_workspace().  It tries to read every tenant's tokens
# through connection_status, to re-bind, to undo the binding (set_config,
# SET, RESET ALL, DISCARD ALL, ROLLBACK TO SAVEPOINT, ALTER ROLE) and to
# report another tenant's token as rejected.  Every attempt fails, nothing
# of another workspace is seen, and with oauth.require_workspace on (set by
# an admin for the role) nothing is served without a binding.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthLifecycleUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = lc_node('workspace_binding');
lc_sql($node, <<'SQL');
CREATE ROLE app LOGIN;
GRANT USAGE ON SCHEMA oauth TO app;
GRANT EXECUTE ON FUNCTION oauth.bind_workspace(text),
                          oauth.valid_token(text, uuid, interval),
                          oauth.token_rejected(text, uuid, text) TO app;
GRANT SELECT ON oauth.connection_status TO app;
SELECT oauth.register_provider('p1', 'https://auth.example.com/token', 'cid', 'secret-510');
SQL
my %id;
for my $c ([qw(a1 ws-a)], [qw(a2 ws-a)], [qw(b1 ws-b)])
{
	my ($acct, $ws) = @$c;
	$id{$acct} = lc_sql($node, "SELECT oauth.create_connection('$ws', 'p1', '$acct', "
		  . "'at-$acct-510', 'rt-$acct-510', now() + interval '1 hour')");
}

# Run $sql as the app role in its own login session, going on after errors;
# returns output, stderr and the SQLSTATEs of the errors in order.
sub as_app
{
	my ($sql) = @_;
	my ($out, $err) = ('', '');
	my $ret = $node->psql('postgres', $sql,
		stdout => \$out, stderr => \$err, on_error_stop => 0,
		extra_params => [ '-U', 'app', '-v', 'VERBOSITY=verbose' ]);
	my @states = $err =~ /ERROR:\s+([0-9A-Z]{5}):/g;
	return { ret => $ret, out => $out, err => $err, states => join(' ', @states) };
}

# ---- the attack of issue 14: one query dumps every tenant's tokens -------------
my $r = as_app("SELECT string_agg(oauth.valid_token(workspace_id, id), ',' ORDER BY 1) FROM oauth.connection_status");
like($r->{out}, qr/at-b1-510/, 'unbound, without require_workspace: every workspace is visible (as before)');

$r = as_app(<<'SQL');
BEGIN;
SELECT oauth.bind_workspace('ws-a');
SELECT string_agg(oauth.valid_token(workspace_id, id), ',' ORDER BY 1) FROM oauth.connection_status;
COMMIT;
SQL
like($r->{out}, qr/^at-a1-510,at-a2-510$/m, 'bound: the same query returns the bound workspace\'s tokens only');
unlike($r->{out}, qr/at-b1/, '... and none of the other workspace');
is($r->{states}, '', '... without an error');

# ---- nothing later in the transaction undoes or widens the binding ---------------
$r = as_app(<<"SQL");
BEGIN;
SELECT oauth.bind_workspace('ws-a');
SAVEPOINT s;
SELECT oauth.bind_workspace('ws-b');
ROLLBACK TO s;
SELECT set_config('oauth.require_workspace', 'off', false);
ROLLBACK TO s;
SET oauth.require_workspace = off;
ROLLBACK TO s;
SELECT set_config('oauth.workspace', 'ws-b', false);
ROLLBACK TO s;
SELECT oauth.bind_workspace('ws-a');
RESET ALL;
DISCARD ALL;
ROLLBACK TO s;
SELECT 'view:' || count(*) FILTER (WHERE workspace_id <> 'ws-a') || '/' || count(*) FROM oauth.connection_status;
SELECT oauth.valid_token('ws-b', '$id{b1}');
ROLLBACK TO s;
SELECT oauth.token_rejected('ws-b', '$id{b1}', 'at-b1-510');
ROLLBACK TO s;
SELECT oauth.bind_workspace('ws-b'), oauth.valid_token('ws-b', '$id{b1}');
ROLLBACK TO s;
SELECT 'mine:' || oauth.valid_token('ws-a', '$id{a1}');
COMMIT;
SQL
is($r->{states}, '42501 42501 42501 42602 25001 OA001 OA001 42501',
	'second bind, set_config, SET, an invented setting, DISCARD ALL, another workspace: all refused')
  or diag($r->{err});
like($r->{err}, qr/already bound to another workspace/, 'the second bind says why');
like($r->{out}, qr/^view:0\/2$/m, 'after RESET ALL and the rest, the view still shows the bound workspace only');
like($r->{out}, qr/^mine:at-a1-510$/m, 'the bound workspace is still served');
unlike($r->{out} . $r->{err}, qr/at-b1|rt-b1|secret-510/, 'nothing of the other workspace leaked');

# a binding made in a subtransaction that is rolled back stays
$r = as_app(<<"SQL");
BEGIN;
SAVEPOINT s;
SELECT oauth.bind_workspace('ws-a');
ROLLBACK TO s;
SELECT 'view:' || count(*) FROM oauth.connection_status;
SELECT oauth.valid_token('ws-b', '$id{b1}');
ROLLBACK;
SELECT 'next:' || count(*) FROM oauth.connection_status;
SQL
like($r->{out}, qr/^view:2$/m, 'ROLLBACK TO SAVEPOINT does not undo a binding');
is($r->{states}, 'OA001', 'another workspace is still not found');
like($r->{out}, qr/^next:3$/m, 'the next transaction is not bound');

# autocommit: one statement is one transaction
$r = as_app("SELECT oauth.valid_token('ws-a', '$id{a1}') FROM oauth.bind_workspace('ws-a')");
is($r->{out}, 'at-a1-510', 'autocommit: valid_token FROM oauth.bind_workspace(...)');
$r = as_app("SELECT oauth.bind_workspace('ws-a'), oauth.valid_token('ws-a', '$id{a1}')");
is($r->{out}, '|at-a1-510', 'autocommit: bind_workspace first in the target list');
$r = as_app("SELECT oauth.valid_token('ws-b', '$id{b1}') FROM oauth.bind_workspace('ws-a')");
is($r->{states}, 'OA001', 'autocommit: another workspace is not found');
$r = as_app("SELECT 'next:' || count(*) FROM oauth.connection_status");
is($r->{out}, 'next:3', 'the autocommit binding ended with its statement');

# ---- require_workspace: set by an admin for the role; binding is mandatory ----------
lc_sql($node, 'ALTER ROLE app SET oauth.require_workspace = on');
$r = as_app(<<"SQL");
SHOW oauth.require_workspace;
SELECT oauth.valid_token('ws-a', '$id{a1}');
SELECT oauth.token_rejected('ws-a', '$id{a1}', 'at-a1-510');
SELECT 'view:' || count(*) FROM oauth.connection_status;
SET oauth.require_workspace = off;
SELECT set_config('oauth.require_workspace', 'off', false);
RESET oauth.require_workspace;
RESET ALL;
ALTER ROLE app SET oauth.require_workspace = off;
ALTER ROLE app RESET oauth.require_workspace;
ALTER ROLE app RESET ALL;
SHOW oauth.require_workspace;
SELECT oauth.valid_token('ws-a', '$id{a1}');
SQL
like($r->{out}, qr/\Aon\n/, 'the role logs in with require_workspace on');
like($r->{out}, qr/^view:0$/m, 'unbound: the view shows no rows');
like($r->{out}, qr/\non$/, 'after SET, set_config, RESET, RESET ALL and ALTER ROLE by the role: still on');
is($r->{states}, '42501 42501 42501 42501 42501 42501 42501 42501',
	'unbound valid_token and token_rejected, and every way to turn it off: 42501') or diag($r->{err});
like($r->{err}, qr/HINT:\s+Call oauth.bind_workspace/, 'the error says to bind first');
unlike($r->{out}, qr/at-a1/, 'no token served unbound');
is($node->safe_psql('postgres',
		"SELECT setconfig FROM pg_db_role_setting WHERE setrole = 'app'::regrole"),
	'{oauth.require_workspace=on}', 'the role setting is unchanged');

$r = as_app(<<"SQL");
BEGIN;
SELECT oauth.bind_workspace('ws-a');
SELECT 'view:' || string_agg(workspace_id, ',') FROM oauth.connection_status;
SELECT 'tok:' || oauth.valid_token('ws-a', '$id{a1}');
SELECT oauth.token_rejected('ws-a', '$id{a1}', 'not-the-stored-token');
COMMIT;
SELECT oauth.valid_token('ws-a', '$id{a1}');
SELECT 'view:' || count(*) FROM oauth.connection_status;
SELECT oauth.bind_workspace(repeat('x', 257));
SQL
like($r->{out}, qr/^view:ws-a,ws-a$/m, 'bound: the view shows the bound workspace');
like($r->{out}, qr/^tok:at-a1-510$/m, 'bound: the token is served');
like($r->{out}, qr/^view:0$/m, 'the binding lasted for its transaction only: the view is empty again');
is($r->{states}, '42501 22001', 'the next transaction is refused unbound; an over-long workspace cannot be bound')
  or diag($r->{err});

# an admin (no require_workspace, no binding) sees everything, as before
is($node->safe_psql('postgres', 'SELECT count(*) FROM oauth.connection_status'), '3',
	'an admin without a binding sees every workspace');

done_testing();
