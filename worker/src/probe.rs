//! One HTTP check: the monitor's request on a fresh connection, the body read up to a cap,
//! the regex searched, and the outcome classified. A failed check is data, not an error.

use crate::causes::causes;
use crate::guard::{literal_address, Blocked, NetworkPolicy};
use crate::redirect;
use regex::Regex;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use webmon_core::text::{cut, one_line};
pub use webmon_core::ErrorKind;

/// `page_content` keeps at most this many characters of the match.
pub const PAGE_CONTENT_MAX_CHARS: usize = 1000;
const REGEX_CACHE_MAX: usize = 10_000;

/// The database's clock at a moment of this process's monotonic clock (a claim's `db_now`
/// and when the claim was sent): timestamps of results follow the database, so a probe with
/// a wrong wall clock cannot write rows in the future or the past.
#[derive(Debug, Clone, Copy)]
pub struct DbClock {
    pub db_now: SystemTime,
    pub at: Instant,
}

impl DbClock {
    /// This process's wall clock (for tests and for results without a claim).
    pub fn local() -> DbClock {
        DbClock {
            db_now: SystemTime::now(),
            at: Instant::now(),
        }
    }

    /// This process's instant at the database's time `at` (a check's slot).
    pub fn instant(&self, at: SystemTime) -> Instant {
        match at.duration_since(self.db_now) {
            Ok(ahead) => self.at + ahead,
            Err(late) => self.at.checked_sub(late.duration()).unwrap_or(self.at),
        }
    }

    /// The database's time at `instant`.
    pub fn timestamp(&self, instant: Instant) -> SystemTime {
        match instant.checked_duration_since(self.at) {
            Some(after) => self.db_now + after,
            None => self.db_now - self.at.duration_since(instant),
        }
    }
}

/// What a probe needs to run one check (a row of `webmon.claim_checks`).
#[derive(Debug, Clone)]
pub struct Job {
    pub job_id: i64,
    /// The slot this check belongs to (the database's time), sent back with the result.
    pub slot: SystemTime,
    pub monitor_id: i64,
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub timeout: Option<Duration>,
    pub regex: Option<String>,
    pub follow_redirects: bool,
    pub clock: DbClock,
}

/// The result of one check, as `webmon.complete_checks` takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    pub job_id: i64,
    pub slot: SystemTime,
    pub request_timestamp: SystemTime,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Response {
        status: u16,
        response_time_ms: f32,
        regex_matched: Option<bool>,
        page_content: Option<String>,
    },
    NoResponse {
        kind: ErrorKind,
        message: String,
    },
}

