//! `#[pg_test]`s: SQL functions, triggers and the scheduler worker in a real server
//! (`cargo pgrx test pg15`). Each test runs in a transaction that is rolled back; what the
//! background worker must see is committed through `dblink` and cleaned up afterwards.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    extension_sql!(
        r#"
    -- Runs a statement; returns 'accepted' or 'SQLSTATE message' without aborting the test.
    CREATE FUNCTION tests.outcome(statement text) RETURNS text LANGUAGE plpgsql AS $$
    BEGIN
        EXECUTE statement;
        RETURN 'accepted';
    EXCEPTION WHEN OTHERS THEN
        RETURN SQLSTATE || ' ' || SQLERRM;
    END $$;
    
    -- Commits a statement on a separate connection so the scheduler worker sees it.
    CREATE FUNCTION tests.committed(statement text) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        CREATE EXTENSION IF NOT EXISTS dblink SCHEMA public;
        PERFORM public.dblink_exec(tests.loopback(), statement);
    END $$;
    
    CREATE FUNCTION tests.loopback() RETURNS text LANGUAGE sql AS $$
        SELECT format('dbname=%s port=%s host=%s', current_database(), current_setting('port'),
                      split_part(current_setting('unix_socket_directories'), ',', 1))
    $$;
    
    -- Polls `condition` (a boolean query) every 50 ms until true or `seconds` pass.
    CREATE FUNCTION tests.wait_for(condition text, seconds float8) RETURNS boolean LANGUAGE plpgsql AS $$
    DECLARE
        deadline timestamptz := clock_timestamp() + make_interval(secs => seconds);
        ok boolean;
    BEGIN
        LOOP
            PERFORM pg_stat_clear_snapshot();
            EXECUTE condition INTO ok;
            IF ok THEN RETURN true; END IF;
            IF clock_timestamp() > deadline THEN RETURN false; END IF;
            PERFORM pg_sleep(0.05);
        END LOOP;
    END $$;
    
    -- Waits until the scheduler is connected (its first start fails before pgrx_tests exists).
    CREATE FUNCTION tests.scheduler_running() RETURNS boolean LANGUAGE sql AS $$
        SELECT tests.wait_for($q$SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                                               WHERE backend_type = 'pg_webmon scheduler'
                                                 AND datname = current_database())$q$, 30)
    $$;
    "#,
        name = "test_helpers",
    );

    fn one<T: FromDatum + IntoDatum>(sql: &str) -> T {
        match Spi::get_one::<T>(sql) {
            Ok(Some(value)) => value,
            Ok(None) => panic!("{sql}: NULL"),
            Err(e) => panic!("{sql}: {e}"),
        }
    }

    fn outcome(statement: &str) -> String {
        Spi::get_one_with_args::<String>("SELECT tests.outcome($1)", &[statement.into()])
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    fn committed(statement: &str) {
        Spi::run_with_args("SELECT tests.committed($1)", &[statement.into()])
            .expect("committed statement");
    }

    fn wait_for(condition: &str, seconds: f64) -> bool {
        one::<bool>(&format!(
            "SELECT tests.wait_for($q${condition}$q$, {seconds})"
        ))
    }

    /// Waits until the maintenance worker has committed both default partitions. Claims hand
    /// out nothing before, and a test that made them in its own transaction would hold the
    /// parents' locks (and keep the worker from making them) until it ends.
    fn partitions_ready() {
        assert!(
            wait_for(
                // pg_class itself, not to_regclass(): a name lookup without a lock keeps the
                // backend's cached "no such relation" for the whole test.
                "SELECT count(*) = 2 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = 'webmon' AND c.relname IN ('metrics_default', 'errors_default')",
                60.0
            ),
            "the maintenance worker made no default partitions"
        );
    }

    /// Runs webmon.run_maintenance() after waiting for the scheduler's own run to finish
    /// (both take the same advisory lock; ours is held until the test ends).
    fn maintenance() -> i64 {
        partitions_ready();
        Spi::run("SELECT pg_advisory_xact_lock(x'7765626d6f6e'::bigint)").unwrap();
        one::<i64>("SELECT created FROM webmon.run_maintenance()")
    }

    #[pg_test]
    fn a_valid_monitor_gets_the_documented_defaults() {
        Spi::run("INSERT INTO webmon.monitors (url) VALUES ('https://example.com/health')")
            .unwrap();
        assert!(one::<bool>(
            "SELECT method = 'GET' AND headers = '{}' AND check_interval = '1 minute' AND timeout IS NULL
                    AND expected_status = '[200,400)' AND follow_redirects AND enabled
                    AND next_check_at <= now() AND regions IS NULL
             FROM webmon.monitors WHERE url = 'https://example.com/health'"
        ));
        // Lower-case methods are normalised, not refused.
        Spi::run(
            "INSERT INTO webmon.monitors (url, method) VALUES ('http://127.0.0.1:1/x', 'post')",
        )
        .unwrap();
        assert_eq!(
            one::<String>("SELECT method FROM webmon.monitors WHERE url = 'http://127.0.0.1:1/x'"),
            "POST"
        );
    }

    #[pg_test]
    fn every_invalid_value_is_refused_with_its_sqlstate_and_nothing_is_stored() {
        let cases: &[(&str, &str, &str)] = &[
            ("url => 'ftp://example.com'", "22023", "only http and https"),
            ("url => 'http://'", "22023", "http://"),
            ("url => 'not a url'", "22023", "not a url"),
            (
                "url => 'mailto:a@example.com'",
                "22023",
                "mailto:a@example.com",
            ),
            ("regex => '(unclosed'", "2201B", "(unclosed"),
            (r"regex => '\w{5000}'", "2201B", "size limit"),
            (
                "check_interval => '500 milliseconds'",
                "22023",
                "check_interval",
            ),
            ("check_interval => '0'", "22023", "check_interval"),
            (
                "check_interval => '300000 years'",
                "22023",
                "months and years",
            ),
            ("check_interval => '1 mon'", "22023", "months and years"),
            (
                "check_interval => '-10 years 3601 days'",
                "22023",
                "months and years",
            ),
            (
                "check_interval => '1 day -1 second'",
                "22023",
                "different signs",
            ),
            ("check_interval => '366 days'", "22023", "at most 365 days"),
            (
                "timeout => '10 years -3600 days 1 second'",
                "22023",
                "months and years",
            ),
            (
                "timeout => '1 day -23 hours -59 minutes'",
                "22023",
                "different signs",
            ),
            ("timeout => '0'", "22023", "timeout"),
            ("timeout => '-1 second'", "22023", "timeout"),
            ("timeout => '6 minutes'", "22023", "timeout"),
            ("headers => '[\"a\"]'", "22023", "JSON object"),
            ("headers => '{\"X-N\": 1}'", "22023", "X-N"),
            ("headers => '{\"bad name\": \"x\"}'", "22023", "bad name"),
            ("headers => '{\"X-A\": \"a\\nb\"}'", "22023", "X-A"),
            ("method => 'FETCH'", "22023", "FETCH"),
            ("expected_status => 'empty'", "22023", "expected_status"),
        ];
        for (assignment, sqlstate, mentions) in cases {
            let (column, value) = assignment.split_once(" => ").unwrap();
            let url = if column == "url" {
                value
            } else {
                "'https://example.com'"
            };
            let insert = if column == "url" {
                format!("INSERT INTO webmon.monitors (url) VALUES ({url})")
            } else {
                format!("INSERT INTO webmon.monitors (url, {column}) VALUES ({url}, {value})")
            };
            let result = outcome(&insert);
            assert!(result.starts_with(sqlstate), "{insert}: {result}");
            assert!(
                result.contains(mentions),
                "{insert}: {result} should mention {mentions}"
            );
        }
        // Nothing stored (only this test writes https://example.com, and it is rolled back).
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM webmon.monitors WHERE url LIKE 'https://example.com%'"
            ),
            0
        );

        // UPDATE is validated the same way and leaves the row unchanged.
        Spi::run("INSERT INTO webmon.monitors (url) VALUES ('https://example.com/ok')").unwrap();
        for update in [
            "UPDATE webmon.monitors SET url = 'gopher://x'",
            "UPDATE webmon.monitors SET regex = '['",
            "UPDATE webmon.monitors SET check_interval = '10 ms'",
            "UPDATE webmon.monitors SET check_interval = '1 year'",
            "UPDATE webmon.monitors SET headers = '\"x\"'",
        ] {
            assert!(!outcome(update).starts_with("accepted"), "{update}");
        }
        assert!(one::<bool>(
            "SELECT url = 'https://example.com/ok' AND regex IS NULL AND check_interval = '1 minute'
             FROM webmon.monitors WHERE url LIKE 'https://example.com%'"
        ));
    }

    #[pg_test]
    fn a_claim_leases_the_slot_and_moves_the_job_along_its_grid() {
        // Claims hand out nothing before the first partitions exist.
        maintenance();
        Spi::run("SELECT webmon.register_probe('grid-probe', 'grid')").unwrap();
        // A chosen time ahead: the grid starts there exactly.
        Spi::run(
            "INSERT INTO webmon.monitors (url, check_interval, regions, next_check_at)
             VALUES ('http://127.0.0.1:9/grid', '1 hour', '{grid}', now() + interval '0.5 seconds')",
        )
        .unwrap();
        let job = "(SELECT webmon.job_id(j.monitor_id, j.region) FROM webmon.jobs j JOIN webmon.monitors m ON m.id = j.monitor_id
                    WHERE m.url = 'http://127.0.0.1:9/grid')";
        assert!(one::<bool>(&format!(
            "SELECT scheduled_at = now() + interval '0.5 seconds' AND grid_start = scheduled_at
                    AND leased_by IS NULL FROM webmon.jobs WHERE webmon.job_id(monitor_id, region) = {job}"
        )));
        let slot = one::<bool>(
            "SELECT scheduled_at = now() + interval '0.5 seconds' FROM webmon.claim_checks('grid-probe', 10, '1 minute')",
        );
        assert!(slot, "the claim did not hand out the job's own slot");
        // No drift: the next slot is exactly one interval after the leased one; a second claim
        // finds nothing (one check in flight per monitor and region).
        assert!(one::<bool>(&format!(
            "SELECT scheduled_at = leased_slot + interval '1 hour' AND leased_by IS NOT NULL
                    AND lease_expires_at = leased_slot + interval '1 minute' AND attempts = 1
             FROM webmon.jobs WHERE webmon.job_id(monitor_id, region) = {job}"
        )));
        assert_eq!(
            one::<i64>("SELECT count(*) FROM webmon.claim_checks('grid-probe', 10, '1 minute', '2 seconds')"),
            0
        );

        // Added "now" (the default), 200 monitors in one INSERT: first checked at once, paced
        // at 1,000 a second (0.2 s for all), and their later slots spread over the interval
        // by id.
        Spi::run(
            "INSERT INTO webmon.monitors (url, check_interval, regions)
             SELECT 'http://127.0.0.1:9/grid/spread/' || g, '10 seconds', '{grid-spread}' FROM generate_series(1, 200) g",
        )
        .unwrap();
        Spi::run("SELECT webmon.register_probe('spread-probe', 'grid-spread')").unwrap();
        assert_eq!(
            one::<i64>("SELECT count(*) FROM webmon.claim_checks('spread-probe', 1000, '1 minute')
                         WHERE scheduled_at >= now() AND scheduled_at < now() + interval '0.2 seconds'"),
            200
        );
        assert_eq!(
            one::<i64>(
                "SELECT count(DISTINCT leased_slot) FROM webmon.jobs WHERE region = 'grid-spread'"
            ),
            200
        );
        assert!(one::<bool>(
            "SELECT bool_and(scheduled_at > now() AND scheduled_at <= leased_slot + interval '10 seconds'
                             AND scheduled_at = webmon.slot_after(grid_start, '10 seconds', leased_slot)
                             AND grid_start >= now() AND grid_start < now() + interval '10 seconds')
                    -- The grids: 20 ± 4 of them in each second of the interval.
                    AND (SELECT min(n) >= 16 AND max(n) <= 24 AND count(*) = 10 FROM (
                             SELECT count(*) AS n FROM webmon.jobs WHERE region = 'grid-spread'
                             GROUP BY floor(extract(epoch FROM grid_start - now()))) per_second)
             FROM webmon.jobs WHERE region = 'grid-spread'"
        ));

        // 2,000 monitors every second, added by one INSERT: their first checks are spread
        // evenly over one interval (2 s at 1,000 a second would overlap their next slots).
        Spi::run(
            "INSERT INTO webmon.monitors (url, check_interval, regions)
             SELECT 'http://127.0.0.1:9/grid/bulk/' || g, '1 second', '{grid-bulk}' FROM generate_series(1, 2000) g",
        )
        .unwrap();
        assert!(one::<bool>(
            "SELECT bool_and(scheduled_at >= now() AND scheduled_at < now() + interval '1 second')
                    AND (SELECT min(n) >= 190 AND max(n) <= 210 AND count(*) = 10 FROM (
                             SELECT count(*) AS n FROM webmon.jobs WHERE region = 'grid-bulk'
                             GROUP BY floor(extract(epoch FROM scheduled_at - now()) * 10)) per_tenth)
             FROM webmon.jobs WHERE region = 'grid-bulk'"
        ));

        // Far behind (10 intervals and a half): one check for the latest slot, then the next
        // slot of its grid, in the future. Never a burst of catch-up checks.
        Spi::run(
            "INSERT INTO webmon.monitors (url, check_interval, regions, next_check_at)
             VALUES ('http://127.0.0.1:9/grid/behind', '1 minute', '{grid}', now() - interval '10 minutes 30 seconds')",
        )
        .unwrap();
        let claimed = one::<i64>(
            "SELECT count(*) FROM webmon.claim_checks('grid-probe', 10, '1 minute')
             WHERE scheduled_at <= now() AND scheduled_at > now() - interval '1 minute'",
        );
        assert_eq!(claimed, 1);
        // The latest slot of its grid (not of the first check's), and the next one exactly
        // an interval later, after now: one check, then on the grid again.
        assert!(one::<bool>(
            "SELECT j.leased_slot <= now() AND j.leased_slot > now() - interval '1 minute'
                    AND extract(epoch FROM j.leased_slot - j.grid_start)::numeric % 60 = 0
                    AND j.scheduled_at = j.leased_slot + interval '1 minute' AND j.scheduled_at > now()
             FROM webmon.jobs j JOIN webmon.monitors m ON m.id = j.monitor_id WHERE m.url = 'http://127.0.0.1:9/grid/behind'"
        ));
        assert_eq!(
            one::<i64>("SELECT count(*) FROM webmon.claim_checks('grid-probe', 10, '1 minute', '1 second')"),
            0,
            "a job far behind was leased twice in a row"
        );
        // Paused for an hour and enabled again: one check, then its grid (any monitor id).
        for id in 1..=12 {
            Spi::run(&format!(
                "INSERT INTO webmon.monitors (url, check_interval, regions, next_check_at)
                 VALUES ('http://127.0.0.1:9/grid/resumed/{id}', '1 minute', '{{grid-resumed}}', now() - interval '1 hour 17 seconds')"
            ))
            .unwrap();
        }
        Spi::run("SELECT webmon.register_probe('resumed-probe', 'grid-resumed')").unwrap();
        assert_eq!(
            one::<i64>("SELECT count(*) FROM webmon.claim_checks('resumed-probe', 100, '1 minute', '1 second')"),
            12
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM webmon.claim_checks('resumed-probe', 100, '1 minute', '1 second')"),
            0,
            "a resumed monitor was checked twice in a row"
        );
        // monitor_status shows the next slot.
        assert!(one::<bool>(
            "SELECT s.next_check_at = j.scheduled_at FROM webmon.monitor_status s JOIN webmon.jobs j ON j.monitor_id = s.monitor_id
             WHERE s.url = 'http://127.0.0.1:9/grid/behind'"
        ));
    }

    #[pg_test]
    fn the_scheduler_wakes_probes_when_a_slot_comes_due() {
        assert!(one::<bool>("SELECT tests.scheduler_running()"));
        // A listener on its own connection (a backend gets notifications between transactions).
        Spi::run(
            "CREATE EXTENSION IF NOT EXISTS dblink SCHEMA public;
             SELECT public.dblink_connect('listener', tests.loopback());
             SELECT public.dblink_exec('listener', 'LISTEN webmon_jobs')",
        )
        .unwrap();
        // A slot three seconds ahead: the trigger says 'new' at once, the scheduler 'due' once
        // the slot is within its lookahead (1 s).
        committed(
            "INSERT INTO webmon.monitors (url, check_interval, regions, next_check_at)
             VALUES ('http://127.0.0.1:9/wake', '1 hour', '{wake}', now() + interval '3 seconds')",
        );
        let heard = |what: &str, seconds: f64| {
            wait_for(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM public.dblink_get_notify('listener')
                                         WHERE notify_name = 'webmon_jobs' AND extra = '{what}')"
                ),
                seconds,
            )
        };
        assert!(heard("new", 2.0), "no NOTIFY for a new job");
        assert!(heard("due", 6.0), "no NOTIFY when the slot came due");
        Spi::run("SELECT public.dblink_disconnect('listener')").unwrap();
        committed("DELETE FROM webmon.monitors WHERE url = 'http://127.0.0.1:9/wake'");
    }

    /// Monitors in their own region, due a minute ago (so a claim inside the test's
    /// transaction, whose now() is older, still sees them due), so only this test's probes
    /// claim them (the scheduler records a check as `no_probe` only after
    /// pg_webmon.unclaimed_timeout, 2 minutes).
    fn queue_jobs(region: &str, count: i32) {
        partitions_ready();
        committed(&format!(
            "INSERT INTO webmon.monitors (url, check_interval, regions, next_check_at)
             SELECT 'http://127.0.0.1:9/' || '{region}' || '/' || g, '1 hour', ARRAY['{region}'], now() - interval '1 minute'
             FROM generate_series(1, {count}) g"
        ));
    }

    fn drop_region(region: &str) {
        committed(&format!(
            "DELETE FROM webmon.monitors WHERE regions = ARRAY['{region}']"
        ));
    }

    #[pg_test]
    fn the_scheduler_reports_its_writes_so_autovacuum_sees_them() {
        assert!(one::<bool>("SELECT tests.scheduler_running()"));
        queue_jobs("stats", 200);
        committed("DO $d$ BEGIN PERFORM webmon.register_probe('stats-probe', 'stats'); END $d$");
        // 200 leases that end at once: the scheduler's sweep updates 200 job rows.
        let updates =
            "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relid = 'webmon.jobs'::regclass";
        let claimed_from = one::<i64>(updates);
        committed(
            "DO $d$ BEGIN PERFORM count(*) FROM webmon.claim_checks('stats-probe', 1000, '1 second'); END $d$",
        );
        // The claim's own 200 updates reach the statistics when its backend exits; only then
        // count what the scheduler adds.
        assert!(wait_for(
            &format!("SELECT n_tup_upd >= {claimed_from} + 200 FROM pg_stat_user_tables WHERE relid = 'webmon.jobs'::regclass"),
            10.0
        ));
        let before = one::<i64>(updates);
        let reported = wait_for(
            &format!("SELECT n_tup_upd >= {before} + 200 FROM pg_stat_user_tables WHERE relid = 'webmon.jobs'::regclass"),
            10.0,
        );
        drop_region("stats");
        assert!(
            reported,
            "the scheduler's updates never reached the statistics"
        );
    }

    #[pg_test]
    fn two_concurrent_claimers_never_get_the_same_job() {
        queue_jobs("claim-race", 10);
        committed("DO $d$ BEGIN PERFORM webmon.register_probe('race-a', 'claim-race'), webmon.register_probe('race-b', 'claim-race'); END $d$");
        let claim = |conn: &str, probe: &str| {
            format!(
                "SELECT array_agg(job_id ORDER BY job_id) FROM public.dblink('{conn}',
                     $c$SELECT job_id FROM webmon.claim_checks('{probe}', 5, '1 hour')$c$) AS t(job_id bigint)"
            )
        };
        Spi::run("SELECT public.dblink_connect('a', tests.loopback()), public.dblink_connect('b', tests.loopback())").unwrap();
        // Both transactions stay open, so A's row locks are held while B claims.
        Spi::run("SELECT public.dblink_exec('a', 'BEGIN'), public.dblink_exec('b', 'BEGIN')")
            .unwrap();
        let a = one::<Vec<i64>>(&claim("a", "race-a"));
        let b = one::<Vec<i64>>(&claim("b", "race-b"));
        Spi::run("SELECT public.dblink_exec('a', 'COMMIT'), public.dblink_exec('b', 'COMMIT')")
            .unwrap();
        Spi::run("SELECT public.dblink_disconnect('a'), public.dblink_disconnect('b')").unwrap();
        assert_eq!(a.len(), 5);
        assert_eq!(b.len(), 5);
        assert!(
            a.iter().all(|job| !b.contains(job)),
            "{a:?} and {b:?} overlap"
        );
        drop_region("claim-race");
    }

    #[pg_test]
    fn a_completion_that_waits_on_a_lease_taken_over_meanwhile_stores_nothing() {
        queue_jobs("done-race", 1);
        committed("DO $d$ BEGIN PERFORM webmon.register_probe('done-p', 'done-race'), webmon.register_probe('done-q', 'done-race'); END $d$");
        Spi::run("SELECT public.dblink_connect('p', tests.loopback()), public.dblink_connect('x', tests.loopback()), public.dblink_connect('y', tests.loopback())").unwrap();
        let (job, slot) = Spi::get_two::<i64, String>(
            "SELECT job_id, slot FROM public.dblink('p',
                 $c$SELECT job_id, scheduled_at::text FROM webmon.claim_checks('done-p', 5, '1 hour')$c$)
                 AS t(job_id bigint, slot text)",
        )
        .unwrap();
        let (job, slot) = (job.expect("a job"), slot.expect("a slot"));
        // While done-p's result is on its way, its lease ends and done-q leases the same slot
        // (the worst case: the sweep put it back, done-q claimed it), in a transaction that
        // holds the row until the completion waits for it.
        Spi::run(
            "SELECT public.dblink_exec('x', 'BEGIN'),
                    public.dblink_exec('x', $x$UPDATE webmon.jobs SET leased_by = (SELECT id FROM webmon.probes WHERE name = 'done-q')
                                              WHERE region = 'done-race'$x$)",
        )
        .unwrap();
        Spi::run(&format!(
            "SELECT public.dblink_send_query('y', $y$SELECT webmon.complete_checks('done-p', ARRAY[{job}]::bigint[],
                 ARRAY['{slot}']::timestamptz[], ARRAY[now()], ARRAY[7]::real[], ARRAY[200]::smallint[],
                 ARRAY[NULL]::boolean[], ARRAY[NULL]::text[], ARRAY[NULL]::text[], ARRAY[NULL]::text[])$y$)"
        ))
        .unwrap();
        let waited = wait_for(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'
                            AND query LIKE '%complete_checks(''done-p''%')",
            10.0,
        );
        Spi::run("SELECT public.dblink_exec('x', 'COMMIT')").unwrap();
        let stored = one::<i32>("SELECT n FROM public.dblink_get_result('y') AS t(n int)");
        Spi::run("SELECT public.dblink_disconnect('p'), public.dblink_disconnect('x'), public.dblink_disconnect('y')").unwrap();
        let kept = one::<bool>(
            "SELECT leased_by = (SELECT id FROM webmon.probes WHERE name = 'done-q')
                    AND NOT EXISTS (SELECT 1 FROM webmon.metrics mt WHERE mt.monitor_id = j.monitor_id)
             FROM webmon.jobs j WHERE region = 'done-race'",
        );
        drop_region("done-race");
        assert!(waited, "the completion never waited for the row");
        assert_eq!(stored, 0, "a result was stored for another probe's lease");
        assert!(
            kept,
            "the other probe's lease was ended, or a result stored"
        );
    }

    #[pg_test]
    fn an_expired_lease_is_requeued_then_recorded_as_lost_after_max_attempts() {
        assert!(one::<bool>("SELECT tests.scheduler_running()"));
        queue_jobs("lease", 2);
        committed("DO $d$ BEGIN PERFORM webmon.register_probe('lease-probe', 'lease'); END $d$");
        // Both leased for a second and never completed; the second on its last attempt.
        committed("DO $d$ BEGIN PERFORM count(*) FROM webmon.claim_checks('lease-probe', 10, '1 second'); END $d$");
        committed("UPDATE webmon.jobs SET attempts = 3 WHERE region = 'lease' AND monitor_id = (SELECT max(monitor_id) FROM webmon.jobs WHERE region = 'lease')");
        let first = "(SELECT min(m.id) FROM webmon.monitors m WHERE m.regions = ARRAY['lease'])";
        let second = "(SELECT max(m.id) FROM webmon.monitors m WHERE m.regions = ARRAY['lease'])";
        assert!(
            wait_for(
                &format!(
                    "SELECT leased_by IS NULL AND requeued AND scheduled_at = leased_slot AND attempts = 1
                     FROM webmon.jobs WHERE monitor_id = {first}"
                ),
                8.0
            ),
            "expired lease was not requeued for the same slot"
        );
        assert!(
            wait_for(
                &format!(
                    "SELECT j.leased_by IS NULL AND NOT j.requeued AND j.scheduled_at > j.leased_slot
                        AND EXISTS (SELECT 1 FROM webmon.errors e WHERE e.monitor_id = {second}
                                    AND e.error_kind = 'lost' AND e.request_timestamp = j.leased_slot AND e.region = 'lease')
                     FROM webmon.jobs j WHERE j.monitor_id = {second}"
                ),
                8.0
            ),
            "a check past max_attempts was not recorded as lost"
        );
        // The requeued slot is leased again as it is (not skipped), as attempt 2.
        committed("DO $d$ BEGIN PERFORM count(*) FROM webmon.claim_checks('lease-probe', 10, '1 hour'); END $d$");
        assert!(one::<bool>(&format!(
            "SELECT leased_by IS NOT NULL AND attempts = 2 AND NOT requeued AND scheduled_at > leased_slot
             FROM webmon.jobs WHERE monitor_id = {first}"
        )));
        committed(&format!(
            "DELETE FROM webmon.errors WHERE monitor_id IN ({first}, {second})"
        ));
        drop_region("lease");
    }

    #[pg_test]
    fn complete_checks_stores_only_results_for_jobs_this_probe_still_leases() {
        // Results need partitions (the scheduler makes them at its first tick).
        maintenance();
        Spi::run("SELECT webmon.register_probe('p-a', 'complete'), webmon.register_probe('p-b', 'complete')").unwrap();
        Spi::run(
            "INSERT INTO webmon.monitors (url, regions, next_check_at) VALUES ('http://127.0.0.1:9/c', '{complete}', '2000-01-01')",
        )
        .unwrap();
        let job = one::<i64>("SELECT job_id FROM webmon.claim_checks('p-b', 10, '1 hour')");
        let complete = |probe: &str| {
            one::<i32>(&format!(
                "SELECT webmon.complete_checks('{probe}', ARRAY[{job}]::bigint[], ARRAY[now()], ARRAY[12.5]::real[],
                     ARRAY[200]::smallint[], ARRAY[NULL]::boolean[], ARRAY[NULL]::text[], ARRAY[NULL]::text[], ARRAY[NULL]::text[])"
            ))
        };
        assert_eq!(complete("p-a"), 0, "another probe's result was accepted");
        assert_eq!(one::<i64>("SELECT count(*) FROM webmon.metrics WHERE monitor_id = (SELECT id FROM webmon.monitors WHERE url = 'http://127.0.0.1:9/c')"), 0);
        assert_eq!(complete("p-b"), 1);
        // A retried batch (e.g. after a lost COMMIT acknowledgement) stores nothing twice.
        assert_eq!(complete("p-b"), 0);
        assert_eq!(one::<i64>("SELECT count(*) FROM webmon.metrics WHERE monitor_id = (SELECT id FROM webmon.monitors WHERE url = 'http://127.0.0.1:9/c')"), 1);
        // The job stays, its lease ended: a HOT update of the row.
        assert!(one::<bool>(&format!(
            "SELECT leased_by IS NULL AND attempts = 0 FROM webmon.jobs WHERE webmon.job_id(monitor_id, region) = {job}"
        )));
        // With slots (the 0.4.0 form), a result counts only for the slot it was given: the
        // next lease of the same job refuses a late result of the one before.
        let (next_job, slot) = Spi::get_two::<i64, pgrx::datum::TimestampWithTimeZone>(
            "SELECT job_id, scheduled_at FROM webmon.claim_checks('p-b', 10, '1 hour', '2 hours')",
        )
        .unwrap();
        assert_eq!(next_job, Some(job));
        let complete_slot = |slot: &str| {
            one::<i32>(&format!(
                "SELECT webmon.complete_checks('p-b', ARRAY[{job}]::bigint[], ARRAY[{slot}]::timestamptz[],
                     ARRAY[now()], ARRAY[10]::real[], ARRAY[200]::smallint[], ARRAY[NULL]::boolean[],
                     ARRAY[NULL]::text[], ARRAY[NULL]::text[], ARRAY[NULL]::text[])"
            ))
        };
        assert_eq!(
            complete_slot("'2000-01-01'::timestamptz"),
            0,
            "a result for another slot was accepted"
        );
        // The 0.3.0 form (no slot): a result that started before this lease's slot is a late
        // one of an earlier lease, and is refused too.
        assert_eq!(
            complete("p-b"),
            0,
            "a late result of an earlier lease was accepted"
        );
        let slot = slot.expect("a slot");
        assert_eq!(complete_slot(&format!("'{slot}'::timestamptz")), 1);
        assert_eq!(complete_slot(&format!("'{slot}'::timestamptz")), 0);
        // The region a result ran from: the job's, else the probe's.
        assert!(one::<bool>("SELECT bool_and(region = 'complete') FROM webmon.metrics
                             WHERE monitor_id = (SELECT id FROM webmon.monitors WHERE url = 'http://127.0.0.1:9/c')"));
    }

    #[pg_test]
    fn leases_are_bounded_and_impossible_results_are_stored_as_errors() {
        maintenance();
        Spi::run("SELECT webmon.register_probe('p-bounds', 'bounds')").unwrap();
        // The last one compares as 1 hour (a year counts 360 days) but adds ~14 years.
        for lease in [
            "1000 years",
            "-1 minute",
            "0",
            "2 hours",
            "1000 years -360000 days 1 hour",
        ] {
            let refused = outcome(&format!(
                "SELECT webmon.claim_checks('p-bounds', 10, '{lease}')"
            ));
            assert!(
                refused.starts_with("22023") && refused.contains("pg_webmon.max_lease"),
                "{lease}: {refused}"
            );
        }
        Spi::run(
            "INSERT INTO webmon.monitors (url, regions, next_check_at)
                 SELECT 'http://127.0.0.1:9/bounds/' || g, '{bounds}', now() FROM generate_series(1, 7) g",
        )
        .unwrap();
        Spi::run(
            "CREATE TEMP TABLE bounds_claimed AS
             SELECT monitor_id, job_id, scheduled_at FROM webmon.claim_checks('p-bounds', 10, '1 hour')",
        )
        .unwrap();
        let jobs =
            one::<Vec<i64>>("SELECT array_agg(job_id ORDER BY monitor_id) FROM bounds_claimed");
        assert_eq!(jobs.len(), 7);
        // 1: fine. 2: 'infinity'. 3: a week before its slot. 4: NaN. 5: negative. 6: an error
        // kind this schema does not know (a newer probe). 7: blocked by the target guard.
        let stored = one::<i32>(&format!(
            "SELECT webmon.complete_checks('p-bounds', ARRAY{jobs:?}::bigint[],
                 (SELECT array_agg(scheduled_at ORDER BY monitor_id) FROM bounds_claimed),
                 ARRAY[now(), 'infinity', now() - interval '7 days', now(), now(), now(), now()]::timestamptz[],
                 ARRAY[12, 12, 12, 'NaN', -5, NULL, NULL]::real[], ARRAY[200, 200, 200, 200, 200, NULL, NULL]::smallint[],
                 ARRAY[NULL, NULL, NULL, NULL, NULL, NULL, NULL]::boolean[], ARRAY[NULL, NULL, NULL, NULL, NULL, NULL, NULL]::text[],
                 ARRAY[NULL, NULL, NULL, NULL, NULL, 'martian', 'blocked']::text[],
                 ARRAY[NULL, NULL, NULL, NULL, NULL, 'from mars', 'denied']::text[])"
        ));
        assert_eq!(stored, 7);
        let bounds = "m.url LIKE 'http://127.0.0.1:9/bounds/%'";
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM webmon.metrics x JOIN webmon.monitors m ON m.id = x.monitor_id WHERE {bounds}"
            )),
            1
        );
        assert!(one::<bool>(&format!(
            "SELECT count(*) = 5 AND bool_and(e.error_kind = 'other' AND e.error LIKE 'result refused:%'
                                               AND e.request_timestamp <= now() + interval '1 second')
             FROM webmon.errors e JOIN webmon.monitors m ON m.id = e.monitor_id
             WHERE {bounds} AND m.url <> 'http://127.0.0.1:9/bounds/7'"
        )));
        assert!(one::<bool>(&format!(
            "SELECT e.error LIKE '%error kind martian is not one of%from mars'
             FROM webmon.errors e JOIN webmon.monitors m ON m.id = e.monitor_id
             WHERE {bounds} AND m.url = 'http://127.0.0.1:9/bounds/6'"
        )));
        assert_eq!(
            one::<String>(&format!(
                "SELECT e.error_kind || ': ' || e.error
                 FROM webmon.errors e JOIN webmon.monitors m ON m.id = e.monitor_id
                 WHERE {bounds} AND m.url = 'http://127.0.0.1:9/bounds/7'"
            )),
            "blocked: denied"
        );
        // The 'infinity' check does not keep its monitor up.
        assert!(one::<bool>(
            "SELECT NOT up FROM webmon.monitor_status s JOIN webmon.monitors m ON m.id = s.monitor_id
             WHERE m.url = 'http://127.0.0.1:9/bounds/2'"
        ));
    }

    #[pg_test]
    fn oversized_monitors_are_refused_and_every_function_has_a_fixed_search_path() {
        for (column, value) in [
            ("url", "'https://example.com/' || repeat('a', 2029)"),
            ("headers", "jsonb_build_object('X-Big', repeat('v', 16384))"),
            ("body", "repeat('b', 65537)"),
        ] {
            let insert = if column == "url" {
                format!("INSERT INTO webmon.monitors (url) VALUES ({value})")
            } else {
                format!("INSERT INTO webmon.monitors (url, {column}) VALUES ('https://example.com/size', {value})")
            };
            let refused = outcome(&insert);
            assert!(
                refused.starts_with("22023") && refused.contains(&format!("invalid {column}")),
                "{column}: {refused}"
            );
        }
        // At the limit it is accepted, and an UPDATE of the body is checked too.
        assert_eq!(
            outcome("INSERT INTO webmon.monitors (url, body) VALUES ('https://example.com/size', repeat('b', 65536))"),
            "accepted"
        );
        assert!(outcome(
            "UPDATE webmon.monitors SET body = repeat('b', 65537) WHERE url = 'https://example.com/size'"
        )
        .starts_with("22023"));
        // Name, regex text and regions, on INSERT and on an UPDATE of only that column.
        for (column, value, says) in [
            ("name", "repeat('n', 257)", "invalid name"),
            ("regex", "repeat('a', 4097)", "invalid regex"),
            (
                "regions",
                "'{}'::text[]",
                "invalid regions: the list is empty",
            ),
            ("regions", "ARRAY[NULL]::text[]", "invalid regions"),
            (
                "regions",
                "array_fill('r'::text, ARRAY[33])",
                "invalid regions: 33 regions",
            ),
            ("regions", "ARRAY[repeat('r', 64)]", "invalid regions"),
        ] {
            for statement in [
                format!("INSERT INTO webmon.monitors (url, {column}) VALUES ('https://example.com/labels', {value})"),
                format!("UPDATE webmon.monitors SET {column} = {value} WHERE url = 'https://example.com/size'"),
            ] {
                let refused = outcome(&statement);
                assert!(
                    refused.starts_with("22023") && refused.contains(says),
                    "{statement}: {refused}"
                );
            }
        }
        assert_eq!(
            outcome("UPDATE webmon.monitors SET name = repeat('n', 256), regions = array_fill('r'::text, ARRAY[32])
                     WHERE url = 'https://example.com/size'"),
            "accepted"
        );
        let loose = one::<i64>(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             JOIN pg_language l ON l.oid = p.prolang
             WHERE n.nspname = 'webmon' AND l.lanname IN ('sql', 'plpgsql')
               AND NOT coalesce(p.proconfig::text LIKE '%search_path=%', false)
               -- A standard SQL body (RETURN …) is bound when it is created, not when it runs.
               AND p.prosqlbody IS NULL",
        );
        assert_eq!(
            loose, 0,
            "a SQL function of webmon runs with the caller's search_path"
        );
    }

    #[pg_test]
    fn a_reader_reads_and_an_editor_edits_monitors_and_neither_does_more() {
        maintenance();
        Spi::run(
            "CREATE ROLE webmon_test_reader; CREATE ROLE webmon_test_team;
             SELECT webmon.grant_reader('webmon_test_reader'), webmon.grant_editor('webmon_test_team');
             GRANT USAGE ON SCHEMA tests TO webmon_test_reader, webmon_test_team;
             INSERT INTO webmon.monitors (url) VALUES ('http://127.0.0.1:9/roles')",
        )
        .unwrap();
        let as_role = |role: &str, statement: &str| {
            Spi::run(&format!("SET LOCAL ROLE {role}")).unwrap();
            let result = outcome(statement);
            Spi::run("RESET ROLE").unwrap();
            result
        };
        let reads = [
            "SELECT count(*) FROM webmon.monitor_status",
            "SELECT count(*) FROM webmon.uptime('1 hour')",
            "SELECT count(*) FROM webmon.metrics",
            "SELECT count(*) FROM webmon.errors",
            "SELECT count(*) FROM webmon.monitors",
        ];
        let edits = [
            "INSERT INTO webmon.monitors (url) VALUES ('http://127.0.0.1:9/roles/new')",
            "UPDATE webmon.monitors SET check_interval = '5 minutes' WHERE url = 'http://127.0.0.1:9/roles'",
            "DELETE FROM webmon.monitors WHERE url = 'http://127.0.0.1:9/roles'",
        ];
        let beyond = [
            "DELETE FROM webmon.metrics",
            "INSERT INTO webmon.errors (request_timestamp, monitor_id, error_kind, error) VALUES (now(), 1, 'other', 'x')",
            "UPDATE webmon.jobs SET attempts = 0",
            "SELECT webmon.run_maintenance()",
            "SELECT webmon.claim_checks('x', 1, '1 minute')",
            "SELECT webmon.grant_probe('webmon_test_reader')",
        ];
        for statement in reads {
            assert_eq!(
                as_role("webmon_test_reader", statement),
                "accepted",
                "reader: {statement}"
            );
            assert_eq!(
                as_role("webmon_test_team", statement),
                "accepted",
                "editor: {statement}"
            );
        }
        for statement in edits {
            let refused = as_role("webmon_test_reader", statement);
            assert!(
                refused.starts_with("42501"),
                "reader: {statement}: {refused}"
            );
            assert_eq!(
                as_role("webmon_test_team", statement),
                "accepted",
                "editor: {statement}"
            );
        }
        for statement in beyond {
            for role in ["webmon_test_reader", "webmon_test_team"] {
                let refused = as_role(role, statement);
                assert!(
                    refused.starts_with("42501"),
                    "{role}: {statement}: {refused}"
                );
            }
        }
        // Headers and body can hold credentials: an editor reads them, a reader does not.
        let secrets = "SELECT headers, body FROM webmon.monitors";
        assert!(as_role("webmon_test_reader", secrets).starts_with("42501"));
        assert_eq!(as_role("webmon_test_team", secrets), "accepted");
        // The queue trigger runs as the owner: nobody else may hang it on a table of theirs.
        for role in ["webmon_test_reader", "webmon_test_team"] {
            as_role(
                role,
                "CREATE TEMP TABLE IF NOT EXISTS decoy (id bigint, enabled boolean, regions text[])",
            );
            let refused = as_role(
                role,
                "CREATE TRIGGER decoy_sync AFTER DELETE ON decoy FOR EACH ROW EXECUTE FUNCTION webmon.monitors_sync_jobs()",
            );
            assert!(refused.starts_with("42501"), "{role}: {refused}");
        }
    }

    #[pg_test]
    fn a_probe_name_belongs_to_the_role_that_registered_it_first() {
        maintenance();
        Spi::run(
            "CREATE ROLE webmon_test_probe_a LOGIN; CREATE ROLE webmon_test_probe_b LOGIN;
             SELECT webmon.grant_probe('webmon_test_probe_a'), webmon.grant_probe('webmon_test_probe_b');
             GRANT USAGE ON SCHEMA tests TO webmon_test_probe_a, webmon_test_probe_b;
             INSERT INTO webmon.monitors (url, regions, next_check_at) VALUES ('http://127.0.0.1:9/owned', '{owned}', now())",
        )
        .unwrap();
        // The probe API checks the login (session) role, so act as it, not only SET ROLE.
        let as_login = |role: &str, statement: &str| {
            Spi::run(&format!("SET LOCAL SESSION AUTHORIZATION {role}")).unwrap();
            let result = outcome(statement);
            Spi::run("RESET SESSION AUTHORIZATION").unwrap();
            result
        };
        assert_eq!(
            as_login(
                "webmon_test_probe_a",
                "SELECT webmon.register_probe('owned-a', 'owned')"
            ),
            "accepted"
        );
        let job = one::<i64>(
            "SELECT webmon.job_id(j.monitor_id, j.region) FROM webmon.jobs j JOIN webmon.monitors m ON m.id = j.monitor_id WHERE m.url = 'http://127.0.0.1:9/owned'",
        );
        // Another probe role can neither re-register that name (to move its region) nor use it.
        for statement in [
            "SELECT webmon.register_probe('owned-a', 'elsewhere')".to_string(),
            "SELECT webmon.claim_checks('owned-a', 10, '1 hour')".to_string(),
            format!("SELECT webmon.release_checks('owned-a', ARRAY[{job}]::bigint[])"),
            format!(
                "SELECT webmon.complete_checks('owned-a', ARRAY[{job}]::bigint[], ARRAY[now()], ARRAY[1]::real[],
                     ARRAY[200]::smallint[], ARRAY[NULL]::boolean[], ARRAY[NULL]::text[], ARRAY[NULL]::text[], ARRAY[NULL]::text[])"
            ),
        ] {
            let refused = as_login("webmon_test_probe_b", &statement);
            assert!(refused.starts_with("42501"), "{statement}: {refused}");
        }
        assert!(one::<bool>(
            "SELECT region = 'owned' FROM webmon.probes WHERE name = 'owned-a'"
        ));
        // Its own role can, and a superuser may act for any probe.
        assert_eq!(
            as_login(
                "webmon_test_probe_a",
                "SELECT webmon.claim_checks('owned-a', 10, '1 hour')"
            ),
            "accepted"
        );
        assert_eq!(
            outcome(&format!(
                "SELECT webmon.release_checks('owned-a', ARRAY[{job}]::bigint[])"
            )),
            "accepted"
        );
    }

    #[pg_test]
    fn release_checks_hands_jobs_back() {
        partitions_ready();
        Spi::run("SELECT webmon.register_probe('p-r', 'release')").unwrap();
        Spi::run(
            "INSERT INTO webmon.monitors (url, regions, next_check_at) VALUES ('http://127.0.0.1:9/r', '{release}', '2000-01-01')",
        )
        .unwrap();
        let job = one::<i64>("SELECT job_id FROM webmon.claim_checks('p-r', 10, '1 hour')");
        assert_eq!(
            one::<i32>(&format!(
                "SELECT webmon.release_checks('p-r', ARRAY[{job}]::bigint[])"
            )),
            1
        );
        // Its slot is back in the queue, to be checked as it is.
        assert!(one::<bool>(&format!(
            "SELECT leased_by IS NULL AND attempts = 0 AND requeued AND scheduled_at = leased_slot
             FROM webmon.jobs WHERE webmon.job_id(monitor_id, region) = {job}"
        )));
    }

    #[pg_test]
    fn deleting_a_monitor_removes_its_pending_job() {
        Spi::run("INSERT INTO webmon.monitors (url) VALUES ('http://127.0.0.1:9/del')").unwrap();
        let id = one::<i64>("SELECT id FROM webmon.monitors WHERE url = 'http://127.0.0.1:9/del'");
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM webmon.jobs WHERE monitor_id = {id}"
            )),
            1
        );
        Spi::run(&format!("DELETE FROM webmon.monitors WHERE id = {id}")).unwrap();
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM webmon.jobs WHERE monitor_id = {id}"
            )),
            0
        );
    }

    #[pg_test]
    fn claim_respects_regions() {
        partitions_ready();
        Spi::run("SELECT webmon.register_probe('eu-probe', 'eu'), webmon.register_probe('us-probe', 'us')").unwrap();
        Spi::run(
            "INSERT INTO webmon.monitors (url, regions, next_check_at) VALUES ('http://127.0.0.1:9/eu', '{eu}', '2000-01-01')",
        )
        .unwrap();
        let eu_job = "(SELECT webmon.job_id(j.monitor_id, j.region) FROM webmon.jobs j JOIN webmon.monitors m ON m.id = j.monitor_id WHERE m.url = 'http://127.0.0.1:9/eu')";
        assert!(!one::<bool>(&format!("SELECT {eu_job} IN (SELECT job_id FROM webmon.claim_checks('us-probe', 1000, '1 hour'))")));
        assert!(one::<bool>(&format!("SELECT {eu_job} IN (SELECT job_id FROM webmon.claim_checks('eu-probe', 1000, '1 hour'))")));
    }

    #[pg_test]
    fn a_job_id_names_one_job_and_a_probe_that_moves_region_hands_its_leases_back() {
        maintenance();
        Spi::run(
            "SELECT webmon.register_probe('mover', 'move-a'), webmon.register_probe('anywhere')",
        )
        .unwrap();
        Spi::run(
            "INSERT INTO webmon.monitors (url, regions, next_check_at) VALUES
                 ('http://127.0.0.1:9/move', '{move-a,move-b}', '2000-01-01'),
                 ('http://127.0.0.1:9/move-any', NULL, '2000-01-01')",
        )
        .unwrap();
        let moving = "(SELECT id FROM webmon.monitors WHERE url = 'http://127.0.0.1:9/move')";
        let (job, slot) = Spi::get_two::<i64, pgrx::datum::TimestampWithTimeZone>(&format!(
            "SELECT job_id, scheduled_at FROM webmon.claim_checks('mover', 10, '1 hour') WHERE monitor_id = {moving}"
        ))
        .unwrap();
        let (job, slot) = (job.expect("a job"), slot.expect("a slot"));
        assert_eq!(
            job,
            one::<i64>(&format!("SELECT webmon.job_id({moving}, 'move-a')"))
        );
        let complete = |probe: &str, ids: &str| {
            one::<i32>(&format!(
                "SELECT webmon.complete_checks('{probe}', {ids}::bigint[],
                     array_fill('{slot}'::timestamptz, ARRAY[cardinality({ids}::bigint[])]),
                     array_fill(now(), ARRAY[cardinality({ids}::bigint[])]),
                     array_fill(5::real, ARRAY[cardinality({ids}::bigint[])]),
                     array_fill(200::smallint, ARRAY[cardinality({ids}::bigint[])]),
                     array_fill(NULL::boolean, ARRAY[cardinality({ids}::bigint[])]),
                     array_fill(NULL::text, ARRAY[cardinality({ids}::bigint[])]),
                     array_fill(NULL::text, ARRAY[cardinality({ids}::bigint[])]),
                     array_fill(NULL::text, ARRAY[cardinality({ids}::bigint[])]))"
            ))
        };
        // Ids no claim gives (zero, positive ids of releases before 0.7.0, the extremes, NULL)
        // store nothing and break nothing; nor does this job's id from a probe without a
        // region (an odd id names the job of the caller's own region).
        let odd = "ARRAY[0, -1, 1, 2, 9223372036854775807, -9223372036854775808, NULL]";
        assert_eq!(complete("mover", odd), 0);
        assert_eq!(complete("anywhere", &format!("ARRAY[{job}]")), 0);
        // The probe moves to another region: the lease it holds in the old one goes back to
        // the queue for its slot, and its result, which would now name the new region's job,
        // stores nothing.
        Spi::run("SELECT webmon.register_probe('mover', 'move-b')").unwrap();
        assert!(one::<bool>(&format!(
            "SELECT leased_by IS NULL AND requeued AND scheduled_at = '{slot}'::timestamptz
             FROM webmon.jobs WHERE monitor_id = {moving} AND region = 'move-a'"
        )));
        assert_eq!(complete("mover", &format!("ARRAY[{job}]")), 0);
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM webmon.metrics WHERE monitor_id = {moving}"
            )),
            0
        );
        // A heartbeat in the same region hands nothing back.
        let (again, again_slot) = Spi::get_two::<i64, pgrx::datum::TimestampWithTimeZone>(&format!(
            "SELECT job_id, scheduled_at FROM webmon.claim_checks('mover', 10, '1 hour') WHERE monitor_id = {moving}"
        ))
        .unwrap();
        assert_eq!(
            again,
            Some(one::<i64>(&format!(
                "SELECT webmon.job_id({moving}, 'move-b')"
            )))
        );
        Spi::run("SELECT webmon.register_probe('mover', 'move-b')").unwrap();
        assert!(one::<bool>(&format!(
            "SELECT leased_by IS NOT NULL AND leased_slot = '{}'::timestamptz
             FROM webmon.jobs WHERE monitor_id = {moving} AND region = 'move-b'",
            again_slot.expect("a slot")
        )));
    }

    #[pg_test]
    fn a_probe_role_can_claim_and_complete_but_not_touch_tables() {
        // Results need partitions (the scheduler makes them at its first tick).
        maintenance();
        Spi::run("CREATE ROLE webmon_test_probe LOGIN").unwrap();
        Spi::run("SELECT webmon.grant_probe('webmon_test_probe')").unwrap();
        Spi::run(
            "INSERT INTO webmon.monitors (url, regions, next_check_at) VALUES ('http://127.0.0.1:9/role', '{role}', '2000-01-01')",
        )
        .unwrap();
        // No direct access to any table of the extension, for any command.
        let granted = one::<i64>(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
                    unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) AS p(privilege)
             WHERE n.nspname = 'webmon' AND c.relkind IN ('r', 'p')
               AND has_table_privilege('webmon_test_probe', c.oid, p.privilege)",
        );
        assert_eq!(granted, 0, "the probe role has direct table privileges");
        assert!(!one::<bool>("SELECT has_function_privilege('webmon_test_probe', 'webmon.run_maintenance()', 'EXECUTE')"));
        assert!(one::<bool>(
            "SELECT has_table_privilege('webmon_test_probe', 'webmon.monitor_status', 'SELECT')"
        ));

        Spi::run("SET LOCAL ROLE webmon_test_probe").unwrap();
        Spi::run("SELECT webmon.register_probe('role-probe', 'role')").unwrap();
        let job = one::<i64>("SELECT job_id FROM webmon.claim_checks('role-probe', 10, '1 hour')");
        let done = one::<i32>(&format!(
            "SELECT webmon.complete_checks('role-probe', ARRAY[{job}]::bigint[], ARRAY[now()], ARRAY[NULL]::real[],
                 ARRAY[NULL]::smallint[], ARRAY[NULL]::boolean[], ARRAY[NULL]::text[], ARRAY['connect'], ARRAY['refused'])"
        ));
        assert_eq!(done, 1);
        Spi::run("RESET ROLE").unwrap();
        assert_eq!(
            one::<i64>("SELECT count(*) FROM webmon.errors WHERE error_kind = 'connect' AND error = 'refused'
                        AND monitor_id = (SELECT id FROM webmon.monitors WHERE url = 'http://127.0.0.1:9/role')"),
            1
        );
        // The probe role reads monitor_status, whose last results come from the jobs or, for a
        // paused monitor (no job), from the results: the role reads no table for either.
        Spi::run(
            "INSERT INTO webmon.monitors (url, enabled) VALUES ('http://127.0.0.1:9/role-paused', false);
             INSERT INTO webmon.metrics (request_timestamp, monitor_id, response_time_ms, http_status_code)
             SELECT now() - interval '1 minute', id, 12, 503 FROM webmon.monitors WHERE url = 'http://127.0.0.1:9/role-paused'",
        )
        .unwrap();
        Spi::run("SET LOCAL ROLE webmon_test_probe").unwrap();
        let seen = Spi::get_two::<String, String>(
            "SELECT string_agg(s.url || '=' || coalesce(s.last_status_code::text, s.last_error_kind), ',' ORDER BY s.url),
                    string_agg(s.state, ',' ORDER BY s.url)
             FROM webmon.monitor_status s WHERE s.url LIKE 'http://127.0.0.1:9/role%'",
        );
        Spi::run("RESET ROLE").unwrap();
        let (last, states) = seen.unwrap();
        assert_eq!(
            (last.unwrap_or_default(), states.unwrap_or_default()),
            (
                "http://127.0.0.1:9/role=connect,http://127.0.0.1:9/role-paused=503".to_string(),
                "pending,paused".to_string()
            )
        );
    }

    #[pg_test]
    fn partitions_cover_today_to_premake_and_old_ones_are_dropped() {
        maintenance();
        for parent in ["webmon.metrics", "webmon.errors"] {
            // Default premake 7: today plus 7 days, contiguous, daily.
            assert!(one::<bool>(&format!(
                "SELECT min(range_start) = date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                        AND max(range_end) = (date_trunc('day', now() AT TIME ZONE 'UTC') + interval '8 days') AT TIME ZONE 'UTC'
                        AND count(*) = 8 AND bool_and(range_end - range_start = interval '1 day')
                 FROM webmon.partitions WHERE parent = '{parent}'::regclass AND range_end > now()"
            )));
        }
        // A row with no partition goes to the default partition, and moves when one is made.
        Spi::run(
            "INSERT INTO webmon.metrics (request_timestamp, monitor_id, response_time_ms, http_status_code)
             VALUES (now() + interval '40 days', 1, 1, 200)",
        )
        .unwrap();
        assert_eq!(one::<i64>("SELECT count(*) FROM webmon.metrics_default"), 1);
        Spi::run(
            "SELECT webmon.create_partition('webmon.metrics', date_trunc('day', now() + interval '40 days'),
                                            date_trunc('day', now() + interval '41 days'))",
        )
        .unwrap();
        assert_eq!(one::<i64>("SELECT count(*) FROM webmon.metrics_default"), 0);
        assert_eq!(one::<i64>("SELECT count(*) FROM webmon.metrics WHERE request_timestamp > now() + interval '39 days'"), 1);

        // Old rows in the default partition are purged in batches until none is left.
        Spi::run(
            "INSERT INTO webmon.metrics (request_timestamp, monitor_id, response_time_ms, http_status_code)
             SELECT now() - interval '90 days' - g * interval '1 minute', -1, 1, 200 FROM generate_series(1, 5) g",
        )
        .unwrap();
        let old_rows = "SELECT count(*) FROM webmon.metrics_default WHERE monitor_id = -1";
        assert_eq!(one::<i64>(old_rows), 5);
        assert_eq!(
            one::<i64>("SELECT webmon.purge_default_partition('webmon.metrics', now() - interval '30 days', 2)"),
            2
        );
        assert_eq!(one::<i64>(old_rows), 3);
        maintenance();
        assert_eq!(one::<i64>(old_rows), 0);

        // Past retention (default 30 days): dropped by the next run.
        let old = one::<String>(
            "SELECT webmon.create_partition('webmon.errors', date_trunc('day', now() - interval '60 days'),
                                            date_trunc('day', now() - interval '59 days'))",
        );
        assert!(one::<bool>(&format!(
            "SELECT to_regclass('webmon.{old}') IS NOT NULL"
        )));
        Spi::run("SELECT pg_advisory_xact_lock(x'7765626d6f6e'::bigint)").unwrap();
        let dropped = one::<i64>("SELECT dropped FROM webmon.run_maintenance()");
        assert!(dropped >= 1);
        assert!(one::<bool>(&format!(
            "SELECT to_regclass('webmon.{old}') IS NULL"
        )));
    }

    #[pg_test]
    fn import_monitors_takes_the_old_config_and_refuses_bad_variants() {
        let sample = r#"[
            {"url": "https://example.com", "interval": 10},
            {"url": "https://example.com/api/items", "interval": 60, "regex": "Not Found", "timeout": 5000}
        ]"#;
        assert_eq!(
            one::<i64>(&format!("SELECT webmon.import_monitors('{sample}')")),
            2
        );
        assert_eq!(
            one::<i64>(&format!("SELECT webmon.import_monitors('{sample}')")),
            0
        );
        let imported = "SELECT count(*) FROM webmon.monitors WHERE url LIKE 'https://%example.%'";
        assert_eq!(one::<i64>(imported), 2);
        assert!(one::<bool>(
            "SELECT check_interval = '1 minute' AND timeout = '5 seconds' AND regex = 'Not Found'
             FROM webmon.monitors WHERE url = 'https://example.com/api/items'"
        ));
        for (bad, index) in [
            (r#"[{"interval": 10}]"#, "index 0"),
            (
                r#"[{"url": "https://a.example", "interval": 10}, {"url": "https://b.example"}]"#,
                "index 1",
            ),
            (
                r#"[{"url": "https://a.example", "interval": 10, "regex": "("}]"#,
                "index 0",
            ),
            (
                r#"[{"url": "https://a.example", "interval": 0}]"#,
                "index 0",
            ),
            (
                r#"[{"url": "https://a.example", "interval": "ten"}]"#,
                "index 0",
            ),
            (
                r#"[{"url": "https://a.example", "interval": 5, "timeout": -1}]"#,
                "index 0",
            ),
            ("[]", "empty"),
        ] {
            let result = outcome(&format!("SELECT webmon.import_monitors('{bad}')"));
            assert!(
                result.starts_with("22023") && result.contains(index),
                "{bad}: {result}"
            );
        }
        // All or nothing: a bad entry after a good new one stores neither.
        let result = outcome(
            r#"SELECT webmon.import_monitors('[{"url": "https://new.example", "interval": 5}, {"url": 1, "interval": 5}]')"#,
        );
        assert!(result.contains("index 1"));
        assert_eq!(one::<i64>(imported), 2);
    }

    #[pg_test]
    fn status_and_uptime_follow_the_definition_of_up() {
        // Results need partitions (the scheduler makes them at its first tick).
        maintenance();
        Spi::run(
            "INSERT INTO webmon.monitors (url, regex, enabled) VALUES ('http://127.0.0.1:9/s1', 'ok', false), ('http://127.0.0.1:9/s2', NULL, false);",
        )
        .unwrap();
        let s1 = one::<i64>("SELECT id FROM webmon.monitors WHERE url = 'http://127.0.0.1:9/s1'");
        let s2 = one::<i64>("SELECT id FROM webmon.monitors WHERE url = 'http://127.0.0.1:9/s2'");
        Spi::run(&format!(
            "INSERT INTO webmon.metrics (request_timestamp, monitor_id, response_time_ms, http_status_code, regex_matched)
             VALUES (now() - interval '70 seconds', {s1}, 10, 200, true),
                    (now() - interval '60 seconds', {s1}, 20, 200, false),
                    (now() - interval '50 seconds', {s1}, 30, 500, true),
                    (now() - interval '70 seconds', {s2}, 40, 200, NULL);
             INSERT INTO webmon.errors (request_timestamp, monitor_id, error_kind, error)
             VALUES (now() - interval '50 seconds', {s2}, 'timeout', 'timed out after 5000 ms');"
        ))
        .unwrap();
        // s1: last is a 500 (down); s2: last is an error (down).
        assert!(one::<bool>(&format!(
            "SELECT NOT up AND last_status_code = 500 FROM webmon.monitor_status WHERE monitor_id = {s1}"
        )));
        assert!(one::<bool>(&format!(
            "SELECT NOT up AND last_error_kind = 'timeout' FROM webmon.monitor_status WHERE monitor_id = {s2}"
        )));
        // s1: 3 checks, 2 failures (regex miss, 500); s2: 2 checks, 1 failure (no response).
        assert!(one::<bool>(&format!(
            "SELECT checks = 3 AND failures = 2 AND uptime_pct = 33.333 AND abs(p50_ms - 20) <= 20 * 0.045
             FROM webmon.uptime('1 hour') WHERE monitor_id = {s1}"
        )));
        assert!(one::<bool>(&format!(
            "SELECT checks = 2 AND failures = 1 AND uptime_pct = 50 FROM webmon.uptime('1 hour') WHERE monitor_id = {s2}"
        )));
        // The first check ever: up.
        Spi::run(&format!(
            "INSERT INTO webmon.metrics (request_timestamp, monitor_id, response_time_ms, http_status_code)
             VALUES (now(), {s2}, 5, 204)"
        ))
        .unwrap();
        assert!(one::<bool>(&format!(
            "SELECT up FROM webmon.monitor_status WHERE monitor_id = {s2}"
        )));
    }

    /// Rolls up every hour since `hours` ago in this transaction (the worker's own runs wait):
    /// the first run marks the closed hours, the second rolls them up.
    fn roll_up_since(hours: i32) {
        Spi::run(&format!(
            "INSERT INTO webmon.rollup_state (rolled_up_to, flagged_before)
                 VALUES (date_trunc('hour', now() - interval '{hours} hours', 'UTC'),
                         date_trunc('hour', now() - interval '{hours} hours', 'UTC'))
             ON CONFLICT (only_row) DO UPDATE SET rolled_up_to = EXCLUDED.rolled_up_to,
                                                  flagged_before = EXCLUDED.flagged_before"
        ))
        .unwrap();
        // (The state row stays locked by this transaction: the worker's runs skip.) One run
        // marks the closed hours, the next rolls them up.
        let mut rolled = 0;
        for _ in 0..5 {
            rolled += one::<i32>("SELECT webmon.run_rollups(10000)");
            if one::<bool>(
                "SELECT rolled_up_to = webmon.rollups_closed_before(now()) FROM webmon.rollup_state",
            ) {
                break;
            }
        }
        assert!(rolled >= hours - 1, "{rolled}");
        assert!(one::<bool>(
            "SELECT rolled_up_to = webmon.rollups_closed_before(now()) FROM webmon.rollup_state"
        ));
        running_totals_add_up();
    }

    /// Every hourly row's running totals are what the rows before it add up to, and
    /// webmon.rollup_totals what all of them do.
    fn running_totals_add_up() {
        let wrong = one::<i64>(
            "WITH r AS (
                 SELECT h.*, sum(h.good) OVER w - h.good AS good_before, sum(h.failed) OVER w - h.failed AS failed_before,
                        sum(h.maintenance) OVER w - h.maintenance AS maintenance_before,
                        (SELECT webmon.latency_merge(e.latency_histogram) FROM webmon.rollups_hourly e
                         WHERE (e.monitor_id, e.region) = (h.monitor_id, h.region) AND e.hour < h.hour) AS histogram_before
                 FROM webmon.rollups_hourly h
                 WINDOW w AS (PARTITION BY h.monitor_id, h.region ORDER BY h.hour))
             SELECT count(*) FROM r
             WHERE (r.cum_good, r.cum_failed, r.cum_maintenance) IS DISTINCT FROM (r.good_before, r.failed_before, r.maintenance_before)
                OR r.cum_histogram IS DISTINCT FROM r.histogram_before",
        );
        assert_eq!(wrong, 0, "hourly rows whose running totals are wrong");
        // The totals: the hourly rows and the steps of the hour in progress.
        let wrong_totals = one::<i64>(
            "SELECT count(*) FROM webmon.rollup_totals t
             FULL JOIN (SELECT u.monitor_id, u.region, sum(u.good) AS good, sum(u.failed) AS failed,
                               sum(u.maintenance) AS maintenance, webmon.latency_merge(u.latency_histogram) AS histogram
                        FROM (SELECT h.monitor_id, h.region, h.good, h.failed, h.maintenance, h.latency_histogram
                              FROM webmon.rollups_hourly h
                              UNION ALL
                              SELECT o.monitor_id, o.region, o.good, o.failed, o.maintenance, o.latency_histogram
                              FROM webmon.rollup_state r,
                                   webmon.results_summary(date_trunc('hour', r.rolled_up_to, 'UTC'), r.rolled_up_to) o) u
                        GROUP BY 1, 2) h USING (monitor_id, region)
             WHERE (t.good, t.failed, t.maintenance, t.latency_histogram) IS DISTINCT FROM (h.good, h.failed, h.maintenance, h.histogram)",
        );
        assert_eq!(
            wrong_totals, 0,
            "totals that are not what the hourly rows and the hour in progress add up to"
        );
        // The hour in progress is in the totals: a test that sees the steps.
        assert!(one::<bool>(
            "SELECT (SELECT count(*) FROM webmon.rollup_state r,
                            webmon.results_summary(date_trunc('hour', r.rolled_up_to, 'UTC'), r.rolled_up_to) o) = 0
                    OR (SELECT count(*) FROM webmon.rollup_totals t, webmon.rollup_state r
                        WHERE t.hour = date_trunc('hour', r.rolled_up_to, 'UTC')) > 0"
        ));
    }

    /// Random results over the last 50 hours for monitors a, b (regions eu and us, a
    /// maintenance window) and c; d (hourly) with five hours without any result.
    fn random_history() -> [i64; 4] {
        maintenance();
        Spi::run(
            "SELECT setseed(0.25);
             INSERT INTO webmon.monitors (url, regex, regions, check_interval, enabled, created_at) VALUES
                 ('http://127.0.0.1:9/ra', 'ok', NULL, '1 minute', false, now() - interval '60 hours'),
                 ('http://127.0.0.1:9/rb', NULL, '{eu,us}', '1 minute', false, now() - interval '60 hours'),
                 ('http://127.0.0.1:9/rc', NULL, NULL, '1 minute', false, now() - interval '60 hours'),
                 ('http://127.0.0.1:9/rd', NULL, NULL, '1 hour', false, now() - interval '50 hours');",
        )
        .unwrap();
        let ids: Vec<i64> = ["ra", "rb", "rc", "rd"]
            .iter()
            .map(|u| {
                one::<i64>(&format!(
                    "SELECT id FROM webmon.monitors WHERE url = 'http://127.0.0.1:9/{u}'"
                ))
            })
            .collect();
        let [a, b, c, d] = [ids[0], ids[1], ids[2], ids[3]];
        Spi::run(&format!(
            "INSERT INTO webmon.maintenance (monitor_id, during)
                 VALUES ({b}, tstzrange(now() - interval '30 hours 10 minutes', now() - interval '27 hours 40 minutes'));
             INSERT INTO webmon.metrics (request_timestamp, monitor_id, response_time_ms, http_status_code, regex_matched, region)
             SELECT now() - random() * interval '50 hours', x.id, exp(random() * 8)::real,
                    (ARRAY[200, 200, 200, 200, 301, 500, 404])[1 + floor(random() * 7)::int],
                    CASE WHEN x.id = {a} THEN random() > 0.1 END,
                    CASE WHEN x.id = {b} THEN (ARRAY['eu', 'us'])[1 + g % 2] END
             FROM generate_series(1, 9000) g, LATERAL (SELECT (ARRAY[{a}, {b}, {c}])[1 + g % 3] AS id) x;
             INSERT INTO webmon.errors (request_timestamp, monitor_id, error_kind, error, region)
             SELECT now() - random() * interval '50 hours', x.id,
                    (ARRAY['timeout', 'connect', 'dns', 'lost', 'no_probe'])[1 + floor(random() * 5)::int], 'x',
                    CASE WHEN x.id = {b} THEN (ARRAY['eu', 'us'])[1 + g % 2] END
             FROM generate_series(1, 1500) g, LATERAL (SELECT (ARRAY[{a}, {b}, {c}])[1 + g % 3] AS id) x;
             INSERT INTO webmon.metrics (request_timestamp, monitor_id, response_time_ms, http_status_code)
             SELECT now() - k * interval '1 hour' - interval '10 minutes', {d}, 50, 200
             FROM generate_series(1, 49) k WHERE k NOT BETWEEN 10 AND 14;"
        ))
        .unwrap();
        [a, b, c, d]
    }

    /// The exact figures of a monitor over [from, to) from its raw results: checks (good or
    /// failed, outside maintenance), failures, and the three percentiles of all responses.
    fn exact(monitor: i64, from: &str, to: &str) -> (i64, i64, Vec<f64>) {
        let raw = format!(
            "FROM (SELECT mt.request_timestamp, mt.http_status_code, mt.regex_matched, NULL::text AS error_kind, mt.response_time_ms
                   FROM webmon.metrics mt WHERE mt.monitor_id = {monitor}
                   UNION ALL
                   SELECT e.request_timestamp, NULL, NULL, e.error_kind, NULL FROM webmon.errors e WHERE e.monitor_id = {monitor}) x,
                  webmon.monitors m
             WHERE m.id = {monitor} AND x.request_timestamp >= ({from}) AND x.request_timestamp < ({to})
               AND webmon.maintenance_window(m.id, x.request_timestamp) IS NULL"
        );
        let checks = one::<i64>(&format!(
            "SELECT count(*) FILTER (WHERE webmon.result_is_up(m.expected_status, x.http_status_code, x.regex_matched, x.error_kind) IS NOT NULL) {raw}"
        ));
        let failures = one::<i64>(&format!(
            "SELECT count(*) FILTER (WHERE NOT webmon.result_is_up(m.expected_status, x.http_status_code, x.regex_matched, x.error_kind)) {raw}"
        ));
        let percentiles = Spi::get_one::<Vec<f64>>(&format!(
            "SELECT percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY mt.response_time_ms::float8)
             FROM webmon.metrics mt WHERE mt.monitor_id = {monitor}
               AND mt.request_timestamp >= ({from}) AND mt.request_timestamp < ({to})"
        ))
        .ok()
        .flatten()
        .unwrap_or_default();
        (checks, failures, percentiles)
    }

    #[pg_test]
    fn rollups_add_up_to_the_raw_results_over_any_range() {
        let [a, b, c, _] = random_history();
        roll_up_since(52);
        // Every hourly row is what its hour's results add up to.
        let wrong_hours = one::<i64>(&format!(
            "SELECT count(*) FROM webmon.rollups_hourly h
             FULL JOIN (SELECT s.*, g.hour FROM generate_series(date_trunc('hour', now() - interval '52 hours', 'UTC'),
                                                                (SELECT date_trunc('hour', rolled_up_to, 'UTC') FROM webmon.rollup_state)
                                                                    - interval '1 hour',
                                                                interval '1 hour') g(hour),
                               webmon.results_summary(g.hour, g.hour + interval '1 hour', ARRAY[{a}, {b}, {c}]) s) r
                 ON (r.monitor_id, r.region, r.hour) = (h.monitor_id, h.region, h.hour)
             WHERE coalesce(h.monitor_id, r.monitor_id) IN ({a}, {b}, {c})
               AND (h.monitor_id IS NULL OR r.monitor_id IS NULL
                    OR (h.checks, h.good, h.failed, h.maintenance, h.unmonitored, h.error_kinds, h.responses, h.latency_histogram)
                       IS DISTINCT FROM (r.checks, r.good, r.failed, r.maintenance, r.unmonitored, r.error_kinds, r.responses, r.latency_histogram))"
        ));
        assert_eq!(wrong_hours, 0);
        // Closed days add up their hours.
        assert!(one::<bool>(&format!(
            "SELECT count(*) > 0 AND bool_and(d.checks = (SELECT sum(h.checks) FROM webmon.rollups_hourly h
                                                          WHERE (h.monitor_id, h.region) = (d.monitor_id, d.region)
                                                            AND h.hour >= d.day AND h.hour < d.day + interval '24 hours'))
             FROM webmon.rollups_daily d WHERE d.monitor_id IN ({a}, {b}, {c})"
        )));
        // Ranges with edges inside hours, whole hours, whole days, and past the rolled-up hours.
        let ranges = [
            ("now() - interval '50 hours'", "now()"),
            (
                "now() - interval '47 hours 13 minutes'",
                "now() - interval '3 hours 7 minutes'",
            ),
            (
                "date_trunc('day', now() - interval '30 hours', 'UTC')",
                "date_trunc('day', now(), 'UTC')",
            ),
            (
                "date_trunc('hour', now() - interval '20 hours', 'UTC')",
                "date_trunc('hour', now() - interval '5 hours', 'UTC')",
            ),
            ("now() - interval '40 minutes'", "now()"),
            (
                "now() - interval '25 hours 59 minutes'",
                "now() - interval '25 hours 58 minutes'",
            ),
            ("now() - interval '36 hours'", "now() - interval '36 hours'"),
            // Ends just before how far the rollups go, and inside the hour in progress.
            (
                "now() - interval '30 hours 1 second'",
                "(SELECT rolled_up_to - interval '1 minute' FROM webmon.rollup_state)",
            ),
            (
                "(SELECT date_trunc('hour', rolled_up_to, 'UTC') - interval '10 minutes' FROM webmon.rollup_state)",
                "(SELECT rolled_up_to + interval '1 second' FROM webmon.rollup_state)",
            ),
        ];
        for (from, to) in ranges {
            for monitor in [a, b, c] {
                let (checks, failures, percentiles) = exact(monitor, from, to);
                let got = Spi::get_three::<i64, i64, Vec<Option<f32>>>(&format!(
                    "SELECT checks, failures, ARRAY[p50_ms, p95_ms, p99_ms] FROM webmon.uptime_between({from}, {to})
                     WHERE monitor_id = {monitor}"
                ))
                .unwrap();
                assert_eq!(
                    (got.0, got.1),
                    (Some(checks), Some(failures)),
                    "{monitor} over {from} .. {to}"
                );
                let read = got.2.unwrap_or_default();
                for (exact, read) in percentiles.iter().zip(read.iter()) {
                    let read = read.unwrap_or(f32::NAN);
                    assert!(
                        (f64::from(read) - exact).abs() / exact
                            <= webmon_core::latency::MAX_RELATIVE_ERROR + 1e-6,
                        "{monitor} over {from} .. {to}: {read} against {exact}"
                    );
                }
            }
        }
        // The maintenance window's checks count neither way.
        assert!(
            one::<i64>(&format!(
                "SELECT sum(maintenance) FROM webmon.rollups_hourly WHERE monitor_id = {b}"
            )) > 0
        );
        // Rows written before 0.9.0 have no timeline: the parts of their hours are read from the
        // results instead, to the same figures.
        Spi::run(&format!(
            "UPDATE webmon.rollups_hourly SET timeline = NULL WHERE monitor_id = {c}"
        ))
        .unwrap();
        for (from, to) in &ranges[..2] {
            let (checks, failures, _) = exact(c, from, to);
            assert!(one::<bool>(&format!(
                "SELECT checks = {checks} AND failures = {failures} FROM webmon.uptime_between({from}, {to})
                 WHERE monitor_id = {c}"
            )), "{c} over {from} .. {to} without timelines");
        }
        // Ranges are read from the rollups, not from the raw results: the totals (the range's end)
        // and the running totals of the hour it starts in, changed, change the figures.
        let checks = |from: &str, to: &str| {
            one::<i64>(&format!(
                "SELECT checks FROM webmon.uptime_between({from}, {to}) WHERE monitor_id = {c}"
            ))
        };
        let (from, to) = ranges[1];
        let before = checks(from, to);
        let changed = one::<i64>(&format!(
            "WITH h AS (UPDATE webmon.rollups_hourly SET cum_good = cum_good + 100
                        WHERE monitor_id = {c} AND hour = date_trunc('hour', {from}, 'UTC') RETURNING 1),
                  e AS (UPDATE webmon.rollups_hourly SET cum_good = cum_good + 10000
                        WHERE monitor_id = {c} AND hour = date_trunc('hour', {to}, 'UTC') RETURNING 1)
             SELECT ((SELECT count(*) FROM e) * 10000 - (SELECT count(*) FROM h) * 100)::bigint"
        ));
        assert_eq!(changed, 9900, "the hours of the range's ends have no row");
        assert_eq!(checks(from, to), before + changed);
        let (from, to) = ranges[0];
        let before = checks(from, to);
        Spi::run(&format!(
            "UPDATE webmon.rollup_totals SET good = good + 1000 WHERE monitor_id = {c}"
        ))
        .unwrap();
        assert_eq!(checks(from, to), before + 1000);
        // Unmonitored slots and error kinds, against the raw rows.
        assert!(one::<bool>(&format!(
            "SELECT (SELECT sum(unmonitored) FROM webmon.rollups_hourly WHERE monitor_id IN ({a}, {b}, {c}))
                    = (SELECT count(*) FROM webmon.errors WHERE monitor_id IN ({a}, {b}, {c})
                       AND error_kind IN ('lost', 'no_probe')
                       AND request_timestamp < (SELECT date_trunc('hour', rolled_up_to, 'UTC') FROM webmon.rollup_state))
                AND (SELECT sum((error_kinds ->> 'timeout')::int) FROM webmon.rollups_hourly WHERE monitor_id IN ({a}, {b}, {c}))
                    = (SELECT count(*) FROM webmon.errors WHERE monitor_id IN ({a}, {b}, {c}) AND error_kind = 'timeout'
                       AND request_timestamp < (SELECT date_trunc('hour', rolled_up_to, 'UTC') FROM webmon.rollup_state))"
        )));
    }

    #[pg_test]
    fn late_results_are_added_to_their_closed_hour_and_day() {
        let [a, ..] = random_history();
        roll_up_since(52);
        let hour = "date_trunc('hour', now() - interval '40 hours', 'UTC')";
        let day = format!("date_trunc('day', {hour}, 'UTC')");
        let before = one::<i64>(&format!(
            "SELECT checks FROM webmon.rollups_hourly WHERE monitor_id = {a} AND region = '' AND hour = {hour}"
        ));
        let day_before = one::<i64>(&format!(
            "SELECT checks FROM webmon.rollups_daily WHERE monitor_id = {a} AND region = '' AND day = {day}"
        ));
        Spi::run(&format!(
            "INSERT INTO webmon.metrics (request_timestamp, monitor_id, response_time_ms, http_status_code)
                 VALUES ({hour} + interval '59 minutes', {a}, 5, 503), ({hour} + interval '1 minute', {a}, 7, 200);
             INSERT INTO webmon.errors (request_timestamp, monitor_id, error_kind, error)
                 VALUES ({hour} + interval '30 minutes', {a}, 'tls', 'late')"
        ))
        .unwrap();
        assert_eq!(
            one::<i64>(&format!("SELECT count(*) FROM webmon.rollup_pending WHERE monitor_id = {a} AND hour = {hour}")),
            1
        );
        one::<i32>("SELECT webmon.run_rollups()");
        // Every noted hour that is rolled up is taken (those still to come wait for their turn).
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM webmon.rollup_pending
                        WHERE hour < (SELECT rolled_up_to FROM webmon.rollup_state)"
            ),
            0
        );
        assert!(one::<bool>(&format!(
            "SELECT checks = {before} + 3 AND (error_kinds ->> 'tls')::int >= 1
             FROM webmon.rollups_hourly WHERE monitor_id = {a} AND region = '' AND hour = {hour}"
        )));
        // The running totals of the hours after it, and the totals, grew with it.
        running_totals_add_up();
        if one::<bool>(&format!(
            "SELECT {day} < date_trunc('day', now() - interval '2 minutes', 'UTC')"
        )) {
            assert_eq!(
                one::<i64>(&format!(
                    "SELECT checks FROM webmon.rollups_daily WHERE monitor_id = {a} AND region = '' AND day = {day}"
                )),
                day_before + 3
            );
        }
        // A late result just before how far the rollups go (in the hour in progress, or in the
        // hour just closed) counts in uptime after the next run.
        let checks = || {
            one::<i64>(&format!(
                "SELECT checks FROM webmon.uptime_between(now() - interval '1 day', now()) WHERE monitor_id = {a}"
            ))
        };
        let before = checks();
        Spi::run(&format!(
            "INSERT INTO webmon.metrics (request_timestamp, monitor_id, response_time_ms, http_status_code)
             SELECT rolled_up_to - interval '1 microsecond', {a}, 5, 200 FROM webmon.rollup_state"
        ))
        .unwrap();
        one::<i32>("SELECT webmon.run_rollups()");
        assert_eq!(checks(), before + 1);
        running_totals_add_up();
        // A result for an hour not rolled up yet is not late.
        Spi::run(&format!(
            "INSERT INTO webmon.metrics (request_timestamp, monitor_id, response_time_ms, http_status_code)
                 VALUES (now(), {a}, 5, 200)"
        ))
        .unwrap();
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM webmon.rollup_pending WHERE monitor_id = {a} AND hour = date_trunc('hour', now(), 'UTC')"
            )),
            0
        );
    }

    #[pg_test]
    fn an_hour_without_results_is_unmonitored_not_down() {
        let [.., d] = random_history();
        roll_up_since(52);
        // d is checked hourly; five hours have no result at all.
        assert!(one::<bool>(&format!(
            "SELECT checks = 44 AND failures = 0 AND uptime_pct = 100 AND unmonitored_time = interval '5 hours'
             FROM webmon.uptime_between(now() - interval '50 hours', now()) WHERE monitor_id = {d}"
        )));
        // The SLA of this month reads the same rollups.
        assert!(one::<bool>(&format!(
            "SELECT failures = 0 AND month_start = date_trunc('month', now())::date FROM webmon.sla(now()::date) WHERE monitor_id = {d}"
        )));
        assert!(
            outcome("SELECT * FROM webmon.uptime_between(now(), now() - interval '1 hour')")
                .starts_with("22023")
        );
        assert!(outcome("SELECT * FROM webmon.uptime_between(NULL, now())").starts_with("22023"));
    }

    #[pg_test]
    fn latency_histograms_merge_and_refuse_damaged_input() {
        assert!(one::<bool>(
            "SELECT webmon.latency_percentile(webmon.latency_histogram(v), 0.5) BETWEEN 50 * 0.956 AND 50 * 1.044
             FROM generate_series(1, 99) v"
        ));
        assert!(one::<bool>(
            "SELECT webmon.latency_merge(h) = (SELECT webmon.latency_histogram(v) FROM generate_series(1, 100) v)
             FROM (SELECT webmon.latency_histogram(v) AS h FROM generate_series(1, 100) v GROUP BY v % 7) x"
        ));
        assert!(one::<bool>(
            "SELECT webmon.latency_histogram(NULL::real) IS NULL"
        ));
        assert!(one::<bool>("SELECT sum(count) = 100 FROM webmon.latency_buckets((SELECT webmon.latency_histogram(v) FROM generate_series(1, 100) v))"));
        assert!(
            outcome("SELECT webmon.latency_percentile('\\x0580'::bytea, 0.5)").starts_with("22P03")
        );
        assert!(
            outcome("SELECT webmon.latency_merge(h) FROM (VALUES ('\\x05'::bytea)) v(h)")
                .starts_with("22P03")
        );
        assert!(
            outcome("SELECT webmon.latency_percentile('\\x0501'::bytea, 2)").starts_with("22023")
        );
        // In a parallel plan (partial aggregates combined through their stored form) the
        // histograms are the same.
        Spi::run(
            "CREATE TABLE tests.latencies AS SELECT g % 100 AS k, (g % 997)::real AS ms FROM generate_series(1, 200000) g;
             ANALYZE tests.latencies;",
        )
        .unwrap();
        let serial = one::<Vec<u8>>("SELECT webmon.latency_histogram(ms) FROM tests.latencies");
        Spi::run(
            "SET LOCAL parallel_setup_cost = 0; SET LOCAL parallel_tuple_cost = 0;
             SET LOCAL min_parallel_table_scan_size = 0; SET LOCAL max_parallel_workers_per_gather = 2;",
        )
        .unwrap();
        let plan = Spi::get_one::<pgrx::Json>(
            "EXPLAIN (FORMAT JSON) SELECT webmon.latency_histogram(ms) FROM tests.latencies",
        )
        .unwrap()
        .map(|j| j.0.to_string())
        .unwrap_or_default();
        assert!(plan.contains("Partial"), "{plan}");
        assert_eq!(
            one::<Vec<u8>>("SELECT webmon.latency_histogram(ms) FROM tests.latencies"),
            serial
        );
        assert_eq!(
            one::<Vec<u8>>("SELECT webmon.latency_merge(h) FROM (SELECT webmon.latency_histogram(ms) AS h FROM tests.latencies GROUP BY k) x"),
            serial
        );
    }

    #[pg_test]
    fn rollup_partitions_are_made_and_dropped_after_rollup_retention() {
        maintenance();
        for parent in ["webmon.rollups_hourly", "webmon.rollups_daily"] {
            assert!(one::<bool>(&format!(
                "SELECT bool_and(range_end - range_start = interval '30 days') AND min(range_start) <= now()
                        AND max(range_end) > now()
                 FROM webmon.partitions WHERE parent = '{parent}'::regclass"
            )));
        }
        let old = one::<String>(
            "SELECT webmon.create_partition('webmon.rollups_hourly', now() - interval '500 days', now() - interval '470 days')",
        );
        let kept = one::<String>(
            "SELECT webmon.create_partition('webmon.rollups_daily', now() - interval '300 days', now() - interval '270 days')",
        );
        Spi::run("SELECT pg_advisory_xact_lock(x'7765626d6f6e'::bigint)").unwrap();
        assert!(one::<i64>("SELECT dropped FROM webmon.run_maintenance()") >= 1);
        let left = one::<String>(
            "SELECT string_agg(partition || ' ' || range_start || ' ' || range_end, ', ') FROM webmon.partitions
             WHERE parent IN ('webmon.rollups_hourly'::regclass, 'webmon.rollups_daily'::regclass)",
        );
        assert!(
            one::<bool>(&format!(
                "SELECT to_regclass(format('webmon.%I', '{old}')) IS NULL
                        AND to_regclass(format('webmon.%I', '{kept}')) IS NOT NULL"
            )),
            "{left}"
        );
    }

    #[pg_test]
    fn forty_thousand_heartbeats_draw_no_ids_and_the_probe_still_claims() {
        committed("DO $d$ BEGIN PERFORM webmon.register_probe('hb-probe', 'heartbeat'); END $d$");
        let id = one::<i16>("SELECT id FROM webmon.probes WHERE name = 'hb-probe'");
        let drawn = "SELECT last_value FROM webmon.probes_id_seq";
        let before = one::<i64>(drawn);
        // Each heartbeat its own transaction, as the probe sends them. smallint ids: before the
        // fix, the 32,768th call failed with "nextval: reached maximum value".
        committed(
            "DO $d$ BEGIN
                 PERFORM set_config('synchronous_commit', 'off', false);
                 FOR i IN 1..40000 LOOP
                     PERFORM webmon.register_probe('hb-probe', 'heartbeat');
                     COMMIT;
                 END LOOP;
             END $d$",
        );
        // Other tests register a few probes meanwhile; 40,000 heartbeats used to draw 40,000.
        let drawn_meanwhile = one::<i64>(drawn) - before;
        assert!(
            drawn_meanwhile < 100,
            "heartbeats drew {drawn_meanwhile} ids"
        );
        assert_eq!(
            one::<i16>("SELECT webmon.register_probe('hb-probe', 'heartbeat')"),
            id
        );
        // Queued after the loop (a job waits at most pg_webmon.unclaimed_timeout), and claimed
        // on its own connection: drop_region must not wait for this test's row locks.
        queue_jobs("heartbeat", 1);
        let claimed = one::<i64>(
            "SELECT count(*) FROM public.dblink(tests.loopback(),
                 $c$SELECT job_id FROM webmon.claim_checks('hb-probe', 10, '1 hour')$c$) AS t(job_id bigint)",
        );
        drop_region("heartbeat");
        assert_eq!(claimed, 1);
    }

    #[pg_test]
    fn no_partition_belongs_to_the_extension() {
        maintenance();
        let partitions = one::<i64>(
            "SELECT count(*) FROM pg_inherits WHERE inhparent IN ('webmon.metrics'::regclass, 'webmon.errors'::regclass)",
        );
        // Today, 7 ahead and the default partition, for each of the two tables.
        assert!(partitions >= 18, "{partitions} partitions");
        let members = one::<i64>(
            "SELECT count(*) FROM pg_depend d JOIN pg_inherits i ON i.inhrelid = d.objid
             WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e'
               AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_webmon')
               AND i.inhparent IN ('webmon.metrics'::regclass, 'webmon.errors'::regclass)",
        );
        assert_eq!(members, 0, "partitions are extension members");
    }

    #[pg_test]
    fn a_failing_maintenance_step_does_not_stop_the_others_and_bookkeeping_heals() {
        maintenance();
        // An old partition made undroppable (as 0.1.0 left those made by CREATE EXTENSION) …
        let old = one::<String>(
            "SELECT webmon.create_partition('webmon.errors', date_trunc('day', now() - interval '90 days'),
                                            date_trunc('day', now() - interval '89 days'))",
        );
        Spi::run(&format!("ALTER EXTENSION pg_webmon ADD TABLE webmon.{old}")).unwrap();
        // … and a premade partition dropped by hand, which must be made again.
        let ahead = one::<String>(
            "SELECT partition FROM webmon.partitions WHERE parent = 'webmon.metrics'::regclass
             ORDER BY range_start DESC LIMIT 1",
        );
        Spi::run(&format!("DROP TABLE webmon.{ahead}")).unwrap();
        let created = maintenance();
        // (More than one only when the test crosses midnight UTC.)
        assert!(
            created >= 1,
            "the partition dropped by hand was not made again"
        );
        assert!(one::<bool>(&format!(
            "SELECT to_regclass('webmon.{ahead}') IS NOT NULL"
        )));
        // The failed drop was rolled back alone: the table is still there, still recorded.
        assert!(one::<bool>(&format!(
            "SELECT to_regclass('webmon.{old}') IS NOT NULL
                    AND EXISTS (SELECT 1 FROM webmon.partitions WHERE partition = '{old}')"
        )));
        // Once released, the next run drops it.
        Spi::run(&format!(
            "ALTER EXTENSION pg_webmon DROP TABLE webmon.{old}"
        ))
        .unwrap();
        maintenance();
        assert!(one::<bool>(&format!(
            "SELECT to_regclass('webmon.{old}') IS NULL"
        )));
    }

    #[pg_test]
    fn a_row_the_checks_cannot_run_is_reported_and_never_stops_the_others() {
        partitions_ready();
        assert!(one::<bool>("SELECT tests.scheduler_running()"));
        // Written past the triggers (as with triggers disabled, or by an older version): no
        // job rows; webmon.sync_jobs (every five minutes) adds the healthy one's only.
        committed(
            "SET session_replication_role = replica;
             INSERT INTO webmon.monitors (url, check_interval, regions) VALUES
                 ('http://127.0.0.1:9/poison/interval', '300000 years', '{poison}'),
                 ('http://127.0.0.1:9/poison/negative', '-10 years 3601 days', '{poison}'),
                 ('http://127.0.0.1:9/poison/healthy', '1 hour', '{poison}')",
        );
        // Two monitors with jobs; then one's timeout is broken past the trigger.
        committed(
            "INSERT INTO webmon.monitors (url, regions, next_check_at) VALUES
                 ('http://127.0.0.1:9/poison/timeout', '{poison-claim}', now() - interval '1 minute'),
                 ('http://127.0.0.1:9/poison/claim-healthy', '{poison-claim}', now() - interval '1 minute')",
        );
        committed(
            "SET session_replication_role = replica;
             UPDATE webmon.monitors SET timeout = '10 years -3600 days 1 second'
             WHERE url = 'http://127.0.0.1:9/poison/timeout'",
        );
        committed("DO $d$ BEGIN PERFORM webmon.sync_jobs(); END $d$");
        let healthy =
            "(SELECT id FROM webmon.monitors WHERE url = 'http://127.0.0.1:9/poison/healthy')";
        let queued = one::<bool>(&format!(
            "SELECT EXISTS (SELECT 1 FROM webmon.jobs WHERE monitor_id = {healthy})"
        ));
        let reported = wait_for(
            "SELECT count(DISTINCT e.monitor_id) = 2 FROM webmon.errors e JOIN webmon.monitors m ON m.id = e.monitor_id
             WHERE m.url LIKE 'http://127.0.0.1:9/poison/%' AND e.error_kind = 'other'
               AND e.error LIKE 'monitor not checked: invalid check_interval%'",
            5.0,
        );
        let poisoned_queued = one::<i64>(
            "SELECT count(*) FROM webmon.jobs j JOIN webmon.monitors m ON m.id = j.monitor_id
             WHERE m.url IN ('http://127.0.0.1:9/poison/interval', 'http://127.0.0.1:9/poison/negative',
                             'http://127.0.0.1:9/poison/timeout')",
        );
        let retry_in_an_hour = one::<bool>(
            "SELECT bool_and(next_check_at > now() + interval '59 minutes') FROM webmon.monitors
             WHERE url IN ('http://127.0.0.1:9/poison/interval', 'http://127.0.0.1:9/poison/negative')",
        );
        // A job whose monitor's timeout broke after it was made is still leased with the
        // others (the probe's default timeout). Made again past the sync, as it was before.
        committed(
            "INSERT INTO webmon.jobs (monitor_id, region, check_interval, grid_start, scheduled_at)
             SELECT id, 'poison-claim', check_interval, now(), now() - interval '1 minute'
             FROM webmon.monitors WHERE url = 'http://127.0.0.1:9/poison/timeout'",
        );
        committed(
            "DO $d$ BEGIN PERFORM webmon.register_probe('poison-probe', 'poison-claim'); END $d$",
        );
        // (Claimed on its own connection: the cleanup below must not wait for this test's locks.)
        let claimed = one::<i64>(
            "SELECT count(*) FROM public.dblink(tests.loopback(),
                 $c$SELECT timeout_ms FROM webmon.claim_checks('poison-probe', 10, '1 hour')$c$) AS t(timeout_ms int)
             WHERE timeout_ms IS NULL",
        );
        committed("DELETE FROM webmon.errors WHERE monitor_id IN (SELECT id FROM webmon.monitors WHERE url LIKE 'http://127.0.0.1:9/poison/%')");
        committed("DELETE FROM webmon.monitors WHERE url LIKE 'http://127.0.0.1:9/poison/%'");
        assert!(queued, "the healthy monitor got no job");
        assert!(reported, "the poisoned monitors were not reported");
        assert_eq!(poisoned_queued, 0);
        assert!(retry_in_an_hour);
        assert_eq!(claimed, 2);
    }

    #[pg_test]
    fn a_requeued_check_gets_its_full_unclaimed_timeout() {
        queue_jobs("requeued", 1);
        committed(
            "DO $d$ BEGIN PERFORM webmon.register_probe('requeued-probe', 'requeued'); END $d$",
        );
        let job = "(SELECT webmon.job_id(j.monitor_id, j.region) FROM webmon.jobs j JOIN webmon.monitors m ON m.id = j.monitor_id WHERE m.regions = ARRAY['requeued'])";
        // Its slot was an hour ago and its lease has just expired (a probe died).
        committed(&format!(
            "UPDATE webmon.jobs SET scheduled_at = now(), leased_slot = now() - interval '1 hour', attempts = 1,
                    leased_by = webmon.probe_id('requeued-probe'), lease_expires_at = now() - interval '1 second'
             WHERE webmon.job_id(monitor_id, region) = {job}"
        ));
        assert!(one::<bool>("SELECT tests.scheduler_running()"));
        assert!(wait_for(
            &format!("SELECT leased_by IS NULL AND requeued FROM webmon.jobs WHERE webmon.job_id(monitor_id, region) = {job}"),
            8.0
        ));
        // Back in the queue just now: not `no_probe` although its slot is an hour old.
        Spi::run("SELECT webmon.record_unclaimed_checks('2 minutes')").unwrap();
        let kept = one::<bool>(&format!(
            "SELECT requeued AND scheduled_at < now() - interval '59 minutes' FROM webmon.jobs WHERE webmon.job_id(monitor_id, region) = {job}"
        ));
        // Two minutes after it came back, it is, and the job moves on to its next slot.
        Spi::run(&format!("UPDATE webmon.jobs SET lease_expires_at = now() - interval '3 minutes' WHERE webmon.job_id(monitor_id, region) = {job}")).unwrap();
        Spi::run("SELECT webmon.record_unclaimed_checks('2 minutes')").unwrap();
        let recorded = one::<bool>(&format!(
            "SELECT EXISTS (SELECT 1 FROM webmon.errors e JOIN webmon.monitors m ON m.id = e.monitor_id
                            WHERE m.regions = ARRAY['requeued'] AND e.error_kind = 'no_probe'
                              AND e.request_timestamp < now() - interval '59 minutes' AND e.region = 'requeued')
                AND (SELECT NOT requeued AND scheduled_at > now() FROM webmon.jobs WHERE webmon.job_id(monitor_id, region) = {job})"
        ));
        assert!(kept, "a requeued check was recorded as no_probe at once");
        assert!(recorded);
    }

    #[pg_test]
    fn a_new_probe_name_takes_over_the_id_of_a_long_gone_probe() {
        Spi::run(
            "SELECT webmon.register_probe('gone-probe'), webmon.register_probe('recent-probe')",
        )
        .unwrap();
        Spi::run("UPDATE webmon.probes SET last_seen_at = now() - interval '2 years' WHERE name = 'gone-probe'").unwrap();
        Spi::run("UPDATE webmon.probes SET last_seen_at = now() - interval '1 day' WHERE name = 'recent-probe'").unwrap();
        let gone = one::<i16>("SELECT id FROM webmon.probes WHERE name = 'gone-probe'");
        let recent = one::<i16>("SELECT id FROM webmon.probes WHERE name = 'recent-probe'");
        let new = one::<i16>("SELECT webmon.register_probe('pod-7f9c')");
        assert_eq!(new, gone, "a new name did not take over the stale id");
        assert!(one::<bool>(
            "SELECT NOT EXISTS (SELECT 1 FROM webmon.probes WHERE name = 'gone-probe')"
        ));
        // A probe seen within retention keeps its id: the next new name gets another one.
        assert_ne!(
            one::<i16>("SELECT webmon.register_probe('pod-8a1b')"),
            recent
        );
    }

    #[pg_test]
    fn an_editor_with_rights_on_monitors_alone_can_pause_move_and_delete_a_monitor() {
        Spi::run(
            "CREATE ROLE webmon_test_editor;
             GRANT USAGE ON SCHEMA webmon TO webmon_test_editor;
             GRANT SELECT, UPDATE, DELETE ON webmon.monitors TO webmon_test_editor;
             GRANT USAGE ON SCHEMA tests TO webmon_test_editor;
             INSERT INTO webmon.monitors (url) VALUES ('http://127.0.0.1:9/editor');
             SET LOCAL ROLE webmon_test_editor",
        )
        .unwrap();
        let editor = "url = 'http://127.0.0.1:9/editor'";
        let moved = outcome(&format!(
            "UPDATE webmon.monitors SET regions = '{{eu}}' WHERE {editor}"
        ));
        let paused = outcome(&format!(
            "UPDATE webmon.monitors SET enabled = false WHERE {editor}"
        ));
        // Deleting a monitor with jobs (the trigger removes them).
        Spi::run("RESET ROLE").unwrap();
        Spi::run(&format!(
            "UPDATE webmon.monitors SET enabled = true WHERE {editor}"
        ))
        .unwrap();
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM webmon.jobs j JOIN webmon.monitors m ON m.id = j.monitor_id
                               WHERE m.url = 'http://127.0.0.1:9/editor'"
            ),
            1
        );
        Spi::run("SET LOCAL ROLE webmon_test_editor").unwrap();
        let deleted = outcome(&format!("DELETE FROM webmon.monitors WHERE {editor}"));
        Spi::run("RESET ROLE").unwrap();
        assert_eq!(moved, "accepted");
        assert_eq!(paused, "accepted");
        assert_eq!(deleted, "accepted");
    }

    #[pg_test]
    fn a_changed_interval_or_a_monitor_enabled_again_is_checked_within_one_new_interval() {
        Spi::run(
            "INSERT INTO webmon.monitors (url, check_interval, next_check_at, enabled) VALUES
                 ('http://127.0.0.1:9/resched/a', '1 hour', now() + interval '59 minutes', true),
                 ('http://127.0.0.1:9/resched/b', '10 seconds', now() + interval '3 days', false),
                 ('http://127.0.0.1:9/resched/c', '1 hour', now() + interval '59 minutes', true)",
        )
        .unwrap();
        Spi::run("UPDATE webmon.monitors SET check_interval = '1 second' WHERE url = 'http://127.0.0.1:9/resched/a'").unwrap();
        Spi::run(
            "UPDATE webmon.monitors SET enabled = true WHERE url = 'http://127.0.0.1:9/resched/b'",
        )
        .unwrap();
        // An UPDATE that sets next_check_at itself is obeyed.
        Spi::run("UPDATE webmon.monitors SET check_interval = '1 second', next_check_at = now() + interval '2 hours' WHERE url = 'http://127.0.0.1:9/resched/c'").unwrap();
        let next = |url: &str| {
            format!("SELECT j.scheduled_at FROM webmon.jobs j JOIN webmon.monitors m ON m.id = j.monitor_id
                     WHERE m.url = 'http://127.0.0.1:9/resched/{url}'")
        };
        assert!(one::<bool>(&format!(
            "SELECT ({}) <= now() + interval '1 second'",
            next("a")
        )));
        assert!(one::<bool>(&format!(
            "SELECT ({}) <= now() + interval '10 seconds'",
            next("b")
        )));
        assert!(one::<bool>(&format!(
            "SELECT ({}) = now() + interval '2 hours'",
            next("c")
        )));
    }

    #[pg_test]
    fn the_pending_job_follows_regions_and_is_dropped_when_the_monitor_is_paused() {
        partitions_ready();
        Spi::run("SELECT webmon.register_probe('follow-probe', 'follow-b')").unwrap();
        Spi::run(
            "INSERT INTO webmon.monitors (url, regions) VALUES ('http://127.0.0.1:9/follow', '{follow-a}')",
        )
        .unwrap();
        let job = "SELECT count(*) FROM webmon.jobs j JOIN webmon.monitors m ON m.id = j.monitor_id
                   WHERE m.url = 'http://127.0.0.1:9/follow'";
        // Mistyped, then fixed: the job moves to the new region and the probe claims it.
        Spi::run("UPDATE webmon.monitors SET regions = '{follow-b}' WHERE url = 'http://127.0.0.1:9/follow'").unwrap();
        assert!(one::<bool>("SELECT array_agg(region) = '{follow-b}' FROM webmon.jobs j JOIN webmon.monitors m ON m.id = j.monitor_id
                             WHERE m.url = 'http://127.0.0.1:9/follow'"));
        assert_eq!(
            one::<i64>("SELECT count(*) FROM webmon.claim_checks('follow-probe', 10, '1 hour')"),
            1
        );
        Spi::run("SELECT webmon.release_checks('follow-probe', ARRAY(SELECT webmon.job_id(monitor_id, region) FROM webmon.jobs))")
            .unwrap();
        assert_eq!(one::<i64>(job), 1);
        // A second region joins the grid of the first: one job each, the same next slot.
        Spi::run("UPDATE webmon.monitors SET regions = '{follow-b,follow-c,follow-b}' WHERE url = 'http://127.0.0.1:9/follow'").unwrap();
        assert!(one::<bool>(
            "SELECT count(*) = 2 AND count(DISTINCT scheduled_at) = 1
                             FROM webmon.jobs j JOIN webmon.monitors m ON m.id = j.monitor_id
                             WHERE m.url = 'http://127.0.0.1:9/follow'"
        ));
        Spi::run(
            "UPDATE webmon.monitors SET enabled = false WHERE url = 'http://127.0.0.1:9/follow'",
        )
        .unwrap();
        assert_eq!(one::<i64>(job), 0, "a paused monitor's job was kept");
    }

    #[pg_test]
    fn a_check_no_probe_claims_is_recorded_as_no_probe() {
        assert!(one::<bool>("SELECT tests.scheduler_running()"));
        // The scheduler sweeps only once the default partitions exist (errors need a place).
        partitions_ready();
        committed(
            "INSERT INTO webmon.monitors (url, regions, next_check_at)
             VALUES ('http://127.0.0.1:9/no-probe', '{nowhere}', now() - interval '1 hour')",
        );
        // Waiting for a probe since an hour ago.
        committed(
            "UPDATE webmon.jobs SET lease_expires_at = now() - interval '1 hour'
             WHERE monitor_id = (SELECT id FROM webmon.monitors WHERE url = 'http://127.0.0.1:9/no-probe')",
        );
        let id =
            one::<i64>("SELECT id FROM webmon.monitors WHERE url = 'http://127.0.0.1:9/no-probe'");
        let recorded = wait_for(
            &format!(
                "SELECT (SELECT scheduled_at > now() AND leased_by IS NULL FROM webmon.jobs WHERE monitor_id = {id})
                    AND EXISTS (SELECT 1 FROM webmon.errors WHERE monitor_id = {id} AND error_kind = 'no_probe'
                                AND error LIKE '%region nowhere%' AND region = 'nowhere')"
            ),
            5.0,
        );
        committed(&format!(
            "DELETE FROM webmon.errors WHERE monitor_id = {id}"
        ));
        committed(&format!("DELETE FROM webmon.monitors WHERE id = {id}"));
        assert!(recorded, "the unclaimed job was not recorded as no_probe");
    }

    #[pg_test]
    fn error_kinds_are_the_shared_list() {
        // Results need partitions (the scheduler makes them at its first tick).
        maintenance();
        assert_eq!(
            one::<Vec<String>>("SELECT webmon.error_kinds()"),
            webmon_core::ErrorKind::names()
        );
        let refused = outcome(
            "INSERT INTO webmon.errors (request_timestamp, monitor_id, error_kind, error) VALUES (now(), 1, 'ssl', 'x')",
        );
        assert!(refused.starts_with("23514"), "{refused}");
        assert_eq!(
            outcome("INSERT INTO webmon.errors (request_timestamp, monitor_id, error_kind, error) VALUES (now(), 1, 'no_probe', 'x')"),
            "accepted"
        );
    }

    #[pg_test]
    fn status_by_region_counts_a_quorum_of_failures_in_the_same_slot() {
        maintenance();
        Spi::run(
            "SELECT webmon.register_probe('q-eu', 'q-eu'), webmon.register_probe('q-us', 'q-us'),
                    webmon.register_probe('q-ap', 'q-ap');
             UPDATE webmon.probes SET last_seen_at = now() - interval '2 minutes' WHERE name = 'q-ap';
             INSERT INTO webmon.monitors (url, check_interval, regions, down_quorum) VALUES
                 ('http://127.0.0.1:9/q/two-down', '1 minute', '{q-eu,q-us,q-ap}', NULL),
                 ('http://127.0.0.1:9/q/one-down', '1 minute', '{q-eu,q-us,q-ap}', NULL),
                 ('http://127.0.0.1:9/q/quorum-one', '1 minute', '{q-eu,q-us,q-ap}', 1),
                 ('http://127.0.0.1:9/q/alone', '1 minute', '{q-eu,q-ap}', NULL),
                 ('http://127.0.0.1:9/q/stale', '1 minute', '{q-eu,q-us}', NULL),
                 ('http://127.0.0.1:9/q/gone', '1 minute', '{q-ap}', NULL),
                 ('http://127.0.0.1:9/q/jitter', '1 minute', '{q-eu,q-us}', NULL),
                 ('http://127.0.0.1:9/q/adjacent', '1 minute', '{q-eu,q-us}', NULL),
                 ('http://127.0.0.1:9/q/nobody', '1 minute', NULL, NULL);
             CREATE TEMP TABLE q AS SELECT id, substr(url, 22) AS name FROM webmon.monitors WHERE url LIKE 'http://127.0.0.1:9/q/%';
             -- Results at given offsets from a slot of each monitor's grid a minute back.
             INSERT INTO webmon.errors (request_timestamp, monitor_id, error_kind, error, region)
             SELECT (SELECT max(j.grid_start) FROM webmon.jobs j WHERE j.monitor_id = q.id) - interval '1 minute' - x.ago,
                    q.id, x.kind, 'x', x.region
             FROM q JOIN (VALUES ('two-down', 'q-eu', 'connect', interval '1 second'),
                                 ('two-down', 'q-us', 'timeout', interval '2 seconds'),
                                 ('one-down', 'q-eu', 'connect', interval '1 second'),
                                 ('quorum-one', 'q-eu', 'connect', interval '1 second'),
                                 ('alone', 'q-eu', 'dns', interval '1 second'),
                                 ('stale', 'q-eu', 'dns', interval '1 second'),
                                 ('stale', 'q-us', 'dns', interval '5 minutes'),
                                 -- Its only region's probe is gone: whatever it last said.
                                 ('gone', 'q-ap', 'connect', interval '0'),
                                 -- The same slot, one probe 10 ms early (clock mapping), one 5 ms late.
                                 ('jitter', 'q-eu', 'connect', interval '0.010 seconds'),
                                 ('jitter', 'q-us', 'connect', interval '-0.005 seconds'),
                                 -- Adjacent slots: not the same slot.
                                 ('adjacent', 'q-eu', 'connect', interval '-0.001 seconds'),
                                 ('adjacent', 'q-us', 'connect', interval '59.999 seconds'),
                                 ('nobody', NULL, 'no_probe', interval '1 second')) AS x(name, region, kind, ago)
               ON x.name = q.name;
             INSERT INTO webmon.metrics (request_timestamp, monitor_id, response_time_ms, http_status_code, region)
             SELECT (SELECT max(j.grid_start) FROM webmon.jobs j WHERE j.monitor_id = q.id) - interval '1 minute' - interval '2 seconds',
                    q.id, 20, 200, 'q-us' FROM q WHERE q.name IN ('one-down', 'quorum-one');",
        )
        .unwrap();
        let status = |name: &str| {
            one::<String>(&format!(
                "SELECT coalesce(s.up::text, 'null') || ' ' || coalesce(s.region_states::text, '-')
                 FROM webmon.monitor_status s JOIN q ON q.id = s.monitor_id WHERE q.name = '{name}'"
            ))
        };
        // Two of three regions failed in the same slot: down. The region without a live
        // probe is unmonitored, never down.
        assert_eq!(
            status("two-down"),
            r#"false {"q-ap": "unmonitored", "q-eu": "down", "q-us": "down"}"#
        );
        // One failed, one saw it up: up (below the majority), unless the quorum is one.
        assert!(
            status("one-down").starts_with("true "),
            "{}",
            status("one-down")
        );
        assert!(status("quorum-one").starts_with("false "));
        // One region failing and the other unmonitored: not enough to say.
        assert!(status("alone").starts_with("null "), "{}", status("alone"));
        // The other region's failure is from five slots ago: not the same slot.
        assert!(status("stale").starts_with("null "), "{}", status("stale"));
        // A region without a live probe never counts as down, whatever it said last.
        assert_eq!(status("gone"), r#"null {"q-ap": "unmonitored"}"#);
        // A probe's start a few ms off its slot is still that slot; adjacent slots are not one.
        assert!(
            status("jitter").starts_with("false "),
            "{}",
            status("jitter")
        );
        assert!(
            status("adjacent").starts_with("null "),
            "{}",
            status("adjacent")
        );
        // Nobody checked it: neither up nor down, and not a failure in uptime.
        assert_eq!(status("nobody"), "null -");
        assert!(one::<bool>(
            "SELECT checks = 0 AND failures = 0 FROM webmon.uptime('1 hour') u JOIN q ON q.id = u.monitor_id WHERE q.name = 'nobody'"
        ));
        assert!(one::<bool>(
            "SELECT down_quorum = 2 FROM webmon.monitor_status s JOIN q ON q.id = s.monitor_id WHERE q.name = 'two-down'"
        ));
        // Which regions are covered.
        assert_eq!(
            one::<String>(
                "SELECT string_agg(region || ':' || live_probes || '/' || probes || '/' || monitors, ' ' ORDER BY region)
                 FROM webmon.regions WHERE region LIKE 'q-%'"
            ),
            "q-ap:0/1/5 q-eu:1/1/7 q-us:1/1/6"
        );
        // A quorum is from 1 to the number of regions.
        for (quorum, regions, accepted) in [
            ("0", "'{a,b}'", false),
            ("3", "'{a,b}'", false),
            ("2", "'{a,b,b}'", true),
            ("3", "'{a,b,b}'", false),
            ("1", "NULL", true),
            ("2", "NULL", false),
        ] {
            let result = outcome(&format!(
                "INSERT INTO webmon.monitors (url, regions, down_quorum) VALUES ('http://127.0.0.1:9/q/v', {regions}, {quorum})"
            ));
            assert_eq!(
                result == "accepted",
                accepted,
                "quorum {quorum}, regions {regions}: {result}"
            );
            if !accepted {
                assert!(result.starts_with("22023"), "{result}");
            }
        }
    }

    #[pg_test]
    fn sync_jobs_mends_what_triggers_did_not_see() {
        Spi::run(
            "INSERT INTO webmon.monitors (url, regions) VALUES
                 ('http://127.0.0.1:9/sync/paused', '{s-a}'), ('http://127.0.0.1:9/sync/moved', '{s-a}'),
                 ('http://127.0.0.1:9/sync/slower', NULL);
             SET LOCAL session_replication_role = replica;
             INSERT INTO webmon.monitors (url, regions) VALUES ('http://127.0.0.1:9/sync/new', '{s-a,s-b}');
             UPDATE webmon.monitors SET enabled = false WHERE url = 'http://127.0.0.1:9/sync/paused';
             UPDATE webmon.monitors SET regions = '{s-b}' WHERE url = 'http://127.0.0.1:9/sync/moved';
             UPDATE webmon.monitors SET check_interval = '1 hour' WHERE url = 'http://127.0.0.1:9/sync/slower';
             SET LOCAL session_replication_role = origin;",
        )
        .unwrap();
        let jobs = "SELECT string_agg(substr(m.url, 25) || ':' || j.region || ':' || j.check_interval, ' ' ORDER BY m.url, j.region)
                    FROM webmon.jobs j JOIN webmon.monitors m ON m.id = j.monitor_id WHERE m.url LIKE 'http://127.0.0.1:9/sync/%'";
        assert_eq!(
            one::<String>(jobs),
            "moved:s-a:00:01:00 paused:s-a:00:01:00 slower::00:01:00"
        );
        assert_eq!(one::<i32>("SELECT webmon.sync_jobs()"), 3);
        assert_eq!(
            one::<String>(jobs),
            "moved:s-b:00:01:00 new:s-a:00:01:00 new:s-b:00:01:00 slower::01:00:00"
        );
        assert_eq!(one::<i32>("SELECT webmon.sync_jobs()"), 0);
    }

    /// One check of the job of `region` for the monitor at `url`, leased by `probe` (of that
    /// region) at a slot `ago_ms` before now and completed with this result; returns the
    /// monitor's state afterwards.
    fn check_once(
        probe: &str,
        url: &str,
        ago_ms: i32,
        status: Option<i16>,
        error_kind: Option<&str>,
        response_ms: f32,
    ) -> String {
        Spi::run_with_args(
            "UPDATE webmon.jobs j SET scheduled_at = now() - make_interval(secs => $2 / 1000.0)
             FROM webmon.monitors m, webmon.probes p
             WHERE m.id = j.monitor_id AND m.url = $1 AND p.name = $3 AND j.region = p.region",
            &[url.into(), ago_ms.into(), probe.into()],
        )
        .unwrap();
        let (job, slot) = Spi::get_two_with_args::<i64, pgrx::datum::TimestampWithTimeZone>(
            "SELECT job_id, scheduled_at FROM webmon.claim_checks($1, 1, '1 minute')",
            &[probe.into()],
        )
        .unwrap();
        let stored = Spi::get_one_with_args::<i32>(
            "SELECT webmon.complete_checks($1, ARRAY[$2], ARRAY[$3], ARRAY[$3], ARRAY[$4::real],
                 ARRAY[$5::smallint], ARRAY[NULL::boolean], ARRAY[NULL::text], ARRAY[$6::text],
                 ARRAY[CASE WHEN $6 IS NOT NULL THEN 'connection refused' END])",
            &[
                probe.into(),
                job.expect("a claimed job").into(),
                slot.expect("a slot").into(),
                response_ms.into(),
                status.into(),
                error_kind.into(),
            ],
        )
        .unwrap();
        assert_eq!(stored, Some(1), "the check was not stored");
        one::<String>(&format!(
            "SELECT state FROM webmon.monitor_status WHERE url = '{url}'"
        ))
    }

    #[pg_test]
    fn channels_refuse_bad_settings_and_stay_while_a_monitor_names_them() {
        for (insert, sqlstate, mentions) in [
            (
                "'w', 'webhook', '{\"url\": \"ftp://x/\"}'",
                "22023",
                "http or https",
            ),
            (
                "'w', 'webhook', '{\"url\": \"http://x/\", \"secret\": 1}'",
                "22023",
                "unknown key \"secret\"",
            ),
            ("'s', 'slack', '{}'", "22023", "\"url\" is missing"),
            (
                "'e', 'email', '{\"smtp\": \"mail:25\", \"from\": \"a@b\"}'",
                "22023",
                "\"to\"",
            ),
            (
                "'p', 'pg_notify', '{\"channel\": \"\"}'",
                "22023",
                "1 to 63 bytes",
            ),
            ("'x', 'pager', '{}'", "22023", "unknown kind \"pager\""),
            (
                "'', 'webhook', '{\"url\": \"http://x/\"}'",
                "23514",
                "channels_name_check",
            ),
        ] {
            let result = outcome(&format!(
                "INSERT INTO webmon.channels (name, kind, settings) VALUES ({insert})"
            ));
            assert!(
                result.starts_with(sqlstate) && result.contains(mentions),
                "{insert}: {result}"
            );
        }
        Spi::run(
            "INSERT INTO webmon.channels (name, kind, settings) VALUES ('ops', 'webhook', '{\"url\": \"http://127.0.0.1:9/h\"}')",
        )
        .unwrap();
        let unknown = outcome(
            "INSERT INTO webmon.monitors (url, channels) VALUES ('http://127.0.0.1:9/ch', '{ops,nobody}')",
        );
        assert!(
            unknown.starts_with("22023") && unknown.contains("no channel named nobody"),
            "{unknown}"
        );
        Spi::run(
            "INSERT INTO webmon.monitors (url, channels) VALUES ('http://127.0.0.1:9/ch', '{ops}')",
        )
        .unwrap();
        let in_use = outcome("DELETE FROM webmon.channels WHERE name = 'ops'");
        assert!(in_use.starts_with("23503"), "{in_use}");
        let renamed = outcome("UPDATE webmon.channels SET name = 'ops2' WHERE name = 'ops'");
        assert!(renamed.starts_with("23503"), "{renamed}");
        let remind = outcome("UPDATE webmon.monitors SET remind_every = '0.5 seconds' WHERE url = 'http://127.0.0.1:9/ch'");
        assert!(
            remind.starts_with("22023") && remind.contains("remind_every"),
            "{remind}"
        );
        Spi::run("UPDATE webmon.monitors SET channels = '{}' WHERE url = 'http://127.0.0.1:9/ch'")
            .unwrap();
        assert_eq!(
            outcome("DELETE FROM webmon.channels WHERE name = 'ops'"),
            "accepted"
        );
    }

    #[pg_test]
    fn maintenance_windows_cover_their_times_in_their_time_zone() {
        for (weekly, mentions) in [
            (
                r#"{"days": ["sun"], "start": "02:00", "duration": "2 hours"}"#,
                "exactly days, start, duration and time_zone",
            ),
            (
                r#"{"days": ["sunday"], "start": "02:00", "duration": "2 hours", "time_zone": "UTC"}"#,
                "days must list",
            ),
            (
                r#"{"days": ["sun"], "start": "2am", "duration": "2 hours", "time_zone": "UTC"}"#,
                "HH:MM",
            ),
            (
                r#"{"days": ["sun"], "start": "24:00", "duration": "2 hours", "time_zone": "UTC"}"#,
                "HH:MM",
            ),
            (
                r#"{"days": ["sun"], "start": "02:00", "duration": "2 hours", "time_zone": "CEST"}"#,
                "not a time zone name",
            ),
            (
                r#"{"days": ["sun"], "start": "02:00", "duration": "8 days", "time_zone": "UTC"}"#,
                "at most 7 days",
            ),
            (
                r#"{"days": ["sun"], "start": "02:00", "duration": "2 hours", "time_zone": "Mars/Base"}"#,
                "not a time zone name",
            ),
        ] {
            let result = outcome(&format!(
                "INSERT INTO webmon.maintenance (weekly) VALUES ('{weekly}')"
            ));
            assert!(
                result.starts_with("22023") && result.contains(mentions),
                "{weekly}: {result}"
            );
        }
        let both = outcome(
            r#"INSERT INTO webmon.maintenance (during, weekly) VALUES (tstzrange(now(), now() + interval '1 hour'),
                   '{"days": ["sun"], "start": "02:00", "duration": "2 hours", "time_zone": "UTC"}')"#,
        );
        assert!(both.starts_with("23514"), "{both}");
        let open_ended =
            outcome("INSERT INTO webmon.maintenance (during) VALUES (tstzrange(now(), NULL))");
        assert!(open_ended.starts_with("22023"), "{open_ended}");
        let unknown = outcome("INSERT INTO webmon.maintenance (monitor_id, during) VALUES (-1, tstzrange(now(), now() + interval '1 hour'))");
        assert!(unknown.starts_with("23503"), "{unknown}");
        // Sundays 02:00 to 04:00 in Berlin: 01:00 to 03:00 UTC in winter, 00:00 to 02:00 in summer.
        let m = one::<i64>(
            "INSERT INTO webmon.monitors (url) VALUES ('http://127.0.0.1:9/weekly') RETURNING id",
        );
        let other = one::<i64>(
            "INSERT INTO webmon.monitors (url) VALUES ('http://127.0.0.1:9/other') RETURNING id",
        );
        Spi::run(&format!(
            r#"INSERT INTO webmon.maintenance (monitor_id, weekly, reason)
               VALUES ({m}, '{{"days": ["sun"], "start": "02:00", "duration": "2 hours", "time_zone": "Europe/Berlin"}}', 'backups')"#
        ))
        .unwrap();
        let covered = |monitor: i64, at: &str| {
            one::<bool>(&format!(
                "SELECT webmon.maintenance_window({monitor}, '{at}') IS NOT NULL"
            ))
        };
        assert!(covered(m, "2026-11-29 01:00+00"));
        assert!(covered(m, "2026-11-29 02:59+00"));
        assert!(!covered(m, "2026-11-29 03:00+00"));
        assert!(!covered(m, "2026-11-29 00:59+00"));
        assert!(!covered(m, "2026-11-30 01:30+00"), "a Monday");
        assert!(covered(m, "2026-07-05 00:30+00"), "summer time");
        assert!(!covered(other, "2026-11-29 01:30+00"), "another monitor");
        // A window across midnight, and one for every monitor.
        Spi::run(
            r#"INSERT INTO webmon.maintenance (weekly)
               VALUES ('{"days": ["fri"], "start": "23:00", "duration": "3 hours", "time_zone": "UTC"}')"#,
        )
        .unwrap();
        assert!(
            covered(other, "2026-11-28 01:30+00"),
            "Saturday 01:30 is in Friday's window"
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT webmon.maintenance_window({m}, '2026-11-29 01:30+00')::text"
            )),
            "[\"2026-11-29 01:00:00+00\",\"2026-11-29 03:00:00+00\")"
        );
        // A day-long window on the day clocks go back lasts a local day (25 hours).
        Spi::run(&format!(
            r#"UPDATE webmon.maintenance SET weekly = '{{"days": ["sun"], "start": "00:00", "duration": "1 day", "time_zone": "Europe/Berlin"}}'
               WHERE monitor_id = {m}"#
        ))
        .unwrap();
        assert!(
            covered(m, "2026-10-25 22:30+00"),
            "23:30 local on the day of 25 hours"
        );
        // A monitor's windows go with it.
        Spi::run(&format!("DELETE FROM webmon.monitors WHERE id = {m}")).unwrap();
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM webmon.maintenance WHERE monitor_id = {m}"
            )),
            0
        );
    }

    #[pg_test]
    fn an_incident_writes_one_notification_per_channel_and_tells_pg_notify_channels_at_once() {
        maintenance();
        let url = "http://127.0.0.1:9/notified";
        Spi::run(&format!(
            r#"SELECT webmon.register_probe('note-probe', 'note');
               INSERT INTO webmon.channels (name, kind, settings, is_default) VALUES
                   ('hook', 'webhook', '{{"url": "http://127.0.0.1:9/hook"}}', true),
                   ('sql', 'pg_notify', '{{"channel": "my_alerts"}}', true),
                   ('unused', 'slack', '{{"url": "http://127.0.0.1:9/slack"}}', false);
               INSERT INTO webmon.monitors (url, name, regions, down_after) VALUES ('{url}', 'noted', '{{note}}', 1)"#
        ))
        .unwrap();
        check_once("note-probe", url, 60_000, Some(200), None, 10.0);
        assert_eq!(one::<i64>("SELECT count(*) FROM webmon.notifications"), 0);
        assert_eq!(
            check_once("note-probe", url, 59_000, Some(500), None, 10.0),
            "down"
        );
        let rows = "SELECT string_agg(channel || ':' || event || ':' || (delivered_at IS NOT NULL), ' ' ORDER BY channel)
                    FROM webmon.notifications";
        assert_eq!(one::<String>(rows), "hook:down:false sql:down:true");
        assert!(one::<bool>(&format!(
            "SELECT payload->>'message' LIKE 'DOWN: noted ({url}) since %: status 500'
                    AND payload->>'url' = '{url}' AND payload->>'cause' = 'status 500'
             FROM webmon.notifications WHERE channel = 'hook'"
        )));
        assert!(
            one::<bool>(
                "SELECT NOT payload ? 'url' FROM webmon.notifications WHERE channel = 'sql'"
            ),
            "pg_notify payloads carry no URL"
        );
        // A probe leases the webhook's; a failure is kept with a backoff; a delivery from a
        // probe whose lease ended still counts, a failure from it does not.
        let claimed = one::<String>(
            "SELECT string_agg(channel || ':' || kind || ':' || (payload ? 'idempotency_key'), ' ')
             FROM webmon.claim_notifications('note-probe', 10, '1 minute')",
        );
        assert_eq!(claimed, "hook:webhook:true");
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM webmon.claim_notifications('note-probe', 10, '1 minute')"
            ),
            0,
            "a leased notification was handed out twice"
        );
        Spi::run("SELECT webmon.register_probe('other-probe', 'note')").unwrap();
        assert_eq!(
            one::<i32>("SELECT webmon.finish_notifications('other-probe', array_agg(id), ARRAY['HTTP 500']) FROM webmon.notifications WHERE channel = 'hook'"),
            0
        );
        assert_eq!(
            one::<i32>("SELECT webmon.finish_notifications('note-probe', array_agg(id), ARRAY['HTTP 500']) FROM webmon.notifications WHERE channel = 'hook'"),
            1
        );
        assert!(one::<bool>(
            "SELECT last_error = 'HTTP 500' AND attempts = 1 AND delivered_at IS NULL AND leased_by IS NULL
                    AND next_attempt_at BETWEEN now() + interval '0.9 seconds' AND now() + interval '1.1 seconds'
             FROM webmon.notifications WHERE channel = 'hook'"
        ));
        assert_eq!(
            one::<i32>("SELECT webmon.finish_notifications('other-probe', array_agg(id), ARRAY[NULL::text]) FROM webmon.notifications WHERE channel = 'hook'"),
            1
        );
        // Given up: too old, or its channel gone.
        Spi::run(
            "INSERT INTO webmon.notifications (channel, event, payload, created_at) VALUES
                 ('hook', 'down', '{}', now() - interval '2 days'), ('gone', 'down', '{}', now())",
        )
        .unwrap();
        Spi::run("SELECT webmon.review_incidents('1 day')").unwrap();
        assert_eq!(
            one::<String>(
                "SELECT string_agg(channel || ':' || (gave_up_at IS NOT NULL) || ':' || coalesce(last_error, ''), ' ' ORDER BY id)
                 FROM webmon.notifications WHERE delivered_at IS NULL"
            ),
            "hook:true:no attempt finished (gave up after 0 attempts) gone:true:channel gone was deleted (gave up after 0 attempts)"
        );
    }

    #[pg_test]
    fn an_incident_outlives_lost_probes_and_maintenance_and_ends_on_evidence() {
        maintenance();
        let url = "http://127.0.0.1:9/outlived";
        Spi::run(&format!(
            "SELECT webmon.register_probe('out-probe', 'out');
             INSERT INTO webmon.monitors (url, regions, down_after) VALUES ('{url}', '{{out}}', 1)"
        ))
        .unwrap();
        let open = format!(
            "SELECT count(*) FROM webmon.incidents i JOIN webmon.monitors m ON m.id = i.monitor_id
             WHERE m.url = '{url}' AND i.resolved_at IS NULL"
        );
        assert_eq!(
            check_once("out-probe", url, 60_000, Some(500), None, 10.0),
            "down"
        );
        assert_eq!(one::<i64>(&open), 1);
        // The probes are gone: the region's verdict is cleared (as a lost or unclaimed check
        // does). That is no evidence the site is back: the incident stays open.
        Spi::run(&format!(
            "UPDATE webmon.jobs j SET verdict = NULL, failed_run = 0 FROM webmon.monitors m
             WHERE m.id = j.monitor_id AND m.url = '{url}'"
        ))
        .unwrap();
        Spi::run("SELECT webmon.review_incidents('1 day')").unwrap();
        assert_eq!(one::<i64>(&open), 1, "resolved without a good check");
        // In a window, a good check neither resolves it nor tells anyone; the state says so,
        // also to a role that may read only the view.
        Spi::run(&format!(
            "INSERT INTO webmon.maintenance (monitor_id, during)
             SELECT id, tstzrange(now() - interval '1 hour', now() + interval '1 hour') FROM webmon.monitors WHERE url = '{url}'"
        ))
        .unwrap();
        assert_eq!(
            check_once("out-probe", url, 59_000, Some(200), None, 10.0),
            "maintenance"
        );
        assert_eq!(one::<i64>(&open), 1);
        Spi::run(
            "CREATE ROLE webmon_view_only; SELECT webmon.grant_probe('webmon_view_only');
             SET ROLE webmon_view_only",
        )
        .unwrap();
        let seen = one::<String>(&format!(
            "SELECT state FROM webmon.monitor_status WHERE url = '{url}'"
        ));
        Spi::run("RESET ROLE").unwrap();
        assert_eq!(seen, "maintenance");
        // The window ends: the next review resolves it on the good check's evidence.
        Spi::run("DELETE FROM webmon.maintenance").unwrap();
        Spi::run("SELECT webmon.review_incidents('1 day')").unwrap();
        assert_eq!(one::<i64>(&open), 0);
        // Three regions, a quorum of two: one region up and two unknown is no evidence; a
        // second region up is.
        let wide = "http://127.0.0.1:9/outlived-wide";
        Spi::run(&format!(
            "SELECT webmon.register_probe('out-a', 'a'), webmon.register_probe('out-b', 'b'), webmon.register_probe('out-c', 'c');
             INSERT INTO webmon.monitors (url, regions, down_after) VALUES ('{wide}', '{{a,b,c}}', 1)"
        ))
        .unwrap();
        let wide_open = open.replace(url, wide);
        check_once("out-a", wide, 60_000, Some(500), None, 10.0);
        assert_eq!(
            check_once("out-b", wide, 60_000, Some(500), None, 10.0),
            "down"
        );
        Spi::run(&format!(
            "UPDATE webmon.jobs j SET verdict = NULL, failed_run = 0 FROM webmon.monitors m
             WHERE m.id = j.monitor_id AND m.url = '{wide}' AND j.region IN ('a', 'b')"
        ))
        .unwrap();
        check_once("out-c", wide, 59_000, Some(200), None, 10.0);
        Spi::run("SELECT webmon.review_incidents('1 day')").unwrap();
        assert_eq!(
            one::<i64>(&wide_open),
            1,
            "one region up of three resolved it"
        );
        check_once("out-a", wide, 59_000, Some(200), None, 10.0);
        assert_eq!(
            one::<i64>(&wide_open),
            0,
            "two regions up of three did not resolve it"
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT state FROM webmon.monitor_status WHERE url = '{url}'"
            )),
            "up"
        );
    }

    #[pg_test]
    fn a_site_that_turned_bad_in_a_window_gets_its_incident_after_it_and_old_windows_go() {
        maintenance();
        let url = "http://127.0.0.1:9/after-window";
        Spi::run(&format!(
            "SELECT webmon.register_probe('aw-probe', 'aw');
             INSERT INTO webmon.monitors (url, regions, down_after, degraded_after_ms) VALUES ('{url}', '{{aw}}', 1, 100);
             INSERT INTO webmon.maintenance (monitor_id, during)
             SELECT id, tstzrange(now() - interval '1 hour', now() + interval '1 hour') FROM webmon.monitors WHERE url = '{url}'"
        ))
        .unwrap();
        // Slow during the window: degraded, but no incident (nor will a next slow check open one:
        // the verdict does not change).
        assert_eq!(
            check_once("aw-probe", url, 60_000, Some(200), None, 500.0),
            "maintenance"
        );
        let open = format!(
            "SELECT coalesce(string_agg(i.kind, ' '), '') FROM webmon.incidents i JOIN webmon.monitors m ON m.id = i.monitor_id
             WHERE m.url = '{url}' AND i.resolved_at IS NULL"
        );
        assert_eq!(one::<String>(&open), "");
        // The window ends (it stays in the table, in the past): the review opens the incident.
        Spi::run("UPDATE webmon.maintenance SET during = tstzrange(now() - interval '2 hours', now() - interval '1 minute')")
            .unwrap();
        Spi::run("SELECT webmon.review_incidents('1 day')").unwrap();
        assert_eq!(one::<String>(&open), "degraded");
        // Ended one-off windows are purged after the retention; weekly rules and current windows stay.
        Spi::run(
            r#"INSERT INTO webmon.maintenance (during) VALUES (tstzrange(now() - interval '40 days', now() - interval '31 days'));
               INSERT INTO webmon.maintenance (weekly) VALUES ('{"days": ["mon"], "start": "01:00", "duration": "1 hour", "time_zone": "UTC"}')"#,
        )
        .unwrap();
        assert_eq!(one::<i32>("SELECT webmon.purge_maintenance('30 days')"), 1);
        assert_eq!(one::<i64>("SELECT count(*) FROM webmon.maintenance"), 2);
        // Alerts show the URL without its secrets.
        assert_eq!(
            one::<String>("SELECT webmon.shown_url('https://u:p@example.com/h?token=s#x')"),
            "https://example.com/h"
        );
    }

    #[pg_test]
    fn notifications_go_out_in_order_and_a_newer_alert_replaces_waiting_reminders() {
        Spi::run(
            r#"INSERT INTO webmon.channels (name, kind, settings) VALUES ('fifo', 'webhook', '{"url": "http://127.0.0.1:9/f"}');
               INSERT INTO webmon.monitors (url, channels) VALUES ('http://127.0.0.1:9/fifo', '{fifo}');
               INSERT INTO webmon.incidents (monitor_id, kind, started_at)
                   SELECT id, 'down', now() - interval '1 hour' FROM webmon.monitors WHERE url = 'http://127.0.0.1:9/fifo';
               INSERT INTO webmon.notifications (incident_id, monitor_id, channel, event, payload)
                   SELECT i.id, i.monitor_id, 'fifo', e, '{}' FROM webmon.incidents i, unnest(ARRAY['down', 'reminder', 'reminder']) e;
               SELECT webmon.register_probe('fifo-probe')"#,
        )
        .unwrap();
        let claim = "SELECT coalesce(string_agg(event, ' '), '') FROM webmon.claim_notifications('fifo-probe', 10, '1 minute')";
        assert_eq!(
            one::<String>(claim),
            "down",
            "a later notification went out before an earlier one"
        );
        assert_eq!(one::<String>(claim), "", "nothing while the first is out");
        // A recovery replaces the reminders still waiting, and waits for the down alert.
        Spi::run("SELECT webmon.enqueue_notifications('recovered', i) FROM webmon.incidents i")
            .unwrap();
        assert_eq!(
            one::<String>(
                "SELECT string_agg(event || ':' || coalesce(last_error, '-'), ' ' ORDER BY id) FROM webmon.notifications"
            ),
            "down:- reminder:replaced by a newer recovered alert reminder:replaced by a newer recovered alert recovered:-"
        );
        assert_eq!(one::<String>(claim), "");
        Spi::run(
            "SELECT webmon.finish_notifications('fifo-probe', array_agg(id), array_agg(NULL::text))
             FROM webmon.notifications WHERE event = 'down'",
        )
        .unwrap();
        assert_eq!(one::<String>(claim), "recovered");
        let mismatch = outcome(
            "SELECT webmon.finish_notifications('fifo-probe', ARRAY[1, 2], ARRAY[NULL::text])",
        );
        assert!(mismatch.starts_with("22023"), "{mismatch}");
        // A refusal no retry can change is given up at once: what waits behind it goes out.
        Spi::run(
            "SELECT webmon.finish_notifications('fifo-probe', array_agg(id), array_agg('HTTP 400'::text), array_agg(true))
             FROM webmon.notifications WHERE event = 'recovered'",
        )
        .unwrap();
        assert!(one::<bool>(
            "SELECT gave_up_at IS NOT NULL AND last_error = 'HTTP 400' FROM webmon.notifications WHERE event = 'recovered'"
        ));
    }

    #[pg_test]
    fn incidents_open_after_down_after_failures_and_resolve_after_up_after_good_checks() {
        // Results go to partitions that tests of maintenance drop: run after them.
        maintenance();
        let url = "http://127.0.0.1:9/incident";
        Spi::run(&format!(
            "SELECT webmon.register_probe('inc-probe', 'inc');
             INSERT INTO webmon.monitors (url, name, regions, down_after, up_after, degraded_after_ms)
             VALUES ('{url}', 'incident site', '{{inc}}', 2, 2, 500)"
        ))
        .unwrap();
        let incidents = format!(
            "SELECT coalesce(string_agg(kind || ':' || (resolved_at IS NULL) || ':' || failed_checks || ':' || coalesce(cause, ''), ' ' ORDER BY id), '')
             FROM webmon.incidents WHERE monitor_id = (SELECT id FROM webmon.monitors WHERE url = '{url}')"
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT state FROM webmon.monitor_status WHERE url = '{url}'"
            )),
            "unknown"
        );
        assert_eq!(
            check_once("inc-probe", url, 60_000, Some(200), None, 10.0),
            "up"
        );
        // One failure is pending, the second (down_after = 2) opens the incident, from the
        // first failure's time and with its cause.
        assert_eq!(
            check_once("inc-probe", url, 59_000, Some(503), None, 10.0),
            "pending"
        );
        assert_eq!(one::<String>(&incidents), "");
        assert_eq!(
            check_once("inc-probe", url, 58_000, None, Some("connect"), 0.0),
            "down"
        );
        assert_eq!(one::<String>(&incidents), "down:true:2:status 503");
        assert!(one::<bool>(&format!(
            "SELECT state_since = now() - interval '59 seconds' AND started_at = state_since
             FROM webmon.monitor_status s JOIN webmon.incidents i ON i.monitor_id = s.monitor_id WHERE s.url = '{url}'"
        )));
        // Still down: counted on the open incident, no second one.
        assert_eq!(
            check_once("inc-probe", url, 57_000, Some(500), None, 10.0),
            "down"
        );
        assert_eq!(one::<String>(&incidents), "down:true:3:status 503");
        // One good check is not enough (up_after = 2); a failure in between starts over.
        assert_eq!(
            check_once("inc-probe", url, 56_000, Some(200), None, 10.0),
            "down"
        );
        assert_eq!(
            check_once("inc-probe", url, 55_000, Some(500), None, 10.0),
            "down"
        );
        assert_eq!(
            check_once("inc-probe", url, 54_000, Some(200), None, 10.0),
            "down"
        );
        assert_eq!(
            check_once("inc-probe", url, 53_000, Some(200), None, 10.0),
            "up"
        );
        assert_eq!(one::<String>(&incidents), "down:false:4:status 503");
        assert!(one::<bool>(&format!(
            "SELECT resolved_at = now() - interval '53 seconds' FROM webmon.incidents
             WHERE monitor_id = (SELECT id FROM webmon.monitors WHERE url = '{url}')"
        )));
        // Slow checks (over degraded_after_ms = 500): degraded after down_after of them, until
        // a fast one; never down.
        assert_eq!(
            check_once("inc-probe", url, 52_000, Some(200), None, 900.0),
            "up"
        );
        assert_eq!(
            check_once("inc-probe", url, 51_000, Some(200), None, 900.0),
            "degraded"
        );
        assert_eq!(
            check_once("inc-probe", url, 50_000, Some(200), None, 900.0),
            "degraded"
        );
        assert_eq!(
            check_once("inc-probe", url, 49_000, Some(200), None, 20.0),
            "up"
        );
        assert_eq!(
            one::<String>(&incidents),
            "down:false:4:status 503 degraded:false:0:slower than degraded_after_ms"
        );
        // Down again, then paused: a paused monitor has no open incident, and says so.
        assert_eq!(
            check_once("inc-probe", url, 48_000, Some(500), None, 10.0),
            "pending"
        );
        assert_eq!(
            check_once("inc-probe", url, 47_000, Some(500), None, 10.0),
            "down"
        );
        Spi::run(&format!(
            "UPDATE webmon.monitors SET enabled = false WHERE url = '{url}'"
        ))
        .unwrap();
        assert!(one::<bool>(&format!(
            "SELECT count(*) = 3 AND bool_and(resolved_at IS NOT NULL) FROM webmon.incidents
             WHERE monitor_id = (SELECT id FROM webmon.monitors WHERE url = '{url}')"
        )));
        assert_eq!(
            one::<String>(&format!(
                "SELECT state FROM webmon.monitor_status WHERE url = '{url}'"
            )),
            "paused"
        );
        // Thresholds are checked.
        for bad in ["down_after = 0", "up_after = 1001", "degraded_after_ms = 0"] {
            assert!(
                outcome(&format!(
                    "UPDATE webmon.monitors SET {bad} WHERE url = '{url}'"
                ))
                .starts_with("22023 "),
                "{bad} was accepted"
            );
        }
    }

    #[pg_test]
    fn a_quorum_of_regions_must_be_down_for_an_incident() {
        // Results go to partitions that tests of maintenance drop: run after them.
        maintenance();
        let url = "http://127.0.0.1:9/quorum-incident";
        Spi::run(&format!(
            "SELECT webmon.register_probe('q-a', 'qa'), webmon.register_probe('q-b', 'qb'), webmon.register_probe('q-c', 'qc');
             INSERT INTO webmon.monitors (url, regions, down_after) VALUES ('{url}', '{{qa,qb,qc}}', 1)"
        ))
        .unwrap();
        let open = format!(
            "SELECT count(*) FROM webmon.incidents WHERE resolved_at IS NULL
             AND monitor_id = (SELECT id FROM webmon.monitors WHERE url = '{url}')"
        );
        // One of three regions failing is not down, nor pending (a majority is 2).
        assert_eq!(
            check_once("q-a", url, 30_000, None, Some("timeout"), 0.0),
            "unknown"
        );
        assert_eq!(check_once("q-b", url, 30_000, Some(200), None, 5.0), "up");
        assert_eq!(one::<i64>(&open), 0);
        // A second region failing makes a majority: down.
        assert_eq!(
            check_once("q-b", url, 29_000, None, Some("timeout"), 0.0),
            "down"
        );
        assert_eq!(one::<i64>(&open), 1);
        // The third region's good check does not resolve it; the first one's recovery does.
        assert_eq!(check_once("q-c", url, 29_000, Some(200), None, 5.0), "down");
        assert_eq!(check_once("q-a", url, 28_000, Some(200), None, 5.0), "up");
        assert_eq!(one::<i64>(&open), 0);
        // Down again, then a region removed: the incident follows the regions left.
        assert_eq!(
            check_once("q-a", url, 27_000, None, Some("timeout"), 0.0),
            "down"
        );
        assert_eq!(one::<i64>(&open), 1);
        Spi::run(&format!(
            "UPDATE webmon.monitors SET regions = '{{qb,qc}}', down_quorum = 2 WHERE url = '{url}'"
        ))
        .unwrap();
        assert_eq!(
            one::<i64>(&open),
            0,
            "the incident outlived the region that made it"
        );
    }

    #[pg_test]
    fn queued_regions_lists_every_region_that_has_jobs() {
        Spi::run(
            "INSERT INTO webmon.monitors (url, regions) VALUES
                 ('http://127.0.0.1:9/qr/any', NULL), ('http://127.0.0.1:9/qr/two', '{qr-b,qr-a}'),
                 ('http://127.0.0.1:9/qr/one', '{qr-c}')",
        )
        .unwrap();
        assert_eq!(
            one::<String>(
                "SELECT string_agg(r, ',' ORDER BY r) FROM webmon.queued_regions() r
                 WHERE r = '' OR r LIKE 'qr-%'"
            ),
            ",qr-a,qr-b,qr-c"
        );
    }

    #[pg_test]
    fn every_public_object_has_a_comment() {
        let missing = one::<i64>(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'webmon' AND c.relkind IN ('r', 'p', 'v') AND c.relispartition = false
               AND obj_description(c.oid, 'pg_class') IS NULL",
        );
        assert_eq!(missing, 0, "a table or view in webmon has no COMMENT");
        let missing_functions = one::<i64>(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'webmon' AND obj_description(p.oid, 'pg_proc') IS NULL",
        );
        assert_eq!(missing_functions, 0, "a function in webmon has no COMMENT");
    }
}
