-- pg_webmon schema: tables, views and SQL functions.
-- Loaded by CREATE EXTENSION after the Rust functions exist (extension_sql_file!, finalize),
-- so everything here may call them. The extension's schema is `webmon` (see the control file).

-- ---------------------------------------------------------------------------------------------
-- Monitors: what to check and how often. The only table users write.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE webmon.monitors (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url              text        NOT NULL,
    name             text,
    method           text        NOT NULL DEFAULT 'GET',
    headers          jsonb       NOT NULL DEFAULT '{}',
    body             text,
    check_interval   interval    NOT NULL DEFAULT '1 minute',
    timeout          interval,
    regex            text,
    expected_status  int4range   NOT NULL DEFAULT '[200,400)',
    follow_redirects boolean     NOT NULL DEFAULT true,
    regions          text[],
    enabled          boolean     NOT NULL DEFAULT true,
    next_check_at    timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now()
);
-- The scheduler's scan: due, enabled monitors in slot order.
CREATE INDEX monitors_due_idx ON webmon.monitors (next_check_at) WHERE enabled;

COMMENT ON TABLE webmon.monitors IS
    'pg_webmon: one row per monitored URL. INSERT to start monitoring, UPDATE to change, set enabled = false to pause, DELETE to stop. Every value is validated on INSERT and UPDATE.';
COMMENT ON COLUMN webmon.monitors.url IS 'http:// or https:// URL with a host, at most 2,048 bytes.';
COMMENT ON COLUMN webmon.monitors.method IS 'HTTP method: GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS.';
COMMENT ON COLUMN webmon.monitors.headers IS 'Request headers: a JSON object of strings, e.g. {"Authorization": "Bearer x"}, at most 16 KiB as JSON text.';
COMMENT ON COLUMN webmon.monitors.body IS 'Request body, sent as is, at most 64 KiB (NULL: none).';
COMMENT ON COLUMN webmon.monitors.check_interval IS 'Time between checks, 1 second to 365 days, without months or mixed signs (a day is 24 hours). Checks start on whole multiples of it from the first slot: no drift.';
COMMENT ON COLUMN webmon.monitors.timeout IS 'Whole-exchange timeout (connect to last body byte), above 0 and at most 5 minutes, without months or mixed signs. NULL: the probe''s default (HTTP_CHECK_DEFAULT_TIMEOUT).';
COMMENT ON COLUMN webmon.monitors.regex IS 'Rust regex searched (unanchored) in the response body; the check is up only if it matches. NULL: no search.';
COMMENT ON COLUMN webmon.monitors.expected_status IS 'HTTP status codes that count as up. Default [200,400).';
COMMENT ON COLUMN webmon.monitors.follow_redirects IS 'Follow up to 10 redirects (true) or report the redirect status itself (false).';
COMMENT ON COLUMN webmon.monitors.regions IS 'Only probes registered with one of these regions check this monitor. NULL: any probe.';
COMMENT ON COLUMN webmon.monitors.next_check_at IS 'The next slot. Set it to now() to check right away.';

-- Validation uses the same Rust crates (url, regex, http) as the probe.
CREATE FUNCTION webmon.monitors_validate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    problem text;
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
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION webmon.monitors_validate() IS
    'pg_webmon: trigger that refuses invalid monitors (SQLSTATE 22023, or 2201B for a bad regex).';

CREATE TRIGGER monitors_validate
    BEFORE INSERT OR UPDATE OF url, method, headers, body, check_interval, timeout, regex, expected_status, name, regions
    ON webmon.monitors FOR EACH ROW EXECUTE FUNCTION webmon.monitors_validate();

-- A changed check_interval, or a monitor enabled again, is next checked at most one (new)
-- interval from now, not at the slot the old setting left (unless the UPDATE sets
-- next_check_at itself).
CREATE FUNCTION webmon.monitors_reschedule() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.next_check_at IS NOT DISTINCT FROM OLD.next_check_at
       AND (NEW.check_interval IS DISTINCT FROM OLD.check_interval
            OR (NEW.enabled AND NOT OLD.enabled)) THEN
        NEW.next_check_at := least(NEW.next_check_at, webmon.next_slot(now(), NEW.check_interval, now()));
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION webmon.monitors_reschedule() IS
    'pg_webmon: trigger that brings the next check of a monitor to at most one interval from now when its check_interval changes or it is enabled again.';
