//! The maintenance background worker: every `pg_webmon.maintenance_interval` it plans a run
//! (`partitions::plan_steps`) and runs its steps one at a time, each in a transaction of its
//! own with a short lock timeout. It is a worker apart from the scheduler, so a slow step (a
//! large default partition to move or purge) never holds back the queueing of checks; and a
//! drop's strong lock on its results table lasts only for that drop. A step that fails is a
//! WARNING; the next run plans it again. Between steps it vacuums the check queue when due
//! (`vacuum.rs`) and brings the rollups up to date (`webmon.run_rollups()`, `sql/rollups.sql`),
//! an hour of results per transaction: here and not in the scheduler, because rolling up an
//! hour of many monitors takes seconds, which the scheduler's ticks must never wait for.

use crate::bgw::{self, Installed};
use crate::gucs;
use crate::partitions::{self, StepOutcome};
use crate::transactions::{guarded_transaction, set_lock_timeout};
use crate::vacuum;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

const NAME: &str = "pg_webmon maintenance";
/// How long a step waits for a lock before it gives up (planned again at the next run).
const STEP_LOCK_TIMEOUT: &str = "200ms";
/// Pause between two steps of a run, and the idle wake-up.
const BETWEEN_STEPS: Duration = Duration::from_millis(10);
const IDLE: Duration = Duration::from_secs(1);

pub fn register() {
    bgw::register(NAME, "pg_webmon_maintenance_main");
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_webmon_maintenance_main(_arg: pg_sys::Datum) {
    bgw::start(NAME);
    let mut steps: VecDeque<partitions::Step> = VecDeque::new();
    let mut last_run: Option<Instant> = None;
    let mut last_state: Option<Installed> = None;
    let mut last_vacuum: Option<Instant> = None;
    let mut wait = IDLE;
    let mut version = bgw::version_statement();
    while BackgroundWorker::wait_latch(Some(wait)) {
        if bgw::reload_on_sighup() {
            // Settings changed (retention, premake…): plan again with them, now.
            steps.clear();
            last_run = None;
        }
        let state = match guarded_transaction(AssertUnwindSafe(|| bgw::installed(&mut version))) {
            Ok(state) => state,
            Err(message) => {
                warning!("{NAME}: cannot read the installed version: {message}");
                wait = IDLE;
                continue;
            }
        };
        if last_state.as_ref() != Some(&state) {
            // The scheduler reports the states; a new one means a new plan.
            last_state = Some(state.clone());
            steps.clear();
            last_run = None;
        }
        if !matches!(state, Installed::Current { .. }) {
            wait = IDLE;
            continue;
        }
        // Until both default partitions exist no check is handed out: a run whose step to
        // make them failed (a lock held elsewhere) is planned again a second later, not
        // after pg_webmon.maintenance_interval.
        let partitioned = matches!(state, Installed::Current { partitioned: true });
        let due = last_run.is_none_or(|at| {
            at.elapsed() >= Duration::from_secs(gucs::maintenance_interval_s())
                || (!partitioned && at.elapsed() >= IDLE)
        });
        if steps.is_empty() && due {
            bgw::report_activity("pg_webmon maintenance: planning");
            match guarded_transaction(|| partitions::plan_steps().map_err(|e| e.to_string())) {
                Ok(planned) => steps.extend(planned),
                Err(message) => warning!(
                    "{NAME}: maintenance failed, retrying in pg_webmon.maintenance_interval: {message}"
                ),
            }
            last_run = Some(Instant::now());
        }
        if let Some(step) = steps.pop_front() {
            bgw::report_activity("pg_webmon maintenance: running a step");
            match guarded_transaction(|| partitions::run_step(&step, STEP_LOCK_TIMEOUT)) {
                Ok(StepOutcome::Done | StepOutcome::Nothing) => {}
                // A batch of a long purge: the rest next.
                Ok(StepOutcome::More) => steps.push_front(step),
                Ok(StepOutcome::Skipped) => {
                    log!(
                        "{NAME}: another run_maintenance() holds the lock; planning again next run"
                    );
                    steps.clear();
                }
                Err(message) => partitions::report_failure(&step, &message),
            }
        }
        let rolled_up = roll_up();
        if let Some(every) = gucs::queue_vacuum_interval() {
            if last_vacuum.is_none_or(|at| at.elapsed() >= every) {
                last_vacuum = Some(Instant::now());
                vacuum_queue_if_worth_it();
            }
        }
        unsafe { pg_sys::pgstat_report_stat(false) };
        bgw::report_activity("pg_webmon maintenance: idle");
        wait = if steps.is_empty() && !rolled_up {
            IDLE
        } else {
            BETWEEN_STEPS
        };
    }
    log!("{NAME} stopped");
}

/// How long moving the rollups' time for late results waits for writers of results.
const ROLLUP_LOCK_TIMEOUT: &str = "1s";

/// One run of `webmon.run_rollups()` for at most an hour of results, in a transaction of its
/// own. Whether it rolled something up (then more may be waiting); a failure is a WARNING and
/// the next loop tries again.
fn roll_up() -> bool {
    bgw::report_activity("pg_webmon maintenance: rolling up");
    let outcome = guarded_transaction(|| {
        set_lock_timeout(ROLLUP_LOCK_TIMEOUT).map_err(|e| e.to_string())?;
        Spi::get_one::<i32>("SELECT webmon.run_rollups(1)").map_err(|e| e.to_string())
    });
    match outcome {
        Ok(done) => done.unwrap_or(0) > 0,
        Err(message) => {
            warning!("{NAME}: rolling up results failed, retrying in a second: {message}");
            false
        }
    }
}

/// Vacuums webmon.jobs when enough of it is dead; a failure is a WARNING (tried again at
/// the next pg_webmon.queue_vacuum_interval).
fn vacuum_queue_if_worth_it() {
    match guarded_transaction(|| vacuum::queue_rows().map_err(|e| e.to_string())) {
        Ok((dead, live)) if webmon_core::vacuum::worth_it(dead, live) => {
            bgw::report_activity("pg_webmon maintenance: vacuuming webmon.jobs");
            if let Err(message) = vacuum::vacuum_queue() {
                warning!("{NAME}: vacuuming webmon.jobs failed: {message}");
            }
        }
        Ok(_) => {}
        Err(message) => warning!("{NAME}: cannot read webmon.jobs statistics: {message}"),
    }
}
