//! Database cost of the queue and of stored rows (figures for the README; not a test).
//!
//! 1. 10,000 due jobs, claimed in batches of 100 and completed in batches of 500 through the
//!    real API: checks/s and database CPU µs per check (backend CPU from /proc).
//! 2. Batch encoding of complete_checks: parallel arrays + unnest (what the API uses) vs
//!    COPY into a temp table, at 100 and 1,000 rows, side by side.
//! 3. Bytes on disk per webmon.metrics row after 1,000,000 rows (heap + indexes).
//! 4. The whole cycle of a check — schedule, claim, complete — with today's queue (the
//!    scheduler's enqueue_due_checks, then the probe API) against a prototype of the next
//!    queue (persistent rows per monitor and region, advanced in place by the claim and
//!    marked done in place by the completion; issue 11), side by side in one run. The
//!    prototype lives in a scratch schema here and is not part of the extension.
//! 5. The same two queues in a steady state: 30,000 monitors every 10 s (3,000 checks/s),
//!    a scheduler connection ticking every 200 ms (today only), a claimer every 100 ms and a
//!    writer every 500 ms, each its own backend, in a database the scheduler worker does not
//!    serve; database CPU of those backends per completed check over 20 s.
//!
//! Run: `cargo run --release -p webmon-tests --bin bench_queue` (as root or postgres-capable user).

use anyhow::{Context, Result};
use std::time::{Instant, SystemTime};
use tokio_postgres::Client;
use webmon_tests::cluster::Cluster;

#[tokio::main]
async fn main() -> Result<()> {
    let cluster = Cluster::start(
        "bench-queue",
        &[
            "shared_buffers = '512MB'",
            "pg_webmon.scheduler_interval = '60s'",
        ],
    )
    .await?;
    let db = cluster.client().await?;
    // The scheduler ticks once a minute here: make the partitions now.
    db.batch_execute("SELECT webmon.run_maintenance()").await?;
    let rounds = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);

    println!(
        "## queue: 10,000 due jobs, claim 100 at a time, complete 500 at a time ({rounds} rounds)"
    );
    let mut rates = Vec::new();
    let mut cpu_us = Vec::new();
    for _ in 0..rounds {
        let (rate, us) = claim_complete_round(&db, 10_000).await?;
        rates.push(rate);
        cpu_us.push(us);
    }
    println!(
        "checks/s through claim→complete: median {:.0} (runs {:?})",
        median(&rates),
        rounded(&rates)
    );
    println!(
        "database CPU per check: median {:.1} µs (runs {:?})",
        median(&cpu_us),
        rounded(&cpu_us)
    );

    println!("\n## complete_checks batch encoding, database CPU µs per row (median of {rounds})");
    for batch in [100usize, 1000] {
        let mut arrays = Vec::new();
        let mut copy = Vec::new();
        for _ in 0..rounds {
            arrays.push(encoding_round(&db, batch, Encoding::Arrays).await?);
            copy.push(encoding_round(&db, batch, Encoding::Copy).await?);
        }
        println!(
            "batch {batch:>5}: arrays+unnest {:.1} µs/row, COPY+temp table {:.1} µs/row, COPY/arrays = {:.2}",
            median(&arrays),
            median(&copy),
            median(&copy) / median(&arrays)
        );
    }

    // Sections 4 and 5 work in a database the scheduler worker does not serve, so that no
    // tick of its own takes work from the measured backends.
    let steady_db = "steady";
    db.batch_execute(&format!("CREATE DATABASE {steady_db}"))
        .await?;
    let steady = cluster.connect(steady_db).await?;
    steady
        .batch_execute("CREATE EXTENSION pg_webmon; SELECT webmon.run_maintenance(); SELECT webmon.register_probe('bench')")
        .await?;

    println!("\n## the whole cycle of a check, database CPU µs per check (median of {rounds}, 10,000 checks each)");
    let (mut today, mut prototype) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        today.push(cycle_today(&steady, 10_000).await?);
        prototype.push(cycle_prototype(&steady, 10_000).await?);
    }
    println!(
        "today (enqueue, claim, complete): {:.1} µs (runs {:?}); prototype (claim, complete in place): {:.1} µs (runs {:?}); prototype/today = {:.2}",
        median(&today),
        rounded(&today),
        median(&prototype),
        rounded(&prototype),
        median(&prototype) / median(&today)
    );
    println!(
        "(one backend, no concurrency, no autovacuum inside the round: a lower bound for both)"
    );

    println!("\n## steady state at 3,000 checks/s (30,000 monitors @ 10 s), database CPU µs per check over 20 s");
    for design in [
        Design::Today,
        Design::Prototype,
        Design::Today,
        Design::Prototype,
    ] {
        let (us, checks) = steady_state(&cluster, steady_db, design).await?;
        println!("{design:?}: {us:.1} µs per check ({checks} checks)");
    }

    println!("\n## bytes per webmon.metrics row after 1,000,000 rows");
    bytes_per_row(&db).await?;
    Ok(())
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted[sorted.len() / 2]
}

