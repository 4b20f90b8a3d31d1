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
    created_at       timestamptz NOT NULL DEFAULT now(),
    down_quorum      int,
    down_after       int         NOT NULL DEFAULT 2,
    up_after         int         NOT NULL DEFAULT 1,
    degraded_after_ms int,
    remind_every     interval,
    channels         text[],
    -- A monitor's job ids are -(2 × id + 0 or 1) (webmon.job_id): ids must leave room for that.
    CONSTRAINT monitors_id_range CHECK (id BETWEEN 1 AND 4611686018427387903)
);

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
COMMENT ON COLUMN webmon.monitors.regions IS 'Check from each of these regions in every slot (one check per region, by a probe registered with it). NULL: one check per slot, by any probe.';
COMMENT ON COLUMN webmon.monitors.down_quorum IS 'How many regions must see a check fail in the same slot for the monitor to count as down. NULL: a majority of its regions.';
COMMENT ON COLUMN webmon.monitors.down_after IS 'Consecutive failed checks (no response, status outside expected_status, regex not matched) before a region counts as down and, with a quorum of regions down, a down incident opens. 1 to 1,000; default 2.';
COMMENT ON COLUMN webmon.monitors.up_after IS 'Consecutive good checks before a down region counts as up again (and the incident is resolved). 1 to 1,000; default 1.';
COMMENT ON COLUMN webmon.monitors.degraded_after_ms IS 'A good check slower than this (ms) is slow; down_after consecutive slow checks make the monitor degraded, not down, until a check is fast again. NULL: never degraded.';
COMMENT ON COLUMN webmon.monitors.remind_every IS 'While down, remind the channels this often (1 second to 365 days). NULL: no reminders.';
COMMENT ON COLUMN webmon.monitors.channels IS 'Names of webmon.channels that get this monitor''s alerts (an empty list: none). NULL: the default channels.';
COMMENT ON COLUMN webmon.monitors.next_check_at IS 'The first check (by default now(): right away). The checks after it are on a grid of check_interval that starts here when this time lies ahead, else a fraction of the interval later chosen by the monitor id, so that monitors added together are spread out (webmon.grid_start()). Set it to move the next check, e.g. now() to check right away; webmon.monitor_status.next_check_at shows the next slot.';

-- Validation uses the same Rust crates (url, regex, http) as the probe.
CREATE FUNCTION webmon.monitors_validate() RETURNS trigger
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
    IF NEW.remind_every NOT BETWEEN interval '1 second' AND interval '365 days' THEN
        RAISE EXCEPTION 'invalid remind_every %: it must be from 1 second to 365 days, or NULL', NEW.remind_every
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF TG_OP = 'INSERT' OR NEW.channels IS DISTINCT FROM OLD.channels THEN
        SELECT string_agg(DISTINCT coalesce(c.name, 'NULL'), ', ') INTO problem
        FROM unnest(NEW.channels) AS c(name)
        WHERE NOT EXISTS (SELECT 1 FROM webmon.channels ch WHERE ch.name = c.name);
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION 'invalid channels: no channel named %', problem
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Add it to webmon.channels first; NULL means the default channels.';
        END IF;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION webmon.monitors_validate() IS
    'pg_webmon: trigger that refuses invalid monitors (SQLSTATE 22023, or 2201B for a bad regex).';

CREATE TRIGGER monitors_validate
    BEFORE INSERT OR UPDATE OF url, method, headers, body, check_interval, timeout, regex, expected_status, name, regions, down_quorum,
                               down_after, up_after, degraded_after_ms, remind_every, channels
    ON webmon.monitors FOR EACH ROW EXECUTE FUNCTION webmon.monitors_validate();

-- ---------------------------------------------------------------------------------------------
-- Probes (the job queue is in queue.sql).
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
-- PL/pgSQL, so that its plans are kept: every claim and completion asks it (an SQL function
-- with a SET clause is parsed and planned again on each call).
CREATE FUNCTION webmon.may_act_as(owner_role name) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN owner_role IS NULL
        OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = owner_role)
        OR (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = session_user)
        OR pg_catalog.pg_has_role(session_user, owner_role, 'USAGE');
END
$$;
COMMENT ON FUNCTION webmon.may_act_as(name) IS
    'pg_webmon: whether the session''s login role may act as a probe owned by owner_role (that role or a member of it, or a superuser).';

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
    page_content      text,
    region            text
) PARTITION BY RANGE (request_timestamp);

COMMENT ON TABLE webmon.metrics IS
    'pg_webmon: one row per check that got an HTTP response (any status). Partitioned by request_timestamp.';
COMMENT ON COLUMN webmon.metrics.request_timestamp IS 'When the request started.';
COMMENT ON COLUMN webmon.metrics.response_time_ms IS 'Request start to body read (body capped), in milliseconds.';
COMMENT ON COLUMN webmon.metrics.regex_matched IS 'Whether the monitor''s regex matched the body; NULL when the monitor has no regex.';
COMMENT ON COLUMN webmon.metrics.page_content IS 'The text the regex matched (cut to 1000 characters); NULL when no match.';
COMMENT ON COLUMN webmon.metrics.region IS 'The region the check ran from (the job''s, else the probe''s); NULL when the probe has none.';

