-- pg_webmon 0.1.0 -> 0.2.0. Released scripts are never edited; the next version gets its own.
\echo Use "ALTER EXTENSION pg_webmon UPDATE TO '0.2.0'" to load this file. \quit

-- This update locks every partition of the results in one transaction (about 4 lock slots
-- each): stop with a clear message, before any work, where the lock table cannot hold that.
DO $$
DECLARE
    partitions int := (SELECT count(*) FROM pg_catalog.pg_inherits
                       WHERE inhparent IN ('webmon.metrics'::regclass, 'webmon.errors'::regclass));
    slots int := current_setting('max_locks_per_transaction')::int
                 * (current_setting('max_connections')::int + current_setting('max_worker_processes')::int
                    + current_setting('autovacuum_max_workers')::int + current_setting('max_prepared_transactions')::int);
BEGIN
    IF partitions * 4 > slots / 2 THEN
        RAISE EXCEPTION 'pg_webmon: % result partitions are more than one update can lock with max_locks_per_transaction = %',
            partitions, current_setting('max_locks_per_transaction')
            USING HINT = format('Set max_locks_per_transaction to at least %s, restart PostgreSQL, and run the update again.',
                                partitions * 8 / (slots / current_setting('max_locks_per_transaction')::int) + 1);
    END IF;
END
$$;

-- Partitions made while 0.1.0's CREATE EXTENSION ran belong to the extension: they cannot be
-- dropped past retention and pg_dump skips their rows. Release them (results are user data).
DO $$
DECLARE
    member regclass;
BEGIN
    FOR member IN
        SELECT c.oid::regclass
        FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_class c ON c.oid = d.objid AND d.classid = 'pg_catalog.pg_class'::regclass
        JOIN pg_catalog.pg_inherits i ON i.inhrelid = c.oid
        WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass
          AND d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'pg_webmon')
          AND d.deptype = 'e'
          AND i.inhparent IN ('webmon.metrics'::regclass, 'webmon.errors'::regclass)
    LOOP
        EXECUTE format('ALTER EXTENSION pg_webmon DROP TABLE %s', member);
    END LOOP;
END
$$;

-- Each partition gets its own (monitor_id, request_timestamp) index and the parents none: a
-- partitioned index of the extension is re-created on every partition a restore attaches, and
-- the restore's own CREATE INDEX of that partition then fails. This builds one index per
-- existing partition, in this transaction: results wait (the probes keep them) until it ends.
DROP INDEX webmon.metrics_monitor_time_idx;
DROP INDEX webmon.errors_monitor_time_idx;
DO $$
DECLARE
    child regclass;
BEGIN
    FOR child IN
        SELECT i.inhrelid::regclass FROM pg_catalog.pg_inherits i
        WHERE i.inhparent IN ('webmon.metrics'::regclass, 'webmon.errors'::regclass)
    LOOP
        EXECUTE format('CREATE INDEX %I ON %s (monitor_id, request_timestamp)',
                       (SELECT relname FROM pg_catalog.pg_class WHERE oid = child) || '_monitor_time_idx', child);
    END LOOP;
END
$$;
CREATE OR REPLACE FUNCTION webmon.create_partition(parent regclass, range_start timestamptz, range_end timestamptz)
RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parent_name text := (SELECT relname FROM pg_class WHERE oid = parent);
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
        EXECUTE format('WITH moved AS (DELETE FROM webmon.%I WHERE request_timestamp >= $1 AND request_timestamp < $2 RETURNING *)
                        INSERT INTO webmon.%I SELECT * FROM moved',
                       parent_name || '_default', partition_name)
            USING range_start, range_end;
    END IF;
    EXECUTE format('CREATE INDEX %I ON webmon.%I (monitor_id, request_timestamp)',
                   partition_name || '_monitor_time_idx', partition_name);
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
    'pg_webmon: make one partition of webmon.metrics or webmon.errors with its (monitor_id, request_timestamp) index, moving any rows of its range out of the default partition. Called by run_maintenance().';