fn rounded(values: &[f64]) -> Vec<i64> {
    values.iter().map(|v| v.round() as i64).collect()
}

/// CPU seconds of one backend process, from /proc/<pid>/schedstat (nanoseconds on CPU;
/// /proc/<pid>/stat counts in 10 ms ticks, too coarse for per-call figures).
fn backend_cpu_seconds(pid: i32) -> Result<f64> {
    let schedstat = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))?;
    let nanos: f64 = schedstat
        .split_whitespace()
        .next()
        .context("schedstat")?
        .parse()?;
    Ok(nanos / 1e9)
}

async fn backend_pid(db: &Client) -> Result<i32> {
    Ok(db.query_one("SELECT pg_backend_pid()", &[]).await?.get(0))
}

async fn reset_queue(db: &Client, jobs: i64) -> Result<()> {
    db.batch_execute("TRUNCATE webmon.jobs, webmon.monitors RESTART IDENTITY CASCADE; TRUNCATE webmon.metrics, webmon.errors").await?;
    db.execute(
        "WITH m AS (INSERT INTO webmon.monitors (url, enabled) SELECT 'http://127.0.0.1:9/' || g, false FROM generate_series(1, $1::bigint) g RETURNING id)
         INSERT INTO webmon.jobs (monitor_id, scheduled_at) SELECT id, now() - interval '1 second' FROM m",
        &[&jobs],
    )
    .await?;
    db.batch_execute("VACUUM ANALYZE webmon.jobs").await?;
    db.batch_execute("SELECT webmon.register_probe('bench')")
        .await?;
    Ok(())
}

