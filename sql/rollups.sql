-- Rollups: hourly and daily counts, latencies and latency histograms per monitor and region,
-- kept for pg_webmon.rollup_retention, and the uptime functions that read them. Loaded by
-- CREATE EXTENSION after status.sql.
--
-- How a range is read in a few rows per monitor, whatever its length:
-- * Each hourly row carries running totals (cum_*): what every earlier hour of its monitor and
--   region added up to, and its results in time order (timeline), so that a time inside the
--   hour is cut exactly. webmon.rollup_totals holds the totals of everything rolled up: the
--   closed hours and the five-minute steps of the hour in progress.
-- * What the rollups hold before a time is then one row: the running totals of its hour plus
--   the part of its timeline before it (webmon.rollups_before). A range is the difference of
--   its two ends; only results after rolled_up_to (a few minutes) are read raw.
--
-- How they stay right without rescanning history:
-- * webmon.rollup_state holds two times. rolled_up_to: every result before it is in the
--   rollups. flagged_before: a result that arrives for a time before it is late, and its
--   (monitor, hour) is noted in webmon.rollup_pending by a statement trigger on webmon.metrics
--   and webmon.errors.
-- * webmon.run_rollups(), called every second by the maintenance worker, each time in a
--   transaction of its own: recomputes the hours with late results from their raw rows (and the
--   running totals after them), adds the five-minute steps between rolled_up_to and
--   flagged_before to the totals and writes an hour's rows once it has closed, and moves
--   flagged_before to the step that closed two minutes ago (webmon.rollups_closed_before).
-- * No result slips between the two: the trigger holds a lock on webmon.rollup_gate (ROW
--   EXCLUSIVE: writers never wait for each other) while it reads flagged_before, and
--   run_rollups takes it in SHARE mode to move it, in a run that took no pending hour. A
--   writer that read the old time commits before the move does, so the next run_rollups (a new
--   transaction) sees its rows; a writer after the move sees the new time. Only the extension's
--   owner may lock that table (an advisory lock anyone could hold).
-- * A writer notes its hour with a row lock (ON CONFLICT … DO UPDATE) that it holds until it
--   commits, and run_rollups takes pending hours with SKIP LOCKED: an hour is never taken while
--   a writer that noted it may still add a result.

-- ---------------------------------------------------------------------------------------------
-- Tables. Partitioned by their time like the results, with a (monitor_id, time) index on each
-- partition made with it (see schema.sql for why the parents have none).
-- ---------------------------------------------------------------------------------------------
CREATE TABLE webmon.rollups_hourly (
    monitor_id         bigint      NOT NULL,
    region             text        NOT NULL,
    hour               timestamptz NOT NULL,
    checks             int         NOT NULL,
    good               int         NOT NULL,
    failed             int         NOT NULL,
    maintenance        int         NOT NULL,
    unmonitored        int         NOT NULL,
    error_kinds        jsonb,
    responses          int         NOT NULL,
    latency_min_ms     real,
    latency_max_ms     real,
    latency_sum_ms     float8,
    latency_histogram  bytea,
    timeline           bytea,
    cum_good           bigint,
    cum_failed         bigint,
    cum_maintenance    bigint,
    cum_histogram      bytea
) PARTITION BY RANGE (hour);
COMMENT ON TABLE webmon.rollups_hourly IS
    'pg_webmon: per monitor, region and hour (UTC), what its results add up to. Written by webmon.run_rollups() in five-minute steps as the hour goes (and again when a late result arrives), kept for pg_webmon.rollup_retention.';
