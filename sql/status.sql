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

-- The newest stored result of a monitor (from one region, or any) after a time: for monitors
-- whose jobs keep none (paused, or not checked since an update from a release before 0.8.0).
-- A function, so that the views' plans are costed and compiled without these lookups, which
-- run only for such monitors.
CREATE FUNCTION webmon.last_result(monitor bigint, after timestamptz, from_region text DEFAULT NULL)
RETURNS TABLE (request_timestamp timestamptz, http_status_code smallint, response_time_ms real,
               regex_matched boolean, error_kind text, error text, region text)
-- SECURITY DEFINER: the views call it as their reader (a probe role reads monitor_status and
-- no table).
LANGUAGE sql STABLE ROWS 1 SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT x.* FROM (
        (SELECT mt.request_timestamp, mt.http_status_code, mt.response_time_ms, mt.regex_matched,
                NULL::text AS error_kind, NULL::text AS error, mt.region
         FROM webmon.metrics mt
         WHERE mt.monitor_id = monitor AND mt.request_timestamp > after
           AND (from_region IS NULL OR mt.region = from_region)
         ORDER BY mt.request_timestamp DESC LIMIT 1)
        UNION ALL
        (SELECT e.request_timestamp, NULL::smallint, NULL::real, NULL::boolean, e.error_kind, e.error, e.region
         FROM webmon.errors e
         WHERE e.monitor_id = monitor AND e.request_timestamp > after
           AND (from_region IS NULL OR e.region = from_region)
         ORDER BY e.request_timestamp DESC LIMIT 1)
    ) x
    ORDER BY x.request_timestamp DESC
    LIMIT 1
