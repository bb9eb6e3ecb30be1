# Attacker: whoever reads the server log.  Applications pass tokens to
# token_rejected, create_connection and reauthorize as bind parameters (the
# README says so), and a server that logs statements (log_statement = all,
# as PostgreSQL::Test::Cluster sets) logs their parameters too unless
# log_parameter_max_length = 0.  The extension cannot keep such a log clean,
# so it says so at server start, and the README's setting keeps the token out.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = oauth_node('logparams',
	conf => "log_statement = all\nlog_parameter_max_length = -1\n");
oauth_register($node, 'p1', 'https://auth.example.com/token');
my $id = oauth_create_conn($node, 'ws1', 'p1', 'a1', 'at-590-stored', 'rt-590',
	"now() + interval '1 hour'");

like(slurp_file($node->logfile),
	qr/WARNING:  oauth_tokens: statements are logged with their bind parameters/,
	'server start warns that statements are logged with their parameters');
like(slurp_file($node->logfile), qr/HINT:  Set log_parameter_max_length = 0/,
	'... and names the setting');

# token_rejected through the extended protocol: pgbench -M extended sends
# its variables as bind parameters, as a driver does
my $script = $node->basedir . '/rejected.sql';
open(my $fh, '>', $script) or die "$script: $!";
print $fh "SELECT oauth.token_rejected(:ws, :id::uuid, :tok);\n";
close($fh);

sub report
{
	my ($tok) = @_;
	$node->command_ok(
		[
			'pgbench', '-n', '-M', 'extended', '-t', '1', '-f', $script,
			'-D', 'ws=ws1', '-D', "id=$id", '-D', "tok=$tok", 'postgres'
		],
		"token_rejected with the token as a bind parameter ($tok)");
}

my $leaked = 'at-590-logged-' . int(rand(1e9));
report($leaked);
like(slurp_file($node->logfile), qr/\Q$leaked\E/,
	'without the setting, the logged statement carries the token (why the warning is given)');

$node->append_conf('postgresql.conf', "log_parameter_max_length = 0\n");
my $offset = -s $node->logfile;
$node->restart;
oauth_wait_worker($node);
my $kept = 'at-590-kept-' . int(rand(1e9));
report($kept);
my $log = substr(slurp_file($node->logfile), $offset);
unlike($log, qr/statements are logged with their bind parameters/,
	'with log_parameter_max_length = 0 there is no warning');
like($log, qr/token_rejected/, 'the statement is still logged');
unlike($log, qr/\Q$kept\E/, '... without the token');

$node->stop;
done_testing();
