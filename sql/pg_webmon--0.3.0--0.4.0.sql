-- pg_webmon 0.3.0 → 0.4.0
--
-- Checks from several regions, and a cheaper queue. webmon.jobs becomes one persistent row
-- per monitor and region (or one that any probe may run), leased and completed in place:
-- the scheduler no longer moves monitors.next_check_at nor inserts and deletes a job per
-- check. Results carry the region they ran from; monitor_status gives each region's state
-- and a quorum verdict (monitors.down_quorum); webmon.region_status and webmon.regions are
-- new. Pending and leased checks are carried over with their job ids, so a 0.3.0 probe that
-- holds a lease completes it (complete_checks keeps its 0.3.0 form). No stored result or
-- monitor changes.

-- Every table the update changes, first, in the order monitor_status reads them (monitors,
-- then jobs and results), so that the update does not wait for a reader while holding the
-- queue, and a reader in that order cannot deadlock with it.
LOCK TABLE webmon.monitors, webmon.jobs, webmon.metrics, webmon.errors IN ACCESS EXCLUSIVE MODE;

-- ---------------------------------------------------------------------------------------------
-- Monitors: a quorum; next_check_at is where the grid starts, no longer moved per check.
-- ---------------------------------------------------------------------------------------------
ALTER TABLE webmon.monitors ADD COLUMN down_quorum int;
DROP TRIGGER monitors_reschedule ON webmon.monitors;
DROP FUNCTION webmon.monitors_reschedule();
DROP TRIGGER monitors_delete_job ON webmon.monitors;
DROP FUNCTION webmon.monitors_delete_job();
DROP TRIGGER monitors_refresh_job ON webmon.monitors;
DROP FUNCTION webmon.monitors_refresh_job();
DROP INDEX webmon.monitors_due_idx;
COMMENT ON COLUMN webmon.monitors.regions IS 'Check from each of these regions in every slot (one check per region, by a probe registered with it). NULL: one check per slot, by any probe.';
COMMENT ON COLUMN webmon.monitors.down_quorum IS 'How many regions must see a check fail in the same slot for the monitor to count as down. NULL: a majority of its regions.';
COMMENT ON COLUMN webmon.monitors.next_check_at IS 'The first check (by default now(): right away). The checks after it are on a grid of check_interval that starts here when this time lies ahead, else a fraction of the interval later chosen by the monitor id, so that monitors added together are spread out (webmon.grid_start()). Set it to move the next check, e.g. now() to check right away; webmon.monitor_status.next_check_at shows the next slot.';

-- Validation uses the same Rust crates (url, regex, http) as the probe.
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
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION webmon.monitors_validate() IS
    'pg_webmon: trigger that refuses invalid monitors (SQLSTATE 22023, or 2201B for a bad regex).';

DROP TRIGGER monitors_validate ON webmon.monitors;
CREATE TRIGGER monitors_validate
    BEFORE INSERT OR UPDATE OF url, method, headers, body, check_interval, timeout, regex, expected_status, name, regions, down_quorum
    ON webmon.monitors FOR EACH ROW EXECUTE FUNCTION webmon.monitors_validate();


-- ---------------------------------------------------------------------------------------------
-- The library's new slot functions: monitors added together are spread over their interval.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION webmon.slot_after(
	"grid_start" timestamp with time zone, /* TimestampWithTimeZone */
	"check_interval" interval, /* Interval */
	"after" timestamp with time zone /* TimestampWithTimeZone */
) RETURNS timestamp with time zone /* TimestampWithTimeZone */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'slot_after_wrapper';
COMMENT ON FUNCTION webmon.slot_after(timestamptz, interval, timestamptz) IS
    'pg_webmon: the first slot of the grid grid_start + k × check_interval after a time (a day is 24 hours); an hour after it for an interval that cannot run. Never fails.';
