-- pg_webmon 0.4.0 → 0.5.0
--
-- Incidents: each region's verdict on the site (down after monitors.down_after failed checks
-- in a row, up again after up_after good ones, degraded after down_after checks slower than
-- degraded_after_ms) is kept in its job row by complete_checks, and a quorum of regions
-- opens or resolves a webmon.incidents row in the transaction that stores the deciding
-- result, with NOTIFY webmon_events. webmon.monitor_status gains state and state_since. The
-- queue's regions are read from the live end of its index (and the maintenance worker of
-- 0.5.0 vacuums webmon.jobs every pg_webmon.queue_vacuum_interval: no schema change). No
-- stored row changes; existing jobs start with no verdict.

-- Every table the update changes, first, in the order monitor_status reads them (monitors,
-- then jobs), so that the update does not wait for a reader while holding the queue.
LOCK TABLE webmon.monitors, webmon.jobs IN ACCESS EXCLUSIVE MODE;

-- ---------------------------------------------------------------------------------------------
-- Monitors: when a failing site counts as down, and when a slow one as degraded.
-- ---------------------------------------------------------------------------------------------
-- Added without a default, filled, then given it: a column added with a default keeps a
-- "missing value" in the catalog that a fresh install does not have.
ALTER TABLE webmon.monitors
    ADD COLUMN down_after int,
    ADD COLUMN up_after int,
    ADD COLUMN degraded_after_ms int;
UPDATE webmon.monitors SET down_after = 2, up_after = 1;
ALTER TABLE webmon.monitors
    ALTER COLUMN down_after SET DEFAULT 2, ALTER COLUMN down_after SET NOT NULL,
    ALTER COLUMN up_after SET DEFAULT 1, ALTER COLUMN up_after SET NOT NULL;

COMMENT ON COLUMN webmon.monitors.down_after IS 'Consecutive failed checks (no response, status outside expected_status, regex not matched) before a region counts as down and, with a quorum of regions down, a down incident opens. 1 to 1,000; default 2.';

COMMENT ON COLUMN webmon.monitors.up_after IS 'Consecutive good checks before a down region counts as up again (and the incident is resolved). 1 to 1,000; default 1.';

COMMENT ON COLUMN webmon.monitors.degraded_after_ms IS 'A good check slower than this (ms) is slow; down_after consecutive slow checks make the monitor degraded, not down, until a check is fast again. NULL: never degraded.';

CREATE OR REPLACE FUNCTION webmon.monitors_validate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    problem text;
    regions int;
BEGIN
    NEW.method := upper(NEW.method);
    PERFORM webmon.validate_monitor(NEW.url, NEW.method, NEW.headers, NEW.check_interval,
                                    NEW.timeout, NEW.regex, isempty(NEW.expected_status));
    -- One row must not make every probe that claims it allocate hundreds of MiB.
    PERFORM webmon.validate_monitor_size(NEW.url, NEW.headers, NEW.body);
    -- Checked when set, so that a row stored before these limits existed can still be edited.
    IF TG_OP = 'INSERT'
       OR (NEW.name, NEW.regex, NEW.regions) IS DISTINCT FROM (OLD.name, OLD.regex, OLD.regions) THEN
        problem := webmon.monitor_labels_problem(NEW.name, NEW.regex, NEW.regions);
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION '%', problem USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    -- One check per slot without regions: a quorum of one at most.
    regions := CASE WHEN NEW.regions IS NULL THEN 1
                    ELSE cardinality(ARRAY(SELECT DISTINCT unnest(NEW.regions))) END;
    IF NEW.down_quorum NOT BETWEEN 1 AND regions THEN
        RAISE EXCEPTION 'invalid down_quorum %: it must be from 1 to the number of regions (%)',
            NEW.down_quorum, regions
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'NULL means a majority of the regions.';
    END IF;
    IF NEW.down_after NOT BETWEEN 1 AND 1000 OR NEW.up_after NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'invalid down_after % or up_after %: each must be from 1 to 1000', NEW.down_after, NEW.up_after
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.degraded_after_ms NOT BETWEEN 1 AND 86400000 THEN
        RAISE EXCEPTION 'invalid degraded_after_ms %: it must be from 1 to 86400000 (a day), or NULL', NEW.degraded_after_ms
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER monitors_validate ON webmon.monitors;

