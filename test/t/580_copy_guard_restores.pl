# The copy guard holds for every restore path (issue 14, item 7): a copy
# sends nothing to the provider, whatever the restore did with triggers and
# in whatever order the rows arrived, until oauth.adopt_copy().  One
# production database, dumped; each way of restoring it goes into its own
# cluster (the worker's database), with production's key file:
#  - data-only with --disable-triggers into a database that has the
#    extension (CREATE EXTENSION's oauth.refresh_home row stays next to the
#    restored one);
#  - data-only with triggers;
#  - pg_restore -j 2 (the data section in parallel, with --disable-triggers);
#  - data-only with --disable-triggers one table at a time, connections
#    first, oauth.refresh_home last;
#  - a whole restore that leaves oauth.refresh_home's rows out (pg_restore -L);
#  - pg_dump --data-only --disable-triggers | psql;
#  - pg_dump | psql of the whole database.
# Each: the worker's sweep (200 ms) says it is a copy and sends nothing,
# oauth.refresh() fails with OA006, the provider's request count does not
# move; after oauth.adopt_copy() the due connection refreshes.
use strict;
use warnings;

use File::Temp qw(tempdir);
use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
$p->add_client(client_id => 'cid', client_secret => 'csecret');
$p->set_grant($_) for qw(g1 g2);

my $prod = oauth_node('prod');
oauth_register($prod, 'p1', $p->token_url, ", refresh_buffer => '5 minutes'");
oauth_create_conn($prod, 'ws1', 'p1', 'a1', 'at-fresh-1', 'g1.0', "now() + interval '1 day'");
my $expired = oauth_create_conn($prod, 'ws1', 'p1', 'a2', 'at-expired-2', 'g2.0',
	"now() - interval '1 minute'");
my $key = oauth_key_b64($prod);

my $dir = tempdir(CLEANUP => 1);
my %dump = (
	custom => "$dir/prod.dump",
	plain => "$dir/prod.sql",
	plain_data => "$dir/prod_data.sql");
$prod->command_ok([ 'pg_dump', '-Fc', '-f', $dump{custom}, '-d', $prod->connstr('postgres') ],
	'pg_dump -Fc');
$prod->command_ok([ 'pg_dump', '-f', $dump{plain}, '-d', $prod->connstr('postgres') ],
	'pg_dump (plain)');
$prod->command_ok(
	[
		'pg_dump', '--data-only', '--disable-triggers', '-f', $dump{plain_data},
		'-d', $prod->connstr('postgres')
	],
	'pg_dump --data-only --disable-triggers (plain)');
# the same list without oauth.refresh_home's rows
my $list = "$dir/no_home.list";
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'pg_restore', '-l', $dump{custom} ], '>', \$out, '2>', \$err)
	  or die "pg_restore -l: $err";
	my @kept = grep { !/TABLE DATA oauth refresh_home/ } split /\n/, $out;
	cmp_ok(scalar(split /\n/, $out) - scalar(@kept), '==', 1,
		'the dump\'s list has one oauth.refresh_home data entry, left out');
	open(my $fh, '>', $list) or die;
	print $fh "$_\n" for @kept;
	close($fh);
}
$prod->stop;

# run a command; its output does not matter (a data-only restore into a
# database with the extension may report duplicates), what it leaves does
sub run_quiet
{
	my ($out, $err) = ('', '');
	IPC::Run::run($_[0], '>', \$out, '2>', \$err);
	return;
}

my $n = 0;

sub copy_node
{
	my ($with_extension) = @_;
	my $node = oauth_node('copy' . ++$n,
		create_extension => $with_extension, sweep_interval => '200ms');
	oauth_write_keys($node, [ [ 'k1', $key ] ]);
	return $node;
}

