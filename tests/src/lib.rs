//! Test harness shared by the end-to-end tests and the benchmark: a real PostgreSQL cluster
//! with the extension preloaded, the real `webmon-worker` binary, and HTTP/TLS targets
//! in-process on 127.0.0.1.

pub mod cluster;
pub mod probe;
pub mod receivers;
pub mod targets;

use std::time::{Duration, Instant};

/// Polls `condition` every 50 ms until it is true or `timeout` passes; returns the last value.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
