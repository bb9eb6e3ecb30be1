# Isolation of failures: a provider that hangs does not delay another
# provider's refresh, nor another connection's on the same provider, and
# does not stop the worker.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $pa = OAuthProvider->new;    # hangs for the grant ghang
my $pb = OAuthProvider->new;    # a healthy, separate provider
$pa->set_grant('ghang', mode => 'hang', hang_seconds => 20);

my $node = oauth_node('isolation', http_timeout => '3s');
oauth_register($node, 'pa', $pa->token_url);
oauth_register($node, 'pb', $pb->token_url);

my $exp = "now() - interval '1 minute'";
my $hang = oauth_create_conn($node, 'ws1', 'pa', 'hang', 'at-h', 'ghang.0', $exp);
my $fast_b = oauth_create_conn($node, 'ws2', 'pb', 'fastb', 'at-fb', 'gfastb.0', $exp);
my $fast_a = oauth_create_conn($node, 'ws1', 'pa', 'fasta', 'at-fa', 'gfasta.0', $exp);

# Start the hanging refresh and wait until the provider holds it.
my $s = oauth_session($node);
$s->send("SELECT oauth.valid_token('ws1', '$hang')");
ok(oauth_poll(30, 0.05, sub { ($pa->stats->{by_grant}{ghang} // 0) == 1 }),
	'the hanging refresh reached provider A');
ok(!$s->done, 'its caller is waiting');

# Meanwhile, another provider's refresh goes through at once.
my $r = oauth_psql($node, "SELECT oauth.valid_token('ws2', '$fast_b')");
is($r->{out}, 'at-gfastb-1', 'provider B: refreshed while A hangs')
  or diag($r->{err});
cmp_ok($r->{elapsed}, '<', 2, 'provider B: not delayed by the hang (< 2 s; the HTTP timeout is 3 s)');

# And so does another connection of the hanging provider itself.
$r = oauth_psql($node, "SELECT oauth.valid_token('ws1', '$fast_a')");
is($r->{out}, 'at-gfasta-1', 'provider A, other grant: refreshed while one hangs')
  or diag($r->{err});
cmp_ok($r->{elapsed}, '<', 2, 'provider A, other grant: not delayed');
ok(!$s->done, 'the hanging refresh is still waiting');

# The hanging one ends with the HTTP timeout, as a transient failure.
my $h = $s->wait(30);
ok($h->{done}, 'the hanging call returned');
is($h->{sqlstate}, 'OA003', 'with OA003 (expired token, transient failure)')
  or diag($h->{err});
like($h->{err}, qr/timeout/i, 'the detail says it timed out');
cmp_ok($h->{elapsed}, '<', 10, 'after about the HTTP timeout, not the 20 s hang');
is(oauth_status($node, $hang)->{failure_count}, 1, 'failure recorded');

# The worker still serves requests afterwards.
my $after = oauth_create_conn($node, 'ws2', 'pb', 'after', 'at-af', 'gafter.0', $exp);
is($node->safe_psql('postgres', "SELECT oauth.valid_token('ws2', '$after')"),
	'at-gafter-1', 'the worker keeps working after the timeout');

$s->quit;
$node->stop;
$pa->stop;
$pb->stop;
done_testing();
