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

fn clamp(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
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
}
