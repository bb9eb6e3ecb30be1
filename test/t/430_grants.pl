# Grants that work: the README's grant block, run exactly as written, lets
# each role do exactly what it lists, one function at a time, with an empty
# search_path (the functions depend neither on the caller's privileges nor
# on its search_path); the application role can do nothing else, and no
# role reads a table.  A function the README grants without a call here
# fails the test, so the README and this test move together.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
$p->add_client(client_id => 'cid', client_secret => 'csecret');
my $node = oauth_node('grants');
sub sql { return $node->safe_psql('postgres', $_[0]) }

# ---- the README's block, verbatim ----------------------------------------------
# (docs/install.md since the README became a landing page; README.md before)
my $doc = -f "$FindBin::RealBin/../../docs/install.md" ? 'docs/install.md' : 'README.md';
open(my $fh, '<', "$FindBin::RealBin/../../$doc") or die "$doc: $!";
my $readme = do { local $/; <$fh> };
close($fh);
my ($block) = $readme =~ /^### Grants\n.*?^```sql\n(.*?)^```/ms
  or die "no grant block under '### Grants' in $doc";
sql($block);
pass('the README grant block runs as written');

# which role the README grants which function
my %granted;
for my $stmt (split /;/, $block)
{
	next unless $stmt =~ /GRANT\s+EXECUTE\s+ON\s+FUNCTION(.*)\bTO\s+(\w+)/s;
	my ($list, $role) = ($1, $2);
	$granted{$role}{"oauth.$1"} = 1 while $list =~ /oauth\.(\w+)\s*\(/g;
}
is_deeply([ sort keys %granted ], [qw(app oauth_admin)], 'the README grants two roles');

sub as_role
{
	my ($role, $sql) = @_;
	my ($out, $err) = ('', '');
	my $ret = $node->psql('postgres', "SET search_path = ''; $sql",
		stdout => \$out, stderr => \$err,
		extra_params => [ '-U', $role, '-v', 'VERBOSITY=verbose' ]);
	my ($state) = $err =~ /ERROR:\s+([0-9A-Z]{5}):/;
	return { ret => $ret, out => $out, err => $err, sqlstate => $state };
}

# ---- data to work on (as superuser) --------------------------------------------
my $url = $p->token_url;
my $base = $p->base_url;
my %c;
sub conn
{
	my ($acct, $grant, $expires) = @_;
	sql("SELECT oauth.register_provider('setup', '$url', 'cid', 'csecret')")
	  unless sql("SELECT count(*) FROM oauth.providers WHERE name = 'setup'");
	return oauth_create_conn($node, 'ws1', 'setup', $acct, "at-$acct", $grant,
		$expires // "now() + interval '1 day'");
}
$c{$_} = conn($_, "g-$_.0") for qw(read reject refresh reauth revoke delete);
$c{due} = conn('due', 'g-due.0', "now() + interval '1 minute'");
$c{gone} = conn('gone', 'g-gone.0');
sql("SELECT oauth.revoke('ws1', '$c{gone}')");
my $gone_event = sql("SELECT max(id) FROM oauth.events WHERE event = 'revoked'");
$p->add_code(code => 'code-g', grant => 'g-code', redirect_uri => 'https://app.example/cb');

# ---- one call per granted function, as the role ------------------------------
my @calls = (
	# the README sets oauth.require_workspace for app: each statement binds first
	[ app => 'oauth.bind_workspace', "SELECT oauth.bind_workspace('ws1')", qr/^$/ ],
	[ app => 'oauth.valid_token',
		"SELECT oauth.valid_token('ws1', '$c{read}', interval '1 minute') FROM oauth.bind_workspace('ws1')",
		qr/^at-read$/ ],
	[ app => 'oauth.connection_event',
		"BEGIN;\nSELECT oauth.bind_workspace('ws1') \\gset\n"
		  . "SELECT state || ' ' || connection_id FROM oauth.connection_event($gone_event)",
		qr/^revoked \Q$c{gone}\E$/ ],
	[ app => 'oauth.token_rejected',
		"SELECT oauth.token_rejected('ws1', '$c{reject}', 'at-reject') FROM oauth.bind_workspace('ws1')",
		qr/^$/ ],
	[ oauth_admin => 'oauth.register_provider',
		"SELECT oauth.register_provider('p1', '$url', 'cid', 'csecret', revoke_url => '$base/revoke',
		     authorize_url => '$base/authorize')", qr/^$/ ],
	[ oauth_admin => 'oauth.create_connection',
		"SELECT oauth.create_connection('ws2', 'p1', 'acct', 'at-x', 'rt-x', now() + interval '1 day')",
		qr/^[0-9a-f-]{36}$/ ],
	[ oauth_admin => 'oauth.authorize_url', "SELECT oauth.authorize_url('p1', 'https://app.example/cb', 'st')",
		qr/^\Q$base\E\/authorize\?.*state=st/ ],
	[ oauth_admin => 'oauth.exchange_code',
		"SELECT oauth.exchange_code('ws2', 'p1', 'code-g', 'https://app.example/cb', provider_account_id => 'acct-code')",
		qr/^[0-9a-f-]{36}$/ ],
	[ oauth_admin => 'oauth.client_credentials', "SELECT oauth.client_credentials('ws2', 'p1')",
		qr/^[0-9a-f-]{36}$/ ],
	[ oauth_admin => 'oauth.reauthorize',
		"SELECT oauth.reauthorize('ws1', '$c{reauth}', 'at-new', 'g-new.0', now() + interval '1 day')",
		qr/^$/ ],
	[ oauth_admin => 'oauth.revoke', "SELECT oauth.revoke('ws1', '$c{revoke}')", qr/^$/ ],
	[ oauth_admin => 'oauth.delete_connection', "SELECT oauth.delete_connection('ws1', '$c{delete}')",
		qr/^$/ ],
	[ oauth_admin => 'oauth.refresh', "SELECT oauth.refresh('ws1', '$c{refresh}')", qr/^refreshed$/ ],
	[ oauth_admin => 'oauth.refresh_due',
		"SELECT connection_id || ' ' || outcome FROM oauth.refresh_due()", qr/^\Q$c{due}\E refreshed$/ ],
	[ oauth_admin => 'oauth.rotate_key', "SELECT oauth.rotate_key() >= 0", qr/^t$/ ],
	[ oauth_admin => 'oauth.stats', "SELECT refreshes_attempted > 0 FROM oauth.stats()", qr/^t$/ ],
	[ oauth_admin => 'oauth.refresh_jobs', "SELECT count(*) >= 0 FROM oauth.refresh_jobs()", qr/^t$/ ],
	[ oauth_admin => 'oauth.provider_stats',
		"SELECT provider || ' ' || attempts FROM oauth.provider_stats() WHERE provider = 'setup'",
		qr/^setup [1-9]/ ],
	[ oauth_admin => 'oauth.refresh_jobs', "SELECT count(*) >= 0 FROM oauth.refresh_jobs()", qr/^t$/ ],
	[ oauth_admin => 'oauth.stats_reset', "SELECT oauth.stats_reset()", qr/^$/ ],
	[ oauth_admin => 'oauth.adopt_copy', "SELECT oauth.adopt_copy()", qr/^already_home$/ ],
	[ oauth_admin => 'oauth.provider_traffic_status', "SELECT oauth.provider_traffic_status()",
		qr/^on$/ ],
);
my %tested;
for my $t (@calls)
{
	my ($role, $fn, $call, $want) = @$t;
	ok($granted{$role}{$fn}, "the README grants $fn to $role");
	my $r = as_role($role, $call);
	is($r->{ret}, 0, "$role: $fn works") or diag($r->{err});
	like($r->{out}, $want, "$role: $fn does its job");
	$tested{$role}{$fn} = 1;
	# the application role may run none of the admin functions
	if ($role eq 'oauth_admin')
	{
		my $a = as_role('app', $call);
		is($a->{sqlstate}, '42501', "app: $fn is refused") or diag($a->{err});
	}
}
for my $role (sort keys %granted)
{
	for my $fn (sort keys %{ $granted{$role} })
	{
		ok($tested{$role}{$fn}, "$role: $fn (granted in the README) has its test here");
	}
}
is(sql("SELECT oauth.valid_token('ws1', '$c{reject}')"), 'at-g-reject-1',
	'token_rejected by the application refreshed the connection');

# ---- what the README grants to read, and nothing else ---------------------------
for my $t (
	[ app => 'oauth.connection_status' ],
	[ oauth_admin => 'oauth.connection_status' ],
	[ oauth_admin => 'oauth.events' ],
	[ oauth_admin => 'oauth.provider_presets' ])
{
	my ($role, $rel) = @$t;
	my $bind = $role eq 'app' ? "BEGIN;\nSELECT oauth.bind_workspace('ws1') \\gset\n" : '';
	my $r = as_role($role, "${bind}SELECT count(*) > 0 FROM $rel");
	is($r->{out}, 't', "$role reads $rel") or diag($r->{err});
}
for my $role (qw(app oauth_admin))
{
	for my $rel (qw(oauth.connections oauth.providers oauth.code_redemptions oauth.refresh_home))
	{
		is(as_role($role, "SELECT count(*) FROM $rel")->{sqlstate}, '42501',
			"$role cannot read $rel");
	}
	is(as_role($role, "SELECT oauth._open('\\x00'::bytea, 'x')")->{sqlstate}, '42501',
		"$role cannot call an internal function");
}
is(as_role('app', "SELECT count(*) FROM oauth.events")->{sqlstate}, '42501',
	'app cannot read the events');
# the README's block makes the binding mandatory for app
my $unbound = as_role('app', "SELECT oauth.valid_token('ws1', '$c{read}')");
is($unbound->{sqlstate}, '42501', 'app: valid_token without a binding is refused');
is(as_role('app', "SELECT count(*) FROM oauth.connection_status")->{out}, '0',
	'app: connection_status without a binding shows nothing');

$node->stop;
done_testing();
