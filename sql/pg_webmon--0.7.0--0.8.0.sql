-- pg_webmon 0.7.0 → 0.8.0
--
-- Rollups: webmon.rollups_hourly and webmon.rollups_daily (partitioned by the maintenance
-- worker like results), the latency histogram aggregates, webmon.run_rollups() with its
-- trigger for late results, and webmon.uptime_between() and webmon.sla(). webmon.uptime()
-- reads rollups now and gains a column (unmonitored_time): it is made again, for the roles
-- webmon.grant_reader() grants it to (a WARNING names the roles to grant again). Jobs keep their last result for webmon.monitor_status, which no longer reads
-- results (until a job's first check after the update, it still does). Stored rows are kept;
-- the results kept before the update are rolled up by the maintenance worker after it, an
-- hour at a time.

-- Every table the update changes, first, in the order monitor_status and probes use them.
LOCK TABLE webmon.monitors, webmon.jobs, webmon.metrics, webmon.errors IN ACCESS EXCLUSIVE MODE;

-- webmon.uptime()'s return type changes: it is made again.
DROP FUNCTION webmon.uptime(interval);

-- Jobs keep their last result, so that webmon.monitor_status reads no results.
ALTER TABLE webmon.jobs
    ADD COLUMN last_checked_at  timestamptz,
    ADD COLUMN last_status_code smallint,
    ADD COLUMN last_response_time_ms real,
    ADD COLUMN last_regex_matched boolean,
    ADD COLUMN last_error_kind  text,
    ADD COLUMN last_error       text,
    ADD COLUMN last_region      text;
COMMENT ON COLUMN webmon.jobs.last_checked_at IS 'The last result from this job''s checks (written with it, so that webmon.monitor_status reads no results): when it started, or its slot for an error without a start.';
COMMENT ON COLUMN webmon.jobs.last_status_code IS 'The last result''s HTTP status; NULL for an error.';
COMMENT ON COLUMN webmon.jobs.last_response_time_ms IS 'The last result''s response time; NULL for an error.';
COMMENT ON COLUMN webmon.jobs.last_regex_matched IS 'Whether the last response matched the monitor''s regex; NULL without one.';
COMMENT ON COLUMN webmon.jobs.last_error_kind IS 'The last result''s error kind; NULL for a response.';
COMMENT ON COLUMN webmon.jobs.last_error IS 'The last result''s error message; NULL for a response.';
COMMENT ON COLUMN webmon.jobs.last_region IS 'The region the last result came from (the job''s, else its probe''s).';

CREATE OR REPLACE FUNCTION webmon.complete_checks(
    probe text,
    job_ids bigint[],
    slots timestamptz[],
    request_timestamps timestamptz[],
    response_times_ms real[],
    http_status_codes smallint[],
    regex_matches boolean[],
    page_contents text[],
    error_kinds text[],
    error_messages text[])
RETURNS int
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- One index lookup per result, whatever the planner guesses of a batch's size: never a scan of
-- the whole queue for a hash or merge join. Never JIT-compiled: with sequential scans priced
-- out, a statement that has no other path would be, at every call.
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off AS $$
DECLARE
    completer smallint := webmon.probe_id(probe);
    completer_region text;
    accepted int;
    changed_monitors bigint[];
    changed_at timestamptz[];
    changed_failures int[];
    changed_last_failures timestamptz[];
BEGIN
    SELECT nullif(region, '') INTO completer_region FROM webmon.probes WHERE id = completer;
    WITH done AS (
        -- Only checks this probe still leases, for the slot it was given, count; ending the
        -- lease makes a retried batch a no-op. The job row keeps every indexed column: a HOT
        -- update, which also carries the region's runs of failed, good and slow checks and
        -- its verdict (webmon_core::verdict, in Rust).
        UPDATE webmon.jobs j
        SET leased_by = NULL, attempts = 0,
            -- The result, as it is stored below: webmon.monitor_status reads it here.
            last_checked_at = coalesce(s.checked_at, j.leased_slot),
            last_status_code = CASE WHEN s.refused IS NULL AND s.error_kind IS NULL THEN s.http_status_code END,
            last_response_time_ms = CASE WHEN s.refused IS NULL AND s.error_kind IS NULL THEN s.response_time_ms END,
            last_regex_matched = CASE WHEN s.refused IS NULL AND s.error_kind IS NULL THEN s.regex_matched END,
            last_error_kind = CASE WHEN s.refused IS NOT NULL THEN 'other' ELSE s.error_kind END,
            last_error = CASE WHEN s.refused IS NOT NULL OR s.error_kind IS NOT NULL
                              THEN left(coalesce(s.refused, s.error, ''), 1000) END,
            last_region = coalesce(nullif(j.region, ''), completer_region),
            failed_run = webmon.next_run('failed', s.outcome, j.failed_run),
            good_run = webmon.next_run('good', s.outcome, j.good_run),
            slow_run = webmon.next_run('slow', s.outcome, j.slow_run),
            verdict = webmon.next_verdict(j.verdict, s.outcome, j.failed_run, j.good_run, j.slow_run,
                                          s.down_after, s.up_after),
            verdict_since = CASE WHEN webmon.next_verdict(j.verdict, s.outcome, j.failed_run, j.good_run, j.slow_run,
                                                          s.down_after, s.up_after) IS DISTINCT FROM j.verdict
                                 THEN coalesce(s.checked_at, j.leased_slot)
                                 ELSE j.verdict_since END,
            failing_since = CASE WHEN s.outcome = 'failed'
                                 THEN coalesce(j.failing_since, s.checked_at, j.leased_slot)
                                 WHEN s.outcome IS NOT NULL THEN NULL
                                 ELSE j.failing_since END,
            failing_cause = CASE WHEN s.outcome = 'failed' AND j.failing_since IS NULL
                                 THEN left(coalesce(s.refused, webmon.failure_cause(s.http_status_code, s.regex_matched,
                                                                                     s.error_kind, s.error)), 300)
                                 WHEN s.outcome = 'failed' THEN j.failing_cause
                                 WHEN s.outcome IS NOT NULL THEN NULL
                                 ELSE j.failing_cause END
        -- Each result with its job, its monitor's settings, the reasons to refuse it and its
        -- outcome, as one row (OFFSET 0: the update then carries one copy of it, not one per
        -- relation).
        FROM (SELECT b.*, k.tid, m.down_after, m.up_after, r.refused, t.checked_at, o.outcome
              FROM unnest(job_ids, slots, request_timestamps, response_times_ms, http_status_codes,
                        regex_matches, page_contents, error_kinds, error_messages)
                AS b(job_id, slot, request_timestamp, response_time_ms, http_status_code, regex_matched,
                     page_content, error_kind, error)
            -- Its monitor and its job (the one the id names, if this probe still leases it for
            -- that slot): one lookup by key each per result.
            -- Lateral subqueries kept as such (OFFSET 0), so that the results drive the lookups
            -- whatever the planner guesses: with statistics that say few jobs are leased, it
            -- once scanned the queue and read the whole batch again for each leased job (85 s
            -- for 7,000 results).
            CROSS JOIN LATERAL (
                SELECT mm.down_after, mm.up_after, mm.expected_status, mm.degraded_after_ms
                FROM webmon.monitors mm WHERE mm.id = webmon.job_monitor(b.job_id)
                OFFSET 0
            ) m
            CROSS JOIN LATERAL (
                SELECT jj.ctid AS tid
                FROM webmon.jobs jj
                WHERE jj.monitor_id = webmon.job_monitor(b.job_id)
                  AND jj.region = webmon.job_region(b.job_id, completer_region)
                  AND jj.leased_by = completer
                  AND CASE WHEN b.slot IS NOT NULL THEN jj.leased_slot = b.slot
                           -- Without the slot (the 0.3.0 form): only a check that started at
                           -- this lease's slot (probes start at the slot, on the database's
                           -- clock), not a late result of an earlier lease of the same job.
                           ELSE b.request_timestamp >= jj.leased_slot - interval '50 milliseconds' END
                OFFSET 0
            ) k
            CROSS JOIN LATERAL (
                -- A result counts as the probe says only when it can be true: started no earlier
                -- than a minute before its slot (probes start at the slot, on the database's
                -- clock) and not more than 5 seconds in the future, and, for a response, a status
                -- and a response time from 0 to a day. Any other result is stored as an `other`
                -- error at its slot saying why (a failed check), so that no row can claim "up"
                -- forever or hide newer failures. (Without slots, the 0.3.0 form, the lease's own
                -- test below already holds a result to its slot.)
                SELECT CASE
                           WHEN b.request_timestamp IS NULL
                                OR b.request_timestamp < b.slot - interval '1 minute'
                                OR b.request_timestamp > now() + interval '5 seconds'
                           THEN format('result refused: request_timestamp %s is not between a minute before its slot (%s) and now (+5 s)',
                                       b.request_timestamp, b.slot)
                           WHEN b.error_kind IS NULL
                                AND (b.http_status_code IS NULL OR b.http_status_code NOT BETWEEN 100 AND 999
                                     OR b.response_time_ms IS NULL OR NOT (b.response_time_ms BETWEEN 0 AND 86400000))
                           THEN format('result refused: status %s, response_time_ms %s', b.http_status_code, b.response_time_ms)
                           -- A kind the library does not know (a probe newer than the library).
                           WHEN b.error_kind IS NOT NULL AND b.error_kind <> ALL (webmon.error_kinds())
                           THEN format('result refused: error kind %s is not one of webmon.error_kinds(): %s', b.error_kind, b.error)
                       END AS refused
                -- Each lateral is computed once per result (OFFSET 0): flattened, its expression
                -- would be copied into every use (outcome has a dozen, refused is in outcome).
                OFFSET 0
            ) r
            -- The check's time: when it started, or for a refused result its slot (the lease's
            -- own slot where the probe did not send it: coalesce with j.leased_slot).
            CROSS JOIN LATERAL (
                SELECT CASE WHEN r.refused IS NULL THEN b.request_timestamp ELSE b.slot END AS checked_at OFFSET 0
            ) t
            CROSS JOIN LATERAL (
                SELECT CASE WHEN r.refused IS NOT NULL THEN 'failed'
                            ELSE webmon.check_outcome(m.expected_status, b.http_status_code, b.regex_matched, b.error_kind,
                                                      b.response_time_ms, m.degraded_after_ms)
                       END AS outcome
                OFFSET 0
            ) o
              OFFSET 0) s
        -- That row (a TID scan: the only way to read jobs here, so the results drive the
        -- update), checked again as it is when it is updated: a row whose lease another batch
        -- with the same results, or the lease sweep, ended meanwhile is left alone. (Where
        -- PostgreSQL also checks the tuple id again, so is a row a monitor's edit changed
        -- meanwhile: its lease then ends as leases do, and the slot is checked again.)
        WHERE j.ctid = s.tid
          AND j.leased_by = completer
          AND CASE WHEN s.slot IS NOT NULL THEN j.leased_slot = s.slot
                   ELSE s.request_timestamp >= j.leased_slot - interval '50 milliseconds' END
        RETURNING j.monitor_id, j.leased_slot AS leased, coalesce(nullif(j.region, ''), completer_region) AS from_region,
                  s.request_timestamp, s.response_time_ms, s.http_status_code, s.regex_matched,
                  s.page_content, s.error_kind, s.error, s.refused, s.outcome, j.verdict AS new_verdict,
                  j.verdict_since IS NOT DISTINCT FROM
                      coalesce(s.checked_at, j.leased_slot) AS verdict_changed,
                  coalesce(s.checked_at, j.leased_slot) AS checked_at
    ), metric_rows AS (
        INSERT INTO webmon.metrics (request_timestamp, monitor_id, response_time_ms, http_status_code,
                                    probe_id, regex_matched, page_content, region)
        SELECT d.request_timestamp, d.monitor_id, d.response_time_ms, d.http_status_code,
               completer, d.regex_matched, left(d.page_content, 1000), d.from_region
        FROM done d
        WHERE d.error_kind IS NULL AND d.refused IS NULL
    ), error_rows AS (
        INSERT INTO webmon.errors (request_timestamp, monitor_id, error_kind, error, probe_id, region)
        SELECT d.checked_at, d.monitor_id,
               CASE WHEN d.refused IS NULL THEN d.error_kind ELSE 'other' END,
               left(coalesce(d.refused, d.error, ''), 1000), completer, d.from_region
        FROM done d
        WHERE d.error_kind IS NOT NULL OR d.refused IS NOT NULL
    )
    -- The monitors whose incidents may change: a region's verdict became down or degraded,
    -- or changed while the monitor has an open incident, or a region that is down failed
    -- again (its open incident counts it). A first verdict of up changes nothing.
    SELECT (SELECT count(*) FROM done), x.ids, x.ats, x.failures, x.last_failures
    INTO accepted, changed_monitors, changed_at, changed_failures, changed_last_failures
    FROM (SELECT array_agg(t.monitor_id ORDER BY t.monitor_id) AS ids, array_agg(t.at ORDER BY t.monitor_id) AS ats,
                 array_agg(t.failures ORDER BY t.monitor_id) AS failures,
                 array_agg(t.last_failure ORDER BY t.monitor_id) AS last_failures
          FROM (SELECT d.monitor_id, max(d.checked_at) AS at,
                       count(*) FILTER (WHERE d.outcome = 'failed' AND d.new_verdict = 'down')::int AS failures,
                       max(d.checked_at) FILTER (WHERE d.outcome = 'failed') AS last_failure
                FROM done d
                WHERE (d.verdict_changed
                       AND (d.new_verdict IN ('down', 'degraded')
                            OR EXISTS (SELECT 1 FROM webmon.incidents i
                                       WHERE i.monitor_id = d.monitor_id AND i.resolved_at IS NULL)))
                   OR (d.outcome = 'failed' AND d.new_verdict = 'down')
                GROUP BY d.monitor_id) t) x;
    IF changed_monitors IS NOT NULL THEN
        -- The results are stored whatever happens to their incidents (a lock table full, a
        -- bug): a batch refused here would be retried for ever. A WARNING, and the next
        -- change of these monitors evaluates them again.
        BEGIN
            PERFORM webmon.update_incidents(changed_monitors, changed_at, changed_failures, changed_last_failures);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'pg_webmon: incidents of % monitors not updated: % (%)',
                cardinality(changed_monitors), SQLERRM, SQLSTATE;
        END;
    END IF;
    RETURN accepted;
