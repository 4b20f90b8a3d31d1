//! Slot arithmetic for the scheduler: checks start on whole multiples of the interval
//! from a monitor's first slot, so they never drift, and a monitor that fell behind
//! gets one check for its latest slot, never a burst of catch-ups.

/// The slot to run now: `previous` when it is not yet behind, else the latest slot
/// `previous + k * interval` that is not after `now`. All values in microseconds.
pub fn current_slot(previous: i64, interval: i64, now: i64) -> i64 {
    if interval <= 0 || now <= previous {
        return previous;
    }
    let missed = (now - previous) / interval;
    previous.saturating_add(missed.saturating_mul(interval))
}

/// The slot after the one that runs now (used by tests to walk the grid).
#[cfg(test)]
pub fn next_slot(previous: i64, interval: i64, now: i64) -> i64 {
    current_slot(previous, interval, now).saturating_add(interval.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    const S: i64 = 1_000_000;

    #[test]
    fn on_time_runs_its_own_slot() {
        assert_eq!(current_slot(100 * S, 60 * S, 100 * S), 100 * S);
        assert_eq!(next_slot(100 * S, 60 * S, 100 * S), 160 * S);
    }

    #[test]
    fn a_future_slot_is_kept() {
        // Enqueued ahead of time (lookahead): the slot itself, not now.
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
        // 10 intervals and a bit behind: one check for the 700 s slot, then 760 s.
        let now = 100 * S + 10 * 60 * S + 5 * S;
        assert_eq!(current_slot(100 * S, 60 * S, now), 700 * S);
        assert_eq!(next_slot(100 * S, 60 * S, now), 760 * S);
        assert!(next_slot(100 * S, 60 * S, now) > now);
    }

    #[test]
    fn many_ticks_never_drift() {
        // Simulate a scheduler that runs each check 0–900 ms late for a day.
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
    fn degenerate_interval_does_not_loop() {
        assert_eq!(current_slot(5, 0, 100), 5);
        assert_eq!(next_slot(5, 0, 100), 6);
    }
}
