//! The target guard and redirects, through the real HTTP client against servers on
//! loopback (127.0.0.1 and 127.0.0.2 only). A denied target must not even see a connection.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use webmon_worker::guard::{parse_network, NetworkPolicy};
use webmon_worker::probe::{DbClock, ErrorKind, Job, Outcome, Prober};

/// What the recording server saw: method, path, headers, body.
type Seen = Arc<Mutex<Vec<(Method, String, HeaderMap, String)>>>;

/// An HTTP server on `ip` that records every request. `/to/<url>` redirects (302) to the
/// URL, `/keep/<url>` with 307, `/slowly-to/<url>` with 302 after 200 ms, `/slow` answers
/// after 2 s, `/loop` redirects to itself; anything else is 200 "ok".
async fn recording_server(ip: &str) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new().fallback(record).with_state(seen.clone());
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, seen)
}

async fn record(State(seen): State<Seen>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    seen.lock().unwrap().push((
        parts.method.clone(),
        path.clone(),
        parts.headers.clone(),
        String::from_utf8_lossy(&body).into_owned(),
    ));
    if let Some(target) = path.strip_prefix("/to/") {
        return (StatusCode::FOUND, [("location", target.to_string())]).into_response();
    }
    if let Some(target) = path.strip_prefix("/slowly-to/") {
        tokio::time::sleep(Duration::from_millis(200)).await;
        return (StatusCode::FOUND, [("location", target.to_string())]).into_response();
    }
    if let Some(target) = path.strip_prefix("/keep/") {
        return (
            StatusCode::TEMPORARY_REDIRECT,
            [("location", target.to_string())],
        )
            .into_response();
    }
    if path == "/loop" {
        return (StatusCode::FOUND, [("location", "/loop")]).into_response();
    }
    if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    "ok".into_response()
}

/// A TCP listener that only counts the connections it is offered.
async fn counting_listener(ip: &str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    (base, accepted)
}

fn prober(deny: &[&str]) -> Prober {
    let deny: Vec<_> = deny.iter().map(|n| parse_network(n).unwrap()).collect();
    Prober::new(
        Duration::from_secs(5),
        1 << 20,
        NetworkPolicy::new(&deny, &[]),
    )
    .unwrap()
}

fn job(url: &str) -> Job {
    Job {
        job_id: 1,
        slot: std::time::SystemTime::now(),
        monitor_id: 1,
        url: url.to_string(),
        method: "GET".to_string(),
        headers: vec![],
        body: None,
        timeout: None,
        regex: None,
        follow_redirects: true,
        clock: DbClock::local(),
    }
}

fn blocked(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::NoResponse { kind: ErrorKind::Blocked, message } if message.contains("network policy"))
}

#[tokio::test]
async fn a_denied_address_is_blocked_by_address_name_or_redirect_and_never_connected_to() {
    let (forbidden, accepted) = counting_listener("127.0.0.2").await;
    let (allowed, _) = recording_server("127.0.0.1").await;
    let probe = prober(&["127.0.0.2/32"]);

    let direct = probe.check(&job(&format!("{forbidden}/"))).await;
    assert!(blocked(&direct.outcome), "{direct:?}");
    let redirected = probe
        .check(&job(&format!("{allowed}/to/{forbidden}/x")))
        .await;
    assert!(blocked(&redirected.outcome), "{redirected:?}");
    // The same address written as IPv4-mapped IPv6.
    let port = forbidden.rsplit(':').next().unwrap();
    let mapped = probe
        .check(&job(&format!("http://[::ffff:127.0.0.2]:{port}/")))
        .await;
    assert!(blocked(&mapped.outcome), "{mapped:?}");
    // The allowed address still works.
    let fine = probe.check(&job(&format!("{allowed}/ok"))).await;
    assert!(
        matches!(fine.outcome, Outcome::Response { status: 200, .. }),
        "{fine:?}"
    );

    // A host name: `localhost` resolves to 127.0.0.1, and to ::1 on many hosts (this probe
    // denies both), directly and as a redirect from an allowed address.
    let (name_target, name_accepted) = counting_listener("127.0.0.1").await;
    let name_port = name_target.rsplit(':').next().unwrap();
    let (other, _) = recording_server("127.0.0.2").await;
    let probe = prober(&["127.0.0.1/32", "::1/128"]);
    let by_name = probe
        .check(&job(&format!("http://localhost:{name_port}/")))
        .await;
    assert!(blocked(&by_name.outcome), "{by_name:?}");
    let via_redirect = probe
        .check(&job(&format!("{other}/to/http://localhost:{name_port}/")))
        .await;
    assert!(blocked(&via_redirect.outcome), "{via_redirect:?}");

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "the denied target was connected to"
    );
    assert_eq!(
        name_accepted.load(Ordering::SeqCst),
        0,
        "the denied name was connected to"
    );
}