CREATE TRIGGER monitors_reschedule
    BEFORE UPDATE OF check_interval, enabled ON webmon.monitors
    FOR EACH ROW EXECUTE FUNCTION webmon.monitors_reschedule();

-- ---------------------------------------------------------------------------------------------
-- Probes and the job queue.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE webmon.probes (
    id           smallint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text        NOT NULL UNIQUE,
    region       text,
    version      text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    owner_role   name
);
COMMENT ON TABLE webmon.probes IS
    'pg_webmon: registered probes (webmon-worker processes), kept up to date by webmon.register_probe().';
COMMENT ON COLUMN webmon.probes.owner_role IS 'The login role that registered this probe name first: only it (or a member of it, or a superuser) may act as this probe.';

-- Whether the session's login role may act as a probe owned by owner_role: it is that role
-- (or a member of it), or a superuser; a probe without an owner (registered before 0.2.0) or
-- whose owner role was dropped is free to be taken.
CREATE FUNCTION webmon.may_act_as(owner_role name) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT owner_role IS NULL
        OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = owner_role)
        OR (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = session_user)
        OR pg_catalog.pg_has_role(session_user, owner_role, 'USAGE')
$$;
COMMENT ON FUNCTION webmon.may_act_as(name) IS
    'pg_webmon: whether the session''s login role may act as a probe owned by owner_role (that role or a member of it, or a superuser).';

CREATE TABLE webmon.jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    monitor_id       bigint      NOT NULL UNIQUE,
    scheduled_at     timestamptz NOT NULL,
    regions          text[],
    attempts         int         NOT NULL DEFAULT 0,
    leased_by        smallint,
    lease_expires_at timestamptz
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);
-- Claimable jobs in slot order; leased jobs drop out of this index. Few indexes on purpose:
-- every claim rewrites the row, and each index costs an insert per claimed check. Expired
-- leases are found by scanning this small table (only pending checks live here).
CREATE INDEX jobs_claimable_idx ON webmon.jobs (scheduled_at) WHERE leased_by IS NULL;

-- No foreign key to monitors (its check would cost every enqueued job); this trigger
-- removes the job of a deleted monitor instead.
CREATE FUNCTION webmon.monitors_delete_job() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Runs as the owner: only as the trigger on webmon.monitors (a trigger function's EXECUTE
    -- is checked only when a trigger is created, so refuse any other table).
    IF TG_RELID <> 'webmon.monitors'::regclass THEN
        RAISE EXCEPTION 'webmon.monitors_delete_job() runs only on webmon.monitors' USING ERRCODE = '42501';
    END IF;
    DELETE FROM webmon.jobs WHERE monitor_id = OLD.id;
    RETURN OLD;
END
$$;
COMMENT ON FUNCTION webmon.monitors_delete_job() IS
    'pg_webmon: trigger that removes the pending job of a deleted monitor.';
CREATE TRIGGER monitors_delete_job AFTER DELETE ON webmon.monitors
    FOR EACH ROW EXECUTE FUNCTION webmon.monitors_delete_job();

-- The queue follows the monitor: a paused monitor's job is dropped (not run), and a job
-- waiting for a probe takes the monitor's new regions (it was queued with the old ones, and
-- might match no probe at all). SECURITY DEFINER, like monitors_delete_job: a role that may
-- update monitors needs no privilege on the queue.
CREATE FUNCTION webmon.monitors_refresh_job() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_RELID <> 'webmon.monitors'::regclass THEN
        RAISE EXCEPTION 'webmon.monitors_refresh_job() runs only on webmon.monitors' USING ERRCODE = '42501';
    END IF;
    IF NOT NEW.enabled THEN
        DELETE FROM webmon.jobs WHERE monitor_id = NEW.id;
    ELSIF NEW.regions IS DISTINCT FROM OLD.regions THEN
        UPDATE webmon.jobs SET regions = NEW.regions
        WHERE monitor_id = NEW.id AND leased_by IS NULL;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION webmon.monitors_refresh_job() IS
    'pg_webmon: trigger that drops the pending job of a disabled monitor and gives a waiting job the monitor''s new regions.';
