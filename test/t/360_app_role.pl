# Attacker: an application role with the README's grants (EXECUTE on
# valid_token and token_rejected, SELECT on connection_status), trying every
# table, view, sequence and function of schema oauth that it was not
# granted, enumerated from the catalogue, plus the key file and other
# tenants' connections.  Every attempt is refused (42501, or OA001 for
# another tenant), and nothing it can see holds a secret.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthLifecycleUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = lc_node('app_role');
lc_sql($node, <<'SQL');
CREATE ROLE app LOGIN;
GRANT USAGE ON SCHEMA oauth TO app;
GRANT EXECUTE ON FUNCTION oauth.valid_token(text, uuid, interval),
                          oauth.token_rejected(text, uuid, text) TO app;
GRANT SELECT ON oauth.connection_status TO app;
SELECT oauth.register_provider('p1', 'https://auth.example.com/token', 'cid', 'secret-360');
SQL
my $mine = lc_sql($node, "SELECT oauth.create_connection('ws-app', 'p1', 'a1', 'at-mine-360', 'rt-mine-360', now() + interval '1 hour')");
my $other = lc_sql($node, "SELECT oauth.create_connection('ws-other', 'p1', 'a2', 'at-other-360', 'rt-other-360', now() + interval '1 hour')");

sub as_app { return lc_try($node, "SET ROLE app; $_[0]") }

is(as_app("SELECT oauth.valid_token('ws-app', '$mine')")->{out}, 'at-mine-360', 'the granted function works');
my $r = as_app("SELECT oauth.valid_token('ws-app', '$other')");
is($r->{sqlstate}, 'OA001', "another tenant's connection is reported as missing");
unlike($r->{err}, qr/ws-other|at-other/, '... and the error says nothing about it');
is(as_app("SELECT oauth.token_rejected('ws-app', '$other', 'at-other-360')")->{sqlstate}, 'OA001',
	"token_rejected on another tenant's connection: OA001");

# every relation
my @rels = split /\n/, lc_sql($node,
	"SELECT c.relname || ' ' || c.relkind::text || ' ' || (SELECT quote_ident(a.attname) FROM pg_attribute a "
	  . "WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attidentity = '' ORDER BY a.attnum LIMIT 1) "
	  . "FROM pg_class c WHERE c.relnamespace = 'oauth'::regnamespace "
	  . "AND c.relkind IN ('r', 'v', 'm', 'S', 'p', 'f') ORDER BY 1");
ok(@rels >= 5, 'relations enumerated: ' . scalar(@rels));
for my $rel (@rels)
{
	my ($name, $kind, $col) = split / /, $rel;
	my @stmts = $kind eq 'S'
	  ? ("SELECT nextval('oauth.$name')", "SELECT * FROM oauth.$name")
	  : ("SELECT * FROM oauth.$name", "INSERT INTO oauth.$name DEFAULT VALUES",
		"UPDATE oauth.$name SET $col = $col", "DELETE FROM oauth.$name");
	push @stmts, "TRUNCATE oauth.$name" if $kind eq 'r';
	for my $sql (@stmts)
	{
		next if $name eq 'connection_status' && $sql =~ /^SELECT/;
		my $res = as_app($sql);
		is($res->{sqlstate}, '42501', "app: $sql: permission denied") or diag($res->{err});
	}
}

# every function not granted
my @funcs = split /\n/, lc_sql($node, <<'SQL');
SELECT p.oid::regprocedure || '|' || 'oauth.' || quote_ident(p.proname) || '('
       || coalesce((SELECT string_agg('(SELECT NULL::' || CASE WHEN t = 'anyelement'::regtype THEN 'text'
                                          ELSE format_type(t, NULL) END || ')', ', ' ORDER BY o)
                      FROM unnest(p.proargtypes) WITH ORDINALITY AS a(t, o)), '') || ')'
  FROM pg_proc p
 WHERE p.pronamespace = 'oauth'::regnamespace
   AND NOT has_function_privilege('app', p.oid, 'EXECUTE')
 ORDER BY 1
SQL
ok(@funcs >= 20, 'functions not granted, enumerated: ' . scalar(@funcs));
for my $f (@funcs)
{
	my ($sig, $call) = split /\|/, $f, 2;
	my $res = as_app("SELECT $call");
	is($res->{sqlstate}, '42501', "app: $sig: permission denied") or diag($res->{err});
}

# what it may see holds no secret; no way around to the key file
my $cols = lc_sql($node, "SELECT string_agg(attname, ',') FROM pg_attribute "
	  . "WHERE attrelid = 'oauth.connection_status'::regclass AND attnum > 0");
unlike($cols, qr/ciphertext|secret|(^|,)(access|refresh)_token(,|$)/, 'connection_status has no secret column');
my $view = as_app("SELECT * FROM oauth.connection_status")->{out};
unlike($view, qr/at-mine|rt-mine|at-other|rt-other|secret-360/, 'nor a secret value');
is(as_app("SELECT pg_read_file('oauth_tokens.keys')")->{sqlstate}, '42501', 'the key file cannot be read');
is(as_app("SET oauth.key_file = '/tmp/mine'")->{sqlstate}, '55P02', 'oauth.key_file cannot be set by a session');
is(as_app("SELECT lo_import('/etc/passwd')")->{sqlstate}, '42501', 'no server-side file access');
is(as_app("CREATE FUNCTION oauth.x() RETURNS int LANGUAGE sql AS 'SELECT 1'")->{sqlstate}, '42501',
	'nothing can be created in schema oauth');

done_testing();