/// The HTTP client shared by all checks. Idle pooling is off, so every check opens a fresh
/// connection (honest availability), while TLS roots and DNS setup are built only once.
/// Redirects are followed here, not by reqwest (see `redirect`), and every address passes
/// the network policy (see `guard`) before it is connected to.
pub struct Prober {
    client: reqwest::Client,
    policy: Arc<NetworkPolicy>,
    default_timeout: Duration,
    body_cap: usize,
    regexes: Mutex<HashMap<String, Arc<Regex>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientError(#[from] reqwest::Error);

type Failure = (ErrorKind, String);

impl Prober {
    pub fn new(
        default_timeout: Duration,
        body_cap: usize,
        policy: NetworkPolicy,
    ) -> Result<Self, ClientError> {
        let policy = Arc::new(policy);
        let client = guarded_http_client(policy.clone())
            .pool_max_idle_per_host(0)
            .tcp_nodelay(true)
            .build()?;
        Ok(Prober {
            client,
            policy,
            default_timeout,
            body_cap,
            regexes: Mutex::new(HashMap::new()),
        })
    }

    /// Runs one check. Never fails: a check with no response is an `Outcome::NoResponse`.
    pub async fn check(&self, job: &Job) -> CheckResult {
        let started = Instant::now();
        let request_timestamp = job.clock.timestamp(started);
        let outcome = match self.exchange(job).await {
            Ok((status, body)) => {
                let response_time_ms = started.elapsed().as_secs_f32() * 1000.0;
                let (regex_matched, page_content) = match &job.regex {
                    None => (None, None),
                    Some(pattern) => match self.regex(pattern) {
                        Ok(regex) => search(&regex, &body),
                        Err(message) => {
                            return CheckResult {
                                job_id: job.job_id,
                                slot: job.slot,
                                request_timestamp,
                                outcome: Outcome::NoResponse {
                                    kind: ErrorKind::Other,
                                    message,
                                },
                            }
                        }
                    },
                };
                Outcome::Response {
                    status,
                    response_time_ms,
                    regex_matched,
                    page_content,
                }
            }
            Err(failure) => Outcome::NoResponse {
                kind: failure.0,
                message: failure.1,
            },
        };
        CheckResult {
            job_id: job.job_id,
            slot: job.slot,
            request_timestamp,
            outcome,
        }
    }

    /// The status and body of the check's final response, within the check's timeout
    /// (which covers every redirect and the body).
    async fn exchange(&self, job: &Job) -> Result<(u16, Vec<u8>), Failure> {
        let timeout = job.timeout.unwrap_or(self.default_timeout);
        // Boxed: a claimed check waiting for its slot then holds a pointer, not the state of
        // a whole exchange.
        match tokio::time::timeout(timeout, Box::pin(self.follow(job))).await {
            Ok(result) => result,
            Err(_) => Err((
                ErrorKind::Timeout,
                format!("no complete response within {} ms", timeout.as_millis()),
            )),
        }
    }

    async fn follow(&self, job: &Job) -> Result<(u16, Vec<u8>), Failure> {
        let mut method = reqwest::Method::from_bytes(job.method.as_bytes())
            .map_err(|_| (ErrorKind::Other, format!("invalid method {:?}", job.method)))?;
        let mut url = reqwest::Url::parse(&job.url)
            .map_err(|e| (ErrorKind::Other, format!("invalid url: {e}")))?;
        // The monitor's own URL, kept once a redirect leads elsewhere.
        let mut origin: Option<reqwest::Url> = None;
        let mut body = job.body.as_ref();
        let mut body_dropped = false;
        let mut followed = 0;
        loop {
            self.guard_address(&url)?;
            let other_host = origin
                .as_ref()
                .is_some_and(|origin| !redirect::same_host(origin, &url));
            let mut request = self.client.request(method.clone(), url);
            for (name, value) in &job.headers {
                let withheld = (other_host && !redirect::crosses_hosts(name))
                    || (body_dropped && redirect::describes_body(name));
                if !withheld {
                    request = request.header(name, value);
                }
            }
            if let Some(body) = body {
                request = request.body(body.clone());
            }
            let response = request.send().await.map_err(classify)?;
            let status = response.status().as_u16();
            if job.follow_redirects {
                let location = response.headers().get(reqwest::header::LOCATION);
                match redirect::next(response.url(), &method, status, location, followed) {
                    redirect::Next::Final => {}
                    redirect::Next::Follow {
                        url: next,
                        method: next_method,
                        keep_body,
                    } => {
                        origin.get_or_insert_with(|| response.url().clone());
                        // Dropping the response closes its connection (no pooling).
                        drop(response);
                        followed += 1;
                        url = next;
                        method = next_method;
                        if !keep_body && body.is_some() {
                            body = None;
                            body_dropped = true;
                        }
                        continue;
                    }
                    redirect::Next::Fail(message) => return Err((ErrorKind::Redirect, message)),
                }
            }
            return self.read_body(response, status).await;
        }
    }

    /// A URL whose host is an address is connected to without DNS: judge it here (names
    /// are judged by `Resolver` after resolution).
    fn guard_address(&self, url: &reqwest::Url) -> Result<(), Failure> {
        match literal_address(url) {
            Some(address) => self
                .policy
                .check(address)
                .map_err(|blocked| (ErrorKind::Blocked, blocked.to_string())),
            None => Ok(()),
        }
    }

    async fn read_body(
        &self,
        mut response: reqwest::Response,
        status: u16,
    ) -> Result<(u16, Vec<u8>), Failure> {
        let mut body = Vec::new();
        while body.len() < self.body_cap {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = self.body_cap - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) => break,
                Err(e) => {
                    let (kind, message) = classify(e);
                    // A timeout while reading the body is still a timeout; anything else is `body`.
                    let kind = if kind == ErrorKind::Timeout {
                        kind
                    } else {
                        ErrorKind::Body
                    };
                    return Err((kind, message));
                }
            }
        }
        Ok((status, body))
    }

    fn regex(&self, pattern: &str) -> Result<Arc<Regex>, String> {
        let mut cache = self
            .regexes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(regex) = cache.get(pattern) {
            return Ok(regex.clone());
        }
        let regex = Arc::new(compile_regex(pattern)?);
        if cache.len() >= REGEX_CACHE_MAX {
            cache.clear();
        }
        cache.insert(pattern.to_string(), regex.clone());
        Ok(regex)
    }
}