CREATE TRIGGER monitors_refresh_job AFTER UPDATE OF regions, enabled ON webmon.monitors
    FOR EACH ROW EXECUTE FUNCTION webmon.monitors_refresh_job();

COMMENT ON TABLE webmon.jobs IS
    'pg_webmon: the check queue. At most one job per monitor; probes lease jobs with webmon.claim_checks() and remove them with webmon.complete_checks().';
COMMENT ON COLUMN webmon.jobs.scheduled_at IS 'The slot this check belongs to; a probe starts the request at this time.';
COMMENT ON COLUMN webmon.jobs.regions IS 'Copy of the monitor''s regions at queueing time, so claiming reads only this table.';
COMMENT ON COLUMN webmon.jobs.lease_expires_at IS 'While leased: when the lease ends. Back in the queue (lease expired, or released): when it came back, so pg_webmon.unclaimed_timeout counts from then. NULL: never leased.';
COMMENT ON COLUMN webmon.jobs.attempts IS 'How many times a probe has leased this job; after pg_webmon.max_attempts expired leases it is recorded as lost.';

-- ---------------------------------------------------------------------------------------------
-- Results: narrow rows, partitioned by request_timestamp (partitions made by run_maintenance).
-- Each partition has its own (monitor_id, request_timestamp) index, made with it; the parents
-- have none: a partitioned index of the extension would be re-created on every partition a
-- restore attaches, and the restore's own CREATE INDEX of that partition would then fail.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE webmon.metrics (
    request_timestamp timestamptz NOT NULL,
    monitor_id        bigint      NOT NULL,
    response_time_ms  real        NOT NULL,
    http_status_code  smallint    NOT NULL,
    probe_id          smallint,
    regex_matched     boolean,
    page_content      text
) PARTITION BY RANGE (request_timestamp);

COMMENT ON TABLE webmon.metrics IS
    'pg_webmon: one row per check that got an HTTP response (any status). Partitioned by request_timestamp.';
COMMENT ON COLUMN webmon.metrics.request_timestamp IS 'When the request started.';
COMMENT ON COLUMN webmon.metrics.response_time_ms IS 'Request start to body read (body capped), in milliseconds.';
COMMENT ON COLUMN webmon.metrics.regex_matched IS 'Whether the monitor''s regex matched the body; NULL when the monitor has no regex.';
COMMENT ON COLUMN webmon.metrics.page_content IS 'The text the regex matched (cut to 1000 characters); NULL when no match.';

CREATE TABLE webmon.errors (
    request_timestamp timestamptz NOT NULL,
    monitor_id        bigint      NOT NULL,
    error_kind        text        NOT NULL,
    error             text        NOT NULL,
    probe_id          smallint
) PARTITION BY RANGE (request_timestamp);

COMMENT ON TABLE webmon.errors IS
    'pg_webmon: one row per check that got no response. error_kind: dns, connect, tls, timeout, redirect, body, blocked, lost, no_probe, other (see webmon.error_kinds()).';

-- Bookkeeping of the partitions run_maintenance made: their ranges, so nothing is parsed back.
CREATE TABLE webmon.partitions (
    parent      regclass    NOT NULL,
    partition   text        NOT NULL,
    range_start timestamptz NOT NULL,
    range_end   timestamptz NOT NULL,
    PRIMARY KEY (parent, range_start)
);
COMMENT ON TABLE webmon.partitions IS
    'pg_webmon: partitions of webmon.metrics and webmon.errors made by webmon.run_maintenance(), with their ranges.';

-- ---------------------------------------------------------------------------------------------
-- Scheduler steps (called by the background worker every tick; users may call them too).
-- ---------------------------------------------------------------------------------------------
-- enable_seqscan = off: the queue statements are designed to be index-driven; on a churning
-- queue table the planner's row estimates lag behind and a sequential scan over dead rows
-- would cost far more than the index path.
CREATE FUNCTION webmon.enqueue_due_checks(lookahead interval DEFAULT '1 second', max_jobs int DEFAULT 100000)
RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET enable_seqscan = off AS $$
DECLARE
    enqueued int;
