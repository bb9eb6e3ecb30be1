=pod

=head1 NAME

OAuthLifecycleUtil - set-up and small helpers for the connection lifecycle
TAP tests (test/t/2NN_*.pl): code exchange, revocation, re-authorization,
client credentials and provider presets.

=head1 SYNOPSIS

  use FindBin;
  use lib "$FindBin::RealBin/..";
  use OAuthLifecycleUtil;
  use OAuthProvider;

  my $p    = OAuthProvider->new;
  my $node = lc_node('exchange');
  lc_sql($node, "SELECT oauth.register_provider('p1', '" . $p->token_url . "', 'cid', 'sec')");
  my $r = lc_try($node, "SELECT oauth.valid_token('ws1', '$id')");
  is($r->{sqlstate}, 'OA002');
  my $c = lc_conn($node, $id);         # oauth.connection_status row, decoded
  ok(lc_poll(sub { ... }));

=cut

package OAuthLifecycleUtil;

use strict;
use warnings;

use Carp;
use Digest::SHA qw(sha256);
use Exporter 'import';
use IO::Socket::INET;
use JSON::PP ();
use MIME::Base64 qw(encode_base64 encode_base64url);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use POSIX ();
use Time::HiRes qw(time usleep);

our @EXPORT = qw(lc_node lc_sql lc_try lc_conn lc_json lc_events lc_poll
  lc_closed_port lc_pkce_challenge lc_quote lc_hostile_provider);

=pod

=head1 FUNCTIONS

=over

=item lc_node($name, %opt) -> started PostgreSQL::Test::Cluster

oauth_tokens preloaded, oauth.database = 'postgres', oauth.allow_http = on,
oauth.allow_private_addresses = on (the test providers are on 127.0.0.1),
oauth.sweep_interval = 0, a key file <data_dir>/oauth_tokens.keys holding
"k1:" and the base64 of 32 random bytes (mode 0600), CREATE EXTENSION
oauth_tokens CASCADE; returns once the refresh worker runs.  conf => more
postgresql.conf lines.

=cut

sub lc_node
{
	my ($name, %opt) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'oauth_tokens'\n"
		  . "oauth.database = 'postgres'\n"
		  . "oauth.allow_http = on\n"
		  . "oauth.allow_private_addresses = on\n"
		  . "oauth.sweep_interval = 0\n"
		  . ($opt{conf} // ''));

	open(my $rnd, '<:raw', '/dev/urandom') or die "cannot open /dev/urandom: $!";
	read($rnd, my $bytes, 32) == 32 or die "short read from /dev/urandom";
	close($rnd);
	my $path = $node->data_dir . '/oauth_tokens.keys';
	open(my $fh, '>', $path) or die "cannot write $path: $!";
	print $fh 'k1:' . encode_base64($bytes, '') . "\n";
	close($fh) or die "cannot close $path: $!";
	chmod(0600, $path) or die "chmod $path: $!";

	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION oauth_tokens CASCADE');
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity "
		  . "WHERE backend_type = 'oauth_tokens worker'")
	  or croak "the oauth_tokens worker did not start";
	return $node;
}

=pod

=item lc_sql($node, $sql) -> output (dies on error)

=item lc_try($node, $sql) -> { ret, out, err, sqlstate }

lc_try runs $sql in a fresh psql with VERBOSITY verbose; sqlstate is the
first error's SQLSTATE (undef without error).

=cut

sub lc_sql
{
	my ($node, $sql) = @_;
	return $node->safe_psql('postgres', $sql);
}

