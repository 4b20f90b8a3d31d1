//! `webmon-core`: the rules the pg_webmon extension and its probe must agree on, in plain
//! Rust so that `cargo test` runs them: what a valid monitor is (URL, method, headers, regex
//! with its size limit, interval and timeout bounds), the error kinds a check can end with,
//! slot and partition arithmetic, and how text is made storable.

pub mod alerts;
pub mod channels;
pub mod error_kind;
pub mod import;
pub mod interval;
pub mod latency;
pub mod partitions;
pub mod slots;
pub mod text;
pub mod timeline;
pub mod vacuum;
pub mod validate;
pub mod verdict;

pub use error_kind::ErrorKind;
