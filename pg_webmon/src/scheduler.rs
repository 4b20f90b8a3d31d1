//! The scheduler background worker: every tick it queues due checks, requeues expired
//! leases and, every `pg_webmon.maintenance_interval`, maintains partitions. An error in
//! a tick is logged as a WARNING and the next tick goes on.

use crate::gucs;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;
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
    let mut last_requeue: Option<Instant> = None;
    let mut waiting_logged = false;
    while BackgroundWorker::wait_latch(Some(Duration::from_millis(gucs::scheduler_interval_ms()))) {
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        report_activity("pg_webmon scheduler: queueing due checks");
        // Leases last seconds: looking for expired ones once a second is enough.
        let requeue = last_requeue.is_none_or(|at| at.elapsed() >= REQUEUE_PERIOD);
        if requeue {
            last_requeue = Some(Instant::now());
        }
        match guarded_transaction(|| queue_checks(requeue)) {
            Ok(false) => {
                if !waiting_logged {
                    log!(
                        "pg_webmon scheduler: extension not created in \"{database}\" yet; waiting"
                    );
                    waiting_logged = true;
                }
            }
            Ok(true) => {
                waiting_logged = false;
                let due = last_maintenance.is_none_or(|at| {
                    at.elapsed() >= Duration::from_secs(gucs::maintenance_interval_s())
                });
                if due {
                    // Its own transaction: a failing maintenance never holds back the queue.
                    report_activity("pg_webmon scheduler: partition maintenance");
                    if let Err(message) =
                        guarded_transaction(|| Spi::run("SELECT webmon.run_maintenance()"))
                    {
                        warning!("pg_webmon scheduler: maintenance tick failed, retrying in pg_webmon.maintenance_interval: {message}");
                    }
                    last_maintenance = Some(Instant::now());
                }
            }
            Err(message) => {
                warning!("pg_webmon scheduler: tick failed, retrying next tick: {message}")
            }
        }
        // A background worker must flush its table statistics itself (a backend does it when
        // idle): without this, autovacuum never sees the dead rows of monitors and jobs that
        // the scheduler leaves, and never vacuums them. Rate-limited inside (once a second).
        unsafe { pg_sys::pgstat_report_stat(false) };
        report_activity("pg_webmon scheduler: idle");
    }
    log!("pg_webmon scheduler stopped");
}

const REQUEUE_PERIOD: Duration = Duration::from_secs(1);

/// One tick of queue work; `false` when the extension is not created in this database.
fn queue_checks(requeue_expired: bool) -> Result<bool, pgrx::spi::SpiError> {
    let installed = Spi::get_one::<bool>(
        "SELECT to_regprocedure('webmon.enqueue_due_checks(interval,integer)') IS NOT NULL",
    )?
    .unwrap_or(false);
    if !installed {
        return Ok(false);
    }
    if requeue_expired {
        Spi::run_with_args(
            "SELECT webmon.requeue_expired_leases($1)",
            &[gucs::max_attempts().into()],
        )?;
    }
    Spi::run_with_args(
        "SELECT webmon.enqueue_due_checks(make_interval(secs => $1 / 1000.0), $2)",
        &[
            f64::from(gucs::lookahead_ms()).into(),
            gucs::max_jobs_per_tick().into(),
        ],
    )?;
    Ok(true)
}

/// Runs `body` in its own transaction. A Postgres ERROR inside it aborts the transaction
/// and comes back as `Err(message)` instead of ending the worker.
fn guarded_transaction<R>(
    body: impl FnOnce() -> Result<R, pgrx::spi::SpiError> + std::panic::UnwindSafe,
) -> Result<R, String> {
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let outcome = PgTryBuilder::new(|| body().map_err(|e| e.to_string()))
        .catch_others(|caught| Err(describe(&caught)))
        .execute();
    unsafe {
        match outcome {
            Ok(_) => {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommitTransactionCommand();
            }
            Err(_) => pg_sys::AbortCurrentTransaction(),
        }
    }
    outcome
}

fn describe(caught: &pg_sys::panic::CaughtError) -> String {
    match caught {
        pg_sys::panic::CaughtError::PostgresError(report)
        | pg_sys::panic::CaughtError::ErrorReport(report)
        | pg_sys::panic::CaughtError::RustPanic {
            ereport: report, ..
        } => report.message().to_string(),
    }
}

fn report_activity(what: &str) {
    if let Ok(text) = CString::new(what) {
        unsafe {
            pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, text.as_ptr())
        };
    }
}
