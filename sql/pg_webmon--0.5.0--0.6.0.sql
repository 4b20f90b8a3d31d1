-- pg_webmon 0.5.0 → 0.6.0
--
-- Alerts: channels (webhook, Slack, Discord, email, pg_notify) and an outbox of notifications
-- written in the transaction that opens or resolves an incident and delivered by probes;
-- reminders while down (monitors.remind_every), a monitor's own channels (monitors.channels),
-- maintenance windows. complete_checks computes each result's outcome once and looks up each
-- job by its key whatever the batch's size; claim_checks reads due jobs in slot order and
-- stops at max_jobs. No stored row changes.
--
-- Probe roles granted before 0.6.0 need webmon.grant_probe() again to deliver notifications
-- (the update grants nothing: its grants would be recorded as the extension's own).

-- Every table the update changes, first, in the order monitor_status reads them.
LOCK TABLE webmon.monitors, webmon.jobs, webmon.incidents IN ACCESS EXCLUSIVE MODE;


-- ---------------------------------------------------------------------------------------------
-- Monitors: reminders and their own channels.
-- ---------------------------------------------------------------------------------------------
ALTER TABLE webmon.monitors ADD COLUMN remind_every interval, ADD COLUMN channels text[];

COMMENT ON COLUMN webmon.monitors.remind_every IS 'While down, remind the channels this often (1 second to 365 days). NULL: no reminders.';

COMMENT ON COLUMN webmon.monitors.channels IS 'Names of webmon.channels that get this monitor''s alerts (an empty list: none). NULL: the default channels.';

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

DROP TRIGGER monitors_validate ON webmon.monitors;

CREATE TRIGGER monitors_validate
    BEFORE INSERT OR UPDATE OF url, method, headers, body, check_interval, timeout, regex, expected_status, name, regions, down_quorum,
                               down_after, up_after, degraded_after_ms, remind_every, channels
    ON webmon.monitors FOR EACH ROW EXECUTE FUNCTION webmon.monitors_validate();

CREATE OR REPLACE FUNCTION webmon.grant_probe(role_name name) RETURNS void
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
                   'webmon.notifications, webmon.maintenance TO %I', role_name);
    -- Not settings: webhook URLs and SMTP passwords are credentials.
    EXECUTE format('GRANT SELECT (name, kind, is_default, created_at) ON webmon.channels TO %I', role_name);
    EXECUTE format('GRANT EXECUTE ON FUNCTION webmon.uptime(interval) TO %I', role_name);
END
$$;

COMMENT ON FUNCTION webmon.grant_reader(name) IS
    'pg_webmon: grant a role read access to monitors (without headers and body, which can hold credentials), results, incidents, notifications, maintenance windows, channels (without their settings), probes, the queue, webmon.monitor_status, webmon.region_status, webmon.regions and webmon.uptime(); nothing it can change.';

CREATE OR REPLACE FUNCTION webmon.grant_editor(role_name name) RETURNS void
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


-- ---------------------------------------------------------------------------------------------
-- Incidents: reminders, and channels told of each event.
-- ---------------------------------------------------------------------------------------------
ALTER TABLE webmon.incidents ADD COLUMN reminded_at timestamptz;

COMMENT ON COLUMN webmon.incidents.reminded_at IS 'When channels were last told of it: when it opened, then at each reminder (monitors.remind_every).';

DROP FUNCTION webmon.notify_event(text, webmon.incidents);

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

REVOKE ALL ON FUNCTION webmon.notify_event(text, webmon.incidents, boolean) FROM PUBLIC;

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
        SELECT count(j.id) AS regions,
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


