-- pg_webmon's check queue: one persistent row per monitor and region in webmon.jobs, leased
-- and completed in place. Loaded by CREATE EXTENSION after schema.sql. The 0.3.0 → 0.4.0
-- update runs this file's text as it was in 0.4.0 (functions that existed before are
-- CREATE OR REPLACE, so that their grants stay).
--
-- A check costs two row versions of its job (the claim, which moves the row to its next slot,
-- and the completion, a HOT update) and its result row. Nothing is queued ahead: a job is due
-- when its scheduled_at has come, and the probe's claim is what advances it.

CREATE TABLE webmon.jobs (
    monitor_id       bigint      NOT NULL,
    region           text        NOT NULL DEFAULT '',
    check_interval   interval    NOT NULL,
    grid_start       timestamptz NOT NULL,
    scheduled_at     timestamptz NOT NULL,
    leased_slot      timestamptz,
    leased_by        smallint,
    lease_expires_at timestamptz,
    attempts         int         NOT NULL DEFAULT 0,
    requeued         boolean     NOT NULL DEFAULT false,
    failed_run       int         NOT NULL DEFAULT 0,
    good_run         int         NOT NULL DEFAULT 0,
    slow_run         int         NOT NULL DEFAULT 0,
    verdict          text,
    verdict_since    timestamptz,
    failing_since    timestamptz,
    failing_cause    text,
    last_checked_at  timestamptz,
    last_status_code smallint,
    last_response_time_ms real,
    last_regex_matched boolean,
    last_error_kind  text,
    last_error       text,
    last_region      text,
    -- The key is what a probe's job id names (webmon.job_id): a row has no id of its own,
    -- which would cost every claim (it moves the row) one more index entry.
    PRIMARY KEY (monitor_id, region)
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);
-- Due jobs of one region in slot order (claims, unclaimed checks). A claim moves its row to
-- the next slot, so the head of each region's range holds only what is due and unclaimed.
-- The only index besides the key: a claim writes an entry in each (it moves the row), and
-- a completion changes no indexed column, so it is a HOT update. Ended leases are found by
-- reading the table every few seconds instead (requeue_expired_leases).
CREATE INDEX jobs_due_idx ON webmon.jobs (region, scheduled_at);

COMMENT ON TABLE webmon.jobs IS
    'pg_webmon: the check queue. One row per enabled monitor and region (kept in step with webmon.monitors by a trigger); probes lease due rows with webmon.claim_checks() and complete them in place with webmon.complete_checks().';
