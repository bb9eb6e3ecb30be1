=pod

=head1 NAME

OAuthSchema - the extension's objects as comparable text, for the upgrade test

=head1 SYNOPSIS

  use OAuthSchema;
  my @a = oauth_schema_lines($node, 'upgraded');
  my @b = oauth_schema_lines($node, 'fresh');
  oauth_schema_compare(\@a, \@b, 'upgrade equals a fresh install');

=head1 DESCRIPTION

pg_dump --schema-only prints no member of an extension (only its CREATE
EXTENSION), so the comparison reads the catalogues instead: one line per
object or property of the extension oauth_tokens in a database, sorted:
every member (pg_describe_object), function definitions
(pg_get_functiondef: arguments, defaults, result, language, volatility,
SECURITY DEFINER, SET search_path, body), relation kinds and options,
columns (type, NOT NULL, default, identity, collation), constraints, indexes,
view definitions, sequences, triggers, policies, grants on the schema and on
every member, comments, and pg_extension_config_dump's markings.  Columns
are listed by name, not by position (ALTER TABLE ADD COLUMN appends; the C
code reads columns by name).

=cut

package OAuthSchema;

use strict;
use warnings;

use Exporter 'import';
use Test::More;

our @EXPORT = qw(oauth_schema_lines oauth_schema_compare);

my $CATALOGUE = <<'SQL';
WITH ext AS (
    SELECT oid, extnamespace, extversion, extconfig, extcondition
      FROM pg_catalog.pg_extension WHERE extname = 'oauth_tokens'),
member AS (
    SELECT d.classid, d.objid, d.objsubid
      FROM pg_catalog.pg_depend d, ext
     WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
       AND d.refobjid = ext.oid AND d.deptype = 'e'),
rel AS (
    SELECT c.oid, c.oid::pg_catalog.regclass::text AS name, c.relkind
      FROM pg_catalog.pg_class c JOIN member m
        ON m.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND m.objid = c.oid),
fn AS (
    SELECT p.oid, p.oid::pg_catalog.regprocedure::text AS name, p.prokind
      FROM pg_catalog.pg_proc p JOIN member m
        ON m.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND m.objid = p.oid),
