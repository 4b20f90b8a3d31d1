//! Settings (`pg_webmon.*`). All but `database` take effect on reload (SIGHUP), no restart.

use crate::error::ApiError;
use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::{CStr, CString};

const PARTITION_INTERVAL_NAME: &str = "pg_webmon.partition_interval";
const RETENTION_NAME: &str = "pg_webmon.retention";
const ROLLUP_RETENTION_NAME: &str = "pg_webmon.rollup_retention";

/// Database the scheduler connects to (like pg_cron's `cron.database_name`). Restart to change.
static DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
/// Milliseconds between scheduler ticks.
static SCHEDULER_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(200);
/// How far ahead of its slot a check is queued, so probes can start it on time.
static LOOKAHEAD_MS: GucSetting<i32> = GucSetting::<i32>::new(1000);
/// Most checks queued in one tick.
static MAX_JOBS_PER_TICK: GucSetting<i32> = GucSetting::<i32>::new(50_000);
/// Leases a job may expire before it is recorded as `lost`.
static MAX_ATTEMPTS: GucSetting<i32> = GucSetting::<i32>::new(3);
/// Longest lease a probe may take on a claimed check (seconds); read by webmon.claim_checks.
static MAX_LEASE_S: GucSetting<i32> = GucSetting::<i32>::new(3600);
/// Seconds a queued check may wait for a probe before it is recorded as `no_probe`.
static UNCLAIMED_TIMEOUT_S: GucSetting<i32> = GucSetting::<i32>::new(120);
/// Seconds between partition maintenance runs of the scheduler.
static MAINTENANCE_INTERVAL_S: GucSetting<i32> = GucSetting::<i32>::new(300);
/// Seconds between the maintenance worker's vacuums of webmon.jobs (0: autovacuum only).
static QUEUE_VACUUM_INTERVAL_S: GucSetting<i32> = GucSetting::<i32>::new(5);
/// Seconds after which an undelivered notification is given up.
static NOTIFICATION_GIVE_UP_S: GucSetting<i32> = GucSetting::<i32>::new(86_400);
/// Span of one partition of webmon.metrics / webmon.errors (at least 1 hour, no months).
static PARTITION_INTERVAL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"1 day"));
/// Upper bound of `pg_webmon.partition_premake` (a year of daily partitions). One run makes at
/// most `partitions::MAX_CREATED_PER_RUN` per table, so whatever the premake, one maintenance
/// transaction stays a small part of the lock table; a large premake fills over a few runs.
const MAX_PREMAKE: i32 = 365;
/// Partitions made ahead of the current one.
static PARTITION_PREMAKE: GucSetting<i32> = GucSetting::<i32>::new(7);
/// How long results are kept; older partitions are dropped.
static RETENTION: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"30 days"));
/// How long hourly and daily rollups are kept; older partitions are dropped.
static ROLLUP_RETENTION: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"400 days"));

