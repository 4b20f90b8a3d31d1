//! Upgrades keep data: a database made by an earlier release (its install script as shipped,
//! `sql/pg_webmon--<version>.sql`) is filled with monitors and results, updated with
//! `ALTER EXTENSION pg_webmon UPDATE`, and must then (a) have the same schema as a fresh
//! install, (b) hold every monitor and result, (c) schedule and probe again, and, from 0.1.0,
//! (d) survive a pg_dump and restore into another cluster with every row.

use std::process::Command;
use std::time::{Duration, SystemTime};
use tokio_postgres::Client;
use webmon_tests::cluster::{Cluster, PG_BIN};
use webmon_tests::probe::Probe;
use webmon_tests::{targets, wait_until};

const NEW: &str = env!("CARGO_PKG_VERSION");

/// Row counts that must survive: monitors, metrics, errors, probes.
async fn counts(db: &Client) -> Vec<i64> {
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM webmon.monitors), (SELECT count(*) FROM webmon.metrics),
                    (SELECT count(*) FROM webmon.errors), (SELECT count(*) FROM webmon.probes)",
            &[],
        )
        .await
        .unwrap();
    (0..4).map(|i| row.get::<_, i64>(i)).collect()
}

fn pg_tool(program: &str, port: u16) -> Command {
    let mut command = Command::new(format!("{PG_BIN}/{program}"));
    command.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"]);
    command
}

fn output(command: &mut Command) -> String {
    let out = command.output().expect("run a PostgreSQL client tool");
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The schema of `database` as `pg_dump --schema-only --binary-upgrade` prints it: with
/// binary-upgrade, pg_dump writes out every object of the extension (a plain dump writes
/// only `CREATE EXTENSION`). Left out: the dated partitions (their names follow the day they
/// were made), comment lines, the `\restrict` key, and binary-upgrade's lines that carry
/// object ids, transaction horizons or sequence positions, or that keep the place of a dropped
/// column (storage, not schema: `........pg.dropped.N........` and its attribute fix-up); the
/// extension's configuration tables, named by ids there, are listed by name.
fn schema(port: u16, database: &str) -> String {
    let dump = output(pg_tool("pg_dump", port).args([
        "--schema-only",
        "--binary-upgrade",
        "--no-owner",
        "-T",
        "webmon.metrics_p*",
        "-T",
        "webmon.errors_p*",
        "-T",
        "webmon.rollups_hourly_p*",
        "-T",
        "webmon.rollups_daily_p*",
        "-d",
        database,
    ]));
    let all: Vec<&str> = dump.lines().collect();
    // The fix-up of a dropped column's attribute: `UPDATE pg_catalog.pg_attribute`, `SET
    // attlen …`, `WHERE attname = '…pg.dropped…'`, `AND attrelid = …`.
    let dropped_fix_up = |i: usize| {
        (0..4).any(|back| {
            i >= back
                && all[i - back] == "UPDATE pg_catalog.pg_attribute"
                && all
                    .get(i - back + 2)
                    .is_some_and(|l| l.contains("pg.dropped"))
        })
    };
    let mut lines: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| !dropped_fix_up(*i))
        .map(|(_, line)| *line)
        .filter(|line| {
            !line.starts_with("--")
                && !line.contains("restrict ")
                && !line.contains("binary_upgrade_set_next")
                && !line.contains("binary_upgrade_create_empty_extension")
                // Per-database state: transaction horizons, object ids, sequence positions.
                && !line.contains("relfrozenxid")
                && !line.contains("WHERE oid = ")
                && !line.contains("UPDATE pg_catalog.pg_class")
                && !line.contains("pg_catalog.setval(")
                && !line.contains("pg.dropped")
                && !line.trim().is_empty()
        })
        .map(String::from)
        .collect();
    let config = output(pg_tool("psql", port).args([
        "-XAt",
        "-d",
        database,
        "-c",
        "SELECT extversion, array(SELECT c::regclass::text FROM unnest(extconfig) c ORDER BY 1), extcondition
         FROM pg_extension WHERE extname = 'pg_webmon'",
    ]));
    lines.push(format!("extension: {}", config.trim()));
    lines.join("\n")
}

/// The partition bookkeeping, as (parent, partition) pairs.
async fn partition_rows(db: &Client) -> Vec<String> {
    db.query(
        "SELECT parent::text || ' ' || partition FROM webmon.partitions ORDER BY 1",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|row| row.get(0))
    .collect()
}

