//! Vacuuming the check queue. A claim moves its job row to the next slot and leaves a dead
//! entry at the head of `jobs_due_idx`, which is where every claim, the unclaimed-check
//! sweep and the probes' wake-up start reading. Autovacuum visits a table at most once an
//! `autovacuum_naptime` (a minute by default), by when 3,000 checks a second have left
//! 180,000 such entries for each claim to step over, and it starts a process for each visit.
//! So the maintenance worker vacuums `webmon.jobs` itself, in its own long-lived process,
//! every `pg_webmon.queue_vacuum_interval` when enough of it is dead.

use crate::transactions::describe;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// The command, run as this worker's top-level statement. Without truncation: a queue
/// reuses its space, and truncating takes a lock every claim would wait for. Without
/// parallel workers: starting processes for a small table is what this avoids.
const VACUUM: &std::ffi::CStr = c"VACUUM (SKIP_LOCKED, INDEX_CLEANUP ON, TRUNCATE false, PARALLEL 0, PROCESS_TOAST false) webmon.jobs";

/// Dead and live rows of webmon.jobs from the statistics (in a transaction of the caller's).
pub fn queue_rows() -> Result<(i64, i64), pgrx::spi::SpiError> {
    let (dead, live) = Spi::get_two::<i64, i64>(
        "SELECT pg_catalog.pg_stat_get_dead_tuples(c.oid), pg_catalog.pg_stat_get_live_tuples(c.oid)
         FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass('webmon.jobs')",
    )?;
    Ok((dead.unwrap_or(0), live.unwrap_or(0)))
}

/// `VACUUM webmon.jobs`, as a session's top-level command would run it: VACUUM commits the
/// transaction it starts in and runs in transactions of its own, so it cannot run through
/// SPI. Call it outside any transaction. An ERROR inside comes back as `Err`.
pub fn vacuum_queue() -> Result<(), String> {
    // The statement's parse tree must outlive the transaction VACUUM commits at its start.
    let memory = unsafe {
        pg_sys::AllocSetContextCreateInternal(
            pg_sys::TopMemoryContext,
            c"pg_webmon queue vacuum".as_ptr(),
            0,
            8 * 1024,
            8 * 1024 * 1024,
        )
    };
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
    }
    // VACUUM keeps its own memory under PortalContext (so that an error frees it too); a
    // background worker has no portal, so lend it this context for the command.
    let portal = unsafe { pg_sys::PortalContext };
    let outcome = PgTryBuilder::new(move || unsafe {
        pg_sys::PortalContext = memory;
        pg_sys::MemoryContextSwitchTo(memory);
        let parsed = pg_sys::raw_parser(VACUUM.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT);
        let raw = pg_sys::list_nth(parsed, 0).cast::<pg_sys::RawStmt>();
        let statement = (*raw).stmt.cast::<pg_sys::VacuumStmt>();
        let parse_state = pg_sys::make_parsestate(std::ptr::null_mut());
        // Commits the transaction above and leaves a new one started for the caller.
        pg_sys::ExecVacuum(parse_state, statement, true);
        Ok(())
    })
    .catch_others(|caught| Err(describe(&caught)))
    .execute();
    unsafe {
        match outcome {
            Ok(()) => pg_sys::CommitTransactionCommand(),
            Err(_) => pg_sys::AbortCurrentTransaction(),
        }
        pg_sys::PortalContext = portal;
        pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext);
        pg_sys::MemoryContextDelete(memory);
    }
    outcome
}
