-- Runs last in CREATE EXTENSION, once every function exists.

COMMENT ON FUNCTION webmon.validate_monitor(text, text, jsonb, interval, interval, text, boolean) IS
    'pg_webmon: refuse an invalid monitor (SQLSTATE 22023, or 2201B for the regex); used by the monitors trigger.';
COMMENT ON FUNCTION webmon.current_slot(timestamptz, interval, timestamptz) IS
    'pg_webmon: the slot a due monitor runs now: previous if not behind, else the latest whole-interval slot not after now.';
COMMENT ON FUNCTION webmon.run_maintenance() IS
    'pg_webmon: make partitions from the current one to pg_webmon.partition_premake ahead and drop those past pg_webmon.retention. Advisory-lock guarded; the scheduler runs it every pg_webmon.maintenance_interval.';
COMMENT ON FUNCTION webmon.import_monitors(jsonb) IS
    'pg_webmon: import the old app''s urls.config.<env>.json array ({url, interval seconds, regex?, timeout ms?}), all or nothing; same url and regex updates instead of duplicating. Returns the number of new monitors.';
REVOKE ALL ON FUNCTION webmon.run_maintenance() FROM PUBLIC;

-- Partitions for today and the days ahead, right away.
SELECT webmon.run_maintenance();

DO $$
BEGIN
    IF NOT 'pg_webmon' = ANY (string_to_array(replace(current_setting('shared_preload_libraries'), ' ', ''), ',')) THEN
        RAISE WARNING 'pg_webmon: no scheduler is running, so no check will be queued'
            USING HINT = 'Add pg_webmon to shared_preload_libraries, set pg_webmon.database = '''
                         || current_database() || ''' in postgresql.conf, and restart PostgreSQL.';
    ELSIF current_setting('pg_webmon.database', true) IS DISTINCT FROM current_database() THEN
        RAISE WARNING 'pg_webmon: the scheduler runs in database "%", not in this one (%)',
            current_setting('pg_webmon.database', true), current_database()
            USING HINT = 'Set pg_webmon.database = ''' || current_database() || ''' in postgresql.conf and restart PostgreSQL.';
    END IF;
END
$$;