async fn claim_complete_round(db: &Client, jobs: i64) -> Result<(f64, f64)> {
    reset_queue(db, jobs).await?;
    let claim = db
        .prepare("SELECT job_id FROM webmon.claim_checks('bench', 100, '5 minutes', '1 second')")
        .await?;
    let complete = db
        .prepare("SELECT webmon.complete_checks('bench', $1, $2, $3, $4, $5, $6, $7, $8)")
        .await?;
    let pid = backend_pid(db).await?;
    let cpu_before = backend_cpu_seconds(pid)?;
    let started = Instant::now();
    let mut pending: Vec<i64> = Vec::new();
    let mut done = 0i64;
    let mut claim_cpu = 0.0;
    loop {
        let before_claim = backend_cpu_seconds(pid)?;
        let rows = db.query(&claim, &[]).await?;
        claim_cpu += backend_cpu_seconds(pid)? - before_claim;
        let empty = rows.is_empty();
        pending.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
        if pending.len() >= 500 || (empty && !pending.is_empty()) {
            let accepted = complete_ok(db, &complete, &pending).await?;
            done += i64::from(accepted);
            pending.clear();
        }
        if empty {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = backend_cpu_seconds(pid)? - cpu_before;
    anyhow::ensure!(done == jobs, "completed {done} of {jobs}");
    println!(
        "  round: {:.1} µs/check claiming, {:.1} µs/check completing",
        claim_cpu * 1e6 / jobs as f64,
        (cpu - claim_cpu) * 1e6 / jobs as f64
    );
    Ok((jobs as f64 / seconds, cpu * 1e6 / jobs as f64))
}

/// Completes `job_ids` through webmon.complete_checks as 200 responses; returns how many were accepted.
async fn complete_ok(
    db: &Client,
    complete: &tokio_postgres::Statement,
    job_ids: &[i64],
) -> Result<i32> {
    let n = job_ids.len();
    let now = vec![SystemTime::now(); n];
    let times: Vec<Option<f32>> = vec![Some(42.0); n];
    let status: Vec<Option<i16>> = vec![Some(200); n];
    let none_bool: Vec<Option<bool>> = vec![None; n];
    let none_text: Vec<Option<String>> = vec![None; n];
    let ids = job_ids.to_vec();
    let row = db
        .query_one(
            complete,
            &[
                &ids, &now, &times, &status, &none_bool, &none_text, &none_text, &none_text,
            ],
        )
        .await?;
    Ok(row.get(0))
}

#[derive(Clone, Copy)]
enum Encoding {
    Arrays,
    Copy,
}

/// Completes `batch` leased jobs 20 times with one encoding; returns backend CPU µs per row.
async fn encoding_round(db: &Client, batch: usize, encoding: Encoding) -> Result<f64> {
    let total = (batch * 20) as i64;
    reset_queue(db, total).await?;
    db.batch_execute(
        "CREATE TEMP TABLE IF NOT EXISTS batch (job_id bigint, request_timestamp timestamptz, response_time_ms real,
            http_status_code smallint, regex_matched boolean, page_content text, error_kind text, error text)
         ON COMMIT DELETE ROWS",
    )
    .await?;
    let ids: Vec<i64> = db
        .query(
            &format!(
                "SELECT job_id FROM webmon.claim_checks('bench', {total}, '5 minutes', '1 second')"
            ),
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let complete = db
        .prepare("SELECT webmon.complete_checks('bench', $1, $2, $3, $4, $5, $6, $7, $8)")
        .await?;
    // The same statement as complete_checks, reading the batch from the temp table.
    let complete_from_copy = db
        .prepare(
            "WITH done AS (
                 DELETE FROM webmon.jobs j USING batch b WHERE j.id = b.job_id AND j.leased_by = webmon.probe_id('bench')
                 RETURNING j.monitor_id, b.*
             ), metric_rows AS (
                 INSERT INTO webmon.metrics (request_timestamp, monitor_id, response_time_ms, http_status_code, probe_id, regex_matched, page_content)
                 SELECT d.request_timestamp, d.monitor_id, d.response_time_ms, d.http_status_code, 1, d.regex_matched, d.page_content
                 FROM done d WHERE d.error_kind IS NULL
             )
             SELECT count(*) FROM done",
        )
        .await?;
    let pid = backend_pid(db).await?;
    let before = backend_cpu_seconds(pid)?;
    for chunk in ids.chunks(batch) {
        match encoding {
            Encoding::Arrays => {
                complete_ok(db, &complete, chunk).await?;
            }
            Encoding::Copy => {
                use futures_util::SinkExt;
                db.batch_execute("BEGIN").await?;
                let sink = db.copy_in("COPY batch (job_id, request_timestamp, response_time_ms, http_status_code) FROM STDIN").await?;
                let mut text = String::with_capacity(chunk.len() * 48);
                for id in chunk {
                    text.push_str(&format!("{id}\t2026-11-28 00:00:00+00\t42\t200\n"));
                }
                futures_util::pin_mut!(sink);
                sink.send(bytes::Bytes::from(text)).await?;
                sink.finish().await?;
                db.query_one(&complete_from_copy, &[]).await?;
                db.batch_execute("COMMIT").await?;
            }
        }
    }
    let cpu = backend_cpu_seconds(pid)? - before;
    Ok(cpu * 1e6 / total as f64)
}

async fn bytes_per_row(db: &Client) -> Result<()> {
    db.batch_execute("TRUNCATE webmon.metrics, webmon.errors")
        .await?;
    // 10,000 monitors checked every minute: rows arrive in time order, monitors interleaved.
    db.batch_execute(
        "INSERT INTO webmon.metrics (request_timestamp, monitor_id, response_time_ms, http_status_code, probe_id, regex_matched, page_content)
         SELECT date_trunc('day', now()) + (g / 10000) * interval '1 minute' + (g % 10000) * interval '6 ms',
                1 + g % 10000, 20 + random() * 300, 200, 1, NULL, NULL
         FROM generate_series(0, 999999) g",
    )
    .await?;
    db.batch_execute("VACUUM ANALYZE webmon.metrics").await?;
    let rows = db
        .query(
            "SELECT c.relname, count(*) OVER () AS parts, pg_relation_size(c.oid) AS heap, pg_indexes_size(c.oid) AS indexes,
                    (SELECT count(*) FROM webmon.metrics) AS total_rows
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'webmon.metrics'::regclass AND pg_relation_size(c.oid) > 0",
            &[],
        )
        .await?;
    let mut heap = 0i64;
    let mut indexes = 0i64;
    let mut total = 0i64;
    for row in &rows {
        heap += row.get::<_, i64>("heap");
        indexes += row.get::<_, i64>("indexes");
        total = row.get("total_rows");
    }
    println!(
        "{total} rows: heap {:.1} B/row + indexes {:.1} B/row = {:.1} B/row",
        heap as f64 / total as f64,
        indexes as f64 / total as f64,
        (heap + indexes) as f64 / total as f64
    );
    Ok(())
}

/// Today's queue: `n` monitors due, one scheduler tick (`enqueue_due_checks`: monitor
/// updated, job inserted), claims of 100 (job leased) and completions of 500 (job deleted,
/// result inserted). Returns backend CPU µs per check.
async fn cycle_today(db: &Client, n: i64) -> Result<f64> {
    db.batch_execute(
        "TRUNCATE webmon.jobs, webmon.monitors RESTART IDENTITY CASCADE; TRUNCATE webmon.metrics, webmon.errors",
    )
    .await?;
    db.execute(
        "INSERT INTO webmon.monitors (url, check_interval, next_check_at)
         SELECT 'http://127.0.0.1:9/' || g, '1 hour', now() - interval '1 second' FROM generate_series(1, $1::bigint) g",
        &[&n],
    )
    .await?;
    db.batch_execute("VACUUM ANALYZE webmon.monitors, webmon.jobs")
        .await?;
    db.batch_execute("SELECT webmon.register_probe('bench')")
        .await?;
    let claim = db
        .prepare("SELECT job_id FROM webmon.claim_checks('bench', 100, '5 minutes', '1 second')")
        .await?;
    let complete = db
        .prepare("SELECT webmon.complete_checks('bench', $1, $2, $3, $4, $5, $6, $7, $8)")
        .await?;
    let pid = backend_pid(db).await?;
    let before = backend_cpu_seconds(pid)?;
    let enqueued: i32 = db
        .query_one("SELECT webmon.enqueue_due_checks('1 second', 100000)", &[])
        .await?
        .get(0);
    anyhow::ensure!(i64::from(enqueued) == n, "enqueued {enqueued} of {n}");
    let mut pending: Vec<i64> = Vec::new();
    let mut done = 0i64;
    loop {
        let rows = db.query(&claim, &[]).await?;
        let empty = rows.is_empty();
        pending.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
        if pending.len() >= 500 || (empty && !pending.is_empty()) {
            done += i64::from(complete_ok(db, &complete, &pending).await?);
            pending.clear();
        }
        if empty {
            break;
        }
    }
    let cpu = backend_cpu_seconds(pid)? - before;
    anyhow::ensure!(done == n, "completed {done} of {n}");
    Ok(cpu * 1e6 / n as f64)
}

/// The prototype: one row per (monitor, region) that stays. A claim leases the due rows and
/// moves each to its next slot in the same UPDATE (no scheduler enqueue, no job insert);
/// a completion sets `done_slot` (no index on it: a HOT update) and inserts the result in
/// the same statement. Expired leases would be found through `lease_expires_at`'s index
/// from a watermark (not exercised here). Returns backend CPU µs per check.
async fn cycle_prototype(db: &Client, n: i64) -> Result<f64> {
    db.batch_execute(PROTOTYPE_SCHEMA).await?;
    db.batch_execute("TRUNCATE webmon.metrics, webmon.errors")
        .await?;
    db.execute(
        "INSERT INTO proto.schedule (monitor_id, check_interval, next_slot)
         SELECT g, '1 hour', now() - interval '1 second' FROM generate_series(1, $1::bigint) g",
        &[&n],
    )
    .await?;
    db.batch_execute("VACUUM ANALYZE proto.schedule").await?;
    let claim = db.prepare(PROTOTYPE_CLAIM).await?;
    let complete = db.prepare(PROTOTYPE_COMPLETE).await?;
    let pid = backend_pid(db).await?;
    let before = backend_cpu_seconds(pid)?;
    let mut pending: Vec<(i64, String, SystemTime)> = Vec::new();
    let mut done = 0i64;
    loop {
        let rows = db.query(&claim, &[&100i64]).await?;
        let empty = rows.is_empty();
        pending.extend(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))));
        if pending.len() >= 500 || (empty && !pending.is_empty()) {
            done += complete_prototype(db, &complete, &pending).await?;
            pending.clear();
        }
        if empty {
            break;
        }
    }
    let cpu = backend_cpu_seconds(pid)? - before;
    anyhow::ensure!(done == n, "completed {done} of {n}");
    db.batch_execute("DROP SCHEMA proto CASCADE").await?;
    Ok(cpu * 1e6 / n as f64)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Design {
    Today,
    Prototype,
}

