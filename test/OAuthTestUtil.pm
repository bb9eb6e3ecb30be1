=pod

=head1 NAME

OAuthTestUtil - shared set-up for the oauth_tokens TAP tests

=head1 SYNOPSIS

  use FindBin;
  use lib "$FindBin::RealBin/..";
  use OAuthTestUtil;
  use OAuthProvider;

  my $p    = OAuthProvider->new;
  my $node = oauth_node('stampede', conf => "max_connections = 100\n");
  oauth_register($node, 'p1', $p->token_url);
  my $id = oauth_create_conn($node, 'ws1', 'p1', 'acct1', 'at-initial', 'g1.0',
      "now() - interval '1 minute'");
  my $r = oauth_psql($node, "SELECT oauth.valid_token('ws1', '$id')");
  is($r->{sqlstate}, 'OA003');

  my $s = oauth_session($node);        # a psql kept open, for concurrency
  $s->send("SELECT oauth.valid_token('ws1', '$id')");
  ...
  my $res = $s->wait;                  # { out, err, sqlstate, done, ... }
  $s->quit;

=cut

package OAuthTestUtil;

use strict;
use warnings;

use Carp;
use Exporter 'import';
use IPC::Run;
use JSON::PP ();
use MIME::Base64 qw(encode_base64);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

our @EXPORT = qw(oauth_node oauth_key_b64 oauth_write_keys oauth_register
  oauth_create_conn oauth_psql oauth_session oauth_worker_pid
  oauth_wait_worker oauth_status oauth_event_count oauth_closed_port
  oauth_poll oauth_random_b64);

=pod

=head1 FUNCTIONS

=over

=item oauth_node($name, %opt) -> started PostgreSQL::Test::Cluster

Creates, configures and starts a cluster with oauth_tokens preloaded, a key
file with one random key (oauth_key_b64($node) returns its base64), and
the extension created in database postgres; returns once the refresh worker
runs.  Options:

  allow_http        1 (default) or 0
  allow_private_addresses  1 (default: the test providers are on 127.0.0.1) or 0
  ca_file           path for oauth.ca_file
  http_timeout      value for oauth.http_timeout
  sweep_interval    '0' (default: the tests drive refreshes themselves)
  log_min_messages  'debug1' (default)
  ext_version       the extension version to create (default: the default_version)
  create_extension  0: create no extension (the worker then waits for one)
  allows_streaming  1 or 'logical': init the cluster for replication (standbys, subscriptions)
  conf              more postgresql.conf lines, appended last

=cut

sub oauth_random_b64
{
	my ($n) = @_;
	open(my $fh, '<:raw', '/dev/urandom') or die "cannot open /dev/urandom: $!";
	my $got = read($fh, my $bytes, $n);
	close($fh);
	die "short read from /dev/urandom" unless defined $got && $got == $n;
	my $b64 = encode_base64($bytes, '');
	return $b64;
}

=pod

=item oauth_write_keys($node, [ [id, b64], ... ])

