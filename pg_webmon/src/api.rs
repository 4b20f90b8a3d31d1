//! SQL functions written in Rust. The queue API itself is plain SQL in `sql/schema.sql`;
//! what lives here needs the rules of `webmon-core` (validation, slot arithmetic, error
//! kinds, config parsing). The C symbols of functions that an earlier release declared keep
//! their names and signatures (0.1.0: `validate_monitor`, `current_slot`, `run_maintenance`,
//! `import_monitors`; 0.2.0: every function here but `monitor_labels_problem`): a database
//! still on an older schema calls them until it is updated.

use crate::error::{or_raise, ApiError};
use crate::{gucs, partitions};
use pgrx::prelude::*;
use webmon_core::interval::IntervalParts;
use webmon_core::validate::{self, MonitorFields};
use webmon_core::{import, slots, verdict, ErrorKind};

/// How long a monitor whose stored values cannot run waits before it is reported again.
const PROBLEM_RETRY_MICROS: i64 = 3_600_000_000;

pub fn parts(interval: &Interval) -> IntervalParts {
    IntervalParts {
        months: interval.months(),
        days: interval.days(),
        micros: interval.micros(),
    }
}

/// Refuses an invalid monitor row; called by the `monitors_validate` trigger.
#[pg_extern(stable, parallel_safe)]
fn validate_monitor(
    url: &str,
    method: &str,
    headers: pgrx::JsonB,
    check_interval: Interval,
    timeout: Option<Interval>,
    regex: Option<&str>,
    expected_status_is_empty: bool,
) {
    let fields = MonitorFields {
        url,
        method,
        headers: &headers.0,
        check_interval: (parts(&check_interval), check_interval.to_string()),
        timeout: timeout.map(|t| (parts(&t), t.to_string())),
        regex,
        expected_status_is_empty,
    };
    or_raise(validate::validate_monitor(&fields));
}

/// Refuses a monitor whose url, headers or body is over its size limit; called by the
/// `monitors_validate` trigger.
#[pg_extern(immutable, parallel_safe)]
fn validate_monitor_size(url: &str, headers: pgrx::JsonB, body: Option<&str>) {
    or_raise(validate::validate_sizes(url, &headers.0, body));
}

/// Why a monitor's name, regex text or regions list breaks its limits, NULL when it does
/// not; the `monitors_validate` trigger raises it (22023), the 0.3.0 update counts rows.
#[pg_extern(immutable, parallel_safe)]
fn monitor_labels_problem(
    name: Option<&str>,
    regex: Option<&str>,
    regions: Option<Vec<Option<String>>>,
) -> Option<String> {
    validate::validate_labels(name, regex, regions.as_deref())
        .err()
        .map(|e| e.to_string())
}

/// Why a stored monitor cannot be scheduled or claimed (an interval or timeout the checks
/// cannot run with, written with triggers disabled or by an older version); NULL when it can.
#[pg_extern(immutable, parallel_safe)]
fn monitor_problem(check_interval: Interval, timeout: Option<Interval>) -> Option<String> {
    let problem =
        validate::validate_check_interval(parts(&check_interval), &check_interval.to_string())
            .err()
            .or_else(|| {
                timeout.and_then(|t| validate::validate_timeout(parts(&t), &t.to_string()).err())
            });
    problem.map(|e| format!("monitor not checked: {e}"))
}

fn micros(at: TimestampWithTimeZone) -> i64 {
    pg_sys::TimestampTz::from(at)
}

fn timestamp(micros: i64, fallback: TimestampWithTimeZone) -> TimestampWithTimeZone {
    TimestampWithTimeZone::try_from(micros).unwrap_or(fallback)
}

/// The slot a due monitor runs now: `previous` if not behind, else the latest whole-interval
/// slot not after `now` (see `webmon_core::slots`).
#[pg_extern(immutable, parallel_safe)]
fn current_slot(
    previous: TimestampWithTimeZone,
    check_interval: Interval,
    now: TimestampWithTimeZone,
) -> TimestampWithTimeZone {
    let Ok(interval) = parts(&check_interval).fixed_micros() else {
        return now;
    };
    timestamp(
        slots::current_slot(micros(previous), interval, micros(now)),
        previous,
    )
}