pub fn compile_regex(pattern: &str) -> Result<Regex, String> {
    webmon_core::validate::compile_regex(pattern).map_err(|e| e.to_string())
}

/// Unanchored search over the body decoded lossily; the match is cut to
/// `PAGE_CONTENT_MAX_CHARS` characters and made storable (a NUL byte in a match used to
/// make PostgreSQL refuse the whole batch).
pub fn search(regex: &Regex, body: &[u8]) -> (Option<bool>, Option<String>) {
    let text = String::from_utf8_lossy(body);
    match regex.find(&text) {
        Some(found) => (
            Some(true),
            Some(cut(found.as_str(), PAGE_CONTENT_MAX_CHARS)),
        ),
        None => (Some(false), None),
    }
}

/// An HTTP client whose host names resolve only to addresses `policy` allows (a URL with an
/// address as its host must be judged by the caller), with no proxy, no redirects followed
/// and pg_webmon's user agent. Checks and alert deliveries both start here.
pub fn guarded_http_client(policy: Arc<NetworkPolicy>) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(Resolver { policy }))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("pg_webmon/", env!("CARGO_PKG_VERSION")))
}

/// Host name resolution through tokio, with its failures wrapped in `DnsError` so that
/// `classify` recognises them by type. Only the addresses the network policy allows are
/// handed to the connector; when it allows none, the check fails as `Blocked`.
struct Resolver {
    policy: Arc<NetworkPolicy>,
}

