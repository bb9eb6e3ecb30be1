# A worker no one can hijack (issue 8, deliverable 7): a role with CREATE on
# public plants exact-match overloads of what the worker's SQL calls
# (power(integer, integer), *(bigint, interval), ...) and a search_path that
# puts them first; the worker (a superuser) never calls them.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
my $node = oauth_node('hardening');
oauth_register($node, 'p1', $p->token_url);

sub q1 { return $node->safe_psql('postgres', $_[0]) }

q1(q{CREATE ROLE mallory LOGIN;
	GRANT CREATE, USAGE ON SCHEMA public TO mallory;
	CREATE TABLE public.planted_calls (fn text, by_role text, at timestamptz DEFAULT now());
	GRANT INSERT, SELECT ON public.planted_calls TO mallory;});

# Every planted function records who called it and tries to make mallory a
# superuser (which works only when a superuser runs it).
my $body = q{
	INSERT INTO public.planted_calls (fn, by_role) VALUES (%s, current_user || ' ' || coalesce((SELECT backend_type FROM pg_stat_activity WHERE pid = pg_backend_pid()), '?') || ' ' || left(current_query(), 60));
	BEGIN EXECUTE 'ALTER ROLE mallory SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;};
my @planted = (
	[ 'power(integer, integer)', 'double precision', 'RETURN 1;' ],
	[ 'power(bigint, bigint)', 'double precision', 'RETURN 1;' ],
	[ 'make_interval(secs bigint)', 'interval', "RETURN interval '1 second';" ],
	[ 'greatest_evil(bigint, interval)', 'interval', "RETURN interval '1 second';" ],
	[ 'least(integer, integer)', 'integer', 'RETURN 1;' ],
	[ 'coalesce(bytea, bytea)', 'bytea', 'RETURN NULL;' ],
	[ 'random()', 'double precision', 'RETURN 0.5;' ],
	[ 'now()', 'timestamptz', "RETURN '2000-01-01';" ],
	[ 'pg_notify(text, text)', 'void', 'RETURN;' ],
);
my $sql = "SET ROLE mallory;\n";
for my $f (@planted)
{
	my ($sig, $ret, $tail) = @$f;
	(my $name = $sig) =~ s/\(.*//;
	my $b = sprintf($body, "'$sig'");
	$sql .= "CREATE FUNCTION public.$sig RETURNS $ret LANGUAGE plpgsql AS \$f\$ BEGIN $b $tail END \$f\$;\n";
}
$sql .= q{CREATE OPERATOR public.* (LEFTARG = bigint, RIGHTARG = interval, FUNCTION = public.greatest_evil);
	CREATE OPERATOR public.+ (LEFTARG = bigint, RIGHTARG = interval, FUNCTION = public.greatest_evil);
	RESET ROLE;
	ALTER DATABASE postgres SET search_path = public, pg_catalog;
	ALTER ROLE CURRENT_USER SET search_path = public, pg_catalog;};
my ($ret, $out, $err) = $node->psql('postgres', $sql);
is($ret, 0, 'mallory planted the overloads') or diag($err);

# the worker starts again with those settings; then they go, so that this
# test's own SQL (now() in its queries) does not call the planted functions
my $pid = oauth_worker_pid($node);
q1("SELECT pg_terminate_backend($pid)");
oauth_wait_worker($node, $pid);
q1('ALTER DATABASE postgres RESET search_path; ALTER ROLE CURRENT_USER RESET search_path');

# exercise every statement: success (expires_in), transient failure (back-off),
# reauth (NOTIFY), sweep, rejected token, pruning
$p->set_grant('gok', rotate => 1, refresh_token_expires_in => 3600);
$p->set_grant('g503', mode => '503');
$p->set_grant('gdead', mode => 'invalid_grant');
my $exp = "now() - interval '1 minute'";
my @ids = map { q1("SELECT oauth.create_connection('ws1', 'p1', '$_', 'at-$_', '$_.0', $exp)") } qw(gok g503 gdead);
for my $id (@ids)
{
	oauth_psql($node, "SELECT oauth.refresh('ws1', '$id')");
}
oauth_psql($node, "SELECT oauth.token_rejected('ws1', '$ids[0]', oauth.valid_token('ws1', '$ids[0]'))");
oauth_psql($node, "SELECT count(*) FROM oauth.refresh_due()");
is(oauth_status($node, $ids[0])->{state}, 'active', 'refreshes still work');
is(oauth_status($node, $ids[1])->{failure_count} >= 1 ? 1 : 0, 1, 'the transient failure was recorded');
is(oauth_status($node, $ids[2])->{state}, 'reauth_required', 'the dead grant was marked');

is(q1("SELECT count(*) FROM public.planted_calls"), '0', 'no planted function was ever called')
  or diag(q1("SELECT string_agg(fn || ' by ' || by_role, ', ') FROM public.planted_calls"));
is(q1("SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'"), 'f', 'mallory is no superuser');

$node->stop;
done_testing();
