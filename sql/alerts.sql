-- Alerts: where incidents are told (webmon.channels), what is told and whether it arrived (the
-- outbox webmon.notifications, written in the transaction that opens or resolves an
-- incident, delivered by probes), and when nothing is told (webmon.maintenance). Loaded by
-- CREATE EXTENSION after incidents.sql.

-- ---------------------------------------------------------------------------------------------
-- Channels
-- ---------------------------------------------------------------------------------------------
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