END
$$;
COMMENT ON FUNCTION webmon.complete_checks(text, bigint[], timestamptz[], timestamptz[], real[], smallint[], boolean[], text[], text[], text[]) IS
    'pg_webmon: store one batch of results (parallel arrays, one element per check: its job id and the slot claim_checks gave; error_kinds NULL means a response) in one transaction. Only checks this probe still leases for that slot are stored, each once; a result with an impossible timestamp, status or response time, or an unknown error kind, is stored as an other error at its slot. Returns how many.';

CREATE OR REPLACE FUNCTION webmon.record_unclaimed_checks(unclaimed_timeout interval DEFAULT '2 minutes',
                                               max_rows int DEFAULT 100000)
RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET enable_seqscan = off SET jit = off AS $$
DECLARE
    recorded int := 0;
    found_here int;
    r text;
BEGIN
    -- A check no probe claimed in time (no live probe in its region, or all busy) is recorded
    -- as a `no_probe` error: the user sees it, and the job moves on to its next slot. The
    -- time counts from the slot, or from when it came back to the queue. Each region's due
    -- range of jobs_due_idx, oldest first.
    FOR r IN SELECT webmon.queued_regions() LOOP
        WITH unclaimed AS (
            SELECT c.ctid AS tid, c.monitor_id, c.scheduled_at
            FROM webmon.jobs c
            WHERE c.region = r
              AND c.scheduled_at < now() - unclaimed_timeout
              AND c.leased_by IS NULL
              AND coalesce(c.lease_expires_at, '-infinity') < now() - unclaimed_timeout
            ORDER BY c.scheduled_at
            LIMIT max_rows
            FOR UPDATE SKIP LOCKED
        ), moved AS (
            UPDATE webmon.jobs j
            SET scheduled_at = webmon.slot_after(j.grid_start, j.check_interval, now()),
                requeued = false, attempts = 0,
                -- Nobody checks this region: its verdict is unknown, not the last one seen.
                verdict = NULL, failed_run = 0, good_run = 0, slow_run = 0,
                failing_since = NULL, failing_cause = NULL,
                -- The result stored below (unless the job has a newer one).
                last_checked_at = greatest(j.last_checked_at, u.scheduled_at),
                last_status_code = CASE WHEN j.last_checked_at > u.scheduled_at THEN j.last_status_code END,
                last_response_time_ms = CASE WHEN j.last_checked_at > u.scheduled_at THEN j.last_response_time_ms END,
                last_regex_matched = CASE WHEN j.last_checked_at > u.scheduled_at THEN j.last_regex_matched END,
                last_error_kind = CASE WHEN j.last_checked_at > u.scheduled_at THEN j.last_error_kind ELSE 'no_probe' END,
                last_error = CASE WHEN j.last_checked_at > u.scheduled_at THEN j.last_error ELSE u.message END,
                last_region = CASE WHEN j.last_checked_at > u.scheduled_at THEN j.last_region ELSE nullif(r, '') END
            -- The rows locked above, by tuple id (a TID scan per row, never a join over the queue).
            FROM (SELECT x.*,
                         CASE WHEN r = ''
                              THEN format('no probe claimed this check within %s', unclaimed_timeout)
                              ELSE format('no probe of region %s claimed this check within %s', r, unclaimed_timeout)
                         END AS message
                  FROM unclaimed x) u
            WHERE j.ctid = u.tid
            RETURNING u.monitor_id, u.scheduled_at, u.message
        )
        INSERT INTO webmon.errors (request_timestamp, monitor_id, error_kind, error, region)
        SELECT scheduled_at, monitor_id, 'no_probe', message, nullif(r, '')
        FROM moved;
        GET DIAGNOSTICS found_here = ROW_COUNT;
        recorded := recorded + found_here;
    END LOOP;
    RETURN recorded;