CREATE FUNCTION webmon.lease_slot(
	"scheduled_at" timestamp with time zone, /* TimestampWithTimeZone */
	"grid_start" timestamp with time zone, /* TimestampWithTimeZone */
	"check_interval" interval, /* Interval */
	"now" timestamp with time zone /* TimestampWithTimeZone */
) RETURNS timestamp with time zone /* TimestampWithTimeZone */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'lease_slot_wrapper';
COMMENT ON FUNCTION webmon.lease_slot(timestamptz, timestamptz, interval, timestamptz) IS
    'pg_webmon: the slot a due job is leased for: its own when ahead or less than an interval behind, else the latest slot of its grid not after now (one check, never a burst).';
CREATE FUNCTION webmon.slot_at(
	"grid_start" timestamp with time zone, /* TimestampWithTimeZone */
	"check_interval" interval, /* Interval */
	"at" timestamp with time zone /* TimestampWithTimeZone */
) RETURNS timestamp with time zone /* TimestampWithTimeZone */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'slot_at_wrapper';
COMMENT ON FUNCTION webmon.slot_at(timestamptz, interval, timestamptz) IS
    'pg_webmon: the slot of the grid grid_start + k × check_interval (before its start too) that a time falls in.';
CREATE FUNCTION webmon.grid_start(
	"monitor_id" bigint, /* i64 */
	"check_interval" interval, /* Interval */
	"next_check_at" timestamp with time zone, /* TimestampWithTimeZone */
	"now" timestamp with time zone /* TimestampWithTimeZone */
) RETURNS timestamp with time zone /* TimestampWithTimeZone */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'grid_start_wrapper';
COMMENT ON FUNCTION webmon.grid_start(bigint, interval, timestamptz, timestamptz) IS
    'pg_webmon: where a monitor''s grid of slots starts: next_check_at when it lies ahead of now, else next_check_at plus a fraction of the interval that follows the monitor id (monitors added together are spread over their interval).';

-- ---------------------------------------------------------------------------------------------
-- Results carry the region (no stored row is rewritten: the column is NULL for them).
-- ---------------------------------------------------------------------------------------------
ALTER TABLE webmon.metrics ADD COLUMN region text;
ALTER TABLE webmon.errors ADD COLUMN region text;
COMMENT ON COLUMN webmon.metrics.region IS 'The region the check ran from (the job''s, else the probe''s); NULL when the probe has none.';
COMMENT ON COLUMN webmon.errors.region IS 'The region the check ran from, or was meant to (no_probe, lost); NULL when none.';

-- ---------------------------------------------------------------------------------------------
-- The queue: the 0.3.0 jobs are kept aside, the new table made, and they are carried over.
-- ---------------------------------------------------------------------------------------------
-- Renamed with its sequence and indexes, so that the new table's get the names a fresh install
-- gives them; dropped once carried over.
ALTER TABLE webmon.jobs RENAME TO jobs_0_3;
ALTER SEQUENCE webmon.jobs_id_seq RENAME TO jobs_0_3_id_seq;
ALTER INDEX webmon.jobs_pkey RENAME TO jobs_0_3_pkey;
ALTER INDEX webmon.jobs_monitor_id_key RENAME TO jobs_0_3_monitor_id_key;
ALTER INDEX webmon.jobs_claimable_idx RENAME TO jobs_0_3_claimable_idx;
DROP FUNCTION webmon.enqueue_due_checks(interval, int);
DROP FUNCTION webmon.requeue_expired_leases(int, interval);

-- As sql/queue.sql of 0.4.0:
-- pg_webmon's check queue: one persistent row per monitor and region in webmon.jobs, leased
-- and completed in place. Loaded by CREATE EXTENSION after schema.sql. The 0.3.0 → 0.4.0
-- update runs this file's text as it was in 0.4.0 (functions that existed before are
-- CREATE OR REPLACE, so that their grants stay).
--
-- A check costs two row versions of its job (the claim, which moves the row to its next slot,
-- and the completion, a HOT update) and its result row. Nothing is queued ahead: a job is due
-- when its scheduled_at has come, and the probe's claim is what advances it.

