-- oauth_tokens upgrade from 1.0 to 1.1.  Each block names the task that
-- added it; a fresh 1.1 install and 1.0 + this script must end up the same.
\echo Use "ALTER EXTENSION oauth_tokens UPDATE TO '1.1'" to load this file. \quit

-- Issue 8 (engine): oauth.refresh_jobs(), the refresh jobs by state.
CREATE FUNCTION oauth.refresh_jobs(
    OUT connection_id uuid, OUT state text, OUT requested_by text,
    OUT forced boolean, OUT token_rejected boolean, OUT waiters int,
    OUT state_since timestamptz)
RETURNS SETOF record AS 'MODULE_PATHNAME', 'oauth_refresh_jobs' LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION oauth.refresh_jobs() FROM PUBLIC;
