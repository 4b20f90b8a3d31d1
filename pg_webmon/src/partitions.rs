//! `webmon.run_maintenance()`: makes partitions of `webmon.metrics` and `webmon.errors` ahead,
//! drops those past retention and keeps its bookkeeping true. Each step runs in its own
//! subtransaction, so one that fails (a partition someone made undroppable, a name taken by
//! hand) is reported as a WARNING and never holds back the others. Which ranges to make or
//! drop is plain arithmetic in `webmon_core::partitions`; the DDL is in `sql/partitions.sql`.
//! Only SQL functions that exist since 0.1.0 are called, so this also runs on an old schema.

use crate::error::ApiError;
use crate::gucs;
use crate::transactions::in_subtransaction;
use pgrx::prelude::*;
use webmon_core::partitions::{ranges_to_create, ranges_to_drop, Range};

const PARENTS: [&str; 2] = ["webmon.metrics", "webmon.errors"];
/// Advisory lock key so that two maintenance runs never race on DDL.
const MAINTENANCE_LOCK_KEY: i64 = 0x7765_626d_6f6e; // "webmon"
/// Most partitions one run makes, and drops, per parent; the rest follow in the next runs.
/// Every step's locks are held until the run's transaction ends: measured, a new partition
/// holds 8 lock slots and a dropped one fewer, so a run holds at most about 2 × 32 × 8 + 2 × 32
/// × 8 ≈ 1,000 of the ~7,800 slots of a default lock table (64 × ~122 processes).
pub const MAX_CREATED_PER_RUN: usize = 32;
pub const MAX_DROPPED_PER_RUN: usize = 32;

/// Creates partitions ahead and drops expired ones. Returns (created, dropped).
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
    let interval = gucs::partition_interval_micros()?;
    let retention = gucs::retention_micros()?;
    let premake = i64::from(gucs::partition_premake());
    let now: i64 = Spi::get_one::<TimestampWithTimeZone>("SELECT now()")?
        .map(pg_sys::TimestampTz::from)
        .unwrap_or_default();

    let (mut created, mut dropped) = (0, 0);
    for parent in PARENTS {
        // Checked first: CREATE TABLE … PARTITION OF locks the parent even when the table exists.
        let default = format!("{parent}_default");
        let has_default = Spi::get_one_with_args::<bool>(
            "SELECT to_regclass($1) IS NOT NULL",
            &[default.as_str().into()],
        )?
        .unwrap_or(false);
        if !has_default {
            step("make the default partition", parent, || {
                sql(Spi::run(&format!(
                    "CREATE TABLE IF NOT EXISTS {default} PARTITION OF {parent} DEFAULT"
                )))?;
                sql(Spi::run(&format!(
                    "CREATE INDEX IF NOT EXISTS {}_monitor_time_idx ON {default} (monitor_id, request_timestamp)",
                    default.trim_start_matches("webmon.")
                )))?;
                let what = if parent == "webmon.metrics" {
                    "results"
                } else {
                    "errors"
                };
                sql(Spi::run(&format!(
                    "COMMENT ON TABLE {default} IS 'pg_webmon: catches {what} whose timestamp has no partition yet; run_maintenance moves them into a new partition when it makes one.'"
                )))
            });
        }
        // Forget partitions that were dropped by hand, so their range is made again.
        step("forget partitions dropped by hand", parent, || {
            sql(Spi::run_with_args(
                "DELETE FROM webmon.partitions WHERE parent = $1::regclass \
                 AND to_regclass(format('webmon.%I', partition)) IS NULL",
                &[parent.into()],
            ))
        });
        let existing = existing_ranges(parent)?;
        let planned = ranges_to_create(now, interval, premake, &existing);
        for range in planned.into_iter().take(MAX_CREATED_PER_RUN) {
            let ok = step("create a partition", parent, || {
                sql(Spi::run_with_args(
                    "SELECT webmon.create_partition($1::regclass, $2, $3)",
                    &[
                        parent.into(),
                        timestamp(range.start)?.into(),
                        timestamp(range.end)?.into(),
                    ],
                ))
            });
            created += i64::from(ok);
        }
        for range in ranges_to_drop(now, retention, &existing)
            .into_iter()
            .take(MAX_DROPPED_PER_RUN)
        {
            let ok = step("drop a partition past retention", parent, || {
                sql(Spi::run_with_args(
                    "SELECT webmon.drop_partition($1::regclass, $2)",
                    &[parent.into(), timestamp(range.start)?.into()],
                ))
            });
            dropped += i64::from(ok);
        }
        step("purge the default partition", parent, || {
            sql(Spi::run_with_args(
                "SELECT webmon.purge_default_partition($1::regclass, $2)",
                &[
                    parent.into(),
                    timestamp(now.saturating_sub(retention))?.into(),
                ],
            ))
        });
    }
    Ok((created, dropped))
}

/// How long a step waits for a lock. Making and dropping partitions needs strong locks on
/// the parent; behind a long query that reads results, a waiting step would queue every
/// writer of results behind it. It gives up instead, and the next run tries again.
const STEP_LOCK_TIMEOUT: &str = "500ms";

/// One maintenance step in its own subtransaction, with `STEP_LOCK_TIMEOUT`; a failure is a
/// WARNING, and `false`.
fn step(
    what: &str,
    parent: &str,
    body: impl FnOnce() -> Result<(), String> + std::panic::UnwindSafe,
) -> bool {
    let outcome = in_subtransaction(|| {
        let previous = sql_value(Spi::get_one::<String>("SHOW lock_timeout"))?;
        set_lock_timeout(STEP_LOCK_TIMEOUT)?;
        body()?;
        // Kept only on success (a rolled-back subtransaction undoes the SET itself).
        set_lock_timeout(&previous)
    });
    match outcome {
        Ok(()) => true,
        Err(message) => {
            warning!("pg_webmon maintenance: could not {what} of {parent}: {message}");
            false
        }
    }
}

fn sql(result: Result<(), pgrx::spi::SpiError>) -> Result<(), String> {
    result.map_err(|e| e.to_string())
}

fn sql_value(result: Result<Option<String>, pgrx::spi::SpiError>) -> Result<String, String> {
    result
        .map(Option::unwrap_or_default)
        .map_err(|e| e.to_string())
}

fn set_lock_timeout(value: &str) -> Result<(), String> {
    sql(Spi::run_with_args(
        "SELECT set_config('lock_timeout', $1, true)",
        &[value.into()],
    ))
}

fn existing_ranges(parent: &str) -> Result<Vec<Range>, ApiError> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT range_start, range_end FROM webmon.partitions WHERE parent = $1::regclass \
             ORDER BY range_start",
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