BEGIN
    -- One job per monitor. A monitor whose slot has passed while its job is still pending
    -- skips that slot (next_check_at moves to the next slot of its grid), so a slow site or a
    -- backlog neither piles up jobs nor makes every tick walk the same overdue monitors again
    -- (under overload that walk cost 361 ms per tick and starved everything else). In normal
    -- operation this statement finds nothing: due monitors were queued within the lookahead.
    UPDATE webmon.monitors m
    SET next_check_at = webmon.next_slot(m.next_check_at, m.check_interval, now())
    WHERE m.ctid = ANY (ARRAY(
        SELECT d.ctid
        FROM webmon.monitors d
        WHERE d.enabled
          AND d.next_check_at <= now()
          AND EXISTS (SELECT 1 FROM webmon.jobs j WHERE j.monitor_id = d.id)
        ORDER BY d.next_check_at
        LIMIT max_jobs
        FOR UPDATE SKIP LOCKED));
    -- Queue the due monitors without a pending job. Index-driven: due monitors come from
    -- monitors_due_idx and are updated by tuple id (a TID scan: the rows are locked, so their
    -- ctid cannot change before the UPDATE), so the cost follows the number of due checks,
    -- not the number of monitors. Slot arithmetic is webmon.next_slot (a day is 24 hours;
    -- it cannot fail on any stored value).
    WITH due AS (
        UPDATE webmon.monitors m
        SET next_check_at = webmon.next_slot(m.next_check_at, m.check_interval, now())
        WHERE m.ctid = ANY (ARRAY(
            SELECT d.ctid
            FROM webmon.monitors d
            WHERE d.enabled
              AND d.next_check_at <= now() + lookahead
              AND NOT EXISTS (SELECT 1 FROM webmon.jobs j WHERE j.monitor_id = d.id)
              -- Never queue a row the checks cannot run (report_unrunnable_monitors reports it).
              AND webmon.monitor_problem(d.check_interval, d.timeout) IS NULL
            ORDER BY d.next_check_at
            LIMIT max_jobs
            FOR UPDATE SKIP LOCKED))
        RETURNING m.id, webmon.slot_before(m.next_check_at, m.check_interval) AS slot, m.regions
    ), enqueued_jobs AS (
        -- No ON CONFLICT: NOT EXISTS under the monitor's row lock already rules a second job
        -- out, and speculative insertion would cost every job; the unique index still guards.
        INSERT INTO webmon.jobs (monitor_id, scheduled_at, regions)
        SELECT id, slot, regions FROM due
        RETURNING monitor_id
    )
    SELECT count(*) INTO enqueued FROM enqueued_jobs;
    IF enqueued > 0 THEN
        PERFORM pg_notify('webmon_jobs', enqueued::text);
    END IF;
    RETURN enqueued;
END
$$;
COMMENT ON FUNCTION webmon.enqueue_due_checks(interval, int) IS
    'pg_webmon: queue one job for each enabled monitor whose slot is due within lookahead and that has none pending (a passed slot of a monitor whose job is still pending is skipped); advance next_check_at by whole intervals; NOTIFY webmon_jobs. Monitors whose stored interval or timeout cannot run are left to webmon.report_unrunnable_monitors(). Returns the number queued.';

CREATE FUNCTION webmon.report_unrunnable_monitors(max_rows int DEFAULT 10000)
RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    reported int;
BEGIN
    -- A due monitor whose stored interval or timeout the checks cannot run with (written with
    -- triggers disabled, or by an older version) is never queued: it gets an `other` error
    -- row saying why, once an hour, and no other monitor waits for it. Reads
    -- monitors_problem_idx, which is empty in normal operation.
    WITH poisoned AS (
        UPDATE webmon.monitors m
        SET next_check_at = now() + interval '1 hour'
        WHERE m.ctid = ANY (ARRAY(
            SELECT d.ctid
            FROM webmon.monitors d
            WHERE d.enabled
              AND d.next_check_at <= now()
              AND webmon.monitor_problem(d.check_interval, d.timeout) IS NOT NULL
            ORDER BY d.next_check_at
            LIMIT max_rows
            FOR UPDATE SKIP LOCKED))
        RETURNING m.id, webmon.monitor_problem(m.check_interval, m.timeout) AS problem
    )
    INSERT INTO webmon.errors (request_timestamp, monitor_id, error_kind, error)
    SELECT now(), id, 'other', problem FROM poisoned;
    GET DIAGNOSTICS reported = ROW_COUNT;
    RETURN reported;
