//! SQL functions of alerts that need the rules of `webmon-core`: which channel settings are
//! valid (the probe delivers by the same rules) and what an alert says.

use pgrx::prelude::*;
use webmon_core::{alerts, channels};

/// Why a channel's settings are refused (`webmon_core::channels`), NULL when they are fine;
/// the `channels_validate` trigger raises it (SQLSTATE 22023).
#[pg_extern(immutable, parallel_safe)]
fn channel_settings_problem(kind: &str, settings: pgrx::JsonB) -> Option<String> {
    channels::settings_problem(kind, &settings.0)
}

/// A monitor's URL without credentials, query or fragment (`webmon_core::alerts::shown_url`).
#[pg_extern(immutable, parallel_safe)]
fn shown_url(url: &str) -> String {
    alerts::shown_url(url)
}

/// The line of an alert (`webmon_core::alerts::message`).
#[pg_extern(immutable, parallel_safe)]
fn alert_message(
    event: &str,
    kind: &str,
    name: &str,
    url: &str,
    since: &str,
    duration_s: Option<f64>,
    cause: Option<&str>,
) -> String {
    alerts::message(&alerts::Alert {
        event,
        kind,
        name,
        url,
        since,
        duration_s,
        cause,
    })
}