/// Defines the settings. `preloading`: loaded from shared_preload_libraries, the only
/// time a restart-only setting (`pg_webmon.database`) may be defined.
pub fn init(preloading: bool) {
    if preloading {
        GucRegistry::define_string_guc(
            c"pg_webmon.database",
            c"Database in which the pg_webmon scheduler runs.",
            c"Create the extension in this database. Changing it needs a restart.",
            &DATABASE,
            GucContext::Postmaster,
            GucFlags::default(),
        );
    }
    GucRegistry::define_int_guc(
        c"pg_webmon.scheduler_interval",
        c"Time between scheduler ticks.",
        c"Each tick queues due checks, requeues expired leases and, now and then, maintains partitions.",
        &SCHEDULER_INTERVAL_MS,
        10,
        60_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"pg_webmon.lookahead",
        c"How far ahead of a slot the scheduler wakes the probes.",
        c"Probes claim checks this far ahead and start each at its slot.",
        &LOOKAHEAD_MS,
        0,
        60_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"pg_webmon.max_jobs_per_tick",
        c"Most checks one sweep requeues, or records as lost or no_probe, per region.",
        c"",
        &MAX_JOBS_PER_TICK,
        1,
        10_000_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_webmon.max_attempts",
        c"Expired leases after which a check is recorded as lost.",
        c"",
        &MAX_ATTEMPTS,
        1,
        100,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_webmon.max_lease",
        c"Longest lease a probe may take on a claimed check.",
        c"webmon.claim_checks refuses a lease above this (or not above 0): an endless lease would hold its checks forever.",
        &MAX_LEASE_S,
        1,
        7 * 86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pg_webmon.unclaimed_timeout",
        c"Time a queued check may wait for a probe before it is recorded as no_probe.",
        c"A check that no probe claims (no live probe in its regions, or all busy) is removed from the queue after this and recorded in webmon.errors.",
        &UNCLAIMED_TIMEOUT_S,
        1,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pg_webmon.maintenance_interval",
        c"Time between partition maintenance runs of the scheduler.",
        c"",
        &MAINTENANCE_INTERVAL_S,
        1,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pg_webmon.queue_vacuum_interval",
        c"Time between the maintenance worker's vacuums of the check queue (0: autovacuum only).",
        c"Each claim leaves a dead entry at the head of the queue's index; vacuuming webmon.jobs this often (when it has dead rows) keeps claims from reading through them.",
        &QUEUE_VACUUM_INTERVAL_S,
        0,
        3600,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pg_webmon.notification_give_up",
        c"Time after which an undelivered notification is given up.",
        c"Probes retry a failed delivery with a backoff of 1 s doubling to 5 minutes; a notification not delivered this long after it was written is marked gave_up_at, with its last error.",
        &NOTIFICATION_GIVE_UP_S,
        60,
        30 * 86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_string_guc(
        c"pg_webmon.partition_interval",
        c"Span of one partition of webmon.metrics and webmon.errors.",
        c"An interval of at least 1 hour without months, e.g. '1 day' or '6 hours'.",
        &PARTITION_INTERVAL,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_webmon.partition_premake",
        c"Partitions made ahead of the current one.",
        c"",
        &PARTITION_PREMAKE,
        0,
        MAX_PREMAKE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pg_webmon.retention",
        c"How long results are kept.",
        c"Partitions whose whole range is older than this are dropped by run_maintenance().",
        &RETENTION,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pg_webmon.rollup_retention",
        c"How long hourly and daily rollups are kept.",
        c"Rollup partitions (30 days each) whose whole range is older than this are dropped by run_maintenance().",
        &ROLLUP_RETENTION,
        GucContext::Sighup,
        GucFlags::default(),
    );
}

fn string(setting: &GucSetting<Option<CString>>, default: &CStr) -> String {
    setting
        .get()
        .unwrap_or_else(|| default.to_owned())
        .to_string_lossy()
        .into_owned()
}

pub fn database() -> String {
    string(&DATABASE, c"postgres")
}
pub fn scheduler_interval_ms() -> u64 {
    u64::try_from(SCHEDULER_INTERVAL_MS.get()).unwrap_or(200)
}
pub fn lookahead_ms() -> i32 {
    LOOKAHEAD_MS.get()
}
pub fn max_jobs_per_tick() -> i32 {
    MAX_JOBS_PER_TICK.get()
}
pub fn max_attempts() -> i32 {
    MAX_ATTEMPTS.get()
}
pub fn max_lease_s() -> i32 {
    MAX_LEASE_S.get()
}
pub fn unclaimed_timeout_s() -> i32 {
    UNCLAIMED_TIMEOUT_S.get()
}
pub fn maintenance_interval_s() -> u64 {
    u64::try_from(MAINTENANCE_INTERVAL_S.get()).unwrap_or(300)
}
/// None: leave webmon.jobs to autovacuum.
pub fn queue_vacuum_interval() -> Option<std::time::Duration> {
    u64::try_from(QUEUE_VACUUM_INTERVAL_S.get())
        .ok()
        .filter(|&s| s > 0)
        .map(std::time::Duration::from_secs)
}
pub fn notification_give_up_s() -> i32 {
    NOTIFICATION_GIVE_UP_S.get()
}
pub fn partition_interval() -> String {
    string(&PARTITION_INTERVAL, c"1 day")
}
pub fn partition_premake() -> i32 {
    PARTITION_PREMAKE.get()
}
pub fn retention() -> String {
    string(&RETENTION, c"30 days")
}
pub fn rollup_retention() -> String {
    string(&ROLLUP_RETENTION, c"400 days")
}

/// `pg_webmon.partition_interval` in microseconds: 1 hour to 366 days.
pub fn partition_interval_micros() -> Result<i64, ApiError> {
    interval_micros(
        PARTITION_INTERVAL_NAME,
        &partition_interval(),
        HOUR,
        366 * DAY,
        ("1 hour", "366 days"),
    )
}

/// `pg_webmon.retention` in microseconds: 1 hour to 100 years of 365 days.
pub fn retention_micros() -> Result<i64, ApiError> {
    interval_micros(
        RETENTION_NAME,
        &retention(),
        HOUR,
        36_500 * DAY,
        ("1 hour", "36500 days"),
    )
}

/// `pg_webmon.rollup_retention` in microseconds: 1 day to 100 years of 365 days.
pub fn rollup_retention_micros() -> Result<i64, ApiError> {
    interval_micros(
        ROLLUP_RETENTION_NAME,
        &rollup_retention(),
        DAY,
        36_500 * DAY,
        ("1 day", "36500 days"),
    )
}

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;

/// Length of an interval-valued setting by the rules of `webmon_core::interval` (no months,
/// no mixed signs, bounded).
fn interval_micros(
    name: &str,
    value: &str,
    min: i64,
    max: i64,
    shown: (&'static str, &'static str),
) -> Result<i64, ApiError> {
    let bad = |reason: String| ApiError::Setting(format!("invalid {name} \"{value}\": {reason}"));
    let parsed = Spi::get_one_with_args::<Interval>("SELECT $1::interval", &[value.into()])?
        .ok_or_else(|| bad("not an interval".to_string()))?;
    webmon_core::interval::setting_micros(crate::api::parts(&parsed), min, max, shown)
        .map_err(|e| bad(e.to_string()))
}