Writes the key file atomically (a new file renamed over the old one, so the
server notices the change by the file's identity), mode 0600; the first key
is the active one.

=cut

sub oauth_write_keys
{
	my ($node, $keys) = @_;
	my $path = $node->data_dir . '/oauth_tokens.keys';
	my $tmp = "$path.tmp.$$";
	open(my $fh, '>', $tmp) or die "cannot write $tmp: $!";
	print $fh "$_->[0]:$_->[1]\n" for @$keys;
	close($fh) or die "cannot close $tmp: $!";
	chmod(0600, $tmp) or die "chmod $tmp: $!";
	rename($tmp, $path) or die "rename $tmp: $!";
	return;
}

sub oauth_node
{
	my ($name, %opt) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init($opt{allows_streaming} ? (allows_streaming => $opt{allows_streaming}) : ());

	my $conf = "shared_preload_libraries = 'oauth_tokens'\n"
	  . "oauth.database = 'postgres'\n"
	  . "oauth.allow_http = " . (($opt{allow_http} // 1) ? 'on' : 'off') . "\n"
	  . "oauth.allow_private_addresses = "
	  . (($opt{allow_private_addresses} // 1) ? 'on' : 'off') . "\n"
	  . "oauth.sweep_interval = '" . ($opt{sweep_interval} // '0') . "'\n"
	  . "log_min_messages = " . ($opt{log_min_messages} // 'debug1') . "\n"
	  # the README's setting: logged statements carry no bind parameters
	  . "log_parameter_max_length = 0\n";
	$conf .= "oauth.ca_file = '$opt{ca_file}'\n" if defined $opt{ca_file};
	$conf .= "oauth.http_timeout = '$opt{http_timeout}'\n"
	  if defined $opt{http_timeout};
	$conf .= $opt{conf} if defined $opt{conf};
	$node->append_conf('postgresql.conf', $conf);

	my $key = oauth_random_b64(32);
	$node->{oauth_key_b64} = $key;
	oauth_write_keys($node, [ [ 'k1', $key ] ]);

	$node->start;
	$node->safe_psql('postgres',
		'CREATE EXTENSION oauth_tokens'
		  . (defined $opt{ext_version} ? " VERSION '$opt{ext_version}'" : '')
		  . ' CASCADE')
	  if $opt{create_extension} // 1;
	oauth_wait_worker($node);
	return $node;
}

sub oauth_key_b64 { return $_[0]->{oauth_key_b64} }

=pod

=item oauth_worker_pid($node) -> pid or ''

=item oauth_wait_worker($node, $not_pid, $timeout) -> pid

Waits (default 60 s) until the refresh worker runs, with a pid other than
$not_pid when given; dies if it does not.

=cut

sub oauth_worker_pid
{
	my ($node) = @_;
	my ($ret, $out) = $node->psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'oauth_tokens worker'"
	);
	return $ret == 0 ? $out : '';
}

sub oauth_wait_worker
{
	my ($node, $not_pid, $timeout) = @_;
	my $pid;
	oauth_poll(
		$timeout // 60,
		0.1,
		sub {
			$pid = oauth_worker_pid($node);
			return $pid ne '' && $pid !~ /\n/ && (!$not_pid || $pid != $not_pid);
		}) or croak "the oauth_tokens worker did not start";
	return $pid;
}

=pod

=item oauth_register($node, $name, $token_url, $more_sql)

register_provider($name, $token_url, 'cid', 'csecret' $more_sql); $more_sql
is appended to the argument list, e.g. ", reauth_errors => '{x}'".

=cut

sub oauth_register
{
	my ($node, $name, $url, $more, %opt) = @_;
	my $secret = $opt{secret} // 'csecret';
	$node->safe_psql('postgres',
		"SELECT oauth.register_provider('$name', '$url', 'cid', '$secret'"
		  . ($more // '') . ")");
	return;
}

=pod

=item oauth_create_conn($node, $ws, $provider, $acct, $at, $rt, $expires_sql) -> uuid

=cut

sub oauth_create_conn
{
	my ($node, $ws, $prov, $acct, $at, $rt, $expires) = @_;
	return $node->safe_psql('postgres',
		"SELECT oauth.create_connection('$ws', '$prov', '$acct', '$at', '$rt', $expires)"
	);
}

=pod

=item oauth_psql($node, $sql, %opt) -> { ret, out, err, sqlstate, elapsed }

Runs $sql in a fresh psql (VERBOSITY verbose, ON_ERROR_STOP) and reports the
exit code, output, errors, the first error's SQLSTATE (undef if none) and the
wall time in seconds.  timeout => seconds kills psql after that long.

=cut

sub oauth_psql
{
	my ($node, $sql, %opt) = @_;
	my ($out, $err) = ('', '');
	my $t0 = time();
	my $ret = $node->psql(
		'postgres', $sql,
		stdout => \$out,
		stderr => \$err,
		extra_params => [ '-v', 'VERBOSITY=verbose' ],
		defined $opt{timeout} ? (timeout => $opt{timeout}) : ());
	my $elapsed = time() - $t0;
	my ($state) = $err =~ /(?:ERROR|FATAL):\s+([0-9A-Z]{5}):/;
	return {
		ret => $ret,
		out => $out,
		err => $err,
		sqlstate => $state,
		elapsed => $elapsed
	};
}

=pod

=item oauth_status($node, $id) -> hashref of oauth.connection_status columns

Plus next_in_s: seconds from now until next_attempt_at (undef if NULL).

=cut

sub oauth_status
{
	my ($node, $id) = @_;
	my $row = $node->safe_psql('postgres',
		"SELECT json_build_object('s', s, 'next_in_s', "
		  . "extract(epoch FROM s.next_attempt_at - now()))::text "
		  . "FROM oauth.connection_status s WHERE id = '$id'");
	return undef if $row eq '';
	my $d = JSON::PP::decode_json($row);
	my %h = %{ $d->{s} };
	$h{next_in_s} = $d->{next_in_s};
	return \%h;
}

sub oauth_event_count
{
	my ($node, $id, $event) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM oauth.events WHERE connection_id = '$id' AND event = '$event'"
	);
}

=pod

=item oauth_poll($timeout_s, $interval_s, sub { ... }) -> true if sub returned true in time

=cut

sub oauth_poll
{
	my ($timeout, $interval, $cb) = @_;
	my $deadline = time() + $timeout;
	while (1)
	{
		return 1 if $cb->();
		return 0 if time() > $deadline;
		usleep(int($interval * 1_000_000));
	}
}

=pod

=item oauth_closed_port() -> a loopback port nothing listens on

=cut

sub oauth_closed_port
{
	require IO::Socket::INET;
	my $s = IO::Socket::INET->new(
		Listen => 1,
		LocalAddr => '127.0.0.1',
		LocalPort => 0,
		Proto => 'tcp') or die "cannot bind: $!";
	my $port = $s->sockport;
	close($s);
	return $port;
}

=pod

=item oauth_session($node, %opt) -> OAuthTestUtil::Session

A psql process kept open (not stopping on errors, VERBOSITY verbose), for
sessions that must hold a transaction or run concurrently.  Methods:

  send($sql)     queue $sql and return at once
  done           has the last sent command finished (or psql exited)?
  wait($timeout) wait for it; -> { out, err, sqlstate, done, exited, elapsed }
  query($sql)    send + wait
  quit

=back

=cut

sub oauth_session
{
	my ($node, %opt) = @_;
	return OAuthTestUtil::Session->new($node, %opt);
}

package OAuthTestUtil::Session;

use strict;
use warnings;

use Carp;
use IPC::Run;
use Time::HiRes qw(time);

sub new
{
	my ($class, $node, %opt) = @_;
	my $self = bless { in => '', out => '', err => '', n => 0 }, $class;
	my @cmd = (
		$node->installed_command('psql'), '-XAtq', '-v', 'VERBOSITY=verbose',
		'-d', $node->connstr($opt{dbname} // 'postgres'));
	$self->{h} = IPC::Run::start(\@cmd, '<', \$self->{in}, '>', \$self->{out},
		'2>', \$self->{err});
	my $r = $self->query('SELECT 1', $opt{timeout} // 60);
	croak "psql session did not start: $r->{err}"
	  unless $r->{done} && $r->{out} eq '1';
	return $self;
}

sub send
{
	my ($self, $sql) = @_;
	croak "previous command still running" if $self->{pending};
	$self->{n}++;
	my $banner = "__oauth_test_done_$self->{n}__";
	$self->{banner} = $banner;
	$self->{pending} = 1;
	$self->{out} = '';
	$self->{err} = '';
	$self->{sent_at} = time();
	$self->{in} .= "$sql\n;\n\\echo '$banner'\n\\warn '$banner'\n";
	$self->{h}->pump_nb if $self->{h}->pumpable;
	return;
}

sub _finished
{
	my ($self) = @_;
	my $b = $self->{banner};
	return 1
	  if $self->{out} =~ /\Q$b\E\n/ && $self->{err} =~ /\Q$b\E\n/;
	return 0;
}

# Has the last command finished?  Non-blocking.
sub done
{
	my ($self) = @_;
	return 1 unless $self->{pending};
	eval { $self->{h}->pump_nb if $self->{h}->pumpable; };
	return 1 if $self->_finished;
	return 1 unless $self->{h}->pumpable;
	return 0;
}

sub wait
{
	my ($self, $timeout) = @_;
	$timeout //= 60;
	my $deadline = time() + $timeout;
	while (!$self->_finished && $self->{h}->pumpable && time() < $deadline)
	{
		eval { $self->{h}->pump_nb; };
		Time::HiRes::usleep(10_000) unless $self->_finished;
	}
	my $b = $self->{banner};
	my $done = $self->_finished;
	my $exited = !$self->{h}->pumpable;
	my ($out, $err) = ($self->{out}, $self->{err});
	$out =~ s/\Q$b\E\n//;
	$err =~ s/\Q$b\E\n//;
	chomp $out;
	my ($state) = $err =~ /(?:ERROR|FATAL):\s+([0-9A-Z]{5}):/;
	$self->{pending} = 0 if $done || $exited;
	return {
		out => $out,
		err => $err,
		sqlstate => $state,
		done => $done,
		exited => $exited,
		elapsed => time() - $self->{sent_at},
	};
}

sub query
{
	my ($self, $sql, $timeout) = @_;
	$self->send($sql);
	return $self->wait($timeout);
}

sub quit
{
	my ($self) = @_;
	return unless $self->{h};
	if ($self->{h}->pumpable)
	{
		$self->{in} .= "\\q\n";
		eval { $self->{h}->finish; };
	}
	else
	{
		eval { $self->{h}->finish; };
	}
	delete $self->{h};
	return;
}

sub kill
{
	my ($self) = @_;
	return unless $self->{h};
	eval { $self->{h}->kill_kill; };
	delete $self->{h};
	return;
}

sub DESTROY
{
	my ($self) = @_;
	local ($?, $@);
	$self->kill if $self->{h};
	return;
}

1;