/// The slot after the one a due monitor runs now. A day is 24 hours. For an interval the
/// checks cannot run with, an hour from `now` (the scheduler reports such rows, see
/// `monitor_problem`). Never fails, whatever the row holds.
#[pg_extern(immutable, parallel_safe)]
fn next_slot(
    previous: TimestampWithTimeZone,
    check_interval: Interval,
    now: TimestampWithTimeZone,
) -> TimestampWithTimeZone {
    let now_micros = micros(now);
    let next = match validate::validate_check_interval(parts(&check_interval), "") {
        Ok(interval) => slots::next_slot(micros(previous), interval, now_micros),
        Err(_) => now_micros.saturating_add(PROBLEM_RETRY_MICROS),
    };
    timestamp(next, now)
}

/// The first slot of the grid `grid_start + k × check_interval` after `after` (see
/// `webmon_core::slots`). For an interval the checks cannot run with, an hour after `after`.
#[pg_extern(immutable, parallel_safe)]
fn slot_after(
    grid_start: TimestampWithTimeZone,
    check_interval: Interval,
    after: TimestampWithTimeZone,
) -> TimestampWithTimeZone {
    let next = match validate::validate_check_interval(parts(&check_interval), "") {
        Ok(interval) => slots::slot_after(micros(grid_start), interval, micros(after)),
        Err(_) => micros(after).saturating_add(PROBLEM_RETRY_MICROS),
    };
    timestamp(next, after)
}

/// The slot a due job is leased for (see `webmon_core::slots::lease_slot`); for an interval
/// the checks cannot run with, its own slot.
#[pg_extern(immutable, parallel_safe)]
fn lease_slot(
    scheduled_at: TimestampWithTimeZone,
    grid_start: TimestampWithTimeZone,
    check_interval: Interval,
    now: TimestampWithTimeZone,
) -> TimestampWithTimeZone {
    let interval = parts(&check_interval).fixed_micros().unwrap_or(0);
    timestamp(
        slots::lease_slot(
            micros(scheduled_at),
            micros(grid_start),
            interval,
            micros(now),
        ),
        scheduled_at,
    )
}

/// The slot of a job's grid that a time falls in (see `webmon_core::slots::slot_at`); the
/// time itself for an interval the checks cannot run with.
#[pg_extern(immutable, parallel_safe)]
fn slot_at(
    grid_start: TimestampWithTimeZone,
    check_interval: Interval,
    at: TimestampWithTimeZone,
) -> TimestampWithTimeZone {
    let interval = parts(&check_interval).fixed_micros().unwrap_or(0);
    timestamp(slots::slot_at(micros(grid_start), interval, micros(at)), at)
}

/// How long a monitor's slots in [from_ts, to_ts) went unchecked, given how many results of
/// its regions counted as checked (see `webmon_core::slots::unmonitored_micros`); its regions
/// are the distinct non-empty ones of `regions` (none: one).
#[pg_extern(stable, parallel_safe)]
fn unmonitored_time(
    check_interval: Interval,
    regions: Option<Vec<Option<String>>>,
    from_ts: TimestampWithTimeZone,
    to_ts: TimestampWithTimeZone,
    checked: i64,
) -> Interval {
    let interval = i64::try_from(check_interval.as_micros()).unwrap_or(i64::MAX);
    let distinct: std::collections::HashSet<String> = regions
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .filter(|region| !region.is_empty())
        .collect();
    // SAFETY: reads the start time of the current transaction, always set inside one.
    let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    Interval::from_micros(slots::unmonitored_micros(
        interval,
        distinct.len(),
        micros(from_ts),
        micros(to_ts),
        now,
        checked,
    ))
}

