# Durability: a refresh is committed by the worker, whatever the caller's
# transaction does afterwards.  The provider rotates refresh tokens and
# accepts only the current one (strict), so a rotated refresh token lost
# with a caller's rollback would make the next refresh fail.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/..";
use OAuthProvider;
use OAuthTestUtil;
use PostgreSQL::Test::Utils;
use Test::More;

my $p = OAuthProvider->new;
$p->set_grant($_, rotate => 1, strict => 1) for qw(grb ger grr gsz);

my $node = oauth_node('rollback');
oauth_register($node, 'p1', $p->token_url);

sub expired_conn
{
	my ($acct, $grant) = @_;
	return oauth_create_conn($node, 'ws1', 'p1', $acct, "at-initial-$acct",
		"$grant.0", "now() - interval '1 minute'");
}

# After the caller's transaction ended badly, the rotated refresh token
# must be the stored one: a forced refresh succeeds and uses it.
sub check_rotation_kept
{
	my ($id, $grant, $what) = @_;
	is($p->stats->{by_refresh_token}{"$grant.0"},
		1, "$what: the first refresh reached the provider");
	is($node->safe_psql('postgres', "SELECT oauth.refresh('ws1', '$id')"),
		'refreshed', "$what: a forced refresh afterwards succeeds");
	is($p->stats->{by_refresh_token}{"$grant.1"},
		1, "$what: it presented the rotated refresh token $grant.1");
	is($p->grant_info($grant)->{current_refresh_token},
		"$grant.2", "$what: the provider rotated again");
	is($node->safe_psql('postgres', "SELECT oauth.valid_token('ws1', '$id')"),
		"at-$grant-2", "$what: valid_token serves the newest token");
	my $st = oauth_status($node, $id);
	is($st->{state}, 'active', "$what: connection active");
	is($st->{failure_count}, 0, "$what: no failure recorded");
	is(oauth_event_count($node, $id, 'refreshed'), 2,
		"$what: both refreshes recorded as events");
}

# 1. ROLLBACK after valid_token refreshed.
{
	my $id = expired_conn('rb', 'grb');
	my $r = oauth_psql($node,
		"BEGIN;\nSELECT oauth.valid_token('ws1', '$id');\nROLLBACK;");
	is($r->{ret}, 0, 'rollback: script ran') or diag($r->{err});
	is($r->{out}, 'at-grb-1', 'rollback: valid_token returned the new token');
	check_rotation_kept($id, 'grb', 'rollback');
}

# 2. The caller's statement fails after valid_token ran (the division is
# evaluated at run time, after valid_token, because valid_token is volatile).
{
	my $id = expired_conn('er', 'ger');
	my $r = oauth_psql($node,
		"SELECT length(oauth.valid_token('ws1', '$id')) / 0;");
	is($r->{sqlstate}, '22012', 'error: the caller\'s statement failed')
	  or diag($r->{err});
	check_rotation_kept($id, 'ger', 'error');

	# the same inside an explicit transaction block that aborts
	my $id2 = expired_conn('er2', 'ger2');
	$p->set_grant('ger2', rotate => 1, strict => 1);
	$r = oauth_psql($node,
		"BEGIN;\nSELECT oauth.valid_token('ws1', '$id2');\nSELECT 1/count(*) FROM pg_class WHERE false;\nCOMMIT;"
	);
	is($r->{sqlstate}, '22012', 'error in block: the transaction failed');
	is($r->{out}, 'at-ger2-1', 'error in block: valid_token had returned the new token');
	check_rotation_kept($id2, 'ger2', 'error in block');
}

# 3. REPEATABLE READ and SERIALIZABLE callers, whose snapshot was taken
# before the worker committed the refresh, get the new token and commit.
for my $case ([ 'REPEATABLE READ', 'rr', 'grr' ], [ 'SERIALIZABLE', 'sz', 'gsz' ])
{
	my ($level, $acct, $grant) = @$case;
	my $id = expired_conn($acct, $grant);
	my $r = oauth_psql($node, qq{
BEGIN ISOLATION LEVEL $level;
SELECT 'snap:' || count(*) FROM oauth.connection_status WHERE id = '$id';
SELECT 'tok:' || oauth.valid_token('ws1', '$id');
SELECT 'ver:' || version FROM oauth.connection_status WHERE id = '$id';
SELECT 'tok2:' || oauth.valid_token('ws1', '$id');
COMMIT;
SELECT 'after:' || version FROM oauth.connection_status WHERE id = '$id';
});
	is($r->{ret}, 0, "$level: the transaction committed") or diag($r->{err});
	like($r->{out}, qr/^snap:1$/m, "$level: snapshot taken first");
	like($r->{out}, qr/^tok:at-$grant-1$/m, "$level: valid_token returned the new token");
	like($r->{out}, qr/^ver:1$/m,
		"$level: the transaction's own snapshot still shows the old row");
	like($r->{out}, qr/^tok2:at-$grant-1$/m,
		"$level: a second call returns the stored new token without refreshing");
	like($r->{out}, qr/^after:2$/m, "$level: the refresh was committed");
	is($p->stats->{by_grant}{$grant}, 1, "$level: one provider request");
	check_rotation_kept($id, $grant, $level);
}

$node->stop;
$p->stop;
done_testing();