const PROTOTYPE_SCHEMA: &str = "DROP SCHEMA IF EXISTS proto CASCADE; CREATE SCHEMA proto;
     CREATE TABLE proto.schedule (
         monitor_id bigint NOT NULL, region text NOT NULL DEFAULT '', check_interval interval NOT NULL,
         next_slot timestamptz NOT NULL, lease_slot timestamptz, leased_by smallint,
         lease_expires_at timestamptz, done_slot timestamptz, attempts smallint NOT NULL DEFAULT 0,
         PRIMARY KEY (monitor_id, region)) WITH (fillfactor = 80);
     CREATE INDEX ON proto.schedule (next_slot);
     CREATE INDEX ON proto.schedule (lease_expires_at);";

const PROTOTYPE_CLAIM: &str = "UPDATE proto.schedule s
     SET lease_slot = s.next_slot, next_slot = s.next_slot + s.check_interval, leased_by = 1,
         lease_expires_at = s.next_slot + interval '2 minutes', attempts = 1
     WHERE (s.monitor_id, s.region) IN (
         SELECT d.monitor_id, d.region FROM proto.schedule d
         WHERE d.next_slot <= now() + interval '1 second'
           AND (d.lease_slot IS NULL OR d.done_slot IS NOT DISTINCT FROM d.lease_slot)
         ORDER BY d.next_slot LIMIT $1 FOR UPDATE SKIP LOCKED)
     RETURNING s.monitor_id, s.region, s.lease_slot";