CREATE TABLE webmon.jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    UNIQUE (monitor_id, region)
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);
-- Due jobs of one region in slot order (claims, unclaimed checks). A claim moves its row to
-- the next slot, so the head of each region's range holds only what is due and unclaimed.
-- The only index besides the keys: a claim writes an entry in each (it moves the row), and
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
COMMENT ON COLUMN webmon.jobs.requeued IS 'The slot in scheduled_at came back from an expired or released lease and is checked again as it is (not skipped).';

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
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION webmon.monitors_sync_jobs() IS
    'pg_webmon: trigger that keeps a monitor''s job rows in step with it: one per region (or one for any probe), none while paused; a moved next_check_at or a changed interval moves them.';
CREATE TRIGGER monitors_sync_jobs
    AFTER DELETE OR UPDATE OF regions, enabled, check_interval, timeout, next_check_at
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

-- The regions that have job rows ('' first), one index probe each. PL/pgSQL, so that its
-- plan is kept (the scheduler calls it several times a second).
CREATE FUNCTION webmon.queued_regions() RETURNS SETOF text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    WITH RECURSIVE r(region) AS (
        (SELECT j.region FROM webmon.jobs j ORDER BY j.region LIMIT 1)
        UNION ALL
        SELECT (SELECT j.region FROM webmon.jobs j WHERE j.region > r.region ORDER BY j.region LIMIT 1)
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
                requeued = false, attempts = 0
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
        SELECT id, monitor_id, region, leased_slot, attempts, leased_by
        FROM webmon.jobs
        WHERE leased_by IS NOT NULL AND lease_expires_at < now()
        LIMIT max_rows
        FOR UPDATE SKIP LOCKED
    ), gave_up AS (
        UPDATE webmon.jobs j SET leased_by = NULL, attempts = 0, requeued = false
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
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_seqscan = off AS $$
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
        RETURNING j.id, j.monitor_id, j.leased_slot, j.attempts
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
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_seqscan = off AS $$
DECLARE
    completer smallint := webmon.probe_id(probe);
    completer_region text;
    accepted int;
BEGIN
    SELECT nullif(region, '') INTO completer_region FROM webmon.probes WHERE id = completer;
    -- Only checks this probe still leases, for the slot it was given, count; ending the lease
    -- makes a retried batch a no-op. The job row keeps every indexed column: a HOT update.
    WITH done AS (
        UPDATE webmon.jobs j SET leased_by = NULL, attempts = 0
        FROM unnest(job_ids, slots, request_timestamps, response_times_ms, http_status_codes,
                    regex_matches, page_contents, error_kinds, error_messages)
            AS b(job_id, slot, request_timestamp, response_time_ms, http_status_code, regex_matched,
                 page_content, error_kind, error)
        WHERE j.id = b.job_id AND j.leased_by = completer
          AND CASE WHEN b.slot IS NOT NULL THEN j.leased_slot = b.slot
                   -- Without the slot (the 0.3.0 form): only a check that started at this
                   -- lease's slot (probes start at the slot, on the database's clock), not a
                   -- late result of an earlier lease of the same job.
                   ELSE b.request_timestamp >= j.leased_slot - interval '50 milliseconds' END
        RETURNING j.monitor_id, j.leased_slot AS leased, coalesce(nullif(j.region, ''), completer_region) AS from_region,
                  b.request_timestamp, b.response_time_ms, b.http_status_code, b.regex_matched,
                  b.page_content, b.error_kind, b.error
    ), checked AS (
        -- A result counts as the probe says only when it can be true: started no earlier than a
        -- minute before its slot (probes start at the slot, on the database's clock) and not
        -- more than 5 seconds in the future, and, for a response, a status and a response time from 0 to a day. Any
        -- other result is stored as an `other` error at its slot saying why, so that no row can
        -- claim "up" forever or hide newer failures.
        SELECT d.*,
               CASE
                   WHEN d.request_timestamp IS NULL
                        OR d.request_timestamp < d.leased - interval '1 minute'
                        OR d.request_timestamp > now() + interval '5 seconds'
                   THEN format('result refused: request_timestamp %s is not between a minute before its slot (%s) and now (+5 s)',
                               d.request_timestamp, d.leased)
                   WHEN d.error_kind IS NULL
                        AND (d.http_status_code IS NULL OR d.http_status_code NOT BETWEEN 100 AND 999
                             OR d.response_time_ms IS NULL OR NOT (d.response_time_ms BETWEEN 0 AND 86400000))
                   THEN format('result refused: status %s, response_time_ms %s', d.http_status_code, d.response_time_ms)
                   -- A kind the library does not know (a probe newer than the library).
                   WHEN d.error_kind IS NOT NULL AND d.error_kind <> ALL (webmon.error_kinds())
                   THEN format('result refused: error kind %s is not one of webmon.error_kinds(): %s', d.error_kind, d.error)
               END AS refused
        FROM done d
    ), metric_rows AS (
        INSERT INTO webmon.metrics (request_timestamp, monitor_id, response_time_ms, http_status_code,
                                    probe_id, regex_matched, page_content, region)
        SELECT c.request_timestamp, c.monitor_id, c.response_time_ms, c.http_status_code,
               completer, c.regex_matched, left(c.page_content, 1000), c.from_region
        FROM checked c
        WHERE c.error_kind IS NULL AND c.refused IS NULL
    ), error_rows AS (
        INSERT INTO webmon.errors (request_timestamp, monitor_id, error_kind, error, probe_id, region)
        SELECT CASE WHEN c.refused IS NULL THEN c.request_timestamp ELSE c.leased END, c.monitor_id,
               CASE WHEN c.refused IS NULL THEN c.error_kind ELSE 'other' END,
               left(coalesce(c.refused, c.error, ''), 1000), completer, c.from_region
        FROM checked c
        WHERE c.error_kind IS NOT NULL OR c.refused IS NOT NULL
    )
    SELECT count(*) INTO accepted FROM done;
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
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    releaser smallint := webmon.probe_id(probe);
    released int;
BEGIN
    -- Not started: the same slot goes back to the queue at once, this lease not counted.
    UPDATE webmon.jobs
    SET leased_by = NULL, requeued = true, scheduled_at = leased_slot, lease_expires_at = now(),
        attempts = greatest(attempts - 1, 0)
    WHERE id = ANY (job_ids) AND leased_by = releaser;
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


-- New ids start after every id 0.3.0 gave out (a 0.3.0 probe's late result names one).
SELECT setval(pg_get_serial_sequence('webmon.jobs', 'id'), last_value) FROM webmon.jobs_0_3_id_seq WHERE is_called;
-- One row per monitor and region. A monitor's 0.3.0 job goes to the region of the probe that
-- leases it (else to its first region) and keeps its id, lease and attempts. While that job
-- waited unclaimed, every region checks its slot as it is (requeued: however late the update
-- runs, the slot is not skipped), else starts at the next slot 0.3.0 had set. The grid stays
-- the one 0.3.0 followed (from its next_check_at).
INSERT INTO webmon.jobs (id, monitor_id, region, check_interval, grid_start, scheduled_at, leased_slot,
                         leased_by, lease_expires_at, attempts, requeued)
OVERRIDING SYSTEM VALUE
SELECT CASE WHEN keeps_job THEN o.id ELSE nextval(pg_get_serial_sequence('webmon.jobs', 'id')) END,
       m.id, r.region, m.check_interval, m.next_check_at,
       CASE WHEN o.id IS NOT NULL AND o.leased_by IS NULL THEN o.scheduled_at ELSE m.next_check_at END,
       CASE WHEN keeps_job AND o.leased_by IS NOT NULL THEN o.scheduled_at END,
       CASE WHEN keeps_job THEN o.leased_by END,
       CASE WHEN keeps_job AND o.leased_by IS NOT NULL THEN o.lease_expires_at
            ELSE coalesce(o.lease_expires_at, now()) END,
       CASE WHEN keeps_job THEN o.attempts ELSE 0 END,
       o.id IS NOT NULL AND o.leased_by IS NULL
FROM webmon.monitors m
CROSS JOIN LATERAL (
    SELECT w.region, row_number() OVER (ORDER BY w.region) AS n
    FROM webmon.wanted_jobs w WHERE w.monitor_id = m.id
) r
LEFT JOIN LATERAL (
    SELECT j.id, j.scheduled_at, j.attempts, j.leased_by, j.lease_expires_at,
           (SELECT p.region FROM webmon.probes p WHERE p.id = j.leased_by) AS leaser_region
    FROM webmon.jobs_0_3 j WHERE j.monitor_id = m.id
) o ON true
CROSS JOIN LATERAL (
    SELECT o.id IS NOT NULL
           AND CASE WHEN coalesce(o.leaser_region, '') IN (SELECT w.region FROM webmon.wanted_jobs w WHERE w.monitor_id = m.id)
                    THEN r.region = coalesce(o.leaser_region, '')
                    ELSE r.n = 1 END AS keeps_job
) k;
DROP TABLE webmon.jobs_0_3;

-- As sql/status.sql of 0.4.0:
-- Query in place: the state of each monitor and region, probes' regions, uptime. Loaded by
-- CREATE EXTENSION after queue.sql; the 0.3.0 → 0.4.0 update runs this file's text as it was
-- in 0.4.0 (what existed before is CREATE OR REPLACE).

-- A probe counts as live while its heartbeat (every 10 seconds) is less than a minute old.
CREATE FUNCTION webmon.probe_is_live(last_seen_at timestamptz) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT last_seen_at > now() - interval '1 minute'
$$;
COMMENT ON FUNCTION webmon.probe_is_live(timestamptz) IS
    'pg_webmon: whether a probe last seen at this time is live (its heartbeat, every 10 seconds, is less than a minute old).';

-- What one result says about the site: true (up), false (down), or NULL when it says nothing
-- (no_probe, lost: no probe checked it, which is the monitoring's failure, not the site's).
CREATE FUNCTION webmon.result_is_up(expected_status int4range, http_status_code smallint,
                                    regex_matched boolean, error_kind text) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
               WHEN error_kind IN ('no_probe', 'lost') THEN NULL
               WHEN error_kind IS NOT NULL THEN false
               WHEN http_status_code IS NULL THEN NULL
               ELSE expected_status @> http_status_code::int AND coalesce(regex_matched, true)
           END
$$;
COMMENT ON FUNCTION webmon.result_is_up(int4range, smallint, boolean, text) IS
    'pg_webmon: whether a result shows the site up (a response, status in expected_status, regex matched if any), down (any other result), or NULL (no_probe, lost: nobody checked it).';

CREATE VIEW webmon.region_status AS
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
    -- The newest result from this region, looked for over the last ten intervals (at least
    -- an hour): older ones say nothing about now, and a region that stopped reporting must
    -- not make this read all of the monitor's history.
    SELECT x.* FROM (
        (SELECT mt.request_timestamp, mt.http_status_code, mt.response_time_ms, mt.regex_matched,
                NULL::text AS error_kind, NULL::text AS error
         FROM webmon.metrics mt
         WHERE mt.monitor_id = m.id AND mt.region = r.region
           AND mt.request_timestamp > now() - lookback.span
         ORDER BY mt.request_timestamp DESC LIMIT 1)
        UNION ALL
        (SELECT e.request_timestamp, NULL::smallint, NULL::real, NULL::boolean, e.error_kind, e.error
         FROM webmon.errors e
         WHERE e.monitor_id = m.id AND e.region = r.region
           AND e.request_timestamp > now() - lookback.span
         ORDER BY e.request_timestamp DESC LIMIT 1)
    ) x
    ORDER BY x.request_timestamp DESC
    LIMIT 1
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
       (SELECT min(j.scheduled_at) FROM webmon.jobs j WHERE j.monitor_id = m.id) AS next_check_at,
       last.region AS last_region,
       quorum.states AS region_states,
       CASE WHEN m.regions IS NOT NULL THEN coalesce(m.down_quorum, quorum.regions / 2 + 1) END AS down_quorum
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
) quorum ON m.regions IS NOT NULL;
COMMENT ON VIEW webmon.monitor_status IS
    'pg_webmon: each monitor''s last result (when, status code, response time, error, region) and whether it is up. Up = got a response, status in expected_status, regex (if any) matched; NULL when nobody checked it (no_probe, lost). With regions: down when down_quorum live regions failed in the newest slot reported, with each region''s state in region_states; a region without a live probe is unmonitored, never down.';

CREATE VIEW webmon.regions AS
WITH named AS (
    SELECT DISTINCT u.region
    FROM webmon.monitors m, unnest(m.regions) AS u(region)
    WHERE m.enabled AND u.region IS NOT NULL
    UNION
    SELECT p.region FROM webmon.probes p WHERE p.region IS NOT NULL
)
SELECT n.region,
       (SELECT count(*) FROM webmon.probes p
        WHERE p.region = n.region AND webmon.probe_is_live(p.last_seen_at)) AS live_probes,
       (SELECT count(*) FROM webmon.probes p WHERE p.region = n.region) AS probes,
       (SELECT max(p.last_seen_at) FROM webmon.probes p WHERE p.region = n.region) AS last_seen_at,
       (SELECT count(*) FROM webmon.monitors m WHERE m.enabled AND n.region = ANY (m.regions)) AS monitors
FROM named n;
COMMENT ON VIEW webmon.regions IS
    'pg_webmon: every region that a probe or an enabled monitor names: its live probes (heartbeat less than a minute old), all its probes, when one was last seen, and how many monitors check from it. A region with monitors and no live probe is unmonitored.';
CREATE OR REPLACE FUNCTION webmon.uptime(since interval DEFAULT '1 day')
RETURNS TABLE (monitor_id bigint, url text, checks bigint, failures bigint, uptime_pct numeric,
               p50_ms real, p95_ms real, p99_ms real)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH responses AS (
        SELECT mt.monitor_id,
               count(*) AS checks,
               count(*) FILTER (WHERE NOT (m.expected_status @> mt.http_status_code::int
                                           AND coalesce(mt.regex_matched, true))) AS failures,
               percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY mt.response_time_ms) AS pct
        FROM webmon.metrics mt JOIN webmon.monitors m ON m.id = mt.monitor_id
        WHERE mt.request_timestamp >= now() - since
        GROUP BY mt.monitor_id
    ), no_response AS (
        SELECT e.monitor_id, count(*) AS checks
        FROM webmon.errors e
        -- Nobody checked these: neither up nor down.
        WHERE e.request_timestamp >= now() - since AND e.error_kind NOT IN ('no_probe', 'lost')
        GROUP BY e.monitor_id
    )
    SELECT m.id, m.url,
           coalesce(r.checks, 0) + coalesce(n.checks, 0),
           coalesce(r.failures, 0) + coalesce(n.checks, 0),
           round(100.0 * (coalesce(r.checks, 0) - coalesce(r.failures, 0))
                 / nullif(coalesce(r.checks, 0) + coalesce(n.checks, 0), 0), 3),
           r.pct[1]::real, r.pct[2]::real, r.pct[3]::real
    FROM webmon.monitors m
    LEFT JOIN responses r ON r.monitor_id = m.id
    LEFT JOIN no_response n ON n.monitor_id = m.id
    ORDER BY m.id
