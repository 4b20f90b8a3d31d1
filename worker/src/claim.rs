//! Claiming: lease as many checks as there is free capacity for, woken by the scheduler's
//! NOTIFY (with a slow poll as a fallback), and start each check at its slot.

use crate::config::RunArgs;
use crate::db::DbConfig;
use crate::db::{self, DbError};
use crate::probe::{CheckResult, DbClock, Job, Prober};
use crate::stats::Stats;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_postgres::{Client, Row};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const CLAIM_SQL: &str = "SELECT job_id, monitor_id, scheduled_at, db_now, url, method, headers, body, timeout_ms, regex, follow_redirects
     FROM webmon.claim_checks($1, $2, make_interval(secs => $3), make_interval(secs => $4))";
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Everything the claimer and its check tasks share.
pub struct Claimer {
    pub config: DbConfig,
    pub args: RunArgs,
    pub probe: String,
    pub prober: Arc<Prober>,
    pub capacity: Arc<Semaphore>,
    pub results: mpsc::Sender<(CheckResult, Instant)>,
    pub stats: Arc<Stats>,
    /// Stop claiming; checks still waiting for their slot are released.
    pub stop: CancellationToken,
    /// Abandon checks in flight (after the shutdown grace period).
    pub abandon: CancellationToken,
    pub tracker: TaskTracker,
    /// Jobs claimed but never finished: handed back with `release_checks` at shutdown.
    pub unfinished: Arc<Mutex<Vec<i64>>>,
}

impl Claimer {
    pub async fn run(self) {
        let wake = Arc::new(Notify::new());
        loop {
            let client = match db::connect_with_backoff(
                &self.config,
                Some(wake.clone()),
                &self.stop,
                "claimer",
            )
            .await
            {
                Ok(client) => client,
                Err(_) => return,
            };
            match self.claim_loop(&client, &wake).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "claimer: database error; reconnecting");
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
        }
    }

    async fn claim_loop(&self, client: &Client, wake: &Notify) -> Result<(), DbError> {
        // A claim need not wait for its commit to reach disk: a claim lost in a crash only
        // means its checks are claimed again, and a result's commit (on the writers'
        // connections, with the server's setting) flushes the claim before it anyway.
        client
            .batch_execute("SET synchronous_commit = off; LISTEN webmon_jobs")
            .await?;
        register(client, &self.probe, self.args.region.as_deref()).await?;
        let claim = client.prepare(CLAIM_SQL).await?;
        let lease = self.args.lease_seconds as f64;
        let lookahead = self.args.lookahead().as_secs_f64();
        let mut last_heartbeat = Instant::now();
        loop {
            if self.stop.is_cancelled() {
                return Ok(());
            }
            if last_heartbeat.elapsed() >= HEARTBEAT {
                register(client, &self.probe, self.args.region.as_deref()).await?;
                last_heartbeat = Instant::now();
            }
            let free = self.capacity.available_permits();
            if free == 0 {
                // Backpressure: every slot is busy (checks running or results waiting to be written).
                tokio::select! {
                    biased;
                    _ = self.stop.cancelled() => return Ok(()),
                    permit = self.capacity.acquire() => drop(permit),
                    _ = tokio::time::sleep(self.args.poll_interval()) => {}
                }
                continue;
            }
            let max_jobs = i32::try_from(free).unwrap_or(i32::MAX);
            let claimed_at = Instant::now();
            let rows = client
                .query(&claim, &[&self.probe, &max_jobs, &lease, &lookahead])
                .await?;
            self.stats.claimed.fetch_add(rows.len() as u64, Relaxed);
            let full = rows.len() >= free;
            for row in rows {
                self.start(row, claimed_at);
            }
            if !full {
                tokio::select! {
                    biased;
                    _ = self.stop.cancelled() => return Ok(()),
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(self.args.poll_interval()) => {}
                }
            }
        }
    }

    fn start(&self, row: Row, claimed_at: Instant) {
        let (job, slot) = match job_from_row(&row, claimed_at) {
            Ok(parsed) => parsed,
            Err(e) => {
                tracing::error!(error = %e, "claimer: unreadable job row; it will be re-leased after its lease expires");
                return;
            }
        };
        let Ok(permit) = self.capacity.clone().try_acquire_owned() else {
            // Cannot happen (only the claimer takes permits), but never run unbounded.
            self.unfinished
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(job.job_id);
            return;
        };
        let prober = self.prober.clone();
        let results = self.results.clone();
        let stats = self.stats.clone();
        let stop = self.stop.clone();
        let abandon = self.abandon.clone();
        let unfinished = self.unfinished.clone();
        self.tracker.spawn(async move {
            let _permit = permit;
            let give_back = |job_id| {
                unfinished
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(job_id)
            };
            tokio::select! {
                biased;
                _ = stop.cancelled() => return give_back(job.job_id),
                _ = tokio::time::sleep_until(slot.into()) => {}
            }
            stats.record_lateness(slot.elapsed());
            // Boxed, so that a check waiting for its slot holds only its job (a few hundred
            // bytes), not the space of a running check's state inline in its task.
            let check = Box::pin(prober.check(&job));
            let result = tokio::select! {
                biased;
                _ = abandon.cancelled() => return give_back(job.job_id),
                result = check => result,
            };
            if matches!(result.outcome, crate::probe::Outcome::NoResponse { .. }) {
                stats.no_response.fetch_add(1, Relaxed);
            }
            stats.done.fetch_add(1, Relaxed);
            if results.send((result, Instant::now())).await.is_err() {
                tracing::error!(
                    job_id = job.job_id,
                    "claimer: writers are gone; result not stored"
                );
            }
        });
    }
}

async fn register(client: &Client, probe: &str, region: Option<&str>) -> Result<(), DbError> {
    client
        .execute(
            "SELECT webmon.register_probe($1, $2, $3)",
            &[&probe, &region, &env!("CARGO_PKG_VERSION")],
        )
        .await?;
    Ok(())
}

/// Builds a job from a claim row and maps its slot onto this process's clock: the database's
/// `now()` at claim time corresponds to `claimed_at`, so clock skew does not matter.
fn job_from_row(row: &Row, claimed_at: Instant) -> Result<(Job, Instant), tokio_postgres::Error> {
    let scheduled_at: SystemTime = row.try_get("scheduled_at")?;
    let db_now: SystemTime = row.try_get("db_now")?;
    let headers: serde_json::Value = row.try_get("headers")?;
    let timeout_ms: Option<i32> = row.try_get("timeout_ms")?;
    let clock = DbClock {
        db_now,
        at: claimed_at,
    };
    let job = Job {
        job_id: row.try_get("job_id")?,
        slot: scheduled_at,
        monitor_id: row.try_get("monitor_id")?,
        url: row.try_get("url")?,
        method: row.try_get("method")?,
        headers: webmon_core::validate::header_pairs(&headers),
        body: row.try_get("body")?,
        timeout: timeout_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .map(Duration::from_millis),
        regex: row.try_get("regex")?,
        follow_redirects: row.try_get("follow_redirects")?,
        clock,
    };
    Ok((job, clock.instant(scheduled_at)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_map_onto_the_local_clock() {
        let now = SystemTime::now();
        let claimed_at = Instant::now();
        let clock = DbClock {
            db_now: now,
            at: claimed_at,
        };
        let ahead = clock.instant(now + Duration::from_millis(700));
        assert_eq!(ahead - claimed_at, Duration::from_millis(700));
        let late = clock.instant(now - Duration::from_millis(30));
        assert_eq!(claimed_at - late, Duration::from_millis(30));
    }
}
