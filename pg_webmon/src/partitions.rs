//! Partition maintenance of `webmon.metrics`, `webmon.errors` and the rollups tables
//! `webmon.rollups_hourly` and `webmon.rollups_daily`: which steps to take (make
//! the default partition, forget partitions dropped by hand, make partitions ahead, drop those
//! past retention, purge the default partition) and running one step. Which ranges to make or
//! drop is plain arithmetic in `webmon_core::partitions` (with a cap per run); the DDL is in
//! `sql/partitions.sql`. The maintenance worker runs each step in a transaction of its own,
//! so a drop's strong lock on its table lasts only for that drop; `webmon.run_maintenance()`
//! runs them all in the caller's transaction, each in a subtransaction. Either way a failing step is a WARNING and never stops the others. Only SQL
//! functions that exist since 0.1.0 are called, so this also runs on a 0.1.0 schema.

use crate::error::ApiError;
use crate::gucs;
use crate::transactions::{in_subtransaction, set_lock_timeout};
use pgrx::prelude::*;
use webmon_core::partitions::{plan, plan_with_history, Range};

/// The partitioned tables, results first. Results follow `pg_webmon.partition_interval` and
/// `pg_webmon.retention`; rollups have partitions of `ROLLUP_PARTITION_DAYS` and follow
/// `pg_webmon.rollup_retention`.
const PARENTS: [&str; 4] = [
    "webmon.metrics",
    "webmon.errors",
    "webmon.rollups_hourly",
    "webmon.rollups_daily",
];
const ROLLUP_PARTITION_MICROS: i64 = 30 * 86_400 * 1_000_000;

fn is_rollups(parent: &str) -> bool {
    parent.starts_with("webmon.rollups_")
}

/// The time column a table is partitioned by.
fn time_column(parent: &str) -> &'static str {
    match parent {
        "webmon.rollups_hourly" => "hour",
        "webmon.rollups_daily" => "day",
        _ => "request_timestamp",
    }
}

/// How long rows of `parent` are kept, in microseconds.
fn retention_of(parent: &str) -> Result<i64, ApiError> {
    if is_rollups(parent) {
        gucs::rollup_retention_micros()
    } else {
        gucs::retention_micros()
    }
}
/// Advisory lock key so that two maintenance runs never race on DDL.
const MAINTENANCE_LOCK_KEY: i64 = 0x7765_626d_6f6e; // "webmon"

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    Done,
    /// Nothing to do any more (a planned drop no longer past retention).
    Nothing,
    /// Another maintenance run holds the advisory lock: nothing done.
    Skipped,
    /// A batch done and more left (purging a large default partition): run it again.
    More,
}

/// Rows one purge step deletes from a default partition.
const PURGE_BATCH: i32 = 10_000;

