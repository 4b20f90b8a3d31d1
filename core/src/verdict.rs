//! What one result says about the site: the rule `webmon.result_is_up()` applies in SQL
//! (for `monitor_status`, `complete_checks` and incidents).

use crate::ErrorKind;

/// One end of `expected_status` (an `int4range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Unbounded,
    Inclusive(i32),
    Exclusive(i32),
}

/// Whether `status` lies within a non-empty range with these ends.
pub fn in_range(lower: Bound, upper: Bound, status: i32) -> bool {
    let above = match lower {
        Bound::Unbounded => true,
        Bound::Inclusive(l) => status >= l,
        Bound::Exclusive(l) => status > l,
    };
    let below = match upper {
        Bound::Unbounded => true,
        Bound::Inclusive(u) => status <= u,
        Bound::Exclusive(u) => status < u,
    };
    above && below
}

/// Up (`Some(true)`): a response whose status is in `expected` (None: an empty range) and
/// whose regex, if any, matched. Down (`Some(false)`): any other response, or an error. Says
/// nothing (`None`): nobody checked it (`no_probe`, `lost`: the monitoring's failure, not
/// the site's), or a row with neither a status nor an error.
pub fn result_is_up(
    expected: Option<(Bound, Bound)>,
    status: Option<i16>,
    regex_matched: Option<bool>,
    error_kind: Option<&str>,
) -> Option<bool> {
    match error_kind {
        Some(kind) => match ErrorKind::parse(kind) {
            Some(ErrorKind::NoProbe | ErrorKind::Lost) => None,
            _ => Some(false),
        },
        None => {
            let status = i32::from(status?);
            let in_expected = expected.is_some_and(|(lower, upper)| in_range(lower, upper, status));
            Some(in_expected && regex_matched != Some(false))
        }
    }
}

/// What a check says about the site: `failed` (not up), `slow` (up, but slower than
/// `degraded_after_ms`), `good`, or None (nobody checked it, or no status).
pub fn check_outcome(
    expected: Option<(Bound, Bound)>,
    status: Option<i16>,
    regex_matched: Option<bool>,
    error_kind: Option<&str>,
    response_ms: Option<f32>,
    degraded_after_ms: Option<i32>,
) -> Option<&'static str> {
    let up = result_is_up(expected, status, regex_matched, error_kind)?;
    let slow = match (response_ms, degraded_after_ms) {
        (Some(took), Some(limit)) => f64::from(took) > f64::from(limit),
        _ => false,
    };
    Some(match (up, slow) {
        (false, _) => "failed",
        (true, true) => "slow",
        (true, false) => "good",
    })
}

/// What a failed check got, in one line for an incident: its error kind and message, or its
/// status (and that the regex did not match). At most 300 characters; never the URL
/// (probes keep URLs out of error messages).
pub fn failure_cause(
    status: Option<i16>,
    regex_matched: Option<bool>,
    error_kind: Option<&str>,
    error: Option<&str>,
) -> String {
    let cause = match (error_kind, status) {
        (Some(kind), _) => format!("{kind}: {}", error.unwrap_or("")),
        (None, Some(status)) if regex_matched == Some(false) => {
            format!("status {status}, regex not matched")
        }
        (None, Some(status)) => format!("status {status}"),
        (None, None) => "no status".to_string(),
    };
    cause.chars().take(300).collect()
}

/// A region's verdict after a check (`outcome`: `failed`, `slow`, `good`, or None when the
/// check says nothing), from the runs before it: down after `down_after` failed checks in a
/// row, and until `up_after` good ones (slow or not); degraded after `down_after` slow checks
/// in a row, until a fast one; up after any other good check; unchanged by a failure below
/// `down_after` or a check that says nothing. None: not known yet.
pub fn next_verdict(
    verdict: Option<&str>,
    outcome: Option<&str>,
    runs: Runs,
    down_after: i32,
    up_after: i32,
) -> Option<String> {
    if !matches!(outcome, Some("failed" | "slow" | "good")) {
        return verdict.map(str::to_string);
    }
    let failed = next_run("failed", outcome, runs.failed);
    let good = next_run("good", outcome, runs.good);
    let slow = next_run("slow", outcome, runs.slow);
    let next = if failed >= down_after || (verdict == Some("down") && good < up_after) {
        "down"
    } else if slow >= down_after {
        "degraded"
    } else if good > 0 {
        "up"
    } else {
        return verdict.map(str::to_string);
    };
    Some(next.to_string())
}

