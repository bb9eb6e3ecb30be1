# Attacker: SQL injected into a bound application session that brings a
# function of its own (pg_temp needs no privilege beyond TEMP, which every
# role has on a default database) and filters connection_status with it.
# Without a security barrier the planner may run the attacker's function on
# rows of other workspaces before the view's own filter drops them; with it,
# the function sees only rows the binding lets through.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthLifecycleUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = lc_node('status_view_leak');
lc_sql($node, <<'SQL');
CREATE ROLE app LOGIN;
GRANT USAGE ON SCHEMA oauth TO app;
GRANT EXECUTE ON FUNCTION oauth.bind_workspace(text) TO app;
GRANT SELECT ON oauth.connection_status TO app;
SELECT oauth.register_provider('p1', 'https://auth.example.com/token', 'cid', 'secret-512');
SQL
lc_sql($node, "SELECT oauth.create_connection('ws-a', 'p1', 'a1', 'at-a1', 'rt-a1', now() + interval '1 hour')");
for my $i (1 .. 20)
{
	lc_sql($node, "SELECT oauth.create_connection('ws-other-$i', 'p1', 'acct-other-$i', 'at-o$i', 'rt-o$i', now() + interval '1 hour')");
}
lc_sql($node, 'ANALYZE oauth.connections');

my ($out, $err) = ('', '');
$node->psql('postgres', <<'SQL', stdout => \$out, stderr => \$err, extra_params => [ '-U', 'app' ]);
-- a cheap function the planner would rather run first
CREATE FUNCTION pg_temp.peek(ws text, acct text) RETURNS boolean
LANGUAGE plpgsql COST 0.0001 AS $$
BEGIN
    RAISE NOTICE 'peek: % %', ws, acct;
    RETURN true;
END $$;
BEGIN;
SELECT oauth.bind_workspace('ws-a');
SELECT count(*) FROM oauth.connection_status WHERE pg_temp.peek(workspace_id, provider_account_id);
SELECT count(*) FROM oauth.connection_status s WHERE pg_temp.peek(s.workspace_id, s.provider_account_id) AND s.state = 'active';
COMMIT;
SQL
like($err, qr/peek: ws-a a1/, "the attacker's function runs on the bound workspace's row");
unlike($err, qr/ws-other|acct-other/, '... and never on another workspace\'s row');
like($out, qr/^1$/m, 'the bound query counts one row');

$node->stop;
done_testing();
