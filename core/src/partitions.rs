//! Partition ranges of `webmon.metrics` and `webmon.errors`: which to make ahead and which
//! are past retention. Microseconds since the PostgreSQL epoch; half-open `[start, end)`.

/// A half-open range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: i64,
    pub end: i64,
}

/// Start of the partition-sized bucket holding `at`, aligned on whole intervals from the
/// epoch (so daily partitions start at midnight UTC).
pub fn bucket_start(at: i64, interval: i64) -> i64 {
    at.div_euclid(interval.max(1)) * interval.max(1)
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
        let mut end = bucket_start(cursor, interval).saturating_add(interval);
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

/// Most partitions one maintenance run makes, and drops, per table; the rest follow in the
/// next runs. A step's locks are held until its transaction ends, and a new partition holds
/// 8 lock slots (measured: 968 − 168 locks for 100 partitions in one transaction), so even a
/// run in one transaction holds about 2 × 32 × 8 + 2 × 32 × 8 ≈ 1,000 of the ~7,800 slots of
/// a default lock table (64 × ~122 processes), whatever the settings.
pub const MAX_CREATED_PER_RUN: usize = 32;
pub const MAX_DROPPED_PER_RUN: usize = 32;

/// What one maintenance run does for one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub create: Vec<Range>,
    pub drop: Vec<Range>,
}

/// The ranges to make (oldest first) and to drop (oldest first), each at most its per-run cap.
pub fn plan(now: i64, interval: i64, premake: i64, retention: i64, existing: &[Range]) -> Plan {
    let mut create = ranges_to_create(now, interval, premake, existing);
    create.truncate(MAX_CREATED_PER_RUN);
    let mut drop = ranges_to_drop(now, retention, existing);
    drop.sort_by_key(|r| r.start);
    drop.truncate(MAX_DROPPED_PER_RUN);
    Plan { create, drop }
}

/// Like `plan`, with partitions made from `history` before now too (not only from the current
/// one): rollups are written for hours that are already past (the results kept before an
/// update), which must find their partitions rather than the default one. `history` is
/// capped at `retention` (nothing older would be kept).
pub fn plan_with_history(
    now: i64,
    history: i64,
    interval: i64,
    premake: i64,
    retention: i64,
    existing: &[Range],
) -> Plan {
    let history = history.clamp(0, retention.max(0));
    let from = now.saturating_sub(history);
    let back = (bucket_start(now, interval.max(1)) - bucket_start(from, interval.max(1)))
        / interval.max(1);
    // From `from`, the horizon of `ranges_to_drop` stays now - retention.
    plan(
        from,
        interval,
        back + premake,
        retention - history,
        existing,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    const HOUR: i64 = 3_600_000_000;
    const DAY: i64 = 24 * HOUR;

    #[test]
    fn a_plan_with_history_makes_partitions_back_to_it_and_drops_as_plan_does() {
        let month = 30 * DAY;
        let now = 1000 * DAY + 5 * HOUR;
        let existing = [Range {
            start: 0,
            end: month,
        }];
        let planned = plan_with_history(now, 31 * DAY, month, 1, 400 * DAY, &existing);
        assert_eq!(planned.drop, plan(now, month, 1, 400 * DAY, &existing).drop);
        let first = planned.create.first().copied().unwrap();
        let last = planned.create.last().copied().unwrap();
        assert!(first.start <= now - 31 * DAY && first.end > now - 31 * DAY);
        assert!(last.start > now && last.end > now + month - DAY);
        // History beyond retention is not made; none at all is `plan`.
        let short = plan_with_history(now, 90 * DAY, month, 1, 40 * DAY, &[]);
        assert!(short.create.first().unwrap().end > now - 40 * DAY);
        assert_eq!(
            plan_with_history(now, 0, month, 1, 400 * DAY, &[]),
            plan(now, month, 1, 400 * DAY, &[])
        );
    }

    fn days(from: i64, to: i64) -> Vec<Range> {
        (from..to)
            .map(|d| Range {
                start: d * DAY,
                end: (d + 1) * DAY,
            })
            .collect()
    }

    #[test]
    fn daily_from_today_to_premake() {
        let plan = ranges_to_create(100 * DAY + 5 * HOUR, DAY, 3, &[]);
        assert_eq!(plan, days(100, 104));
    }

    #[test]
    fn existing_partitions_are_not_made_again() {
        let existing = days(100, 103);
        assert_eq!(
            ranges_to_create(100 * DAY, DAY, 3, &existing),
            days(103, 104)
        );
        assert!(ranges_to_create(100 * DAY, DAY, 2, &existing).is_empty());
    }

    #[test]
    fn a_changed_interval_fits_around_existing_ranges() {
        let existing = days(100, 101);
        let plan = ranges_to_create(100 * DAY + HOUR, 6 * HOUR, 7, &existing);
        assert_eq!(plan.first().map(|r| r.start), Some(101 * DAY));
        for r in &plan {
            assert!(r.end <= 100 * DAY || r.start >= 101 * DAY);
            assert_eq!(r.end - r.start, 6 * HOUR);
        }
        let existing = [Range {
            start: 100 * DAY + 6 * HOUR,
            end: 100 * DAY + 12 * HOUR,
        }];
        assert_eq!(
            ranges_to_create(100 * DAY, DAY, 0, &existing),
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
        let dropped = ranges_to_drop(100 * DAY + HOUR, 7 * DAY, &days(90, 101));
        assert_eq!(dropped, days(90, 93));
    }

    #[test]
    fn one_run_is_capped_and_the_rest_follows() {
        // A year of hourly partitions ahead and a year past retention: 32 of each per run,
        // the oldest first; the next run (with those done) takes the next 32.
        let now = 1000 * DAY;
        let old: Vec<Range> = (0..365)
            .map(|d| Range {
                start: (500 + d) * DAY,
                end: (501 + d) * DAY,
            })
            .collect();
        let first = plan(now, HOUR, 365 * 24, 30 * DAY, &old);
        assert_eq!(first.create.len(), MAX_CREATED_PER_RUN);
        assert_eq!(first.drop.len(), MAX_DROPPED_PER_RUN);
        assert_eq!(first.create[0].start, now);
        assert_eq!(first.drop[0], old[0]);
        let mut after: Vec<Range> = old[MAX_DROPPED_PER_RUN..].to_vec();
        after.extend(first.create.iter().copied());
        let second = plan(now, HOUR, 365 * 24, 30 * DAY, &after);
        assert_eq!(second.create[0].start, now + 32 * HOUR);
        assert_eq!(second.drop[0], old[MAX_DROPPED_PER_RUN]);
        // The defaults: all in one run.
        let daily = plan(now, DAY, 7, 30 * DAY, &[]);
        assert_eq!(daily.create.len(), 8);
        assert!(daily.drop.is_empty());
    }

    #[test]
    fn buckets_align_before_the_epoch_too() {
        assert_eq!(bucket_start(-1, DAY), -DAY);
        assert_eq!(bucket_start(DAY + 1, DAY), DAY);
    }
}