/// Where a monitor's grid of slots starts (see `webmon_core::slots::grid_start`).
#[pg_extern(immutable, parallel_safe)]
fn grid_start(
    monitor_id: i64,
    check_interval: Interval,
    next_check_at: TimestampWithTimeZone,
    now: TimestampWithTimeZone,
) -> TimestampWithTimeZone {
    let interval = parts(&check_interval).fixed_micros().unwrap_or(0);
    timestamp(
        slots::grid_start(monitor_id, interval, micros(next_check_at), micros(now)),
        next_check_at,
    )
}

/// The slot that `next` follows (`next` minus the interval, a day being 24 hours).
#[pg_extern(immutable, parallel_safe)]
fn slot_before(next: TimestampWithTimeZone, check_interval: Interval) -> TimestampWithTimeZone {
    match validate::validate_check_interval(parts(&check_interval), "") {
        Ok(interval) => timestamp(slots::slot_before(micros(next), interval), next),
        Err(_) => next,
    }
}

/// A monitor's timeout in whole milliseconds (rounded up) for the probe; NULL (the probe's
/// default) when it has none or one the checks cannot run with.
#[pg_extern(immutable, parallel_safe)]
fn timeout_ms(timeout: Option<Interval>) -> Option<i32> {
    let micros = validate::validate_timeout(parts(&timeout?), "").ok()?;
    i32::try_from((micros + 999) / 1000).ok()
}

/// `pg_webmon.max_lease` as the library holds it (a session cannot override it: the setting
/// is reload-only), for `webmon.claim_checks`.
#[pg_extern(stable, parallel_safe)]
fn max_lease() -> Option<Interval> {
    Interval::new(0, 0, i64::from(gucs::max_lease_s()) * 1_000_000).ok()
}

/// The error kinds `webmon.errors.error_kind` may hold (its CHECK constraint is built from it).
#[pg_extern(immutable, parallel_safe)]
fn error_kinds() -> Vec<String> {
    ErrorKind::names().into_iter().map(String::from).collect()
}

/// How long a probe must be unseen before a new probe may take over its id: results are kept
/// for `pg_webmon.retention` and dropped a whole partition at a time, plus a day of slack.
/// NULL (never) while those settings are invalid.
#[pg_extern(stable, parallel_safe)]
fn probe_id_reuse_after() -> Option<Interval> {
    const DAY: i64 = 86_400_000_000;
    let retention = gucs::retention_micros().ok()?;
    let partition = gucs::partition_interval_micros().ok()?;
    let micros = retention.checked_add(partition)?.checked_add(DAY)?;
    Interval::new(0, 0, micros).ok()
}

/// `pg_webmon.retention` as an interval: raw results older than this may be dropped, so
/// `webmon.run_rollups()` leaves their hours alone. An error while the setting is invalid.
#[pg_extern(stable, parallel_safe)]
fn results_retention() -> Interval {
    let micros = or_raise(gucs::retention_micros());
    or_raise(
        Interval::new(0, 0, micros)
            .map_err(|_| ApiError::Setting(format!("retention out of range: {micros} µs"))),
    )
}

/// Makes partitions ahead and drops expired ones; returns how many of each.
#[pg_extern]
fn run_maintenance() -> TableIterator<'static, (name!(created, i64), name!(dropped, i64))> {
    let (created, dropped) = or_raise(partitions::run_maintenance());
    TableIterator::once((created, dropped))
}

/// Imports the old app's `urls.config.<env>.json`; all or nothing. A monitor with the same
/// url and regex is updated, not duplicated. Returns the number of new monitors.
#[pg_extern]
fn import_monitors(config: pgrx::JsonB) -> i64 {
    or_raise(import_config(&config.0))
}

