//! `webmon-worker demo-target`: a small local HTTP server with endpoints that behave like
//! real sites (healthy, slow, failing, flaky, matching a regex), so the example monitors
//! show meaningful data on a machine without internet.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use std::time::Duration;

pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { "pg_webmon demo target: /healthy /slow /error /flaky /regex /not-found /delay/{ms}\n" }))
        .route("/healthy", get(|| async { "OK\n" }))
        .route("/slow", get(|| delayed(1500, StatusCode::OK)))
        .route("/error", get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n") }))
        .route("/flaky", get(flaky))
        .route("/regex", get(|| async { r#"{"status": "ok", "version": "1.4.2", "db": "connected"}"# }))
        .route("/not-found", get(|| async { (StatusCode::NOT_FOUND, r#"{"message": "Not Found"}"#) }))
        .route("/delay/{ms}", get(|Path(ms): Path<u64>| delayed(ms.min(60_000), StatusCode::OK)))
}

async fn delayed(ms: u64, status: StatusCode) -> (StatusCode, &'static str) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    (status, "OK\n")
}

/// Fails about one request in three.
async fn flaky() -> (StatusCode, &'static str) {
    if rand::random_range(0..3) == 0 {
        (StatusCode::SERVICE_UNAVAILABLE, "try again later\n")
    } else {
        (StatusCode::OK, "OK\n")
    }
}

pub async fn serve(listen: &str) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(address = %listener.local_addr()?, "demo target listening");
    axum::serve(listener, router())
        .with_graceful_shutdown(shutdown_signal())
        .await
}

/// SIGINT or SIGTERM (docker stop).
async fn shutdown_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
