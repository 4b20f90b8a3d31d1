//! The scheduler background worker: every tick it queues due checks and, once a second,
//! requeues expired leases, records checks nobody claimed and reports monitors that cannot
//! run. It queues only while the database holds this library's version of the schema and
//! its default partitions exist (the maintenance worker, `maintenance.rs`, makes them first),
//! so every result has a place. An error in a tick is logged as a WARNING and the next tick
//! goes on.

use crate::bgw::{self, Installed};
use crate::gucs;
use crate::transactions::{guarded_transaction, set_lock_timeout};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use std::time::{Duration, Instant};

const NAME: &str = "pg_webmon scheduler";

pub fn register() {
    bgw::register(NAME, "pg_webmon_scheduler_main");
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_webmon_scheduler_main(_arg: pg_sys::Datum) {
    let database = bgw::start(NAME);
    let mut last_requeue: Option<Instant> = None;
    let mut last_state: Option<Installed> = None;
    while BackgroundWorker::wait_latch(Some(Duration::from_millis(gucs::scheduler_interval_ms()))) {
        bgw::reload_on_sighup();
        let state = match guarded_transaction(bgw::installed) {
            Ok(state) => state,
            Err(message) => {
                warning!("{NAME}: cannot read the installed version: {message}");
                continue;
            }
        };
        if last_state.as_ref() != Some(&state) {
            bgw::report_state(NAME, &state, &database);
            last_state = Some(state.clone());
        }
        if state != (Installed::Current { partitioned: true }) {
            continue;
        }
        bgw::report_activity("pg_webmon scheduler: queueing due checks");
        // Leases last seconds: looking for expired ones once a second is enough. Its own
        // transaction (it writes error rows), so a lock on webmon.errors never stops queueing.
        if last_requeue.is_none_or(|at| at.elapsed() >= REQUEUE_PERIOD) {
            last_requeue = Some(Instant::now());
            if let Err(message) = guarded_transaction(|| requeue().map_err(|e| e.to_string())) {
                warning!("{NAME}: requeue failed, retrying in a second: {message}");
            }
        }
        if let Err(message) = guarded_transaction(|| enqueue().map_err(|e| e.to_string())) {
            warning!("{NAME}: tick failed, retrying next tick: {message}");
        }
        // A background worker must flush its table statistics itself (a backend does it when
        // idle): without this, autovacuum never sees the dead rows of monitors and jobs that
        // the scheduler leaves, and never vacuums them. Rate-limited inside (once a second).
        unsafe { pg_sys::pgstat_report_stat(false) };
        bgw::report_activity("pg_webmon scheduler: idle");
    }
    log!("{NAME} stopped");
}

/// How long the queue statements wait for a table lock before the tick gives up.
const TICK_LOCK_TIMEOUT: &str = "1s";
const REQUEUE_PERIOD: Duration = Duration::from_secs(1);

/// Leases that expired, checks nobody claimed, monitors that cannot run: once a second.
fn requeue() -> Result<(), pgrx::spi::SpiError> {
    set_lock_timeout(TICK_LOCK_TIMEOUT)?;
    Spi::run_with_args(
        "SELECT webmon.requeue_expired_leases($1, make_interval(secs => $2))",
        &[
            gucs::max_attempts().into(),
            f64::from(gucs::unclaimed_timeout_s()).into(),
        ],
    )?;
    Spi::run("SELECT webmon.report_unrunnable_monitors()")
}

/// The due checks, every tick.
fn enqueue() -> Result<(), pgrx::spi::SpiError> {
    set_lock_timeout(TICK_LOCK_TIMEOUT)?;
    Spi::run_with_args(
        "SELECT webmon.enqueue_due_checks(make_interval(secs => $1 / 1000.0), $2)",
        &[
            f64::from(gucs::lookahead_ms()).into(),
            gucs::max_jobs_per_tick().into(),
        ],
    )
}