line(l) AS (
    SELECT 'version ' || extversion FROM ext
    UNION ALL
    SELECT 'schema ' || n.nspname || ' acl ' || coalesce(n.nspacl::text, '-')
           || ' comment ' || coalesce(pg_catalog.obj_description(n.oid, 'pg_namespace'), '-')
      FROM pg_catalog.pg_namespace n, ext WHERE n.oid = ext.extnamespace
    UNION ALL
    SELECT 'member ' || pg_catalog.pg_describe_object(classid, objid, objsubid) FROM member
    UNION ALL
    SELECT 'config_dump ' || cfg::pg_catalog.regclass::text || ' where ' || coalesce(cond, '-')
      FROM ext, LATERAL unnest(ext.extconfig, ext.extcondition) AS u(cfg, cond)
    UNION ALL
    SELECT 'function ' || fn.name
           || CASE WHEN fn.prokind IN ('f', 'p')
                   THEN ' def ' || pg_catalog.pg_get_functiondef(fn.oid)
                   ELSE ' kind ' || fn.prokind::text END
      FROM fn
    UNION ALL
    SELECT 'function ' || fn.name || ' acl ' || coalesce(p.proacl::text, '-')
           || ' comment ' || coalesce(pg_catalog.obj_description(fn.oid, 'pg_proc'), '-')
      FROM fn JOIN pg_catalog.pg_proc p ON p.oid = fn.oid
    UNION ALL
    SELECT 'relation ' || rel.name || ' kind ' || rel.relkind::text
           || ' persistence ' || c.relpersistence::text
           || ' options ' || coalesce(c.reloptions::text, '-')
           || ' rls ' || c.relrowsecurity || '/' || c.relforcerowsecurity
           || ' acl ' || coalesce(c.relacl::text, '-')
           || ' comment ' || coalesce(pg_catalog.obj_description(c.oid, 'pg_class'), '-')
      FROM rel JOIN pg_catalog.pg_class c ON c.oid = rel.oid
    UNION ALL
    SELECT 'column ' || rel.name || '.' || a.attname
           || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod)
           || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
           || coalesce(' default ' || pg_catalog.pg_get_expr(ad.adbin, ad.adrelid), '')
           || CASE WHEN a.attidentity <> ''::"char" THEN ' identity ' || a.attidentity::text ELSE '' END
           || CASE WHEN a.attgenerated <> ''::"char" THEN ' generated ' || a.attgenerated::text ELSE '' END
           || coalesce(' collate ' || co.collname, '')
           || ' acl ' || coalesce(a.attacl::text, '-')
           || ' comment ' || coalesce(pg_catalog.col_description(rel.oid, a.attnum), '-')
      FROM rel
      JOIN pg_catalog.pg_attribute a ON a.attrelid = rel.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = rel.oid AND ad.adnum = a.attnum
      LEFT JOIN pg_catalog.pg_collation co
        ON co.oid = a.attcollation AND a.attcollation <> 'pg_catalog.default'::pg_catalog.regcollation
    UNION ALL
    SELECT 'constraint ' || rel.name || ' ' || con.conname || ' ' || pg_catalog.pg_get_constraintdef(con.oid)
      FROM rel JOIN pg_catalog.pg_constraint con ON con.conrelid = rel.oid
    UNION ALL
    SELECT 'index ' || pg_catalog.pg_get_indexdef(i.indexrelid)
           || ' comment ' || coalesce(pg_catalog.obj_description(i.indexrelid, 'pg_class'), '-')
      FROM rel JOIN pg_catalog.pg_index i ON i.indrelid = rel.oid
    UNION ALL
    SELECT 'view ' || rel.name || ' ' || pg_catalog.pg_get_viewdef(rel.oid)
      FROM rel WHERE rel.relkind IN ('v', 'm')
    UNION ALL
    SELECT 'sequence ' || rel.name || ' ' || pg_catalog.format_type(s.seqtypid, NULL)
           || ' start ' || s.seqstart || ' increment ' || s.seqincrement
           || ' min ' || s.seqmin || ' max ' || s.seqmax || ' cache ' || s.seqcache
           || ' cycle ' || s.seqcycle
      FROM rel JOIN pg_catalog.pg_sequence s ON s.seqrelid = rel.oid
    UNION ALL
    SELECT 'owned_sequence ' || d.objid::pg_catalog.regclass::text || ' by '
           || rel.name || '.' || a.attname || ' ' || d.deptype::text
      FROM rel
      JOIN pg_catalog.pg_depend d
        ON d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = rel.oid
       AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype IN ('a', 'i')
      JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
      JOIN pg_catalog.pg_attribute a ON a.attrelid = rel.oid AND a.attnum = d.refobjsubid
    UNION ALL
    SELECT 'trigger ' || pg_catalog.pg_get_triggerdef(t.oid)
      FROM rel JOIN pg_catalog.pg_trigger t ON t.tgrelid = rel.oid AND NOT t.tgisinternal
    UNION ALL
    SELECT 'policy ' || rel.name || ' ' || pol.polname || ' ' || pol.polcmd::text
           || ' roles ' || pol.polroles::text
           || ' using ' || coalesce(pg_catalog.pg_get_expr(pol.polqual, pol.polrelid), '-')
           || ' check ' || coalesce(pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid), '-')
      FROM rel JOIN pg_catalog.pg_policy pol ON pol.polrelid = rel.oid
    UNION ALL
    SELECT 'type ' || t.oid::pg_catalog.regtype::text || ' kind ' || t.typtype::text
           || ' comment ' || coalesce(pg_catalog.obj_description(t.oid, 'pg_type'), '-')
      FROM member m JOIN pg_catalog.pg_type t
        ON m.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND m.objid = t.oid
)
SELECT pg_catalog.replace(l, E'\n', E'\\n') AS l FROM line ORDER BY l COLLATE "C";
SQL

=pod

=over

=item oauth_schema_lines($node, $dbname) -> sorted list of lines

=cut

sub oauth_schema_lines
{
	my ($node, $db) = @_;
	my $out = $node->safe_psql($db, $CATALOGUE);
	return split /\n/, $out;
}

=pod

=item oauth_schema_compare(\@got, \@want, $name)

One test: passes when both lists are equal; otherwise lists the lines that
only one side has.

=back

=cut

sub oauth_schema_compare
{
	my ($got, $want, $name) = @_;
	my %g = map { $_ => 1 } @$got;
	my %w = map { $_ => 1 } @$want;
	my @only_got = grep { !$w{$_} } @$got;
	my @only_want = grep { !$g{$_} } @$want;
	my $ok = ok(!@only_got && !@only_want && @$got == @$want, $name);
	unless ($ok)
	{
		diag("only in the first: $_") for @only_got;
		diag("only in the second: $_") for @only_want;
	}
	return $ok;
}

1;
