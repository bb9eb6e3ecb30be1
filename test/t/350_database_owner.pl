# Attacker: the owner of the worker's database (not a superuser) who runs
# ALTER DATABASE ... SET search_path = evil, pg_catalog, public with a schema
# of its own in front of pg_catalog, holding functions and operators with
# the very signatures of pg_catalog's: now(), random(), power(integer,
# integer), gen_random_uuid(), pg_notify(text, text), =(uuid, uuid),
# =(text, text).  Every session (and the worker) then starts with that path.
# The extension is driven as a superuser that inherits it: no trap may run
# and the owner gains nothing, in sessions and in the worker (which pins its
# search_path, issue 8 item 7).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthLifecycleUtil;
use OAuthProvider;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
my $node = lc_node('db_owner');
my $url = $p->token_url;
(my $revoke = $url) =~ s{/token$}{/revoke};

lc_sql($node, <<'SQL');
CREATE ROLE dbo LOGIN;
ALTER DATABASE postgres OWNER TO dbo;
SET ROLE dbo;
CREATE SCHEMA evil;
CREATE TABLE evil.canary (fn text, backend text);
GRANT USAGE ON SCHEMA evil TO PUBLIC;
GRANT INSERT, SELECT ON evil.canary TO PUBLIC;
CREATE FUNCTION evil.trap(fn text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO evil.canary (fn, backend)
    SELECT fn, a.backend_type FROM pg_catalog.pg_stat_activity a
     WHERE a.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid();
    BEGIN
        EXECUTE 'ALTER ROLE dbo SUPERUSER';
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
END $$;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql STABLE AS $$
BEGIN PERFORM evil.trap('now()'); RETURN pg_catalog.now(); END $$;
CREATE FUNCTION evil.random() RETURNS double precision LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.trap('random()'); RETURN pg_catalog.random(); END $$;
CREATE FUNCTION evil.power(integer, integer) RETURNS double precision LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.trap('power(integer, integer)'); RETURN pg_catalog.power($1::float8, $2::float8); END $$;
CREATE FUNCTION evil.gen_random_uuid() RETURNS uuid LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.trap('gen_random_uuid()'); RETURN pg_catalog.gen_random_uuid(); END $$;
CREATE FUNCTION evil.pg_notify(text, text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.trap('pg_notify(text, text)'); PERFORM pg_catalog.pg_notify($1, $2); END $$;
CREATE FUNCTION evil.t_eq_uu(uuid, uuid) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM evil.trap('=(uuid, uuid)'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR evil.= (FUNCTION = evil.t_eq_uu, LEFTARG = uuid, RIGHTARG = uuid);
CREATE FUNCTION evil.t_eq_tt(text, text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM evil.trap('=(text, text)'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR evil.= (FUNCTION = evil.t_eq_tt, LEFTARG = text, RIGHTARG = text);
ALTER DATABASE postgres SET search_path = evil, pg_catalog, public;
RESET ROLE;
SQL
$node->restart;
$node->poll_query_until('postgres',
	"SELECT count(*) OPERATOR(pg_catalog.=) 1 FROM pg_catalog.pg_stat_activity "
	  . "WHERE backend_type OPERATOR(pg_catalog.=) 'oauth_tokens worker'");
is(lc_sql($node, 'SHOW search_path'), 'evil, pg_catalog, public', 'sessions start with the owner\'s path');

# (the test's own SQL names pg_catalog explicitly: only the extension's is tested)
sub run { return lc_try($node, $_[0]) }
run("SELECT oauth.register_provider('p1', '$url', 'cid', 'sec', revoke_url => '$revoke', "
	  . "authorize_url => 'https://auth.example.com/authorize')");
my $id = run("SELECT oauth.create_connection('ws1', 'p1', 'a1', 'at-a1', 'g1.0', pg_catalog.now() - interval '1 minute')")->{out};
ok($id, 'connection created');
is(run("SELECT oauth.valid_token('ws1', '$id')")->{out}, 'at-g1-1', 'valid_token refreshed through the worker');
$p->set_grant('g2', mode => '503');
my $id2 = run("SELECT oauth.create_connection('ws1', 'p1', 'a2', 'at-a2', 'g2.0', pg_catalog.now() - interval '1 minute')")->{out};
run("SELECT oauth.refresh('ws1', '$id2')");
$p->set_grant('g3', mode => 'invalid_grant');
my $id3 = run("SELECT oauth.create_connection('ws1', 'p1', 'a3', 'at-a3', 'g3.0', pg_catalog.now() - interval '1 minute')")->{out};
run("SELECT oauth.refresh('ws1', '$id3')");
run("UPDATE oauth.connections SET refresh_after = pg_catalog.now() - interval '1 second', next_attempt_at = NULL "
	  . "WHERE id OPERATOR(pg_catalog.=) '$id'");
my $due = run("SELECT count(*) FROM oauth.refresh_due()");
is($due->{sqlstate}, undef, 'refresh_due runs') or diag($due->{err});
run("SELECT oauth.authorize_url('p1', 'https://app.example/cb', 'st')");
$p->add_code(code => 'c1', grant => 'gc1');
run("SELECT oauth.exchange_code('ws1', 'p1', 'c1', 'https://app.example/cb', provider_account_id => 'a4')");
run("SELECT oauth.client_credentials('ws1', 'p1')");
run("SELECT oauth.reauthorize('ws1', '$id3', 'at-new', 'g3.1', pg_catalog.now() + interval '1 hour')");
run("SELECT oauth.token_rejected('ws1', '$id', 'at-g1-1')");
run("SELECT oauth.revoke('ws1', '$id2')");
run("SELECT oauth.rotate_key()");
run("SELECT oauth.delete_connection('ws1', '$id3')");
sleep(1);

my $canary = "SET search_path = pg_catalog; SELECT coalesce(string_agg(DISTINCT fn, ', '), '') FROM evil.canary WHERE ";
is(lc_sql($node, $canary . "backend IS DISTINCT FROM 'oauth_tokens worker'"), '',
	'no trap ran in a session');
{
	# (was TODO until the durable branch pinned the worker's search_path)
	is(lc_sql($node, $canary . "backend = 'oauth_tokens worker'"), '', 'no trap ran in the worker');
	is(lc_sql($node, "SET search_path = pg_catalog; SELECT rolsuper FROM pg_roles WHERE rolname = 'dbo'"), 'f',
		'the database owner did not become superuser');
}
diag('traps that ran: ' . lc_sql($node,
	"SET search_path = pg_catalog; SELECT coalesce(string_agg(DISTINCT fn || ' in ' || coalesce(backend, '?'), '; '), 'none') FROM evil.canary"));
done_testing();
