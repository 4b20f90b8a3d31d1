//! Slot arithmetic for the scheduler: checks start on whole multiples of the interval from a
//! monitor's first slot, so they never drift, and a monitor that fell behind gets one check
//! for its latest slot, never a burst of catch-ups. All values are microseconds (PostgreSQL
//! timestamps); a day is 24 hours (see `interval.rs`). Nothing here can overflow or panic,
//! whatever a stored row holds.

/// The slot to run now: `previous` when it is not yet behind, else the latest slot
/// `previous + k * interval` that is not after `now`.
pub fn current_slot(previous: i64, interval: i64, now: i64) -> i64 {
    if interval <= 0 || now <= previous {
        return previous;
    }
    let behind = i128::from(now) - i128::from(previous);
    let missed = behind / i128::from(interval);
    clamp(i128::from(previous) + missed * i128::from(interval))
}

/// The slot after the one that runs now.
pub fn next_slot(previous: i64, interval: i64, now: i64) -> i64 {
    clamp(i128::from(current_slot(previous, interval, now)) + i128::from(interval.max(1)))
}

/// The slot that `next` follows: `next - interval`.
pub fn slot_before(next: i64, interval: i64) -> i64 {
    clamp(i128::from(next) - i128::from(interval.max(1)))
}

/// The slot a due job is leased for: its own `scheduled` slot when that is ahead of `now`
/// or less than an interval behind; else the latest slot of its grid not after `now` (a job
/// far behind — paused, no probe, server down — gets one check, never a burst of catch-ups).
pub fn lease_slot(scheduled: i64, grid_start: i64, interval: i64, now: i64) -> i64 {
    if interval <= 0 || i128::from(now) - i128::from(scheduled) < i128::from(interval) {
        return scheduled;
    }
    let latest = current_slot(grid_start, interval, now);
    if latest > now {
        // The grid has not started yet: the overdue check itself.
        return scheduled;
    }
    latest.max(scheduled)
}

/// The slot of the grid `grid_start + k × interval` (any integer k, before the grid's start
/// too) that `t` falls in: the latest one not after `t`.
pub fn slot_at(grid_start: i64, interval: i64, t: i64) -> i64 {
    if interval <= 0 {
        return t;
    }
    let k = (i128::from(t) - i128::from(grid_start)).div_euclid(i128::from(interval));
    clamp(i128::from(grid_start) + k * i128::from(interval))
}

/// The first slot of the grid `grid_start + k × interval` (k ≥ 0) after `t`.
pub fn slot_after(grid_start: i64, interval: i64, t: i64) -> i64 {
    if t < grid_start {
        return grid_start;
    }
    next_slot(grid_start, interval, t)
}

/// Where a monitor's grid of slots starts, for a monitor whose next check is set to
/// `next_check`: that time itself when it lies ahead (someone chose it: daily checks at
/// midnight stay at midnight); otherwise — a new monitor, "check now", a monitor enabled
/// again — `next_check` plus a fraction of the interval that follows the monitor's id. The
/// first check still runs at `next_check`; the ones after it are spread evenly over the
/// interval (ids in a row land a golden-ratio step apart), so monitors added together do not
/// all start in the same instant, as Prometheus spreads its scrapes.
pub fn grid_start(monitor_id: i64, interval: i64, next_check: i64, now: i64) -> i64 {
    if next_check > now || interval <= 0 {
        return next_check;
    }
    // frac(id × (φ − 1)) in 32-bit fixed point: 2654435769 = ⌊(φ − 1) × 2^32⌋.
    let fraction = (monitor_id as u64).wrapping_mul(2_654_435_769) & 0xFFFF_FFFF;
    clamp(i128::from(next_check) + ((i128::from(interval) * i128::from(fraction)) >> 32))
}