const PROTOTYPE_COMPLETE: &str = "WITH b AS (
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::real[], $6::smallint[])
             AS b(monitor_id, region, slot, request_timestamp, response_time_ms, http_status_code)
     ), done AS (
         UPDATE proto.schedule s SET done_slot = b.slot, attempts = 0
         FROM b
         WHERE s.monitor_id = b.monitor_id AND s.region = b.region AND s.lease_slot = b.slot
           AND s.leased_by = 1 AND s.done_slot IS DISTINCT FROM b.slot
         RETURNING b.*
     ), metric_rows AS (
         INSERT INTO webmon.metrics (request_timestamp, monitor_id, response_time_ms, http_status_code, probe_id)
         SELECT d.request_timestamp, d.monitor_id, d.response_time_ms, d.http_status_code, 1 FROM done d
     )
     SELECT count(*) FROM done";

/// Completes claimed prototype checks as 200 responses (the same data `complete_ok` sends
/// today's API); returns how many were accepted.
async fn complete_prototype(
    db: &Client,
    complete: &tokio_postgres::Statement,
    claimed: &[(i64, String, SystemTime)],
) -> Result<i64> {
    let monitors: Vec<i64> = claimed.iter().map(|c| c.0).collect();
    let regions: Vec<&str> = claimed.iter().map(|c| c.1.as_str()).collect();
    let slots: Vec<SystemTime> = claimed.iter().map(|c| c.2).collect();
    let now = vec![SystemTime::now(); claimed.len()];
    let times = vec![42.0f32; claimed.len()];
    let status = vec![200i16; claimed.len()];
    Ok(db
        .query_one(
            complete,
            &[&monitors, &regions, &slots, &now, &times, &status],
        )
        .await?
        .get(0))
}

/// Expired leases since the last sweep, found through the lease index from a watermark; the
/// prototype's stand-in for requeue_expired_leases (finds none here: every lease completes).
const PROTOTYPE_SWEEP: &str = "SELECT count(*) FROM proto.schedule
     WHERE lease_expires_at > now() - interval '2 seconds' AND lease_expires_at <= now()
       AND done_slot IS DISTINCT FROM lease_slot";

/// A claimed check on its way to the writer: today's job id, or the prototype's key.
enum Claimed {
    Job(i64),
    Slot(i64, String, SystemTime),
}