sub lc_try
{
	my ($node, $sql) = @_;
	my ($out, $err) = ('', '');
	my $ret = $node->psql(
		'postgres', $sql,
		stdout => \$out,
		stderr => \$err,
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	my ($state) = $err =~ /(?:ERROR|FATAL):\s+([0-9A-Z]{5}):/;
	return { ret => $ret, out => $out, err => $err, sqlstate => $state };
}

=pod

=item lc_json($node, $sql) -> decoded JSON of the single value $sql returns (undef if none)

=item lc_conn($node, $id) -> hashref of oauth.connection_status, plus
access_ct / refresh_ct (ciphertexts present?), expires_in_s and
rt_expires_in_s (seconds from now), refresh_after_in_s

=item lc_events($node, $id, $event) -> arrayref of the events' detail, oldest first

=cut

sub lc_json
{
	my ($node, $sql) = @_;
	my $out = $node->safe_psql('postgres', $sql);
	return undef if $out eq '';
	return JSON::PP::decode_json($out);
}

sub lc_conn
{
	my ($node, $id) = @_;
	my $d = lc_json($node,
		"SELECT json_build_object('s', s, "
		  . "'access_ct', c.access_token_ciphertext IS NOT NULL, "
		  . "'refresh_ct', c.refresh_token_ciphertext IS NOT NULL, "
		  . "'expires_in_s', extract(epoch FROM s.expires_at - now()), "
		  . "'rt_expires_in_s', extract(epoch FROM s.refresh_token_expires_at - now()), "
		  . "'refresh_after_in_s', extract(epoch FROM s.refresh_after - now()))::text "
		  . "FROM oauth.connection_status s JOIN oauth.connections c USING (id) "
		  . "WHERE s.id = '$id'");
	return undef unless $d;
	my %h = %{ $d->{s} };
	$h{$_} = $d->{$_}
	  for qw(access_ct refresh_ct expires_in_s rt_expires_in_s refresh_after_in_s);
	return \%h;
}

sub lc_events
{
	my ($node, $id, $event) = @_;
	my $d = lc_json($node,
		"SELECT coalesce(json_agg(detail ORDER BY id), '[]')::text FROM oauth.events "
		  . "WHERE connection_id = '$id' AND event = '$event'");
	return $d;
}

=pod

=item lc_poll($timeout_s, sub { ... }) -> true once sub returns true, false after the timeout

=cut

sub lc_poll
{
	my ($timeout, $cb) = @_;
	my $deadline = time() + $timeout;
	while (1)
	{
		return 1 if $cb->();
		return 0 if time() > $deadline;
		usleep(50_000);
	}
}

=pod

=item lc_closed_port() -> a loopback port nothing listens on

=item lc_pkce_challenge($verifier) -> base64url(sha256($verifier)) without padding

=item lc_quote($s) -> $s as an SQL string literal

=back

=cut

sub lc_closed_port
{
	my $s = IO::Socket::INET->new(
		Listen => 1,
		LocalAddr => '127.0.0.1',
		LocalPort => 0,
		Proto => 'tcp') or die "cannot bind: $!";
	my $port = $s->sockport;
	close($s);
	return $port;
}

sub lc_pkce_challenge
{
	my ($verifier) = @_;
	return encode_base64url(sha256($verifier));
}

sub lc_quote
{
	my ($s) = @_;
	$s =~ s/'/''/g;
	return "'$s'";
}


# Start test/hostile_provider.py on 127.0.0.1 (any free port); it is stopped
# when the test exits.  Returns its directory (port.log there lists the
# requests that arrived) and its port.
my @hostile_pids;
END { kill('TERM', $_) for @hostile_pids; }

sub lc_hostile_provider
{
	my $dir = tempdir('hostile_XXXXXX', TMPDIR => 1, CLEANUP => 1);
	my $script = dirname(__FILE__) . '/hostile_provider.py';
	my $pid = fork();
	croak "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>&', \*STDERR);
		exec('python3', $script, '--port-file', "$dir/port") or POSIX::_exit(127);
	}
	push @hostile_pids, $pid;
	for (1 .. 200) { last if -e "$dir/port"; usleep(50_000); }
	my $port = slurp_file("$dir/port");
	chomp $port;
	return ($dir, $port);
}

1;
