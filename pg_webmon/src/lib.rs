//! pg_webmon: web availability monitoring inside PostgreSQL. Thin glue: settings, the
//! scheduler background worker and a few SQL functions; the schema is in `sql/`.

use pgrx::prelude::*;

mod alerts;
mod api;
mod bgw;
mod error;
mod gucs;
mod latency;
mod maintenance;
mod partitions;
mod scheduler;
mod statements;
mod timeline;
mod transactions;
mod vacuum;

::pgrx::pg_module_magic!();

extension_sql_file!("../../sql/schema.sql", name = "schema");
extension_sql_file!(
    "../../sql/queue.sql",
    name = "queue",
    requires = [
        "schema",
        monitor_problem,
        lease_slot,
        slot_after,
        grid_start,
        max_lease,
        error_kinds
    ]
);
extension_sql_file!(
    "../../sql/incidents.sql",
    name = "incidents",
    requires = ["queue"]
);
extension_sql_file!(
    "../../sql/alerts.sql",
    name = "alerts",
    requires = [
        "incidents",
        channel_settings_problem,
        alert_message,
        shown_url
    ]
);
extension_sql_file!(
    "../../sql/status.sql",
    name = "status",
    requires = ["alerts", slot_at, result_is_up]
);
extension_sql_file!(
    "../../sql/rollups.sql",
    name = "rollups",
    requires = [
        "status",
        latency_add,
        latency_merge_add,
        latency_combine,
        latency_final,
        latency_serialize,
        latency_deserialize,
        latency_percentile,
        latency_sum,
        latency_subtract,
        unmonitored_time,
        timeline_add,
        timeline_combine,
        timeline_final,
        timeline_serialize,
        timeline_deserialize,
        timeline_counts,
        timeline_histogram
    ]
);
extension_sql_file!(
    "../../sql/partitions.sql",
    name = "partitions",
    requires = ["rollups"]
);
extension_sql_file!("../../sql/finalize.sql", name = "finalize", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    gucs::init(preloading);
    if preloading {
        scheduler::register();
        maintenance::register();
    }
}

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Used by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "shared_preload_libraries = 'pg_webmon'",
            "pg_webmon.database = 'pgrx_tests'",
            "pg_webmon.scheduler_interval = '100ms'",
        ]
    }
}