COMMENT ON COLUMN webmon.jobs.region IS 'The region whose probes run this job; '''' when any probe may (the monitor''s regions are NULL).';
COMMENT ON COLUMN webmon.jobs.check_interval IS 'Copy of the monitor''s check_interval, so that claiming reads only this table.';
COMMENT ON COLUMN webmon.jobs.grid_start IS 'The slots after the first check are grid_start + k × check_interval (see webmon.grid_start()); every region of a monitor has the same.';
COMMENT ON COLUMN webmon.jobs.scheduled_at IS 'The next slot to check (a claim moves it to the slot after the one it leases). While requeued: the slot to check again.';
COMMENT ON COLUMN webmon.jobs.leased_slot IS 'The slot of the last lease; with leased_by set, the check in flight.';
COMMENT ON COLUMN webmon.jobs.leased_by IS 'The probe holding the lease; NULL when no check is in flight.';
COMMENT ON COLUMN webmon.jobs.lease_expires_at IS 'While leased: when the lease ends. Back in the queue (a new row, an expired or released lease): when it came back, so pg_webmon.unclaimed_timeout counts from then.';
COMMENT ON COLUMN webmon.jobs.attempts IS 'How many times a probe has leased this slot; after pg_webmon.max_attempts expired leases it is recorded as lost.';
COMMENT ON COLUMN webmon.jobs.last_checked_at IS 'The last result from this job''s checks (written with it, so that webmon.monitor_status reads no results): when it started, or its slot for an error without a start.';
COMMENT ON COLUMN webmon.jobs.last_status_code IS 'The last result''s HTTP status; NULL for an error.';
COMMENT ON COLUMN webmon.jobs.last_response_time_ms IS 'The last result''s response time; NULL for an error.';
COMMENT ON COLUMN webmon.jobs.last_regex_matched IS 'Whether the last response matched the monitor''s regex; NULL without one.';
COMMENT ON COLUMN webmon.jobs.last_error_kind IS 'The last result''s error kind; NULL for a response.';
COMMENT ON COLUMN webmon.jobs.last_error IS 'The last result''s error message; NULL for a response.';
COMMENT ON COLUMN webmon.jobs.last_region IS 'The region the last result came from (the job''s, else its probe''s).';
COMMENT ON COLUMN webmon.jobs.failed_run IS 'Consecutive failed checks from this region (reset by a good one).';
COMMENT ON COLUMN webmon.jobs.good_run IS 'Consecutive good checks from this region, slow or not (reset by a failed one).';
COMMENT ON COLUMN webmon.jobs.slow_run IS 'Consecutive good checks slower than the monitor''s degraded_after_ms.';
COMMENT ON COLUMN webmon.jobs.verdict IS 'This region''s view of the site (webmon.next_verdict()): up, down (down_after failed checks, until up_after good ones) or degraded (down_after slow checks, until a fast one); NULL before it is known. Kept by complete_checks in the same update that ends the lease.';
COMMENT ON COLUMN webmon.jobs.verdict_since IS 'The check that gave the region its verdict.';
COMMENT ON COLUMN webmon.jobs.failing_since IS 'When the current run of failed checks began (NULL while the last check was good).';
COMMENT ON COLUMN webmon.jobs.failing_cause IS 'What the first failed check of the current run got (webmon.failure_cause()); an incident it opens starts with it.';
COMMENT ON COLUMN webmon.jobs.requeued IS 'The slot in scheduled_at came back from an expired or released lease and is checked again as it is (not skipped).';

-- The id a probe knows a job by: the monitor's id and one bit for the region, negative, so that
-- it can never be taken for a job id of a release before 0.7.0 (those were positive). The
-- region is the probe's own (1) or '' (0): a probe only ever claims those. These functions
-- are inlined where they are used.
CREATE FUNCTION webmon.job_id(monitor_id bigint, region text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN -(monitor_id * 2 + CASE WHEN region = '' THEN 0 ELSE 1 END);
COMMENT ON FUNCTION webmon.job_id(bigint, text) IS
    'pg_webmon: the job id claim_checks gives a probe for a monitor''s job in a region ('''' or the probe''s own): -(2 × monitor id + 1 for a region, 0 for any).';