END
$$;
COMMENT ON FUNCTION webmon.record_unclaimed_checks(interval, int) IS
    'pg_webmon: record due checks that no probe claimed within unclaimed_timeout (from their slot, or from when they came back to the queue) as no_probe errors; each job moves on to its next slot. At most max_rows per region. Returns how many.';

CREATE OR REPLACE FUNCTION webmon.requeue_expired_leases(max_attempts int DEFAULT 3, max_rows int DEFAULT 100000)
RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    requeued int;
BEGIN
    -- Leases that ended: back to the queue for the same slot, or recorded as lost after
    -- max_attempts leases. Reads the whole table (the scheduler calls it every few seconds):
    -- an index on lease_expires_at would cost every claim an index entry instead.
    WITH expired AS (
        SELECT ctid AS tid, monitor_id, region, leased_slot, attempts, leased_by
        FROM webmon.jobs
        WHERE leased_by IS NOT NULL AND lease_expires_at < now()
        LIMIT max_rows
        FOR UPDATE SKIP LOCKED
    ), gave_up AS (
        UPDATE webmon.jobs j SET leased_by = NULL, attempts = 0, requeued = false,
            -- Nobody reported this region's checks: its verdict is unknown, not the last one.
            verdict = NULL, failed_run = 0, good_run = 0, slow_run = 0,
            failing_since = NULL, failing_cause = NULL,
            -- The result stored below (unless the job has a newer one).
            last_checked_at = greatest(j.last_checked_at, e.leased_slot),
            last_status_code = CASE WHEN j.last_checked_at > e.leased_slot THEN j.last_status_code END,
            last_response_time_ms = CASE WHEN j.last_checked_at > e.leased_slot THEN j.last_response_time_ms END,
            last_regex_matched = CASE WHEN j.last_checked_at > e.leased_slot THEN j.last_regex_matched END,
            last_error_kind = CASE WHEN j.last_checked_at > e.leased_slot THEN j.last_error_kind ELSE 'lost' END,
            last_error = CASE WHEN j.last_checked_at > e.leased_slot THEN j.last_error ELSE e.message END,
            last_region = CASE WHEN j.last_checked_at > e.leased_slot THEN j.last_region ELSE nullif(e.region, '') END
        FROM (SELECT x.*, format('no result after %s leases (last probe id %s)', x.attempts, x.leased_by) AS message
              FROM expired x) e
        WHERE j.ctid = e.tid AND e.attempts >= max_attempts
        RETURNING e.*
    ), lost AS (
        INSERT INTO webmon.errors (request_timestamp, monitor_id, error_kind, error, probe_id, region)
        SELECT leased_slot, monitor_id, 'lost', message, leased_by, nullif(region, '')
        FROM gave_up
    ), back AS (
        UPDATE webmon.jobs j
        SET leased_by = NULL, requeued = true, scheduled_at = e.leased_slot, lease_expires_at = now()
        FROM expired e
        WHERE j.ctid = e.tid AND e.attempts < max_attempts
        RETURNING j.monitor_id
    )
    SELECT count(*) INTO requeued FROM back;
    IF requeued > 0 THEN
        PERFORM pg_notify('webmon_jobs', 'requeued');
    END IF;
    RETURN requeued;
