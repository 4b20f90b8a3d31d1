//! Interval rules. PostgreSQL stores an interval as months, days and microseconds and adds
//! months by the calendar; pg_webmon counts a day as exactly 24 hours and does every slot
//! computation in microseconds (`slots.rs`). So the values it accepts are those on which the
//! two cannot disagree: no month or year part, no mixed signs, and bounded.

use thiserror::Error;

pub const MICROS_PER_SECOND: i64 = 1_000_000;
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// Shortest check interval.
pub const MIN_CHECK_INTERVAL_MICROS: i64 = MICROS_PER_SECOND;
/// Longest check interval: a year of 365 days.
pub const MAX_CHECK_INTERVAL_MICROS: i64 = 365 * MICROS_PER_DAY;
/// Longest check timeout.
pub const MAX_TIMEOUT_MICROS: i64 = 5 * 60 * MICROS_PER_SECOND;

/// An interval as PostgreSQL stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalParts {
    pub months: i32,
    pub days: i32,
    pub micros: i64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum IntervalError {
    #[error("months and years have no fixed length; use days")]
    Months,
    #[error("its parts have different signs")]
    MixedSigns,
    #[error("it must be at least {min} and at most {max}")]
    OutOfBounds {
        min: &'static str,
        max: &'static str,
    },
}

impl IntervalParts {
    /// Its length in microseconds with a day of 24 hours, when that length is unambiguous.
    pub fn fixed_micros(self) -> Result<i64, IntervalError> {
        if self.months != 0 {
            return Err(IntervalError::Months);
        }
        if (self.days > 0 && self.micros < 0) || (self.days < 0 && self.micros > 0) {
            return Err(IntervalError::MixedSigns);
        }
        // i32 days * 86.4e9 fits in i64 (2^31 * 2^37 = 2^68 does not, so use i128).
        let total = i128::from(self.days) * i128::from(MICROS_PER_DAY) + i128::from(self.micros);
        i64::try_from(total).map_err(|_| IntervalError::OutOfBounds { min: "-", max: "-" })
    }
}

fn bounded(
    parts: IntervalParts,
    min: i64,
    max: i64,
    shown: (&'static str, &'static str),
) -> Result<i64, IntervalError> {
    let out = || IntervalError::OutOfBounds {
        min: shown.0,
        max: shown.1,
    };
    let micros = parts.fixed_micros().map_err(|e| match e {
        IntervalError::OutOfBounds { .. } => out(),
        other => other,
    })?;
    if micros < min || micros > max {
        return Err(out());
    }
    Ok(micros)
}

/// A monitor's `check_interval`: 1 second to 365 days.
pub fn check_interval_micros(parts: IntervalParts) -> Result<i64, IntervalError> {
    bounded(
        parts,
        MIN_CHECK_INTERVAL_MICROS,
        MAX_CHECK_INTERVAL_MICROS,
        ("1 second", "365 days"),
    )
}

/// A monitor's `timeout`: above 0, at most 5 minutes.
pub fn timeout_micros(parts: IntervalParts) -> Result<i64, IntervalError> {
    bounded(parts, 1, MAX_TIMEOUT_MICROS, ("1 microsecond", "5 minutes"))
}

/// A positive setting such as `pg_webmon.retention`, between `min` and `max` microseconds.
pub fn setting_micros(
    parts: IntervalParts,
    min: i64,
    max: i64,
    shown: (&'static str, &'static str),
) -> Result<i64, IntervalError> {
    bounded(parts, min, max, shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(months: i32, days: i32, micros: i64) -> IntervalParts {
        IntervalParts {
            months,
            days,
            micros,
        }
    }

    #[test]
    fn plain_intervals_are_their_length() {
        assert_eq!(
            check_interval_micros(parts(0, 0, MICROS_PER_SECOND)),
            Ok(MICROS_PER_SECOND)
        );
        assert_eq!(
            check_interval_micros(parts(0, 1, 3_600 * MICROS_PER_SECOND)),
            Ok(MICROS_PER_DAY + 3_600 * MICROS_PER_SECOND)
        );
        assert_eq!(
            check_interval_micros(parts(0, 365, 0)),
            Ok(MAX_CHECK_INTERVAL_MICROS)
        );
        assert_eq!(timeout_micros(parts(0, 0, 1)), Ok(1));
    }

    #[test]
    fn the_values_of_the_issue_are_refused() {
        // '300000 years': months.
        assert_eq!(
            check_interval_micros(parts(3_600_000, 0, 0)),
            Err(IntervalError::Months)
        );
        // '10 years -3600 days 1 second' (would pass as 1 s if a month were 30 days).
        assert_eq!(
            timeout_micros(parts(120, -3600, MICROS_PER_SECOND)),
            Err(IntervalError::Months)
        );
        // '-10 years 3601 days'.
        assert_eq!(
            check_interval_micros(parts(-120, 3601, 0)),
            Err(IntervalError::Months)
        );
        // '1 day -1 second': mixed signs.
        assert_eq!(
            check_interval_micros(parts(0, 1, -MICROS_PER_SECOND)),
            Err(IntervalError::MixedSigns)
        );
        assert_eq!(
            check_interval_micros(parts(0, -1, MICROS_PER_SECOND)),
            Err(IntervalError::MixedSigns)
        );
    }

    #[test]
    fn bounds_hold_at_the_edges() {
        assert!(check_interval_micros(parts(0, 0, MICROS_PER_SECOND - 1)).is_err());
        assert!(check_interval_micros(parts(0, 365, 1)).is_err());
        assert!(check_interval_micros(parts(0, i32::MAX, i64::MAX)).is_err());
        assert!(check_interval_micros(parts(0, i32::MIN, i64::MIN)).is_err());
        assert!(timeout_micros(parts(0, 0, 0)).is_err());
        assert!(timeout_micros(parts(0, 0, -1)).is_err());
        assert!(timeout_micros(parts(0, 0, MAX_TIMEOUT_MICROS + 1)).is_err());
        assert!(timeout_micros(parts(0, 1, 0)).is_err());
    }
}
