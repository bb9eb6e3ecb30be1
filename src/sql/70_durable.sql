-- oauth_tokens install script: answers never lost (issue 8, part 2).
-- Columns are added with ALTER TABLE so that a fresh install and
-- 1.0 + oauth_tokens--1.0--1.1.sql give the same column order.

-- How long a provider keeps accepting the previous refresh token after it
-- rotated it: a request that was sent but never answered may have spent the
-- token, and a retry with the same token recovers only inside this window.
-- NULL: unknown; '0': strict single use.  Providers that never rotate, or
-- never revoke the old token, have a window longer than any retry.
ALTER TABLE oauth.providers
    ADD COLUMN rotation_grace interval CHECK (rotation_grace >= interval '0');
ALTER TABLE oauth.provider_presets ADD COLUMN rotation_grace interval;
COMMENT ON COLUMN oauth.provider_presets.rotation_grace IS
    'How long the previous refresh token stays usable after a rotation (a lost answer '
    'is retried with it only inside this window); 0 = strict single use, NULL = unknown.';
UPDATE oauth.provider_presets p SET rotation_grace = v.g
  FROM (VALUES ('google', interval '1 day'),        -- no rotation: a retry is always safe
               ('microsoft', interval '1 day'),     -- new RT each time, old not revoked
               ('dropbox', interval '1 day'),       -- no rotation
               ('asana', interval '1 day'),         -- no rotation
               ('linkedin', interval '1 day'),      -- no rotation
               ('xero', interval '30 minutes'),
               ('atlassian', interval '10 minutes'),
               ('shopify', interval '30 days'),     -- until the new RT is first used (was 60 min before 2026-08-28)
               ('salesforce', interval '0'),        -- strict single use when rotation is on
               ('github', interval '0'),
               ('zoom', interval '0'),
               ('zendesk', interval '0'),
               ('slack', interval '0'),
               ('box', interval '0')) AS v(name, g)
 WHERE p.name = v.name;

-- Answers received from a provider but not yet applied to their connection.
-- The worker records an answer with tokens here first, in a short
-- transaction of its own that takes no lock on the connection (hence no
-- foreign key: a session holding the connection's row lock must not block
-- it), then applies it and deletes it.  What is left (a locked row, a failed
-- write, a worker exit or crash) is applied later, and at start-up.  The
-- whole answer is sealed with the connection's binding (context
-- connection/<id>/pending): it decrypts for that connection only.
CREATE TABLE oauth.pending_answers (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connection_id      uuid NOT NULL,
    generation         bigint NOT NULL,     -- the worker's request generation
    seen_version       bigint NOT NULL,     -- the row version the request was made for
    answer_ciphertext  bytea NOT NULL,
    received_at        timestamptz NOT NULL,
    attempts           int NOT NULL DEFAULT 0,
    last_error         text
);
CREATE INDEX pending_answers_connection_idx ON oauth.pending_answers (connection_id);
REVOKE ALL ON oauth.pending_answers FROM PUBLIC;
REVOKE ALL ON SEQUENCE oauth.pending_answers_id_seq FROM PUBLIC;
-- answers not yet applied are users' data: a dump keeps them (they are replayed on start)
SELECT pg_catalog.pg_extension_config_dump('oauth.pending_answers', '');
SELECT pg_catalog.pg_extension_config_dump('oauth.pending_answers_id_seq', '');

-- The sweep's list is read by the worker and by refresh_due() in the
-- caller's session: it must not resolve anything through the caller's
-- search_path (a planted public.now() would run with the caller's rights).
ALTER FUNCTION oauth._due_connections(int) SET search_path = pg_catalog, pg_temp;