END
$$;
COMMENT ON FUNCTION webmon.requeue_expired_leases(int, int) IS
    'pg_webmon: put checks whose lease ended back in the queue for the same slot, and after max_attempts leases record them in webmon.errors as lost. At most max_rows. Returns the number requeued.';

CREATE FUNCTION webmon.last_result(monitor bigint, after timestamptz, from_region text DEFAULT NULL)
RETURNS TABLE (request_timestamp timestamptz, http_status_code smallint, response_time_ms real,
               regex_matched boolean, error_kind text, error text, region text)
-- SECURITY DEFINER: the views call it as their reader (a probe role reads monitor_status and
-- no table).
LANGUAGE sql STABLE ROWS 1 SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT x.* FROM (
        (SELECT mt.request_timestamp, mt.http_status_code, mt.response_time_ms, mt.regex_matched,
                NULL::text AS error_kind, NULL::text AS error, mt.region
         FROM webmon.metrics mt
         WHERE mt.monitor_id = monitor AND mt.request_timestamp > after
           AND (from_region IS NULL OR mt.region = from_region)
         ORDER BY mt.request_timestamp DESC LIMIT 1)
        UNION ALL
        (SELECT e.request_timestamp, NULL::smallint, NULL::real, NULL::boolean, e.error_kind, e.error, e.region
         FROM webmon.errors e
         WHERE e.monitor_id = monitor AND e.request_timestamp > after
           AND (from_region IS NULL OR e.region = from_region)
         ORDER BY e.request_timestamp DESC LIMIT 1)
    ) x
    ORDER BY x.request_timestamp DESC
    LIMIT 1