CREATE TRIGGER monitors_validate
    BEFORE INSERT OR UPDATE OF url, method, headers, body, check_interval, timeout, regex, expected_status, name, regions, down_quorum,
                               down_after, up_after, degraded_after_ms
    ON webmon.monitors FOR EACH ROW EXECUTE FUNCTION webmon.monitors_validate();

CREATE OR REPLACE FUNCTION webmon.grant_reader(role_name name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA webmon TO %I', role_name);
    -- Not headers and body: they can hold credentials (Authorization, API keys).
    EXECUTE format('GRANT SELECT (id, url, name, method, check_interval, timeout, regex, expected_status, '
                   'follow_redirects, regions, down_quorum, enabled, next_check_at, created_at, down_after, up_after, '
                   'degraded_after_ms) ON webmon.monitors TO %I', role_name);
    EXECUTE format('GRANT SELECT ON webmon.metrics, webmon.errors, webmon.probes, webmon.jobs, webmon.partitions, '
                   'webmon.monitor_status, webmon.region_status, webmon.regions, webmon.incidents TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION webmon.uptime(interval) TO %I', role_name);
END
$$;

COMMENT ON FUNCTION webmon.grant_reader(name) IS
    'pg_webmon: grant a role read access to monitors (without headers and body, which can hold credentials), results, incidents, probes, the queue, webmon.monitor_status, webmon.region_status, webmon.regions and webmon.uptime(); nothing it can change.';


-- ---------------------------------------------------------------------------------------------
-- The queue: each region's runs of failed, good and slow checks, and its verdict, kept in the
-- completion's HOT update. Existing jobs start with no verdict (state unknown until checked).
-- ---------------------------------------------------------------------------------------------
ALTER TABLE webmon.jobs
    ADD COLUMN failed_run int,
    ADD COLUMN good_run int,
    ADD COLUMN slow_run int,
    ADD COLUMN verdict text,
    ADD COLUMN verdict_since timestamptz,
    ADD COLUMN failing_since timestamptz,
    ADD COLUMN failing_cause text;
UPDATE webmon.jobs SET failed_run = 0, good_run = 0, slow_run = 0;
ALTER TABLE webmon.jobs
    ALTER COLUMN failed_run SET DEFAULT 0, ALTER COLUMN failed_run SET NOT NULL,
    ALTER COLUMN good_run SET DEFAULT 0, ALTER COLUMN good_run SET NOT NULL,
    ALTER COLUMN slow_run SET DEFAULT 0, ALTER COLUMN slow_run SET NOT NULL;

COMMENT ON COLUMN webmon.jobs.failed_run IS 'Consecutive failed checks from this region (reset by a good one).';

COMMENT ON COLUMN webmon.jobs.good_run IS 'Consecutive good checks from this region, slow or not (reset by a failed one).';

COMMENT ON COLUMN webmon.jobs.slow_run IS 'Consecutive good checks slower than the monitor''s degraded_after_ms.';

COMMENT ON COLUMN webmon.jobs.verdict IS 'This region''s view of the site (webmon.next_verdict()): up, down (down_after failed checks, until up_after good ones) or degraded (down_after slow checks, until a fast one); NULL before it is known. Kept by complete_checks in the same update that ends the lease.';

COMMENT ON COLUMN webmon.jobs.verdict_since IS 'The check that gave the region its verdict.';

COMMENT ON COLUMN webmon.jobs.failing_since IS 'When the current run of failed checks began (NULL while the last check was good).';

COMMENT ON COLUMN webmon.jobs.failing_cause IS 'What the first failed check of the current run got (webmon.failure_cause()); an incident it opens starts with it.';

CREATE OR REPLACE FUNCTION webmon.monitors_sync_jobs() RETURNS trigger
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

DROP TRIGGER monitors_sync_jobs ON webmon.monitors;

CREATE TRIGGER monitors_sync_jobs
    AFTER DELETE OR UPDATE OF regions, enabled, check_interval, timeout, next_check_at, down_quorum
    ON webmon.monitors FOR EACH ROW EXECUTE FUNCTION webmon.monitors_sync_jobs();

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
            SELECT c.id, c.monitor_id, c.scheduled_at
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
            FROM unclaimed u WHERE j.id = u.id
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
        SELECT id, monitor_id, region, leased_slot, attempts, leased_by
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
        WHERE j.id = e.id AND e.attempts >= max_attempts
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
        WHERE j.id = e.id AND e.attempts < max_attempts
        RETURNING j.id
    )
    SELECT count(*) INTO requeued FROM back;
    IF requeued > 0 THEN
        PERFORM pg_notify('webmon_jobs', 'requeued');
    END IF;
    RETURN requeued;