-- Purged in batches.
DROP FUNCTION webmon.purge_default_partition(regclass, timestamptz);
CREATE FUNCTION webmon.purge_default_partition(parent regclass, older_than timestamptz,
                                               max_rows int DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    purged bigint;
BEGIN
    -- In batches: a default partition that filled up (a database made by 0.1.0 after its
    -- partitions stopped being made) is purged a batch per call, never in one long statement.
    EXECUTE format('DELETE FROM webmon.%1$I WHERE ctid = ANY (ARRAY(
                        SELECT ctid FROM webmon.%1$I WHERE request_timestamp < $1 LIMIT $2))',
                   (SELECT relname FROM pg_class WHERE oid = parent) || '_default')
        USING older_than, max_rows;
    GET DIAGNOSTICS purged = ROW_COUNT;
    RETURN purged;
END
$$;
COMMENT ON FUNCTION webmon.purge_default_partition(regclass, timestamptz, int) IS
    'pg_webmon: delete at most max_rows rows past retention from the default partition; returns how many (call again while it returns max_rows). Called by run_maintenance().';
REVOKE ALL ON FUNCTION webmon.purge_default_partition(regclass, timestamptz, int) FROM PUBLIC;

-- New Rust functions (webmon-core rules).
CREATE FUNCTION webmon."error_kinds"() RETURNS TEXT[] /* Vec < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'error_kinds_wrapper';

CREATE FUNCTION webmon."monitor_problem"(
	"check_interval" interval, /* Interval */
	"timeout" interval /* Option < Interval > */
) RETURNS TEXT /* Option < String > */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'monitor_problem_wrapper';

CREATE FUNCTION webmon."next_slot"(
	"previous" timestamp with time zone, /* TimestampWithTimeZone */
	"check_interval" interval, /* Interval */
	"now" timestamp with time zone /* TimestampWithTimeZone */
) RETURNS timestamp with time zone /* TimestampWithTimeZone */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'next_slot_wrapper';

CREATE FUNCTION webmon."slot_before"(
	"next" timestamp with time zone, /* TimestampWithTimeZone */
	"check_interval" interval /* Interval */
) RETURNS timestamp with time zone /* TimestampWithTimeZone */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'slot_before_wrapper';

CREATE FUNCTION webmon."timeout_ms"(
	"timeout" interval /* Option < Interval > */
) RETURNS INT /* Option < i32 > */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'timeout_ms_wrapper';

CREATE FUNCTION webmon."probe_id_reuse_after"() RETURNS interval /* Option < Interval > */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'probe_id_reuse_after_wrapper';

CREATE FUNCTION webmon."validate_monitor_size"(
	"url" TEXT, /* & str */
	"headers" jsonb, /* pgrx :: JsonB */
	"body" TEXT /* Option < & str > */
) RETURNS void
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'validate_monitor_size_wrapper';

CREATE FUNCTION webmon."max_lease"() RETURNS interval /* Option < Interval > */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'max_lease_wrapper';


-- The scheduler's look for monitors it cannot run reads this index, empty in normal
-- operation, instead of every due monitor on every tick. Its predicate is a Rust function
-- of the library: an upgrade script whose release changes monitor_problem's rules must
-- REINDEX it.
CREATE INDEX monitors_problem_idx ON webmon.monitors (next_check_at)
    WHERE enabled AND webmon.monitor_problem(check_interval, timeout) IS NOT NULL;

-- The monitor follows its changes: reschedule, refresh or drop the pending job; the job
-- triggers run as the extension owner.
-- Size limits, and a fixed search_path for the functions that run as the caller.
CREATE OR REPLACE FUNCTION webmon.monitors_validate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.method := upper(NEW.method);
    PERFORM webmon.validate_monitor(NEW.url, NEW.method, NEW.headers, NEW.check_interval,
                                    NEW.timeout, NEW.regex, isempty(NEW.expected_status));
    -- One row must not make every probe that claims it allocate hundreds of MiB.
    PERFORM webmon.validate_monitor_size(NEW.url, NEW.headers, NEW.body);
    RETURN NEW;
