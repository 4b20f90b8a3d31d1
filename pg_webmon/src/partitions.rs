//! Partition maintenance for `webmon.metrics` and `webmon.errors`: which ranges to create
//! (pure arithmetic, unit-tested) and `webmon.run_maintenance()`, which creates them ahead
//! and drops those past retention. The DDL itself is in `sql/partitions.sql`.

use crate::error::ApiError;
use crate::gucs;
use pgrx::prelude::*;

/// A half-open range `[start, end)` of microseconds since the Postgres epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: i64,
    pub end: i64,
}

/// Start of the partition-sized bucket holding `at`, aligned on whole intervals from the
/// epoch (so daily partitions start at midnight UTC).
pub fn bucket_start(at: i64, interval: i64) -> i64 {
    at.div_euclid(interval) * interval
}

/// Ranges to create so that partitions cover `[bucket_start(now), that + (premake + 1) * interval)`,
/// given the ranges that already exist. Existing ranges are never overlapped; where the
/// interval was changed, a new range is cut short to fit against an existing one.
pub fn ranges_to_create(now: i64, interval: i64, premake: i64, existing: &[Range]) -> Vec<Range> {
    let mut planned = Vec::new();
    if interval <= 0 {
        return planned;
    }
    let mut cursor = bucket_start(now, interval);
    let target = cursor.saturating_add(interval.saturating_mul(premake.max(0) + 1));
    while cursor < target {
        if let Some(covering) = existing
            .iter()
            .find(|r| r.start <= cursor && cursor < r.end)
        {
            cursor = covering.end;
            continue;
        }
        // Back on the grid after a range that was cut short.
        let mut end = bucket_start(cursor, interval) + interval;
        if let Some(next) = existing
            .iter()
            .filter(|r| r.start > cursor && r.start < end)
            .map(|r| r.start)
            .min()
        {
            end = next;
        }
        planned.push(Range { start: cursor, end });
        cursor = end;
    }
    planned
}

/// Existing ranges whose whole span is older than `now - retention`.
pub fn ranges_to_drop(now: i64, retention: i64, existing: &[Range]) -> Vec<Range> {
    let horizon = now.saturating_sub(retention);
    existing
        .iter()
        .copied()
        .filter(|r| r.end <= horizon)
        .collect()
}

const PARENTS: [&str; 2] = ["webmon.metrics", "webmon.errors"];
/// Advisory lock key so that two maintenance runs never race on DDL.
const MAINTENANCE_LOCK_KEY: i64 = 0x7765_626d_6f6e; // "webmon"

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
    let interval =
        gucs::interval_micros(gucs::PARTITION_INTERVAL_NAME, &gucs::partition_interval())?;
    if interval < 3_600_000_000 {
        return Err(ApiError::Setting(format!(
            "pg_webmon.partition_interval must be at least 1 hour, got \"{}\"",
            gucs::partition_interval()
        )));
    }
    let retention = gucs::interval_micros(gucs::RETENTION_NAME, &gucs::retention())?;
    let premake = i64::from(gucs::partition_premake());
    let now: i64 = Spi::get_one::<TimestampWithTimeZone>("SELECT now()")?
        .map(pg_sys::TimestampTz::from)
        .unwrap_or_default();

    let (mut created, mut dropped) = (0, 0);
    for parent in PARENTS {
        let existing = existing_ranges(parent)?;
        for range in ranges_to_create(now, interval, premake, &existing) {
            Spi::run_with_args(
                "SELECT webmon.create_partition($1::regclass, $2, $3)",
                &[
                    parent.into(),
                    timestamp(range.start)?.into(),
                    timestamp(range.end)?.into(),
                ],
            )?;
            created += 1;
        }
        for range in ranges_to_drop(now, retention, &existing) {
            Spi::run_with_args(
                "SELECT webmon.drop_partition($1::regclass, $2)",
                &[parent.into(), timestamp(range.start)?.into()],
            )?;
            dropped += 1;
        }
        Spi::run_with_args(
            "SELECT webmon.purge_default_partition($1::regclass, $2)",
            &[
                parent.into(),
                timestamp(now.saturating_sub(retention))?.into(),
            ],
        )?;
    }
    Ok((created, dropped))
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

fn timestamp(micros: i64) -> Result<TimestampWithTimeZone, ApiError> {
    TimestampWithTimeZone::try_from(micros)
        .map_err(|_| ApiError::Setting(format!("timestamp out of range: {micros}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    const HOUR: i64 = 3_600_000_000;
    const DAY: i64 = 24 * HOUR;

    #[test]
    fn daily_from_today_to_premake() {
        let now = 100 * DAY + 5 * HOUR;
        let plan = ranges_to_create(now, DAY, 3, &[]);
        assert_eq!(plan.len(), 4);
        assert_eq!(
            plan[0],
            Range {
                start: 100 * DAY,
                end: 101 * DAY
            }
        );
        assert_eq!(
            plan[3],
            Range {
                start: 103 * DAY,
                end: 104 * DAY
            }
        );
    }

    #[test]
    fn existing_partitions_are_not_made_again() {
        let now = 100 * DAY;
        let existing: Vec<Range> = (100..103)
            .map(|d| Range {
                start: d * DAY,
                end: (d + 1) * DAY,
            })
            .collect();
        let plan = ranges_to_create(now, DAY, 3, &existing);
        assert_eq!(
            plan,
            vec![Range {
                start: 103 * DAY,
                end: 104 * DAY
            }]
        );
        assert!(ranges_to_create(now, DAY, 2, &existing).is_empty());
    }

    #[test]
    fn a_changed_interval_fits_around_existing_ranges() {
        // Daily partitions exist for day 100; the interval becomes 6 hours.
        let existing = [Range {
            start: 100 * DAY,
            end: 101 * DAY,
        }];
        let plan = ranges_to_create(100 * DAY + HOUR, 6 * HOUR, 7, &existing);
        // Day 100 is covered: the 6-hour partitions start at day 101, none overlaps.
        assert_eq!(plan.first().map(|r| r.start), Some(101 * DAY));
        for r in &plan {
            assert!(r.end <= 100 * DAY || r.start >= 101 * DAY);
            assert_eq!(r.end - r.start, 6 * HOUR);
        }
        // Daily again, with 6-hour partitions ahead: a range is cut short, never overlapping.
        let existing = [Range {
            start: 100 * DAY + 6 * HOUR,
            end: 100 * DAY + 12 * HOUR,
        }];
        let plan = ranges_to_create(100 * DAY, DAY, 0, &existing);
        assert_eq!(
            plan,
            vec![
                Range {
                    start: 100 * DAY,
                    end: 100 * DAY + 6 * HOUR
                },
                Range {
                    start: 100 * DAY + 12 * HOUR,
                    end: 101 * DAY
                }
            ]
        );
    }

    #[test]
    fn retention_drops_only_whole_old_ranges() {
        let existing: Vec<Range> = (90..101)
            .map(|d| Range {
                start: d * DAY,
                end: (d + 1) * DAY,
            })
            .collect();
        let dropped = ranges_to_drop(100 * DAY + HOUR, 7 * DAY, &existing);
        // horizon = day 93 + 1 h: days 90, 91, 92 end by then; day 93 still holds newer rows.
        assert_eq!(
            dropped.iter().map(|r| r.start / DAY).collect::<Vec<_>>(),
            vec![90, 91, 92]
        );
    }

    #[test]
    fn buckets_align_before_the_epoch_too() {
        assert_eq!(bucket_start(-1, DAY), -DAY);
        assert_eq!(bucket_start(DAY + 1, DAY), DAY);
    }
}