$$;
COMMENT ON FUNCTION webmon.last_result(bigint, timestamptz, text) IS
    'pg_webmon: the newest stored result of a monitor after a time (from one region, or any when from_region is NULL); the status views read it for monitors whose jobs keep no last result.';

CREATE OR REPLACE VIEW webmon.region_status AS
SELECT m.id AS monitor_id,
       r.region,
       live.live,
       last.request_timestamp AS last_checked_at,
       -- The slot of that result on the job's grid (checks start at their slot; 50 ms for
       -- the probe's mapping of the database's clock).
       webmon.slot_at(j.grid_start, j.check_interval, last.request_timestamp + interval '50 milliseconds') AS last_slot,
       CASE
           WHEN NOT live.live THEN 'unmonitored'
           WHEN verdict.up THEN 'up'
           WHEN NOT verdict.up THEN 'down'
           WHEN last.error_kind IS NOT NULL THEN 'unmonitored'
           ELSE 'unknown'
       END AS state,
       verdict.up,
       last.http_status_code AS last_status_code,
       last.response_time_ms AS last_response_time_ms,
       last.error_kind AS last_error_kind,
       last.error AS last_error,
       j.scheduled_at AS next_check_at
FROM webmon.monitors m
-- (NULL or empty names, in rows stored before names were checked, are no region.)
CROSS JOIN LATERAL (SELECT DISTINCT u.region FROM unnest(m.regions) AS u(region)
                    WHERE u.region IS NOT NULL AND u.region <> '') r
LEFT JOIN webmon.jobs j ON j.monitor_id = m.id AND j.region = r.region
CROSS JOIN LATERAL (
    SELECT EXISTS (SELECT 1 FROM webmon.probes p
                   WHERE p.region = r.region AND webmon.probe_is_live(p.last_seen_at)) AS live
) live
-- Ten intervals, at least an hour, at most 366 days (computed in seconds: a stored interval
-- out of range must not make the view fail for every monitor).
CROSS JOIN LATERAL (
    SELECT make_interval(secs => least(greatest(10 * extract(epoch FROM m.check_interval), 3600), 31622400)::float8) AS span
) lookback
LEFT JOIN LATERAL (
    -- The newest result from this region in the last ten intervals (at least an hour): older
    -- ones say nothing about now. Its job keeps it; only without one (a monitor paused, or
    -- not checked since an update from a release before 0.8.0) is it looked for among the
    -- results.
    SELECT j.last_checked_at AS request_timestamp, j.last_status_code AS http_status_code,
           j.last_response_time_ms AS response_time_ms, j.last_regex_matched AS regex_matched,
           j.last_error_kind AS error_kind, j.last_error AS error
    WHERE j.last_checked_at > now() - lookback.span
    UNION ALL
    SELECT f.request_timestamp, f.http_status_code, f.response_time_ms, f.regex_matched, f.error_kind, f.error
    FROM webmon.last_result(m.id, now() - lookback.span, r.region) f
    WHERE j.last_checked_at IS NULL
) last ON true
CROSS JOIN LATERAL (
    SELECT webmon.result_is_up(m.expected_status, last.http_status_code, last.regex_matched, last.error_kind) AS up
) verdict
WHERE m.regions IS NOT NULL;
COMMENT ON VIEW webmon.region_status IS
    'pg_webmon: for each monitor with regions, each region''s state: up or down (its last result in the last ten intervals), unmonitored (no live probe in the region, or nobody checked its last slot), unknown (no recent result); last_slot is the slot that result belongs to.';

