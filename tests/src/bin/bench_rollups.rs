//! `bench_rollups`: uptime over months at scale. 100,000 one-minute monitors with 30 days of
//! history made with SQL (not by probing): hourly and daily rollups for the 30 days, raw
//! results for the two edges a 30-day range reads (its first hour and the hour in progress),
//! each monitor's job with its last result, a few open incidents; one monitor with a full
//! year of rollups. Then, each the median of 5 runs after one to warm the cache:
//! `uptime('30 days')` for all monitors, one monitor's 365-day `uptime_between`, all of
//! `monitor_status`; the rollup of one live hour of raw results (µs per check); and the rows
//! and bytes rollups take per monitor and year.
//!
//!   cargo run --release -p webmon-tests --bin bench_rollups -- [--monitors N]

use anyhow::Result;
use std::time::{Duration, Instant};
use tokio_postgres::Client;
use webmon_tests::cluster::Cluster;

const RUNS: usize = 5;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    if let Err(e) = run().await {
        eprintln!("{e:#}");
        if let Some(db) = e
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(|e| e.as_db_error())
        {
            eprintln!("{}: {}", db.code().code(), db.message());
        }
        std::process::exit(1);
    }
    Ok(())
}

async fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let monitors: i64 = args
        .iter()
        .position(|a| a == "--monitors")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let cluster = Cluster::start(
        "bench-rollups",
        &[
            "shared_buffers = '2GB'",
            "work_mem = '64MB'",
            "max_wal_size = '8GB'",
        ],
    )
    .await?;
    cluster.wait_for_scheduler().await?;
    let db = cluster.client().await?;

    let made = Instant::now();
    make_history(&db, monitors).await?;
    println!(
        "## rollups at scale: {monitors} monitors checked every minute, 30 days of history (made in {:.0} s)",
        made.elapsed().as_secs_f64()
    );
    db.batch_execute("VACUUM ANALYZE").await?;

    println!("| query | median ms (5 runs) | runs ms | goal |");
    println!("|---|---|---|---|");
    let sample: i64 = 1;
    timed(
        &db,
        "uptime('30 days'), all monitors",
        "SELECT count(*), sum(checks), sum(failures), sum(uptime_pct), sum(p50_ms), sum(p95_ms), sum(p99_ms),
                sum(extract(epoch FROM unmonitored_time)) FROM webmon.uptime('30 days')",
        "≤ 1,000",
    )
    .await?;
    timed(
        &db,
        "uptime_between(now() - 365 days, now(), ARRAY[id]), one monitor",
        &format!(
            "SELECT * FROM webmon.uptime_between(now() - interval '365 days', now(), ARRAY[{sample}]::bigint[])"
        ),
        "≤ 10",
    )
    .await?;
    timed(
        &db,
        "sla(last month, ARRAY[id]), one monitor",
        &format!(
            "SELECT * FROM webmon.sla((now() - interval '1 month')::date, ARRAY[{sample}]::bigint[])"
        ),
        "",
    )
    .await?;
    timed(
        &db,
        "uptime('1 day'), all monitors",
        "SELECT count(*), sum(checks), sum(failures), sum(uptime_pct), sum(p50_ms), sum(p95_ms), sum(p99_ms),
                sum(extract(epoch FROM unmonitored_time)) FROM webmon.uptime('1 day')",
        "",
    )
    .await?;
    timed(
        &db,
        "monitor_status, all monitors",
        "SELECT count(*), count(up), count(last_checked_at), count(last_status_code), count(next_check_at),
                count(state), count(state_since), count(last_error) FROM webmon.monitor_status",
        "≤ 300",
    )
    .await?;

    live_hour(&db, monitors).await?;
    sizes(&db).await?;
    Ok(())
}

/// Runs `sql` once to warm up, then `RUNS` times; prints the median and the runs.
async fn timed(db: &Client, name: &str, sql: &str, goal: &str) -> Result<()> {
    db.query(sql, &[]).await?;
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        db.query(sql, &[]).await?;
        runs.push(start.elapsed());
    }
    let mut sorted = runs.clone();
    sorted.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| {name} | {:.1} | {} | {goal} |",
        ms(&sorted[RUNS / 2]),
        runs.iter()
            .map(|r| format!("{:.1}", ms(r)))
            .collect::<Vec<_>>()
            .join(" · ")
    );
    Ok(())
}

