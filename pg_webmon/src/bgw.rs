//! What the two background workers (scheduler and maintenance) share: registering, starting
//! in `pg_webmon.database`, reading which version of the schema that database holds, and
//! showing what they do in `pg_stat_activity`.

use crate::gucs;
use crate::statements::Kept;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;
use std::ffi::CString;
use std::time::Duration;

/// Registers a worker of this library; `name` is its `backend_type`.
pub fn register(name: &str, function: &str) {
    BackgroundWorkerBuilder::new(name)
        .set_type(name)
        .set_function(function)
        .set_library("pg_webmon")
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(2)))
        .load();
}

/// Signal handlers and the connection to `pg_webmon.database`; returns its name. If the
/// database does not exist this raises FATAL, and the postmaster restarts the worker later.
pub fn start(name: &str) -> String {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = gucs::database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    log!("{name} started in database \"{database}\"");
    database
}

/// Reloads the configuration after SIGHUP; `true` when it did.
pub fn reload_on_sighup() -> bool {
    if BackgroundWorker::sighup_received() {
        unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        return true;
    }
    false
}

/// What the worker's database holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// No `CREATE EXTENSION pg_webmon` yet.
    Missing,
    /// The schema of this library's version; `partitioned`: both default partitions exist,
    /// so every result has a place (the maintenance worker makes them first).
    Current { partitioned: bool },
    /// Another version's schema (the library was replaced, `ALTER EXTENSION … UPDATE` not run yet).
    Other(String),
}

/// The statement `installed` runs, kept by each worker.
pub fn version_statement() -> Kept {
    Kept::new(
        "SELECT extversion::text,
                to_regclass('webmon.metrics_default') IS NOT NULL
                    AND to_regclass('webmon.errors_default') IS NOT NULL
         FROM pg_catalog.pg_extension WHERE extname = 'pg_webmon'",
    )
}

/// Reads the installed version with `version_statement()`; call it inside a transaction.
pub fn installed(statement: &mut Kept) -> Result<Installed, String> {
    let row = statement.get_two::<String, bool>(&[]);
    Ok(match row {
        Ok((Some(version), partitioned)) if version == env!("CARGO_PKG_VERSION") => {
            Installed::Current {
                partitioned: partitioned.unwrap_or(false),
            }
        }
        Ok((Some(version), _)) => Installed::Other(version),
        Ok((None, _)) | Err(pgrx::spi::SpiError::InvalidPosition) => Installed::Missing,
        Err(e) => return Err(e.to_string()),
    })
}

/// Logs a change of what the database holds, once.
pub fn report_state(name: &str, state: &Installed, database: &str) {
    match state {
        Installed::Missing => {
            log!("{name}: extension not created in \"{database}\" yet; waiting")
        }
        Installed::Current { partitioned: true } => {
            log!("{name}: working in \"{database}\"")
        }
        Installed::Current { partitioned: false } => {
            log!("{name}: waiting for the first partitions in \"{database}\"")
        }
        Installed::Other(version) => warning!(
            "{name}: no check is scheduled: database \"{database}\" has pg_webmon {version}, the library is {}; run ALTER EXTENSION pg_webmon UPDATE",
            env!("CARGO_PKG_VERSION")
        ),
    }
}

/// Shows `what` in `pg_stat_activity.query`.
pub fn report_activity(what: &str) {
    if let Ok(text) = CString::new(what) {
        unsafe {
            pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, text.as_ptr())
        };
    }
}
