//! Running a piece of work so that a PostgreSQL ERROR inside it is caught and reported
//! instead of ending the caller: its own transaction (the scheduler's ticks) or a
//! subtransaction (one maintenance step, so that a failed drop never undoes the creates).

use pgrx::pg_sys;
use pgrx::prelude::*;

/// Runs `body` in its own transaction. A Postgres ERROR inside it aborts the transaction
/// and comes back as `Err(message)` instead of ending the worker.
pub fn guarded_transaction<R>(
    body: impl FnOnce() -> Result<R, String> + std::panic::UnwindSafe,
) -> Result<R, String> {
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let outcome = PgTryBuilder::new(body)
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

/// Runs `body` in a subtransaction of the current transaction: on an ERROR (or `Err`) only
/// its work is rolled back and the message comes back; the caller's transaction goes on.
pub fn in_subtransaction<R>(
    body: impl FnOnce() -> Result<R, String> + std::panic::UnwindSafe,
) -> Result<R, String> {
    // The same steps as PL/Python's subtransactions: keep the caller's memory context and
    // resource owner, and restore both whichever way the subtransaction ends. The release
    // stays inside the try block, because committing a subtransaction can fail too.
    let (context, owner) = unsafe { (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner) };
    let restore = move || unsafe {
        pg_sys::CurrentMemoryContext = context;
        pg_sys::CurrentResourceOwner = owner;
    };
    unsafe {
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::CurrentMemoryContext = context;
    }
    PgTryBuilder::new(move || {
        let outcome = body();
        unsafe {
            if outcome.is_ok() {
                pg_sys::ReleaseCurrentSubTransaction();
            } else {
                pg_sys::RollbackAndReleaseCurrentSubTransaction();
            }
        }
        restore();
        outcome
    })
    .catch_others(move |caught| {
        unsafe {
            pg_sys::CurrentMemoryContext = context;
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        restore();
        Err(describe(&caught))
    })
    .execute()
}

pub fn describe(caught: &pg_sys::panic::CaughtError) -> String {
    match caught {
        pg_sys::panic::CaughtError::PostgresError(report)
        | pg_sys::panic::CaughtError::ErrorReport(report)
        | pg_sys::panic::CaughtError::RustPanic {
            ereport: report, ..
        } => report.message().to_string(),
    }
}

/// `SET LOCAL lock_timeout` to `$1`: how long statements of the current transaction (or
/// subtransaction) wait for a lock before they give up.
pub const SET_LOCK_TIMEOUT: &str = "SELECT set_config('lock_timeout', $1, true)";

/// Runs `SET_LOCK_TIMEOUT` with `value`.
pub fn set_lock_timeout(value: &str) -> Result<(), pgrx::spi::SpiError> {
    Spi::run_with_args(SET_LOCK_TIMEOUT, &[value.into()])
}
