//! webmon-worker, the pg_webmon probe. The pipeline reads top to bottom:
//! `claim` (lease checks) → `probe` (HTTP and regex; `redirect` and the target `guard`) →
//! `sink` (batched writes); beside them `alerts` delivers notifications; `run` wires them
//! together with shutdown, `config`, `db` and `runtime` set them up.

pub mod alerts;
pub mod causes;
pub mod claim;
pub mod commands;
pub mod config;
pub mod db;
pub mod db_tls;
pub mod demo_target;
pub mod guard;
pub mod probe;
pub mod redirect;
pub mod run;
pub mod runtime;
pub mod sink;
pub mod stats;