END
$$;

CREATE OR REPLACE FUNCTION webmon.queued_regions() RETURNS SETOF text
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


-- What one result says about the site, in Rust now (it runs for every stored check, and a SQL
-- function with a fixed search_path is not inlined); same arguments, same answers.
CREATE OR REPLACE FUNCTION webmon.result_is_up(
	"expected_status" int4range, /* Option < pgrx :: datum :: Range < i32 > > */
	"http_status_code" smallint, /* Option < i16 > */
	"regex_matched" bool, /* Option < bool > */
	"error_kind" TEXT /* Option < & str > */
) RETURNS bool /* Option < bool > */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'result_is_up_wrapper';

CREATE FUNCTION webmon."check_outcome"(
	"expected_status" int4range, /* Option < pgrx :: datum :: Range < i32 > > */
	"http_status_code" smallint, /* Option < i16 > */
	"regex_matched" bool, /* Option < bool > */
	"error_kind" TEXT, /* Option < & str > */
	"response_time_ms" real, /* Option < f32 > */
	"degraded_after_ms" INT /* Option < i32 > */
) RETURNS TEXT /* Option < & '_ str > */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'check_outcome_wrapper';

COMMENT ON FUNCTION webmon.check_outcome(int4range, smallint, boolean, text, real, int) IS
    'pg_webmon: what a check says about the site: failed (not up, see webmon.result_is_up()), slow (up, slower than degraded_after_ms), good, or NULL (nobody checked it).';

CREATE FUNCTION webmon."failure_cause"(
	"http_status_code" smallint, /* Option < i16 > */
	"regex_matched" bool, /* Option < bool > */
	"error_kind" TEXT, /* Option < & str > */
	"error" TEXT /* Option < & str > */
) RETURNS TEXT /* String */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'failure_cause_wrapper';

COMMENT ON FUNCTION webmon.failure_cause(smallint, boolean, text, text) IS
    'pg_webmon: what a failed check got, in one line (at most 300 characters, no URL): its error kind and message, or its status (and a regex not matched).';

CREATE FUNCTION webmon."next_run"(
	"run" TEXT, /* & str */
	"outcome" TEXT, /* Option < & str > */
	"previous" INT /* i32 */
) RETURNS INT /* i32 */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'next_run_wrapper';

COMMENT ON FUNCTION webmon.next_run(text, text, int) IS
    'pg_webmon: a run of consecutive failed, good (slow or not) or slow checks after one more check with this outcome: one longer, 0 when broken, the same when the check says nothing.';

CREATE FUNCTION webmon."next_verdict"(
	"verdict" TEXT, /* Option < & str > */
	"outcome" TEXT, /* Option < & str > */
	"failed_run" INT, /* i32 */
	"good_run" INT, /* i32 */
	"slow_run" INT, /* i32 */
	"down_after" INT, /* i32 */
	"up_after" INT /* i32 */
) RETURNS TEXT /* Option < String > */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'next_verdict_wrapper';