$$;
COMMENT ON FUNCTION webmon.uptime(interval) IS
    'pg_webmon: per monitor over the last `since`: checks, failures (down or no response), uptime %, and p50/p95/p99 response time in ms of the checks that got a response. Checks nobody ran (no_probe, lost) count neither way.';


-- ---------------------------------------------------------------------------------------------
-- Grants. A GRANT made here would be recorded as the extension's own (pg_init_privs), so a
-- dump would leave it out: roles are not granted here. Probe roles keep the 0.3.0 form of
-- complete_checks (a 0.4.0 probe uses it while it may not call the new one); a NOTICE names
-- the roles to grant again, which gives them the new function and views.
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION webmon.grant_probe(role_name name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA webmon TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION webmon.register_probe(text, text, text), '
                   'webmon.claim_checks(text, int, interval, interval), '
                   'webmon.complete_checks(text, bigint[], timestamptz[], timestamptz[], real[], smallint[], boolean[], text[], text[], text[]), '
                   -- The form probes before 0.4.0 call, so a probe of either version runs during an upgrade.
                   'webmon.complete_checks(text, bigint[], timestamptz[], real[], smallint[], boolean[], text[], text[], text[]), '
                   'webmon.release_checks(text, bigint[]) TO %I', role_name);
    EXECUTE format('GRANT SELECT ON webmon.monitor_status TO %I', role_name);