CREATE OR REPLACE VIEW webmon.monitor_status AS
SELECT m.id AS monitor_id,
       m.name,
       m.url,
       m.enabled,
       last.request_timestamp AS last_checked_at,
       CASE
           WHEN m.regions IS NULL
           THEN webmon.result_is_up(m.expected_status, last.http_status_code, last.regex_matched, last.error_kind)
           -- From several regions: down when at least down_quorum live regions failed in the
           -- newest slot any live region reported; up when fewer did and at least one saw it
           -- up in that slot; unknown otherwise (a region without a live probe never counts).
           WHEN quorum.failing >= coalesce(m.down_quorum, quorum.regions / 2 + 1) THEN false
           WHEN quorum.passing > 0 THEN true
       END AS up,
       last.http_status_code AS last_status_code,
       last.response_time_ms AS last_response_time_ms,
       last.error_kind AS last_error_kind,
       last.error AS last_error,
       jobs.next_check_at,
       last.region AS last_region,
       quorum.states AS region_states,
       CASE WHEN m.regions IS NOT NULL THEN coalesce(m.down_quorum, quorum.regions / 2 + 1) END AS down_quorum,
       -- From the open incident and the regions' verdicts (webmon.jobs), kept as results
       -- come in: paused, maintenance (a window covers it now), down, degraded, pending (a
       -- quorum of regions failing, below down_after), up (a region says so), or unknown.
       CASE
           WHEN NOT m.enabled THEN 'paused'
           WHEN maintenance.covering IS NOT NULL THEN 'maintenance'
           WHEN open_incident.kind IS NOT NULL THEN open_incident.kind
           WHEN health.pending THEN 'pending'
           WHEN health.known THEN 'up'
           ELSE 'unknown'
       END AS state,
       CASE
           WHEN NOT m.enabled THEN NULL
           WHEN maintenance.covering IS NOT NULL THEN lower(maintenance.covering)
           WHEN open_incident.kind IS NOT NULL THEN open_incident.started_at
           WHEN health.pending THEN health.failing_since
           WHEN health.known THEN coalesce(health.up_since, m.created_at)
       END AS state_since
FROM webmon.monitors m
-- Its jobs, in one pass over the queue (joined, not looked up per monitor): the next slot;
-- from the regions' verdicts, whether any region is up and whether a quorum is failing
-- (pending); and the newest last result they keep.
LEFT JOIN (
    SELECT DISTINCT ON (j.monitor_id) j.monitor_id,
           min(j.scheduled_at) OVER w AS next_check_at, count(*) OVER w AS regions,
           count(*) FILTER (WHERE j.verdict = 'down' OR j.failed_run > 0) OVER w AS failing,
           min(j.failing_since) OVER w AS failing_since, bool_or(j.verdict = 'up') OVER w AS known,
           max(j.verdict_since) FILTER (WHERE j.verdict = 'up') OVER w AS up_since,
           j.last_checked_at, j.last_status_code, j.last_response_time_ms, j.last_regex_matched,
           j.last_error_kind, j.last_error, j.last_region
    FROM webmon.jobs j
    WINDOW w AS (PARTITION BY j.monitor_id)
    ORDER BY j.monitor_id, j.last_checked_at DESC NULLS LAST
) jobs ON jobs.monitor_id = m.id
-- Only for monitors whose jobs keep no last result (paused, or not checked since an update
-- from a release before 0.8.0): their newest result of the last day, or of their last ten
-- intervals, from the results.
LEFT JOIN LATERAL (
    SELECT f.*
    FROM webmon.last_result(
        m.id, now() - make_interval(secs => least(greatest(10 * extract(epoch FROM m.check_interval), 86400), 31622400)::float8)) f
    WHERE jobs.last_checked_at IS NULL
    -- Kept a subquery, so that the test comes before the call (flattened, it would follow it).
    OFFSET 0
) looked_up ON true
CROSS JOIN LATERAL (
    SELECT CASE WHEN jobs.last_checked_at IS NOT NULL THEN jobs.last_checked_at ELSE looked_up.request_timestamp END AS request_timestamp,
           CASE WHEN jobs.last_checked_at IS NOT NULL THEN jobs.last_status_code ELSE looked_up.http_status_code END AS http_status_code,
           CASE WHEN jobs.last_checked_at IS NOT NULL THEN jobs.last_response_time_ms ELSE looked_up.response_time_ms END AS response_time_ms,
           CASE WHEN jobs.last_checked_at IS NOT NULL THEN jobs.last_regex_matched ELSE looked_up.regex_matched END AS regex_matched,
           CASE WHEN jobs.last_checked_at IS NOT NULL THEN jobs.last_error_kind ELSE looked_up.error_kind END AS error_kind,
           CASE WHEN jobs.last_checked_at IS NOT NULL THEN jobs.last_error ELSE looked_up.error END AS error,
           CASE WHEN jobs.last_checked_at IS NOT NULL THEN jobs.last_region ELSE looked_up.region END AS region
) last
-- With regions: each region's state, and how many failed or passed in the newest slot a live
-- region reported. Joined, not looked up per monitor (for all monitors, one pass over those
-- with regions).
LEFT JOIN (
    SELECT s.monitor_id, count(*) AS regions,
           count(*) FILTER (WHERE s.state = 'down' AND s.last_slot = s.newest) AS failing,
           count(*) FILTER (WHERE s.state = 'up' AND s.last_slot = s.newest) AS passing,
           jsonb_object_agg(s.region, s.state) AS states
    FROM (SELECT rs.*, max(rs.last_slot) FILTER (WHERE rs.state IN ('up', 'down'))
                           OVER (PARTITION BY rs.monitor_id) AS newest
          FROM webmon.region_status rs) s
    GROUP BY s.monitor_id
) quorum ON quorum.monitor_id = m.id
LEFT JOIN (
    SELECT DISTINCT ON (i.monitor_id) i.monitor_id, i.kind, i.started_at FROM webmon.incidents i
    WHERE i.resolved_at IS NULL AND i.kind IN ('down', 'degraded')
    ORDER BY i.monitor_id, i.kind = 'down' DESC
) open_incident ON open_incident.monitor_id = m.id
CROSS JOIN LATERAL (
    -- Looked up only when some window exists (the uncorrelated test runs once per query).
    SELECT CASE WHEN (SELECT EXISTS (SELECT 1 FROM webmon.maintenance))
                THEN webmon.maintenance_window(m.id, now()) END AS covering
) maintenance
CROSS JOIN LATERAL (
    -- Pending: a quorum of regions failing now (below down_after) or down.
    SELECT jobs.failing > 0 AND jobs.failing >= coalesce(m.down_quorum, jobs.regions / 2 + 1) AS pending,
           jobs.failing_since, coalesce(jobs.known, false) AS known, jobs.up_since
) health;
COMMENT ON VIEW webmon.monitor_status IS
    'pg_webmon: each monitor''s last result (when, status code, response time, error, region) and whether it is up. Up = got a response, status in expected_status, regex (if any) matched; NULL when nobody checked it (no_probe, lost). With regions: down when down_quorum live regions failed in the newest slot reported, with each region''s state in region_states; a region without a live probe is unmonitored, never down. state (paused, maintenance, down, degraded, pending, up, unknown) and state_since follow the monitor''s maintenance windows, incidents and down_after, up_after and degraded_after_ms.';