-- ---------------------------------------------------------------------------------------------
-- Alerts: channels, the outbox, maintenance windows, the scheduler's review (sql/alerts.sql).
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION webmon.channel_settings_problem(
	"kind" TEXT, /* & str */
	"settings" jsonb /* pgrx :: JsonB */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'channel_settings_problem_wrapper';

CREATE FUNCTION webmon.alert_message(
	"event" TEXT, /* & str */
	"kind" TEXT, /* & str */
	"name" TEXT, /* & str */
	"url" TEXT, /* & str */
	"since" TEXT, /* & str */
	"duration_s" double precision, /* Option < f64 > */
	"cause" TEXT /* Option < & str > */
) RETURNS TEXT /* String */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'alert_message_wrapper';

CREATE FUNCTION webmon.shown_url(
	"url" TEXT /* & str */
) RETURNS TEXT /* String */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'shown_url_wrapper';

COMMENT ON FUNCTION webmon.channel_settings_problem(text, jsonb) IS
    'pg_webmon: why a channel''s kind or settings are refused, NULL when they are fine; the channels trigger raises it (SQLSTATE 22023).';

COMMENT ON FUNCTION webmon.alert_message(text, text, text, text, text, float8, text) IS
    'pg_webmon: the one-line text of an alert (event, incident kind, monitor name and URL, start time as text, duration in seconds, cause).';

COMMENT ON FUNCTION webmon.shown_url(text) IS
    'pg_webmon: a monitor''s URL as alerts show it: without credentials, query or fragment, which can hold secrets.';

CREATE TABLE webmon.channels (
    name       text        PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),
    kind       text        NOT NULL,
    settings   jsonb       NOT NULL DEFAULT '{}',
    is_default boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE webmon.channels IS
    'pg_webmon: where alerts go. A monitor''s channels column names its channels; NULL sends to every channel with is_default. Settings are validated on INSERT and UPDATE (SQLSTATE 22023).';
COMMENT ON COLUMN webmon.channels.kind IS 'webhook (a JSON POST), slack, discord, email (SMTP) or pg_notify.';
COMMENT ON COLUMN webmon.channels.settings IS 'webhook: {"url": "...", "headers": {...}}; slack, discord: {"url": "..."} (the incoming webhook URL); email: {"smtp": "host:port", "from": "...", "to": ["..."], "username": "...", "password": "...", "tls": "starttls" (default) | "tls" | "none"}; pg_notify: {"channel": "..."}. Can hold secrets: webmon.grant_reader() does not grant it.';
COMMENT ON COLUMN webmon.channels.is_default IS 'Alerts of monitors whose channels column is NULL go to every default channel.';

-- Settings are checked on INSERT and UPDATE; a channel named by a monitor stays (no rename,
-- no delete) until no monitor names it.
CREATE FUNCTION webmon.channels_validate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    problem text;
    users int;
BEGIN
    IF TG_OP <> 'DELETE' THEN
        problem := webmon.channel_settings_problem(NEW.kind, NEW.settings);
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION '%', problem USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND NEW.name IS DISTINCT FROM OLD.name) THEN
        SELECT count(*) INTO users FROM webmon.monitors m WHERE OLD.name = ANY (m.channels);
        IF users > 0 THEN
            RAISE EXCEPTION 'channel % is named by % monitor(s)', OLD.name, users
                USING ERRCODE = 'foreign_key_violation',
                      HINT = 'Change their channels column first.';
        END IF;
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;
COMMENT ON FUNCTION webmon.channels_validate() IS
    'pg_webmon: trigger that refuses invalid channel settings (SQLSTATE 22023), and the renaming or deleting of a channel a monitor names (23503).';
CREATE TRIGGER channels_validate BEFORE INSERT OR UPDATE OR DELETE ON webmon.channels
    FOR EACH ROW EXECUTE FUNCTION webmon.channels_validate();

