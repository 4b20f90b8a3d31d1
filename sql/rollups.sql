-- Rollups: hourly and daily counts, latencies and latency histograms per monitor and region,
-- kept for pg_webmon.rollup_retention, and the uptime functions that read them. Loaded by
-- CREATE EXTENSION after status.sql.
--
-- How they stay right without rescanning history:
-- * webmon.rollup_state holds two times. rolled_up_to: every hour before it is in
--   rollups_hourly (and every UTC day before its day in rollups_daily). flagged_before: a
--   result that arrives for a time before it is late, and its (monitor, region, hour) is noted
--   in webmon.rollup_pending by a statement trigger on webmon.metrics and webmon.errors.
-- * webmon.run_rollups(), called every second by the maintenance worker, each time in a
--   transaction of its own: recomputes the hours with late results from their raw rows, rolls
--   up the hours between rolled_up_to and flagged_before, and moves flagged_before to the last
--   hour that closed two minutes ago.
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
    latency_histogram  bytea
) PARTITION BY RANGE (hour);
COMMENT ON TABLE webmon.rollups_hourly IS
    'pg_webmon: per monitor, region and hour (UTC), what its results add up to. Written by webmon.run_rollups() once an hour has closed (and again when a late result arrives), kept for pg_webmon.rollup_retention.';
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

CREATE TABLE webmon.rollup_state (
    only_row       boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    rolled_up_to   timestamptz NOT NULL,
    flagged_before timestamptz NOT NULL
);
COMMENT ON TABLE webmon.rollup_state IS
    'pg_webmon: how far rollups go. Hours before rolled_up_to are in webmon.rollups_hourly; results that arrive for a time before flagged_before are late and their hours are rolled up again. Made by the first webmon.run_rollups().';

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
-- What raw results add up to: the one definition that rollups and the raw edges of the uptime
-- functions share. Per monitor (NULL: every monitor) and region, over [from_ts, to_ts), read
-- through each monitor's (monitor_id, request_timestamp) index.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION webmon.results_summary(from_ts timestamptz, to_ts timestamptz, monitor_ids bigint[] DEFAULT NULL)
RETURNS TABLE (monitor_id bigint, region text, checks int, good int, failed int, maintenance int,
               unmonitored int, error_kinds jsonb, responses int, latency_min_ms real,
               latency_max_ms real, latency_sum_ms float8, latency_histogram bytea)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT m.id, k.region,
           sum(k.checks)::int, sum(k.good)::int, sum(k.failed)::int, sum(k.maintenance)::int,
           sum(k.unmonitored)::int,
           jsonb_object_agg(k.error_kind, k.checks) FILTER (WHERE k.error_kind IS NOT NULL),
           sum(k.responses)::int, min(k.latency_min_ms), max(k.latency_max_ms),
           sum(k.latency_sum_ms), webmon.latency_merge(k.latency_histogram)
    FROM webmon.monitors m
    -- Monitors with a maintenance window (or any window for every monitor) look each
    -- result up in their windows; the others do not.
    CROSS JOIN LATERAL (
        SELECT EXISTS (SELECT 1 FROM webmon.maintenance mw
                       WHERE mw.monitor_id = m.id OR mw.monitor_id IS NULL) AS has_windows
    ) win
    CROSS JOIN LATERAL (
        SELECT r.region, r.error_kind,
               count(*) AS checks,
               count(*) FILTER (WHERE r.up AND NOT r.in_window) AS good,
               count(*) FILTER (WHERE NOT r.up AND NOT r.in_window) AS failed,
               count(*) FILTER (WHERE r.up IS NOT NULL AND r.in_window) AS maintenance,
               count(*) FILTER (WHERE r.up IS NULL) AS unmonitored,
               count(r.response_time_ms) AS responses,
               min(r.response_time_ms) AS latency_min_ms,
               max(r.response_time_ms) AS latency_max_ms,
               sum(r.response_time_ms::float8) AS latency_sum_ms,
               webmon.latency_histogram(r.response_time_ms) AS latency_histogram
        FROM (
            SELECT coalesce(x.region, '') AS region, x.error_kind, x.response_time_ms,
                   webmon.result_is_up(m.expected_status, x.http_status_code, x.regex_matched, x.error_kind) AS up,
                   win.has_windows AND webmon.maintenance_window(m.id, x.request_timestamp) IS NOT NULL AS in_window
            FROM (
                SELECT mt.region, NULL::text AS error_kind, mt.response_time_ms, mt.http_status_code,
                       mt.regex_matched, mt.request_timestamp
                FROM webmon.metrics mt
                WHERE mt.monitor_id = m.id AND mt.request_timestamp >= from_ts AND mt.request_timestamp < to_ts
                UNION ALL
                SELECT e.region, e.error_kind, NULL::real, NULL::smallint, NULL::boolean, e.request_timestamp
                FROM webmon.errors e
                WHERE e.monitor_id = m.id AND e.request_timestamp >= from_ts AND e.request_timestamp < to_ts
            ) x
        ) r
        GROUP BY r.region, r.error_kind
    ) k
    WHERE monitor_ids IS NULL OR m.id = ANY (monitor_ids)
    GROUP BY m.id, k.region;
