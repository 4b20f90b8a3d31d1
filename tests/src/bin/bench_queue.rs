//! Database cost of the queue and of stored rows (figures for the README; not a test).
//!
//! 1. 10,000 due checks, claimed in batches of 100 and completed in batches of 500 through
//!    the real API: checks/s and database CPU µs per check (backend CPU from /proc).
//! 2. The whole cycle of a check — schedule, claim, complete — with the queue of 0.3.0 (its
//!    shipped install script, in a database of its own: the scheduler's enqueue_due_checks,
//!    then its probe API) beside this release's (claim and complete in place), in one run.
//! 3. The same two queues in a steady state: 30,000 monitors every 10 s (3,000 checks/s),
//!    a scheduler connection ticking every 200 ms, a claimer every 100 ms and a writer every
//!    500 ms, each its own backend, alternated; database CPU of those backends per completed
//!    check over 20 s.
//! 4. Bytes on disk per webmon.metrics row after 1,000,000 rows (heap + indexes).
//!
//! Sections 2 and 3 work in databases the scheduler worker does not serve, so that no tick of
//! its own takes work from the measured backends; the bench drives each queue's scheduler
//! steps itself. Run: `cargo run --release -p webmon-tests --bin bench_queue`.

use anyhow::{Context, Result};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_postgres::{Client, Statement};
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

    let skip_first = std::env::var("WEBMON_BENCH_QUEUE_ONLY").is_ok();
    println!(
        "## queue: 10,000 due checks, claim 100 at a time, complete 500 at a time ({rounds} rounds)"
    );
    let mut rates = Vec::new();
    let mut cpu_us = Vec::new();
    for _ in 0..if skip_first { 0 } else { rounds } {
        let (rate, us) = claim_complete_round(&db, 10_000).await?;
        rates.push(rate);
        cpu_us.push(us);
    }
    if !skip_first {
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
    }

    let old = Queue::V030.database(&cluster, &db).await?;
    let new = Queue::V040.database(&cluster, &db).await?;

    println!("\n## the whole cycle of a check, database CPU µs per check (median of {rounds}, 10,000 checks each)");
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        before.push(cycle(&old, Queue::V030, 10_000).await?);
        after.push(cycle(&new, Queue::V040, 10_000).await?);
    }
    println!(
        "0.3.0 (enqueue, claim, complete): {:.1} µs (runs {:?}); 0.4.0 (claim, complete in place): {:.1} µs (runs {:?}); 0.4.0/0.3.0 = {:.2}",
        median(&before),
        rounded(&before),
        median(&after),
        rounded(&after),
        median(&after) / median(&before)
    );
    println!(
        "(one backend, no concurrency, no autovacuum inside the round: a lower bound for both)"
    );

    println!("\n## steady state at 3,000 checks/s (30,000 monitors @ 10 s), database CPU µs per check over 20 s");
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        for queue in [Queue::V030, Queue::V040] {
            let (us, checks) = steady_state(&cluster, queue).await?;
            println!("{}: {us:.1} µs per check ({checks} checks)", queue.name());
            match queue {
                Queue::V030 => before.push(us),
                Queue::V040 => after.push(us),
            }
        }
    }
    println!(
        "median 0.3.0 {:.1} µs, 0.4.0 {:.1} µs: 0.4.0/0.3.0 = {:.2}",
        median(&before),
        median(&after),
        median(&after) / median(&before)
    );

    if !skip_first {
        println!("\n## bytes per webmon.metrics row after 1,000,000 rows");
        bytes_per_row(&db).await?;
    }
    Ok(())
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn rounded(values: &[f64]) -> Vec<i64> {
    values.iter().map(|v| v.round() as i64).collect()
}

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

/// Which release's queue a database holds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Queue {
    /// 0.3.0: the scheduler queues a job per check (monitor updated, job inserted), the
    /// claim leases it, the completion deletes it.
    V030,
    /// This release: one row per monitor and region, leased and completed in place.
    V040,
}