COMMENT ON FUNCTION webmon.next_verdict(text, text, int, int, int, int, int) IS
    'pg_webmon: a region''s verdict after a check, from its runs before it: down after down_after failed checks in a row until up_after good ones, degraded after down_after slow ones until a fast one, up after any other good check; unchanged otherwise.';

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
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_seqscan = off AS $$
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
            failed_run = webmon.next_run('failed', o.outcome, j.failed_run),
            good_run = webmon.next_run('good', o.outcome, j.good_run),
            slow_run = webmon.next_run('slow', o.outcome, j.slow_run),
            verdict = webmon.next_verdict(j.verdict, o.outcome, j.failed_run, j.good_run, j.slow_run,
                                          m.down_after, m.up_after),
            verdict_since = CASE WHEN webmon.next_verdict(j.verdict, o.outcome, j.failed_run, j.good_run, j.slow_run,
                                                          m.down_after, m.up_after) IS DISTINCT FROM j.verdict
                                 THEN coalesce(t.checked_at, j.leased_slot)
                                 ELSE j.verdict_since END,
            failing_since = CASE WHEN o.outcome = 'failed'
                                 THEN coalesce(j.failing_since, t.checked_at, j.leased_slot)
                                 WHEN o.outcome IS NOT NULL THEN NULL
                                 ELSE j.failing_since END,
            failing_cause = CASE WHEN o.outcome = 'failed' AND j.failing_since IS NULL
                                 THEN left(coalesce(r.refused, webmon.failure_cause(b.http_status_code, b.regex_matched,
                                                                                     b.error_kind, b.error)), 300)
                                 WHEN o.outcome = 'failed' THEN j.failing_cause
                                 WHEN o.outcome IS NOT NULL THEN NULL
                                 ELSE j.failing_cause END
        FROM unnest(job_ids, slots, request_timestamps, response_times_ms, http_status_codes,
                    regex_matches, page_contents, error_kinds, error_messages)
            AS b(job_id, slot, request_timestamp, response_time_ms, http_status_code, regex_matched,
                 page_content, error_kind, error)
        CROSS JOIN webmon.monitors m
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
        ) r
        -- The check's time: when it started, or for a refused result its slot (the lease's
        -- own slot where the probe did not send it: coalesce with j.leased_slot).
        CROSS JOIN LATERAL (
            SELECT CASE WHEN r.refused IS NULL THEN b.request_timestamp ELSE b.slot END AS checked_at
        ) t
        CROSS JOIN LATERAL (
            SELECT CASE WHEN r.refused IS NOT NULL THEN 'failed'
                        ELSE webmon.check_outcome(m.expected_status, b.http_status_code, b.regex_matched, b.error_kind,
                                                  b.response_time_ms, m.degraded_after_ms)
                   END AS outcome
        ) o
        WHERE j.id = b.job_id AND m.id = j.monitor_id AND j.leased_by = completer
          AND CASE WHEN b.slot IS NOT NULL THEN j.leased_slot = b.slot
                   -- Without the slot (the 0.3.0 form): only a check that started at this
                   -- lease's slot (probes start at the slot, on the database's clock), not a
                   -- late result of an earlier lease of the same job.
                   ELSE b.request_timestamp >= j.leased_slot - interval '50 milliseconds' END
        RETURNING j.monitor_id, j.leased_slot AS leased, coalesce(nullif(j.region, ''), completer_region) AS from_region,
                  b.request_timestamp, b.response_time_ms, b.http_status_code, b.regex_matched,
                  b.page_content, b.error_kind, b.error, r.refused, o.outcome, j.verdict AS new_verdict,
                  j.verdict_since IS NOT DISTINCT FROM
                      coalesce(t.checked_at, j.leased_slot) AS verdict_changed,
                  coalesce(t.checked_at, j.leased_slot) AS checked_at
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


-- ---------------------------------------------------------------------------------------------
-- Incidents (new): sql/incidents.sql as in 0.5.0.
-- ---------------------------------------------------------------------------------------------

-- Incidents: each region's verdict (webmon.jobs.verdict, kept by complete_checks in the
-- update that ends a lease) turned into incidents for the monitor, in the same transaction
-- as the results that change it. Loaded by CREATE EXTENSION after queue.sql (status.sql
-- shows incidents in webmon.monitor_status).