/// Runs `design` for 25 s at 3,000 checks/s (without HTTP); returns database CPU µs per
/// completed check of its backends over the last 20 s, and that many checks.
async fn steady_state(cluster: &Cluster, database: &str, design: Design) -> Result<(f64, i64)> {
    let setup = cluster.connect(database).await?;
    setup
        .batch_execute(
            "TRUNCATE webmon.jobs, webmon.monitors RESTART IDENTITY CASCADE; TRUNCATE webmon.metrics, webmon.errors",
        )
        .await?;
    match design {
        Design::Today => {
            setup
                .batch_execute(
                    "INSERT INTO webmon.monitors (url, check_interval, next_check_at)
                     SELECT 'http://127.0.0.1:9/' || g, '10 seconds', now() + g * interval '10 seconds' / 30000
                     FROM generate_series(1, 30000) g",
                )
                .await?;
            setup
                .batch_execute("VACUUM ANALYZE webmon.monitors")
                .await?;
        }
        Design::Prototype => {
            setup.batch_execute(PROTOTYPE_SCHEMA).await?;
            setup
                .batch_execute(
                    "INSERT INTO proto.schedule (monitor_id, check_interval, next_slot)
                     SELECT g, '10 seconds', now() + g * interval '10 seconds' / 30000
                     FROM generate_series(1, 30000) g",
                )
                .await?;
            setup.batch_execute("VACUUM ANALYZE proto.schedule").await?;
        }
    }
    let scheduler = cluster.connect(database).await?;
    let claimer = cluster.connect(database).await?;
    let writer = cluster.connect(database).await?;
    let pids = [
        backend_pid(&scheduler).await?,
        backend_pid(&claimer).await?,
        backend_pid(&writer).await?,
    ];
    let cpu = || -> Result<f64> { pids.iter().map(|&pid| backend_cpu_seconds(pid)).sum() };
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Claimed>();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

    let scheduling = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                match design {
                    Design::Today => {
                        scheduler
                            .query_one("SELECT webmon.enqueue_due_checks('1 second', 50000)", &[])
                            .await?;
                        scheduler
                            .query_one("SELECT webmon.requeue_expired_leases(3, '2 minutes')", &[])
                            .await?;
                    }
                    Design::Prototype => {
                        scheduler.query_one(PROTOTYPE_SWEEP, &[]).await?;
                    }
                }
            }
            Ok::<(), anyhow::Error>(())
        })
    };
    let claiming = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let statement = claimer
                .prepare(match design {
                    Design::Today => "SELECT job_id FROM webmon.claim_checks('bench', 5000, '2 minutes', '1 second')",
                    Design::Prototype => PROTOTYPE_CLAIM,
                })
                .await?;
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                match design {
                    Design::Today => {
                        for row in claimer.query(&statement, &[]).await? {
                            let _ = sender.send(Claimed::Job(row.get(0)));
                        }
                    }
                    Design::Prototype => {
                        for row in claimer.query(&statement, &[&5000i64]).await? {
                            let _ = sender.send(Claimed::Slot(row.get(0), row.get(1), row.get(2)));
                        }
                    }
                }
            }
            Ok::<(), anyhow::Error>(())
        })
    };
    let completed = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let writing = {
        let stop = stop.clone();
        let completed = completed.clone();
        tokio::spawn(async move {
            let statement = writer
                .prepare(match design {
                    Design::Today => {
                        "SELECT webmon.complete_checks('bench', $1, $2, $3, $4, $5, $6, $7, $8)"
                    }
                    Design::Prototype => PROTOTYPE_COMPLETE,
                })
                .await?;
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let mut jobs = Vec::new();
                let mut slots = Vec::new();
                while let Ok(claimed) = receiver.try_recv() {
                    match claimed {
                        Claimed::Job(id) => jobs.push(id),
                        Claimed::Slot(monitor, region, slot) => slots.push((monitor, region, slot)),
                    }
                }
                let done = if !jobs.is_empty() {
                    i64::from(complete_ok(&writer, &statement, &jobs).await?)
                } else if !slots.is_empty() {
                    complete_prototype(&writer, &statement, &slots).await?
                } else {
                    0
                };
                completed.fetch_add(done, std::sync::atomic::Ordering::Relaxed);
            }
            Ok::<(), anyhow::Error>(())
        })
    };

    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    // A loop that stopped early (an error) ends the measurement with its error.
    let mut tasks = vec![scheduling, claiming, writing];
    for task in &mut tasks {
        if task.is_finished() {
            task.await??;
            anyhow::bail!("{design:?}: a loop stopped early");
        }
    }
    let (cpu_before, done_before) = (cpu()?, completed.load(std::sync::atomic::Ordering::Relaxed));
    tokio::time::sleep(std::time::Duration::from_secs(20)).await;
    let measured = cpu();
    let done_after = completed.load(std::sync::atomic::Ordering::Relaxed);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    let cpu_after = measured?;
    if design == Design::Prototype {
        setup.batch_execute("DROP SCHEMA proto CASCADE").await?;
    }
    let checks = done_after - done_before;
    anyhow::ensure!(checks > 0, "{design:?}: no check completed");
    Ok(((cpu_after - cpu_before) * 1e6 / checks as f64, checks))
}
