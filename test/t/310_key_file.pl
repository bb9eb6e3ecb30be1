# Attacker: another user of the machine (or of the server's group) who could
# read a carelessly protected key file.  The key file follows PostgreSQL's
# rule for ssl_key_file: owned by the server's user with mode 0600 or less,
# or owned by root with 0640 or less; anything else is refused with an error
# naming oauth.key_file, and nothing is sealed or opened with such a key.
# Malformed files fail naming the line, never its content.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthLifecycleUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = lc_node('key_file', conf => "log_min_messages = debug5\nlog_statement = none\n");
my $path = $node->data_dir . '/oauth_tokens.keys';
my $key = slurp_file($path);
chomp $key;
my ($b64) = $key =~ /^k1:(.*)$/;

lc_sql($node, "SELECT oauth.register_provider('p1', 'https://auth.example.com/token', 'cid', 'sec')");
my $id = lc_sql($node,
	"SELECT oauth.create_connection('ws1', 'p1', 'a1', 'at-310', 'rt-310', now() + interval '1 hour')");

# seal (always looks at the file) and open, in a fresh session each time
sub use_ring
{
	return lc_try($node,
		"SELECT oauth._reload_keys(); "
		  . "SELECT oauth.create_connection('ws1', 'p1', 'a' || gen_random_uuid(), 'at', 'rt', now() + interval '1 hour'); "
		  . "SELECT oauth.valid_token('ws1', '$id')");
}

my $r = use_ring();
is($r->{ret}, 0, 'mode 0600, owned by the server user: accepted') or diag($r->{err});
like($r->{out}, qr/at-310/, '... and the token decrypts');

chmod(0400, $path);
$r = use_ring();
is($r->{ret}, 0, 'mode 0400: accepted') or diag($r->{err});

for my $mode (0640, 0660, 0604, 0644, 0606, 0610)
{
	chmod($mode, $path);
	$r = use_ring();
	is($r->{sqlstate}, 'F0000', sprintf('mode %04o, owned by the server user: refused', $mode));
	like($r->{err}, qr/oauth\.key_file/, sprintf('mode %04o: the error names oauth.key_file', $mode));
	unlike($r->{out}, qr/at-310/, sprintf('mode %04o: no token is served', $mode));
}
chmod(0600, $path);
is(use_ring()->{ret}, 0, 'back to 0600: accepted again');

SKIP:
{
	skip 'root ownership can be tested only when the test runs as root', 4 if $> != 0;
	chown(0, 0, $path);
	chmod(0640, $path);
	is(use_ring()->{ret}, 0, 'mode 0640, owned by root: accepted');
	chmod(0644, $path);
	is(use_ring()->{sqlstate}, 'F0000', 'mode 0644, owned by root: refused');
	chmod(0660, $path);
	is(use_ring()->{sqlstate}, 'F0000', 'mode 0660, owned by root: refused');
	chown(1, 1, $path);
	chmod(0600, $path);
	is(use_ring()->{sqlstate}, 'F0000', 'owned by another user: refused');
	chown($node->{_pid} ? (stat($node->data_dir))[4] : 0, -1, $path);
}

# Malformed files: the line number, never the content.
sub write_keys
{
	my ($text) = @_;
	open(my $fh, '>', $path) or die $!;
	print $fh $text;
	close($fh);
	chmod(0600, $path);
}
write_keys("k1:$b64\nk2:not-base64-$b64\n");
$r = use_ring();
is($r->{sqlstate}, 'F0000', 'a malformed second line: refused');
like($r->{err}, qr/line 2/, '... naming the line');
unlike($r->{err}, qr/\Q$b64\E|not-base64/, '... never its content');
write_keys("k1:$b64\nk1:$b64\n");
$r = use_ring();
like($r->{err}, qr/duplicate key id .* line 2/, 'a duplicate id: refused, naming the line');
write_keys("# only a comment\n\n");
like(use_ring()->{err}, qr/holds no key/, 'a file without a key: refused');
unlink($path);
mkdir($path);
like(use_ring()->{err}, qr/not a regular file/, 'a directory: refused');
rmdir($path);
write_keys("k1:$b64\n");
$r = use_ring();
is($r->{ret}, 0, 'the good file again: accepted') or diag($r->{err});
like($r->{out}, qr/at-310/, '... and the old token still decrypts');

$node->stop;
unlike(slurp_file($node->logfile), qr/\Q$b64\E/, 'the key never reached the log (debug5)');

done_testing();
