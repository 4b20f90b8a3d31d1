-- pg_webmon 0.2.0 → 0.3.0
--
-- The probe's target guard adds the error kind `blocked`: the errors table's CHECK is built
-- again from the library's list (webmon.error_kinds(), which now includes it), and
-- complete_checks stores a kind the library does not know (from a probe newer than the
-- library) as an `other` error instead of refusing the whole batch. A monitor's name, regex
-- text and regions get limits, checked by the validation trigger when they are set (it now
-- also fires on an UPDATE of name or regions); stored rows are counted, not changed.

-- In the order readers take them (monitor_status reads monitors, then errors), so that a
-- reader cannot deadlock with the update.
LOCK TABLE webmon.monitors, webmon.errors IN ACCESS EXCLUSIVE MODE;

COMMENT ON TABLE webmon.errors IS
    'pg_webmon: one row per check that got no response. error_kind: dns, connect, tls, timeout, redirect, body, blocked, lost, no_probe, other (see webmon.error_kinds()).';

-- Adding a kind cannot invalidate a stored row; the check scans webmon.errors once.
ALTER TABLE webmon.errors DROP CONSTRAINT errors_error_kind_check;
DO $$
BEGIN
    EXECUTE format('ALTER TABLE webmon.errors ADD CONSTRAINT errors_error_kind_check CHECK (error_kind = ANY (%L::text[]))',
                   webmon.error_kinds());
END
$$;

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

CREATE FUNCTION webmon.monitor_labels_problem(
	"name" TEXT, /* Option < & str > */
	"regex" TEXT, /* Option < & str > */
	"regions" TEXT[] /* :: std :: option :: Option < Vec < Option < String > > > */
) RETURNS TEXT /* Option < String > */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'monitor_labels_problem_wrapper';
COMMENT ON FUNCTION webmon.monitor_labels_problem(text, text, text[]) IS
    'pg_webmon: why a monitor''s name (256 bytes), regex (4,096 bytes) or regions (1 to 32 names of 1 to 63 bytes, or NULL) break their limits, NULL when they do not; the monitors trigger raises it (SQLSTATE 22023).';

CREATE OR REPLACE FUNCTION webmon.monitors_validate() RETURNS trigger
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

DROP TRIGGER monitors_validate ON webmon.monitors;
CREATE TRIGGER monitors_validate
    BEFORE INSERT OR UPDATE OF url, method, headers, body, check_interval, timeout, regex, expected_status, name, regions
    ON webmon.monitors FOR EACH ROW EXECUTE FUNCTION webmon.monitors_validate();

DO $$
DECLARE
    over bigint;
BEGIN
    SELECT count(*) INTO over FROM webmon.monitors m
    WHERE webmon.monitor_labels_problem(m.name, m.regex, m.regions) IS NOT NULL;
    IF over > 0 THEN
        RAISE WARNING 'pg_webmon 0.3.0: % monitors have a name, regex or regions over the new limits; they are kept and checked as before, and a change to one of those columns must bring it within them', over
            USING HINT = 'SELECT id, webmon.monitor_labels_problem(name, regex, regions) FROM webmon.monitors WHERE webmon.monitor_labels_problem(name, regex, regions) IS NOT NULL';
    END IF;
END
$$;
