# rotate_key in batches (issue 8, deliverable 7): the rotation never holds
# every connection's row lock in one transaction, so refreshes go on while it
# runs, and a row another session holds only delays that row.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
my $node = oauth_node('rotate_batches');
oauth_register($node, 'p1', $p->token_url);

sub q1 { return $node->safe_psql('postgres', $_[0]) }

q1("SELECT oauth.create_connection('ws' || (g % 7), 'p1', 'a' || g, 'at-' || g, 'g' || g || '.0',
                                   now() + interval '1 hour')
      FROM generate_series(1, 2500) g");
my $held = q1("SELECT id FROM oauth.connections WHERE provider_account_id = 'a1'");
my $other = q1("SELECT id FROM oauth.connections WHERE provider_account_id = 'a2'");
my $other_ws = q1("SELECT workspace_id FROM oauth.connections WHERE id = '$other'");

oauth_write_keys($node, [ [ 'k2', oauth_random_b64(32) ], [ 'k1', oauth_key_b64($node) ] ]);
sub under_k2
{
	return q1("SELECT count(*) FROM oauth.connections WHERE oauth._key_id(access_token_ciphertext) = 'k2'");
}

# a session holds one connection's row lock; the rotation starts
my $holder = oauth_session($node);
$holder->query("BEGIN; SELECT 1 FROM oauth.connections WHERE id = '$held' FOR UPDATE");
my $rot = oauth_session($node);
$rot->send('SELECT oauth.rotate_key()');

ok(oauth_poll(60, 0.1, sub { under_k2() == 2499 }),
	'every other connection is re-encrypted and committed while one row is held');
ok(!$rot->done, 'rotate_key still waits for the held row');

# refreshes go on meanwhile: the rotation holds no lock on other rows
my $r = oauth_psql($node, "SELECT oauth.refresh('$other_ws', '$other')");
is($r->{out}, 'refreshed', 'a refresh during the rotation is stored at once') or diag($r->{err});

$holder->query('COMMIT');
my $res = $rot->wait(60);
ok($res->{done}, 'rotate_key returned once the row was free');
cmp_ok($res->{out}, '>=', 2 * 2500, 'it counts every re-encrypted value') or diag($res->{err});
is(q1("SELECT count(*) FROM oauth.connections WHERE oauth._key_id(access_token_ciphertext) <> 'k2'
           OR oauth._key_id(refresh_token_ciphertext) <> 'k2'"), '0', 'nothing is left under the old key');
is(q1("SELECT oauth.valid_token('ws1', '$held')"), 'at-1', 'the held connection still decrypts');
is(q1("SELECT count(*) FROM oauth.events WHERE event = 'key_rotated'"), '1', 'one key_rotated event');
$holder->quit;
$rot->quit;

$node->stop;
done_testing();