END
$$;
DROP TRIGGER monitors_validate ON webmon.monitors;
CREATE TRIGGER monitors_validate
    BEFORE INSERT OR UPDATE OF url, method, headers, body, check_interval, timeout, regex, expected_status
    ON webmon.monitors FOR EACH ROW EXECUTE FUNCTION webmon.monitors_validate();

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

CREATE OR REPLACE FUNCTION webmon.grant_probe(role_name name) RETURNS void
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

-- Roles for people.
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

CREATE OR REPLACE FUNCTION webmon.monitors_delete_job() RETURNS trigger
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
REVOKE ALL ON FUNCTION webmon.monitors_delete_job() FROM PUBLIC;

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
REVOKE ALL ON FUNCTION webmon.monitors_refresh_job() FROM PUBLIC;

COMMENT ON COLUMN webmon.monitors.url IS 'http:// or https:// URL with a host, at most 2,048 bytes.';
COMMENT ON COLUMN webmon.monitors.headers IS 'Request headers: a JSON object of strings, e.g. {"Authorization": "Bearer x"}, at most 16 KiB as JSON text.';
COMMENT ON COLUMN webmon.monitors.body IS 'Request body, sent as is, at most 64 KiB (NULL: none).';
COMMENT ON COLUMN webmon.monitors.check_interval IS 'Time between checks, 1 second to 365 days, without months or mixed signs (a day is 24 hours). Checks start on whole multiples of it from the first slot: no drift.';
COMMENT ON COLUMN webmon.monitors.timeout IS 'Whole-exchange timeout (connect to last body byte), above 0 and at most 5 minutes, without months or mixed signs. NULL: the probe''s default (HTTP_CHECK_DEFAULT_TIMEOUT).';
COMMENT ON COLUMN webmon.jobs.lease_expires_at IS 'While leased: when the lease ends. Back in the queue (lease expired, or released): when it came back, so pg_webmon.unclaimed_timeout counts from then. NULL: never leased.';

-- 0.1.0 accepted month parts, counting a month as 30 days; 0.2.0 refuses them (PostgreSQL adds
-- calendar months). Such intervals become what 0.1.0 validated: 30 days a month. A value that
-- still cannot run (or whose months could never make a valid one) stays, and the scheduler
-- reports that monitor instead of checking it. The validation trigger is off for it: the row
-- was valid for 0.1.0, and only its interval changes, to a value monitor_problem accepts.
ALTER TABLE webmon.monitors DISABLE TRIGGER monitors_validate;
UPDATE webmon.monitors m
SET check_interval = c.converted
FROM (SELECT id, check_interval
                 - make_interval(months => months)
                 + make_interval(days => 30 * months) AS converted
      FROM (SELECT id, check_interval,
                   (extract(year FROM check_interval) * 12 + extract(month FROM check_interval))::numeric AS total_months
            FROM webmon.monitors) t,
           LATERAL (SELECT total_months::int AS months) n
      WHERE total_months <> 0 AND abs(total_months) <= 12) c
WHERE m.id = c.id AND webmon.monitor_problem(c.converted, m.timeout) IS NULL;
ALTER TABLE webmon.monitors ENABLE TRIGGER monitors_validate;

-- A probe name belongs to the login role that registered it first.
ALTER TABLE webmon.probes ADD COLUMN owner_role name;
COMMENT ON COLUMN webmon.probes.owner_role IS 'The login role that registered this probe name first: only it (or a member of it, or a superuser) may act as this probe.';

CREATE FUNCTION webmon.may_act_as(owner_role name) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT owner_role IS NULL
        OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = owner_role)
        OR (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = session_user)
        OR pg_catalog.pg_has_role(session_user, owner_role, 'USAGE')
$$;
COMMENT ON FUNCTION webmon.may_act_as(name) IS
    'pg_webmon: whether the session''s login role may act as a probe owned by owner_role (that role or a member of it, or a superuser).';
REVOKE ALL ON FUNCTION webmon.may_act_as(name) FROM PUBLIC;

-- Heartbeats no longer draw probe ids; stale ids are reused; an unknown probe is 55000.
CREATE OR REPLACE FUNCTION webmon.register_probe(probe text, region text DEFAULT NULL, version text DEFAULT NULL)
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