CREATE TABLE webmon.incidents (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    monitor_id      bigint      NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('down', 'degraded', 'cert_expiry')),
    started_at      timestamptz NOT NULL,
    resolved_at     timestamptz,
    cause           text,
    failed_checks   int         NOT NULL DEFAULT 0,
    last_failure_at timestamptz
);
-- At most one open incident per monitor and kind.
CREATE UNIQUE INDEX incidents_open_idx ON webmon.incidents (monitor_id, kind) WHERE resolved_at IS NULL;
CREATE INDEX incidents_monitor_idx ON webmon.incidents (monitor_id, started_at);
-- What purge_incidents deletes, without reading the open ones.
CREATE INDEX incidents_resolved_idx ON webmon.incidents (resolved_at) WHERE resolved_at IS NOT NULL;
COMMENT ON TABLE webmon.incidents IS
    'pg_webmon: when a monitor was down or degraded: opened and resolved by webmon.complete_checks() in the transaction that stores the deciding result; at most one open per monitor and kind. Resolved incidents older than pg_webmon.retention are deleted.';
COMMENT ON COLUMN webmon.incidents.kind IS 'down (a quorum of regions saw down_after failed checks in a row), degraded (down_after checks slower than degraded_after_ms) or cert_expiry.';
COMMENT ON COLUMN webmon.incidents.started_at IS 'The first failed check of the run that opened it (degraded: the check that made it degraded).';
COMMENT ON COLUMN webmon.incidents.resolved_at IS 'The check that ended it; NULL while open.';
COMMENT ON COLUMN webmon.incidents.cause IS 'What the first failed check got: its error kind and message, or its status code (and whether the regex matched).';
COMMENT ON COLUMN webmon.incidents.failed_checks IS 'Failed checks counted while it was open (from the regions that were down), including those that opened it.';
COMMENT ON COLUMN webmon.incidents.last_failure_at IS 'The last failed check counted.';

-- The JSON sent with NOTIFY webmon_events (and, later, to channels). NOTIFY payloads can be
-- read by any role that LISTENs: the monitor's id and name, never its URL.
CREATE FUNCTION webmon.incident_event(event text, i webmon.incidents) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object(
        'event', event, 'incident_id', i.id, 'monitor_id', i.monitor_id,
        'name', (SELECT left(m.name, 256) FROM webmon.monitors m WHERE m.id = i.monitor_id),
        'kind', i.kind, 'started_at', i.started_at, 'resolved_at', i.resolved_at,
        'duration_s', extract(epoch FROM i.resolved_at - i.started_at),
        'cause', left(i.cause, 300), 'failed_checks', i.failed_checks)
$$;
COMMENT ON FUNCTION webmon.incident_event(text, webmon.incidents) IS
    'pg_webmon: an incident as the JSON of an event (down, degraded, recovered): ids, monitor name, kind, times, duration once resolved, cause, failed checks. No URL.';

-- NOTIFY webmon_events with an incident's event. An event that cannot be sent (a payload
-- over NOTIFY's limit) is a WARNING: storing the results that changed the incident never
-- depends on it.
CREATE FUNCTION webmon.notify_event(event text, i webmon.incidents) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_notify('webmon_events', webmon.incident_event(event, i)::text);
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'pg_webmon: no webmon_events notification for incident %: %', i.id, SQLERRM;
END
$$;
COMMENT ON FUNCTION webmon.notify_event(text, webmon.incidents) IS
    'pg_webmon: NOTIFY webmon_events with the incident''s event (webmon.incident_event()); a failure is a WARNING, never an error.';

