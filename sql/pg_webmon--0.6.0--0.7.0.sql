-- pg_webmon 0.6.0 → 0.7.0
--
-- A cheaper claim: job rows lose their id column and its index (a claim moves its row, so each
-- index cost it an entry); (monitor_id, region) is their key, and the job id a probe gets is
-- webmon.job_id(monitor_id, region), negative. Monitor ids must lie from 1 to 2^62 - 1 for
-- that. webmon.may_act_as is PL/pgSQL (its plans are kept). No stored row changes but the
-- queue's leases: checks in flight during the update are put back in the queue for their
-- slot (their probes' results, under the old ids, are not stored) and checked again at once.

-- Every table the update changes, first, in the order monitor_status reads them.
LOCK TABLE webmon.monitors, webmon.jobs IN ACCESS EXCLUSIVE MODE;

ALTER TABLE webmon.monitors
    ADD CONSTRAINT monitors_id_range CHECK (id BETWEEN 1 AND 4611686018427387903);


-- Asked by every claim and completion: PL/pgSQL keeps its plans.
CREATE OR REPLACE FUNCTION webmon.may_act_as(owner_role name) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN owner_role IS NULL
        OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = owner_role)
        OR (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = session_user)
        OR pg_catalog.pg_has_role(session_user, owner_role, 'USAGE');
END
$$;

-- Leases taken before the update name jobs by ids that no longer exist: their slots go back
-- to the queue at once, this lease not counted (as webmon.release_checks does).
UPDATE webmon.jobs
SET leased_by = NULL, requeued = true, scheduled_at = leased_slot, lease_expires_at = now(),
    attempts = greatest(attempts - 1, 0)
WHERE leased_by IS NOT NULL;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM webmon.jobs WHERE requeued) THEN
        PERFORM pg_notify('webmon_jobs', 'requeued');
    END IF;
END
$$;

ALTER TABLE webmon.jobs
    DROP CONSTRAINT jobs_pkey,
    DROP CONSTRAINT jobs_monitor_id_region_key,
    DROP COLUMN id,
    ADD PRIMARY KEY (monitor_id, region);