END
$$;
COMMENT ON FUNCTION webmon.grant_probe(name) IS
    'pg_webmon: grant a role exactly what webmon-worker needs: the probe API functions and read access to webmon.monitor_status. It gets no direct access to any table.';

CREATE OR REPLACE FUNCTION webmon.grant_reader(role_name name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA webmon TO %I', role_name);
    -- Not headers and body: they can hold credentials (Authorization, API keys).
    EXECUTE format('GRANT SELECT (id, url, name, method, check_interval, timeout, regex, expected_status, '
                   'follow_redirects, regions, down_quorum, enabled, next_check_at, created_at) ON webmon.monitors TO %I', role_name);
    EXECUTE format('GRANT SELECT ON webmon.metrics, webmon.errors, webmon.probes, webmon.jobs, webmon.partitions, '
                   'webmon.monitor_status, webmon.region_status, webmon.regions TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION webmon.uptime(interval) TO %I', role_name);
END
$$;
COMMENT ON FUNCTION webmon.grant_reader(name) IS
    'pg_webmon: grant a role read access to monitors (without headers and body, which can hold credentials), results, probes, the queue, webmon.monitor_status, webmon.region_status, webmon.regions and webmon.uptime(); nothing it can change.';


DO $$
DECLARE
    probes text;
    readers text;
BEGIN
    SELECT string_agg(DISTINCT quote_literal(r.rolname), ', ') INTO probes
    FROM pg_catalog.pg_proc p, LATERAL aclexplode(p.proacl) a
    JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
    WHERE p.oid = 'webmon.claim_checks(text, int, interval, interval)'::regprocedure
      AND a.privilege_type = 'EXECUTE' AND r.rolname <> current_user;
    SELECT string_agg(DISTINCT quote_literal(r.rolname), ', ') INTO readers
    FROM pg_catalog.pg_class c, LATERAL aclexplode(c.relacl) a
    JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
    WHERE c.oid = 'webmon.metrics'::regclass AND a.privilege_type = 'SELECT' AND r.rolname <> current_user;
    IF probes IS NOT NULL THEN
        RAISE NOTICE 'pg_webmon 0.4.0: grant the probe roles % again with webmon.grant_probe(): it adds the new form of complete_checks (until then their probes use the 0.3.0 form)', probes;
    END IF;
    IF readers IS NOT NULL THEN
        RAISE NOTICE 'pg_webmon 0.4.0: grant the reading roles % again with webmon.grant_reader() or webmon.grant_editor(): it adds webmon.region_status, webmon.regions, monitors.down_quorum, and webmon.jobs (a new table)', readers;
    END IF;
END
$$;