-- Opens and resolves the incidents of monitors whose region verdicts a batch of results
-- changed (complete_checks calls it; the steady "up, still up" path never does). Per
-- monitor, in id order: an advisory lock, so that probes of several regions completing at
-- once each see the others' verdicts (read after the lock, in a new snapshot); then down
-- when at least down_quorum of its job rows (regions) say down, degraded when that many say
-- down or degraded.
CREATE FUNCTION webmon.update_incidents(monitor_ids bigint[], checked_at timestamptz[],
                                        failures int[], last_failures timestamptz[])
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
    h record;
    quorum bigint;
    wanted text;
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
        SELECT count(j.id) AS regions,
               count(*) FILTER (WHERE j.verdict = 'down') AS down,
               count(*) FILTER (WHERE j.verdict IN ('down', 'degraded')) AS troubled,
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
        wanted := CASE
                      WHEN quorum IS NULL OR h.regions = 0 THEN NULL
                      WHEN h.down >= quorum THEN 'down'
                      WHEN h.troubled >= quorum THEN 'degraded'
                  END;
        -- What no longer holds is resolved by this check (degraded also when it went down).
        FOR changed IN
            UPDATE webmon.incidents i SET resolved_at = greatest(t.checked_at, i.started_at)
            WHERE i.monitor_id = t.monitor_id AND i.resolved_at IS NULL
              AND i.kind IN ('down', 'degraded') AND i.kind IS DISTINCT FROM wanted
            RETURNING i.*
        LOOP
            PERFORM webmon.notify_event('recovered', changed);
        END LOOP;
        IF wanted IS NULL THEN
            CONTINUE;
        END IF;
        UPDATE webmon.incidents i
        SET failed_checks = least(i.failed_checks::bigint + t.failures, 2147483647)::int,
            last_failure_at = greatest(i.last_failure_at, t.last_failure_at)
        WHERE i.monitor_id = t.monitor_id AND i.kind = wanted AND i.resolved_at IS NULL;
        IF NOT FOUND THEN
            INSERT INTO webmon.incidents (monitor_id, kind, started_at, cause, failed_checks, last_failure_at)
            VALUES (t.monitor_id, wanted,
                    CASE WHEN wanted = 'down' THEN coalesce(h.first_failure, t.checked_at) ELSE t.checked_at END,
                    CASE WHEN wanted = 'down' THEN h.first_cause ELSE 'slower than degraded_after_ms' END,
                    CASE WHEN wanted = 'down' THEN h.failed_run ELSE 0 END,
                    t.last_failure_at)
            RETURNING * INTO changed;
            PERFORM webmon.notify_event(wanted, changed);
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION webmon.update_incidents(bigint[], timestamptz[], int[], timestamptz[]) IS
    'pg_webmon: open and resolve the incidents of these monitors from their regions'' verdicts (complete_checks calls it with the monitors a batch changed, the time of each one''s last check, its failed checks and the last one''s time); NOTIFY webmon_events with each incident opened or resolved.';

-- Resolved incidents past the results' retention (the scheduler calls it every five minutes).
CREATE FUNCTION webmon.purge_incidents(older_than interval) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    purged int;
BEGIN
    -- At most 100,000 a call (the scheduler calls it every five minutes).
    DELETE FROM webmon.incidents WHERE id IN (
        SELECT i.id FROM webmon.incidents i
        WHERE i.resolved_at IS NOT NULL AND i.resolved_at < now() - older_than
        LIMIT 100000);
    GET DIAGNOSTICS purged = ROW_COUNT;
    RETURN purged;
END
$$;
COMMENT ON FUNCTION webmon.purge_incidents(interval) IS
    'pg_webmon: delete incidents resolved more than older_than ago, at most 100,000 a call (the scheduler passes pg_webmon.retention every five minutes); returns how many.';