impl Queue {
    fn name(self) -> &'static str {
        match self {
            Queue::V030 => "0.3.0",
            Queue::V040 => "0.4.0",
        }
    }

    fn database_name(self) -> &'static str {
        match self {
            Queue::V030 => "queue_0_3_0",
            Queue::V040 => "queue_0_4_0",
        }
    }

    /// Makes this queue's database (0.3.0 from its shipped install script) and connects.
    async fn database(self, cluster: &Cluster, db: &Client) -> Result<Client> {
        db.batch_execute(&format!("CREATE DATABASE {}", self.database_name()))
            .await?;
        let client = cluster.connect(self.database_name()).await?;
        let version = match self {
            Queue::V030 => "VERSION '0.3.0'",
            Queue::V040 => "",
        };
        client
            .batch_execute(&format!(
                "CREATE EXTENSION pg_webmon {version}; SELECT webmon.run_maintenance(); SELECT webmon.register_probe('bench')"
            ))
            .await?;
        Ok(client)
    }

    /// Monitors every `interval`, their slots spread over `spread` from now (0: all due).
    async fn fill(self, db: &Client, n: i64, interval: &str, spread: &str) -> Result<()> {
        db.batch_execute(
            "TRUNCATE webmon.jobs, webmon.monitors RESTART IDENTITY CASCADE; TRUNCATE webmon.metrics, webmon.errors",
        )
        .await?;
        if let (Queue::V040, Ok(sql)) = (self, std::env::var("WEBMON_BENCH_SQL_BEFORE")) {
            db.batch_execute(&sql).await?;
        }
        db.execute(
            "INSERT INTO webmon.monitors (url, check_interval, next_check_at)
             SELECT 'http://127.0.0.1:9/' || g, $2::text::interval,
                    now() - interval '1 second' + g * $3::text::interval / $1
             FROM generate_series(1, $1::bigint) g",
            &[&n, &interval, &spread],
        )
        .await?;
        if self == Queue::V040 {
            // The same due times as 0.3.0's: each job at its monitor's next_check_at (0.4.0
            // spreads the first checks of a bulk insert, which would leave most not yet due).
            db.batch_execute(
                "UPDATE webmon.jobs j SET scheduled_at = m.next_check_at
                 FROM webmon.monitors m WHERE m.id = j.monitor_id",
            )
            .await?;
        }
        // Experiments: SQL to run on this release's queue once it is filled (WEBMON_BENCH_SQL,
        // e.g. dropping an index to see what it costs; WEBMON_BENCH_SQL_BEFORE undoes it
        // before the next fill).
        if let (Queue::V040, Ok(sql)) = (self, std::env::var("WEBMON_BENCH_SQL")) {
            db.batch_execute(&sql).await?;
        }
        db.batch_execute("VACUUM ANALYZE webmon.monitors, webmon.jobs")
            .await?;
        Ok(())
    }

    fn claim_sql(self, max_jobs: i32) -> String {
        format!("SELECT job_id, scheduled_at FROM webmon.claim_checks('bench', {max_jobs}, '2 minutes', '1 second')")
    }

    fn complete_sql(self) -> &'static str {
        match self {
            Queue::V030 => "SELECT webmon.complete_checks('bench', $1, $3, $4, $5, $6, $7, $8, $9)",
            Queue::V040 => {
                "SELECT webmon.complete_checks('bench', $1, $2, $3, $4, $5, $6, $7, $8, $9)"
            }
        }
    }

    async fn prepare_complete(self, db: &Client) -> Result<Statement> {
        use tokio_postgres::types::Type;
        let types = [
            Type::INT8_ARRAY,
            Type::TIMESTAMPTZ_ARRAY,
            Type::TIMESTAMPTZ_ARRAY,
            Type::FLOAT4_ARRAY,
            Type::INT2_ARRAY,
            Type::BOOL_ARRAY,
            Type::TEXT_ARRAY,
            Type::TEXT_ARRAY,
            Type::TEXT_ARRAY,
        ];
        Ok(db.prepare_typed(self.complete_sql(), &types).await?)
    }

    /// Scheduler tick `n` (every 200 ms), as each release's worker does it: 0.3.0 queues due
    /// checks every tick and sweeps leases and unclaimed checks once a second; 0.4.0 only
    /// wakes probes every tick (they claim due jobs themselves), records unclaimed checks
    /// once a second and sweeps leases every five seconds.
    async fn tick(self, db: &Client, n: u64) -> Result<()> {
        match self {
            Queue::V030 => {
                db.query_one("SELECT webmon.enqueue_due_checks('1 second', 50000)", &[])
                    .await?;
                if n.is_multiple_of(5) {
                    db.query_one("SELECT webmon.requeue_expired_leases(3, '2 minutes')", &[])
                        .await?;
                }
            }
            Queue::V040 => {
                db.query_one(
                    "SELECT webmon.wake_probes(now() - interval '200 ms', '1 second')",
                    &[],
                )
                .await?;
                if n.is_multiple_of(5) {
                    db.query_one("SELECT webmon.record_unclaimed_checks('2 minutes')", &[])
                        .await?;
                }
                if n.is_multiple_of(25) {
                    db.query_one("SELECT webmon.requeue_expired_leases(3)", &[])
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// A claimed check: its job id and slot.
type Claimed = (i64, SystemTime);

/// Completes claimed checks as 200 responses through webmon.complete_checks; returns how
/// many were accepted.
async fn complete_ok(db: &Client, complete: &Statement, claimed: &[Claimed]) -> Result<i64> {
    let n = claimed.len();
    let ids: Vec<i64> = claimed.iter().map(|c| c.0).collect();
    let slots: Vec<SystemTime> = claimed.iter().map(|c| c.1).collect();
    let now = vec![SystemTime::now(); n];
    let times: Vec<Option<f32>> = vec![Some(42.0); n];
    let status: Vec<Option<i16>> = vec![Some(200); n];
    let none_bool: Vec<Option<bool>> = vec![None; n];
    let none_text: Vec<Option<String>> = vec![None; n];
    let row = db
        .query_one(
            complete,
            &[
                &ids, &slots, &now, &times, &status, &none_bool, &none_text, &none_text, &none_text,
            ],
        )
        .await?;
    Ok(i64::from(row.get::<_, i32>(0)))
}

/// Claims (100 at a time) and completes (500 at a time) everything due; returns how many
/// were completed.
async fn drain(db: &Client, queue: Queue) -> Result<i64> {
    let claim = db.prepare(&queue.claim_sql(100)).await?;
    let complete = queue.prepare_complete(db).await?;
    let mut pending: Vec<Claimed> = Vec::new();
    let mut done = 0;
    loop {
        let rows = db.query(&claim, &[]).await?;
        let empty = rows.is_empty();
        pending.extend(rows.iter().map(|r| (r.get(0), r.get(1))));
        if pending.len() >= 500 || (empty && !pending.is_empty()) {
            done += complete_ok(db, &complete, &pending).await?;
            pending.clear();
        }
        if empty {
            return Ok(done);
        }
    }
}

async fn claim_complete_round(db: &Client, jobs: i64) -> Result<(f64, f64)> {
    Queue::V040.fill(db, jobs, "1 hour", "0").await?;
    db.batch_execute("SELECT webmon.register_probe('bench')")
        .await?;
    let pid = backend_pid(db).await?;
    let cpu_before = backend_cpu_seconds(pid)?;
    let started = Instant::now();
    let done = drain(db, Queue::V040).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = backend_cpu_seconds(pid)? - cpu_before;
    // A few more than `jobs`: grids that start "now" are spread over the hour, and the
    // earliest come due while the round runs.
    anyhow::ensure!(done >= jobs, "completed {done} of {jobs}");
    Ok((done as f64 / seconds, cpu * 1e6 / done as f64))
}

/// `n` monitors due at once, then one scheduler tick and everything claimed and completed,
/// on one backend. Returns its CPU µs per check.
async fn cycle(db: &Client, queue: Queue, n: i64) -> Result<f64> {
    queue.fill(db, n, "1 hour", "0").await?;
    let pid = backend_pid(db).await?;
    let before = backend_cpu_seconds(pid)?;
    queue.tick(db, 0).await?;
    let done = drain(db, queue).await?;
    let cpu = backend_cpu_seconds(pid)? - before;
    anyhow::ensure!(done >= n, "{}: completed {done} of {n}", queue.name());
    Ok(cpu * 1e6 / done as f64)
}

/// Runs `queue` for 25 s at 3,000 checks/s (without HTTP); returns database CPU µs per
/// completed check of its backends over the last 20 s, and that many checks.
async fn steady_state(cluster: &Cluster, queue: Queue) -> Result<(f64, i64)> {
    let database = queue.database_name();
    let setup = cluster.connect(database).await?;
    queue
        .fill(&setup, 30_000, "10 seconds", "10 seconds")
        .await?;
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
    let stop = Arc::new(AtomicBool::new(false));
    let every = |ms| {
        let mut tick = tokio::time::interval(Duration::from_millis(ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    };

    let scheduling = {
        let stop = stop.clone();
        let mut tick = every(200);
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Relaxed) {
                tick.tick().await;
                queue.tick(&scheduler, n).await?;
                n += 1;
            }
            Ok::<(), anyhow::Error>(())
        })
    };
    let claiming = {
        let stop = stop.clone();
        let mut tick = every(100);
        tokio::spawn(async move {
            let statement = claimer.prepare(&queue.claim_sql(5000)).await?;
            while !stop.load(Relaxed) {
                tick.tick().await;
                for row in claimer.query(&statement, &[]).await? {
                    let _ = sender.send((row.get(0), row.get(1)));
                }
            }
            Ok::<(), anyhow::Error>(())
        })
    };
    let completed = Arc::new(AtomicI64::new(0));
    let writing = {
        let stop = stop.clone();
        let completed = completed.clone();
        let mut tick = every(500);
        tokio::spawn(async move {
            let statement = queue.prepare_complete(&writer).await?;
            while !stop.load(Relaxed) {
                tick.tick().await;
                let mut claimed = Vec::new();
                while let Ok(one) = receiver.try_recv() {
                    claimed.push(one);
                }
                if !claimed.is_empty() {
                    let done = complete_ok(&writer, &statement, &claimed).await?;
                    completed.fetch_add(done, Relaxed);
                }
            }
            Ok::<(), anyhow::Error>(())
        })
    };

    tokio::time::sleep(Duration::from_secs(5)).await;
    // A loop that stopped early (an error) ends the measurement with its error.
    let mut tasks = vec![scheduling, claiming, writing];
    for task in &mut tasks {
        if task.is_finished() {
            task.await??;
            anyhow::bail!("{}: a loop stopped early", queue.name());
        }
    }
    let (cpu_before, done_before) = (cpu()?, completed.load(Relaxed));
    tokio::time::sleep(Duration::from_secs(20)).await;
    let measured = cpu();
    let done_after = completed.load(Relaxed);
    stop.store(true, Relaxed);
    for task in tasks {
        task.await??;
    }
    let cpu_after = measured?;
    let checks = done_after - done_before;
    anyhow::ensure!(checks > 0, "{}: no check completed", queue.name());
    Ok(((cpu_after - cpu_before) * 1e6 / checks as f64, checks))
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