END
$$;
COMMENT ON FUNCTION webmon.report_unrunnable_monitors(int) IS
    'pg_webmon: record an other error for each due monitor whose stored interval or timeout cannot run, and look at it again in an hour (it is never queued). Returns how many.';

CREATE FUNCTION webmon.requeue_expired_leases(max_attempts int DEFAULT 3,
                                               unclaimed_timeout interval DEFAULT '2 minutes')
RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    requeued int;
BEGIN
    -- A check no probe claimed in time (no live probe in its regions, or all busy) leaves
    -- the queue as a `no_probe` error: the user sees it, and the monitor's next slot runs.
    -- The time counts from its slot, or from when it came back to the queue (an expired or
    -- released lease): a requeued check gets its full chance.
    WITH unclaimed AS (
        DELETE FROM webmon.jobs j
        WHERE j.ctid = ANY (ARRAY(
            SELECT c.ctid FROM webmon.jobs c
            WHERE c.leased_by IS NULL AND c.scheduled_at < now() - unclaimed_timeout
              AND coalesce(c.lease_expires_at, c.scheduled_at) < now() - unclaimed_timeout
            ORDER BY c.scheduled_at
            LIMIT 100000
            FOR UPDATE SKIP LOCKED))
        RETURNING j.monitor_id, j.scheduled_at, j.regions
    )
    INSERT INTO webmon.errors (request_timestamp, monitor_id, error_kind, error)
    SELECT scheduled_at, monitor_id, 'no_probe',
           CASE WHEN regions IS NULL
                THEN format('no probe claimed this check within %s', unclaimed_timeout)
                ELSE format('no probe claimed this check within %s (regions %s)', unclaimed_timeout, regions)
           END
    FROM unclaimed;
    WITH expired AS (
        SELECT id, monitor_id, scheduled_at, attempts, leased_by
        FROM webmon.jobs
        WHERE leased_by IS NOT NULL AND lease_expires_at < now()
        FOR UPDATE SKIP LOCKED
    ), gave_up AS (
        DELETE FROM webmon.jobs j USING expired e
        WHERE j.id = e.id AND e.attempts >= max_attempts
        RETURNING e.*
    ), lost AS (
        INSERT INTO webmon.errors (request_timestamp, monitor_id, error_kind, error, probe_id)
        SELECT scheduled_at, monitor_id, 'lost',
               format('no result after %s leases (last probe id %s)', attempts, leased_by), leased_by
        FROM gave_up
    ), back AS (
        UPDATE webmon.jobs j SET leased_by = NULL, lease_expires_at = now()
        FROM expired e WHERE j.id = e.id AND e.attempts < max_attempts
        RETURNING j.id
    )
    SELECT count(*) INTO requeued FROM back;
    IF requeued > 0 THEN
        PERFORM pg_notify('webmon_jobs', requeued::text);
    END IF;
    RETURN requeued;
END
$$;
COMMENT ON FUNCTION webmon.requeue_expired_leases(int, interval) IS
    'pg_webmon: record checks that no probe claimed within unclaimed_timeout as no_probe; put jobs whose lease expired back in the queue, and after max_attempts leases record them in webmon.errors as lost. Returns the number requeued.';

-- ---------------------------------------------------------------------------------------------
-- Probe API. SECURITY DEFINER with a fixed search_path: a probe role needs EXECUTE only.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION webmon.register_probe(probe text, region text DEFAULT NULL, version text DEFAULT NULL)
RETURNS smallint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    probe_id smallint;
BEGIN
    IF probe IS NULL OR btrim(probe) = '' THEN
        RAISE EXCEPTION 'invalid probe name: it must not be empty' USING ERRCODE = '22023';
    END IF;
    -- A heartbeat is an UPDATE: INSERT … ON CONFLICT would draw an id from the sequence on
    -- every call, and the smallint ids ran out after ~91 hours of heartbeats.
    LOOP
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
COMMENT ON FUNCTION webmon.register_probe(text, text, text) IS
    'pg_webmon: register a probe by name (or refresh its heartbeat and region); returns its id. A heartbeat never draws a new id; a new name takes over the id of a probe unseen for longer than results are kept.';

