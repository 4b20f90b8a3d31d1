//! The probe pipeline, top to bottom: claimer → check tasks → bounded channel → writers,
//! plus the summary log and graceful shutdown (stop claiming, let checks finish within the
//! grace period, release what did not run, flush, exit).

use crate::alerts::Deliverer;
use crate::claim::Claimer;
use crate::config::{DatabaseArgs, RunArgs};
use crate::db;
use crate::probe::Prober;
use crate::sink::Writer;
use crate::stats::Stats;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long writers may keep retrying a down database after the checks are done.
const FLUSH_DEADLINE: Duration = Duration::from_secs(30);
/// How long releasing unstarted checks may take at shutdown.
const RELEASE_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Database(#[from] db::DbError),
    #[error(transparent)]
    Client(#[from] crate::probe::ClientError),
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
}

pub async fn run(database: &DatabaseArgs, args: &RunArgs) -> Result<(), RunError> {
    let config = db::config(database)?;
    let probe = args.probe_name();
    let policy = args.network_policy();
    let networks = policy.describe();
    let prober = Arc::new(Prober::new(
        args.default_timeout(),
        args.body_cap_bytes as usize,
        policy.clone(),
    )?);
    let stats = Arc::new(Stats::default());
    let max_in_flight = args.max_in_flight as usize;
    let capacity = Arc::new(Semaphore::new(max_in_flight));
    let (results, receiver) =
        mpsc::channel((args.batch_size as usize * args.writers as usize).max(64));
    let receiver = Arc::new(tokio::sync::Mutex::new(receiver));

    let stop = CancellationToken::new();
    let abandon = CancellationToken::new();
    let give_up = CancellationToken::new();
    let checks = TaskTracker::new();
    let unfinished = Arc::new(Mutex::new(Vec::new()));
    tracing::info!(probe = %probe, region = ?args.region, max_in_flight, writers = args.writers, batch_size = args.batch_size, %networks, "webmon-worker starting");

    let writers: Vec<_> = (0..args.writers as usize)
        .map(|id| {
            let writer = Writer {
                id,
                config: config.clone(),
                probe: probe.clone(),
                results: receiver.clone(),
                batch_size: args.batch_size as usize,
                flush_interval: args.flush_interval(),
                stats: stats.clone(),
                give_up: give_up.clone(),
            };
            tokio::spawn(writer.run())
        })
        .collect();

    let claimer = Claimer {
        config: config.clone(),
        args: args.clone(),
        probe: probe.clone(),
        prober,
        capacity: capacity.clone(),
        results,
        stats: stats.clone(),
        stop: stop.clone(),
        abandon: abandon.clone(),
        tracker: checks.clone(),
        unfinished: unfinished.clone(),
    };
    let claimer = tokio::spawn(claimer.run());
    let deliverer = args.notifications.then(|| {
        tokio::spawn(
            Deliverer {
                config: config.clone(),
                probe: probe.clone(),
                policy: Arc::new(policy),
                timeout: Duration::from_millis(args.notification_timeout_ms),
                stop: stop.clone(),
            }
            .run(),
        )
    });
    let summary = spawn_summary(
        stats.clone(),
        capacity.clone(),
        max_in_flight,
        args.summary_seconds,
        stop.clone(),
    );

    wait_for_signal().await?;
    tracing::info!("shutting down: no new claims; waiting for checks in flight");
    stop.cancel();
    let _ = claimer.await;
    checks.close();
    let grace = Duration::from_secs(args.shutdown_grace_seconds);
    // Alert deliveries in flight end (and are reported) within the same grace period as the
    // checks; what is still running then is left to its lease and sent again by a probe.
    let deliveries = async {
        if let Some(mut deliverer) = deliverer {
            if tokio::time::timeout(grace, &mut deliverer).await.is_err() {
                deliverer.abort();
                tracing::warn!("alert deliveries still running after the grace period; their leases will run out and they are sent again");
            }
        }
    };
    let (_, checks_done) = tokio::join!(deliveries, tokio::time::timeout(grace, checks.wait()));
    if checks_done.is_err() {
        tracing::warn!(
            grace_seconds = args.shutdown_grace_seconds,
            "checks still running after the grace period; abandoning them"
        );
        abandon.cancel();
        checks.wait().await;
    }

    let to_release = std::mem::take(&mut *unfinished.lock().unwrap_or_else(|p| p.into_inner()));
    release(&config, &probe, &to_release).await;

    // Every sender is gone now (claimer and check tasks ended): writers drain and stop.
    let deadline = tokio::time::sleep(FLUSH_DEADLINE);
    tokio::pin!(deadline);
    let all_writers = futures_util::future::join_all(writers);
    tokio::select! {
        _ = all_writers => {}
        _ = &mut deadline => {
            tracing::error!("database unreachable at shutdown; giving up on unwritten results");
            give_up.cancel();
        }
    }
    summary.abort();
    let last = stats.take_window();
    tracing::info!(
        written = last.written,
        released = to_release.len(),
        "webmon-worker stopped"
    );
    Ok(())
}

/// Hands back jobs that were claimed but not run, so another probe can take them at once.
async fn release(config: &db::DbConfig, probe: &str, job_ids: &[i64]) {
    if job_ids.is_empty() {
        return;
    }
    // Best effort, bounded: without the database the jobs come back when their lease expires.
    let released = tokio::time::timeout(RELEASE_DEADLINE, async {
        let client =
            db::connect_with_backoff(config, None, &CancellationToken::new(), "release").await?;
        let row = client
            .query_one("SELECT webmon.release_checks($1, $2)", &[&probe, &job_ids])
            .await?;
        Ok::<i32, db::DbError>(row.try_get(0)?)
    })
    .await
    .unwrap_or(Err(db::DbError::TimedOut));
    match released {
        Ok(count) => tracing::info!(released = count, "released unstarted checks"),
        Err(e) => {
            tracing::warn!(error = %e, jobs = job_ids.len(), "could not release unstarted checks; they return to the queue when their lease expires")
        }
    }
}

fn spawn_summary(
    stats: Arc<Stats>,
    capacity: Arc<Semaphore>,
    max_in_flight: usize,
    seconds: u64,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if seconds == 0 {
            return;
        }
        let mut window_start = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(seconds)) => {}
            }
            let window = stats.take_window();
            let in_flight = max_in_flight - capacity.available_permits();
            tracing::info!(
                "{}",
                window.log_line(window_start.elapsed().as_secs_f64(), in_flight)
            );
            window_start = Instant::now();
        }
    })
}

async fn wait_for_signal() -> Result<(), RunError> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(RunError::Signals)?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
    }
    Ok(())
}