COMMENT ON COLUMN webmon.rollups_hourly.region IS 'The region the checks ran from; '''' for none.';
COMMENT ON COLUMN webmon.rollups_hourly.hour IS 'Start of the hour (whole UTC hours).';
COMMENT ON COLUMN webmon.rollups_hourly.checks IS 'Every result stored for the hour: good + failed + maintenance + unmonitored.';
COMMENT ON COLUMN webmon.rollups_hourly.good IS 'Checks that found the site up (outside maintenance windows).';
COMMENT ON COLUMN webmon.rollups_hourly.failed IS 'Checks that found it down: no response, a status outside expected_status, or the regex not matched (outside maintenance windows).';
COMMENT ON COLUMN webmon.rollups_hourly.maintenance IS 'Checks during a maintenance window of the monitor: counted neither up nor down.';
COMMENT ON COLUMN webmon.rollups_hourly.unmonitored IS 'Slots nobody checked (error kinds lost and no_probe): counted neither up nor down.';
COMMENT ON COLUMN webmon.rollups_hourly.error_kinds IS 'Results without a response by error kind, e.g. {"timeout": 2, "lost": 1}; NULL when none.';
COMMENT ON COLUMN webmon.rollups_hourly.responses IS 'Checks that got a response (any status): the count behind the latency columns.';
COMMENT ON COLUMN webmon.rollups_hourly.latency_histogram IS 'Response times in log-spaced buckets: add them up with webmon.latency_merge(), read them with webmon.latency_percentile() (within 4.4 %) or webmon.latency_buckets().';
COMMENT ON COLUMN webmon.rollups_hourly.timeline IS 'The hour''s results in a compact form (time, how each counts, its latency bucket), read with webmon.timeline_counts() and webmon.timeline_histogram() where a range starts or ends inside the hour. NULL in rows written before 0.9.0.';
COMMENT ON COLUMN webmon.rollups_hourly.cum_good IS 'Running total: good checks of the monitor and region in every earlier hour rolled up (also those dropped since).';
COMMENT ON COLUMN webmon.rollups_hourly.cum_failed IS 'Running total of failed, as cum_good.';
COMMENT ON COLUMN webmon.rollups_hourly.cum_maintenance IS 'Running total of maintenance, as cum_good.';
COMMENT ON COLUMN webmon.rollups_hourly.cum_histogram IS 'Running total of latency_histogram, as cum_good.';

CREATE TABLE webmon.rollups_daily (
    monitor_id         bigint      NOT NULL,
    region             text        NOT NULL,
    day                timestamptz NOT NULL,
    checks             int         NOT NULL,
    good               int         NOT NULL,
    failed             int         NOT NULL,
    maintenance        int         NOT NULL,
    unmonitored        int         NOT NULL,
    error_kinds        jsonb,
    responses          int         NOT NULL,
    latency_min_ms     real,
    latency_max_ms     real,
    latency_sum_ms     float8,
    latency_histogram  bytea
) PARTITION BY RANGE (day);
COMMENT ON TABLE webmon.rollups_daily IS
    'pg_webmon: per monitor, region and UTC day, its hourly rollups added up (same columns as webmon.rollups_hourly). Written once the day has closed, kept for pg_webmon.rollup_retention.';
COMMENT ON COLUMN webmon.rollups_daily.day IS 'Start of the day (UTC midnight).';

CREATE TABLE webmon.rollup_totals (
    monitor_id         bigint      NOT NULL REFERENCES webmon.monitors (id) ON DELETE CASCADE,
    region             text        NOT NULL,
    good               bigint      NOT NULL,
    failed             bigint      NOT NULL,
    maintenance        bigint      NOT NULL,
    latency_histogram  bytea,
    hour               timestamptz,
    before_good        bigint      NOT NULL DEFAULT 0,
    before_failed      bigint      NOT NULL DEFAULT 0,
    before_maintenance bigint      NOT NULL DEFAULT 0,
    before_histogram   bytea,
    PRIMARY KEY (monitor_id, region)
) WITH (fillfactor = 50);
COMMENT ON TABLE webmon.rollup_totals IS
    'pg_webmon: per monitor and region, what every result rolled up so far (before rollup_state.rolled_up_to) adds up to: the closed hours and the five-minute steps of the hour in progress. Updated in place (fillfactor 50).';
COMMENT ON COLUMN webmon.rollup_totals.hour IS 'The last hour with rows or steps of the monitor and region; the before_* columns are the totals before it (for the hour in progress: what its hourly rows will start from).';
COMMENT ON COLUMN webmon.rollup_totals.before_good IS 'good before the start of `hour` (and likewise before_failed, before_maintenance, before_histogram).';

CREATE TABLE webmon.rollup_state (
    only_row       boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    rolled_up_to   timestamptz NOT NULL,
    flagged_before timestamptz NOT NULL
);
COMMENT ON TABLE webmon.rollup_state IS
    'pg_webmon: how far rollups go. Results before rolled_up_to are in webmon.rollups_hourly; results that arrive for a time before flagged_before are late and their hours are rolled up again. Made by the first webmon.run_rollups().';

CREATE TABLE webmon.rollup_pending (
    monitor_id bigint      NOT NULL,
    hour       timestamptz NOT NULL,
    PRIMARY KEY (monitor_id, hour)
);
COMMENT ON TABLE webmon.rollup_pending IS
    'pg_webmon: hours of monitors that got a result (or a maintenance window) after they were rolled up; webmon.run_rollups() rolls them up again from their results.';

CREATE TABLE webmon.rollup_gate ();
COMMENT ON TABLE webmon.rollup_gate IS
    'pg_webmon: never holds rows; writers of results lock it (ROW EXCLUSIVE) while they note late results, webmon.run_rollups() (SHARE) while it moves rollup_state.flagged_before.';

-- ---------------------------------------------------------------------------------------------
-- Latency histograms (latency.rs; buckets in webmon-core): response times into a histogram,
-- histograms added up. Both run in parallel plans.
-- ---------------------------------------------------------------------------------------------
CREATE AGGREGATE webmon.latency_histogram(real) (
    SFUNC = webmon.latency_add,
    STYPE = internal,
    FINALFUNC = webmon.latency_final,
    COMBINEFUNC = webmon.latency_combine,
    SERIALFUNC = webmon.latency_serialize,
    DESERIALFUNC = webmon.latency_deserialize,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE webmon.latency_histogram(real) IS
    'pg_webmon: response times (ms) counted in log-spaced buckets, in the form of webmon.rollups_hourly.latency_histogram; NULL when there are none.';

CREATE AGGREGATE webmon.latency_merge(bytea) (
    SFUNC = webmon.latency_merge_add,
    STYPE = internal,
    FINALFUNC = webmon.latency_final,
    COMBINEFUNC = webmon.latency_combine,
    SERIALFUNC = webmon.latency_serialize,
    DESERIALFUNC = webmon.latency_deserialize,
    PARALLEL = SAFE
);
CREATE AGGREGATE webmon.result_timeline(bigint, int, real) (
    SFUNC = webmon.timeline_add,
    STYPE = internal,
    FINALFUNC = webmon.timeline_final,
    COMBINEFUNC = webmon.timeline_combine,
    SERIALFUNC = webmon.timeline_serialize,
    DESERIALFUNC = webmon.timeline_deserialize,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE webmon.result_timeline(bigint, int, real) IS
    'pg_webmon: results (microseconds after the start of their hour, how each counts: 0 good, 1 failed, 2 maintenance, 3 unmonitored, response time in ms) in the form of webmon.rollups_hourly.timeline.';

COMMENT ON AGGREGATE webmon.latency_merge(bytea) IS
    'pg_webmon: latency histograms added up, e.g. webmon.latency_percentile(webmon.latency_merge(latency_histogram), 0.99) over a month of webmon.rollups_daily.';

-- ---------------------------------------------------------------------------------------------
-- Late results
-- ---------------------------------------------------------------------------------------------
-- SECURITY DEFINER: whoever may write results may note them (and lock the gate). Its own
-- planner settings: it runs inside complete_checks, whose `enable_seqscan = off` would price
-- the read of rollup_state (a one-row table) so high that each call was JIT-compiled (3 ms).
CREATE FUNCTION webmon.note_late_results() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET enable_seqscan = on SET jit = off AS $$
BEGIN
    -- A statement that wrote nothing holds nothing.
    IF NOT EXISTS (SELECT 1 FROM new_rows) THEN
        RETURN NULL;
    END IF;
    -- Writers never wait for each other; only for run_rollups moving the time.
    LOCK TABLE webmon.rollup_gate IN ROW EXCLUSIVE MODE;
    -- DO UPDATE, not DO NOTHING: the row stays locked until this transaction ends, so
    -- run_rollups (SKIP LOCKED) leaves the hour until these results can be seen.
    INSERT INTO webmon.rollup_pending AS p (monitor_id, hour)
    SELECT DISTINCT n.monitor_id, date_trunc('hour', n.request_timestamp, 'UTC')
    FROM new_rows n
    WHERE n.request_timestamp < (SELECT s.flagged_before FROM webmon.rollup_state s)
    ON CONFLICT ON CONSTRAINT rollup_pending_pkey DO UPDATE SET hour = EXCLUDED.hour;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION webmon.note_late_results() IS
    'pg_webmon: statement trigger of webmon.metrics and webmon.errors: notes the hours of results that arrive after their hour was rolled up, for webmon.run_rollups() to roll up again.';

CREATE TRIGGER metrics_note_late AFTER INSERT ON webmon.metrics
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION webmon.note_late_results();
CREATE TRIGGER errors_note_late AFTER INSERT ON webmon.errors
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION webmon.note_late_results();

-- ---------------------------------------------------------------------------------------------
-- What raw results add up to: the one rule (webmon.result_status) that rollups, their
-- timelines and the raw ends of the uptime functions share.
-- ---------------------------------------------------------------------------------------------
-- How a result counts: 0 good and 1 failed (outside maintenance windows), 2 in a maintenance
-- window (neither), 3 unmonitored (nobody checked the slot: lost, no_probe; neither).
CREATE FUNCTION webmon.result_status(up boolean, in_window boolean) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN up IS NULL THEN 3 WHEN in_window THEN 2 WHEN up THEN 0 ELSE 1 END;
COMMENT ON FUNCTION webmon.result_status(boolean, boolean) IS
    'pg_webmon: how a result counts in rollups, from webmon.result_is_up() and whether it fell in a maintenance window: 0 good, 1 failed, 2 maintenance, 3 unmonitored.';

-- Microseconds from the start of a time's UTC hour: where a result lies in its hour's timeline.
CREATE FUNCTION webmon.microseconds_into_hour(at_ts timestamptz) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE
RETURN round(date_part('epoch', at_ts - date_trunc('hour', at_ts, 'UTC')) * 1000000)::bigint;
COMMENT ON FUNCTION webmon.microseconds_into_hour(timestamptz) IS
    'pg_webmon: microseconds from the start of the UTC hour of a time (its place in a webmon.rollups_hourly.timeline).';

-- Error kinds counted: {timeout, dns, timeout} is {"timeout": 2, "dns": 1}; NULL for none.
CREATE FUNCTION webmon.count_error_kinds(kinds text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN (SELECT jsonb_object_agg(k.kind, k.n)
        FROM (SELECT u.kind, count(*) AS n FROM unnest(kinds) AS u(kind) GROUP BY u.kind) k);
COMMENT ON FUNCTION webmon.count_error_kinds(text[]) IS
    'pg_webmon: error kinds counted, e.g. {"timeout": 2, "dns": 1}; NULL for none.';

-- The results of monitors (NULL: every monitor) in [from_ts, to_ts), each with how it counts
-- (webmon.result_status): read by time for every monitor, through each monitor's
-- (monitor_id, request_timestamp) index for a few. Inlined into the queries that use it.
CREATE FUNCTION webmon.classified_results(from_ts timestamptz, to_ts timestamptz, monitor_ids bigint[] DEFAULT NULL)
RETURNS TABLE (monitor_id bigint, region text, error_kind text, response_time_ms real,
               request_timestamp timestamptz, status int)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT x.monitor_id, coalesce(x.region, ''), x.error_kind, x.response_time_ms, x.request_timestamp,
           webmon.result_status(
               webmon.result_is_up(m.expected_status, x.http_status_code, x.regex_matched, x.error_kind),
               -- Only monitors with a maintenance window (or any window for every monitor)
               -- look each result up in their windows.
               CASE WHEN m.id IN (SELECT mw.monitor_id FROM webmon.maintenance mw WHERE mw.monitor_id IS NOT NULL)
                         OR (SELECT EXISTS (SELECT 1 FROM webmon.maintenance mw WHERE mw.monitor_id IS NULL))
                    THEN webmon.maintenance_window(m.id, x.request_timestamp) IS NOT NULL
                    ELSE false END)
    FROM (
        -- Every monitor by time, or those in monitor_ids through their index: separate branches
        -- (one runs), so that each is planned for its own index even when monitor_ids comes
        -- from another row.
        SELECT mt.monitor_id, mt.region, NULL::text AS error_kind, mt.response_time_ms, mt.http_status_code,
               mt.regex_matched, mt.request_timestamp
        FROM webmon.metrics mt
        WHERE monitor_ids IS NULL AND mt.request_timestamp >= from_ts AND mt.request_timestamp < to_ts
        UNION ALL
        SELECT mt.monitor_id, mt.region, NULL::text, mt.response_time_ms, mt.http_status_code,
               mt.regex_matched, mt.request_timestamp
        FROM webmon.metrics mt
        WHERE mt.monitor_id = ANY (monitor_ids) AND mt.request_timestamp >= from_ts AND mt.request_timestamp < to_ts
        UNION ALL
        SELECT e.monitor_id, e.region, e.error_kind, NULL::real, NULL::smallint, NULL::boolean, e.request_timestamp
        FROM webmon.errors e
        WHERE monitor_ids IS NULL AND e.request_timestamp >= from_ts AND e.request_timestamp < to_ts
        UNION ALL
        SELECT e.monitor_id, e.region, e.error_kind, NULL::real, NULL::smallint, NULL::boolean, e.request_timestamp
        FROM webmon.errors e
        WHERE e.monitor_id = ANY (monitor_ids) AND e.request_timestamp >= from_ts AND e.request_timestamp < to_ts
    ) x
    JOIN webmon.monitors m ON m.id = x.monitor_id
    -- Each result's status computed once, however many aggregates read it.
    OFFSET 0;
END;
COMMENT ON FUNCTION webmon.classified_results(timestamptz, timestamptz, bigint[]) IS
    'pg_webmon: the results of monitors (all when monitor_ids is NULL) in [from_ts, to_ts), each with how it counts in rollups (webmon.result_status).';

-- Per monitor and region, what its results in [from_ts, to_ts) add up to: what rollups are
-- written from.
CREATE FUNCTION webmon.results_summary(from_ts timestamptz, to_ts timestamptz, monitor_ids bigint[] DEFAULT NULL)
RETURNS TABLE (monitor_id bigint, region text, checks int, good int, failed int, maintenance int,
               unmonitored int, error_kinds jsonb, responses int, latency_min_ms real,
               latency_max_ms real, latency_sum_ms float8, latency_histogram bytea, timeline bytea)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT r.monitor_id, r.region, count(*)::int,
           count(*) FILTER (WHERE r.status = 0)::int, count(*) FILTER (WHERE r.status = 1)::int,
           count(*) FILTER (WHERE r.status = 2)::int, count(*) FILTER (WHERE r.status = 3)::int,
           webmon.count_error_kinds(array_agg(r.error_kind) FILTER (WHERE r.error_kind IS NOT NULL)),
           count(r.response_time_ms)::int, min(r.response_time_ms), max(r.response_time_ms),
           sum(r.response_time_ms::float8), webmon.latency_histogram(r.response_time_ms),
           webmon.result_timeline(webmon.microseconds_into_hour(r.request_timestamp), r.status, r.response_time_ms)
    FROM webmon.classified_results(from_ts, to_ts, monitor_ids) r
    GROUP BY r.monitor_id, r.region;
END;
COMMENT ON FUNCTION webmon.results_summary(timestamptz, timestamptz, bigint[]) IS
    'pg_webmon: per monitor (all when monitor_ids is NULL) and region, what its stored results in [from_ts, to_ts) add up to, in the columns of webmon.rollups_hourly.';

-- ---------------------------------------------------------------------------------------------
-- Maintaining them
-- ---------------------------------------------------------------------------------------------
-- Error kind counts added up: {"timeout": 2} and {"timeout": 1, "dns": 1} are {"timeout": 3, "dns": 1}.
CREATE FUNCTION webmon.sum_error_kinds(kinds jsonb[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN (SELECT jsonb_object_agg(e.kind, e.n)
        FROM (SELECT j.key AS kind, sum(j.value::bigint) AS n
              FROM unnest(kinds) AS u(counts), jsonb_each_text(u.counts) AS j
              GROUP BY j.key) e);
COMMENT ON FUNCTION webmon.sum_error_kinds(jsonb[]) IS
    'pg_webmon: error kind counts added up, key by key.';

CREATE FUNCTION webmon.rollup_day(day timestamptz, monitor_ids bigint[] DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    written int;
BEGIN
    DELETE FROM webmon.rollups_daily d
    WHERE d.day = rollup_day.day AND (monitor_ids IS NULL OR d.monitor_id = ANY (monitor_ids));
    INSERT INTO webmon.rollups_daily
    SELECT h.monitor_id, h.region, rollup_day.day,
           sum(h.checks), sum(h.good), sum(h.failed), sum(h.maintenance), sum(h.unmonitored),
           webmon.sum_error_kinds(array_agg(h.error_kinds) FILTER (WHERE h.error_kinds IS NOT NULL)),
           sum(h.responses), min(h.latency_min_ms), max(h.latency_max_ms), sum(h.latency_sum_ms),
           webmon.latency_merge(h.latency_histogram)
    FROM webmon.rollups_hourly h
    WHERE h.hour >= rollup_day.day AND h.hour < rollup_day.day + interval '24 hours'
      AND (monitor_ids IS NULL OR h.monitor_id = ANY (monitor_ids))
    GROUP BY h.monitor_id, h.region;
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END
$$;
COMMENT ON FUNCTION webmon.rollup_day(timestamptz, bigint[]) IS
    'pg_webmon: (re)write the daily rollups of a UTC day from its hourly ones, for every monitor or those in monitor_ids. Called by webmon.run_rollups().';

-- Whether an error is the moment's, not the data's (a lock, a deadlock, resources, a
-- shutdown): a rollup that hits one fails and the next run tries again; only other errors
-- (a row no rule foresaw) are worked around.
CREATE FUNCTION webmon.transient_error(sqlstate text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN sqlstate ~ '^(40|53|57|58)' OR sqlstate = '55P03';
COMMENT ON FUNCTION webmon.transient_error(text) IS
    'pg_webmon: whether an SQLSTATE is the moment''s (transaction rollback, resources, lock not available, operator intervention, system error): rollups retry those instead of leaving a row out.';

-- Adds the results in [from_ts, to_ts), a step of the hour in progress, to the totals of their
-- monitors and regions (those in monitor_ids, or all); the first time in an hour, what the
-- totals were before it is kept (before_*), for the hour's rows when it closes.
-- PL/pgSQL (as write_hourly_rollups): planned for its own times, partitions pruned.
CREATE FUNCTION webmon.add_to_totals(from_ts timestamptz, to_ts timestamptz, monitor_ids bigint[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_custom_plan AS $$
BEGIN
    WITH fresh AS (
        SELECT r.monitor_id, r.region, count(*) FILTER (WHERE r.status = 0) AS good,
               count(*) FILTER (WHERE r.status = 1) AS failed, count(*) FILTER (WHERE r.status = 2) AS maintenance,
               webmon.latency_histogram(r.response_time_ms) AS latency_histogram
        FROM webmon.classified_results(add_to_totals.from_ts, add_to_totals.to_ts, monitor_ids) r
        GROUP BY r.monitor_id, r.region
    ), updated AS (
        UPDATE webmon.rollup_totals t
        SET before_good = CASE WHEN t.hour IS DISTINCT FROM date_trunc('hour', add_to_totals.from_ts, 'UTC') THEN t.good ELSE t.before_good END,
            before_failed = CASE WHEN t.hour IS DISTINCT FROM date_trunc('hour', add_to_totals.from_ts, 'UTC') THEN t.failed ELSE t.before_failed END,
            before_maintenance = CASE WHEN t.hour IS DISTINCT FROM date_trunc('hour', add_to_totals.from_ts, 'UTC') THEN t.maintenance ELSE t.before_maintenance END,
            before_histogram = CASE WHEN t.hour IS DISTINCT FROM date_trunc('hour', add_to_totals.from_ts, 'UTC') THEN t.latency_histogram ELSE t.before_histogram END,
            hour = date_trunc('hour', add_to_totals.from_ts, 'UTC'),
            good = t.good + f.good, failed = t.failed + f.failed, maintenance = t.maintenance + f.maintenance,
            latency_histogram = webmon.latency_sum(t.latency_histogram, f.latency_histogram)
        FROM fresh f
        WHERE (t.monitor_id, t.region) = (f.monitor_id, f.region)
        RETURNING 1
    )
    INSERT INTO webmon.rollup_totals (monitor_id, region, good, failed, maintenance, latency_histogram, hour)
    SELECT f.monitor_id, f.region, f.good, f.failed, f.maintenance, f.latency_histogram,
           date_trunc('hour', add_to_totals.from_ts, 'UTC')
    FROM fresh f
    WHERE NOT EXISTS (SELECT 1 FROM webmon.rollup_totals t WHERE (t.monitor_id, t.region) = (f.monitor_id, f.region));
END
$$;
COMMENT ON FUNCTION webmon.add_to_totals(timestamptz, timestamptz, bigint[]) IS
    'pg_webmon: add the results in [from_ts, to_ts), a step of the hour in progress, to webmon.rollup_totals, for every monitor or those in monitor_ids. Called by webmon.run_rollups().';

-- Writes the hourly rollups of one hour from its results, for every monitor or those in
-- monitor_ids. An hour that has just closed: its rows start from the totals before it, and the
-- totals become those plus the hour (late results of the hour included). With `again`, an hour
-- rolled up before: its rows are replaced, and the running totals of the later hours and the
-- totals change by as much as the rows did.
-- PL/pgSQL: planned for its own hour and monitors (partitions pruned, the right index).
-- The totals of monitors that got a late result in the hour in progress: the totals before
-- the hour plus what its results up to rolled_up_to add up to, read again.
CREATE FUNCTION webmon.recount_hour_in_progress(hour timestamptz, rolled_up_to timestamptz, monitor_ids bigint[])
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Back to the totals before the hour (those of a monitor without steps in it yet are its
    -- totals), then the hour so far added again.
    UPDATE webmon.rollup_totals t
    SET good = CASE WHEN t.hour = recount_hour_in_progress.hour THEN t.before_good ELSE t.good END,
        failed = CASE WHEN t.hour = recount_hour_in_progress.hour THEN t.before_failed ELSE t.failed END,
        maintenance = CASE WHEN t.hour = recount_hour_in_progress.hour THEN t.before_maintenance ELSE t.maintenance END,
        latency_histogram = CASE WHEN t.hour = recount_hour_in_progress.hour THEN t.before_histogram ELSE t.latency_histogram END,
        before_good = CASE WHEN t.hour = recount_hour_in_progress.hour THEN t.before_good ELSE t.good END,
        before_failed = CASE WHEN t.hour = recount_hour_in_progress.hour THEN t.before_failed ELSE t.failed END,
        before_maintenance = CASE WHEN t.hour = recount_hour_in_progress.hour THEN t.before_maintenance ELSE t.maintenance END,
        before_histogram = CASE WHEN t.hour = recount_hour_in_progress.hour THEN t.before_histogram ELSE t.latency_histogram END,
        hour = recount_hour_in_progress.hour
    WHERE t.monitor_id = ANY (monitor_ids);
    PERFORM webmon.add_to_totals(recount_hour_in_progress.hour, recount_hour_in_progress.rolled_up_to, monitor_ids);
END
$$;
COMMENT ON FUNCTION webmon.recount_hour_in_progress(timestamptz, timestamptz, bigint[]) IS
    'pg_webmon: count again the hour in progress up to rolled_up_to in the totals of monitors in monitor_ids (after late results). Called by webmon.run_rollups().';

CREATE FUNCTION webmon.write_hourly_rollups(hour timestamptz, monitor_ids bigint[], again boolean)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
BEGIN
    WITH fresh AS (
        SELECT * FROM webmon.results_summary(write_hourly_rollups.hour, write_hourly_rollups.hour + interval '1 hour', monitor_ids)
    ), old AS (
        DELETE FROM webmon.rollups_hourly h
        WHERE again AND h.hour = write_hourly_rollups.hour
          AND (monitor_ids IS NULL OR h.monitor_id = ANY (monitor_ids))
        RETURNING h.*
    ), start AS (
        -- What each monitor and region held before the hour: its rows' running totals when the
        -- hour is written again; the totals before it when it has just closed.
        SELECT coalesce(f.monitor_id, o.monitor_id, t.monitor_id) AS monitor_id,
               coalesce(f.region, o.region, t.region) AS region,
               o.monitor_id IS NOT NULL AS had_row,
               o.good AS old_good, o.failed AS old_failed, o.maintenance AS old_maintenance,
               o.latency_histogram AS old_histogram,
               CASE WHEN again THEN o.cum_good WHEN t.hour = write_hourly_rollups.hour THEN t.before_good ELSE t.good END AS cum_good,
               CASE WHEN again THEN o.cum_failed WHEN t.hour = write_hourly_rollups.hour THEN t.before_failed ELSE t.failed END AS cum_failed,
               CASE WHEN again THEN o.cum_maintenance WHEN t.hour = write_hourly_rollups.hour THEN t.before_maintenance ELSE t.maintenance END AS cum_maintenance,
               CASE WHEN again THEN o.cum_histogram WHEN t.hour = write_hourly_rollups.hour THEN t.before_histogram ELSE t.latency_histogram END AS cum_histogram,
               t.monitor_id IS NOT NULL AS has_totals
        FROM fresh f
        FULL JOIN old o ON (o.monitor_id, o.region) = (f.monitor_id, f.region)
        -- Monitors whose steps in the hour added to the totals: they get its rows (or their
        -- totals back, when the hour has none).
        FULL JOIN (SELECT * FROM webmon.rollup_totals t
                   WHERE NOT again AND t.hour = write_hourly_rollups.hour
                     AND (monitor_ids IS NULL OR t.monitor_id = ANY (monitor_ids))) tt
               ON (tt.monitor_id, tt.region) = (coalesce(f.monitor_id, o.monitor_id), coalesce(f.region, o.region))
        LEFT JOIN webmon.rollup_totals t
               ON (t.monitor_id, t.region) = (coalesce(f.monitor_id, o.monitor_id, tt.monitor_id), coalesce(f.region, o.region, tt.region))
    ), written AS (
        INSERT INTO webmon.rollups_hourly (monitor_id, region, hour, checks, good, failed, maintenance, unmonitored,
                                           error_kinds, responses, latency_min_ms, latency_max_ms, latency_sum_ms,
                                           latency_histogram, timeline, cum_good, cum_failed, cum_maintenance,
                                           cum_histogram)
        -- A monitor and region new in an hour written again start from the running totals of
        -- their next hour, or else from their totals (before the steps of a later hour).
        SELECT f.monitor_id, f.region, write_hourly_rollups.hour, f.checks, f.good, f.failed, f.maintenance,
               f.unmonitored, f.error_kinds, f.responses, f.latency_min_ms, f.latency_max_ms, f.latency_sum_ms,
               f.latency_histogram, f.timeline,
               CASE WHEN NOT again OR c.had_row THEN coalesce(c.cum_good, 0)
                    ELSE coalesce(x.cum_good, CASE WHEN t.hour > write_hourly_rollups.hour THEN t.before_good ELSE t.good END, 0) END,
               CASE WHEN NOT again OR c.had_row THEN coalesce(c.cum_failed, 0)
                    ELSE coalesce(x.cum_failed, CASE WHEN t.hour > write_hourly_rollups.hour THEN t.before_failed ELSE t.failed END, 0) END,
               CASE WHEN NOT again OR c.had_row THEN coalesce(c.cum_maintenance, 0)
                    ELSE coalesce(x.cum_maintenance, CASE WHEN t.hour > write_hourly_rollups.hour THEN t.before_maintenance
                                                          ELSE t.maintenance END, 0) END,
               CASE WHEN NOT again OR c.had_row THEN c.cum_histogram WHEN x.found THEN x.cum_histogram
                    WHEN t.hour > write_hourly_rollups.hour THEN t.before_histogram ELSE t.latency_histogram END
        FROM fresh f
        JOIN start c ON (c.monitor_id, c.region) = (f.monitor_id, f.region)
        LEFT JOIN webmon.rollup_totals t ON again AND NOT c.had_row AND (t.monitor_id, t.region) = (f.monitor_id, f.region)
        LEFT JOIN LATERAL (
            SELECT true AS found, l.cum_good, l.cum_failed, l.cum_maintenance, l.cum_histogram
            FROM webmon.rollups_hourly l
            WHERE again AND NOT c.had_row AND l.monitor_id = f.monitor_id AND l.region = f.region
              AND l.hour > write_hourly_rollups.hour
            ORDER BY l.hour LIMIT 1
        ) x ON true
        RETURNING 1
    ), later AS (
        UPDATE webmon.rollups_hourly l
        SET cum_good = l.cum_good - coalesce(c.old_good, 0) + coalesce(f.good, 0),
            cum_failed = l.cum_failed - coalesce(c.old_failed, 0) + coalesce(f.failed, 0),
            cum_maintenance = l.cum_maintenance - coalesce(c.old_maintenance, 0) + coalesce(f.maintenance, 0),
            cum_histogram = webmon.latency_sum(webmon.latency_subtract(l.cum_histogram, c.old_histogram),
                                               f.latency_histogram)
        FROM start c
        LEFT JOIN fresh f ON (f.monitor_id, f.region) = (c.monitor_id, c.region)
        WHERE again AND l.monitor_id = c.monitor_id AND l.region = c.region AND l.hour > write_hourly_rollups.hour
          -- Only rows that changed move the running totals after them.
          AND (c.old_good, c.old_failed, c.old_maintenance, c.old_histogram)
              IS DISTINCT FROM (f.good, f.failed, f.maintenance, f.latency_histogram)
        RETURNING 1
    ), totals AS (
        UPDATE webmon.rollup_totals t
        -- Written again: the totals (and those before the hour in progress) change by as much
        -- as the rows did. Just closed: the totals before the hour plus the hour.
        SET good = CASE WHEN again THEN t.good - coalesce(c.old_good, 0) ELSE coalesce(c.cum_good, 0) END + coalesce(f.good, 0),
            failed = CASE WHEN again THEN t.failed - coalesce(c.old_failed, 0) ELSE coalesce(c.cum_failed, 0) END + coalesce(f.failed, 0),
            maintenance = CASE WHEN again THEN t.maintenance - coalesce(c.old_maintenance, 0) ELSE coalesce(c.cum_maintenance, 0) END
                          + coalesce(f.maintenance, 0),
            latency_histogram = webmon.latency_sum(CASE WHEN again THEN webmon.latency_subtract(t.latency_histogram, c.old_histogram)
                                                        ELSE c.cum_histogram END, f.latency_histogram),
            -- `hour` is the last hour with rows or steps, and before_* the totals before it:
            -- closed, this hour and the totals before it; written again, a later hour's change
            -- by as much, or this hour if it is the last one now.
            hour = CASE WHEN NOT again OR t.hour IS NULL OR t.hour < write_hourly_rollups.hour
                        THEN write_hourly_rollups.hour ELSE t.hour END,
            before_good = CASE WHEN NOT again THEN coalesce(c.cum_good, 0)
                               WHEN t.hour IS NULL OR t.hour < write_hourly_rollups.hour THEN t.good
                               WHEN t.hour > write_hourly_rollups.hour THEN t.before_good - coalesce(c.old_good, 0) + coalesce(f.good, 0)
                               ELSE t.before_good END,
            before_failed = CASE WHEN NOT again THEN coalesce(c.cum_failed, 0)
                                 WHEN t.hour IS NULL OR t.hour < write_hourly_rollups.hour THEN t.failed
                                 WHEN t.hour > write_hourly_rollups.hour THEN t.before_failed - coalesce(c.old_failed, 0) + coalesce(f.failed, 0)
                                 ELSE t.before_failed END,
            before_maintenance = CASE WHEN NOT again THEN coalesce(c.cum_maintenance, 0)
                                      WHEN t.hour IS NULL OR t.hour < write_hourly_rollups.hour THEN t.maintenance
                                      WHEN t.hour > write_hourly_rollups.hour
                                          THEN t.before_maintenance - coalesce(c.old_maintenance, 0) + coalesce(f.maintenance, 0)
                                      ELSE t.before_maintenance END,
            before_histogram = CASE WHEN NOT again THEN c.cum_histogram
                                    WHEN t.hour IS NULL OR t.hour < write_hourly_rollups.hour THEN t.latency_histogram
                                    WHEN t.hour > write_hourly_rollups.hour
                                        THEN webmon.latency_sum(webmon.latency_subtract(t.before_histogram, c.old_histogram), f.latency_histogram)
                                    ELSE t.before_histogram END
        FROM start c
        LEFT JOIN fresh f ON (f.monitor_id, f.region) = (c.monitor_id, c.region)
        WHERE (t.monitor_id, t.region) = (c.monitor_id, c.region)
        RETURNING 1
    )
    INSERT INTO webmon.rollup_totals (monitor_id, region, good, failed, maintenance, latency_histogram, hour)
    SELECT f.monitor_id, f.region, f.good, f.failed, f.maintenance, f.latency_histogram, write_hourly_rollups.hour
    FROM fresh f
    JOIN start c ON (c.monitor_id, c.region) = (f.monitor_id, f.region)
    WHERE NOT c.has_totals;
END
$$;
COMMENT ON FUNCTION webmon.write_hourly_rollups(timestamptz, bigint[], boolean) IS
    'pg_webmon: write the hourly rollups of one UTC hour from its results, for every monitor or those in monitor_ids: once it has closed (starting from the totals before it), or again (in place of its rows; the running totals after them and the totals follow). Called by webmon.rollup_hour().';

-- (Re)writes the hourly rollups of one hour (see write_hourly_rollups), for every monitor or
-- those in monitor_ids. When that fails (a row no rule foresaw), each monitor is rolled up on
-- its own, and those that fail are skipped with a WARNING: one bad row never stops the others.
CREATE FUNCTION webmon.rollup_hour(hour timestamptz, monitor_ids bigint[] DEFAULT NULL, again boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    one bigint;
BEGIN
    BEGIN
        PERFORM webmon.write_hourly_rollups(rollup_hour.hour, monitor_ids, again);
        RETURN;
    EXCEPTION WHEN OTHERS THEN
        IF webmon.transient_error(SQLSTATE) THEN
            RAISE;
        END IF;
        RAISE WARNING 'pg_webmon: rolling up the hour from % failed (%); rolling it up monitor by monitor',
            rollup_hour.hour, SQLERRM;
    END;
    FOR one IN SELECT m.id FROM webmon.monitors m WHERE monitor_ids IS NULL OR m.id = ANY (monitor_ids) LOOP
        BEGIN
            PERFORM webmon.write_hourly_rollups(rollup_hour.hour, ARRAY[one], again);
        EXCEPTION WHEN OTHERS THEN
            IF webmon.transient_error(SQLSTATE) THEN
                RAISE;
            END IF;
            RAISE WARNING 'pg_webmon: monitor % left out of the rollups of the hour from %: %',
                one, rollup_hour.hour, SQLERRM;
            -- Its steps of that hour leave the totals too: the hour has no row, and counts
            -- nowhere (as unmonitored).
            IF NOT again THEN
                UPDATE webmon.rollup_totals t
                SET good = t.before_good, failed = t.before_failed, maintenance = t.before_maintenance,
                    latency_histogram = t.before_histogram
                WHERE t.monitor_id = one AND t.hour = rollup_hour.hour;
            END IF;
        END;
    END LOOP;
END
$$;
COMMENT ON FUNCTION webmon.rollup_hour(timestamptz, bigint[], boolean) IS
    'pg_webmon: write the hourly rollups of one UTC hour from its results, once it has closed or again, for every monitor or those in monitor_ids; a monitor whose results cannot be rolled up is left out with a WARNING. Called by webmon.run_rollups().';

-- Results before this time are rolled up (and late from then on): the five-minute step that
-- closed two minutes before `at_ts`.
CREATE FUNCTION webmon.rollups_closed_before(at_ts timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
RETURN date_bin(interval '5 minutes', at_ts - interval '2 minutes', timestamptz '2000-01-01 00:00:00+00');
COMMENT ON FUNCTION webmon.rollups_closed_before(timestamptz) IS
    'pg_webmon: how far rollups go at a time: the end of the five-minute step that closed two minutes before it.';

CREATE FUNCTION webmon.run_rollups(max_hours int DEFAULT 24, max_late int DEFAULT 10000)
RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    state webmon.rollup_state;
    horizon timestamptz;
    closed timestamptz := webmon.rollups_closed_before(now());
    step_hour timestamptz;
    step_to timestamptz;
    done int := 0;
    late record;
BEGIN
    -- One run at a time (the row lock on the state); a run in progress is left alone.
    IF NOT EXISTS (SELECT 1 FROM webmon.rollup_state) THEN
        -- The first run starts at the oldest result kept (within pg_webmon.retention): an
        -- update from a release without rollups rolls up the results it kept. Without any, at
        -- this hour.
        INSERT INTO webmon.rollup_state (rolled_up_to, flagged_before)
        SELECT s.first, s.first
        FROM (SELECT date_trunc('hour', greatest(least(
                         (SELECT min(p.range_start) FROM webmon.partitions p
                          WHERE p.parent IN ('webmon.metrics'::regclass, 'webmon.errors'::regclass)),
                         -- Results in the default partitions, older than every partition (only
                         -- those are read: the other partitions are pruned).
                         (SELECT min(mt.request_timestamp) FROM webmon.metrics mt
                          WHERE mt.request_timestamp < coalesce((SELECT min(p.range_start) FROM webmon.partitions p
                                                                 WHERE p.parent = 'webmon.metrics'::regclass), 'infinity')),
                         (SELECT min(e.request_timestamp) FROM webmon.errors e
                          WHERE e.request_timestamp < coalesce((SELECT min(p.range_start) FROM webmon.partitions p
                                                                WHERE p.parent = 'webmon.errors'::regclass), 'infinity')),
                         now()), now() - webmon.results_retention()), 'UTC') AS first) s
        ON CONFLICT (only_row) DO NOTHING;
    END IF;
    SELECT * INTO state FROM webmon.rollup_state FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    -- Results before the step that closed two minutes ago are late from now on: a run of its
    -- own, which the next one follows with the rollup of that hour. The SHARE lock is taken
    -- when no writer holds the gate (then the next run tries again): writers that read the old
    -- time have committed, so the next run sees their rows. A run that did more would hold the lock (and
    -- every writer) for as long, or hold pending rows a writer may wait for (a deadlock).
    IF closed > state.flagged_before THEN
        BEGIN
            -- Without waiting (writers queue behind a waiting SHARE request), unless that has
            -- failed for two steps: then for 100 ms at most.
            IF now() - state.flagged_before > interval '12 minutes' THEN
                PERFORM set_config('lock_timeout', '100ms', true);
                LOCK TABLE webmon.rollup_gate IN SHARE MODE;
            ELSE
                LOCK TABLE webmon.rollup_gate IN SHARE MODE NOWAIT;
            END IF;
            UPDATE webmon.rollup_state SET flagged_before = closed;
        EXCEPTION WHEN lock_not_available THEN
            IF now() - state.flagged_before > interval '15 minutes' AND extract(second FROM now()) < 2 THEN
                RAISE WARNING 'pg_webmon: rollups wait for transactions that wrote results and are still open (process ids %)',
                    (SELECT string_agg(DISTINCT l.pid::text, ', ') FROM pg_catalog.pg_locks l
                     WHERE l.relation = 'webmon.rollup_gate'::regclass AND l.granted)
                    USING HINT = 'Rollups are behind from ' || state.flagged_before || '; end those transactions.';
            END IF;
        END;
        RETURN 0;
    END IF;
    -- Raw results older than this may be dropped already: their hours are not rolled up again.
    horizon := now() - webmon.results_retention();

    -- 1. Hours that got late results (or a maintenance window): rolled up again from their
    -- results for those monitors, then their days. An hour a writer may still add to is
    -- locked by it, and left for a later run.
    FOR late IN
        WITH taken AS (
            DELETE FROM webmon.rollup_pending p
            WHERE (p.monitor_id, p.hour) IN (
                -- Hours not rolled up yet wait for step 2 (which reads them anyway).
                SELECT q.monitor_id, q.hour FROM webmon.rollup_pending q
                WHERE q.hour < state.rolled_up_to
                ORDER BY q.hour LIMIT max_late FOR UPDATE SKIP LOCKED)
            RETURNING p.*
        )
        -- Hours whose results may be dropped already are not rolled up again.
        SELECT t.hour, array_agg(t.monitor_id) AS monitor_ids
        FROM taken t
        WHERE t.hour + interval '1 hour' > horizon
        GROUP BY t.hour ORDER BY t.hour
    LOOP
        IF late.hour = date_trunc('hour', state.rolled_up_to, 'UTC') THEN
            -- The hour in progress: its totals so far counted again (its rows come when it closes).
            BEGIN
                PERFORM webmon.recount_hour_in_progress(late.hour, state.rolled_up_to, late.monitor_ids);
            EXCEPTION WHEN OTHERS THEN
                IF webmon.transient_error(SQLSTATE) THEN
                    RAISE;
                END IF;
                RAISE WARNING 'pg_webmon: late results of the hour from % count in uptime once it has closed: %',
                    late.hour, SQLERRM;
            END;
            done := done + 1;
            CONTINUE;
        END IF;
        PERFORM webmon.rollup_hour(late.hour, late.monitor_ids, true);
        IF date_trunc('day', late.hour, 'UTC') < date_trunc('day', state.rolled_up_to, 'UTC') THEN
            BEGIN
                PERFORM webmon.rollup_day(date_trunc('day', late.hour, 'UTC'), late.monitor_ids);
            EXCEPTION WHEN OTHERS THEN
                IF webmon.transient_error(SQLSTATE) THEN
                    RAISE;
                END IF;
                RAISE WARNING 'pg_webmon: the daily rollups of % for % monitors are out of date: %',
                    date_trunc('day', late.hour, 'UTC'), cardinality(late.monitor_ids), SQLERRM;
            END;
        END IF;
        done := done + 1;
    END LOOP;
    -- The pending rows this run took stay locked until it ends: a writer with another late
    -- result for one of them waits for that, not for an hour's rollup as well.
    IF done > 0 THEN
        RETURN done;
    END IF;

    -- 2. Closed steps, oldest first: added to the totals while their hour goes on; the rows of
    -- an hour once it has closed (at most an hour at a time); a day once its last hour is in.
    WHILE state.rolled_up_to < state.flagged_before AND done < max_hours LOOP
        step_hour := date_trunc('hour', state.rolled_up_to, 'UTC');
        step_to := least(step_hour + interval '1 hour', state.flagged_before);
        IF step_hour + interval '1 hour' <= horizon THEN
            NULL;
        ELSIF step_to = step_hour + interval '1 hour' THEN
            PERFORM webmon.rollup_hour(step_hour);
        ELSE
            BEGIN
                PERFORM webmon.add_to_totals(state.rolled_up_to, step_to);
            EXCEPTION WHEN OTHERS THEN
                IF webmon.transient_error(SQLSTATE) THEN
                    RAISE;
                END IF;
                -- The hour's rows are read whole from its results when it closes.
                RAISE WARNING 'pg_webmon: the results from % to % count in uptime once their hour has closed: %',
                    state.rolled_up_to, step_to, SQLERRM;
            END;
        END IF;
        state.rolled_up_to := step_to;
        IF state.rolled_up_to = date_trunc('day', state.rolled_up_to, 'UTC') THEN
            BEGIN
                PERFORM webmon.rollup_day(state.rolled_up_to - interval '24 hours');
            EXCEPTION WHEN OTHERS THEN
                IF webmon.transient_error(SQLSTATE) THEN
                    RAISE;
                END IF;
                RAISE WARNING 'pg_webmon: the daily rollups of % are missing: %',
                    state.rolled_up_to - interval '24 hours', SQLERRM;
            END;
        END IF;
        done := done + 1;
    END LOOP;
    IF done > 0 THEN
        UPDATE webmon.rollup_state SET rolled_up_to = state.rolled_up_to;
    END IF;

    RETURN done;
END
$$;
COMMENT ON FUNCTION webmon.run_rollups(int, int) IS
    'pg_webmon: bring the rollups up to date, one step per call: mark the results closed until webmon.rollups_closed_before(now()) (a call of its own), or roll up again the hours that got late results (at most max_late monitor-hours), or roll up at most max_hours closed steps (each at most an hour). Returns how many it rolled up; the maintenance worker calls it every second.';

-- Maintenance windows count for rollups: a one-off window added, changed or removed for a
-- time already rolled up has those hours rolled up again (within pg_webmon.retention, while
-- the results are kept). Weekly windows count from when they are added.
CREATE FUNCTION webmon.maintenance_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- A new reason or name changes no hour.
    IF TG_OP = 'UPDATE' AND NEW.during IS NOT DISTINCT FROM OLD.during
       AND NEW.monitor_id IS NOT DISTINCT FROM OLD.monitor_id THEN
        RETURN NULL;
    END IF;
    INSERT INTO webmon.rollup_pending AS p (monitor_id, hour)
    SELECT DISTINCT m.id, h.hour
    FROM (SELECT NEW.monitor_id AS monitor_id, NEW.during AS during WHERE TG_OP <> 'DELETE'
          UNION ALL
          SELECT OLD.monitor_id, OLD.during WHERE TG_OP <> 'INSERT') w
    CROSS JOIN webmon.rollup_state s
    -- Whole hours after the horizon only: a window purged past retention changes nothing.
    CROSS JOIN LATERAL generate_series(
        greatest(date_trunc('hour', lower(w.during), 'UTC'),
                 date_trunc('hour', now() - webmon.results_retention(), 'UTC') + interval '1 hour'),
        least(upper(w.during), s.rolled_up_to) - interval '1 microsecond', interval '1 hour') h(hour)
    JOIN webmon.monitors m ON w.monitor_id IS NULL OR m.id = w.monitor_id
    WHERE w.during IS NOT NULL AND lower(w.during) < s.rolled_up_to
    -- Locked until this transaction ends, as writers of results do (run_rollups skips it).
    ON CONFLICT ON CONSTRAINT rollup_pending_pkey DO UPDATE SET hour = EXCLUDED.hour;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION webmon.maintenance_changed() IS
    'pg_webmon: trigger of webmon.maintenance: a one-off window added, changed or removed for hours already rolled up has them rolled up again.';
CREATE TRIGGER maintenance_rollups AFTER INSERT OR UPDATE OR DELETE ON webmon.maintenance
    FOR EACH ROW EXECUTE FUNCTION webmon.maintenance_changed();

-- ---------------------------------------------------------------------------------------------
-- Reading them
-- ---------------------------------------------------------------------------------------------

-- Refuses a range the uptime functions cannot read (22023); true otherwise.
CREATE FUNCTION webmon.checked_range(from_ts timestamptz, to_ts timestamptz) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF from_ts IS NULL OR to_ts IS NULL OR isfinite(from_ts) IS NOT TRUE OR isfinite(to_ts) IS NOT TRUE
       OR from_ts > to_ts THEN
        RAISE EXCEPTION 'invalid range from % to %: it needs a finite start not after its end', from_ts, to_ts
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN true;
END
$$;
COMMENT ON FUNCTION webmon.checked_range(timestamptz, timestamptz) IS
    'pg_webmon: true for a range the uptime functions can read; refuses (22023) a missing or infinite bound or a start after the end.';

-- What the rollups of each monitor and region (those in monitor_ids, or all) hold before a
-- time: at rolled_up_to or later, the totals; before the hour in progress, the running totals
-- of the hour the time falls in plus the part of that hour's timeline before it (without a row
-- in that hour: the running totals of its next hour, or else the totals before the hour in
-- progress). A time in the hour in progress but before rolled_up_to reads as the start of that
-- hour. One row per monitor and region, whatever the time.
CREATE FUNCTION webmon.rollups_before(at_ts timestamptz, monitor_ids bigint[] DEFAULT NULL)
RETURNS TABLE (monitor_id bigint, region text, good bigint, failed bigint, maintenance bigint,
               latency_histogram bytea, total_good bigint, total_failed bigint, total_maintenance bigint,
               total_histogram bytea)
LANGUAGE sql STABLE
BEGIN ATOMIC
    -- From rolled_up_to on: the totals; in the hour in progress before it: the totals before
    -- that hour. (Each branch runs only for its times.)
    SELECT t.monitor_id, t.region,
           CASE WHEN at_ts < s.rolled_up_to AND t.hour = s.open_hour THEN t.before_good ELSE t.good END,
           CASE WHEN at_ts < s.rolled_up_to AND t.hour = s.open_hour THEN t.before_failed ELSE t.failed END,
           CASE WHEN at_ts < s.rolled_up_to AND t.hour = s.open_hour THEN t.before_maintenance ELSE t.maintenance END,
           CASE WHEN at_ts < s.rolled_up_to AND t.hour = s.open_hour THEN t.before_histogram ELSE t.latency_histogram END,
           t.good, t.failed, t.maintenance, t.latency_histogram
    FROM (SELECT r.rolled_up_to, date_trunc('hour', r.rolled_up_to, 'UTC') AS open_hour
          FROM webmon.rollup_state r
          WHERE at_ts >= date_trunc('hour', r.rolled_up_to, 'UTC')) s
    CROSS JOIN webmon.rollup_totals t
    WHERE monitor_ids IS NULL OR t.monitor_id = ANY (monitor_ids)
    UNION ALL
    -- Before the hour in progress: the running totals of the hour at_ts falls in, and its part.
    SELECT t.monitor_id, t.region,
           CASE WHEN e.monitor_id IS NOT NULL THEN e.cum_good + coalesce(c.counts[1], r.good, 0)
                WHEN n.found THEN n.cum_good
                WHEN t.hour = s.open_hour THEN t.before_good ELSE t.good END,
           CASE WHEN e.monitor_id IS NOT NULL THEN e.cum_failed + coalesce(c.counts[2], r.failed, 0)
                WHEN n.found THEN n.cum_failed
                WHEN t.hour = s.open_hour THEN t.before_failed ELSE t.failed END,
           CASE WHEN e.monitor_id IS NOT NULL THEN e.cum_maintenance + coalesce(c.counts[3], r.maintenance, 0)
                WHEN n.found THEN n.cum_maintenance
                WHEN t.hour = s.open_hour THEN t.before_maintenance ELSE t.maintenance END,
           CASE WHEN e.timeline IS NOT NULL
                    THEN webmon.timeline_histogram(e.timeline, webmon.microseconds_into_hour(at_ts), e.cum_histogram)
                WHEN e.monitor_id IS NOT NULL THEN webmon.latency_sum(e.cum_histogram, r.latency_histogram)
                WHEN n.found THEN n.cum_histogram
                WHEN t.hour = s.open_hour THEN t.before_histogram ELSE t.latency_histogram END,
           t.good, t.failed, t.maintenance, t.latency_histogram
    FROM (SELECT date_trunc('hour', r.rolled_up_to, 'UTC') AS open_hour
          FROM webmon.rollup_state r
          WHERE at_ts < date_trunc('hour', r.rolled_up_to, 'UTC')) s
    CROSS JOIN webmon.rollup_totals t
    LEFT JOIN webmon.rollups_hourly e
           ON e.hour = date_trunc('hour', at_ts, 'UTC') AND e.monitor_id = t.monitor_id AND e.region = t.region
    LEFT JOIN LATERAL (
        SELECT webmon.timeline_counts(e.timeline, webmon.microseconds_into_hour(at_ts)) AS counts
        WHERE e.timeline IS NOT NULL
    ) c ON true
    -- Rows written before 0.9.0 have no timeline: that part of the hour is read from the results.
    -- (The tests on e stay outside the subqueries below, and OFFSET 0 keeps them there, so that
    -- other rows skip them.)
    LEFT JOIN LATERAL (
        SELECT q.* FROM (
            SELECT x.good, x.failed, x.maintenance, x.latency_histogram
            FROM webmon.results_summary(e.hour, at_ts, ARRAY[t.monitor_id]) x
            WHERE x.region = t.region
            LIMIT 1
        ) q
        WHERE e.monitor_id IS NOT NULL AND e.timeline IS NULL AND at_ts > e.hour
        OFFSET 0
    ) r ON true
    -- No row in that hour: the next hour's running totals, if it has rows after it (the totals
    -- know its last hour with rows: a region no longer checked is not searched).
    LEFT JOIN LATERAL (
        SELECT q.* FROM (
            SELECT true AS found, l.cum_good, l.cum_failed, l.cum_maintenance, l.cum_histogram
            FROM webmon.rollups_hourly l
            WHERE l.monitor_id = t.monitor_id AND l.region = t.region AND l.hour > date_trunc('hour', at_ts, 'UTC')
            ORDER BY l.hour LIMIT 1
        ) q
        WHERE e.monitor_id IS NULL AND (t.hour IS NULL OR t.hour > date_trunc('hour', at_ts, 'UTC'))
        OFFSET 0
    ) n ON true
    WHERE monitor_ids IS NULL OR t.monitor_id = ANY (monitor_ids);
END;
COMMENT ON FUNCTION webmon.rollups_before(timestamptz, bigint[]) IS
    'pg_webmon: per monitor (those in monitor_ids, or all) and region, the good, failed and maintenance checks and the latency histogram of everything rolled up before at_ts (from rollup_state.rolled_up_to on: all of it; a time in the hour in progress before that reads as the start of that hour), from one hourly row; and the same of everything rolled up (total_*).';

CREATE FUNCTION webmon.uptime_between(from_ts timestamptz, to_ts timestamptz, monitor_ids bigint[] DEFAULT NULL)
RETURNS TABLE (monitor_id bigint, url text, checks bigint, failures bigint, uptime_pct numeric,
               p50_ms real, p95_ms real, p99_ms real, unmonitored_time interval)
-- PL/pgSQL: each read is planned for its own times (partitions pruned, the time indexes used)
-- and monitors; never JIT-compiled, which costs seconds for a plan this size and saves nothing.
-- SECURITY DEFINER: it reads rollups, results and monitors for roles that may read uptime
-- (webmon.grant_reader), whatever they were granted before the rollups existed.
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off
SET plan_cache_mode = force_custom_plan SET work_mem = '64MB' AS $$
#variable_conflict use_column
DECLARE
    rolled timestamptz;
    open_hour timestamptz;
    -- Up to here from the rollups (none when the range starts in the hour in progress), then
    -- from the results: rolled_up_to, or the start of the hour in progress.
    split timestamptz;
BEGIN
    PERFORM webmon.checked_range(from_ts, to_ts);
    rolled := coalesce((SELECT r.rolled_up_to FROM webmon.rollup_state r), '-infinity');
    open_hour := date_trunc('hour', rolled, 'UTC');
    split := CASE WHEN from_ts >= open_hour THEN from_ts
                  WHEN to_ts >= rolled THEN rolled
                  WHEN to_ts >= open_hour THEN open_hour
                  ELSE to_ts END;
    RETURN QUERY
    -- Each part read once (MATERIALIZED) and joined by hashing: a plan that stays the same for
    -- one monitor and for all of them.
    WITH starts AS MATERIALIZED (
        SELECT * FROM webmon.rollups_before(from_ts, monitor_ids) WHERE from_ts < split
    ), ends AS MATERIALIZED (
        SELECT * FROM webmon.rollups_before(split, monitor_ids) WHERE from_ts < split AND split < rolled
    ), parts AS (
        -- Rolled up: what the rollups hold before the end, less what they hold before the start.
        -- An end at rolled_up_to (the usual case) is the totals, read with the start.
        SELECT b.monitor_id, b.total_good - b.good AS good, b.total_failed - b.failed AS failed,
               b.total_maintenance - b.maintenance AS maintenance,
               webmon.latency_subtract(b.total_histogram, b.latency_histogram) AS histogram
        FROM starts b
        WHERE split = rolled
        UNION ALL
        SELECT e.monitor_id, e.good - coalesce(b.good, 0), e.failed - coalesce(b.failed, 0),
               e.maintenance - coalesce(b.maintenance, 0),
               webmon.latency_subtract(e.latency_histogram, b.latency_histogram)
        FROM ends e
        LEFT JOIN starts b ON (b.monitor_id, b.region) = (e.monitor_id, e.region)
        WHERE split < rolled
        UNION ALL
        -- Not rolled up yet: the results themselves.
        SELECT r.monitor_id, count(*) FILTER (WHERE r.status = 0), count(*) FILTER (WHERE r.status = 1),
               count(*) FILTER (WHERE r.status = 2), webmon.latency_histogram(r.response_time_ms)
        FROM webmon.classified_results(split, to_ts, monitor_ids) r
        WHERE split < to_ts
        GROUP BY r.monitor_id
    ), totals AS (
        SELECT p.monitor_id, sum(p.good) AS good, sum(p.failed) AS failed,
               sum(p.good) + sum(p.failed) + sum(p.maintenance) AS checked,
               webmon.latency_merge(p.histogram) AS histogram
        FROM parts p
        GROUP BY p.monitor_id
    )
    SELECT m.id, m.url,
           coalesce(t.good + t.failed, 0)::bigint,
           coalesce(t.failed, 0)::bigint,
           round(100.0 * t.good / nullif(t.good + t.failed, 0), 3),
           webmon.latency_percentile(t.histogram, 0.5),
           webmon.latency_percentile(t.histogram, 0.95),
           webmon.latency_percentile(t.histogram, 0.99),
           webmon.unmonitored_time(m.check_interval, m.regions, greatest(from_ts, m.created_at),
                                   least(to_ts, now()), coalesce(t.checked, 0)::bigint)
    FROM webmon.monitors m
    LEFT JOIN totals t ON t.monitor_id = m.id
    WHERE monitor_ids IS NULL OR m.id = ANY (monitor_ids)
    ORDER BY m.id;
END
$$;
COMMENT ON FUNCTION webmon.uptime_between(timestamptz, timestamptz, bigint[]) IS
    'pg_webmon: per monitor (those in monitor_ids, or all) over [from_ts, to_ts): checks (good + failed, outside maintenance windows), failures, uptime %, p50/p95/p99 response time in ms (within 4.4 %), and unmonitored_time: how long its slots went unchecked (no probe, lost, no result at all, paused), averaged over its regions. Reads two hourly rollup rows per monitor and region, whatever the range, and the results only of the minutes not rolled up yet (or of a range that starts in the hour in progress). For a few monitors pass monitor_ids: a WHERE on the result reads all of them first.';

CREATE FUNCTION webmon.uptime(since interval DEFAULT '1 day', monitor_ids bigint[] DEFAULT NULL)
RETURNS TABLE (monitor_id bigint, url text, checks bigint, failures bigint, uptime_pct numeric,
               p50_ms real, p95_ms real, p99_ms real, unmonitored_time interval)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT * FROM webmon.uptime_between(now() - since, now(), monitor_ids);
END;
COMMENT ON FUNCTION webmon.uptime(interval, bigint[]) IS
    'pg_webmon: webmon.uptime_between(now() - since, now(), monitor_ids): per monitor over the last `since`, checks, failures, uptime %, p50/p95/p99 response time in ms and unmonitored time.';

CREATE FUNCTION webmon.sla(month date, monitor_ids bigint[] DEFAULT NULL)
RETURNS TABLE (monitor_id bigint, url text, month_start date, checks bigint, failures bigint, uptime_pct numeric,
               p50_ms real, p95_ms real, p99_ms real, unmonitored_time interval)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT u.monitor_id, u.url, date_trunc('month', sla.month)::date, u.checks, u.failures, u.uptime_pct,
           u.p50_ms, u.p95_ms, u.p99_ms, u.unmonitored_time
    FROM webmon.uptime_between(date_trunc('month', sla.month)::timestamptz,
                               (date_trunc('month', sla.month) + interval '1 month')::timestamptz,
                               sla.monitor_ids) u;
END;
COMMENT ON FUNCTION webmon.sla(date, bigint[]) IS
    'pg_webmon: per monitor (those in monitor_ids, or all), its uptime over the calendar month that holds `month` (in the session''s time zone), as webmon.uptime_between() counts it.';


REVOKE ALL ON FUNCTION webmon.run_rollups(int, int) FROM PUBLIC;
-- uptime_between reads every monitor's results as the owner: for roles granted it
-- (webmon.grant_reader), not for every role that can use the schema (probe roles).
REVOKE ALL ON FUNCTION webmon.uptime_between(timestamptz, timestamptz, bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.uptime(interval, bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.sla(date, bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.rollup_day(timestamptz, bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.rollup_hour(timestamptz, bigint[], boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.add_to_totals(timestamptz, timestamptz, bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.recount_hour_in_progress(timestamptz, timestamptz, bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.write_hourly_rollups(timestamptz, bigint[], boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.maintenance_changed() FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.note_late_results() FROM PUBLIC;

-- pg_dump keeps how far rollups go and the hours still to roll up again (the rollups
-- themselves are in partitions, which are not the extension's and are dumped as tables).
SELECT pg_catalog.pg_extension_config_dump('webmon.rollup_state', '');
SELECT pg_catalog.pg_extension_config_dump('webmon.rollup_pending', '');
SELECT pg_catalog.pg_extension_config_dump('webmon.rollup_totals', '');