async fn make_history(db: &Client, monitors: i64) -> Result<()> {
    db.batch_execute(&format!(
        "SELECT webmon.run_maintenance();
         -- Enabled, their next check a year away: jobs exist, nothing is claimed.
         INSERT INTO webmon.monitors (url, name, check_interval, next_check_at, created_at)
         SELECT 'http://127.0.0.1:9/m/' || g, 'monitor ' || g, '1 minute', now() + interval '365 days',
                now() - interval '400 days'
         FROM generate_series(1, {monitors}) g;
         -- Partitions for the history (the maintenance worker makes them from today on).
         SELECT webmon.create_partition('webmon.metrics', d, d + interval '1 day')
         FROM generate_series(date_trunc('day', now() - interval '31 days', 'UTC'),
                              date_trunc('day', now() - interval '1 day', 'UTC'), interval '1 day') d;
         SELECT webmon.create_partition('webmon.errors', d, d + interval '1 day')
         FROM generate_series(date_trunc('day', now() - interval '31 days', 'UTC'),
                              date_trunc('day', now() - interval '1 day', 'UTC'), interval '1 day') d;
         SELECT webmon.create_partition(p, s, s + interval '30 days')
         FROM unnest(ARRAY['webmon.rollups_hourly', 'webmon.rollups_daily']::regclass[]) p,
              LATERAL (SELECT min(range_start) AS first FROM webmon.partitions WHERE parent = p) f,
              generate_series(f.first - interval '390 days', f.first - interval '30 days', interval '30 days') s;
         -- Sixteen hours of response times around 40 ms, to pick from.
         CREATE TABLE hours AS
         SELECT k, webmon.latency_histogram((30 + 20 * random() + CASE WHEN random() < 0.02 THEN 500 ELSE 0 END)::real) AS h
         FROM generate_series(0, 15) k, generate_series(1, 60) g GROUP BY k;"
    ))
    .await?;
    // Hourly rollups up to the last closed hour (as the maintenance worker leaves them), 30 days
    // for each monitor and a full year for monitor 1; daily rollups for the closed days.
    db.batch_execute(&format!(
        "CREATE TABLE bounds AS SELECT date_trunc('hour', now() - interval '2 minutes', 'UTC') AS rolled;
         INSERT INTO webmon.rollups_hourly
         SELECT t.m, '', t.hr, 60, 59 - t.x % 2, t.x % 2, 0, 0,
                CASE WHEN t.x % 2 = 1 THEN '{{\"timeout\": 1}}'::jsonb END, 60 - t.x % 2, 30, 530, 2400, h.h
         -- Hour by hour, as the maintenance worker writes them (time order).
         FROM (SELECT m, hr, m + extract(epoch FROM hr)::bigint / 3600 AS x
               FROM bounds,
                    generate_series(rolled - interval '366 days', rolled - interval '1 hour', interval '1 hour') hr,
                    LATERAL generate_series(1, CASE WHEN hr >= rolled - interval '31 days' THEN {monitors} ELSE 1 END) m) t
         JOIN hours h ON h.k = t.x % 16;
         INSERT INTO webmon.rollups_daily
         SELECT h.monitor_id, h.region, date_trunc('day', h.hour, 'UTC') AS day, sum(h.checks), sum(h.good), sum(h.failed),
                0, 0, webmon.sum_error_kinds(array_agg(h.error_kinds)), sum(h.responses), min(h.latency_min_ms),
                max(h.latency_max_ms), sum(h.latency_sum_ms), webmon.latency_merge(h.latency_histogram)
         FROM webmon.rollups_hourly h, bounds b
         WHERE h.hour < date_trunc('day', b.rolled, 'UTC')
         GROUP BY 1, 2, 3
         ORDER BY 3;"
    ))
    .await?;
    // Raw results at the edges of a 30-day range: its first hour, and from the last
    // rolled-up hour to now; each monitor's job keeps its last one.
    db.batch_execute(&format!(
        "-- History, not late results: the trigger that notes those is off while it is written.
         ALTER TABLE webmon.metrics DISABLE TRIGGER metrics_note_late;
         INSERT INTO webmon.metrics (request_timestamp, monitor_id, response_time_ms, http_status_code, probe_id)
         SELECT t.t, m, (30 + 20 * random())::real, CASE WHEN random() < 0.01 THEN 503 ELSE 200 END, 1
         FROM bounds b, generate_series(1, {monitors}) m,
              LATERAL (SELECT generate_series(now() - interval '30 days 5 minutes' + (m % 60) * interval '1 second',
                                              date_trunc('hour', now() - interval '30 days', 'UTC') + interval '1 hour',
                                              interval '1 minute') AS t
                       UNION ALL
                       SELECT generate_series(b.rolled + (m % 60) * interval '1 second', now(), interval '1 minute')) t;
         ALTER TABLE webmon.metrics ENABLE TRIGGER metrics_note_late;
         INSERT INTO webmon.rollup_state (rolled_up_to, flagged_before) SELECT rolled, rolled FROM bounds
         ON CONFLICT (only_row) DO UPDATE SET rolled_up_to = EXCLUDED.rolled_up_to, flagged_before = EXCLUDED.flagged_before;
         UPDATE webmon.jobs j SET last_checked_at = now() - interval '20 seconds', last_status_code = 200,
                last_response_time_ms = 42, last_region = NULL, verdict = 'up', verdict_since = now() - interval '3 days';
         INSERT INTO webmon.incidents (monitor_id, kind, started_at, cause, failed_checks, last_failure_at)
         SELECT m, 'down', now() - interval '1 hour', 'bench', 3, now() FROM generate_series(1, {monitors}, 1000) m;"
    ))
    .await?;
    let edge: f64 = db
        .query_one(
            "SELECT extract(epoch FROM now() - rolled)::float8 / 60 FROM bounds",
            &[],
        )
        .await?
        .get(0);
    println!("(the range's end reads {edge:.0} minutes of raw results, its start up to 65)");
    Ok(())
}

