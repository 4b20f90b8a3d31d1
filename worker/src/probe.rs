//! One HTTP check: the monitor's request on a fresh connection, the body read up to a cap,
//! the regex searched, and the outcome classified. A failed check is data, not an error.

use regex::Regex;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Compiled-size limit for regexes; equal to the extension's (`pg_webmon/src/validate.rs`).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// `page_content` keeps at most this many characters of the match.
pub const PAGE_CONTENT_MAX_CHARS: usize = 1000;
/// Error messages are one line of at most this many characters.
const ERROR_MAX_CHARS: usize = 500;
const REDIRECT_LIMIT: usize = 10;
const REGEX_CACHE_MAX: usize = 10_000;

/// What a probe needs to run one check (a row of `webmon.claim_checks`).
#[derive(Debug, Clone)]
pub struct Job {
    pub job_id: i64,
    pub monitor_id: i64,
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub timeout: Option<Duration>,
    pub regex: Option<String>,
    pub follow_redirects: bool,
}

/// The result of one check, as `webmon.complete_checks` takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    pub job_id: i64,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Dns,
    Connect,
    Tls,
    Timeout,
    Redirect,
    Body,
    Other,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Dns => "dns",
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Redirect => "redirect",
            ErrorKind::Body => "body",
            ErrorKind::Other => "other",
        }
    }
}

/// HTTP clients shared by all checks. Idle pooling is off, so every check opens a fresh
/// connection (honest availability), while TLS roots and DNS setup are built only once.
pub struct Prober {
    following: reqwest::Client,
    not_following: reqwest::Client,
    default_timeout: Duration,
    body_cap: usize,
    regexes: Mutex<HashMap<String, Arc<Regex>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientError(#[from] reqwest::Error);

impl Prober {
    pub fn new(default_timeout: Duration, body_cap: usize) -> Result<Self, ClientError> {
        let builder = || {
            reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .no_proxy()
                .tcp_nodelay(true)
                .user_agent(concat!("pg_webmon/", env!("CARGO_PKG_VERSION")))
        };
        Ok(Prober {
            following: builder()
                .redirect(reqwest::redirect::Policy::limited(REDIRECT_LIMIT))
                .build()?,
            not_following: builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            default_timeout,
            body_cap,
            regexes: Mutex::new(HashMap::new()),
        })
    }

    /// Runs one check. Never fails: a check with no response is an `Outcome::NoResponse`.
    pub async fn check(&self, job: &Job) -> CheckResult {
        let request_timestamp = SystemTime::now();
        let started = Instant::now();
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
            request_timestamp,
            outcome,
        }
    }

    async fn exchange(&self, job: &Job) -> Result<(u16, Vec<u8>), (ErrorKind, String)> {
        let method = reqwest::Method::from_bytes(job.method.as_bytes())
            .map_err(|_| (ErrorKind::Other, format!("invalid method {:?}", job.method)))?;
        let client = if job.follow_redirects {
            &self.following
        } else {
            &self.not_following
        };
        let mut request = client
            .request(method, &job.url)
            .timeout(job.timeout.unwrap_or(self.default_timeout));
        for (name, value) in &job.headers {
            request = request.header(name, value);
        }
        if let Some(body) = &job.body {
            request = request.body(body.clone());
        }
        let mut response = request.send().await.map_err(|e| classify(&e))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while body.len() < self.body_cap {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = self.body_cap - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) => break,
                Err(e) => {
                    let (kind, message) = classify(&e);
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
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| one_line(&format!("invalid regex: {e}")))
}

/// Unanchored search over the body decoded lossily; the match is cut to
/// `PAGE_CONTENT_MAX_CHARS` characters.
pub fn search(regex: &Regex, body: &[u8]) -> (Option<bool>, Option<String>) {
    let text = String::from_utf8_lossy(body);
    match regex.find(&text) {
        Some(found) => (
            Some(true),
            Some(
                found
                    .as_str()
                    .chars()
                    .take(PAGE_CONTENT_MAX_CHARS)
                    .collect(),
            ),
        ),
        None => (Some(false), None),
    }
}

/// Sorts a reqwest error into an error kind with a one-line message naming the causes.
pub fn classify(error: &reqwest::Error) -> (ErrorKind, String) {
    let mut chain = Vec::new();
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if chain.last() != Some(&text) {
            chain.push(text);
        }
        source = cause.source();
    }
    let message = one_line(&chain.join(": "));
    (
        kind_of(
            error.is_timeout(),
            error.is_redirect(),
            error.is_connect(),
            error.is_body() || error.is_decode(),
            &message,
        ),
        message,
    )
}

/// The kind from reqwest's flags and, for connect errors, the text of the cause chain.
pub fn kind_of(
    timeout: bool,
    redirect: bool,
    connect: bool,
    body: bool,
    message: &str,
) -> ErrorKind {
    let lower = message.to_ascii_lowercase();
    if timeout || lower.contains("timed out") {
        ErrorKind::Timeout
    } else if redirect {
        ErrorKind::Redirect
    } else if lower.contains("dns error") || lower.contains("failed to lookup address") {
        ErrorKind::Dns
    } else if lower.contains("certificate")
        || lower.contains("tls")
        || lower.contains("handshake")
        || lower.contains("ssl")
    {
        ErrorKind::Tls
    } else if connect {
        ErrorKind::Connect
    } else if body {
        ErrorKind::Body
    } else {
        ErrorKind::Other
    }
}

pub fn one_line(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.chars().take(ERROR_MAX_CHARS).collect()
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
    fn regex_size_limit_matches_the_extension() {
        assert!(compile_regex(r"\w{5000}").is_err());
        assert!(compile_regex(r"[a-z0-9]{50}\s+\w+").is_ok());
    }

    #[test]
    fn error_kinds() {
        let cases = [
            (
                (true, false, false, false),
                "operation timed out",
                ErrorKind::Timeout,
            ),
            (
                (false, true, false, false),
                "too many redirects",
                ErrorKind::Redirect,
            ),
            (
                (false, false, true, false),
                "client error (Connect): dns error: failed to lookup address information",
                ErrorKind::Dns,
            ),
            (
                (false, false, true, false),
                "client error (Connect): invalid peer certificate: UnknownIssuer",
                ErrorKind::Tls,
            ),
            (
                (false, false, true, false),
                "client error (Connect): tcp connect error: Connection refused (os error 111)",
                ErrorKind::Connect,
            ),
            (
                (false, false, false, true),
                "error reading a body from connection",
                ErrorKind::Body,
            ),
            (
                (false, false, false, false),
                "builder error",
                ErrorKind::Other,
            ),
        ];
        for ((timeout, redirect, connect, body), message, expected) in cases {
            assert_eq!(
                kind_of(timeout, redirect, connect, body, message),
                expected,
                "{message}"
            );
        }
    }

    #[test]
    fn messages_are_one_line() {
        assert_eq!(one_line("a\nb\t c"), "a b c");
        assert_eq!(one_line(&"x".repeat(2000)).len(), ERROR_MAX_CHARS);
    }
}
