-- Runs last in CREATE EXTENSION, once every function exists.

COMMENT ON FUNCTION webmon.validate_monitor(text, text, jsonb, interval, interval, text, boolean) IS
    'pg_webmon: refuse an invalid monitor (SQLSTATE 22023, or 2201B for the regex); used by the monitors trigger.';
COMMENT ON FUNCTION webmon.current_slot(timestamptz, interval, timestamptz) IS
    'pg_webmon: the slot a due monitor runs now: previous if not behind, else the latest whole-interval slot not after now.';
COMMENT ON FUNCTION webmon.run_maintenance() IS
    'pg_webmon: make partitions from the current one to pg_webmon.partition_premake ahead and drop those past pg_webmon.retention. Advisory-lock guarded; the scheduler runs it every pg_webmon.maintenance_interval.';
COMMENT ON FUNCTION webmon.import_monitors(jsonb) IS
    'pg_webmon: import the old app''s urls.config.<env>.json array ({url, interval seconds, regex?, timeout ms?}), all or nothing; same url and regex updates instead of duplicating. Returns the number of new monitors.';
COMMENT ON FUNCTION webmon.validate_monitor_size(text, jsonb, text) IS
    'pg_webmon: refuse a monitor whose url (2,048 bytes), headers (16 KiB as JSON) or body (64 KiB) is too large (SQLSTATE 22023); used by the monitors trigger.';
COMMENT ON FUNCTION webmon.monitor_labels_problem(text, text, text[]) IS
    'pg_webmon: why a monitor''s name (256 bytes), regex (4,096 bytes) or regions (1 to 32 names of 1 to 63 bytes, or NULL) break their limits, NULL when they do not; the monitors trigger raises it (SQLSTATE 22023).';
COMMENT ON FUNCTION webmon.monitor_problem(interval, interval) IS
    'pg_webmon: why a stored monitor cannot be scheduled (its interval or timeout breaks the rules), NULL when it can; the scheduler reports such monitors instead of queueing them.';
COMMENT ON FUNCTION webmon.next_slot(timestamptz, interval, timestamptz) IS
    'pg_webmon: the slot after the one a due monitor runs now (a day is 24 hours); an hour from now for an interval that cannot run. Never fails.';
COMMENT ON FUNCTION webmon.slot_after(timestamptz, interval, timestamptz) IS
    'pg_webmon: the first slot of the grid grid_start + k × check_interval after a time (a day is 24 hours); an hour after it for an interval that cannot run. Never fails.';
COMMENT ON FUNCTION webmon.lease_slot(timestamptz, timestamptz, interval, timestamptz) IS
    'pg_webmon: the slot a due job is leased for: its own when ahead or less than an interval behind, else the latest slot of its grid not after now (one check, never a burst).';
COMMENT ON FUNCTION webmon.slot_at(timestamptz, interval, timestamptz) IS
    'pg_webmon: the slot of the grid grid_start + k × check_interval (before its start too) that a time falls in.';
COMMENT ON FUNCTION webmon.grid_start(bigint, interval, timestamptz, timestamptz) IS
    'pg_webmon: where a monitor''s grid of slots starts: next_check_at when it lies ahead of now, else next_check_at plus a fraction of the interval that follows the monitor id (monitors added together are spread over their interval).';
COMMENT ON FUNCTION webmon.slot_before(timestamptz, interval) IS
    'pg_webmon: the slot that a next_check_at follows (next minus the interval, a day being 24 hours).';
COMMENT ON FUNCTION webmon.timeout_ms(interval) IS
    'pg_webmon: a monitor''s timeout in milliseconds for the probe; NULL (the probe''s default) when it has none or an invalid one.';
COMMENT ON FUNCTION webmon.probe_id_reuse_after() IS
    'pg_webmon: how long a probe must be unseen before a new probe takes over its id (pg_webmon.retention + pg_webmon.partition_interval + 1 day); NULL while those settings are invalid.';
COMMENT ON FUNCTION webmon.max_lease() IS
    'pg_webmon: pg_webmon.max_lease as the library holds it; webmon.claim_checks refuses longer leases.';
COMMENT ON FUNCTION webmon.error_kinds() IS
    'pg_webmon: the error kinds webmon.errors.error_kind may hold; its CHECK constraint is built from this list.';
COMMENT ON FUNCTION webmon.result_is_up(int4range, smallint, boolean, text) IS
    'pg_webmon: whether a result shows the site up (a response, status in expected_status, regex matched if any), down (any other result), or NULL (no_probe, lost: nobody checked it).';
COMMENT ON FUNCTION webmon.check_outcome(int4range, smallint, boolean, text, real, int) IS
    'pg_webmon: what a check says about the site: failed (not up, see webmon.result_is_up()), slow (up, slower than degraded_after_ms), good, or NULL (nobody checked it).';
COMMENT ON FUNCTION webmon.failure_cause(smallint, boolean, text, text) IS
    'pg_webmon: what a failed check got, in one line (at most 300 characters, no URL): its error kind and message, or its status (and a regex not matched).';
COMMENT ON FUNCTION webmon.next_run(text, text, int) IS
    'pg_webmon: a run of consecutive failed, good (slow or not) or slow checks after one more check with this outcome: one longer, 0 when broken, the same when the check says nothing.';
COMMENT ON FUNCTION webmon.next_verdict(text, text, int, int, int, int, int) IS
    'pg_webmon: a region''s verdict after a check, from its runs before it: down after down_after failed checks in a row until up_after good ones, degraded after down_after slow ones until a fast one, up after any other good check; unchanged otherwise.';
