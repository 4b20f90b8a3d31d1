//! The scheduler background worker: every tick it queues due checks, requeues expired
//! leases, records checks nobody claimed and, every `pg_webmon.maintenance_interval`,
//! maintains partitions. It runs only while the database holds this library's version of
//! the schema. An error in a tick is logged as a WARNING and the next tick goes on.

use crate::transactions::guarded_transaction;
use crate::{gucs, partitions};
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;
use std::collections::VecDeque;
use std::ffi::CString;
use std::time::{Duration, Instant};

pub fn register() {
    BackgroundWorkerBuilder::new("pg_webmon scheduler")
        .set_type("pg_webmon scheduler")
        .set_function("pg_webmon_scheduler_main")
        .set_library("pg_webmon")
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(2)))
        .load();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_webmon_scheduler_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = gucs::database();
    // If the database does not exist this raises FATAL; the postmaster restarts us later.
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    log!("pg_webmon scheduler started in database \"{database}\"");

    let mut last_maintenance: Option<Instant> = None;
    let mut maintenance: VecDeque<partitions::Step> = VecDeque::new();
    let mut last_requeue: Option<Instant> = None;
    let mut last_state: Option<Installed> = None;
    while BackgroundWorker::wait_latch(Some(Duration::from_millis(gucs::scheduler_interval_ms()))) {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let state = match guarded_transaction(installed) {
            Ok(state) => state,
            Err(message) => {
                warning!("pg_webmon scheduler: cannot read the installed version: {message}");
                continue;
            }
        };
        if last_state.as_ref() != Some(&state) {
            report_state(&state, &database);
            last_state = Some(state.clone());
            maintenance.clear();
            last_maintenance = None;
        }
        if state != Installed::Current {
            continue;
        }
        // Maintenance first: right after CREATE EXTENSION it makes the first partitions
        // before any check is queued. Each step is a transaction of its own, and a tick runs
        // steps for at most MAINTENANCE_BUDGET, so neither a drop's lock on a results table
        // nor a long run holds back the queue.
        let maintenance_due = last_maintenance
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(gucs::maintenance_interval_s()));
        if maintenance.is_empty() && maintenance_due {
            report_activity("pg_webmon scheduler: planning partition maintenance");
            match guarded_transaction(|| partitions::plan_steps().map_err(|e| e.to_string())) {
                Ok(steps) => maintenance.extend(steps),
                Err(message) => warning!("pg_webmon scheduler: maintenance failed, retrying in pg_webmon.maintenance_interval: {message}"),
            }
            last_maintenance = Some(Instant::now());
        }
        let started = Instant::now();
        while let Some(step) = maintenance.pop_front() {
            report_activity("pg_webmon scheduler: partition maintenance");
            if let Err(message) =
                guarded_transaction(|| partitions::run_step(&step, STEP_LOCK_TIMEOUT))
            {
                partitions::report_failure(&step, &message);
            }
            if started.elapsed() >= MAINTENANCE_BUDGET {
                break;
            }
        }
        report_activity("pg_webmon scheduler: queueing due checks");
        // Leases last seconds: looking for expired ones once a second is enough. Its own
        // transaction (it writes error rows), so a lock on webmon.errors never stops queueing.
        if last_requeue.is_none_or(|at| at.elapsed() >= REQUEUE_PERIOD) {
            last_requeue = Some(Instant::now());
            if let Err(message) = guarded_transaction(|| requeue().map_err(|e| e.to_string())) {
                warning!("pg_webmon scheduler: requeue failed, retrying in a second: {message}");
            }
        }
        if let Err(message) = guarded_transaction(|| enqueue().map_err(|e| e.to_string())) {
            warning!("pg_webmon scheduler: tick failed, retrying next tick: {message}");
        }
        // A background worker must flush its table statistics itself (a backend does it when
        // idle): without this, autovacuum never sees the dead rows of monitors and jobs that
        // the scheduler leaves, and never vacuums them. Rate-limited inside (once a second).
        unsafe { pg_sys::pgstat_report_stat(false) };
        report_activity("pg_webmon scheduler: idle");
    }
    log!("pg_webmon scheduler stopped");
}

/// Time a tick may spend on maintenance steps (at least one step runs per tick).
const MAINTENANCE_BUDGET: Duration = Duration::from_millis(50);
/// How long a maintenance step waits for a lock before it gives up (retried next run).
const STEP_LOCK_TIMEOUT: &str = "200ms";
/// How long the queue statements wait for a table lock before the tick gives up.
const TICK_LOCK_TIMEOUT: &str = "1s";

/// What the scheduler's database holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Installed {
    /// No `CREATE EXTENSION pg_webmon` yet.
    Missing,
    /// The schema of this library's version: the scheduler runs.
    Current,
    /// Another version's schema (the library was replaced, `ALTER EXTENSION … UPDATE` not run yet).
    Other(String),
}

fn installed() -> Result<Installed, String> {
    let version = Spi::get_one::<String>(
        "SELECT extversion::text FROM pg_catalog.pg_extension WHERE extname = 'pg_webmon'",
    )
    .map_err(|e| e.to_string())?;
    Ok(match version {
        None => Installed::Missing,
        Some(v) if v == env!("CARGO_PKG_VERSION") => Installed::Current,
        Some(v) => Installed::Other(v),
    })
}

fn report_state(state: &Installed, database: &str) {
    match state {
        Installed::Missing => {
            log!("pg_webmon scheduler: extension not created in \"{database}\" yet; waiting")
        }
        Installed::Current => log!("pg_webmon scheduler: scheduling checks in \"{database}\""),
        Installed::Other(version) => warning!(
            "pg_webmon scheduler: no check is scheduled: database \"{database}\" has pg_webmon {version}, the library is {}; run ALTER EXTENSION pg_webmon UPDATE",
            env!("CARGO_PKG_VERSION")
        ),
    }
}

const REQUEUE_PERIOD: Duration = Duration::from_secs(1);

/// Leases that expired, checks nobody claimed, monitors that cannot run: once a second.
fn requeue() -> Result<(), pgrx::spi::SpiError> {
    set_lock_timeout()?;
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
    set_lock_timeout()?;
    Spi::run_with_args(
        "SELECT webmon.enqueue_due_checks(make_interval(secs => $1 / 1000.0), $2)",
        &[
            f64::from(gucs::lookahead_ms()).into(),
            gucs::max_jobs_per_tick().into(),
        ],
    )
}

fn set_lock_timeout() -> Result<(), pgrx::spi::SpiError> {
    Spi::run_with_args(
        "SELECT set_config('lock_timeout', $1, true)",
        &[TICK_LOCK_TIMEOUT.into()],
    )
}

fn report_activity(what: &str) {
    if let Ok(text) = CString::new(what) {
        unsafe {
            pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, text.as_ptr())
        };
    }
}