END;
COMMENT ON FUNCTION webmon.results_summary(timestamptz, timestamptz, bigint[]) IS
    'pg_webmon: per monitor (all when monitor_ids is NULL) and region, what its stored results in [from_ts, to_ts) add up to, in the columns of webmon.rollups_hourly.';

-- Where a range splits into raw rows, hourly rollups and daily rollups: days [day_from,
-- day_to) from rollups_daily, hours [hour_from, hour_to) outside them from rollups_hourly, and
-- [from_ts, hour_from) and [hour_to, to_ts) from raw results. Only hours before rolled_up_to
-- are read from rollups, only closed days from daily ones; UTC hours and days.
CREATE FUNCTION webmon.rollup_spans(from_ts timestamptz, to_ts timestamptz, rolled_up_to timestamptz,
                                    OUT hour_from timestamptz, OUT hour_to timestamptz,
                                    OUT day_from timestamptz, OUT day_to timestamptz)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT h.hour_from, h.hour_to,
           CASE WHEN d.day_to > d.day_from THEN d.day_from ELSE h.hour_from END,
           CASE WHEN d.day_to > d.day_from THEN d.day_to ELSE h.hour_from END
    FROM (SELECT CASE WHEN e.last > e.first THEN e.first ELSE to_ts END AS hour_from,
                 CASE WHEN e.last > e.first THEN e.last ELSE to_ts END AS hour_to
          FROM (SELECT date_trunc('hour', from_ts + interval '1 hour' - interval '1 microsecond', 'UTC') AS first,
                       least(date_trunc('hour', to_ts, 'UTC'), date_trunc('hour', rolled_up_to, 'UTC')) AS last) e) h
    CROSS JOIN LATERAL (
        SELECT date_trunc('day', h.hour_from + interval '24 hours' - interval '1 microsecond', 'UTC') AS day_from,
               date_trunc('day', h.hour_to, 'UTC') AS day_to
    ) d;
END;
COMMENT ON FUNCTION webmon.rollup_spans(timestamptz, timestamptz, timestamptz) IS
    'pg_webmon: how the uptime functions split a range: daily rollups for [day_from, day_to), hourly rollups for the rest of [hour_from, hour_to), raw results before hour_from and from hour_to.';