/// One live hour of raw results (every monitor, every minute) rolled up by
/// `webmon.run_rollups()`, as the maintenance worker does each hour.
async fn live_hour(db: &Client, monitors: i64) -> Result<()> {
    // The last rolled-up hour, rolled up again from a full hour of results: written first
    // (history: the late-result trigger is off), then handed back to the rollups, then timed
    // until it is rolled up (by this session or the maintenance worker, whichever comes first).
    db.batch_execute(&format!(
        "ALTER TABLE webmon.metrics DISABLE TRIGGER metrics_note_late;
         INSERT INTO webmon.metrics (request_timestamp, monitor_id, response_time_ms, http_status_code, probe_id)
         SELECT b.rolled - interval '1 hour' + k * interval '1 minute' + (m % 60) * interval '1 second',
                m, (30 + 20 * random())::real, CASE WHEN random() < 0.01 THEN 503 ELSE 200 END, 1
         FROM bounds b, generate_series(1, {monitors}) m, generate_series(0, 59) k;
         ALTER TABLE webmon.metrics ENABLE TRIGGER metrics_note_late;"
    ))
    .await?;
    db.batch_execute("VACUUM ANALYZE webmon.metrics").await?;
    db.batch_execute(
        "DELETE FROM webmon.rollups_hourly WHERE hour = (SELECT rolled FROM bounds) - interval '1 hour';
         UPDATE webmon.rollup_state SET rolled_up_to = (SELECT rolled FROM bounds) - interval '1 hour',
                                        flagged_before = greatest(flagged_before, (SELECT rolled FROM bounds));",
    )
    .await?;
    let start = Instant::now();
    let done: i32 = loop {
        // The maintenance worker may take the hour first: then it is timed here too.
        let rolled: bool = db
            .query_one(
                "SELECT rolled_up_to >= (SELECT rolled FROM bounds)
                        AND EXISTS (SELECT 1 FROM webmon.rollups_hourly WHERE hour = (SELECT rolled FROM bounds) - interval '1 hour')
                 FROM webmon.rollup_state",
                &[],
            )
            .await?
            .get(0);
        if rolled {
            break 1;
        }
        let n: i32 = db
            .query_one("SELECT webmon.run_rollups(1)", &[])
            .await?
            .get(0);
        if n > 0 {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let elapsed = start.elapsed();
    let checks = monitors * 60;
    println!(
        "\nRollup of one live hour ({checks} results, {done} run): {:.1} s, {:.2} µs per stored check (one backend).",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / checks as f64
    );
    Ok(())
}

async fn sizes(db: &Client) -> Result<()> {
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM webmon.rollups_hourly),
                    (SELECT sum(pg_total_relation_size(inhrelid))::bigint FROM pg_inherits
                     WHERE inhparent = 'webmon.rollups_hourly'::regclass),
                    (SELECT count(*) FROM webmon.rollups_daily),
                    (SELECT sum(pg_total_relation_size(inhrelid))::bigint FROM pg_inherits
                     WHERE inhparent = 'webmon.rollups_daily'::regclass)",
            &[],
        )
        .await?;
    let (hours, hour_bytes, days, day_bytes): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let per_hour = hour_bytes as f64 / hours.max(1) as f64;
    let per_day = day_bytes as f64 / days.max(1) as f64;
    let year = 8760.0 * per_hour + 365.0 * per_day;
    println!(
        "Rollups on disk (with indexes): {per_hour:.0} B per hourly row ({hours} rows), {per_day:.0} B per daily row ({days} rows); \
         per monitor and region a year: 8,760 + 365 rows, {:.2} MiB.",
        year / 1_048_576.0
    );
    Ok(())
}