/// One maintenance step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    MakeDefault { parent: &'static str },
    ForgetDropped { parent: &'static str },
    Create { parent: &'static str, range: Range },
    Drop { parent: &'static str, range: Range },
    PurgeDefault { parent: &'static str, before: i64 },
}

impl Step {
    fn describe(&self) -> String {
        match self {
            Step::MakeDefault { parent } => format!("make the default partition of {parent}"),
            Step::ForgetDropped { parent } => {
                format!("forget partitions of {parent} dropped by hand")
            }
            Step::Create { parent, .. } => format!("create a partition of {parent}"),
            Step::Drop { parent, .. } => format!("drop a partition of {parent} past retention"),
            Step::PurgeDefault { parent, .. } => {
                format!("purge old rows from the default partition of {parent}")
            }
        }
    }
}

/// The steps of one maintenance run, from the settings and the partitions that exist now.
pub fn plan_steps() -> Result<Vec<Step>, ApiError> {
    let premake = i64::from(gucs::partition_premake());
    let now: i64 = Spi::get_one::<TimestampWithTimeZone>("SELECT now()")?
        .map(pg_sys::TimestampTz::from)
        .unwrap_or_default();
    let mut steps = Vec::new();
    // Tables of an older schema (run_maintenance() before an update) lack the rollups.
    let mut parents = Vec::new();
    for parent in PARENTS {
        if Spi::get_one_with_args::<bool>("SELECT to_regclass($1) IS NOT NULL", &[parent.into()])?
            .unwrap_or(false)
        {
            parents.push(parent);
        }
    }
    // The default partitions first (every result has a place; the scheduler waits for them),
    // then per table: bookkeeping, the partitions ahead from the current one, drops, purge.
    for &parent in &parents {
        let has_default = Spi::get_one_with_args::<bool>(
            "SELECT to_regclass($1) IS NOT NULL",
            &[format!("{parent}_default").into()],
        )?
        .unwrap_or(false);
        // Checked here: CREATE TABLE … PARTITION OF locks the parent even when the table exists.
        if !has_default {
            steps.push(Step::MakeDefault { parent });
        }
    }
    for &parent in &parents {
        steps.push(Step::ForgetDropped { parent });
        let retention = retention_of(parent)?;
        let existing = existing_ranges(parent)?;
        let planned = if is_rollups(parent) {
            // A rollup partition spans 30 days: one ahead is enough; and back as far as
            // results are kept, whose hours are rolled up after an update.
            plan_with_history(
                now,
                gucs::retention_micros()?,
                ROLLUP_PARTITION_MICROS,
                premake.min(1),
                retention,
                &existing,
            )
        } else {
            plan(
                now,
                gucs::partition_interval_micros()?,
                premake,
                retention,
                &existing,
            )
        };
        steps.extend(
            planned
                .create
                .into_iter()
                .map(|range| Step::Create { parent, range }),
        );
        steps.extend(
            planned
                .drop
                .into_iter()
                .map(|range| Step::Drop { parent, range }),
        );
        steps.push(Step::PurgeDefault {
            parent,
            before: now.saturating_sub(retention),
        });
    }
    Ok(steps)
}

/// Runs one step: under the maintenance advisory lock (skipped while someone else holds it)
/// and waiting at most `lock_timeout` for its table locks. Making and dropping partitions
/// needs strong locks on the parent; behind a long query that reads results, a waiting step
/// would queue every writer of results behind it. It gives up instead, and a later run tries
/// again. Call it inside a transaction or subtransaction that ends with it (the lock timeout
/// is set for that transaction).
pub fn run_step(step: &Step, lock_timeout: &str) -> Result<StepOutcome, String> {
    sql(set_lock_timeout(lock_timeout))?;
    let locked = Spi::get_one_with_args::<bool>(
        "SELECT pg_try_advisory_xact_lock($1)",
        &[MAINTENANCE_LOCK_KEY.into()],
    )
    .map_err(|e| e.to_string())?
    .unwrap_or(false);
    if !locked {
        return Ok(StepOutcome::Skipped);
    }
    match step {
        Step::MakeDefault { parent } => {
            let default = format!("{parent}_default");
            let name = default.trim_start_matches("webmon.");
            let what = match *parent {
                "webmon.metrics" => "results",
                "webmon.errors" => "errors",
                _ => "rollups",
            };
            sql(Spi::run(&format!(
                "CREATE TABLE IF NOT EXISTS {default} PARTITION OF {parent} DEFAULT"
            )))?;
            sql(Spi::run(&format!(
                "CREATE INDEX IF NOT EXISTS {name}_monitor_time_idx ON {default} (monitor_id, {})",
                time_column(parent)
            )))?;
            if is_rollups(parent) {
                // As create_partition() makes for rollups: they are read by time too.
                sql(Spi::run(&format!(
                    "CREATE INDEX IF NOT EXISTS {name}_time_idx ON {default} USING brin ({})",
                    time_column(parent)
                )))?;
            }
            sql(Spi::run(&format!(
                "COMMENT ON TABLE {default} IS 'pg_webmon: catches {what} whose timestamp has no partition yet; run_maintenance moves them into a new partition when it makes one.'"
            )))?;
        }
        Step::ForgetDropped { parent } => sql(Spi::run_with_args(
            "DELETE FROM webmon.partitions WHERE parent = $1::regclass \
             AND to_regclass(format('webmon.%I', partition)) IS NULL",
            &[(*parent).into()],
        ))?,
        Step::Create { parent, range } => sql(Spi::run_with_args(
            "SELECT webmon.create_partition($1::regclass, $2, $3)",
            &[
                (*parent).into(),
                timestamp(range.start)?.into(),
                timestamp(range.end)?.into(),
            ],
        ))?,
        Step::Drop { parent, range } => {
            // Planned a while ago: drop only what is past retention as it is set now.
            if range.end > horizon(parent)? {
                return Ok(StepOutcome::Nothing);
            }
            sql(Spi::run_with_args(
                "SELECT webmon.drop_partition($1::regclass, $2)",
                &[(*parent).into(), timestamp(range.start)?.into()],
            ))?
        }
        Step::PurgeDefault { parent, before } => {
            let before = (*before).min(horizon(parent)?);
            let purged = Spi::get_one_with_args::<i64>(
                "SELECT webmon.purge_default_partition($1::regclass, $2, $3)",
                &[
                    (*parent).into(),
                    timestamp(before)?.into(),
                    PURGE_BATCH.into(),
                ],
            )
            .map_err(|e| e.to_string())?
            .unwrap_or(0);
            if purged >= i64::from(PURGE_BATCH) {
                return Ok(StepOutcome::More);
            }
        }
    }
    Ok(StepOutcome::Done)
}

/// `now()` less the retention of `parent` as set now.
fn horizon(parent: &str) -> Result<i64, String> {
    let retention = retention_of(parent).map_err(|e| e.to_string())?;
    let now = Spi::get_one::<TimestampWithTimeZone>("SELECT now()")
        .map_err(|e| e.to_string())?
        .map(pg_sys::TimestampTz::from)
        .unwrap_or_default();
    Ok(now.saturating_sub(retention))
}

/// Lock timeout of a step run by `webmon.run_maintenance()`.
const SQL_STEP_LOCK_TIMEOUT: &str = "500ms";

/// `webmon.run_maintenance()`: every step now, each in a subtransaction of the caller's
/// transaction. Returns (created, dropped).
pub fn run_maintenance() -> Result<(i64, i64), ApiError> {
    let locked = Spi::get_one_with_args::<bool>(
        "SELECT pg_try_advisory_xact_lock($1)",
        &[MAINTENANCE_LOCK_KEY.into()],
    )?
    .unwrap_or(false);
    if !locked {
        notice!("pg_webmon: another run_maintenance() is running; skipped");
        return Ok((0, 0));
    }
    let previous = Spi::get_one::<String>("SHOW lock_timeout")?.unwrap_or_default();
    let (mut created, mut dropped) = (0, 0);
    for step in plan_steps()? {
        loop {
            match in_subtransaction(|| run_step(&step, SQL_STEP_LOCK_TIMEOUT)) {
                Ok(StepOutcome::More) => continue,
                Ok(StepOutcome::Done) => match step {
                    Step::Create { .. } => created += 1,
                    Step::Drop { .. } => dropped += 1,
                    _ => {}
                },
                Ok(StepOutcome::Skipped | StepOutcome::Nothing) => {}
                Err(message) => report_failure(&step, &message),
            }
            break;
        }
    }
    // A step that succeeded kept its SET LOCAL; give the caller's transaction its own back.
    set_lock_timeout(&previous)?;
    Ok((created, dropped))
}

/// Reports a failed step as the scheduler does.
pub fn report_failure(step: &Step, message: &str) {
    warning!(
        "pg_webmon maintenance: could not {}: {message}",
        step.describe()
    );
}

fn sql(result: Result<(), pgrx::spi::SpiError>) -> Result<(), String> {
    result.map_err(|e| e.to_string())
}

fn existing_ranges(parent: &str) -> Result<Vec<Range>, ApiError> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT range_start, range_end FROM webmon.partitions WHERE parent = $1::regclass \
             AND to_regclass(format('webmon.%I', partition)) IS NOT NULL ORDER BY range_start",
            None,
            &[parent.into()],
        )?;
        let mut ranges = Vec::new();
        for row in rows {
            let start = row
                .get::<TimestampWithTimeZone>(1)?
                .map(pg_sys::TimestampTz::from);
            let end = row
                .get::<TimestampWithTimeZone>(2)?
                .map(pg_sys::TimestampTz::from);
            if let (Some(start), Some(end)) = (start, end) {
                ranges.push(Range { start, end });
            }
        }
        Ok(ranges)
    })
}

fn timestamp(micros: i64) -> Result<TimestampWithTimeZone, String> {
    TimestampWithTimeZone::try_from(micros).map_err(|_| format!("timestamp out of range: {micros}"))
}