-- webmon.job_id read backwards: the monitor, and the region for the probe that holds the id.
CREATE FUNCTION webmon.job_monitor(job_id bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN -(job_id / 2);
COMMENT ON FUNCTION webmon.job_monitor(bigint) IS
    'pg_webmon: the monitor a job id names (webmon.job_id read backwards); 0 or less for an id no claim gives.';
CREATE FUNCTION webmon.job_region(job_id bigint, probe_region text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN job_id % 2 = 0 THEN '' ELSE probe_region END;
COMMENT ON FUNCTION webmon.job_region(bigint, text) IS
    'pg_webmon: the region a job id names for the probe that holds it: '''' or the probe''s own (webmon.job_id read backwards).';

-- The job rows each monitor should have: one per listed region, or one that any probe may run
-- (region ''); none while it is paused or its stored interval or timeout cannot run. The
-- trigger reads it for one monitor (an index lookup), sync_jobs for all.
CREATE VIEW webmon.wanted_jobs AS
SELECT m.id AS monitor_id, coalesce(r.region, '') AS region
FROM webmon.monitors m
LEFT JOIN LATERAL (SELECT DISTINCT u.region FROM unnest(m.regions) AS u(region) WHERE u.region IS NOT NULL) r ON true
WHERE m.enabled AND webmon.monitor_problem(m.check_interval, m.timeout) IS NULL
  AND (m.regions IS NULL OR r.region IS NOT NULL);
COMMENT ON VIEW webmon.wanted_jobs IS
    'pg_webmon: the job rows each monitor should have: one per region it lists, or one any probe may run (region ''''); none while it is paused or cannot run.';

-- Keeps a monitor's job rows in step with it as it changes or goes. SECURITY DEFINER: a role
-- that may change monitors needs no privilege on the queue.
CREATE FUNCTION webmon.monitors_sync_jobs() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    wanted text[];
    first_slot timestamptz;
    grid timestamptz;
BEGIN
    -- Runs as the owner: only as the trigger on webmon.monitors (a trigger function's EXECUTE
    -- is checked only when a trigger is created, so refuse any other table).
    IF TG_RELID <> 'webmon.monitors'::regclass THEN
        RAISE EXCEPTION 'webmon.monitors_sync_jobs() runs only on webmon.monitors' USING ERRCODE = '42501';
    END IF;
    IF TG_OP = 'DELETE' THEN
        DELETE FROM webmon.jobs WHERE monitor_id = OLD.id;
        -- Its open incidents end now (looked for first: a DELETE of many monitors takes no
        -- lock for those without one).
        IF EXISTS (SELECT 1 FROM webmon.incidents i WHERE i.monitor_id = OLD.id AND i.resolved_at IS NULL) THEN
            PERFORM webmon.update_incidents(ARRAY[OLD.id], ARRAY[now()], ARRAY[0], ARRAY[NULL::timestamptz]);
        END IF;
        RETURN NULL;
    END IF;
    wanted := ARRAY(SELECT w.region FROM webmon.wanted_jobs w WHERE w.monitor_id = NEW.id);
    -- A region no longer listed (or a paused monitor) loses its job; a check in flight there
    -- is not stored.
    DELETE FROM webmon.jobs WHERE monitor_id = NEW.id AND region <> ALL (wanted);
    IF TG_OP = 'UPDATE' THEN
        IF NEW.next_check_at IS DISTINCT FROM OLD.next_check_at THEN
            -- Moved by hand (now() checks at once): every region, on the new grid.
            UPDATE webmon.jobs
            SET scheduled_at = NEW.next_check_at, check_interval = NEW.check_interval,
                grid_start = webmon.grid_start(NEW.id, NEW.check_interval, NEW.next_check_at, now()),
                requeued = false,
                lease_expires_at = CASE WHEN leased_by IS NULL THEN now() ELSE lease_expires_at END
            WHERE monitor_id = NEW.id;
            PERFORM pg_notify('webmon_jobs', 'moved');
        ELSIF NEW.check_interval IS DISTINCT FROM OLD.check_interval THEN
            -- Next checked at most one new interval from now, not at the slot the old one
            -- left; then on a grid of the new interval from now.
            UPDATE webmon.jobs
            SET check_interval = NEW.check_interval,
                grid_start = webmon.grid_start(NEW.id, NEW.check_interval, now(), now()),
                scheduled_at = least(scheduled_at, now() + NEW.check_interval)
            WHERE monitor_id = NEW.id;
            PERFORM pg_notify('webmon_jobs', 'moved');
        END IF;
    END IF;
    -- New regions join the grid the others follow; a monitor enabled again is checked at its
    -- next_check_at, or at most one interval from now. (New monitors: monitors_add_jobs.)
    SELECT j.scheduled_at, j.grid_start INTO first_slot, grid
    FROM webmon.jobs j WHERE j.monitor_id = NEW.id ORDER BY j.scheduled_at LIMIT 1;
    INSERT INTO webmon.jobs (monitor_id, region, check_interval, grid_start, scheduled_at, lease_expires_at)
    SELECT NEW.id, r, NEW.check_interval,
           coalesce(grid, webmon.grid_start(NEW.id, NEW.check_interval, NEW.next_check_at, now())),
           coalesce(first_slot, least(NEW.next_check_at, now() + NEW.check_interval)),
           now()
    FROM unnest(wanted) AS r
    ON CONFLICT (monitor_id, region) DO NOTHING;
    IF FOUND THEN
        PERFORM pg_notify('webmon_jobs', 'new');
    END IF;
    -- Paused, regions changed or another quorum: its incidents follow what its remaining
    -- regions say (a paused monitor has none open).
    IF TG_OP = 'UPDATE' AND (NEW.regions, NEW.enabled, NEW.down_quorum)
                            IS DISTINCT FROM (OLD.regions, OLD.enabled, OLD.down_quorum)
       AND (EXISTS (SELECT 1 FROM webmon.incidents i WHERE i.monitor_id = NEW.id AND i.resolved_at IS NULL)
            OR EXISTS (SELECT 1 FROM webmon.jobs j WHERE j.monitor_id = NEW.id AND j.verdict IN ('down', 'degraded'))) THEN
        PERFORM webmon.update_incidents(ARRAY[NEW.id], ARRAY[now()], ARRAY[0], ARRAY[NULL::timestamptz]);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION webmon.monitors_sync_jobs() IS
    'pg_webmon: trigger that keeps a monitor''s job rows in step with it: one per region (or one for any probe), none while paused; a moved next_check_at or a changed interval moves them; its incidents follow a pause, a deletion, or changed regions or quorum.';
CREATE TRIGGER monitors_sync_jobs
    AFTER DELETE OR UPDATE OF regions, enabled, check_interval, timeout, next_check_at, down_quorum
    ON webmon.monitors FOR EACH ROW EXECUTE FUNCTION webmon.monitors_sync_jobs();

-- Jobs of monitors added by one INSERT (or COPY, or import), made together. A monitor added
-- "now" (next_check_at not ahead) is checked at once — but when many are added together,
-- their first checks are spread evenly over N / 1,000 seconds (1,000 a second), or over one
-- interval when that is shorter, so a bulk insert does not start them all in the same
-- instant; after that each follows its own grid.
CREATE FUNCTION webmon.monitors_add_jobs() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    added_jobs int;
BEGIN
    IF TG_RELID <> 'webmon.monitors'::regclass THEN
        RAISE EXCEPTION 'webmon.monitors_add_jobs() runs only on webmon.monitors' USING ERRCODE = '42501';
    END IF;
    INSERT INTO webmon.jobs (monitor_id, region, check_interval, grid_start, scheduled_at, lease_expires_at)
    SELECT a.id, w.region, a.check_interval,
           webmon.grid_start(a.id, a.check_interval, a.next_check_at, now()),
           CASE WHEN a.next_check_at > now() THEN a.next_check_at
                ELSE a.next_check_at
                     + make_interval(secs => a.rank / a.total
                                             * least(extract(epoch FROM a.check_interval)::float8, a.total / 1000.0)) END,
           now()
    FROM (SELECT n.id, n.check_interval, n.next_check_at,
                 (row_number() OVER (ORDER BY n.id) - 1)::float8 AS rank,
                 (count(*) OVER ())::float8 AS total
          FROM added n) a
    JOIN webmon.wanted_jobs w ON w.monitor_id = a.id
    ON CONFLICT (monitor_id, region) DO NOTHING;
    GET DIAGNOSTICS added_jobs = ROW_COUNT;
    IF added_jobs > 0 THEN
        PERFORM pg_notify('webmon_jobs', 'new');
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION webmon.monitors_add_jobs() IS
    'pg_webmon: trigger that makes the job rows of the monitors one statement added; first checks of monitors added "now" are spread over N / 1,000 seconds, or one interval when shorter.';
CREATE TRIGGER monitors_add_jobs
    AFTER INSERT ON webmon.monitors REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION webmon.monitors_add_jobs();

CREATE FUNCTION webmon.sync_jobs() RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    added int;
BEGIN
    -- What the trigger missed (rows written with triggers disabled, e.g. a restore with
    -- --disable-triggers, or session_replication_role = replica): jobs of monitors that no
    -- longer want them go, missing ones are added, copies of the interval are mended. Hash
    -- joins over whole tables: the scheduler runs it every five minutes.
    DELETE FROM webmon.jobs j
    WHERE NOT EXISTS (SELECT 1 FROM webmon.wanted_jobs w WHERE w.monitor_id = j.monitor_id AND w.region = j.region);
    UPDATE webmon.jobs j
    SET check_interval = m.check_interval, grid_start = webmon.grid_start(m.id, m.check_interval, now(), now()),
        scheduled_at = least(j.scheduled_at, now() + m.check_interval)
    FROM webmon.monitors m
    WHERE m.id = j.monitor_id AND j.check_interval IS DISTINCT FROM m.check_interval;
    INSERT INTO webmon.jobs (monitor_id, region, check_interval, grid_start, scheduled_at, lease_expires_at)
    SELECT m.id, w.region, m.check_interval, webmon.grid_start(m.id, m.check_interval, m.next_check_at, now()),
           least(m.next_check_at, now() + m.check_interval), now()
    FROM webmon.wanted_jobs w JOIN webmon.monitors m ON m.id = w.monitor_id
    WHERE NOT EXISTS (SELECT 1 FROM webmon.jobs j WHERE j.monitor_id = w.monitor_id AND j.region = w.region)
    ON CONFLICT (monitor_id, region) DO NOTHING;
    GET DIAGNOSTICS added = ROW_COUNT;
    IF added > 0 THEN
        PERFORM pg_notify('webmon_jobs', 'new');
    END IF;
    RETURN added;
END
$$;
COMMENT ON FUNCTION webmon.sync_jobs() IS
    'pg_webmon: bring webmon.jobs in step with webmon.monitors where a trigger did not run (the scheduler calls it every five minutes); returns how many job rows it added.';

-- The regions that have job rows ('' last), one index probe each. PL/pgSQL, so that its
-- plan is kept (the scheduler calls it several times a second).
CREATE FUNCTION webmon.queued_regions() RETURNS SETOF text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    -- From the top of jobs_due_idx down: each step lands on a region's latest slots, which
    -- are live rows, not on its oldest, where claims leave dead entries until a vacuum.
    WITH RECURSIVE r(region) AS (
        (SELECT j.region FROM webmon.jobs j ORDER BY j.region DESC LIMIT 1)
        UNION ALL
        SELECT (SELECT j.region FROM webmon.jobs j WHERE j.region < r.region ORDER BY j.region DESC LIMIT 1)
        FROM r WHERE r.region IS NOT NULL
    )
    SELECT r.region FROM r WHERE r.region IS NOT NULL;
END
$$;
COMMENT ON FUNCTION webmon.queued_regions() IS
    'pg_webmon: the distinct regions of webmon.jobs ('''' for jobs any probe may run), read from its index.';

-- ---------------------------------------------------------------------------------------------
-- Scheduler steps (the background worker calls them; users may too).
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION webmon.wake_probes(after timestamptz, lookahead interval DEFAULT '1 second')
RETURNS timestamptz
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET enable_seqscan = off AS $$
DECLARE
    horizon timestamptz := now() + lookahead;
    r text;
BEGIN
    -- One NOTIFY when a slot in (after, now + lookahead] comes due in some region; probes
    -- then claim. Jobs made or moved by hand notify themselves (monitors_sync_jobs).
    FOR r IN SELECT webmon.queued_regions() LOOP
        IF EXISTS (SELECT 1 FROM webmon.jobs j
                   WHERE j.region = r AND j.scheduled_at > after AND j.scheduled_at <= horizon) THEN
            PERFORM pg_notify('webmon_jobs', 'due');
            EXIT;
        END IF;
    END LOOP;
    RETURN horizon;
END
$$;
COMMENT ON FUNCTION webmon.wake_probes(timestamptz, interval) IS
    'pg_webmon: NOTIFY webmon_jobs when a job''s slot in (after, now() + lookahead] comes due; returns now() + lookahead, the next call''s after.';

CREATE FUNCTION webmon.record_unclaimed_checks(unclaimed_timeout interval DEFAULT '2 minutes',
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

CREATE FUNCTION webmon.requeue_expired_leases(max_attempts int DEFAULT 3, max_rows int DEFAULT 100000)
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

-- ---------------------------------------------------------------------------------------------
-- Probe API. SECURITY DEFINER with a fixed search_path: a probe role needs EXECUTE only.
-- ---------------------------------------------------------------------------------------------
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
COMMENT ON FUNCTION webmon.claim_checks(text, int, interval, interval) IS
    'pg_webmon: lease up to max_jobs (at most 10,000) checks due within lookahead (FOR UPDATE SKIP LOCKED): this probe''s region first, then checks any probe may run. scheduled_at is the slot to start at; the lease runs from it for the given interval, above 0 and at most pg_webmon.max_lease.';

CREATE FUNCTION webmon.complete_checks(
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

-- The 0.3.0 probe's call, without slots: a result counts for the lease its probe holds when
-- it started at that lease's slot.
CREATE OR REPLACE FUNCTION webmon.complete_checks(
    probe text,
    job_ids bigint[],
    request_timestamps timestamptz[],
    response_times_ms real[],
    http_status_codes smallint[],
    regex_matches boolean[],
    page_contents text[],
    error_kinds text[],
    error_messages text[])
RETURNS int
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT webmon.complete_checks(probe, job_ids, NULL::timestamptz[], request_timestamps,
                                  response_times_ms, http_status_codes, regex_matches,
                                  page_contents, error_kinds, error_messages)
$$;
COMMENT ON FUNCTION webmon.complete_checks(text, bigint[], timestamptz[], real[], smallint[], boolean[], text[], text[], text[]) IS
    'pg_webmon: complete_checks as probes before 0.4.0 call it (no slots): each result counts for the lease its probe holds on the job, when it started at that lease''s slot.';

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
COMMENT ON FUNCTION webmon.release_checks(text, bigint[]) IS
    'pg_webmon: hand back leased checks that this probe did not start (on shutdown); their slots return to the queue at once.';

REVOKE ALL ON FUNCTION webmon.monitors_sync_jobs() FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.monitors_add_jobs() FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.sync_jobs() FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.wake_probes(timestamptz, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.record_unclaimed_checks(interval, int) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.requeue_expired_leases(int, int) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.claim_checks(text, int, interval, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.complete_checks(text, bigint[], timestamptz[], timestamptz[], real[], smallint[], boolean[], text[], text[], text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.complete_checks(text, bigint[], timestamptz[], real[], smallint[], boolean[], text[], text[], text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.release_checks(text, bigint[]) FROM PUBLIC;