fn clamp(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

/// How long a monitor's slots in [from, to) went unchecked, given how many results of its
/// regions counted as checked: the slots its interval fits in the range per region, less those
/// checked, times the interval, averaged over its regions. The slot still in flight at `now` is
/// not counted yet; an interval below a second counts as a second. Microseconds, never
/// negative.
pub fn unmonitored_micros(
    interval: i64,
    regions: usize,
    from: i64,
    to: i64,
    now: i64,
    checked: i64,
) -> i64 {
    let step = i128::from(interval.max(1_000_000));
    let regions = i128::try_from(regions.max(1)).unwrap_or(1);
    let end = i128::from(to).min(i128::from(now) - step);
    let slots = (end - i128::from(from)).max(0) / step * regions;
    let missing = (slots - i128::from(checked)).max(0);
    missing
        .checked_mul(step)
        .and_then(|total| i64::try_from(total / regions).ok())
        .unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    const S: i64 = 1_000_000;

    #[test]
    fn on_time_runs_its_own_slot() {
        assert_eq!(current_slot(100 * S, 60 * S, 100 * S), 100 * S);
        assert_eq!(next_slot(100 * S, 60 * S, 100 * S), 160 * S);
        assert_eq!(slot_before(160 * S, 60 * S), 100 * S);
    }

    #[test]
    fn a_future_slot_is_kept() {
        // Queued ahead of time (lookahead): the slot itself, not now.
        assert_eq!(current_slot(100 * S, 60 * S, 99 * S), 100 * S);
    }

    #[test]
    fn late_within_one_interval_keeps_the_grid() {
        // 250 ms late: runs the 100 s slot, next is 160 s, not 160.25 s (no drift).
        assert_eq!(current_slot(100 * S, 60 * S, 100 * S + 250_000), 100 * S);
        assert_eq!(next_slot(100 * S, 60 * S, 100 * S + 250_000), 160 * S);
    }

    #[test]
    fn far_behind_skips_to_the_latest_slot_once() {
        let now = 100 * S + 10 * 60 * S + 5 * S;
        assert_eq!(current_slot(100 * S, 60 * S, now), 700 * S);
        assert_eq!(next_slot(100 * S, 60 * S, now), 760 * S);
        assert!(next_slot(100 * S, 60 * S, now) > now);
    }

    #[test]
    fn many_ticks_never_drift() {
        let interval = 60 * S;
        let mut slot = 0;
        for i in 0..1440 {
            let now = slot + (i * 37 % 900) * 1000;
            assert_eq!(current_slot(slot, interval, now), i * interval);
            slot = next_slot(slot, interval, now);
        }
        assert_eq!(slot, 1440 * interval);
    }

    #[test]
    fn a_job_far_behind_is_leased_for_the_latest_slot_of_its_grid_once() {
        let (grid, interval) = (7 * S, 60 * S);
        // On time, ahead, or less than an interval late: its own slot.
        assert_eq!(lease_slot(607 * S, grid, interval, 607 * S), 607 * S);
        assert_eq!(lease_slot(607 * S, grid, interval, 606 * S), 607 * S);
        assert_eq!(lease_slot(607 * S, grid, interval, 666 * S), 607 * S);
        // Behind (a first check off the grid, paused for an hour): the latest grid slot, and
        // the next slot after now is in the future: one check, not two in a row.
        let now = 3_700 * S;
        let slot = lease_slot(100 * S, grid, interval, now);
        assert_eq!(slot, 3_667 * S);
        assert!(slot_after(grid, interval, slot.max(now)) > now);
        // A grid that starts later than now: the overdue check itself.
        assert_eq!(lease_slot(100 * S, 5_000 * S, interval, now), 100 * S);
        assert_eq!(
            lease_slot(i64::MIN, grid, interval, i64::MAX),
            i64::MAX - (i64::MAX - grid) % interval
        );
    }

    #[test]
    fn a_time_falls_in_one_slot_of_the_grid_before_its_start_too() {
        assert_eq!(slot_at(100 * S, 60 * S, 100 * S), 100 * S);
        assert_eq!(slot_at(100 * S, 60 * S, 159 * S), 100 * S);
        assert_eq!(slot_at(100 * S, 60 * S, 99 * S), 40 * S);
        assert_eq!(slot_at(100 * S, 60 * S, -21 * S), -80 * S);
        assert_eq!(slot_at(0, i64::MAX, i64::MIN), i64::MIN);
    }

    #[test]
    fn the_slot_after_a_time_is_on_the_grid_and_after_it() {
        assert_eq!(slot_after(100 * S, 60 * S, 30 * S), 100 * S);
        assert_eq!(slot_after(100 * S, 60 * S, 100 * S), 160 * S);
        assert_eq!(slot_after(100 * S, 60 * S, 159 * S), 160 * S);
        assert_eq!(slot_after(100 * S, 60 * S, 10_000 * S + 1), 10_060 * S);
    }

    #[test]
    fn grids_of_monitors_added_together_are_spread_over_the_interval() {
        let (interval, now) = (10 * S, 1_000 * S);
        let starts: Vec<i64> = (1..=1000)
            .map(|id| grid_start(id, interval, now, now) - now)
            .collect();
        assert!(starts.iter().all(|&offset| (0..interval).contains(&offset)));
        // Every tenth of the interval holds 100 ± 10 of the 1,000 grids.
        for tenth in 0..10 {
            let held = starts
                .iter()
                .filter(|&&o| o / (interval / 10) == tenth)
                .count();
            assert!((90..=110).contains(&held), "tenth {tenth}: {held}");
        }
        // The same monitor always gets the same grid (enabled again, it keeps its slots).
        assert_eq!(
            grid_start(7, interval, now, now),
            grid_start(7, interval, now, now)
        );
        // A time ahead is kept as it is.
        assert_eq!(grid_start(7, interval, now + S, now), now + S);
        assert_eq!(grid_start(i64::MAX, i64::MAX, i64::MAX, i64::MAX), i64::MAX);
    }

    #[test]
    fn extreme_rows_neither_overflow_nor_loop() {
        assert_eq!(current_slot(5, 0, 100), 5);
        assert_eq!(next_slot(5, 0, 100), 6);
        // -infinity as the previous slot: a slot not after now, the next one after it.
        let now = 1_000 * S;
        let slot = current_slot(i64::MIN, 60 * S, now);
        assert!(slot <= now && now - slot < 60 * S);
        assert!(next_slot(i64::MIN, 60 * S, now) > now);
        assert_eq!(next_slot(i64::MAX - 1, i64::MAX, i64::MAX), i64::MAX);
        assert_eq!(slot_before(i64::MIN, 5), i64::MIN);
    }

    #[test]
    fn unmonitored_time_counts_the_slots_without_a_check() {
        const MIN: i64 = 60_000_000;
        const HOUR: i64 = 60 * MIN;
        // 50 hourly slots, 44 checked: 6 hours; the slot in flight at now is not counted.
        assert_eq!(
            unmonitored_micros(HOUR, 0, 0, 50 * HOUR, 51 * HOUR, 44),
            6 * HOUR
        );
        assert_eq!(
            unmonitored_micros(HOUR, 1, 0, 50 * HOUR, 50 * HOUR, 44),
            5 * HOUR
        );
        // Two regions: their missing slots averaged.
        assert_eq!(
            unmonitored_micros(MIN, 2, 0, 10 * MIN, HOUR, 17),
            MIN * 3 / 2
        );
        // More checks than slots, an empty or reversed range: nothing.
        assert_eq!(unmonitored_micros(MIN, 1, 0, 10 * MIN, HOUR, 11), 0);
        assert_eq!(unmonitored_micros(MIN, 1, 5 * MIN, 5 * MIN, HOUR, 0), 0);
        assert_eq!(unmonitored_micros(MIN, 1, 5 * MIN, 0, HOUR, 0), 0);
        // No interval below a second, no overflow.
        assert_eq!(unmonitored_micros(0, 1, 0, 10_000_000, HOUR, 0), 10_000_000);
        assert_eq!(
            unmonitored_micros(i64::MAX, 1, i64::MIN, i64::MAX, i64::MAX, 0),
            i64::MAX
        );
        assert!(
            unmonitored_micros(
                1_000_000,
                usize::MAX,
                i64::MIN,
                i64::MAX,
                i64::MAX,
                i64::MIN
            ) > 0
        );
    }
}
