# Single flight: 50 sessions ask for the same expired token at the same
# moment; the provider sees exactly one refresh and every session gets the
# token that refresh produced.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $N = 50;

my $p = OAuthProvider->new;
# 300 ms per answer, so that all sessions overlap one refresh; rotate and
# strict, so that a second refresh with the old refresh token would fail.
$p->set_grant('g1', latency_ms => 300, rotate => 1, strict => 1);

my $node = oauth_node('stampede', conf => "max_connections = 100\n");
oauth_register($node, 'p1', $p->token_url);
my $id = oauth_create_conn($node, 'ws1', 'p1', 'acct1', 'at-initial', 'g1.0',
	"now() - interval '1 minute'");

# Connect every session first, then fire the calls together.
my @s = map { oauth_session($node) } 1 .. $N;
$_->send("SELECT oauth.valid_token('ws1', '$id')") for @s;
my @r = map { $_->wait(60) } @s;

is(scalar(grep { $_->{done} && $_->{err} eq '' } @r),
	$N, "all $N sessions got an answer without error")
  or diag(join("\n", map { $_->{err} } grep { $_->{err} ne '' } @r));
my %tokens;
$tokens{ $_->{out} }++ for @r;
is_deeply(\%tokens, { 'at-g1-1' => $N },
	"all $N sessions got the same new token");

my $st = $p->stats;
is($st->{total}, 1, 'the provider received exactly one token request');
is($st->{by_refresh_token}{'g1.0'}, 1, 'one refresh with the stored refresh token');
is($st->{by_grant}{g1}, 1, 'one request for the grant');
is($p->grant_info('g1')->{current_refresh_token},
	'g1.1', 'the provider rotated the refresh token once');

my ($attempted, $succeeded, $waits, $joined) = split /\|/,
  $node->safe_psql('postgres',
	'SELECT refreshes_attempted, refreshes_succeeded, waits, waiters_served_by_another FROM oauth.stats()'
  );
is($attempted, 1, 'stats: one refresh attempted');
is($succeeded, 1, 'stats: one refresh succeeded');
note("stats: attempted=$attempted succeeded=$succeeded waits=$waits joined=$joined");
cmp_ok($joined, '>', 0, 'stats: waiters were served by another session\'s refresh');
cmp_ok($waits, '>=', $joined, 'stats: waits count every waiting session');

is(oauth_event_count($node, $id, 'refreshed'), 1, 'one refreshed event');

# The rotated refresh token was stored: a forced refresh is accepted in strict mode.
is($node->safe_psql('postgres', "SELECT oauth.refresh('ws1', '$id')"),
	'refreshed', 'forced refresh with the rotated refresh token succeeds');
is($p->stats->{by_refresh_token}{'g1.1'}, 1, 'it used g1.1');

$_->quit for @s;
$node->stop;
$p->stop;
done_testing();