REVOKE ALL ON FUNCTION webmon.update_incidents(bigint[], timestamptz[], int[], timestamptz[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.purge_incidents(interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.notify_event(text, webmon.incidents) FROM PUBLIC;

-- pg_dump keeps incidents (history users read and alerts refer to).
SELECT pg_catalog.pg_extension_config_dump('webmon.incidents', '');
SELECT pg_catalog.pg_extension_config_dump('webmon.incidents_id_seq', '');


-- ---------------------------------------------------------------------------------------------
-- monitor_status: state and state_since.
-- ---------------------------------------------------------------------------------------------

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
       (SELECT min(j.scheduled_at) FROM webmon.jobs j WHERE j.monitor_id = m.id) AS next_check_at,
       last.region AS last_region,
       quorum.states AS region_states,
       CASE WHEN m.regions IS NOT NULL THEN coalesce(m.down_quorum, quorum.regions / 2 + 1) END AS down_quorum,
       -- From the open incident and the regions' verdicts (webmon.jobs), kept as results
       -- come in: paused, down, degraded, pending (a quorum of regions failing, below
       -- down_after), up (a region says so), or unknown.
       CASE
           WHEN NOT m.enabled THEN 'paused'
           WHEN open_incident.kind IS NOT NULL THEN open_incident.kind
           WHEN health.pending THEN 'pending'
           WHEN health.known THEN 'up'
           ELSE 'unknown'
       END AS state,
       CASE
           WHEN NOT m.enabled THEN NULL
           WHEN open_incident.kind IS NOT NULL THEN open_incident.started_at
           WHEN health.pending THEN health.failing_since
           WHEN health.known THEN coalesce(health.up_since, m.created_at)
       END AS state_since
FROM webmon.monitors m
LEFT JOIN LATERAL (
    SELECT r.* FROM (
        (SELECT mt.request_timestamp, mt.http_status_code, mt.response_time_ms, mt.regex_matched,
                NULL::text AS error_kind, NULL::text AS error, mt.region
         FROM webmon.metrics mt WHERE mt.monitor_id = m.id
         ORDER BY mt.request_timestamp DESC LIMIT 1)
        UNION ALL
        (SELECT e.request_timestamp, NULL::smallint, NULL::real, NULL::boolean, e.error_kind, e.error, e.region
         FROM webmon.errors e WHERE e.monitor_id = m.id
         ORDER BY e.request_timestamp DESC LIMIT 1)
    ) r
    ORDER BY r.request_timestamp DESC
    LIMIT 1
) last ON true
LEFT JOIN LATERAL (
    SELECT count(*) AS regions,
           count(*) FILTER (WHERE s.state = 'down' AND s.last_slot = s.newest) AS failing,
           count(*) FILTER (WHERE s.state = 'up' AND s.last_slot = s.newest) AS passing,
           jsonb_object_agg(s.region, s.state) AS states
    -- The monitor's regions read once; the newest slot a live region reported, beside each.
    FROM (SELECT rs.*, max(rs.last_slot) FILTER (WHERE rs.state IN ('up', 'down')) OVER () AS newest
          FROM webmon.region_status rs WHERE rs.monitor_id = m.id) s
) quorum ON m.regions IS NOT NULL
LEFT JOIN LATERAL (
    SELECT i.kind, i.started_at FROM webmon.incidents i
    WHERE i.monitor_id = m.id AND i.resolved_at IS NULL AND i.kind IN ('down', 'degraded')
    ORDER BY i.kind = 'down' DESC LIMIT 1
) open_incident ON true
CROSS JOIN LATERAL (
    -- Pending: a quorum of regions failing now (below down_after) or down.
    SELECT f.failing > 0 AND f.failing >= coalesce(m.down_quorum, f.regions / 2 + 1) AS pending, f.*
    FROM (SELECT count(*) AS regions,
                 count(*) FILTER (WHERE j.verdict = 'down' OR j.failed_run > 0) AS failing,
                 min(j.failing_since) AS failing_since, bool_or(j.verdict = 'up') AS known,
                 max(j.verdict_since) FILTER (WHERE j.verdict = 'up') AS up_since
          FROM webmon.jobs j WHERE j.monitor_id = m.id) f
) health;

COMMENT ON VIEW webmon.monitor_status IS
    'pg_webmon: each monitor''s last result (when, status code, response time, error, region) and whether it is up. Up = got a response, status in expected_status, regex (if any) matched; NULL when nobody checked it (no_probe, lost). With regions: down when down_quorum live regions failed in the newest slot reported, with each region''s state in region_states; a region without a live probe is unmonitored, never down. state (paused, down, degraded, pending, up, unknown) and state_since follow the monitor''s incidents and down_after, up_after and degraded_after_ms.';