COMMENT ON FUNCTION webmon.channel_settings_problem(text, jsonb) IS
    'pg_webmon: why a channel''s kind or settings are refused, NULL when they are fine; the channels trigger raises it (SQLSTATE 22023).';
COMMENT ON FUNCTION webmon.shown_url(text) IS
    'pg_webmon: a monitor''s URL as alerts show it: without credentials, query or fragment, which can hold secrets.';
COMMENT ON FUNCTION webmon.alert_message(text, text, text, text, text, float8, text) IS
    'pg_webmon: the one-line text of an alert (event, incident kind, monitor name and URL, start time as text, duration in seconds, cause).';
COMMENT ON FUNCTION webmon.results_retention() IS
    'pg_webmon: pg_webmon.retention as an interval (raw results older than this may be dropped).';
COMMENT ON FUNCTION webmon.latency_add(internal, real) IS
    'pg_webmon: transition function of webmon.latency_histogram(real).';
COMMENT ON FUNCTION webmon.latency_merge_add(internal, bytea) IS
    'pg_webmon: transition function of webmon.latency_merge(bytea).';
COMMENT ON FUNCTION webmon.latency_combine(internal, internal) IS
    'pg_webmon: combine function of the latency histogram aggregates (parallel plans).';
COMMENT ON FUNCTION webmon.latency_final(internal) IS
    'pg_webmon: final function of the latency histogram aggregates: the stored form, NULL when empty.';
COMMENT ON FUNCTION webmon.latency_serialize(internal) IS
    'pg_webmon: serial function of the latency histogram aggregates (parallel plans).';
COMMENT ON FUNCTION webmon.latency_deserialize(bytea, internal) IS
    'pg_webmon: deserial function of the latency histogram aggregates (parallel plans).';
COMMENT ON FUNCTION webmon.latency_percentile(bytea, float8) IS
    'pg_webmon: a percentile (fraction 0 to 1, nearest rank like percentile_disc) of a latency histogram, within 4.4 % of the exact value; NULL when empty.';
COMMENT ON FUNCTION webmon.latency_buckets(bytea) IS
    'pg_webmon: the buckets of a latency histogram that counted something: [lower_ms, upper_ms) and count.';
COMMENT ON FUNCTION webmon.unmonitored_time(interval, text[], timestamptz, timestamptz, bigint) IS
    'pg_webmon: how long a monitor''s slots in a range went unchecked, given how many got a check: the slots that fit in it per region (the one in flight not yet), less those checked, times the interval, averaged over its regions.';
COMMENT ON FUNCTION webmon.latency_sum(bytea, bytea) IS
    'pg_webmon: two latency histograms added up (NULL counts as empty).';
COMMENT ON FUNCTION webmon.latency_subtract(bytea, bytea) IS
    'pg_webmon: a latency histogram less another, bucket by bucket and never below zero: what running totals held between two times.';
COMMENT ON FUNCTION webmon.timeline_add(internal, bigint, int, real) IS
    'pg_webmon: transition function of webmon.result_timeline.';
COMMENT ON FUNCTION webmon.timeline_combine(internal, internal) IS
    'pg_webmon: combine function of webmon.result_timeline (parallel plans).';
COMMENT ON FUNCTION webmon.timeline_final(internal) IS
    'pg_webmon: final function of webmon.result_timeline: the stored form, NULL when there were no results.';
COMMENT ON FUNCTION webmon.timeline_serialize(internal) IS
    'pg_webmon: serial function of webmon.result_timeline (parallel plans).';
COMMENT ON FUNCTION webmon.timeline_deserialize(bytea, internal) IS
    'pg_webmon: deserial function of webmon.result_timeline (parallel plans).';
COMMENT ON FUNCTION webmon.timeline_counts(bytea, bigint) IS
    'pg_webmon: of the results of an hour''s timeline earlier than before_us microseconds after the hour''s start, how many were {good, failed, maintenance, unmonitored}.';
COMMENT ON FUNCTION webmon.timeline_histogram(bytea, bigint, bytea) IS
    'pg_webmon: the latency histogram of the results of an hour''s timeline earlier than before_us microseconds after the hour''s start, added to a histogram (plus: the running totals before the hour).';
REVOKE ALL ON FUNCTION webmon.run_maintenance() FROM PUBLIC;

-- The scheduler's look for monitors it cannot run reads this index, empty in normal
-- operation, instead of every due monitor on every tick. Its predicate is a Rust function
-- of the library: an upgrade script whose release changes monitor_problem's rules must
-- REINDEX it.
CREATE INDEX monitors_problem_idx ON webmon.monitors (next_check_at)
    WHERE enabled AND webmon.monitor_problem(check_interval, timeout) IS NOT NULL;

-- error_kind holds one of the kinds the probe and the extension share (webmon-core); the
-- constraint's list is built from that list, not typed here a second time.
DO $$
BEGIN
    EXECUTE format('ALTER TABLE webmon.errors ADD CONSTRAINT errors_error_kind_check CHECK (error_kind = ANY (%L::text[]))',
                   webmon.error_kinds());
END
$$;

-- No partition is made here: a table made while CREATE EXTENSION runs would belong to the
-- extension (undroppable alone, its rows skipped by pg_dump). The scheduler makes them at its
-- first tick, before it queues a check; `SELECT webmon.run_maintenance()` does it at once.

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