-- New functions of the library.
CREATE  FUNCTION "results_retention"() RETURNS interval /* Interval */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'results_retention_wrapper';
CREATE  FUNCTION "latency_add"(
	"state" internal, /* Internal */
	"response_time_ms" real /* Option < f32 > */
) RETURNS internal /* Internal */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'latency_add_wrapper';
CREATE  FUNCTION "latency_merge_add"(
	"state" internal, /* Internal */
	"histogram_bytes" bytea /* Option < & [u8] > */
) RETURNS internal /* Internal */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'latency_merge_add_wrapper';
CREATE  FUNCTION "latency_combine"(
	"state" internal, /* Internal */
	"other" internal /* Internal */
) RETURNS internal /* Internal */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'latency_combine_wrapper';
CREATE  FUNCTION "latency_final"(
	"state" internal /* Internal */
) RETURNS bytea /* :: std :: option :: Option < Vec < u8 > > */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'latency_final_wrapper';
CREATE  FUNCTION "latency_serialize"(
	"state" internal /* Internal */
) RETURNS bytea /* Vec < u8 > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'latency_serialize_wrapper';
CREATE  FUNCTION "latency_deserialize"(
	"bytes" bytea, /* & [u8] */
	"_unused" internal /* Internal */
) RETURNS internal /* Internal */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'latency_deserialize_wrapper';
CREATE  FUNCTION "latency_percentile"(
	"histogram" bytea, /* & [u8] */
	"fraction" double precision /* f64 */
) RETURNS real /* Option < f32 > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'latency_percentile_wrapper';
CREATE  FUNCTION "latency_buckets"(
	"histogram" bytea /* & [u8] */
) RETURNS TABLE (
	"lower_ms" double precision,  /* f64 */
	"upper_ms" double precision,  /* f64 */
	"count" bigint  /* i64 */
)
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'latency_buckets_wrapper';
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

-- Partitions of rollups too: the partition key is looked up.
CREATE OR REPLACE FUNCTION webmon.create_partition(parent regclass, range_start timestamptz, range_end timestamptz)
RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parent_name text := (SELECT relname FROM pg_class WHERE oid = parent);
    -- The partition key: request_timestamp of results, hour or day of rollups.
    key_column name := (SELECT a.attname FROM pg_partitioned_table pt
                        JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
                        WHERE pt.partrelid = parent);
    partition_name text := parent_name || '_p'
        || to_char(range_start AT TIME ZONE 'UTC', 'YYYYMMDD')
        || CASE WHEN (range_start AT TIME ZONE 'UTC')::time = '00:00' THEN ''
                ELSE to_char(range_start AT TIME ZONE 'UTC', '"T"HH24MI') END;
