//! SQL functions written in Rust. The queue API itself is plain SQL in `sql/schema.sql`;
//! what lives here needs Rust crates (validation, config parsing) or Rust arithmetic.

use crate::error::{or_raise, ApiError};
use crate::{import, partitions, slots, validate};
use pgrx::prelude::*;

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
    or_raise(validate_monitor_fields(
        url,
        method,
        &headers.0,
        check_interval,
        timeout,
        regex,
        expected_status_is_empty,
    ));
}

fn validate_monitor_fields(
    url: &str,
    method: &str,
    headers: &serde_json::Value,
    check_interval: Interval,
    timeout: Option<Interval>,
    regex: Option<&str>,
    expected_status_is_empty: bool,
) -> Result<(), ApiError> {
    validate::validate_url(url)?;
    validate::validate_method(method)?;
    validate::validate_headers(headers)?;
    validate::validate_check_interval(check_interval.as_micros(), &check_interval.to_string())?;
    if let Some(timeout) = timeout {
        validate::validate_timeout(timeout.as_micros(), &timeout.to_string())?;
    }
    if let Some(regex) = regex {
        validate::validate_regex(regex)?;
    }
    if expected_status_is_empty {
        return Err(validate::ValidationError::EmptyExpectedStatus.into());
    }
    Ok(())
}

/// The slot a due monitor runs now: `previous` if not behind, else the latest whole-interval
/// slot not after `now` (see `slots.rs`).
#[pg_extern(immutable, parallel_safe)]
fn current_slot(
    previous: TimestampWithTimeZone,
    check_interval: Interval,
    now: TimestampWithTimeZone,
) -> TimestampWithTimeZone {
    let interval = i64::try_from(check_interval.as_micros()).unwrap_or(i64::MAX);
    let slot = slots::current_slot(previous.into(), interval, now.into());
    TimestampWithTimeZone::try_from(slot).unwrap_or(previous)
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
