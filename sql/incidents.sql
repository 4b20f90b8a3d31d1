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
    last_failure_at timestamptz,
    reminded_at     timestamptz
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
COMMENT ON COLUMN webmon.incidents.reminded_at IS 'When channels were last told of it: when it opened, then at each reminder (monitors.remind_every).';

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

-- Tells of an incident's event: NOTIFY webmon_events and, when to_channels, a notification
-- for each of the monitor's channels (webmon.enqueue_notifications). What cannot be told (a
-- payload over NOTIFY's limit, a bug) is a WARNING: storing the results that changed the
-- incident never depends on it.
CREATE FUNCTION webmon.notify_event(event text, i webmon.incidents, to_channels boolean) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    BEGIN
        PERFORM pg_notify('webmon_events', webmon.incident_event(event, i)::text);
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pg_webmon: no webmon_events notification for incident %: %', i.id, SQLERRM;
    END;
    IF to_channels THEN
        BEGIN
            PERFORM webmon.enqueue_notifications(event, i);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'pg_webmon: no notifications for the % of incident %: % (%)', event, i.id, SQLERRM, SQLSTATE;
        END;
    END IF;
END
$$;
COMMENT ON FUNCTION webmon.notify_event(text, webmon.incidents, boolean) IS
    'pg_webmon: NOTIFY webmon_events with the incident''s event (webmon.incident_event()) and, when to_channels, write its notifications (webmon.enqueue_notifications()); a failure of either is a WARNING, never an error.';

-- Opens and resolves the incidents of monitors whose region verdicts a batch of results
-- changed (complete_checks calls it; the steady "up, still up" path never does). Per
-- monitor, in id order: an advisory lock, so that probes of several regions completing at
-- once each see the others' verdicts (read after the lock, in a new snapshot); then down
-- when at least down_quorum of its job rows (regions) say down, degraded when that many say
-- down or degraded. A monitor in a maintenance window is left as it is (its checks are
-- stored; review_incidents evaluates it again after the window).
CREATE FUNCTION webmon.update_incidents(monitor_ids bigint[], checked_at timestamptz[],
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
REVOKE ALL ON FUNCTION webmon.notify_event(text, webmon.incidents, boolean) FROM PUBLIC;

-- pg_dump keeps incidents (history users read and alerts refer to).
SELECT pg_catalog.pg_extension_config_dump('webmon.incidents', '');
SELECT pg_catalog.pg_extension_config_dump('webmon.incidents_id_seq', '');
