//! HTTP and TLS targets served in-process on 127.0.0.1, recording when each request arrived.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Arrival times per request path.
#[derive(Clone, Default)]
pub struct Hits(Arc<Mutex<Vec<(String, SystemTime)>>>);

impl Hits {
    fn record(&self, path: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((path.to_string(), SystemTime::now()));
    }
    pub fn of(&self, path: &str) -> Vec<SystemTime> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, at)| *at)
            .collect()
    }
    pub fn all(&self) -> Vec<(String, SystemTime)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

pub struct HttpTarget {
    pub addr: SocketAddr,
    pub hits: Hits,
}

impl HttpTarget {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Routes: `/ok`, `/not-found` (404 with `{"message": "Not Found"}`), `/delay/{ms}`,
/// `/status/{code}`, `/loop` (redirects to itself), `/redirect/{url}` (302 to the URL), `/big/{bytes}` (a body of that many
/// bytes ending in `TAIL`), `/nul` (the body `ab\0cd`), and anything else under `/any/...` (200, recorded).
pub async fn start_http() -> anyhow::Result<HttpTarget> {
    let hits = Hits::default();
    let app =
        Router::new()
            .route("/ok", get(|| async { "OK" }))
            .route(
                "/not-found",
                get(|| async { (StatusCode::NOT_FOUND, r#"{"message": "Not Found"}"#) }),
            )
            .route(
                "/delay/{ms}",
                get(|Path(ms): Path<u64>| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    "OK"
                }),
            )
            .route(
                "/status/{code}",
                get(|Path(code): Path<u16>| async move {
                    StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT)
                }),
            )
            .route(
                "/loop",
                get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/loop")]) }),
            )
            .route(
                "/redirect/{*to}",
                get(|Path(to): Path<String>| async move {
                    (StatusCode::FOUND, [(header::LOCATION, to)])
                }),
            )
            .route(
                "/big/{bytes}",
                get(|Path(bytes): Path<usize>| async move {
                    let mut body = vec![b'x'; bytes.saturating_sub(4)];
                    body.extend_from_slice(b"TAIL");
                    body
                }),
            )
            .route("/nul", get(|| async { &b"ab\0cd"[..] }))
            .fallback(|| async { "OK" })
            .layer(axum::middleware::from_fn_with_state(hits.clone(), record))
            .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(HttpTarget { addr, hits })
}

async fn record(
    State(hits): State<Hits>,
    uri: Uri,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    hits.record(uri.path());
    next.run(request).await.into_response()
}

/// A TLS server with a self-signed certificate for `localhost`: clients that verify
/// certificates must fail the handshake.
pub async fn start_self_signed_tls() -> anyhow::Result<SocketAddr> {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    let cert = certified.cert.der().clone();
    let key = tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(
        certified.key_pair.serialize_der(),
    )
    .map_err(anyhow::Error::msg)?;
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    use tokio::io::AsyncWriteExt;
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nOK",
                        )
                        .await;
                }
            });
        }
    });
    Ok(addr)
}
