//! The scheduler background worker: every tick it wakes the probes when a slot comes due
//! (probes claim due jobs themselves, see `sql/queue.sql`); once a second it records checks
//! nobody claimed, reports monitors that cannot run, and reviews incidents (reminders, the end
//! of maintenance windows, deliveries to give up: `sql/alerts.sql`); every five seconds it
//! requeues ended leases; every five minutes it adds job rows the monitors' trigger did not
//! make and deletes incidents, notifications and maintenance windows older than
//! `pg_webmon.retention`. It works only while the
//! database holds this library's version of the schema and its default partitions exist (the
//! maintenance worker, `maintenance.rs`, makes them first; `claim_checks` hands out nothing
//! before). An error in a step is logged as a WARNING and the next tick goes on.

use crate::bgw::{self, Installed};
use crate::gucs;
use crate::statements::Kept;
use crate::transactions::{guarded_transaction, in_subtransaction, SET_LOCK_TIMEOUT};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

const NAME: &str = "pg_webmon scheduler";

pub fn register() {
    bgw::register(NAME, "pg_webmon_scheduler_main");
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_webmon_scheduler_main(_arg: pg_sys::Datum) {
    let database = bgw::start(NAME);
    // Every step can be done again after a crash (a wake-up, a sweep that finds the same
    // rows again), so none waits for its commit to reach disk.
    if let Err(message) =
        guarded_transaction(|| Spi::run("SET synchronous_commit = off").map_err(|e| e.to_string()))
    {
        warning!("{NAME}: cannot turn off synchronous_commit for its steps: {message}");
    }
    let mut sweeps = Sweeps::default();
    let mut last_state: Option<Installed> = None;
    let mut statements = Statements::new();
    while BackgroundWorker::wait_latch(Some(Duration::from_millis(gucs::scheduler_interval_ms()))) {
        bgw::reload_on_sighup();
        // One transaction a tick: which schema the database holds and, when it is this
        // library's with its partitions, the wake-up (in a subtransaction: when it fails,
        // the sweeps below still run).
        let tick = guarded_transaction(AssertUnwindSafe(|| {
            let state = bgw::installed(&mut statements.version)?;
            let woken = (state == READY).then(|| {
                let after = sweeps.woken_up_to.clone();
                in_subtransaction(AssertUnwindSafe(|| {
                    statements.wake(after).map_err(|e| e.to_string())
                }))
            });
            Ok((state, woken))
        }));
        let state = match tick {
            Ok((state, woken)) => {
                match woken {
                    Some(Ok(horizon)) => sweeps.woken_up_to = horizon,
                    Some(Err(message)) => {
                        warning!("{NAME}: waking the probes failed, retrying next tick: {message}")
                    }
                    None => {}
                }
                state
            }
            Err(message) => {
                warning!("{NAME}: cannot read the installed version: {message}");
                continue;
            }
        };
        if last_state.as_ref() != Some(&state) {
            bgw::report_state(NAME, &state, &database);
            last_state = Some(state.clone());
            // Another version's queue, or none: every sweep and wake-up starts over.
            sweeps = Sweeps::default();
        }
        if state != READY {
            continue;
        }
        bgw::report_activity("pg_webmon scheduler: sweeping");
        // Each step in its own transaction: one that fails (a lock, a bad row) never stops
        // the others, and the next tick tries again.
        if due(&mut sweeps.synced_at, SYNC_PERIOD) {
            if let Err(message) = statements.in_transaction(Statements::sync) {
                warning!("{NAME}: job sync failed, retrying in five minutes: {message}");
            }
            if let Err(message) = statements.in_transaction(Statements::purge) {
                warning!(
                    "{NAME}: purging old incidents and notifications failed, retrying in five minutes: {message}"
                );
            }
        }
        if due(&mut sweeps.reviewed_at, REVIEW_PERIOD) {
            if let Err(message) = statements.in_transaction(Statements::review) {
                warning!("{NAME}: reviewing incidents failed, retrying in a second: {message}");
            }
        }
        if due(&mut sweeps.unclaimed_at, UNCLAIMED_PERIOD) {
            if let Err(message) = statements.in_transaction(Statements::unclaimed) {
                warning!(
                    "{NAME}: the unclaimed-check sweep failed, retrying in a second: {message}"
                );
            }
        }
        if due(&mut sweeps.leases_at, LEASE_SWEEP_PERIOD) {
            if let Err(message) = statements.in_transaction(Statements::leases) {
                warning!("{NAME}: the lease sweep failed, retrying in a few seconds: {message}");
            }
        }
        // A background worker must flush its table statistics itself (a backend does it when
        // idle): without this, autovacuum never sees the dead rows the queue leaves, and never
        // vacuums them. Rate-limited inside (once a second).
        unsafe { pg_sys::pgstat_report_stat(false) };
        bgw::report_activity("pg_webmon scheduler: idle");
    }
    log!("{NAME} stopped");
}

/// The state in which the scheduler works: this library's schema, with its default partitions.
const READY: Installed = Installed::Current { partitioned: true };
/// How long the queue statements wait for a table lock before the step gives up.
const TICK_LOCK_TIMEOUT: &str = "1s";
/// Checks nobody claimed, and monitors that cannot run: once a second (index-driven).
const UNCLAIMED_PERIOD: Duration = Duration::from_secs(1);
/// Leases last a minute or two: reading every lease once in a few seconds is enough.
const LEASE_SWEEP_PERIOD: Duration = Duration::from_secs(5);
const SYNC_PERIOD: Duration = Duration::from_secs(300);
/// Reminders are due to the second; open incidents are few.
const REVIEW_PERIOD: Duration = Duration::from_secs(1);

/// When the periodic steps last ran.
#[derive(Default)]
struct Sweeps {
    unclaimed_at: Option<Instant>,
    leases_at: Option<Instant>,
    synced_at: Option<Instant>,
    reviewed_at: Option<Instant>,
    /// The last `wake_probes` horizon (database time, as text); None: wake for anything due.
    woken_up_to: Option<String>,
}

/// True (and the time noted) when `period` has passed since `last`, or it never ran.
fn due(last: &mut Option<Instant>, period: Duration) -> bool {
    if last.is_some_and(|at| at.elapsed() < period) {
        return false;
    }
    *last = Some(Instant::now());
    true
}

/// The statements of the steps, each parsed and planned once.
struct Statements {
    version: Kept,
    lock_timeout: Kept,
    wake: Kept,
    sync: Kept,
    purge: Kept,
    review: Kept,
    unclaimed: Kept,
    unrunnable: Kept,
    leases: Kept,
}

type Step = Result<(), pgrx::spi::SpiError>;

impl Statements {
    fn new() -> Self {
        Statements {
            version: bgw::version_statement(),
            lock_timeout: Kept::new(SET_LOCK_TIMEOUT),
            wake: Kept::new(
                "SELECT webmon.wake_probes(coalesce($1::timestamptz, '-infinity'),
                                           make_interval(secs => $2 / 1000.0))::text"),
            sync: Kept::new("SELECT webmon.sync_jobs()"),
            purge: Kept::new(
                "SELECT webmon.purge_incidents($1::interval), webmon.purge_notifications($1::interval),
                        webmon.purge_maintenance($1::interval)"),
            review: Kept::new(
                "SELECT webmon.review_incidents(make_interval(secs => $1))"),
            unclaimed: Kept::new(
                "SELECT webmon.record_unclaimed_checks(make_interval(secs => $1), $2)"),
            unrunnable: Kept::new("SELECT webmon.report_unrunnable_monitors()"),
            leases: Kept::new(
                "SELECT webmon.requeue_expired_leases($1, $2)"),
        }
    }

    /// Runs `step` in its own transaction; an error comes back as its message.
    fn in_transaction(&mut self, step: fn(&mut Self) -> Step) -> Result<(), String> {
        guarded_transaction(AssertUnwindSafe(|| step(self).map_err(|e| e.to_string())))
    }

    /// `SET LOCAL lock_timeout` for the step's transaction: how long its statements wait for
    /// a table lock before the step gives up.
    fn bounded(&mut self) -> Step {
        self.lock_timeout.run(&[TICK_LOCK_TIMEOUT.into()])
    }

    /// Job rows the monitors' trigger did not make (rows written with triggers off).
    fn sync(&mut self) -> Step {
        self.bounded()?;
        self.sync.run(&[])
    }

    /// Incidents resolved, notifications written and one-off maintenance windows ended longer
    /// ago than results are kept.
    fn purge(&mut self) -> Step {
        self.bounded()?;
        self.purge.run(&[gucs::retention().into()])
    }

    /// Incidents no check will end, reminders, and deliveries that ran out of time.
    fn review(&mut self) -> Step {
        self.bounded()?;
        self.review
            .run(&[f64::from(gucs::notification_give_up_s()).into()])
    }

    /// Checks nobody claimed in time, and monitors that cannot run.
    fn unclaimed(&mut self) -> Step {
        self.bounded()?;
        self.unclaimed.run(&[
            f64::from(gucs::unclaimed_timeout_s()).into(),
            gucs::max_jobs_per_tick().into(),
        ])?;
        self.unrunnable.run(&[])
    }

    /// Leases that ended: back to the queue, or `lost`.
    fn leases(&mut self) -> Step {
        self.bounded()?;
        self.leases.run(&[
            gucs::max_attempts().into(),
            gucs::max_jobs_per_tick().into(),
        ])
    }

    /// Wakes the probes when a slot comes due; returns the horizon it looked up to.
    fn wake(&mut self, after: Option<String>) -> Result<Option<String>, pgrx::spi::SpiError> {
        self.bounded()?;
        self.wake
            .get_one::<String>(&[after.into(), f64::from(gucs::lookahead_ms()).into()])
    }
}