-- ---------------------------------------------------------------------------------------------
-- Maintaining them
-- ---------------------------------------------------------------------------------------------
-- Error kind counts added up: {"timeout": 2} and {"timeout": 1, "dns": 1} are {"timeout": 3, "dns": 1}.
CREATE FUNCTION webmon.sum_error_kinds(kinds jsonb[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
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

-- Writes the hourly rollups of one hour from its results, for every monitor or those in
-- monitor_ids, in place of the ones there.
CREATE FUNCTION webmon.write_hourly_rollups(hour timestamptz, monitor_ids bigint[])
RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    DELETE FROM webmon.rollups_hourly h
    WHERE h.hour = write_hourly_rollups.hour AND (monitor_ids IS NULL OR h.monitor_id = ANY (monitor_ids));
    INSERT INTO webmon.rollups_hourly
    SELECT s.monitor_id, s.region, write_hourly_rollups.hour, s.checks, s.good, s.failed, s.maintenance,
           s.unmonitored, s.error_kinds, s.responses, s.latency_min_ms, s.latency_max_ms,
           s.latency_sum_ms, s.latency_histogram
    FROM webmon.results_summary(write_hourly_rollups.hour, write_hourly_rollups.hour + interval '1 hour', monitor_ids) s;
END;
COMMENT ON FUNCTION webmon.write_hourly_rollups(timestamptz, bigint[]) IS
    'pg_webmon: write the hourly rollups of one UTC hour from its results, for every monitor or those in monitor_ids, in place of the ones there. Called by webmon.rollup_hour().';

-- (Re)writes the hourly rollups of one hour from its results, for every monitor or those in
-- monitor_ids. When that fails (a row no rule foresaw), each monitor is rolled up on its own,
-- and those that fail are skipped with a WARNING: one bad row never stops the others.
CREATE FUNCTION webmon.rollup_hour(hour timestamptz, monitor_ids bigint[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    one bigint;
BEGIN
    BEGIN
        PERFORM webmon.write_hourly_rollups(rollup_hour.hour, monitor_ids);
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
            PERFORM webmon.write_hourly_rollups(rollup_hour.hour, ARRAY[one]);
        EXCEPTION WHEN OTHERS THEN
            IF webmon.transient_error(SQLSTATE) THEN
                RAISE;
            END IF;
            RAISE WARNING 'pg_webmon: monitor % left out of the rollups of the hour from %: %',
                one, rollup_hour.hour, SQLERRM;
        END;
    END LOOP;
END
$$;
COMMENT ON FUNCTION webmon.rollup_hour(timestamptz, bigint[]) IS
    'pg_webmon: (re)write the hourly rollups of one UTC hour from its results, for every monitor or those in monitor_ids; a monitor whose results cannot be rolled up is left out with a WARNING. Called by webmon.run_rollups().';

CREATE FUNCTION webmon.run_rollups(max_hours int DEFAULT 24, max_late int DEFAULT 10000)
RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    state webmon.rollup_state;
    horizon timestamptz;
    closed timestamptz := date_trunc('hour', now() - interval '2 minutes', 'UTC');
    this_hour timestamptz;
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
    -- Results before the hour that closed two minutes ago are late from now on: a run of its
    -- own, which the next one follows with the rollup of that hour. The SHARE lock is taken
    -- when no writer holds the gate (then the next run tries again): writers that read the old
    -- time have committed, so the next run sees their rows. A run that did more would hold the lock (and
    -- every writer) for as long, or hold pending rows a writer may wait for (a deadlock).
    IF closed > state.flagged_before THEN
        BEGIN
            -- Without waiting (writers queue behind a waiting SHARE request), unless that has
            -- failed for five minutes: then for 100 ms at most.
            IF now() - closed > interval '7 minutes' THEN
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
                -- Hours not rolled up yet wait for step 2 (which rolls them up anyway).
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
        PERFORM webmon.rollup_hour(late.hour, late.monitor_ids);
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

    -- 2. Closed hours, oldest first; a day once its last hour is in.
    WHILE state.rolled_up_to < state.flagged_before AND done < max_hours LOOP
        this_hour := state.rolled_up_to;
        IF this_hour + interval '1 hour' > horizon THEN
            PERFORM webmon.rollup_hour(this_hour);
        END IF;
        state.rolled_up_to := this_hour + interval '1 hour';
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
    'pg_webmon: bring the rollups up to date, one step per call: mark the hours closed until two minutes ago (a call of its own), or roll up again the hours that got late results (at most max_late monitor-hours) and roll up at most max_hours closed hours. Returns how many hours it rolled up; the maintenance worker calls it every second.';

-- Maintenance windows count for rollups: a one-off window added, changed or removed for a
-- time already rolled up has those hours rolled up again (within pg_webmon.retention, while
-- the results are kept). Weekly windows count from when they are added.
CREATE FUNCTION webmon.maintenance_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
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
-- How long a monitor's slots in [from_ts, to_ts) went unchecked, given how many got a check:
-- the slots its interval fits in the range (per region), less those checked, times the
-- interval, averaged over its regions. The slot still in flight is not counted yet. In
-- seconds, so that no stored interval can overflow a timestamp. The interval and regions are
-- the monitor's current ones.
CREATE FUNCTION webmon.unmonitored_time(check_interval interval, regions text[], from_ts timestamptz,
                                        to_ts timestamptz, checked bigint)
RETURNS interval
LANGUAGE sql STABLE PARALLEL SAFE
RETURN (SELECT make_interval(secs => greatest(0::float8,
                   floor(greatest(0::float8, least(extract(epoch FROM to_ts)::float8, extract(epoch FROM now())::float8 - x.step)
                                             - extract(epoch FROM from_ts)::float8)
                         / x.step) * x.regions - checked)
               * x.step / x.regions)
        FROM (SELECT greatest(extract(epoch FROM check_interval)::float8, 1) AS step,
                     greatest((SELECT count(DISTINCT r) FROM unnest(regions) r WHERE r <> ''), 1)::float8 AS regions) x);
COMMENT ON FUNCTION webmon.unmonitored_time(interval, text[], timestamptz, timestamptz, bigint) IS
    'pg_webmon: how long a monitor''s slots in a range went unchecked, given how many got a check: the slots that fit in it per region (the one in flight not yet), less those checked, times the interval, averaged over its regions.';

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

CREATE FUNCTION webmon.uptime_between(from_ts timestamptz, to_ts timestamptz, monitor_ids bigint[] DEFAULT NULL)
RETURNS TABLE (monitor_id bigint, url text, checks bigint, failures bigint, uptime_pct numeric,
               p50_ms real, p95_ms real, p99_ms real, unmonitored_time interval)
-- PL/pgSQL: the spans are worked out first, so that each read is planned for its own times
-- (partitions pruned, the time indexes used) and monitors; never JIT-compiled, which costs
-- seconds for a plan this size and saves nothing here.
-- SECURITY DEFINER: it reads rollups, results and monitors for roles that may read uptime
-- (webmon.grant_reader), whatever they were granted before the rollups existed.
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off
SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
DECLARE
    s record;
BEGIN
    PERFORM webmon.checked_range(from_ts, to_ts);
    SELECT * INTO s FROM webmon.rollup_spans(from_ts, to_ts,
        coalesce((SELECT r.rolled_up_to FROM webmon.rollup_state r), '-infinity'));
    RETURN QUERY
    WITH parts AS (
        SELECT d.monitor_id, d.good, d.failed, d.maintenance, d.latency_histogram
        FROM webmon.rollups_daily d
        WHERE d.day >= s.day_from AND d.day < s.day_to
          AND (monitor_ids IS NULL OR d.monitor_id = ANY (monitor_ids))
        UNION ALL
        SELECT h.monitor_id, h.good, h.failed, h.maintenance, h.latency_histogram
        FROM webmon.rollups_hourly h
        WHERE ((h.hour >= s.hour_from AND h.hour < s.day_from) OR (h.hour >= s.day_to AND h.hour < s.hour_to))
          AND (monitor_ids IS NULL OR h.monitor_id = ANY (monitor_ids))
        UNION ALL
        SELECT r.monitor_id, r.good, r.failed, r.maintenance, r.latency_histogram
        FROM webmon.results_summary(from_ts, s.hour_from, monitor_ids) r
        WHERE from_ts < s.hour_from
        UNION ALL
        SELECT r.monitor_id, r.good, r.failed, r.maintenance, r.latency_histogram
        FROM webmon.results_summary(s.hour_to, to_ts, monitor_ids) r
        WHERE s.hour_to < to_ts
    ), totals AS (
        SELECT p.monitor_id, sum(p.good) AS good, sum(p.failed) AS failed,
               sum(p.maintenance) + sum(p.good) + sum(p.failed) AS checked,
               webmon.latency_merge(p.latency_histogram) AS histogram
        FROM parts p
        GROUP BY p.monitor_id
    )
    SELECT m.id, m.url,
           coalesce(t.good + t.failed, 0),
           coalesce(t.failed, 0),
           round(100.0 * t.good / nullif(t.good + t.failed, 0), 3),
           webmon.latency_percentile(t.histogram, 0.5),
           webmon.latency_percentile(t.histogram, 0.95),
           webmon.latency_percentile(t.histogram, 0.99),
           webmon.unmonitored_time(m.check_interval, m.regions, greatest(from_ts, m.created_at),
                                   least(to_ts, now()), coalesce(t.checked, 0))
    FROM webmon.monitors m
    LEFT JOIN totals t ON t.monitor_id = m.id
    WHERE monitor_ids IS NULL OR m.id = ANY (monitor_ids)
    ORDER BY m.id;
END
$$;
COMMENT ON FUNCTION webmon.uptime_between(timestamptz, timestamptz, bigint[]) IS
    'pg_webmon: per monitor (those in monitor_ids, or all) over [from_ts, to_ts): checks (good + failed, outside maintenance windows), failures, uptime %, p50/p95/p99 response time in ms (within 4.4 %), and unmonitored_time: how long its slots went unchecked (no probe, lost, no result at all, paused), averaged over its regions. Reads daily and hourly rollups for whole UTC days and hours, and raw results only at the edges. For a few monitors pass monitor_ids: a WHERE on the result reads all of them first.';

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
REVOKE ALL ON FUNCTION webmon.rollup_hour(timestamptz, bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.write_hourly_rollups(timestamptz, bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.maintenance_changed() FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.note_late_results() FROM PUBLIC;

-- pg_dump keeps how far rollups go and the hours still to roll up again (the rollups
-- themselves are in partitions, which are not the extension's and are dumped as tables).
SELECT pg_catalog.pg_extension_config_dump('webmon.rollup_state', '');
SELECT pg_catalog.pg_extension_config_dump('webmon.rollup_pending', '');