/// A run of consecutive checks after one more (`run`: `failed`, `good` — slow or not — or
/// `slow`): one longer when the check belongs to it, 0 when it breaks it, the same when the
/// check says nothing (`outcome` None or unknown).
pub fn next_run(run: &str, outcome: Option<&str>, previous: i32) -> i32 {
    let belongs = match (run, outcome) {
        (_, None) => return previous,
        ("failed", Some("failed")) => true,
        ("good", Some("good" | "slow")) => true,
        ("slow", Some("slow")) => true,
        (_, Some("failed" | "good" | "slow")) => false,
        _ => return previous,
    };
    if belongs {
        previous.saturating_add(1)
    } else {
        0
    }
}

/// A region's runs of consecutive checks before this one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Runs {
    pub failed: i32,
    pub good: i32,
    pub slow: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: Option<(Bound, Bound)> = Some((Bound::Inclusive(200), Bound::Exclusive(400)));

    #[test]
    fn a_response_is_up_when_its_status_is_expected_and_its_regex_matched() {
        assert_eq!(result_is_up(DEFAULT, Some(200), None, None), Some(true));
        assert_eq!(
            result_is_up(DEFAULT, Some(399), Some(true), None),
            Some(true)
        );
        assert_eq!(result_is_up(DEFAULT, Some(400), None, None), Some(false));
        assert_eq!(result_is_up(DEFAULT, Some(199), None, None), Some(false));
        assert_eq!(
            result_is_up(DEFAULT, Some(200), Some(false), None),
            Some(false)
        );
        assert_eq!(result_is_up(None, Some(200), None, None), Some(false));
        let open = Some((Bound::Exclusive(199), Bound::Unbounded));
        assert_eq!(result_is_up(open, Some(200), None, None), Some(true));
        assert_eq!(result_is_up(open, Some(199), None, None), Some(false));
        let closed = Some((Bound::Unbounded, Bound::Inclusive(204)));
        assert_eq!(result_is_up(closed, Some(204), None, None), Some(true));
    }

    #[test]
    fn an_error_is_down_unless_nobody_checked() {
        assert_eq!(
            result_is_up(DEFAULT, None, None, Some("timeout")),
            Some(false)
        );
        assert_eq!(
            result_is_up(DEFAULT, None, None, Some("something new")),
            Some(false)
        );
        assert_eq!(result_is_up(DEFAULT, None, None, Some("no_probe")), None);
        assert_eq!(result_is_up(DEFAULT, None, None, Some("lost")), None);
        assert_eq!(result_is_up(DEFAULT, None, None, None), None);
    }

    fn step(
        verdict: Option<&str>,
        outcome: &str,
        runs: (i32, i32, i32),
        down: i32,
        up: i32,
    ) -> Option<String> {
        let runs = Runs {
            failed: runs.0,
            good: runs.1,
            slow: runs.2,
        };
        next_verdict(verdict, Some(outcome), runs, down, up)
    }

    #[test]
    fn down_after_failures_in_a_row_and_up_after_good_checks_in_a_row() {
        assert_eq!(step(None, "good", (0, 0, 0), 2, 1).as_deref(), Some("up"));
        assert_eq!(step(None, "failed", (0, 0, 0), 2, 1), None);
        assert_eq!(
            step(Some("up"), "failed", (0, 5, 0), 2, 1).as_deref(),
            Some("up")
        );
        assert_eq!(
            step(Some("up"), "failed", (1, 0, 0), 2, 1).as_deref(),
            Some("down")
        );
        assert_eq!(
            step(Some("down"), "good", (3, 0, 0), 2, 2).as_deref(),
            Some("down")
        );
        assert_eq!(
            step(Some("down"), "failed", (0, 1, 0), 2, 2).as_deref(),
            Some("down")
        );
        assert_eq!(
            step(Some("down"), "good", (0, 1, 0), 2, 2).as_deref(),
            Some("up")
        );
        // Slow checks count as good for a recovery.
        assert_eq!(
            step(Some("down"), "slow", (0, 1, 1), 3, 2).as_deref(),
            Some("up")
        );
        assert_eq!(
            next_verdict(Some("down"), None, Runs::default(), 2, 1).as_deref(),
            Some("down")
        );
    }

    #[test]
    fn degraded_after_slow_checks_in_a_row_until_a_fast_one() {
        assert_eq!(
            step(Some("up"), "slow", (0, 4, 0), 2, 1).as_deref(),
            Some("up")
        );
        assert_eq!(
            step(Some("up"), "slow", (0, 5, 1), 2, 1).as_deref(),
            Some("degraded")
        );
        assert_eq!(
            step(Some("degraded"), "slow", (0, 6, 2), 2, 1).as_deref(),
            Some("degraded")
        );
        assert_eq!(
            step(Some("degraded"), "good", (0, 7, 3), 2, 1).as_deref(),
            Some("up")
        );
        // A failure below down_after keeps it degraded; more make it down.
        assert_eq!(
            step(Some("degraded"), "failed", (0, 7, 3), 2, 1).as_deref(),
            Some("degraded")
        );
        assert_eq!(
            step(Some("degraded"), "failed", (1, 0, 0), 2, 1).as_deref(),
            Some("down")
        );
        assert_eq!(
            step(Some("up"), "failed", (i32::MAX, 0, 0), 2, 1).as_deref(),
            Some("down")
        );
    }

    #[test]
    fn runs_grow_with_their_checks_and_break_on_others() {
        assert_eq!(next_run("failed", Some("failed"), 2), 3);
        assert_eq!(next_run("failed", Some("slow"), 2), 0);
        assert_eq!(next_run("good", Some("slow"), 2), 3);
        assert_eq!(next_run("good", Some("failed"), 2), 0);
        assert_eq!(next_run("slow", Some("good"), 2), 0);
        assert_eq!(next_run("slow", None, 2), 2);
        assert_eq!(next_run("failed", Some("failed"), i32::MAX), i32::MAX);
    }

    #[test]
    fn a_good_check_over_degraded_after_ms_is_slow() {
        assert_eq!(
            check_outcome(DEFAULT, Some(200), None, None, Some(501.0), Some(500)),
            Some("slow")
        );
        assert_eq!(
            check_outcome(DEFAULT, Some(200), None, None, Some(500.0), Some(500)),
            Some("good")
        );
        assert_eq!(
            check_outcome(DEFAULT, Some(200), None, None, Some(9e9), None),
            Some("good")
        );
        assert_eq!(
            check_outcome(DEFAULT, Some(500), None, None, Some(9e9), Some(1)),
            Some("failed")
        );
        assert_eq!(
            check_outcome(DEFAULT, None, None, Some("lost"), None, Some(1)),
            None
        );
    }

    #[test]
    fn a_cause_says_what_the_check_got() {
        assert_eq!(failure_cause(Some(503), None, None, None), "status 503");
        assert_eq!(
            failure_cause(Some(200), Some(false), None, None),
            "status 200, regex not matched"
        );
        assert_eq!(
            failure_cause(None, None, Some("connect"), Some("refused")),
            "connect: refused"
        );
        assert_eq!(
            failure_cause(None, None, Some("x"), Some(&"é".repeat(2000)))
                .chars()
                .count(),
            300
        );
    }
}
