# Defects found in review (issue 10, deliverable 4):
#  - two concurrent exchange_code calls for the same account end in one
#    connection, never a unique violation after the code was redeemed;
#  - a connection without a refresh token is not moved to reauth_required
#    while its access token is still valid, only once it has expired.
# (A "status" field in a success body: test/t/330_hostile_provider.pl.)
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthLifecycleUtil;
use OAuthProvider;
use OAuthTestUtil qw(oauth_session);
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
my $node = lc_node('defects');
lc_sql($node, "SELECT oauth.register_provider('p1', '" . $p->token_url . "', 'cid', 'sec')");

# --- concurrent exchanges for the same account ---------------------------------
$p->add_code(code => 'code-a', grant => 'ga');
$p->add_code(code => 'code-b', grant => 'gb');
my $a = oauth_session($node);
my $b = oauth_session($node);
$a->query('BEGIN');
my $ra = $a->query("SELECT oauth.exchange_code('ws1', 'p1', 'code-a', 'https://app.example/cb', "
	  . "provider_account_id => 'same-user')");
like($ra->{out}, qr/^[0-9a-f-]{36}$/, 'first exchange: a connection (not committed yet)') or diag($ra->{err});
# the second one meets the first's uncommitted row
$b->send("SELECT oauth.exchange_code('ws1', 'p1', 'code-b', 'https://app.example/cb', "
	  . "provider_account_id => 'same-user')");
ok(lc_poll(30, sub { $node->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'") eq '1' }),
	'the second exchange waits for the first');
$a->query('COMMIT');
my $rb = $b->wait(30);
is($rb->{sqlstate}, undef, 'second exchange: no unique violation') or diag($rb->{err});
is($rb->{out}, $ra->{out}, 'both calls return the same connection');
is(lc_sql($node, "SELECT count(*) FROM oauth.connections WHERE provider_account_id = 'same-user'"), '1',
	'one connection');
is(lc_sql($node, "SELECT oauth.valid_token('ws1', '$ra->{out}')"), 'at-gb-1',
	'it holds the later answer: the second redeemed code was not lost');
$a->quit;
$b->quit;

# --- no refresh token, token still valid ---------------------------------------
my $id = lc_sql($node, "SELECT oauth.create_connection('ws1', 'p1', 'no-rt', 'at-no-rt', NULL, "
	  . "now() + interval '3 minutes')");
is(lc_sql($node, "SELECT oauth.refresh('ws1', '$id')"), 'not_needed',
	'refresh without a refresh token while the token is valid: not_needed');
is(lc_sql($node, "SELECT state FROM oauth.connection_status WHERE id = '$id'"), 'active',
	'... and the connection stays active');
is(lc_sql($node, "SELECT oauth.valid_token('ws1', '$id', '10 minutes')"), 'at-no-rt',
	'a caller asking for more validity than is left gets the token it has');
is(lc_sql($node, "SELECT refresh_after = expires_at FROM oauth.connection_status WHERE id = '$id'"), 't',
	'it is due again only when its token expires');
is(lc_sql($node, "SELECT count(*) FROM oauth.refresh_due()"), '0', 'so a sweep meanwhile leaves it alone');
is(lc_sql($node, "SELECT state FROM oauth.connection_status WHERE id = '$id'"), 'active', '... and active');
lc_sql($node, "UPDATE oauth.connections SET expires_at = now() - interval '1 second' WHERE id = '$id'");
is(lc_sql($node, "SELECT oauth.refresh('ws1', '$id')"), 'reauth_required',
	'once it has expired: reauth_required');

done_testing();
