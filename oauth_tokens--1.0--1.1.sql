-- oauth_tokens upgrade script: 1.0 -> 1.1.
--
-- ALTER EXTENSION oauth_tokens UPDATE runs this file on a database that has
-- the frozen 1.0 (oauth_tokens--1.0.sql).  The result must equal a fresh
-- CREATE EXTENSION of 1.1 (the concatenation of src/sql/*.sql):
-- test/t/400_upgrade.pl compares every function, table, column, constraint,
-- index, view, sequence, trigger, grant, comment and dump marking of the two.
--
-- Rules for every block below:
--  - one block per task, headed by a comment naming it; add blocks at the
--    end, never edit another task's block;
--  - the same change as in src/sql/*.sql, written so that it applies to a
--    1.0 schema (ALTER TABLE ... ADD COLUMN appends: C code reads columns by
--    name, never by position; name constraints that you add or replace);
--  - a function created here is granted to nobody: revoke EXECUTE from PUBLIC
--    for it, as src/sql/90_grants.sql does at install time;
--  - CREATE OR REPLACE FUNCTION keeps the function's grants; a changed
--    signature needs DROP FUNCTION first (and the grants written again);
--  - a new table that holds users' data is marked for pg_dump with
--    pg_catalog.pg_extension_config_dump (and its sequences too).

\echo Use "ALTER EXTENSION oauth_tokens UPDATE TO '1.1'" to load this file. \quit

-- Issue 8 (engine): oauth.refresh_jobs(), the refresh jobs by state.
CREATE FUNCTION oauth.refresh_jobs(
    OUT connection_id uuid, OUT state text, OUT requested_by text,
    OUT forced boolean, OUT token_rejected boolean, OUT waiters int,
    OUT state_since timestamptz)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'oauth_refresh_jobs' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION oauth.refresh_jobs() FROM PUBLIC;