async fn partitions_owned_by_the_extension(db: &Client) -> i64 {
    db.query_one(
        "SELECT count(*) FROM pg_depend d JOIN pg_inherits i ON i.inhrelid = d.objid
         WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e'
           AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_webmon')
           AND i.inhparent IN ('webmon.metrics'::regclass, 'webmon.errors'::regclass)",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// A cluster with database `webmon` and pg_webmon `old` installed from its shipped script.
async fn install_release(old: &str) -> (Cluster, Client) {
    let extension_dir = output(Command::new(format!("{PG_BIN}/pg_config")).arg("--sharedir"));
    let old_script = format!("{}/extension/pg_webmon--{old}.sql", extension_dir.trim());
    assert!(
        std::path::Path::new(&old_script).exists(),
        "{old_script} is missing: make test installs sql/pg_webmon--{old}.sql there"
    );
    let cluster = Cluster::start_empty(&format!("upgrade-{old}"), &[])
        .await
        .unwrap();
    cluster.wait_for_scheduler().await.unwrap();
    let db = cluster.client().await.unwrap();
    db.batch_execute(&format!("CREATE EXTENSION pg_webmon VERSION '{old}'"))
        .await
        .unwrap();
    (cluster, db)
}

/// The scheduler of this release does not run on an older schema, and says what to do.
async fn scheduler_asks_for_the_update(cluster: &Cluster) {
    let told = wait_until(Duration::from_secs(10), || async {
        cluster
            .server_log()
            .contains("run ALTER EXTENSION pg_webmon UPDATE")
    })
    .await;
    assert!(told, "{}", cluster.server_log());
}

/// `ALTER EXTENSION pg_webmon UPDATE` to this release.
async fn update(db: &Client) {
    db.batch_execute("ALTER EXTENSION pg_webmon UPDATE")
        .await
        .unwrap();
    let version: String = db
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'pg_webmon'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, NEW);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_from_0_8_0_keeps_rollups_gives_them_running_totals_and_equals_a_fresh_install()
{
    // The 33 hours of results kept are rolled up by 0.8.0 before the update.
    let (cluster, db) = keeps_rows_and_leases(
        "0.8.0",
        "SELECT webmon.run_rollups(10000) FROM generate_series(1, 3);",
    )
    .await;
    assert_same_schema_as_a_fresh_install(&cluster, &db).await;
    let kept: i64 = db
        .query_one(
            "SELECT count(*) FROM webmon.rollups_hourly WHERE timeline IS NULL AND cum_good IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(kept >= 20 * 30, "hourly rows kept from 0.8.0: {kept}");
    let rolled = wait_until(Duration::from_secs(120), || async {
        db.query_one(
            "SELECT rolled_up_to = webmon.rollups_closed_before(now()) FROM webmon.rollup_state",
            &[],
        )
        .await
        .is_ok_and(|row| row.get::<_, bool>(0))
    })
    .await;
    assert!(rolled, "{}", cluster.server_log());
    // Every hourly row's running totals are what the rows before it add up to; the totals
    // what all of them do.
    let wrong: (i64, i64) = db
        .query_one(
            "SELECT (SELECT count(*) FROM (
                         SELECT h.cum_good IS DISTINCT FROM coalesce(sum(h.good) OVER w - h.good, 0)
                                OR h.cum_failed IS DISTINCT FROM coalesce(sum(h.failed) OVER w - h.failed, 0)
                                OR h.cum_maintenance IS DISTINCT FROM coalesce(sum(h.maintenance) OVER w - h.maintenance, 0)
                                OR h.cum_histogram IS DISTINCT FROM
                                   (SELECT webmon.latency_merge(e.latency_histogram) FROM webmon.rollups_hourly e
                                    WHERE (e.monitor_id, e.region) = (h.monitor_id, h.region) AND e.hour < h.hour) AS wrong
                         FROM webmon.rollups_hourly h
                         WINDOW w AS (PARTITION BY h.monitor_id, h.region ORDER BY h.hour)) x WHERE x.wrong),
                    (SELECT count(*) FROM webmon.rollup_totals t
                     FULL JOIN (SELECT u.monitor_id, u.region, sum(u.good) AS good, sum(u.failed) AS failed,
                                       webmon.latency_merge(u.latency_histogram) AS histogram
                                FROM (SELECT h.monitor_id, h.region, h.good, h.failed, h.latency_histogram
                                      FROM webmon.rollups_hourly h
                                      UNION ALL
                                      -- The steps of the hour in progress.
                                      SELECT o.monitor_id, o.region, o.good, o.failed, o.latency_histogram
                                      FROM webmon.rollup_state r,
                                           webmon.results_summary(date_trunc('hour', r.rolled_up_to, 'UTC'), r.rolled_up_to) o) u
                                GROUP BY 1, 2) h USING (monitor_id, region)
                     WHERE (t.good, t.failed, t.latency_histogram) IS DISTINCT FROM (h.good, h.failed, h.histogram))",
            &[],
        )
        .await
        .map(|row| (row.get(0), row.get(1)))
        .unwrap();
    assert_eq!(
        wrong,
        (0, 0),
        "rows and totals whose running totals are wrong"
    );
    // A range that starts and ends inside hours kept from 0.8.0 (no timeline) reads as many
    // checks as the results hold.
    let sums: (i64, i64) = db
        .query_one(
            "WITH r AS (SELECT now() - interval '20 hours 17 minutes' AS from_ts, now() - interval '3 hours 41 minutes' AS to_ts)
             SELECT (SELECT sum(u.checks) FROM r, webmon.uptime_between(r.from_ts, r.to_ts) u)::bigint,
                    (SELECT count(*) FROM r, webmon.metrics m WHERE m.request_timestamp >= r.from_ts AND m.request_timestamp < r.to_ts)
                    + (SELECT count(*) FROM r, webmon.errors e WHERE e.error_kind = 'dns'
                       AND e.request_timestamp >= r.from_ts AND e.request_timestamp < r.to_ts)",
            &[],
        )
        .await
        .map(|row| (row.get(0), row.get(1)))
        .unwrap();
    assert!(sums.1 > 900, "{sums:?}");
    assert_eq!(sums.0, sums.1, "uptime over rows kept from 0.8.0");
    probes_again(&cluster, &db, 2, "kept-probe").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_from_0_7_0_keeps_leases_rolls_up_the_results_it_kept_and_equals_a_fresh_install(
) {
    let (cluster, db) = keeps_rows_and_leases("0.7.0", "").await;
    assert_same_schema_as_a_fresh_install(&cluster, &db).await;
    uptime_grants_are_not_widened_by_the_update_from_0_7_0(&cluster, &db).await;
    // The maintenance worker rolls up the results kept before the update (33 hours of them).
    let rolled = wait_until(Duration::from_secs(120), || async {
        db.query_one(
            "SELECT rolled_up_to = webmon.rollups_closed_before(now()) FROM webmon.rollup_state",
            &[],
        )
        .await
        .is_ok_and(|row| row.get::<_, bool>(0))
    })
    .await;
    assert!(rolled, "{}", cluster.server_log());
    let sums: (i64, i64) = db
        .query_one(
            "WITH closed AS (SELECT date_trunc('hour', rolled_up_to, 'UTC') AS before FROM webmon.rollup_state)
             SELECT (SELECT sum(checks) FROM webmon.rollups_hourly),
                    (SELECT count(*) FROM webmon.metrics, closed WHERE request_timestamp < closed.before)
                    + (SELECT count(*) FROM webmon.errors, closed WHERE request_timestamp < closed.before)",
            &[],
        )
        .await
        .map(|row| (row.get(0), row.get(1)))
        .unwrap();
    assert!(sums.1 >= 2000, "{sums:?}");
    assert_eq!(sums.0, sums.1, "rollups do not add up to the results kept");
    probes_again(&cluster, &db, 2, "kept-probe").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_from_0_6_0_keeps_channels_notifications_and_windows_and_equals_a_fresh_install()
{
    // Monitor 8 down with an open incident, whose notification waits in the outbox for a
    // webhook channel; monitor 9 in a weekly maintenance window.
    let (cluster, db) = keeps_rows_and_leases(
        "0.6.0",
        "INSERT INTO webmon.channels (name, kind, settings, is_default)
             VALUES ('ops', 'webhook', '{\"url\": \"http://127.0.0.1:9/hook\"}', true);
         INSERT INTO webmon.maintenance (monitor_id, weekly, reason)
             VALUES (9, '{\"days\": [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"], \"start\": \"00:00\", \"duration\": \"1 day\", \"time_zone\": \"UTC\"}', 'kept');
         UPDATE webmon.monitors SET down_after = 1, remind_every = '1 hour' WHERE id = 8;
         UPDATE webmon.jobs SET scheduled_at = now() - interval '1 second' WHERE monitor_id = 8;
         SELECT webmon.complete_checks('kept-probe', array_agg(job_id), array_agg(scheduled_at), array_agg(now()),
                    ARRAY[NULL]::real[], ARRAY[NULL]::smallint[], ARRAY[NULL]::boolean[], ARRAY[NULL]::text[],
                    ARRAY['connect'], ARRAY['refused'])
             FROM webmon.claim_checks('kept-probe', 10, '1 hour');",
    )
    .await;
    let kept: (i64, i64, i64, String) = db
        .query_one(
            "SELECT (SELECT count(*) FROM webmon.incidents WHERE resolved_at IS NULL AND monitor_id = 8),
                    (SELECT count(*) FROM webmon.notifications
                         WHERE monitor_id = 8 AND channel = 'ops' AND event = 'down' AND delivered_at IS NULL),
                    (SELECT count(*) FROM webmon.maintenance WHERE monitor_id = 9),
                    (SELECT state FROM webmon.monitor_status WHERE monitor_id = 9)",
            &[],
        )
        .await
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .unwrap();
    assert_eq!(kept, (1, 1, 1, "maintenance".to_string()));
    assert_same_schema_as_a_fresh_install(&cluster, &db).await;
    probes_again(&cluster, &db, 2, "kept-probe").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_from_0_5_0_keeps_rows_leases_and_open_incidents_and_equals_a_fresh_install() {
    // Monitor 8 is down (one failed check is enough) with an open incident before the update.
    let (cluster, db) = keeps_rows_and_leases(
        "0.5.0",
        "UPDATE webmon.monitors SET down_after = 1, degraded_after_ms = 500 WHERE id = 8;
         UPDATE webmon.jobs SET scheduled_at = now() - interval '1 second' WHERE monitor_id = 8;
         SELECT webmon.complete_checks('kept-probe', array_agg(job_id), array_agg(scheduled_at), array_agg(now()),
                    ARRAY[NULL]::real[], ARRAY[NULL]::smallint[], ARRAY[NULL]::boolean[], ARRAY[NULL]::text[],
                    ARRAY['connect'], ARRAY['refused'])
             FROM webmon.claim_checks('kept-probe', 10, '1 hour');",
    )
    .await;
    let open: (i64, String) = db
        .query_one(
            "SELECT monitor_id, cause FROM webmon.incidents WHERE resolved_at IS NULL",
            &[],
        )
        .await
        .map(|row| (row.get(0), row.get(1)))
        .unwrap();
    assert_eq!(open.0, 8);
    assert!(open.1.contains("refused"), "{open:?}");
    assert_same_schema_as_a_fresh_install(&cluster, &db).await;
    probes_again(&cluster, &db, 2, "kept-probe").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_from_0_4_0_keeps_rows_and_leases_and_equals_a_fresh_install() {
    let (cluster, db) = keeps_rows_and_leases("0.4.0", "").await;
    assert_same_schema_as_a_fresh_install(&cluster, &db).await;
    probes_again(&cluster, &db, 2, "kept-probe").await;
}

/// Release `old` with 20 monitors (some in regions, one paused), results, a probe of region
/// eu, and `before` run: three leases taken before the update are completed once after it,
/// and the row counts are kept.
async fn keeps_rows_and_leases(old: &str, before: &str) -> (Cluster, Client) {
    let (cluster, db) = install_release(old).await;
    db.batch_execute(
        "SELECT webmon.run_maintenance();
         INSERT INTO webmon.monitors (url, check_interval, regions, down_quorum, enabled, next_check_at)
             SELECT 'http://127.0.0.1:9/kept/' || g, '1 hour',
                    CASE g WHEN 3 THEN '{eu}'::text[] WHEN 4 THEN '{us,eu}' WHEN 6 THEN '{us}' END,
                    CASE g WHEN 4 THEN 1 END,
                    g <> 7, now() + interval '1 hour'
             FROM generate_series(1, 20) g;
         INSERT INTO webmon.metrics (request_timestamp, monitor_id, response_time_ms, http_status_code, probe_id, region)
             SELECT now() - g * interval '1 minute', 1 + g % 20, g % 300, 200, 1, 'eu'
             FROM generate_series(1, 2000) g;
         INSERT INTO webmon.errors (request_timestamp, monitor_id, error_kind, error, probe_id, region)
             SELECT now() - g * interval '3 minutes', 1 + g % 20, (ARRAY['dns', 'lost', 'no_probe'])[1 + g % 3], 'x', 1, 'eu'
             FROM generate_series(1, 300) g;
         SELECT webmon.register_probe('kept-probe', 'eu');",
    )
    .await
    .unwrap();
    db.batch_execute(before).await.unwrap();
    // Only the checks of monitors 3, 4 (its eu job) and 5 due, for kept-probe (eu) to lease
    // before the update.
    db.batch_execute(
        "UPDATE webmon.jobs SET scheduled_at = now() - interval '1 second'
             WHERE monitor_id IN (3, 4, 5) AND region IN ('', 'eu');",
    )
    .await
    .unwrap();
    let leases: Vec<(i64, i64, SystemTime)> = db
        .query(
            "SELECT monitor_id, job_id, scheduled_at FROM webmon.claim_checks('kept-probe', 10, '1 hour') ORDER BY monitor_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert_eq!(leases.len(), 3);
    let jobs_before: i64 = db
        .query_one("SELECT count(*) FROM webmon.jobs", &[])
        .await
        .unwrap()
        .get(0);
    scheduler_asks_for_the_update(&cluster).await;
    let before = counts(&db).await;
    update(&db).await;
    assert_eq!(counts(&db).await, before);
    let jobs_after: i64 = db
        .query_one("SELECT count(*) FROM webmon.jobs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(jobs_after, jobs_before);
    // Job ids changed in 0.7.0; from it on, they are kept.
    if old < "0.7.0" {
        leases_come_back(&db, &leases).await;
    } else {
        leases_are_kept(&db, &leases).await;
    }
    (cluster, db)
}

const COMPLETE: &str = "SELECT webmon.complete_checks('kept-probe', $1, $2, array_fill(now(), ARRAY[cardinality($1::bigint[])]),
     array_fill(5::real, ARRAY[cardinality($1::bigint[])]), array_fill(200::smallint, ARRAY[cardinality($1::bigint[])]),
     array_fill(NULL::boolean, ARRAY[cardinality($1::bigint[])]), array_fill(NULL::text, ARRAY[cardinality($1::bigint[])]),
     array_fill(NULL::text, ARRAY[cardinality($1::bigint[])]), array_fill(NULL::text, ARRAY[cardinality($1::bigint[])]))";

/// Leases taken before an update from 0.7.0 or later, as (monitor id, job id, slot): their
/// probes' results are stored once after it.
async fn leases_are_kept(db: &Client, leases: &[(i64, i64, SystemTime)]) {
    let ids: Vec<i64> = leases.iter().map(|l| l.1).collect();
    let slots: Vec<SystemTime> = leases.iter().map(|l| l.2).collect();
    let stored: i32 = db
        .query_one(COMPLETE, &[&ids, &slots])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        stored as usize,
        leases.len(),
        "checks in flight during the update were lost"
    );
    let twice: i32 = db
        .query_one(COMPLETE, &[&ids, &slots])
        .await
        .unwrap()
        .get(0);
    assert_eq!(twice, 0, "a lease was completed twice");
}

/// Leases taken before an update to 0.7.0 or later, as (monitor id, job id, slot): their
/// probes' results, under ids the update retired, store nothing; their slots are back in the
/// queue, leased again at once under the new ids and stored once.
async fn leases_come_back(db: &Client, leases: &[(i64, i64, SystemTime)]) {
    let complete = COMPLETE;
    let old_ids: Vec<i64> = leases.iter().map(|l| l.1).collect();
    let slots: Vec<SystemTime> = leases.iter().map(|l| l.2).collect();
    let stored: i32 = db
        .query_one(complete, &[&old_ids, &slots])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0, "a result under a retired job id was stored");
    let again: Vec<(i64, i64, SystemTime)> = db
        .query(
            "SELECT monitor_id, job_id, scheduled_at FROM webmon.claim_checks('kept-probe', 10, '1 hour') ORDER BY monitor_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let same = |l: &[(i64, i64, SystemTime)]| l.iter().map(|x| (x.0, x.2)).collect::<Vec<_>>();
    assert_eq!(
        same(&again),
        same(leases),
        "the slots in flight did not come back"
    );
    let new_ids: Vec<i64> = again.iter().map(|l| l.1).collect();
    let stored: i32 = db
        .query_one(complete, &[&new_ids, &slots])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        stored as usize,
        leases.len(),
        "checks in flight during the update were lost"
    );
    let twice: i32 = db
        .query_one(complete, &[&new_ids, &slots])
        .await
        .unwrap()
        .get(0);
    assert_eq!(twice, 0, "a lease was completed twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_from_0_3_0_carries_leases_into_the_new_queue_and_equals_a_fresh_install() {
    let (cluster, db) = install_release("0.3.0").await;
    db.batch_execute(
        "SELECT webmon.run_maintenance();
         INSERT INTO webmon.monitors (url, check_interval, regions, enabled)
             SELECT 'http://127.0.0.1:9/kept/' || g, '1 hour',
                    CASE g WHEN 3 THEN '{eu}'::text[] WHEN 4 THEN '{us,eu}' WHEN 6 THEN '{us}' END,
                    g <> 7
             FROM generate_series(1, 20) g;
         SELECT webmon.register_probe('kept-probe', 'eu');
         INSERT INTO webmon.metrics (request_timestamp, monitor_id, response_time_ms, http_status_code, probe_id)
             SELECT now() - g * interval '1 minute', 1 + g % 20, g % 300, 200, 1
             FROM generate_series(1, 2000) g;
         INSERT INTO webmon.errors (request_timestamp, monitor_id, error_kind, error, probe_id)
             SELECT now() - g * interval '3 minutes', 1 + g % 20, (ARRAY['dns', 'lost', 'blocked'])[1 + g % 3], 'x', 1
             FROM generate_series(1, 300) g;
         -- 0.3.0's queue (its scheduler does not run under this release's library): jobs for
         -- monitors 3, 4 and 5 that kept-probe leases, and one for 6 that waits for a probe in us.
         INSERT INTO webmon.jobs (monitor_id, scheduled_at, regions)
             SELECT id, now() - interval '1 minute', regions FROM webmon.monitors WHERE id IN (3, 4, 5, 6);",
    )
    .await
    .unwrap();
    let leased: Vec<(i64, i64)> = db
        .query(
            "SELECT monitor_id, job_id FROM webmon.claim_checks('kept-probe', 10, '1 hour') ORDER BY monitor_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(leased.len(), 3);
    let waiting: SystemTime = db
        .query_one(
            "SELECT scheduled_at FROM webmon.jobs WHERE monitor_id = 6",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    scheduler_asks_for_the_update(&cluster).await;
    let before = counts(&db).await;
    update(&db).await;
    assert_eq!(counts(&db).await, before);

    // One job per enabled monitor and region; the leased checks back in the queue for their
    // slots (monitor 4's in the leasing probe's region), and the waiting check with its slot
    // and region.
    let shape: (bool, bool, bool) = db
        .query_one(
            "SELECT (SELECT count(*) FROM webmon.jobs)
                        = (SELECT sum(coalesce(cardinality(regions), 1)) FROM webmon.monitors WHERE enabled),
                    (SELECT bool_and(leased_by IS NULL AND requeued AND scheduled_at < now()) FROM webmon.jobs
                     WHERE monitor_id IN (3, 4, 5) AND region IN ('', 'eu'))
                        AND (SELECT region = 'eu' FROM webmon.jobs WHERE monitor_id = 4 AND requeued),
                    (SELECT leased_by IS NULL AND region = 'us' AND scheduled_at = $1
                     FROM webmon.jobs WHERE monitor_id = 6)",
            &[&waiting],
        )
        .await
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .unwrap();
    assert_eq!(shape, (true, true, true));
    // A 0.3.0 probe completes with its own form of complete_checks: nothing under the ids the
    // update retired; the same checks leased again are stored, each once, from its region.
    let complete_0_3_0 = "SELECT webmon.complete_checks('kept-probe', $1, ARRAY[now(), now(), now()], ARRAY[5, 5, 5]::real[],
                 ARRAY[200, 200, 200]::smallint[], ARRAY[NULL, NULL, NULL]::boolean[], ARRAY[NULL, NULL, NULL]::text[],
                 ARRAY[NULL, NULL, NULL]::text[], ARRAY[NULL, NULL, NULL]::text[])";
    // (Only those due: the others wait an hour.)
    db.batch_execute(
        "UPDATE webmon.jobs SET scheduled_at = now() + interval '1 hour' WHERE NOT requeued",
    )
    .await
    .unwrap();
    let old_ids: Vec<i64> = leased.iter().map(|l| l.1).collect();
    let stored: i32 = db
        .query_one(complete_0_3_0, &[&old_ids])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0, "a result under a retired job id was stored");
    let again: Vec<(i64, i64)> = db
        .query(
            "SELECT monitor_id, job_id FROM webmon.claim_checks('kept-probe', 10, '1 hour') ORDER BY monitor_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        again.iter().map(|l| l.0).collect::<Vec<_>>(),
        leased.iter().map(|l| l.0).collect::<Vec<_>>()
    );
    let new_ids: Vec<i64> = again.iter().map(|l| l.1).collect();
    let stored: i32 = db
        .query_one(complete_0_3_0, &[&new_ids])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 3, "checks in flight during the update were lost");
    let regions: Vec<Option<String>> = db
        .query(
            "SELECT region FROM webmon.metrics WHERE monitor_id IN (3, 4, 5) AND request_timestamp > now() - interval '1 second'
             ORDER BY monitor_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(regions, vec![Some("eu".to_string()); 3]);
    grants_made_before_0_4_0_keep_working(&cluster, &db).await;
    assert_same_schema_as_a_fresh_install(&cluster, &db).await;
    probes_again(&cluster, &db, 2, "kept-probe").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_from_0_2_0_keeps_rows_and_leases_and_equals_a_fresh_install() {
    let (cluster, db) = install_release("0.2.0").await;
    // 0.2.0's script builds the error kinds' CHECK from the library's list, and the library
    // here is this release's: put back the list 0.2.0's library had, which the update must
    // extend (with `blocked`).
    db.batch_execute(
        "ALTER TABLE webmon.errors DROP CONSTRAINT errors_error_kind_check,
             ADD CONSTRAINT errors_error_kind_check CHECK (error_kind = ANY (
                 '{dns,connect,tls,timeout,redirect,body,lost,no_probe,other}'::text[]))",
    )
    .await
    .unwrap();
    db.batch_execute(
        "SELECT webmon.run_maintenance();
         INSERT INTO webmon.monitors (url, check_interval, regions)
             SELECT 'http://127.0.0.1:9/kept/' || g, '1 hour', CASE WHEN g = 3 THEN '{eu}'::text[] END
             FROM generate_series(1, 20) g;
         SELECT webmon.register_probe('kept-probe', 'eu');
         INSERT INTO webmon.metrics (request_timestamp, monitor_id, response_time_ms, http_status_code, probe_id)
             SELECT now() - g * interval '1 minute', 1 + g % 20, g % 300, 200, 1
             FROM generate_series(1, 2000) g;
         INSERT INTO webmon.errors (request_timestamp, monitor_id, error_kind, error, probe_id)
             SELECT now() - g * interval '3 minutes', 1 + g % 20, (ARRAY['dns', 'lost', 'no_probe'])[1 + g % 3], 'x', 1
             FROM generate_series(1, 300) g;
         INSERT INTO webmon.jobs (monitor_id, scheduled_at, regions)
             SELECT id, now() - interval '1 minute', regions FROM webmon.monitors WHERE id = 3;
         -- Accepted by 0.2.0, over 0.3.0's limits.
         INSERT INTO webmon.monitors (url, check_interval, name, regions, enabled)
             VALUES ('http://127.0.0.1:9/kept/over', '1 hour', repeat('n', 300), '{}', false);",
    )
    .await
    .unwrap();
    // A lease taken before the update.
    let leased: i64 = db
        .query_one(
            "SELECT job_id FROM webmon.claim_checks('kept-probe', 10, '1 hour')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    scheduler_asks_for_the_update(&cluster).await;
    let before = counts(&db).await;
    update(&db).await;
    assert_eq!(counts(&db).await, before);
    let complete = "SELECT webmon.complete_checks('kept-probe', ARRAY[$1]::bigint[], ARRAY[now()], ARRAY[NULL]::real[],
                 ARRAY[NULL]::smallint[], ARRAY[NULL]::boolean[], ARRAY[NULL]::text[],
                 ARRAY['blocked'], ARRAY['blocked by the network policy'])";
    let stored: i32 = db.query_one(complete, &[&leased]).await.unwrap().get(0);
    assert_eq!(stored, 0, "a result under a retired job id was stored");
    // Its check is back in the queue, leased again at once (the others wait an hour) and
    // stored once.
    db.batch_execute(
        "UPDATE webmon.jobs SET scheduled_at = now() + interval '1 hour' WHERE NOT requeued",
    )
    .await
    .unwrap();
    let leased: i64 = db
        .query_one(
            "SELECT job_id FROM webmon.claim_checks('kept-probe', 10, '1 hour')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let stored: i32 = db.query_one(complete, &[&leased]).await.unwrap().get(0);
    assert_eq!(stored, 1, "the check in flight during the update was lost");
    let kind: String = db
        .query_one(
            "SELECT error_kind FROM webmon.errors WHERE monitor_id = 3 ORDER BY request_timestamp DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kind, "blocked");

    // The row over the new limits is kept and can still be edited; its labels cannot be
    // changed to other values over the limits.
    let over: i64 = db
        .query_one(
            "SELECT count(*) FROM webmon.monitors
             WHERE webmon.monitor_labels_problem(name, regex, regions) IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(over, 1);
    db.batch_execute(
        "UPDATE webmon.monitors SET check_interval = '2 hours' WHERE url = 'http://127.0.0.1:9/kept/over'",
    )
    .await
    .unwrap();
    let refused = db
        .batch_execute(
            "UPDATE webmon.monitors SET name = repeat('m', 300) WHERE url = 'http://127.0.0.1:9/kept/over'",
        )
        .await
        .unwrap_err();
    assert_eq!(
        refused.code().map(|c| c.code()),
        Some("22023"),
        "{refused:?}"
    );

    assert_same_schema_as_a_fresh_install(&cluster, &db).await;
    probes_again(&cluster, &db, 2, "kept-probe").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_from_0_1_0_keeps_every_row_and_equals_a_fresh_install() {
    let (cluster, db) = install_release("0.1.0").await;

    // 0.1.0's data: monitors, registrations (its heartbeats drew ids), results in the
    // partitions its CREATE EXTENSION made and in its default partitions.
    db.batch_execute(
        "INSERT INTO webmon.monitors (url, check_interval, regex)
             SELECT 'http://127.0.0.1:9/old/' || g, '1 hour', CASE WHEN g % 2 = 0 THEN 'ok' END
             FROM generate_series(1, 50) g;
         -- Accepted by 0.1.0's library, refused by 0.2.0's (which validates here): past the trigger.
         SET session_replication_role = replica;
         INSERT INTO webmon.monitors (url, check_interval) VALUES ('http://127.0.0.1:9/old/monthly', '1 mon 2 days');
         RESET session_replication_role;
         SELECT webmon.register_probe('old-probe', 'eu'), webmon.register_probe('old-probe', 'eu'),
                webmon.register_probe('other-probe');
         INSERT INTO webmon.metrics (request_timestamp, monitor_id, response_time_ms, http_status_code, probe_id, regex_matched)
             SELECT now() - g * interval '1 minute', 1 + g % 50, g % 300, 200, 1, CASE WHEN g % 2 = 0 THEN true END
             FROM generate_series(1, 3000) g;
         INSERT INTO webmon.errors (request_timestamp, monitor_id, error_kind, error, probe_id)
             SELECT now() - g * interval '7 minutes', 1 + g % 50, 'timeout', 'timed out', 1
             FROM generate_series(1, 300) g;",
    )
    .await
    .unwrap();
    // A partition made at 0.1.0's CREATE EXTENSION that has since passed retention (made
    // here with a date 60 days back, and made a member as CREATE EXTENSION made them).
    db.batch_execute(
        "SELECT webmon.create_partition('webmon.errors', date_trunc('day', now() - interval '60 days'),
                                        date_trunc('day', now() - interval '59 days'));
         DO $$ BEGIN
             EXECUTE format('ALTER EXTENSION pg_webmon ADD TABLE webmon.%I',
                            (SELECT partition FROM webmon.partitions WHERE range_end < now() - interval '30 days'));
         END $$;",
    )
    .await
    .unwrap();
    let expired: String = db
        .query_one(
            "SELECT partition FROM webmon.partitions WHERE range_end < now() - interval '30 days'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let before = counts(&db).await;
    assert!(
        partitions_owned_by_the_extension(&db).await > 0,
        "0.1.0 should own its first partitions"
    );
    scheduler_asks_for_the_update(&cluster).await;
    update(&db).await;

    // (b) every monitor and result is still there; a month became 30 days, as 0.1.0 counted it.
    assert_eq!(counts(&db).await, before);
    let monthly: bool = db
        .query_one(
            "SELECT check_interval = '32 days' FROM webmon.monitors WHERE url = 'http://127.0.0.1:9/old/monthly'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(monthly, "a 0.1.0 interval with months was not converted");
    // Results are no longer the extension's: retention drops the partition made at 0.1.0's
    // CREATE EXTENSION (before: "cannot drop table … because extension pg_webmon requires it",
    // and the whole maintenance run rolled back).
    assert_eq!(partitions_owned_by_the_extension(&db).await, 0);
    // Every partition, dated or default, has its own (monitor_id, request_timestamp) index.
    let without_one_index: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_inherits i
             WHERE i.inhparent IN ('webmon.metrics'::regclass, 'webmon.errors'::regclass)
               AND (SELECT count(*) FROM pg_index x WHERE x.indrelid = i.inhrelid) <> 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(without_one_index, 0);
    // (The scheduler's first maintenance may be first to drop it; either run will do.)
    let gone = wait_until(Duration::from_secs(10), || async {
        let _ = db.batch_execute("SELECT webmon.run_maintenance()").await;
        db.query_one(
            "SELECT to_regclass(format('webmon.%I', $1::text)) IS NULL",
            &[&expired],
        )
        .await
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false)
    })
    .await;
    assert!(
        gone,
        "retention did not drop {expired}, made at CREATE EXTENSION"
    );

    // (a) the schema equals a fresh install's.
    assert_same_schema_as_a_fresh_install(&cluster, &db).await;

    // (c) the scheduler and a probe work afterwards: an old monitor, pointed at a target.
    probes_again(&cluster, &db, 2, "old-probe").await;
    // The probe kept its 0.1.0 id.
    let probe_id: i16 = db
        .query_one("SELECT id FROM webmon.probes WHERE name = 'old-probe'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(probe_id, 1);

    // (d) pg_dump and a restore into a fresh cluster keep every row (0.1.0 lost the rows
    // of the partitions its CREATE EXTENSION made: pg_dump skips extension members' data).
    // Paused first, so that no check adds a row between the count and the dump.
    db.batch_execute("UPDATE webmon.monitors SET enabled = false")
        .await
        .unwrap();
    let dumped = counts(&db).await;
    let bookkept = partition_rows(&db).await;
    let dump_file = cluster.dir.join("webmon.dump");
    output(
        pg_tool("pg_dump", cluster.port)
            .args(["-Fc", "-d", "webmon", "-f"])
            .arg(&dump_file),
    );
    let restored = Cluster::start_empty("restored", &[]).await.unwrap();
    // One transaction: the restored cluster's scheduler sees the extension only when every
    // table is back, so it never makes a partition the dump is about to create.
    output(
        pg_tool("pg_restore", restored.port)
            .args(["--single-transaction", "--exit-on-error", "-d", "webmon"])
            .arg(&dump_file),
    );
    let restored_db = restored.client().await.unwrap();
    assert_eq!(counts(&restored_db).await, dumped);
    assert_eq!(partitions_owned_by_the_extension(&restored_db).await, 0);
    // Its bookkeeping came along (without it retention would never drop the restored
    // partitions), and maintenance finds every step possible.
    assert_eq!(partition_rows(&restored_db).await, bookkept);
    restored_db
        .batch_execute("SELECT webmon.run_maintenance()")
        .await
        .unwrap();
    assert!(
        !restored
            .server_log()
            .contains("pg_webmon maintenance: could not"),
        "{}",
        restored.server_log()
    );
}

/// The upgraded database `webmon` has the schema a fresh `CREATE EXTENSION` makes.
async fn assert_same_schema_as_a_fresh_install(cluster: &Cluster, db: &Client) {
    db.batch_execute("CREATE DATABASE fresh").await.unwrap();
    let fresh = cluster.connect("fresh").await.unwrap();
    fresh
        .batch_execute("CREATE EXTENSION pg_webmon; SELECT webmon.run_maintenance();")
        .await
        .unwrap();
    // Both with every default partition (a run of the maintenance worker in progress makes
    // run_maintenance() skip).
    for client in [db, &fresh] {
        let made = wait_until(Duration::from_secs(30), || async {
            client
                .query_one(
                    "SELECT count(*) = 4 FROM webmon.run_maintenance(), pg_catalog.pg_class c
                     WHERE c.relnamespace = 'webmon'::regnamespace
                       AND c.relname IN ('metrics_default', 'errors_default', 'rollups_hourly_default', 'rollups_daily_default')",
                    &[],
                )
                .await
                .is_ok_and(|row| row.get::<_, bool>(0))
        })
        .await;
        assert!(made, "the default partitions were not made");
    }
    let (upgraded, installed) = (
        schema(cluster.port, "webmon"),
        schema(cluster.port, "fresh"),
    );
    // The comparison sees the extension's own objects, not only CREATE EXTENSION.
    for object in [
        "FUNCTION webmon.claim_checks",
        "TRIGGER monitors_sync_jobs",
        "errors_error_kind_check",
    ] {
        assert!(
            installed.contains(object),
            "{object} is not in the compared schema"
        );
    }
    if upgraded != installed {
        let diff = diff_lines(&upgraded, &installed);
        panic!(
            "the upgraded schema differs from a fresh install ({}):\n{}",
            if diff.is_empty() {
                "same lines in another order"
            } else {
                "lines below"
            },
            diff.join("\n")
        );
    }
}

/// Monitor `monitor_id`, pointed at a local target every second, is checked by a probe
/// named `probe_name` after the upgrade.
async fn probes_again(cluster: &Cluster, db: &Client, monitor_id: i64, probe_name: &str) {
    let target = targets::start_http().await.unwrap();
    db.execute(
        "UPDATE webmon.monitors SET url = $1, check_interval = '1 second' WHERE id = $2",
        &[&target.url("/ok"), &monitor_id],
    )
    .await
    .unwrap();
    let mut probe = Probe::for_cluster(cluster, probe_name, &[]).unwrap();
    let checked = wait_until(Duration::from_secs(20), || async {
        db.query_one(
            "SELECT count(*) FROM webmon.metrics WHERE monitor_id = $1 AND request_timestamp > now() - interval '1 minute'",
            &[&monitor_id],
        )
        .await
        .map(|r| r.get::<_, i64>(0) >= 2)
        .unwrap_or(false)
    })
    .await;
    assert!(
        checked,
        "no checks after the upgrade\n{}\n{}",
        probe.output(),
        cluster.server_log()
    );
    probe.stop_cleanly(libc::SIGTERM).await;
}

/// Roles granted by 0.3.0's grant functions keep what they could do (the update grants
/// nothing: its grants would be recorded as the extension's own, and left out of dumps), and
/// get what 0.4.0 adds when granted again. In a database of its own: a dropped role would
/// leave its mark in the extension's recorded privileges, which the schema comparison sees.
async fn grants_made_before_0_4_0_keep_working(cluster: &Cluster, db: &Client) {
    db.batch_execute("CREATE DATABASE grants").await.unwrap();
    let grants = cluster.connect("grants").await.unwrap();
    grants
        .batch_execute(
            "CREATE EXTENSION pg_webmon VERSION '0.3.0';
             CREATE ROLE webmon_old_probe LOGIN; CREATE ROLE webmon_old_reader;
             SELECT webmon.grant_probe('webmon_old_probe'), webmon.grant_reader('webmon_old_reader');
             ALTER EXTENSION pg_webmon UPDATE;",
        )
        .await
        .unwrap();
    let granted = |sql: String| {
        let grants = &grants;
        async move { grants.query_one(&sql, &[]).await.unwrap().get::<_, bool>(0) }
    };
    let new_form = "'webmon.complete_checks(text, bigint[], timestamptz[], timestamptz[], real[], smallint[], boolean[], text[], text[], text[])'";
    let old_form = "'webmon.complete_checks(text, bigint[], timestamptz[], real[], smallint[], boolean[], text[], text[], text[])'";
    assert!(
        granted(format!(
            "SELECT has_function_privilege('webmon_old_probe', {old_form}, 'EXECUTE')"
        ))
        .await
    );
    assert!(
        !granted(format!(
            "SELECT has_function_privilege('webmon_old_probe', {new_form}, 'EXECUTE')"
        ))
        .await
    );
    grants
        .batch_execute("SELECT webmon.grant_probe('webmon_old_probe'), webmon.grant_reader('webmon_old_reader')")
        .await
        .unwrap();
    assert!(
        granted(format!(
            "SELECT has_function_privilege('webmon_old_probe', {new_form}, 'EXECUTE')"
        ))
        .await
    );
    assert!(
        granted(
            "SELECT has_table_privilege('webmon_old_reader', 'webmon.region_status', 'SELECT')
                    AND has_column_privilege('webmon_old_reader', 'webmon.monitors', 'down_quorum', 'SELECT')"
                .to_string()
        )
        .await
    );
}

/// webmon.uptime() is made again by the update to 0.8.0. Taken from PUBLIC before, it and the
/// new uptime functions stay so; the update grants nothing (its grants would be recorded as the
/// extension's own, and left out of dumps): webmon.grant_reader() grants them again. In a
/// database of its own.
async fn uptime_grants_are_not_widened_by_the_update_from_0_7_0(cluster: &Cluster, db: &Client) {
    db.batch_execute("CREATE DATABASE uptime_grants")
        .await
        .unwrap();
    let grants = cluster.connect("uptime_grants").await.unwrap();
    grants
        .batch_execute(
            "CREATE EXTENSION pg_webmon VERSION '0.7.0';
             CREATE ROLE kept_reader;
             SELECT webmon.grant_reader('kept_reader');
             REVOKE EXECUTE ON FUNCTION webmon.uptime(interval) FROM PUBLIC;
             ALTER EXTENSION pg_webmon UPDATE;",
        )
        .await
        .unwrap();
    let may = |role: &'static str| {
        let grants = &grants;
        async move {
            grants
                .query_one(
                    "SELECT bool_or(has_function_privilege($1, f, 'EXECUTE'))
                     FROM unnest(ARRAY['webmon.uptime(interval, bigint[])', 'webmon.uptime_between(timestamptz, timestamptz, bigint[])',
                                       'webmon.sla(date, bigint[])']) f",
                    &[&role],
                )
                .await
                .unwrap()
                .get::<_, bool>(0)
        }
    };
    assert!(
        !may("public").await,
        "the update gave the uptime functions to PUBLIC"
    );
    grants
        .batch_execute("SELECT webmon.grant_reader('kept_reader')")
        .await
        .unwrap();
    assert!(may("kept_reader").await);
    grants
        .batch_execute(
            "SET ROLE kept_reader;
             SELECT count(*) FROM webmon.uptime('1 day');
             SELECT count(*) FROM webmon.sla(now()::date);
             SELECT count(*) FROM webmon.rollups_hourly;
             RESET ROLE;",
        )
        .await
        .unwrap();
}

/// Lines only in one of the two texts, marked `-` (first) and `+` (second).
fn diff_lines(first: &str, second: &str) -> Vec<String> {
    let a: Vec<&str> = first.lines().collect();
    let b: Vec<&str> = second.lines().collect();
    let mut out: Vec<String> = a
        .iter()
        .filter(|line| !b.contains(line))
        .map(|line| format!("- {line}"))
        .collect();
    out.extend(
        b.iter()
            .filter(|line| !a.contains(line))
            .map(|line| format!("+ {line}")),
    );
    // Same lines in another order: where the order first differs.
    if let Some(at) = (out.is_empty())
        .then(|| a.iter().zip(&b).position(|(x, y)| x != y))
        .flatten()
    {
        let around =
            |lines: &[&str]| lines[at.saturating_sub(2)..(at + 6).min(lines.len())].join("\n");
        out.push(format!("upgraded, from line {at}:\n{}", around(&a)));
        out.push(format!("fresh:\n{}", around(&b)));
    }
    out
}