# the copy: the worker's sweeps send nothing, a caller gets OA006, then
# adopt_copy() makes it refresh
sub check_copy
{
	my ($name, $node, $log_offset, $requests) = @_;
	my $copy_logged = qr/no requests are sent to providers: this database is a copy/;

	is($node->safe_psql('postgres', "SELECT count(*) FROM oauth.connections"), '2',
		"$name: the connections were restored");
	oauth_poll(
		30, 0.1,
		sub {
			return $p->stats->{total} != $requests
			  || slurp_file($node->logfile, $log_offset) =~ $copy_logged;
		});
	like(slurp_file($node->logfile, $log_offset), $copy_logged,
		"$name: the worker says it is a copy");
	unlike($node->safe_psql('postgres', "SELECT oauth.provider_traffic_status()"), qr/^on$/,
		"$name: provider_traffic_status() is not on");
	my $r = oauth_psql($node, "SELECT oauth.refresh('ws1', '$expired')");
	is($r->{sqlstate}, 'OA006', "$name: refresh() fails with OA006");
	like($r->{err}, qr/this database is a copy.*HINT:.*oauth\.adopt_copy\(\)/s,
		"$name: refresh() says it is a copy, with the adopt hint");
	is($p->stats->{total}, $requests, "$name: nothing was sent to the provider");

	is($node->safe_psql('postgres', "SELECT oauth.adopt_copy()"), 'adopted',
		"$name: adopt_copy() adopts");
	is($node->safe_psql('postgres', "SELECT oauth.provider_traffic_status()"), 'on',
		"$name: traffic is on after adoption");
	ok(oauth_poll(30, 0.1, sub { $p->stats->{total} > $requests }),
		"$name: after adoption the worker refreshes the due connection");
	is($node->safe_psql('postgres', "SELECT oauth.adopt_copy()"), 'already_home',
		"$name: a second adopt_copy() changes nothing");
	$node->stop;
	return;
}

my @restores = (
	[
		'data-only --disable-triggers', 1,
		sub {
			run_quiet([ 'pg_restore', '--data-only', '--disable-triggers',
				'-d', $_[0]->connstr('postgres'), $dump{custom} ]);
		}
	],
	[
		'data-only with triggers', 1,
		sub {
			run_quiet([ 'pg_restore', '--data-only', '-d', $_[0]->connstr('postgres'),
				$dump{custom} ]);
		}
	],
	[
		# a parallel restore does not order the data of the extension's
		# tables by their foreign keys (connections may come before
		# providers), so its data section goes with --disable-triggers
		'pg_restore -j 2 (by sections, data with --disable-triggers)', 0,
		sub {
			my $db = $_[0]->connstr('postgres');
			run_quiet([ 'pg_restore', '--section=pre-data', '-d', $db, $dump{custom} ]);
			run_quiet([ 'pg_restore', '-j', '2', '--section=data', '--disable-triggers',
				'-d', $db, $dump{custom} ]);
			run_quiet([ 'pg_restore', '--section=post-data', '-d', $db, $dump{custom} ]);
		}
	],
	[
		'data-only --disable-triggers, connections first, refresh_home last', 1,
		sub {
			my ($node) = @_;
			for my $t (qw(connections providers refresh_home))
			{
				run_quiet([ 'pg_restore', '--data-only', '--disable-triggers', '-n', 'oauth',
					'-t', $t, '-d', $node->connstr('postgres'), $dump{custom} ]);
				unlike($node->safe_psql('postgres', "SELECT oauth.provider_traffic_status()"),
					qr/^on$/, "one table at a time: not home once $t arrived");
			}
		}
	],
	[
		'refresh_home rows left out (pg_restore -L)', 0,
		sub {
			run_quiet([ 'pg_restore', '-L', $list, '-d', $_[0]->connstr('postgres'),
				$dump{custom} ]);
			is($_[0]->safe_psql('postgres', "SELECT how FROM oauth.refresh_home"),
				'create extension', 'left out: only CREATE EXTENSION\'s row names a home');
		}
	],
	[
		'pg_dump --data-only --disable-triggers | psql', 1,
		sub {
			run_quiet([ 'psql', '-X', '-q', '-d', $_[0]->connstr('postgres'),
				'-f', $dump{plain_data} ]);
		}
	],
	[
		'pg_dump | psql', 0,
		sub {
			run_quiet([ 'psql', '-X', '-q', '-d', $_[0]->connstr('postgres'),
				'-f', $dump{plain} ]);
		}
	]);

for my $restore (@restores)
{
	my ($name, $with_extension, $do) = @$restore;
	my $node = copy_node($with_extension);
	my $log_offset = -s $node->logfile;
	my $requests = $p->stats->{total};
	$do->($node);
	check_copy($name, $node, $log_offset, $requests);
}

done_testing();