CREATE OR REPLACE FUNCTION webmon.probe_id(probe text) RETURNS smallint
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

-- Scheduling that no stored row can stop; checks nobody claims are recorded.
CREATE OR REPLACE FUNCTION webmon.enqueue_due_checks(lookahead interval DEFAULT '1 second', max_jobs int DEFAULT 100000)
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
REVOKE ALL ON FUNCTION webmon.report_unrunnable_monitors(int) FROM PUBLIC;

DROP FUNCTION webmon.requeue_expired_leases(int);
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
REVOKE ALL ON FUNCTION webmon.requeue_expired_leases(int, interval) FROM PUBLIC;

-- Bounded leases; results checked before they count.
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
    'pg_webmon: store one batch of results (parallel arrays, one element per job; error_kinds NULL means a response) in one transaction. Only jobs still leased by this probe are stored and removed from the queue; a result with an impossible timestamp, status or response time is stored as an other error at its slot. Returns how many.';

CREATE OR REPLACE FUNCTION webmon.release_checks(probe text, job_ids bigint[]) RETURNS int
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

COMMENT ON TABLE webmon.errors IS
    'pg_webmon: one row per check that got no response. error_kind: dns, connect, tls, timeout, redirect, body, lost, no_probe, other (see webmon.error_kinds()).';

-- pg_dump keeps probes and the partition bookkeeping.
SELECT pg_catalog.pg_extension_config_dump('webmon.probes', '');
SELECT pg_catalog.pg_extension_config_dump('webmon.probes_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('webmon.partitions', '');

COMMENT ON FUNCTION webmon.validate_monitor_size(text, jsonb, text) IS
    'pg_webmon: refuse a monitor whose url (2,048 bytes), headers (16 KiB as JSON) or body (64 KiB) is too large (SQLSTATE 22023); used by the monitors trigger.';
COMMENT ON FUNCTION webmon.max_lease() IS
    'pg_webmon: pg_webmon.max_lease as the library holds it; webmon.claim_checks refuses longer leases.';
COMMENT ON FUNCTION webmon.monitor_problem(interval, interval) IS
    'pg_webmon: why a stored monitor cannot be scheduled (its interval or timeout breaks the rules), NULL when it can; the scheduler reports such monitors instead of queueing them.';
COMMENT ON FUNCTION webmon.next_slot(timestamptz, interval, timestamptz) IS
    'pg_webmon: the slot after the one a due monitor runs now (a day is 24 hours); an hour from now for an interval that cannot run. Never fails.';
COMMENT ON FUNCTION webmon.slot_before(timestamptz, interval) IS
    'pg_webmon: the slot that a next_check_at follows (next minus the interval, a day being 24 hours).';
COMMENT ON FUNCTION webmon.timeout_ms(interval) IS
    'pg_webmon: a monitor''s timeout in milliseconds for the probe; NULL (the probe''s default) when it has none or an invalid one.';
COMMENT ON FUNCTION webmon.probe_id_reuse_after() IS
    'pg_webmon: how long a probe must be unseen before a new probe takes over its id (pg_webmon.retention + pg_webmon.partition_interval + 1 day); NULL while those settings are invalid.';
COMMENT ON FUNCTION webmon.error_kinds() IS
    'pg_webmon: the error kinds webmon.errors.error_kind may hold; its CHECK constraint is built from this list.';

-- 0.1.0 stored any kind a probe sent; one outside the shared list becomes `other`, so that
-- the constraint below can hold.
UPDATE webmon.errors SET error_kind = 'other' WHERE error_kind <> ALL (webmon.error_kinds());

-- error_kind holds one of the kinds the probe and the extension share (webmon-core); the
-- constraint's list is built from that list, not typed here a second time.
DO $$
BEGIN
    EXECUTE format('ALTER TABLE webmon.errors ADD CONSTRAINT errors_error_kind_check CHECK (error_kind = ANY (%L::text[]))',
                   webmon.error_kinds());
END
$$;