CREATE TABLE webmon.errors (
    request_timestamp timestamptz NOT NULL,
    monitor_id        bigint      NOT NULL,
    error_kind        text        NOT NULL,
    error             text        NOT NULL,
    probe_id          smallint,
    region            text
) PARTITION BY RANGE (request_timestamp);

COMMENT ON TABLE webmon.errors IS
    'pg_webmon: one row per check that got no response. error_kind: dns, connect, tls, timeout, redirect, body, blocked, lost, no_probe, other (see webmon.error_kinds()).';
COMMENT ON COLUMN webmon.errors.region IS 'The region the check ran from, or was meant to (no_probe, lost); NULL when none.';

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
-- Monitors that cannot run (the scheduler calls it; users may).
-- ---------------------------------------------------------------------------------------------
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

-- ---------------------------------------------------------------------------------------------
-- Probe registration. SECURITY DEFINER with a fixed search_path: a probe role needs EXECUTE only.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION webmon.register_probe(probe text, region text DEFAULT NULL, version text DEFAULT NULL)
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

-- ---------------------------------------------------------------------------------------------
-- Privileges: the probe API is not for everyone.
-- ---------------------------------------------------------------------------------------------
REVOKE ALL ON FUNCTION webmon.register_probe(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.probe_id(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.may_act_as(name) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.report_unrunnable_monitors(int) FROM PUBLIC;

CREATE FUNCTION webmon.grant_probe(role_name name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA webmon TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION webmon.register_probe(text, text, text), '
                   'webmon.claim_checks(text, int, interval, interval), '
                   'webmon.complete_checks(text, bigint[], timestamptz[], timestamptz[], real[], smallint[], boolean[], text[], text[], text[]), '
                   -- The form probes before 0.4.0 call, so a probe of either version runs during an upgrade.
                   'webmon.complete_checks(text, bigint[], timestamptz[], real[], smallint[], boolean[], text[], text[], text[]), '
                   'webmon.release_checks(text, bigint[]), '
                   'webmon.claim_notifications(text, int, interval), '
                   'webmon.finish_notifications(text, bigint[], text[], boolean[]) TO %I', role_name);
    EXECUTE format('GRANT SELECT ON webmon.monitor_status TO %I', role_name);
END
$$;
COMMENT ON FUNCTION webmon.grant_probe(name) IS
    'pg_webmon: grant a role exactly what webmon-worker needs: the probe API functions (checks and notifications) and read access to webmon.monitor_status. It gets no direct access to any table.';

CREATE FUNCTION webmon.grant_reader(role_name name) RETURNS void
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
                   'webmon.rollup_state, webmon.rollup_totals TO %I', role_name);
    -- Not settings: webhook URLs and SMTP passwords are credentials.
    EXECUTE format('GRANT SELECT (name, kind, is_default, created_at) ON webmon.channels TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION webmon.uptime(interval, bigint[]), webmon.uptime_between(timestamptz, timestamptz, bigint[]), '
                   'webmon.sla(date, bigint[]) TO %I', role_name);
END
$$;
COMMENT ON FUNCTION webmon.grant_reader(name) IS
    'pg_webmon: grant a role read access to monitors (without headers and body, which can hold credentials), results, incidents, notifications, maintenance windows, channels (without their settings), probes, the queue, rollups, webmon.monitor_status, webmon.region_status, webmon.regions, webmon.uptime(), webmon.uptime_between() and webmon.sla(); nothing it can change.';

CREATE FUNCTION webmon.grant_editor(role_name name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM webmon.grant_reader(role_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON webmon.monitors, webmon.maintenance TO %I', role_name);
    -- Channels can be added, changed and deleted; their settings are not read back.
    EXECUTE format('GRANT INSERT, UPDATE, DELETE ON webmon.channels TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION webmon.import_monitors(jsonb) TO %I', role_name);
END
$$;
COMMENT ON FUNCTION webmon.grant_editor(name) IS
    'pg_webmon: grant a role what webmon.grant_reader() grants, and adding, changing, pausing and deleting monitors (also webmon.import_monitors()), maintenance windows and channels (whose settings it can write but not read); no access to results beyond reading, the queue or the probe API.';

-- pg_dump keeps what users wrote.
SELECT pg_catalog.pg_extension_config_dump('webmon.monitors', '');
SELECT pg_catalog.pg_extension_config_dump('webmon.monitors_id_seq', '');
-- Probes too (results name them by id), and the partition bookkeeping (without it a restored
-- database would never drop its restored partitions).
SELECT pg_catalog.pg_extension_config_dump('webmon.probes', '');
SELECT pg_catalog.pg_extension_config_dump('webmon.probes_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('webmon.partitions', '');