fn import_config(config: &serde_json::Value) -> Result<i64, ApiError> {
    let monitors = import::parse_config(config)?;
    let mut inserted = 0;
    for monitor in monitors {
        let timeout_ms = monitor.timeout_ms;
        let was_inserted = Spi::get_one_with_args::<bool>(
            "WITH updated AS (
                 UPDATE webmon.monitors
                 SET check_interval = make_interval(secs => $2),
                     timeout = make_interval(secs => $4 / 1000.0)
                 WHERE url = $1 AND regex IS NOT DISTINCT FROM $3
                 RETURNING id
             ), inserted AS (
                 INSERT INTO webmon.monitors (url, check_interval, regex, timeout)
                 SELECT $1, make_interval(secs => $2), $3, make_interval(secs => $4 / 1000.0)
                 WHERE NOT EXISTS (SELECT 1 FROM updated)
                 RETURNING id
             )
             SELECT EXISTS (SELECT 1 FROM inserted)",
            &[
                monitor.url.as_str().into(),
                (monitor.interval_seconds as f64).into(),
                monitor.regex.as_deref().into(),
                timeout_ms.map(|ms| ms as f64).into(),
            ],
        )?;
        if was_inserted == Some(true) {
            inserted += 1;
        }
    }
    Ok(inserted)
}

/// `expected_status` as `webmon_core::verdict` takes it (None: an empty range).
fn expected_range(
    range: Option<pgrx::datum::Range<i32>>,
) -> Option<(verdict::Bound, verdict::Bound)> {
    use pgrx::datum::RangeBound;
    let bound = |b: &RangeBound<i32>| match b {
        RangeBound::Infinite => verdict::Bound::Unbounded,
        RangeBound::Inclusive(v) => verdict::Bound::Inclusive(*v),
        RangeBound::Exclusive(v) => verdict::Bound::Exclusive(*v),
    };
    range.and_then(|range| match (range.lower(), range.upper()) {
        (Some(lower), Some(upper)) if !range.is_empty() => Some((bound(lower), bound(upper))),
        _ => None,
    })
}

/// What one result says about the site (see `webmon_core::verdict::result_is_up`): true
/// (up), false (down) or NULL (nobody checked it). In Rust rather than SQL: it runs for
/// every stored check, and a SQL function with a fixed search_path is not inlined.
#[pg_extern(immutable, parallel_safe)]
fn result_is_up(
    expected_status: Option<pgrx::datum::Range<i32>>,
    http_status_code: Option<i16>,
    regex_matched: Option<bool>,
    error_kind: Option<&str>,
) -> Option<bool> {
    verdict::result_is_up(
        expected_range(expected_status),
        http_status_code,
        regex_matched,
        error_kind,
    )
}

/// What a check says about the site: failed, slow, good or NULL (see
/// `webmon_core::verdict::check_outcome`).
#[pg_extern(immutable, parallel_safe)]
fn check_outcome(
    expected_status: Option<pgrx::datum::Range<i32>>,
    http_status_code: Option<i16>,
    regex_matched: Option<bool>,
    error_kind: Option<&str>,
    response_time_ms: Option<f32>,
    degraded_after_ms: Option<i32>,
) -> Option<&'static str> {
    verdict::check_outcome(
        expected_range(expected_status),
        http_status_code,
        regex_matched,
        error_kind,
        response_time_ms,
        degraded_after_ms,
    )
}

/// What a failed check got, in one line (see `webmon_core::verdict::failure_cause`).
#[pg_extern(immutable, parallel_safe)]
fn failure_cause(
    http_status_code: Option<i16>,
    regex_matched: Option<bool>,
    error_kind: Option<&str>,
    error: Option<&str>,
) -> String {
    verdict::failure_cause(http_status_code, regex_matched, error_kind, error)
}

/// A run of consecutive checks (failed, good or slow) after one more (see
/// `webmon_core::verdict::next_run`).
#[pg_extern(immutable, parallel_safe)]
fn next_run(run: &str, outcome: Option<&str>, previous: i32) -> i32 {
    verdict::next_run(run, outcome, previous)
}

/// A region's verdict after a check (see `webmon_core::verdict::next_verdict`).
#[pg_extern(immutable, parallel_safe)]
fn next_verdict(
    verdict: Option<&str>,
    outcome: Option<&str>,
    failed_run: i32,
    good_run: i32,
    slow_run: i32,
    down_after: i32,
    up_after: i32,
) -> Option<String> {
    let runs = verdict::Runs {
        failed: failed_run,
        good: good_run,
        slow: slow_run,
    };
    verdict::next_verdict(verdict, outcome, runs, down_after, up_after)
}
