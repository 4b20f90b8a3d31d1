//! `bench_rollups`: uptime over months at scale. 100,000 one-minute monitors with 30 days of
//! history made with SQL (not by probing): the first hour of a 30-day range from one-minute
//! results, rolled up by the maintenance steps (timed: the live cost of rollups); hourly rollups
//! with running totals for the rest, daily rollups for the closed days; the hour in progress
//! from results, rolled up to two minutes ago; each monitor's job with its last result, a few
//! open incidents; one monitor with a full year of rollups. Then, each the median of 5 runs
//! after one to warm the cache: `uptime('30 days')` and `uptime('1 day')` for all monitors, one
//! monitor's 365-day `uptime_between`, all of `monitor_status`; and the bytes rollups take per
//! monitor and year.
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
         -- Sixteen hours of one-minute results around 40 ms to pick from: what each adds up to,
         -- and its timeline.
         CREATE TABLE hours AS
         SELECT k, count(*) FILTER (WHERE s = 0)::int AS good, count(*) FILTER (WHERE s = 1)::int AS failed,
                webmon.latency_histogram(ms) AS h, webmon.result_timeline(us, s, ms) AS timeline
         FROM (SELECT k, g * 60000000::bigint + k * 1000 AS us, CASE WHEN (g + k) % 31 = 0 THEN 1 ELSE 0 END AS s,
                      (30 + 20 * random() + CASE WHEN random() < 0.02 THEN 500 ELSE 0 END)::real AS ms
               FROM generate_series(0, 15) k, generate_series(0, 59) g) r
         GROUP BY k;
         -- Running totals of n of those hours in turn, from hour k on.
         CREATE TABLE sums (k int, n int, good bigint, failed bigint, h bytea, PRIMARY KEY (k, n));
         DO $$
         DECLARE
             total_good bigint; total_failed bigint; total_h bytea; part record;
         BEGIN
             FOR first_k IN 0..15 LOOP
                 total_good := 0; total_failed := 0; total_h := NULL;
                 FOR i IN 0..8800 LOOP
                     INSERT INTO sums VALUES (first_k, i, total_good, total_failed, total_h);
                     SELECT * INTO part FROM hours WHERE hours.k = (first_k + i) % 16;
                     total_good := total_good + part.good; total_failed := total_failed + part.failed;
                     total_h := webmon.latency_sum(total_h, part.h);
                 END LOOP;
             END LOOP;
         END
         $$;
         -- first: the hour a 30-day range starts in; rolled: the start of the hour in progress.
         CREATE TABLE bounds AS
         SELECT date_trunc('hour', now() - interval '30 days', 'UTC') AS first,
                date_trunc('hour', now() - interval '1 day', 'UTC') AS day_ago,
                date_trunc('hour', webmon.rollups_closed_before(now()), 'UTC') AS rolled;
         -- Monitor 1: a year of history before that hour.
         INSERT INTO webmon.rollups_hourly (monitor_id, region, hour, checks, good, failed, maintenance, unmonitored,
                                            responses, latency_min_ms, latency_max_ms, latency_sum_ms,
                                            latency_histogram, timeline, cum_good, cum_failed, cum_maintenance,
                                            cum_histogram)
         SELECT 1, '', hr, 60, hh.good, hh.failed, 0, 0, 60, 30, 530, 2400, hh.h, hh.timeline, s.good, s.failed, 0, s.h
         FROM bounds b
         CROSS JOIN generate_series(1, 366 * 24) g(n)
         CROSS JOIN LATERAL (SELECT b.first - (366 * 24 - g.n + 1) * interval '1 hour' AS hr) t
         JOIN hours hh ON hh.k = (g.n - 1) % 16
         JOIN sums s ON s.k = 0 AND s.n = g.n - 1;
         INSERT INTO webmon.rollup_totals SELECT 1, '', s.good, s.failed, 0, s.h FROM sums s WHERE s.k = 0 AND s.n = 366 * 24;
         -- One-minute results of every monitor in the first hour (history: the late-result
         -- trigger is off).
         ALTER TABLE webmon.metrics DISABLE TRIGGER metrics_note_late;
         INSERT INTO webmon.metrics (request_timestamp, monitor_id, response_time_ms, http_status_code, probe_id)
         SELECT b.first + k * interval '1 minute' + (m % 60) * interval '1 second',
                m, (30 + 20 * random())::real, CASE WHEN random() < 0.01 THEN 503 ELSE 200 END, 1
         FROM bounds b, generate_series(1, {monitors}) m, generate_series(0, 59) k;
         ALTER TABLE webmon.metrics ENABLE TRIGGER metrics_note_late;
         ANALYZE webmon.metrics;"
    ))
    .await?;
    // That hour rolled up as the maintenance worker does: eleven five-minute steps added to the
    // totals, then the hour's rows once it has closed. The live cost of rollups.
    let start = Instant::now();
    for step in 0..11 {
        db.execute(
            "SELECT webmon.add_to_totals(b.first + $1 * interval '5 minutes', b.first + ($1 + 1) * interval '5 minutes')
             FROM bounds b",
            &[&f64::from(step)],
        )
        .await?;
    }
    db.execute("SELECT webmon.rollup_hour(b.first) FROM bounds b", &[])
        .await?;
    let elapsed = start.elapsed();
    let checks = monitors * 60;
    println!(
        "Rollup of one live hour, eleven five-minute steps and the closed hour ({checks} results): {:.1} s, {:.2} µs per stored check (one backend).",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / checks as f64
    );
    // Hourly rollups of every monitor after it up to the hour in progress (as the maintenance
    // worker leaves them, hour by hour) with their running totals; the hours a 30-day or a
    // 1-day range starts in while the benchmark runs with their timelines (the others without:
    // the disk of a test machine; no range measured here reads them). Daily rollups for the
    // closed days.
    db.batch_execute(&format!(
        "INSERT INTO webmon.rollups_hourly (monitor_id, region, hour, checks, good, failed, maintenance, unmonitored,
                                            responses, latency_min_ms, latency_max_ms, latency_sum_ms,
                                            latency_histogram, timeline, cum_good, cum_failed, cum_maintenance,
                                            cum_histogram)
         SELECT t.m, '', t.hr, 60, hh.good, hh.failed, 0, 0, 60, 30, 530, 2400, hh.h,
                CASE WHEN t.hr < b.first + interval '4 hours' OR t.hr BETWEEN b.day_ago AND b.day_ago + interval '3 hours'
                     THEN hh.timeline END,
                tot.good + s.good, tot.failed + s.failed, 0, webmon.latency_sum(tot.latency_histogram, s.h)
         FROM bounds b
         CROSS JOIN LATERAL (SELECT hr, m, (extract(epoch FROM hr - b.first)::int / 3600) - 1 AS n
                             FROM generate_series(b.first + interval '1 hour', b.rolled - interval '1 hour', interval '1 hour') hr,
                                  generate_series(1, {monitors}) m) t
         JOIN webmon.rollup_totals tot ON tot.monitor_id = t.m AND tot.region = ''
         JOIN hours hh ON hh.k = (t.m % 16 + t.n) % 16
         JOIN sums s ON s.k = t.m % 16 AND s.n = t.n
         ORDER BY t.hr;
         UPDATE webmon.rollup_totals t SET good = t.good + s.good, failed = t.failed + s.failed,
                latency_histogram = webmon.latency_sum(t.latency_histogram, s.h)
         FROM bounds b, sums s
         WHERE s.k = t.monitor_id % 16 AND s.n = extract(epoch FROM b.rolled - b.first)::int / 3600 - 1;
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
    // The hour in progress: results up to now, rolled up by the maintenance steps up to two
    // minutes ago; each monitor's job keeps its last one.
    db.batch_execute(&format!(
        "ALTER TABLE webmon.metrics DISABLE TRIGGER metrics_note_late;
         INSERT INTO webmon.metrics (request_timestamp, monitor_id, response_time_ms, http_status_code, probe_id)
         SELECT t.t, m, (30 + 20 * random())::real, CASE WHEN random() < 0.01 THEN 503 ELSE 200 END, 1
         FROM bounds b, generate_series(1, {monitors}) m,
              LATERAL generate_series(b.rolled + (m % 60) * interval '1 second', now(), interval '1 minute') t(t);
         ALTER TABLE webmon.metrics ENABLE TRIGGER metrics_note_late;
         INSERT INTO webmon.rollup_state (rolled_up_to, flagged_before) SELECT rolled, rolled FROM bounds
         ON CONFLICT (only_row) DO UPDATE SET rolled_up_to = EXCLUDED.rolled_up_to, flagged_before = EXCLUDED.flagged_before;
         UPDATE webmon.jobs j SET last_checked_at = now() - interval '20 seconds', last_status_code = 200,
                last_response_time_ms = 42, last_region = NULL, verdict = 'up', verdict_since = now() - interval '3 days';
         INSERT INTO webmon.incidents (monitor_id, kind, started_at, cause, failed_checks, last_failure_at)
         SELECT m, 'down', now() - interval '1 hour', 'bench', 3, now() FROM generate_series(1, {monitors}, 1000) m;"
    ))
    .await?;
    loop {
        let caught_up: bool = db
            .query_one(
                "SELECT rolled_up_to >= webmon.rollups_closed_before(now()) FROM webmon.rollup_state",
                &[],
            )
            .await?
            .get(0);
        if caught_up {
            break;
        }
        db.execute("SELECT webmon.run_rollups(1)", &[]).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tail: f64 = db
        .query_one(
            "SELECT extract(epoch FROM now() - rolled_up_to)::float8 / 60 FROM webmon.rollup_state",
            &[],
        )
        .await?
        .get(0);
    println!("(a range up to now reads the last {tail:.1} minutes from the results)");
    Ok(())
}

/// Bytes per row as the maintenance worker writes them: hourly rows of the hour rolled up
/// live (with their timelines; the generated ones have none), daily rows as generated; each
/// with its share of the indexes.
async fn sizes(db: &Client) -> Result<()> {
    let row = db
        .query_one(
            "SELECT (SELECT avg(pg_column_size(h.*) + 4)::float8 FROM webmon.rollups_hourly h, bounds b WHERE h.hour = b.first),
                    (SELECT sum(pg_indexes_size(inhrelid))::float8 FROM pg_inherits
                     WHERE inhparent = 'webmon.rollups_hourly'::regclass)
                    / (SELECT count(*) FROM webmon.rollups_hourly),
                    (SELECT avg(pg_column_size(t.timeline))::float8 FROM webmon.rollups_hourly t, bounds b WHERE t.hour = b.first),
                    (SELECT sum(pg_total_relation_size(inhrelid))::float8 FROM pg_inherits
                     WHERE inhparent = 'webmon.rollups_daily'::regclass)
                    / (SELECT count(*) FROM webmon.rollups_daily)",
            &[],
        )
        .await?;
    let (tuple, index, timeline, per_day): (f64, f64, f64, f64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let per_hour = tuple + index;
    let year = 8760.0 * per_hour + 365.0 * per_day;
    println!(
        "Rollups on disk: {per_hour:.0} B per hourly row ({tuple:.0} B row, of which {timeline:.0} B timeline, + {index:.0} B of indexes), \
         {per_day:.0} B per daily row with indexes; per monitor and region a year: 8,760 + 365 rows, {:.2} MiB.",
        year / 1_048_576.0
    );
    Ok(())
}
