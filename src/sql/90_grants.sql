-- oauth_tokens install script, last part: nothing is open to PUBLIC.
-- The README shows the grants for an application role and an admin role.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA oauth FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA oauth FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA oauth FROM PUBLIC;
-- the connection_status view calls it as the reader; it tells a session its
-- own binding only
GRANT EXECUTE ON FUNCTION oauth._bound_workspace() TO PUBLIC;