-- A probe that moves to another region hands back the leases of the old one (job ids
-- name the job of the probe's region).
CREATE OR REPLACE FUNCTION webmon.register_probe(probe text, region text DEFAULT NULL, version text DEFAULT NULL)
RETURNS smallint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    probe_id smallint;
    was_region text;
BEGIN
    IF probe IS NULL OR btrim(probe) = '' THEN
        RAISE EXCEPTION 'invalid probe name: it must not be empty' USING ERRCODE = '22023';
    END IF;
    -- A heartbeat is an UPDATE: INSERT … ON CONFLICT would draw an id from the sequence on
    -- every call, and the smallint ids ran out after ~91 hours of heartbeats.
    LOOP
        SELECT coalesce(p.region, '') INTO was_region FROM webmon.probes p WHERE p.name = probe;
        -- A probe name belongs to the login role that registered it first.
        UPDATE webmon.probes AS p
        SET region = register_probe.region,
            version = coalesce(register_probe.version, p.version),
            last_seen_at = now(),
            -- An unowned name (or one whose owner role is gone) becomes this role's.
            owner_role = CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = p.owner_role)
                              THEN p.owner_role ELSE session_user END
        WHERE p.name = probe AND webmon.may_act_as(p.owner_role)
        RETURNING p.id INTO probe_id;
        IF FOUND THEN
            -- Moved to another region: a job id names the job of the probe's region, so the
            -- checks it leased in the old one could never be completed. They go back to the
            -- queue now, this lease not counted (a scan of the queue, only on such a move).
            IF was_region IS DISTINCT FROM coalesce(register_probe.region, '') THEN
                UPDATE webmon.jobs j
                SET leased_by = NULL, requeued = true, scheduled_at = j.leased_slot, lease_expires_at = now(),
                    attempts = greatest(j.attempts - 1, 0)
                WHERE j.leased_by = probe_id AND j.region = was_region AND j.region <> '';
            END IF;
            RETURN probe_id;
        END IF;
        IF EXISTS (SELECT 1 FROM webmon.probes p WHERE p.name = probe) THEN
            RAISE EXCEPTION 'probe "%" belongs to another role', probe USING ERRCODE = '42501',
                HINT = 'Each probe registers under its own name; a superuser may act for any probe.';
        END IF;
        -- A new name takes over the id of a probe unseen for longer than results are kept
        -- (no stored result names it any more) and holding no lease, so ids are not used up
        -- by probes whose names change (containers named after their host); else it draws a
        -- new one. Only this path (a new name) pays for the exception block.
        BEGIN
            UPDATE webmon.probes AS p
            SET name = probe, region = register_probe.region, version = register_probe.version,
                started_at = now(), last_seen_at = now(), owner_role = session_user
            WHERE p.id = (SELECT s.id FROM webmon.probes s
                          WHERE s.last_seen_at < now() - webmon.probe_id_reuse_after()
                            AND NOT EXISTS (SELECT 1 FROM webmon.jobs j WHERE j.leased_by = s.id)
                          ORDER BY s.last_seen_at LIMIT 1 FOR UPDATE SKIP LOCKED)
            RETURNING p.id INTO probe_id;
            IF FOUND THEN
                RETURN probe_id;
            END IF;
            INSERT INTO webmon.probes AS p (name, region, version, owner_role)
            VALUES (probe, region, version, session_user)
            ON CONFLICT (name) DO NOTHING
            RETURNING p.id INTO probe_id;
            IF FOUND THEN
                RETURN probe_id;
            END IF;
        EXCEPTION WHEN unique_violation THEN
            NULL;
        END;
        -- Registered concurrently under the same name: update that row.
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION webmon.job_id(monitor_id bigint, region text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN -(monitor_id * 2 + CASE WHEN region = '' THEN 0 ELSE 1 END);
COMMENT ON FUNCTION webmon.job_id(bigint, text) IS
    'pg_webmon: the job id claim_checks gives a probe for a monitor''s job in a region ('''' or the probe''s own): -(2 × monitor id + 1 for a region, 0 for any).';
-- webmon.job_id read backwards: the monitor, and the region for the probe that holds the id.
CREATE OR REPLACE FUNCTION webmon.job_monitor(job_id bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN -(job_id / 2);
COMMENT ON FUNCTION webmon.job_monitor(bigint) IS
    'pg_webmon: the monitor a job id names (webmon.job_id read backwards); 0 or less for an id no claim gives.';
CREATE OR REPLACE FUNCTION webmon.job_region(job_id bigint, probe_region text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN job_id % 2 = 0 THEN '' ELSE probe_region END;
COMMENT ON FUNCTION webmon.job_region(bigint, text) IS
    'pg_webmon: the region a job id names for the probe that holds it: '''' or the probe''s own (webmon.job_id read backwards).';


-- The functions that named a job by its id.

CREATE OR REPLACE FUNCTION webmon.record_unclaimed_checks(unclaimed_timeout interval DEFAULT '2 minutes',
                                               max_rows int DEFAULT 100000)
RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET enable_seqscan = off AS $$
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
                failing_since = NULL, failing_cause = NULL
            -- The rows locked above, by tuple id (a TID scan per row, never a join over the queue).
            FROM unclaimed u WHERE j.ctid = u.tid
            RETURNING u.monitor_id, u.scheduled_at
        )
        INSERT INTO webmon.errors (request_timestamp, monitor_id, error_kind, error, region)
        SELECT scheduled_at, monitor_id, 'no_probe',
               CASE WHEN r = ''
                    THEN format('no probe claimed this check within %s', unclaimed_timeout)
                    ELSE format('no probe of region %s claimed this check within %s', r, unclaimed_timeout)
               END,
               nullif(r, '')
        FROM moved;
        GET DIAGNOSTICS found_here = ROW_COUNT;
        recorded := recorded + found_here;
    END LOOP;
    RETURN recorded;
