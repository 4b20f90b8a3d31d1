//! When the maintenance worker vacuums the check queue (`pg_webmon/src/vacuum.rs`).

/// Fewer dead rows than this are left to autovacuum.
const MIN_DEAD_ROWS: i64 = 1000;

/// Whether a vacuum of `webmon.jobs` is worth its scan of the table and its indexes: at
/// least `MIN_DEAD_ROWS` dead rows, and at least 5 % of the live ones.
pub fn worth_it(dead: i64, live: i64) -> bool {
    dead >= MIN_DEAD_ROWS.max(live / 20)
}

#[cfg(test)]
mod tests {
    use super::worth_it;

    #[test]
    fn a_vacuum_needs_a_thousand_dead_rows_and_five_percent_of_the_live_ones() {
        assert!(!worth_it(999, 0));
        assert!(worth_it(1000, 100));
        assert!(worth_it(1500, 30_000));
        assert!(!worth_it(1499, 30_000));
        assert!(!worth_it(49_999, 1_000_000));
        assert!(worth_it(50_000, 1_000_000));
    }
}
