-- oauth_tokens install script: tables created after 60_operations.sql that
-- hold users' data, marked for pg_dump as well (see 60_operations.sql).

-- Answers received and not yet applied (src/sql/70_durable.sql): the newest
-- refresh tokens may be only here, so a dump keeps them; a restore replays
-- them like a restart does (nothing is sent to a provider for that).
SELECT pg_catalog.pg_extension_config_dump('oauth.pending_answers', '');
SELECT pg_catalog.pg_extension_config_dump('oauth.pending_answers_id_seq', '');