END
$$;

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
            failing_since = NULL, failing_cause = NULL
        FROM expired e
        WHERE j.ctid = e.tid AND e.attempts >= max_attempts
        RETURNING e.*
    ), lost AS (
        INSERT INTO webmon.errors (request_timestamp, monitor_id, error_kind, error, probe_id, region)
        SELECT leased_slot, monitor_id, 'lost',
               format('no result after %s leases (last probe id %s)', attempts, leased_by), leased_by,
               nullif(region, '')
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

CREATE OR REPLACE FUNCTION webmon.claim_checks(probe text, max_jobs int, lease interval DEFAULT '1 minute',
                                    lookahead interval DEFAULT '1 second')
RETURNS TABLE (job_id bigint, monitor_id bigint, scheduled_at timestamptz, db_now timestamptz,
               attempt int, url text, method text, headers jsonb, body text, timeout_ms int,
               regex text, follow_redirects boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- The due jobs are read in slot order from the index and the scan stops at max_jobs: never a
-- bitmap scan of every due job and a sort (the planner's choice when it expects few rows; it
-- made each claim cost as much as the whole backlog).
SET enable_seqscan = off SET enable_bitmapscan = off AS $$
DECLARE
    claimer smallint := webmon.probe_id(probe);
    claimer_region text;
    -- From the library (calling it loads it), never from a session's placeholder setting.
    max_lease interval := webmon.max_lease();
    requested interval := lease;
    picked tid[] := '{}';
BEGIN
    -- A lease is bounded: an endless one would hold its checks forever (never checked, never
    -- recorded as lost), a negative one would burn attempts into false `lost` rows. Months
    -- are refused (interval comparison counts 30-day months and 360-day years, addition does
    -- not), and the rest is normalised to seconds before it is compared and used.
    IF lease IS NOT NULL AND (extract(year FROM lease) <> 0 OR extract(month FROM lease) <> 0) THEN
        lease := NULL;
    END IF;
    lease := make_interval(secs => extract(epoch FROM lease));
    IF lease IS NULL OR lease <= interval '0' OR lease > max_lease THEN
        RAISE EXCEPTION 'invalid lease %: it must be above 0, without months, and at most pg_webmon.max_lease (%)', requested, max_lease
            USING ERRCODE = '22023',
                  HINT = 'Lower the probe''s --lease-seconds, or raise pg_webmon.max_lease.';
    END IF;
    -- Nothing before the first partitions exist (the maintenance worker makes them at once):
    -- every result needs a place.
    IF max_jobs IS NULL OR max_jobs < 1
       OR to_regclass('webmon.metrics_default') IS NULL OR to_regclass('webmon.errors_default') IS NULL THEN
        RETURN;
    END IF;
    -- At most this many per call: a probe asks again when it has room.
    max_jobs := least(max_jobs, 10000);
    -- Read only: the heartbeat (register_probe) keeps last_seen_at, not every claim.
    SELECT nullif(region, '') INTO claimer_region FROM webmon.probes WHERE id = claimer;
    -- This probe's region first (only its probes can run those), then jobs any probe may run.
    -- Each reads the region's range of jobs_due_idx in slot order and stops at max_jobs; the
    -- update finds the locked rows by tuple id (a TID scan), so a long queue is never scanned.
    IF claimer_region IS NOT NULL THEN
        picked := ARRAY(
            SELECT c.ctid FROM webmon.jobs c
            WHERE c.region = claimer_region AND c.scheduled_at <= now() + lookahead
              AND c.leased_by IS NULL
            ORDER BY c.scheduled_at
            LIMIT max_jobs
            FOR UPDATE SKIP LOCKED);
    END IF;
    IF cardinality(picked) < max_jobs THEN
        picked := picked || ARRAY(
            SELECT c.ctid FROM webmon.jobs c
            WHERE c.region = '' AND c.scheduled_at <= now() + lookahead
              AND c.leased_by IS NULL
            ORDER BY c.scheduled_at
            LIMIT max_jobs - cardinality(picked)
            FOR UPDATE SKIP LOCKED);
    END IF;
    IF cardinality(picked) = 0 THEN
        RETURN;
    END IF;
    -- The slot: a requeued one as it is; else the job's slot, or, when it fell an interval or
    -- more behind, the latest slot of its grid not after now (skip, never a burst). The job
    -- moves on to the next slot of its grid after that and after now.
    RETURN QUERY
    WITH leased AS (
        UPDATE webmon.jobs j
        SET leased_slot = CASE WHEN j.requeued THEN j.scheduled_at
                               ELSE webmon.lease_slot(j.scheduled_at, j.grid_start, j.check_interval, now()) END,
            -- After the leased slot and after now: a check late by most of an interval (or a
            -- first check off the grid) is not followed by one at once.
            scheduled_at = webmon.slot_after(j.grid_start, j.check_interval,
                                             greatest(now(), CASE WHEN j.requeued THEN j.scheduled_at
                                                                  ELSE webmon.lease_slot(j.scheduled_at, j.grid_start, j.check_interval, now()) END)),
            leased_by = claimer,
            attempts = CASE WHEN j.requeued THEN j.attempts + 1 ELSE 1 END,
            requeued = false,
            lease_expires_at = greatest(j.scheduled_at, now()) + lease
        WHERE j.ctid = ANY (picked)
        RETURNING webmon.job_id(j.monitor_id, j.region) AS id, j.monitor_id, j.leased_slot, j.attempts
    )
    SELECT l.id, l.monitor_id, l.leased_slot, now(), l.attempts, m.url, m.method, m.headers,
           m.body, webmon.timeout_ms(m.timeout), m.regex, m.follow_redirects
    FROM leased l JOIN webmon.monitors m ON m.id = l.monitor_id
    ORDER BY l.leased_slot;
END
$$;

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
-- the whole queue for a hash or merge join.
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $$
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

CREATE OR REPLACE FUNCTION webmon.release_checks(probe text, job_ids bigint[]) RETURNS int
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- One lookup by key per job id, however many (never a join over the whole queue).
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off AS $$
DECLARE
    releaser smallint := webmon.probe_id(probe);
    releaser_region text;
    released int;
BEGIN
    SELECT nullif(region, '') INTO releaser_region FROM webmon.probes WHERE id = releaser;
    -- Not started: the same slot goes back to the queue at once, this lease not counted.
    UPDATE webmon.jobs j
    SET leased_by = NULL, requeued = true, scheduled_at = j.leased_slot, lease_expires_at = now(),
        attempts = greatest(j.attempts - 1, 0)
    FROM unnest(job_ids) AS k(job_id)
    -- The job each id names, if this probe leases it: a lookup by key per id, driven by the
    -- ids (a lateral subquery kept as one, as in complete_checks).
    CROSS JOIN LATERAL (
        SELECT jj.ctid AS tid
        FROM webmon.jobs jj
        WHERE jj.monitor_id = webmon.job_monitor(k.job_id)
          AND jj.region = webmon.job_region(k.job_id, releaser_region)
          AND jj.leased_by = releaser
        OFFSET 0
    ) x
    WHERE j.ctid = x.tid AND j.leased_by = releaser;
    GET DIAGNOSTICS released = ROW_COUNT;
    IF released > 0 THEN
        PERFORM pg_notify('webmon_jobs', 'released');
    END IF;
    RETURN released;
END
$$;

CREATE OR REPLACE FUNCTION webmon.update_incidents(monitor_ids bigint[], checked_at timestamptz[],
                                        failures int[], last_failures timestamptz[])
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
    h record;
    quorum bigint;
    wanted text;
    gone boolean;
    changed webmon.incidents;
BEGIN
    FOR t IN
        SELECT u.monitor_id, u.checked_at, u.failures, u.last_failure_at
        FROM unnest(monitor_ids, checked_at, failures, last_failures)
            AS u(monitor_id, checked_at, failures, last_failure_at)
        -- In the order of the lock keys: two ids with the same key never wait for each other
        -- in opposite orders.
        ORDER BY hashint8(u.monitor_id), u.monitor_id
    LOOP
        -- 'webm' as the lock class; the monitor id hashed into the second key.
        PERFORM pg_advisory_xact_lock(2003133037, hashint8(t.monitor_id));
        SELECT count(j.monitor_id) AS regions,
               count(*) FILTER (WHERE j.verdict = 'down') AS down,
               count(*) FILTER (WHERE j.verdict IN ('down', 'degraded')) AS troubled,
               count(*) FILTER (WHERE j.verdict = 'up') AS fine,
               min(j.failing_since) FILTER (WHERE j.verdict = 'down') AS first_failure,
               (array_agg(j.failing_cause ORDER BY j.failing_since) FILTER (WHERE j.verdict = 'down'))[1] AS first_cause,
               coalesce(sum(j.failed_run) FILTER (WHERE j.verdict = 'down'), 0) AS failed_run,
               m.down_quorum
        INTO h
        FROM webmon.monitors m LEFT JOIN webmon.jobs j ON j.monitor_id = m.id
        WHERE m.id = t.monitor_id
        GROUP BY m.id;
        -- A monitor deleted or paused (no job rows) has nothing open: what was is resolved.
        quorum := CASE WHEN FOUND THEN coalesce(h.down_quorum, h.regions / 2 + 1) END;
        gone := quorum IS NULL OR h.regions = 0;
        IF NOT gone AND webmon.maintenance_window(t.monitor_id, t.checked_at) IS NOT NULL THEN
            CONTINUE;
        END IF;
        wanted := CASE
                      WHEN gone THEN NULL
                      WHEN h.down >= quorum THEN 'down'
                      WHEN h.troubled >= quorum THEN 'degraded'
                  END;
        -- What no longer holds is resolved by this check (degraded also when it went down),
        -- but only on evidence: with nothing wanted, enough regions must say up that the
        -- others could not make a quorum. A region nobody checks (its verdict cleared by a
        -- lost or unclaimed check: the probes are gone) never resolves an incident.
        -- Channels are not told when the monitor was paused or deleted (nothing recovered),
        -- nor of a degraded incident that ends because the site went down (they are told
        -- of that).
        FOR changed IN
            UPDATE webmon.incidents i SET resolved_at = greatest(t.checked_at, i.started_at)
            WHERE i.monitor_id = t.monitor_id AND i.resolved_at IS NULL
              AND i.kind IN ('down', 'degraded') AND i.kind IS DISTINCT FROM wanted
              AND (gone OR wanted IS NOT NULL OR h.fine > h.regions - quorum)
            RETURNING i.*
        LOOP
            PERFORM webmon.notify_event('recovered', changed,
                                        NOT gone AND NOT (changed.kind = 'degraded' AND wanted = 'down'));
        END LOOP;
        IF wanted IS NULL THEN
            CONTINUE;
        END IF;
        PERFORM 1 FROM webmon.incidents i
        WHERE i.monitor_id = t.monitor_id AND i.kind = wanted AND i.resolved_at IS NULL;
        IF FOUND THEN
            -- Counted only when there is something to count (review_incidents passes none).
            UPDATE webmon.incidents i
            SET failed_checks = least(i.failed_checks::bigint + t.failures, 2147483647)::int,
                last_failure_at = greatest(i.last_failure_at, t.last_failure_at)
            WHERE i.monitor_id = t.monitor_id AND i.kind = wanted AND i.resolved_at IS NULL
              AND (t.failures > 0 OR t.last_failure_at > i.last_failure_at);
        ELSE
            INSERT INTO webmon.incidents (monitor_id, kind, started_at, cause, failed_checks, last_failure_at,
                                          reminded_at)
            VALUES (t.monitor_id, wanted,
                    CASE WHEN wanted = 'down' THEN coalesce(h.first_failure, t.checked_at) ELSE t.checked_at END,
                    CASE WHEN wanted = 'down' THEN h.first_cause ELSE 'slower than degraded_after_ms' END,
                    CASE WHEN wanted = 'down' THEN h.failed_run ELSE 0 END,
                    t.last_failure_at, now())
            RETURNING * INTO changed;
            PERFORM webmon.notify_event(wanted, changed, true);
        END IF;
    END LOOP;
END
$$;