#[tokio::test]
async fn custom_headers_stay_with_their_host_and_bodies_follow_the_method() {
    let (base, seen) = recording_server("127.0.0.1").await;
    let (other, seen_elsewhere) = recording_server("127.0.0.2").await;
    let probe = prober(&[]);
    let mut with_headers = job(&format!("{base}/to/{other}/elsewhere"));
    with_headers.headers = vec![
        ("X-Api-Key".into(), "secret".into()),
        ("Accept".into(), "application/json".into()),
        ("User-Agent".into(), "custom-agent".into()),
    ];
    let result = probe.check(&with_headers).await;
    assert!(
        matches!(result.outcome, Outcome::Response { status: 200, .. }),
        "{result:?}"
    );
    // Same host: everything goes along.
    with_headers.url = format!("{base}/to/{base}/same");
    probe.check(&with_headers).await;
    // A POST answered with 302 becomes a GET without its body; 307 keeps both.
    let mut post = job(&format!("{base}/to/{base}/after-302"));
    post.method = "POST".into();
    post.body = Some("payload".into());
    post.headers = vec![("Content-Type".into(), "text/plain".into())];
    probe.check(&post).await;
    post.url = format!("{base}/keep/{base}/after-307");
    probe.check(&post).await;

    let seen = seen.lock().unwrap();
    let request = |path: &str| {
        seen.iter()
            .find(|(_, p, _, _)| p == path)
            .unwrap_or_else(|| panic!("{path} not requested: {seen:?}"))
    };
    let elsewhere = seen_elsewhere.lock().unwrap();
    let (_, _, headers, _) = elsewhere
        .iter()
        .find(|(_, p, _, _)| p == "/elsewhere")
        .expect("the other host was not reached");
    assert!(headers.get("x-api-key").is_none(), "{headers:?}");
    assert_eq!(headers["accept"], "application/json");
    assert_eq!(headers["user-agent"], "custom-agent");
    let (_, _, headers, _) = request("/same");
    assert_eq!(headers["x-api-key"], "secret");
    let (method, _, headers, body) = request("/after-302");
    assert_eq!((method, body.as_str()), (&Method::GET, ""));
    assert!(headers.get("content-type").is_none(), "{headers:?}");
    let (method, _, headers, body) = request("/after-307");
    assert_eq!((method, body.as_str()), (&Method::POST, "payload"));
    assert_eq!(headers["content-type"], "text/plain");
}

#[tokio::test]
async fn redirect_loops_and_the_timeout_cover_every_hop() {
    let (base, _) = recording_server("127.0.0.1").await;
    let probe = prober(&[]);
    let looping = probe.check(&job(&format!("{base}/to/{base}/to/{base}/to/{base}/to/{base}/to/{base}/to/{base}/to/{base}/to/{base}/to/{base}/to/{base}/to/{base}/ok"))).await;
    assert!(
        matches!(&looping.outcome, Outcome::NoResponse { kind: ErrorKind::Redirect, message } if message.contains("more than 10")),
        "{looping:?}"
    );
    let mut slow = job(&format!("{base}/to/{base}/slow"));
    slow.timeout = Some(Duration::from_millis(300));
    let result = probe.check(&slow).await;
    assert!(
        matches!(
            result.outcome,
            Outcome::NoResponse {
                kind: ErrorKind::Timeout,
                ..
            }
        ),
        "{result:?}"
    );
    // A redirect to itself ends at the limit too.
    let looping = probe.check(&job(&format!("{base}/loop"))).await;
    assert!(
        matches!(&looping.outcome, Outcome::NoResponse { kind: ErrorKind::Redirect, message } if message.contains("more than 10")),
        "{looping:?}"
    );
    // Three hops of 200 ms each: each within a 500 ms timeout, together not.
    let mut hops = job(&format!(
        "{base}/slowly-to/{base}/slowly-to/{base}/slowly-to/{base}/ok"
    ));
    hops.timeout = Some(Duration::from_millis(500));
    let result = probe.check(&hops).await;
    assert!(
        matches!(
            result.outcome,
            Outcome::NoResponse {
                kind: ErrorKind::Timeout,
                ..
            }
        ),
        "{result:?}"
    );
    // Not following: the redirect is the answer.
    let mut not_following = job(&format!("{base}/to/{base}/ok"));
    not_following.follow_redirects = false;
    let result = probe.check(&not_following).await;
    assert!(
        matches!(result.outcome, Outcome::Response { status: 302, .. }),
        "{result:?}"
    );
}