BEGIN
    EXECUTE format('CREATE TABLE webmon.%I (LIKE webmon.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   partition_name, parent_name);
    -- Rows that landed in the default partition for this range move into the new one,
    -- so attaching it never fails and no row is lost.
    IF to_regclass(format('webmon.%I', parent_name || '_default')) IS NOT NULL THEN
        EXECUTE format('WITH moved AS (DELETE FROM webmon.%I WHERE %I >= $1 AND %I < $2 RETURNING *)
                        INSERT INTO webmon.%I SELECT * FROM moved',
                       parent_name || '_default', key_column, key_column, partition_name)
            USING range_start, range_end;
    END IF;
    EXECUTE format('CREATE INDEX %I ON webmon.%I (monitor_id, %I)',
                   partition_name || '_monitor_time_idx', partition_name, key_column);
    -- Rollups are also read by time for every monitor (the uptime functions), and written an
    -- hour or a day at a time, in time order: a BRIN index finds a span in a few pages.
    IF key_column <> 'request_timestamp' THEN
        EXECUTE format('CREATE INDEX %I ON webmon.%I USING brin (%I)',
                       partition_name || '_time_idx', partition_name, key_column);
    END IF;
    EXECUTE format('ALTER TABLE webmon.%I ATTACH PARTITION webmon.%I FOR VALUES FROM (%L) TO (%L)',
                   parent_name, partition_name, range_start, range_end);
    -- A row left by a partition dropped by hand is replaced, not a key violation.
    INSERT INTO webmon.partitions AS p (parent, partition, range_start, range_end)
    VALUES (parent, partition_name, range_start, range_end)
    ON CONFLICT ON CONSTRAINT partitions_pkey DO UPDATE
        SET partition = EXCLUDED.partition, range_end = EXCLUDED.range_end;
    RETURN partition_name;
END
$$;
COMMENT ON FUNCTION webmon.create_partition(regclass, timestamptz, timestamptz) IS
    'pg_webmon: make one partition of webmon.metrics, webmon.errors or a rollups table with its (monitor_id, time) index, moving any rows of its range out of the default partition. Called by run_maintenance().';

CREATE OR REPLACE FUNCTION webmon.purge_default_partition(parent regclass, older_than timestamptz,
                                               max_rows int DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    purged bigint;
BEGIN
    -- In batches: a default partition that filled up (a database made by 0.1.0 after its
    -- partitions stopped being made) is purged a batch per call, never in one long statement.
    EXECUTE format('DELETE FROM webmon.%1$I WHERE ctid = ANY (ARRAY(
                        SELECT ctid FROM webmon.%1$I WHERE %2$I < $1 LIMIT $2))',
                   (SELECT relname FROM pg_class WHERE oid = parent) || '_default',
                   (SELECT a.attname FROM pg_partitioned_table pt
                    JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
                    WHERE pt.partrelid = parent))
        USING older_than, max_rows;
    GET DIAGNOSTICS purged = ROW_COUNT;
    RETURN purged;
END
$$;
COMMENT ON FUNCTION webmon.purge_default_partition(regclass, timestamptz, int) IS
    'pg_webmon: delete at most max_rows rows past retention from the default partition; returns how many (call again while it returns max_rows). Called by run_maintenance().';

-- Readers read rollups and the new uptime functions.
CREATE OR REPLACE FUNCTION webmon.grant_reader(role_name name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA webmon TO %I', role_name);
    -- Not headers and body: they can hold credentials (Authorization, API keys).
    EXECUTE format('GRANT SELECT (id, url, name, method, check_interval, timeout, regex, expected_status, '
                   'follow_redirects, regions, down_quorum, enabled, next_check_at, created_at, down_after, up_after, '
                   'degraded_after_ms, remind_every, channels) ON webmon.monitors TO %I', role_name);
    EXECUTE format('GRANT SELECT ON webmon.metrics, webmon.errors, webmon.probes, webmon.jobs, webmon.partitions, '
                   'webmon.monitor_status, webmon.region_status, webmon.regions, webmon.incidents, '
                   'webmon.notifications, webmon.maintenance, webmon.rollups_hourly, webmon.rollups_daily, '
                   'webmon.rollup_state TO %I', role_name);
    -- Not settings: webhook URLs and SMTP passwords are credentials.
    EXECUTE format('GRANT SELECT (name, kind, is_default, created_at) ON webmon.channels TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION webmon.uptime(interval, bigint[]), webmon.uptime_between(timestamptz, timestamptz, bigint[]), '
                   'webmon.sla(date, bigint[]) TO %I', role_name);
END
$$;
COMMENT ON FUNCTION webmon.grant_reader(name) IS
    'pg_webmon: grant a role read access to monitors (without headers and body, which can hold credentials), results, incidents, notifications, maintenance windows, channels (without their settings), probes, the queue, rollups, webmon.monitor_status, webmon.region_status, webmon.regions, webmon.uptime(), webmon.uptime_between() and webmon.sla(); nothing it can change.';

-- sql/rollups.sql of this release.
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

-- The uptime functions are for the roles webmon.grant_reader() grants them to. The update
-- grants nothing (such grants would be recorded as the extension's own and left out of
-- dumps): it names the roles that read results and must be granted again.
DO $$
DECLARE
    roles text;
BEGIN
    SELECT string_agg(r.rolname, ', ' ORDER BY r.rolname) INTO roles
    FROM pg_catalog.pg_roles r
    WHERE NOT r.rolsuper
      AND has_table_privilege(r.oid, 'webmon.metrics', 'SELECT')
      AND NOT has_function_privilege(r.oid, 'webmon.uptime_between(timestamptz, timestamptz, bigint[])', 'EXECUTE');
    IF roles IS NOT NULL THEN
        RAISE WARNING 'pg_webmon: these roles read results but may not run webmon.uptime() until granted again: %', roles
            USING HINT = 'Run SELECT webmon.grant_reader(role) for each: it grants webmon.uptime(), webmon.uptime_between(), webmon.sla() and the rollups.';
    END IF;
END
$$;