#[derive(Debug, thiserror::Error)]
#[error("dns error: {0}")]
pub struct DnsError(#[source] std::io::Error);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let policy = self.policy.clone();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| Box::new(DnsError(e)) as Box<dyn StdError + Send + Sync>)?
                .collect();
            let (allowed, blocked) = permitted(&policy, resolved);
            match (allowed.is_empty(), blocked) {
                (true, Some(blocked)) => Err(Box::new(blocked) as Box<dyn StdError + Send + Sync>),
                _ => Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// The addresses `policy` allows, and why the first refused one was refused.
pub fn permitted(
    policy: &NetworkPolicy,
    resolved: Vec<SocketAddr>,
) -> (Vec<SocketAddr>, Option<Blocked>) {
    let mut first_blocked = None;
    let allowed = resolved
        .into_iter()
        .filter(|address| match policy.check(address.ip()) {
            Ok(()) => true,
            Err(blocked) => {
                first_blocked.get_or_insert(blocked);
                false
            }
        })
        .collect();
    (allowed, first_blocked)
}

/// The error kind and a one-line message naming the causes. The message carries no URL
/// (URLs can hold secrets in their query string), and the kind comes from reqwest's flags
/// and the types in the source chain, never from searching the message.
pub fn classify(error: reqwest::Error) -> (ErrorKind, String) {
    let error = error.without_url();
    let flags = Flags {
        timeout: error.is_timeout(),
        redirect: error.is_redirect(),
        connect: error.is_connect(),
        body: error.is_body() || error.is_decode(),
    };
    (kind_of(flags, &error), message(&error))
}

/// What reqwest says about an error.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flags {
    pub timeout: bool,
    pub redirect: bool,
    pub connect: bool,
    pub body: bool,
}

/// The kind from reqwest's flags and the error types in the chain.
pub fn kind_of(flags: Flags, error: &(dyn StdError + 'static)) -> ErrorKind {
    if flags.timeout {
        return ErrorKind::Timeout;
    }
    if flags.redirect {
        return ErrorKind::Redirect;
    }
    if let Some(kind) = causes(error).into_iter().find_map(kind_of_cause) {
        return kind;
    }
    if flags.connect {
        ErrorKind::Connect
    } else if flags.body {
        ErrorKind::Body
    } else {
        ErrorKind::Other
    }
}

fn kind_of_cause(cause: &(dyn StdError + 'static)) -> Option<ErrorKind> {
    if cause.is::<Blocked>() {
        Some(ErrorKind::Blocked)
    } else if cause.is::<DnsError>() {
        Some(ErrorKind::Dns)
    } else if cause.is::<rustls::Error>() {
        Some(ErrorKind::Tls)
    } else if cause
        .downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    {
        Some(ErrorKind::Timeout)
    } else {
        None
    }
}

/// The messages of the error and its causes, joined, without repeats, on one line.
fn message(error: &(dyn StdError + 'static)) -> String {
    let mut chain: Vec<String> = Vec::new();
    let mut cause = Some(error);
    while let Some(current) = cause {
        let text = current.to_string();
        if !chain.iter().any(|seen| seen.contains(&text)) {
            chain.push(text);
        }
        cause = current.source();
    }
    one_line(&chain.join(": "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_search_is_unanchored_and_stores_the_match() {
        let regex = compile_regex("Not Found").unwrap();
        assert_eq!(
            search(&regex, br#"{"message": "Not Found"}"#),
            (Some(true), Some("Not Found".to_string()))
        );
        assert_eq!(search(&regex, b"all good"), (Some(false), None));
        // Invalid UTF-8 is decoded lossily, not refused.
        assert_eq!(search(&regex, b"\xff\xfeNot Found").0, Some(true));
    }

    #[test]
    fn page_content_is_cut() {
        let regex = compile_regex("a+").unwrap();
        let body = vec![b'a'; 5000];
        assert_eq!(
            search(&regex, &body).1.map(|s| s.chars().count()),
            Some(PAGE_CONTENT_MAX_CHARS)
        );
    }

    #[test]
    fn a_nul_byte_in_the_match_is_stored_as_a_replacement_character() {
        let regex = compile_regex("b.c").unwrap();
        assert_eq!(
            search(&regex, b"ab\0cd"),
            (Some(true), Some("b\u{FFFD}c".to_string()))
        );
    }

    #[test]
    fn regex_size_limit_is_the_shared_one() {
        assert!(compile_regex(r"\w{5000}").is_err());
        assert!(compile_regex(r"[a-z0-9]{50}\s+\w+").is_ok());
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{message}")]
    struct Wrapper {
        message: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    }

    fn wrapped(message: &str, source: impl StdError + Send + Sync + 'static) -> Wrapper {
        Wrapper {
            message: message.to_string(),
            source: Box::new(source),
        }
    }

    #[test]
    fn kinds_come_from_types_not_from_words_in_the_message() {
        let connect = Flags {
            connect: true,
            ..Flags::default()
        };
        // A refused connection to a URL full of TLS words is `connect` (it used to be `tls`).
        let refused = wrapped(
            "client error (Connect) https://ssl.example.com/certificate/tls/handshake",
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        );
        assert_eq!(kind_of(connect, &refused), ErrorKind::Connect);
        // A certificate problem, as reqwest reports it: rustls's error inside an io::Error
        // inside another io::Error.
        let tls = wrapped(
            "client error (Connect)",
            std::io::Error::other(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
            )),
        );
        assert_eq!(kind_of(connect, &tls), ErrorKind::Tls);
        let dns = wrapped(
            "client error (Connect)",
            wrapped(
                "dns error",
                DnsError(std::io::Error::other(
                    "failed to lookup address information",
                )),
            ),
        );
        assert_eq!(kind_of(connect, &dns), ErrorKind::Dns);
        let timed_out = wrapped("x", std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(kind_of(connect, &timed_out), ErrorKind::Timeout);
        let plain = std::io::Error::other("dns error: timed out, certificate, tls");
        assert_eq!(kind_of(Flags::default(), &plain), ErrorKind::Other);
        let body = Flags {
            body: true,
            ..Flags::default()
        };
        assert_eq!(kind_of(body, &plain), ErrorKind::Body);
        for (flags, kind) in [
            (
                Flags {
                    timeout: true,
                    connect: true,
                    ..Flags::default()
                },
                ErrorKind::Timeout,
            ),
            (
                Flags {
                    redirect: true,
                    ..Flags::default()
                },
                ErrorKind::Redirect,
            ),
        ] {
            assert_eq!(kind_of(flags, &plain), kind);
        }
    }

    #[test]
    fn messages_name_each_cause_once_on_one_line() {
        let error = wrapped(
            "client error (Connect)",
            std::io::Error::other("tcp connect error:\nrefused"),
        );
        assert_eq!(
            message(&error),
            "client error (Connect): tcp connect error: refused"
        );
    }

    #[test]
    fn the_database_clock_is_followed() {
        let at = Instant::now();
        let db_now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let clock = DbClock { db_now, at };
        assert_eq!(
            clock.timestamp(at + Duration::from_millis(250)),
            db_now + Duration::from_millis(250)
        );
        if let Some(before) = at.checked_sub(Duration::from_millis(40)) {
            assert_eq!(clock.timestamp(before), db_now - Duration::from_millis(40));
        }
    }
}