CREATE FUNCTION webmon.probe_id(probe text) RETURNS smallint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    found smallint;
    probe_owner name;
BEGIN
    SELECT id, owner_role INTO found, probe_owner FROM webmon.probes WHERE name = probe;
    IF found IS NOT NULL AND NOT webmon.may_act_as(probe_owner) THEN
        RAISE EXCEPTION 'probe "%" belongs to another role', probe USING ERRCODE = '42501',
            HINT = 'Each probe acts under its own name; a superuser may act for any probe.';
    END IF;
    IF found IS NULL THEN
        -- 55000 (object_not_in_prerequisite_state), not a data error: a probe's writer retries
        -- its batch after the probe registers again, instead of splitting it.
        RAISE EXCEPTION 'unknown probe "%"', probe USING ERRCODE = '55000',
            HINT = 'Call webmon.register_probe() first.';
    END IF;
    RETURN found;
END
$$;
COMMENT ON FUNCTION webmon.probe_id(text) IS 'pg_webmon: the id of a registered probe that the session''s login role may act as; error if unknown (55000) or another role''s (42501).';

CREATE FUNCTION webmon.claim_checks(probe text, max_jobs int, lease interval DEFAULT '1 minute',
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
    IF max_jobs IS NULL OR max_jobs < 1 THEN
        RETURN;
    END IF;
    -- At most this many per call: a probe asks again when it has room.
    max_jobs := least(max_jobs, 10000);
    -- Read only: the heartbeat (register_probe) keeps last_seen_at, not every claim.
    SELECT region INTO claimer_region FROM webmon.probes WHERE id = claimer;
    -- Reads the claimable-jobs index in slot order and stops after max_jobs; the update
    -- finds the locked rows by tuple id (a TID scan, no index descent per job), so a long
    -- queue is never scanned whole.
    RETURN QUERY
    WITH leased AS (
        UPDATE webmon.jobs j
        SET leased_by = claimer,
            attempts = j.attempts + 1,
            lease_expires_at = greatest(j.scheduled_at, now()) + lease
        WHERE j.ctid = ANY (ARRAY(
            SELECT c.ctid
            FROM webmon.jobs c
            WHERE c.leased_by IS NULL
              AND c.scheduled_at <= now() + lookahead
              AND (c.regions IS NULL OR claimer_region = ANY (c.regions))
            ORDER BY c.scheduled_at
            LIMIT max_jobs
            FOR UPDATE SKIP LOCKED))
        RETURNING j.id, j.monitor_id, j.scheduled_at, j.attempts
    )
    SELECT l.id, l.monitor_id, l.scheduled_at, now(), l.attempts, m.url, m.method, m.headers,
           m.body, webmon.timeout_ms(m.timeout), m.regex, m.follow_redirects
    FROM leased l JOIN webmon.monitors m ON m.id = l.monitor_id
    ORDER BY l.scheduled_at;
END
$$;
COMMENT ON FUNCTION webmon.claim_checks(text, int, interval, interval) IS
    'pg_webmon: lease up to max_jobs (at most 10,000) queued checks due within lookahead (FOR UPDATE SKIP LOCKED), for this probe''s region. The lease runs from the slot for the given interval, above 0 and at most pg_webmon.max_lease.';

CREATE FUNCTION webmon.complete_checks(
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
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_seqscan = off AS $$
DECLARE
    completer smallint := webmon.probe_id(probe);
    accepted int;
BEGIN
    -- Only jobs this probe still leases count; deleting them makes a retried batch a no-op.
    -- RETURNING carries the batch columns, so no second join with the batch is needed.
    WITH done AS (
        DELETE FROM webmon.jobs j
        USING unnest(job_ids, request_timestamps, response_times_ms, http_status_codes,
                     regex_matches, page_contents, error_kinds, error_messages)
            AS b(job_id, request_timestamp, response_time_ms, http_status_code, regex_matched,
                 page_content, error_kind, error)
        WHERE j.id = b.job_id AND j.leased_by = completer
        RETURNING j.monitor_id, j.scheduled_at AS slot, b.*
    ), checked AS (
        -- A result counts as the probe says only when it can be true: started no earlier than a
        -- minute before its slot (probes start at the slot, on the database's clock) and not
        -- more than 5 seconds in the future, and, for a response, a status and a response time from 0 to a day. Any
        -- other result is stored as an `other` error at its slot saying why, so that no row can
        -- claim "up" forever or hide newer failures.
        SELECT d.*,
               CASE
                   WHEN d.request_timestamp IS NULL
                        OR d.request_timestamp < d.slot - interval '1 minute'
                        OR d.request_timestamp > now() + interval '5 seconds'
                   THEN format('result refused: request_timestamp %s is not between a minute before its slot (%s) and now (+5 s)',
                               d.request_timestamp, d.slot)
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
                                    probe_id, regex_matched, page_content)
        SELECT c.request_timestamp, c.monitor_id, c.response_time_ms, c.http_status_code,
               completer, c.regex_matched, left(c.page_content, 1000)
        FROM checked c
        WHERE c.error_kind IS NULL AND c.refused IS NULL
    ), error_rows AS (
        INSERT INTO webmon.errors (request_timestamp, monitor_id, error_kind, error, probe_id)
        SELECT CASE WHEN c.refused IS NULL THEN c.request_timestamp ELSE c.slot END, c.monitor_id,
               CASE WHEN c.refused IS NULL THEN c.error_kind ELSE 'other' END,
               left(coalesce(c.refused, c.error, ''), 1000), completer
        FROM checked c
        WHERE c.error_kind IS NOT NULL OR c.refused IS NOT NULL
    )
    SELECT count(*) INTO accepted FROM done;
    RETURN accepted;
END
$$;
COMMENT ON FUNCTION webmon.complete_checks(text, bigint[], timestamptz[], real[], smallint[], boolean[], text[], text[], text[]) IS
    'pg_webmon: store one batch of results (parallel arrays, one element per job; error_kinds NULL means a response) in one transaction. Only jobs still leased by this probe are stored and removed from the queue; a result with an impossible timestamp, status or response time, or an unknown error kind, is stored as an other error at its slot. Returns how many.';

CREATE FUNCTION webmon.release_checks(probe text, job_ids bigint[]) RETURNS int
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    releaser smallint := webmon.probe_id(probe);
    released int;
BEGIN
    UPDATE webmon.jobs
    SET leased_by = NULL, lease_expires_at = now(), attempts = greatest(attempts - 1, 0)
    WHERE id = ANY (job_ids) AND leased_by = releaser;
    GET DIAGNOSTICS released = ROW_COUNT;
    IF released > 0 THEN
        PERFORM pg_notify('webmon_jobs', released::text);
    END IF;
    RETURN released;
END
$$;
COMMENT ON FUNCTION webmon.release_checks(text, bigint[]) IS
    'pg_webmon: hand back leased jobs that this probe did not start (on shutdown); they return to the queue at once.';

-- ---------------------------------------------------------------------------------------------
-- Query in place.
-- ---------------------------------------------------------------------------------------------
CREATE VIEW webmon.monitor_status AS
SELECT m.id AS monitor_id,
       m.name,
       m.url,
       m.enabled,
       last.request_timestamp AS last_checked_at,
       CASE
           WHEN last.request_timestamp IS NULL THEN NULL
           WHEN last.error_kind IS NOT NULL THEN false
           ELSE m.expected_status @> last.http_status_code::int AND coalesce(last.regex_matched, true)
       END AS up,
       last.http_status_code AS last_status_code,
       last.response_time_ms AS last_response_time_ms,
       last.error_kind AS last_error_kind,
       last.error AS last_error,
       m.next_check_at
FROM webmon.monitors m
LEFT JOIN LATERAL (
    SELECT r.* FROM (
        (SELECT mt.request_timestamp, mt.http_status_code, mt.response_time_ms, mt.regex_matched,
                NULL::text AS error_kind, NULL::text AS error
         FROM webmon.metrics mt WHERE mt.monitor_id = m.id
         ORDER BY mt.request_timestamp DESC LIMIT 1)
        UNION ALL
        (SELECT e.request_timestamp, NULL::smallint, NULL::real, NULL::boolean, e.error_kind, e.error
         FROM webmon.errors e WHERE e.monitor_id = m.id
         ORDER BY e.request_timestamp DESC LIMIT 1)
    ) r
    ORDER BY r.request_timestamp DESC
    LIMIT 1
) last ON true;
COMMENT ON VIEW webmon.monitor_status IS
    'pg_webmon: the last result of each monitor: when, up or down, status code, response time, error. Up = got a response, status in expected_status, regex (if any) matched.';

CREATE FUNCTION webmon.uptime(since interval DEFAULT '1 day')
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
        WHERE e.request_timestamp >= now() - since
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
    'pg_webmon: per monitor over the last `since`: checks, failures (down or no response), uptime %, and p50/p95/p99 response time in ms of the checks that got a response.';

-- ---------------------------------------------------------------------------------------------
-- Privileges: the probe API is not for everyone.
-- ---------------------------------------------------------------------------------------------
REVOKE ALL ON FUNCTION webmon.register_probe(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.probe_id(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.may_act_as(name) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.monitors_delete_job() FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.monitors_refresh_job() FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.claim_checks(text, int, interval, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.complete_checks(text, bigint[], timestamptz[], real[], smallint[], boolean[], text[], text[], text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.release_checks(text, bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.enqueue_due_checks(interval, int) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.requeue_expired_leases(int, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.report_unrunnable_monitors(int) FROM PUBLIC;

CREATE FUNCTION webmon.grant_probe(role_name name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA webmon TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION webmon.register_probe(text, text, text), '
                   'webmon.claim_checks(text, int, interval, interval), '
                   'webmon.complete_checks(text, bigint[], timestamptz[], real[], smallint[], boolean[], text[], text[], text[]), '
                   'webmon.release_checks(text, bigint[]) TO %I', role_name);
    EXECUTE format('GRANT SELECT ON webmon.monitor_status TO %I', role_name);
END
$$;
COMMENT ON FUNCTION webmon.grant_probe(name) IS
    'pg_webmon: grant a role exactly what webmon-worker needs: the probe API functions and read access to webmon.monitor_status. It gets no direct access to any table.';

CREATE FUNCTION webmon.grant_reader(role_name name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA webmon TO %I', role_name);
    -- Not headers and body: they can hold credentials (Authorization, API keys).
    EXECUTE format('GRANT SELECT (id, url, name, method, check_interval, timeout, regex, expected_status, '
                   'follow_redirects, regions, enabled, next_check_at, created_at) ON webmon.monitors TO %I', role_name);
    EXECUTE format('GRANT SELECT ON webmon.metrics, webmon.errors, webmon.probes, '
                   'webmon.jobs, webmon.partitions, webmon.monitor_status TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION webmon.uptime(interval) TO %I', role_name);
END
$$;
COMMENT ON FUNCTION webmon.grant_reader(name) IS
    'pg_webmon: grant a role read access to monitors (without headers and body, which can hold credentials), results, probes, the queue, webmon.monitor_status and webmon.uptime(); nothing it can change.';

CREATE FUNCTION webmon.grant_editor(role_name name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM webmon.grant_reader(role_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON webmon.monitors TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION webmon.import_monitors(jsonb) TO %I', role_name);
END
$$;
COMMENT ON FUNCTION webmon.grant_editor(name) IS
    'pg_webmon: grant a role what webmon.grant_reader() grants, and adding, changing, pausing and deleting monitors (also webmon.import_monitors()); no access to results beyond reading, the queue or the probe API.';

-- pg_dump keeps what users wrote.
SELECT pg_catalog.pg_extension_config_dump('webmon.monitors', '');
SELECT pg_catalog.pg_extension_config_dump('webmon.monitors_id_seq', '');
-- Probes too (results name them by id), and the partition bookkeeping (without it a restored
-- database would never drop its restored partitions).
SELECT pg_catalog.pg_extension_config_dump('webmon.probes', '');
SELECT pg_catalog.pg_extension_config_dump('webmon.probes_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('webmon.partitions', '');