-- ---------------------------------------------------------------------------------------------
-- The outbox
-- ---------------------------------------------------------------------------------------------
CREATE TABLE webmon.notifications (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id     bigint,
    monitor_id      bigint,
    channel         text        NOT NULL,
    event           text        NOT NULL
                                CHECK (event IN ('down', 'recovered', 'degraded', 'reminder', 'cert_expiry')),
    payload         jsonb       NOT NULL,
    idempotency_key uuid        NOT NULL DEFAULT gen_random_uuid(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        int         NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    leased_by       smallint,
    delivered_at    timestamptz,
    gave_up_at      timestamptz,
    last_error      text
);
-- What probes claim: only undelivered notifications.
CREATE INDEX notifications_due_idx ON webmon.notifications (next_attempt_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;
-- What purge_notifications deletes.
CREATE INDEX notifications_created_idx ON webmon.notifications (created_at);
-- A monitor's undelivered notifications per channel, in order: each goes out after the ones
-- before it (a recovery never arrives before its down, nor an old incident's after a new one's).
CREATE INDEX notifications_monitor_idx ON webmon.notifications (monitor_id, channel, id)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;
COMMENT ON TABLE webmon.notifications IS
    'pg_webmon: the alert outbox. One row per event and channel, written in the transaction that opens or resolves the incident; probes lease due rows, deliver them (at least once: receivers drop repeats by idempotency_key) and mark them delivered, retrying with backoff until pg_webmon.notification_give_up has passed. Rows older than pg_webmon.retention are deleted.';
COMMENT ON COLUMN webmon.notifications.payload IS 'The event as JSON (incident, monitor name and URL, times, cause, message); sent with idempotency_key and notification_id added.';
COMMENT ON COLUMN webmon.notifications.idempotency_key IS 'The same in every delivery attempt of this notification (the payload''s idempotency_key, the Idempotency-Key header, the email''s Message-ID).';
COMMENT ON COLUMN webmon.notifications.attempts IS 'Delivery attempts started (leases taken).';
COMMENT ON COLUMN webmon.notifications.next_attempt_at IS 'When it may be claimed next: the retry after a failure (1 s, 2 s, 4 s … at most 5 minutes apart), or the end of a probe''s lease.';
COMMENT ON COLUMN webmon.notifications.gave_up_at IS 'When delivery stopped: pg_webmon.notification_give_up after it was written, or its channel was deleted. last_error says why.';

-- The line of an alert (webmon_core::alerts), from an incident and its monitor.
CREATE FUNCTION webmon.incident_message(event text, i webmon.incidents, name text, url text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT webmon.alert_message(
        event, i.kind, coalesce(name, ''), url,
        to_char(i.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'),
        extract(epoch FROM coalesce(i.resolved_at, now()) - i.started_at)::float8,
        i.cause)
$$;
COMMENT ON FUNCTION webmon.incident_message(text, webmon.incidents, text, text) IS
    'pg_webmon: the one-line text of an incident''s event (webmon.alert_message()), with the monitor''s name and URL.';

-- Writes one notification per channel of the incident's monitor (its channels, or the
-- default ones), and wakes the probes. A pg_notify channel is told at once, by this
-- transaction's commit. Returns how many.
CREATE FUNCTION webmon.enqueue_notifications(event text, i webmon.incidents) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m record;
    c record;
    payload jsonb;
    key uuid;
    failure text;
    written int := 0;
BEGIN
    SELECT mo.name, mo.url, mo.channels INTO m FROM webmon.monitors mo WHERE mo.id = i.monitor_id;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    -- The URL as shown: without credentials, query or fragment, which can hold secrets.
    payload := webmon.incident_event(event, i)
               || jsonb_build_object('url', webmon.shown_url(m.url),
                                     'message', webmon.incident_message(event, i, m.name, webmon.shown_url(m.url)));
    FOR c IN
        SELECT ch.name, ch.kind, ch.settings FROM webmon.channels ch
        WHERE CASE WHEN m.channels IS NULL THEN ch.is_default ELSE ch.name = ANY (m.channels) END
        ORDER BY ch.name
    LOOP
        IF c.kind = 'pg_notify' THEN
            -- Like webmon_events: LISTENers are any role, so no URL.
            key := gen_random_uuid();
            failure := NULL;
            BEGIN
                PERFORM pg_notify(c.settings->>'channel',
                                  (webmon.incident_event(event, i) || jsonb_build_object('idempotency_key', key))::text);
            EXCEPTION WHEN OTHERS THEN
                failure := left(SQLERRM, 1000);
            END;
            INSERT INTO webmon.notifications (incident_id, monitor_id, channel, event, payload, idempotency_key,
                                              attempts, delivered_at, gave_up_at, last_error)
            VALUES (i.id, i.monitor_id, c.name, event, payload - 'url', key, 1,
                    CASE WHEN failure IS NULL THEN now() END, CASE WHEN failure IS NOT NULL THEN now() END, failure);
        ELSE
            -- A newer alert of the incident replaces its reminders not yet out (a channel that
            -- was down for hours gets one reminder, not one per remind_every).
            UPDATE webmon.notifications n
            SET gave_up_at = now(), last_error = 'replaced by a newer ' || enqueue_notifications.event || ' alert'
            WHERE n.incident_id = i.id AND n.channel = c.name AND n.event = 'reminder'
              AND n.delivered_at IS NULL AND n.gave_up_at IS NULL AND n.leased_by IS NULL;
            INSERT INTO webmon.notifications (incident_id, monitor_id, channel, event, payload)
            VALUES (i.id, i.monitor_id, c.name, event, payload);
        END IF;
        written := written + 1;
    END LOOP;
    IF written > 0 THEN
        PERFORM pg_notify('webmon_notifications', '');
    END IF;
    RETURN written;
END
$$;
COMMENT ON FUNCTION webmon.enqueue_notifications(text, webmon.incidents) IS
    'pg_webmon: write the notifications of an incident''s event, one per channel of its monitor (its channels, or the default channels), and wake the probes; pg_notify channels are notified by this transaction''s commit. Returns how many.';

-- Probes: lease due notifications, with what their channel needs. The lease is the next
-- attempt's time: a probe that dies leaves them due again when it ends.
CREATE FUNCTION webmon.claim_notifications(probe text, max_notifications int, lease interval)
RETURNS TABLE (notification_id bigint, channel text, kind text, settings jsonb, event text,
               payload jsonb, idempotency_key uuid, attempts int)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    claimer smallint := webmon.probe_id(probe);
BEGIN
    IF max_notifications NOT BETWEEN 1 AND 10000 OR lease IS NULL
       OR lease NOT BETWEEN interval '1 second' AND interval '1 hour' THEN
        RAISE EXCEPTION 'claim_notifications: max_notifications must be 1 to 10000 and lease 1 second to 1 hour, not % and %',
            max_notifications, lease USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    WITH due AS (
        SELECT n.id FROM webmon.notifications n
        WHERE n.delivered_at IS NULL AND n.gave_up_at IS NULL AND n.next_attempt_at <= now()
          -- In order per monitor and channel: not while an earlier one is still to go.
          AND NOT EXISTS (SELECT 1 FROM webmon.notifications e
                          WHERE e.monitor_id = n.monitor_id AND e.channel = n.channel AND e.id < n.id
                            AND e.delivered_at IS NULL AND e.gave_up_at IS NULL)
        ORDER BY n.next_attempt_at
        LIMIT max_notifications
        FOR UPDATE SKIP LOCKED
    )
    UPDATE webmon.notifications n
    SET attempts = n.attempts + 1, leased_by = claimer, next_attempt_at = now() + lease
    FROM due JOIN webmon.channels c ON true
    WHERE n.id = due.id AND c.name = n.channel
    RETURNING n.id, n.channel, c.kind, c.settings, n.event,
              n.payload || jsonb_build_object('idempotency_key', n.idempotency_key, 'notification_id', n.id),
              n.idempotency_key, n.attempts;
END
$$;
COMMENT ON FUNCTION webmon.claim_notifications(text, int, interval) IS
    'pg_webmon: for probes: lease up to max_notifications due notifications for lease (1 second to 1 hour), with their channel''s kind and settings and the payload to send; report each with webmon.finish_notifications().';

-- Probes: what became of each leased notification (NULL error: delivered). A failure counts
-- only from the probe holding the lease; a delivery counts from any (it happened).
CREATE FUNCTION webmon.finish_notifications(probe text, notification_ids bigint[], errors text[],
                                            final boolean[] DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    finisher smallint := webmon.probe_id(probe);
    finished int;
BEGIN
    IF cardinality(notification_ids) IS DISTINCT FROM cardinality(errors)
       OR (final IS NOT NULL AND cardinality(final) IS DISTINCT FROM cardinality(errors)) THEN
        RAISE EXCEPTION 'finish_notifications: % notification ids, % errors and % finals', cardinality(notification_ids),
            cardinality(errors), cardinality(final)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE webmon.notifications n
    SET delivered_at = CASE WHEN f.error IS NULL THEN now() END,
        leased_by = NULL,
        last_error = CASE WHEN f.error IS NULL THEN n.last_error ELSE left(f.error, 1000) END,
        -- A refusal no retry can change (a receiver's 4xx, an SMTP 5xx): given up at once, so
        -- that the alerts behind it go out.
        gave_up_at = CASE WHEN f.error IS NOT NULL AND f.final THEN now() END,
        -- 1 s after the first failed attempt, doubling up to 5 minutes.
        next_attempt_at = CASE WHEN f.error IS NULL THEN n.next_attempt_at
                               ELSE now() + least(interval '1 second' * power(2, least(greatest(n.attempts, 1), 20) - 1),
                                                  interval '5 minutes') END
    FROM unnest(notification_ids, errors, coalesce(final, array_fill(false, ARRAY[cardinality(errors)])))
        AS f(id, error, final)
    WHERE n.id = f.id AND n.delivered_at IS NULL AND n.gave_up_at IS NULL
      AND (f.error IS NULL OR n.leased_by = finisher);
    GET DIAGNOSTICS finished = ROW_COUNT;
    RETURN finished;
END
$$;
COMMENT ON FUNCTION webmon.finish_notifications(text, bigint[], text[], boolean[]) IS
    'pg_webmon: for probes: mark leased notifications delivered (error NULL) or failed (the error kept, the next attempt after a backoff of 1 s doubling to 5 minutes; given up at once when final). Returns how many were updated.';

-- ---------------------------------------------------------------------------------------------
-- Maintenance windows
-- ---------------------------------------------------------------------------------------------
CREATE TABLE webmon.maintenance (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    monitor_id bigint REFERENCES webmon.monitors (id) ON DELETE CASCADE,
    during     tstzrange,
    weekly     jsonb,
    reason     text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((during IS NULL) <> (weekly IS NULL))
);
CREATE INDEX maintenance_monitor_idx ON webmon.maintenance (monitor_id);
COMMENT ON TABLE webmon.maintenance IS
    'pg_webmon: maintenance windows. While one covers a monitor its checks run and are stored, no incident opens or resolves, nothing is notified, and webmon.monitor_status shows maintenance.';
COMMENT ON COLUMN webmon.maintenance.monitor_id IS 'The monitor; NULL: every monitor.';
COMMENT ON COLUMN webmon.maintenance.during IS 'A one-off window, e.g. tstzrange(''2026-12-01 02:00+00'', ''2026-12-01 04:00+00''). Either this or weekly.';
COMMENT ON COLUMN webmon.maintenance.weekly IS 'A weekly window: {"days": ["mon", "thu"], "start": "02:00", "duration": "2 hours", "time_zone": "Europe/Berlin"}; days from mon to sun, start as HH:MM local time, duration above 0 and at most 7 days.';

CREATE FUNCTION webmon.maintenance_validate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    days text[];
    duration interval;
BEGIN
    IF NEW.during IS NOT NULL AND (isempty(NEW.during) OR lower_inf(NEW.during) OR upper_inf(NEW.during)) THEN
        RAISE EXCEPTION 'invalid during %: a window needs a start and an end', NEW.during
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.weekly IS NULL THEN
        RETURN NEW;
    END IF;
    IF jsonb_typeof(NEW.weekly) IS DISTINCT FROM 'object'
       OR EXISTS (SELECT 1 FROM jsonb_object_keys(NEW.weekly) k WHERE k NOT IN ('days', 'start', 'duration', 'time_zone'))
       OR NOT NEW.weekly ?& ARRAY['days', 'start', 'duration', 'time_zone'] THEN
        RAISE EXCEPTION 'invalid weekly %: it must have exactly days, start, duration and time_zone', NEW.weekly
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. {"days": ["sun"], "start": "02:00", "duration": "2 hours", "time_zone": "UTC"}';
    END IF;
    BEGIN
        days := ARRAY(SELECT jsonb_array_elements_text(NEW.weekly->'days'));
        duration := (NEW.weekly->>'duration')::interval;
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'invalid weekly %: %', NEW.weekly, SQLERRM USING ERRCODE = 'invalid_parameter_value';
    END;
    IF cardinality(days) = 0
       OR NOT days <@ ARRAY['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun']
       OR NEW.weekly->>'start' !~ '^([01][0-9]|2[0-3]):[0-5][0-9]$'
       OR NOT (duration > interval '0' AND duration <= interval '7 days') THEN
        RAISE EXCEPTION 'invalid weekly %: days must list mon … sun, start be HH:MM from 00:00 to 23:59 and duration above 0 and at most 7 days', NEW.weekly
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- A zone name (abbreviations depend on a session setting), e.g. Europe/Berlin or UTC.
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names z WHERE lower(z.name) = lower(NEW.weekly->>'time_zone')) THEN
        RAISE EXCEPTION 'invalid weekly %: time_zone % is not a time zone name PostgreSQL knows', NEW.weekly, NEW.weekly->>'time_zone'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'SELECT name FROM pg_timezone_names lists them, e.g. Europe/Berlin or UTC.';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION webmon.maintenance_validate() IS
    'pg_webmon: trigger that refuses a maintenance window without both ends, or a weekly rule that is not {days, start, duration, time_zone} with valid values (SQLSTATE 22023).';
CREATE TRIGGER maintenance_validate BEFORE INSERT OR UPDATE ON webmon.maintenance
    FOR EACH ROW EXECUTE FUNCTION webmon.maintenance_validate();

-- The maintenance window that covers this monitor at this time (the earliest started, when
-- several do), or NULL.
-- SECURITY DEFINER, and callable by all: monitor_status calls it for roles that may read
-- only the view (it tells whether and when a window covers a monitor, nothing more).
CREATE FUNCTION webmon.maintenance_window(monitor bigint, at timestamptz) RETURNS tstzrange
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT x.win FROM (
        SELECT w.during AS win
        FROM webmon.maintenance w
        WHERE w.during @> at AND (w.monitor_id IS NULL OR w.monitor_id = monitor)
        UNION ALL
        -- A weekly rule: its window on each of the last 8 local days it lists, from the local
        -- start to the local start plus the duration (a day of it is a local day).
        SELECT tstzrange(s.starts, s.ends)
        FROM webmon.maintenance w,
             generate_series(0, 7) AS back(days),
             LATERAL (SELECT (at AT TIME ZONE (w.weekly->>'time_zone'))::date - back.days AS day) d,
             LATERAL (SELECT (d.day + (w.weekly->>'start')::time) AT TIME ZONE (w.weekly->>'time_zone') AS starts,
                             (d.day + (w.weekly->>'start')::time + (w.weekly->>'duration')::interval)
                                 AT TIME ZONE (w.weekly->>'time_zone') AS ends) s
        WHERE w.weekly IS NOT NULL AND (w.monitor_id IS NULL OR w.monitor_id = monitor)
          AND w.weekly->'days' ? (ARRAY['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'])[extract(isodow FROM d.day)::int]
          AND at >= s.starts AND at < s.ends
    ) x
    ORDER BY lower(x.win)
    LIMIT 1
$$;
COMMENT ON FUNCTION webmon.maintenance_window(bigint, timestamptz) IS
    'pg_webmon: the maintenance window (webmon.maintenance) that covers the monitor at that time, the earliest started when several do; NULL when none does.';

-- ---------------------------------------------------------------------------------------------
-- The scheduler's review, every second: incidents no check will end, reminders, give-ups.
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION webmon.review_incidents(give_up interval) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    again bigint[];
    i webmon.incidents;
BEGIN
    -- Each step on its own: one that fails (a bug, a lock) is a WARNING and never stops the
    -- others; the next review tries again.
    BEGIN
        -- Monitors to evaluate again: an open incident that no region's verdict holds up any
        -- more (its monitor left a maintenance window with the site fine, or an update of
        -- incidents failed); and, while maintenance windows exist, a bad verdict without an
        -- incident (the site turned bad during a window that has ended). A monitor still in
        -- a window is skipped there; unknown regions never resolve anything.
        SELECT array_agg(DISTINCT x.monitor_id ORDER BY x.monitor_id) INTO again
        FROM (SELECT o.monitor_id
              FROM webmon.incidents o
              WHERE o.resolved_at IS NULL AND o.kind IN ('down', 'degraded')
                AND NOT EXISTS (SELECT 1 FROM webmon.jobs j
                                WHERE j.monitor_id = o.monitor_id
                                  AND j.verdict IN ('down', CASE WHEN o.kind = 'degraded' THEN 'degraded' END))
                -- Some region says up: without that (every probe gone) nothing could resolve
                -- it, and it is not worth a look every second.
                AND EXISTS (SELECT 1 FROM webmon.jobs j WHERE j.monitor_id = o.monitor_id AND j.verdict = 'up')
              UNION ALL
              (SELECT j.monitor_id
               FROM webmon.jobs j JOIN webmon.monitors m ON m.id = j.monitor_id
               WHERE EXISTS (SELECT 1 FROM webmon.maintenance)
                 AND NOT EXISTS (SELECT 1 FROM webmon.incidents o
                                 WHERE o.monitor_id = j.monitor_id AND o.resolved_at IS NULL)
               GROUP BY j.monitor_id, m.down_quorum
               HAVING count(*) FILTER (WHERE j.verdict IN ('down', 'degraded'))
                      >= coalesce(m.down_quorum, count(*) / 2 + 1)
               LIMIT 1000)) x;
        IF again IS NOT NULL THEN
            PERFORM webmon.update_incidents(again, array_fill(now(), ARRAY[cardinality(again)]),
                                            array_fill(0, ARRAY[cardinality(again)]),
                                            array_fill(NULL::timestamptz, ARRAY[cardinality(again)]));
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pg_webmon: evaluating incidents again failed: % (%)', SQLERRM, SQLSTATE;
    END;
    BEGIN
        -- Reminders while down, every remind_every after channels were last told (not in
        -- maintenance). Incidents a completion is updating are left for the next review.
        FOR i IN
            UPDATE webmon.incidents o SET reminded_at = now()
            WHERE o.id IN (
                SELECT d.id FROM webmon.incidents d JOIN webmon.monitors m ON m.id = d.monitor_id
                WHERE d.resolved_at IS NULL AND d.kind = 'down' AND m.remind_every IS NOT NULL
                  AND coalesce(d.reminded_at, d.started_at) + m.remind_every <= now()
                  -- Not while no region says down (its probes gone): that is not "still down".
                  AND EXISTS (SELECT 1 FROM webmon.jobs j WHERE j.monitor_id = d.monitor_id AND j.verdict = 'down')
                  AND webmon.maintenance_window(m.id, now()) IS NULL
                FOR UPDATE OF d SKIP LOCKED)
            RETURNING o.*
        LOOP
            PERFORM webmon.enqueue_notifications('reminder', i);
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pg_webmon: reminders failed: % (%)', SQLERRM, SQLSTATE;
    END;
    BEGIN
        -- Deliveries that ran out of time, or whose channel is gone (not while leased).
        UPDATE webmon.notifications n
        SET gave_up_at = now(), leased_by = NULL,
            last_error = CASE WHEN NOT EXISTS (SELECT 1 FROM webmon.channels c WHERE c.name = n.channel)
                              THEN 'channel ' || n.channel || ' was deleted'
                              ELSE coalesce(n.last_error, 'no attempt finished') END
                         || format(' (gave up after %s attempts)', n.attempts)
        WHERE n.delivered_at IS NULL AND n.gave_up_at IS NULL AND n.next_attempt_at <= now()
          AND (n.created_at < now() - give_up
               OR NOT EXISTS (SELECT 1 FROM webmon.channels c WHERE c.name = n.channel));
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pg_webmon: giving up old notifications failed: % (%)', SQLERRM, SQLSTATE;
    END;
END
$$;
COMMENT ON FUNCTION webmon.review_incidents(interval) IS
    'pg_webmon: the scheduler''s check every second: evaluate again open incidents no region''s verdict holds up and, while maintenance windows exist, bad verdicts without an incident; send due reminders (monitors.remind_every); give up deliveries older than give_up or whose channel was deleted. Each step''s failure is a WARNING.';

-- Delivered and given-up notifications older than the results' retention (the scheduler
-- calls it every five minutes, with incidents').
CREATE FUNCTION webmon.purge_notifications(older_than interval) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    purged int;
BEGIN
    DELETE FROM webmon.notifications WHERE id IN (
        SELECT n.id FROM webmon.notifications n
        WHERE n.created_at < now() - older_than
          AND (n.delivered_at IS NOT NULL OR n.gave_up_at IS NOT NULL)
        LIMIT 100000);
    GET DIAGNOSTICS purged = ROW_COUNT;
    RETURN purged;
END
$$;
COMMENT ON FUNCTION webmon.purge_notifications(interval) IS
    'pg_webmon: delete delivered or given-up notifications written more than older_than ago, at most 100,000 a call; returns how many.';

-- One-off maintenance windows that ended longer ago than the results' retention.
CREATE FUNCTION webmon.purge_maintenance(older_than interval) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    purged int;
BEGIN
    DELETE FROM webmon.maintenance w WHERE upper(w.during) < now() - older_than;
    GET DIAGNOSTICS purged = ROW_COUNT;
    RETURN purged;
END
$$;
COMMENT ON FUNCTION webmon.purge_maintenance(interval) IS
    'pg_webmon: delete one-off maintenance windows that ended more than older_than ago (the scheduler passes pg_webmon.retention every five minutes); returns how many.';

REVOKE ALL ON FUNCTION webmon.purge_maintenance(interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.enqueue_notifications(text, webmon.incidents) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.claim_notifications(text, int, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.finish_notifications(text, bigint[], text[], boolean[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.review_incidents(interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION webmon.purge_notifications(interval) FROM PUBLIC;

-- pg_dump keeps channels, windows and the outbox (undelivered alerts survive a restore).
SELECT pg_catalog.pg_extension_config_dump('webmon.channels', '');
SELECT pg_catalog.pg_extension_config_dump('webmon.maintenance', '');
SELECT pg_catalog.pg_extension_config_dump('webmon.maintenance_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('webmon.notifications', '');
SELECT pg_catalog.pg_extension_config_dump('webmon.notifications_id_seq', '');


-- ---------------------------------------------------------------------------------------------
-- State: maintenance.
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
    -- Looked up only when some window exists (the uncorrelated test runs once per query).
    SELECT CASE WHEN (SELECT EXISTS (SELECT 1 FROM webmon.maintenance))
                THEN webmon.maintenance_window(m.id, now()) END AS covering
) maintenance
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
    'pg_webmon: each monitor''s last result (when, status code, response time, error, region) and whether it is up. Up = got a response, status in expected_status, regex (if any) matched; NULL when nobody checked it (no_probe, lost). With regions: down when down_quorum live regions failed in the newest slot reported, with each region''s state in region_states; a region without a live probe is unmonitored, never down. state (paused, maintenance, down, degraded, pending, up, unknown) and state_since follow the monitor''s maintenance windows, incidents and down_after, up_after and degraded_after_ms.';


-- ---------------------------------------------------------------------------------------------
-- Completing checks: cheaper per result.
-- ---------------------------------------------------------------------------------------------

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
-- Claiming checks: an ordered index scan that stops at max_jobs, never a bitmap scan and sort.
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
        RETURNING j.id, j.monitor_id, j.leased_slot, j.attempts
    )
    SELECT l.id, l.monitor_id, l.leased_slot, now(), l.attempts, m.url, m.method, m.headers,
           m.body, webmon.timeout_ms(m.timeout), m.regex, m.follow_redirects
    FROM leased l JOIN webmon.monitors m ON m.id = l.monitor_id
    ORDER BY l.leased_slot;
END
$$;