$$;
COMMENT ON FUNCTION webmon.last_result(bigint, timestamptz, text) IS
    'pg_webmon: the newest stored result of a monitor after a time (from one region, or any when from_region is NULL); the status views read it for monitors whose jobs keep no last result.';

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
    -- The newest result from this region in the last ten intervals (at least an hour): older
    -- ones say nothing about now. Its job keeps it; only without one (a monitor paused, or
    -- not checked since an update from a release before 0.8.0) is it looked for among the
    -- results.
    SELECT j.last_checked_at AS request_timestamp, j.last_status_code AS http_status_code,
           j.last_response_time_ms AS response_time_ms, j.last_regex_matched AS regex_matched,
           j.last_error_kind AS error_kind, j.last_error AS error
    WHERE j.last_checked_at > now() - lookback.span
    UNION ALL
    SELECT f.request_timestamp, f.http_status_code, f.response_time_ms, f.regex_matched, f.error_kind, f.error
    FROM webmon.last_result(m.id, now() - lookback.span, r.region) f
    WHERE j.last_checked_at IS NULL
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
       jobs.next_check_at,
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
-- Its jobs, in one pass over the queue (joined, not looked up per monitor): the next slot;
-- from the regions' verdicts, whether any region is up and whether a quorum is failing
-- (pending); and the newest last result they keep.
LEFT JOIN (
    SELECT DISTINCT ON (j.monitor_id) j.monitor_id,
           min(j.scheduled_at) OVER w AS next_check_at, count(*) OVER w AS regions,
           count(*) FILTER (WHERE j.verdict = 'down' OR j.failed_run > 0) OVER w AS failing,
           min(j.failing_since) OVER w AS failing_since, bool_or(j.verdict = 'up') OVER w AS known,
           max(j.verdict_since) FILTER (WHERE j.verdict = 'up') OVER w AS up_since,
           j.last_checked_at, j.last_status_code, j.last_response_time_ms, j.last_regex_matched,
           j.last_error_kind, j.last_error, j.last_region
    FROM webmon.jobs j
    WINDOW w AS (PARTITION BY j.monitor_id)
    ORDER BY j.monitor_id, j.last_checked_at DESC NULLS LAST
) jobs ON jobs.monitor_id = m.id
-- Only for monitors whose jobs keep no last result (paused, or not checked since an update
-- from a release before 0.8.0): their newest result of the last day, or of their last ten
-- intervals, from the results.
LEFT JOIN LATERAL (
    SELECT f.*
    FROM webmon.last_result(
        m.id, now() - make_interval(secs => least(greatest(10 * extract(epoch FROM m.check_interval), 86400), 31622400)::float8)) f
    WHERE jobs.last_checked_at IS NULL
    -- Kept a subquery, so that the test comes before the call (flattened, it would follow it).
    OFFSET 0
) looked_up ON true
CROSS JOIN LATERAL (
    SELECT CASE WHEN jobs.last_checked_at IS NOT NULL THEN jobs.last_checked_at ELSE looked_up.request_timestamp END AS request_timestamp,
           CASE WHEN jobs.last_checked_at IS NOT NULL THEN jobs.last_status_code ELSE looked_up.http_status_code END AS http_status_code,
           CASE WHEN jobs.last_checked_at IS NOT NULL THEN jobs.last_response_time_ms ELSE looked_up.response_time_ms END AS response_time_ms,
           CASE WHEN jobs.last_checked_at IS NOT NULL THEN jobs.last_regex_matched ELSE looked_up.regex_matched END AS regex_matched,
           CASE WHEN jobs.last_checked_at IS NOT NULL THEN jobs.last_error_kind ELSE looked_up.error_kind END AS error_kind,
           CASE WHEN jobs.last_checked_at IS NOT NULL THEN jobs.last_error ELSE looked_up.error END AS error,
           CASE WHEN jobs.last_checked_at IS NOT NULL THEN jobs.last_region ELSE looked_up.region END AS region
) last
-- With regions: each region's state, and how many failed or passed in the newest slot a live
-- region reported. Joined, not looked up per monitor (for all monitors, one pass over those
-- with regions).
LEFT JOIN (
    SELECT s.monitor_id, count(*) AS regions,
           count(*) FILTER (WHERE s.state = 'down' AND s.last_slot = s.newest) AS failing,
           count(*) FILTER (WHERE s.state = 'up' AND s.last_slot = s.newest) AS passing,
           jsonb_object_agg(s.region, s.state) AS states
    FROM (SELECT rs.*, max(rs.last_slot) FILTER (WHERE rs.state IN ('up', 'down'))
                           OVER (PARTITION BY rs.monitor_id) AS newest
          FROM webmon.region_status rs) s
    GROUP BY s.monitor_id
) quorum ON quorum.monitor_id = m.id
LEFT JOIN (
    SELECT DISTINCT ON (i.monitor_id) i.monitor_id, i.kind, i.started_at FROM webmon.incidents i
    WHERE i.resolved_at IS NULL AND i.kind IN ('down', 'degraded')
    ORDER BY i.monitor_id, i.kind = 'down' DESC
) open_incident ON open_incident.monitor_id = m.id
CROSS JOIN LATERAL (
    -- Looked up only when some window exists (the uncorrelated test runs once per query).
    SELECT CASE WHEN (SELECT EXISTS (SELECT 1 FROM webmon.maintenance))
                THEN webmon.maintenance_window(m.id, now()) END AS covering
) maintenance
CROSS JOIN LATERAL (
    -- Pending: a quorum of regions failing now (below down_after) or down.
    SELECT jobs.failing > 0 AND jobs.failing >= coalesce(m.down_quorum, jobs.regions / 2 + 1) AS pending,
           jobs.failing_since, coalesce(jobs.known, false) AS known, jobs.up_since
) health;
COMMENT ON VIEW webmon.monitor_status IS
    'pg_webmon: each monitor''s last result (when, status code, response time, error, region) and whether it is up. Up = got a response, status in expected_status, regex (if any) matched; NULL when nobody checked it (no_probe, lost). With regions: down when down_quorum live regions failed in the newest slot reported, with each region''s state in region_states; a region without a live probe is unmonitored, never down. state (paused, maintenance, down, degraded, pending, up, unknown) and state_since follow the monitor''s maintenance windows, incidents and down_after, up_after and degraded_after_ms.';

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
