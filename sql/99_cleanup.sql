--
-- 99_cleanup: remove the key ring this suite wrote into the data directory
-- (only when 00_preflight found none there before), so that the next
-- `make installcheck` against the same server starts as this one did.
--
DO $$
DECLARE
    path text := current_setting('data_directory') || '/oauth_tokens.keys';
BEGIN
    IF (SELECT passed FROM public.preflight) THEN
        EXECUTE format('COPY (SELECT 1) TO PROGRAM %L',
                       'rm -f ''' || replace(path, '''', '''\''''') || '''');
    END IF;
END $$;
SELECT pg_stat_file(current_setting('data_directory') || '/oauth_tokens.keys', true) IS NULL
       AS key_ring_removed;
