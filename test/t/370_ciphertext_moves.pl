# Attacker: someone who can write the tables (a leaked admin credential, an
# injection in an admin tool) but has no key, moving ciphertexts: into
# another tenant's row, into another column of the same row, into a row
# given a new id, a client secret into another provider.  Every ciphertext
# is bound to its row and field by its MAC (src/crypto.c): a moved value is
# refused (XX001) and never decrypted, sent, or laundered by rotate_key; no
# error or log line holds a token.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthLifecycleUtil;
use OAuthProvider;
use PostgreSQL::Test::Utils;
use MIME::Base64 ();
use Test::More;

my $p = OAuthProvider->new;
my $node = lc_node('moves', conf => "log_min_messages = debug5\nlog_statement = none\n");
my $url = $p->token_url;
lc_sql($node, "SELECT oauth.register_provider('p1', '$url', 'cid1', 'secret-370-one')");
lc_sql($node, "SELECT oauth.register_provider('p2', '$url', 'cid2', 'secret-370-two')");
my $a = lc_sql($node, "SELECT oauth.create_connection('ws-a', 'p1', 'ua', 'at-370-a', 'ga.0', now() + interval '1 hour')");
my $b = lc_sql($node, "SELECT oauth.create_connection('ws-b', 'p1', 'ub', 'at-370-b', 'gb.0', now() + interval '1 hour')");
my $c = lc_sql($node, "SELECT oauth.create_connection('ws-b', 'p2', 'uc', 'at-370-c', 'gc.0', now() - interval '1 minute')");
my $saved = lc_sql($node, "SELECT string_agg(id || ':' || encode(access_token_ciphertext, 'hex') || ':' "
	  . "|| encode(refresh_token_ciphertext, 'hex'), ',') FROM oauth.connections");

sub refused
{
	my ($sql, $what) = @_;
	my $r = lc_try($node, $sql);
	is($r->{sqlstate}, 'XX001', "$what: refused (XX001)") or diag($r->{err});
	unlike($r->{err} . $r->{out}, qr/at-370|g[abc]\.0|secret-370/, "$what: no secret in the answer");
}

# into another tenant's row
lc_sql($node, "UPDATE oauth.connections SET access_token_ciphertext = "
	  . "(SELECT access_token_ciphertext FROM oauth.connections WHERE id = '$a') WHERE id = '$b'");
refused("SELECT oauth.valid_token('ws-b', '$b')", "tenant A's access token in tenant B's row");
my $before = scalar @{ $p->stats->{requests} };
lc_sql($node, "UPDATE oauth.connections SET refresh_token_ciphertext = "
	  . "(SELECT refresh_token_ciphertext FROM oauth.connections WHERE id = '$a'), expires_at = now() - interval '1 minute' "
	  . "WHERE id = '$c'");
like(lc_sql($node, "SELECT oauth.refresh('ws-b', '$c')"), qr/^transient_failure: stored secret does not belong to this row/,
	"tenant A's refresh token in tenant B's row: the refresh fails");
is(scalar @{ $p->stats->{requests} }, $before, '... before anything is sent');

# into another column of the same row
lc_sql($node, "UPDATE oauth.connections SET access_token_ciphertext = refresh_token_ciphertext WHERE id = '$a'");
refused("SELECT oauth.valid_token('ws-a', '$a')", 'the refresh token moved into the access column');

# a row given another id, a copy into a new row of another tenant
lc_sql($node, "INSERT INTO oauth.connections (id, workspace_id, provider, provider_account_id, "
	  . "access_token_ciphertext, refresh_token_ciphertext, expires_at) "
	  . "SELECT gen_random_uuid(), 'ws-b', provider, 'copy', access_token_ciphertext, refresh_token_ciphertext, "
	  . "expires_at FROM oauth.connections WHERE id = '$b'");
my $copy = lc_sql($node, "SELECT id FROM oauth.connections WHERE provider_account_id = 'copy'");
refused("SELECT oauth.valid_token('ws-b', '$copy')", 'a copy into a new row');

# a client secret into another provider
lc_sql($node, "UPDATE oauth.providers SET client_secret_ciphertext = "
	  . "(SELECT client_secret_ciphertext FROM oauth.providers WHERE name = 'p1') WHERE name = 'p2'");
my $d = lc_sql($node, "SELECT oauth.create_connection('ws-b', 'p2', 'ud', 'at-370-d', 'gd.0', now() - interval '1 minute')");
$before = scalar @{ $p->stats->{requests} };
like(lc_sql($node, "SELECT oauth.refresh('ws-b', '$d')"), qr/^transient_failure: stored secret does not belong/,
	"provider one's client secret in provider two: the refresh fails");
is(scalar @{ $p->stats->{requests} }, $before, '... before anything is sent');

# rotate_key cannot launder a moved ciphertext under its new row: with a new
# active key it must open every value, and a moved one stops it
{
	my $path = $node->data_dir . '/oauth_tokens.keys';
	my $old = slurp_file($path);
	open(my $fh, '>', $path) or die $!;
	print $fh 'k2:' . MIME::Base64::encode_base64(join('', map { chr(int(rand(256))) } 1 .. 32), '') . "\n" . $old;
	close($fh);
	chmod(0600, $path);
}
my $rot = lc_try($node, "SELECT oauth.rotate_key()");
unlike($rot->{err} . $rot->{out}, qr/at-370|g[abc]\.0|secret-370/, 'rotate_key: no secret in its answer');
sleep(1);    # in case rotation runs in batches of its own
is(lc_sql($node, "SELECT count(*) FROM oauth.connections WHERE id IN ('$a', '$b', '$copy') "
	  . "AND oauth._key_id(access_token_ciphertext) = 'k2'"), '0',
	'rotate_key re-encrypted none of the moved ciphertexts');
refused("SELECT oauth.valid_token('ws-b', '$b')", 'after rotate_key, the moved ciphertext');

# put everything back: the original rows work again
lc_sql($node, "DELETE FROM oauth.connections WHERE id IN ('$copy', '$d')");
for my $row (split /,/, $saved)
{
	my ($id, $at, $rt) = split /:/, $row;
	lc_sql($node, "UPDATE oauth.connections SET access_token_ciphertext = decode('$at', 'hex'), "
		  . "refresh_token_ciphertext = decode('$rt', 'hex') WHERE id = '$id'");
}
lc_sql($node, "UPDATE oauth.providers SET client_secret_ciphertext = NULL WHERE name = 'p2'");
lc_sql($node, "SELECT oauth.register_provider('p2', '$url', 'cid2', 'secret-370-two')");
is(lc_sql($node, "SELECT oauth.valid_token('ws-b', '$b')"), 'at-370-b', 'restored rows decrypt again');

$node->stop;
unlike(slurp_file($node->logfile), qr/at-370|secret-370/, 'no token or secret in the log (debug5)');
done_testing();
