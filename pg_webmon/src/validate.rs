//! Validation of monitor settings, in plain Rust with the same crates the probe uses
//! (`url`, `regex`, `http`), so whatever the table accepts the probe can run.

use thiserror::Error;

/// Compiled-size limit for monitor regexes. The probe compiles with the same limit
/// (`worker/src/probe.rs`, `REGEX_SIZE_LIMIT`): keep the two equal.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Longest accepted check timeout.
pub const MAX_TIMEOUT_MICROS: i128 = 5 * 60 * 1_000_000;
/// Shortest accepted check interval.
pub const MIN_INTERVAL_MICROS: i128 = 1_000_000;
/// Methods a monitor may use.
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// A refused monitor setting. Each message names the bad value.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ValidationError {
    #[error("invalid url \"{url}\": {reason}")]
    Url { url: String, reason: String },
    #[error("invalid regex {regex:?}: {reason}")]
    Regex { regex: String, reason: String },
    #[error("invalid check_interval {0}: it must be at least 1 second")]
    Interval(String),
    #[error("invalid timeout {0}: it must be above 0 and at most 5 minutes")]
    Timeout(String),
    #[error("invalid method \"{0}\": use one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")]
    Method(String),
    #[error("invalid headers {headers}: {reason}")]
    Headers { headers: String, reason: String },
    #[error("invalid expected_status: the range is empty, so no status could ever be up")]
    EmptyExpectedStatus,
}

impl ValidationError {
    /// `true` for errors reported with SQLSTATE 2201B (invalid_regular_expression);
    /// all others are 22023 (invalid_parameter_value).
    pub fn is_regex(&self) -> bool {
        matches!(self, ValidationError::Regex { .. })
    }
}

/// Accepts an absolute http(s) URL with a host.
pub fn validate_url(raw: &str) -> Result<(), ValidationError> {
    let refuse = |reason: &str| ValidationError::Url {
        url: raw.to_string(),
        reason: reason.to_string(),
    };
    let parsed = url::Url::parse(raw).map_err(|e| refuse(&e.to_string()))?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err(refuse("only http and https are supported"));
    }
    match parsed.host_str() {
        Some(host) if !host.is_empty() => Ok(()),
        _ => Err(refuse("a host is required")),
    }
}

/// Compiles the regex with the probe's size limit.
pub fn validate_regex(pattern: &str) -> Result<(), ValidationError> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map(|_| ())
        .map_err(|e| ValidationError::Regex {
            regex: pattern.to_string(),
            reason: e.to_string().replace('\n', " "),
        })
}

/// `method` must already be upper case (the trigger upper-cases it).
pub fn validate_method(method: &str) -> Result<(), ValidationError> {
    if METHODS.contains(&method) {
        Ok(())
    } else {
        Err(ValidationError::Method(method.to_string()))
    }
}

/// Headers: a JSON object whose values are strings, each a valid HTTP header name and value.
pub fn validate_headers(headers: &serde_json::Value) -> Result<(), ValidationError> {
    let refuse = |reason: String| ValidationError::Headers {
        headers: headers.to_string(),
        reason,
    };
    let object = headers
        .as_object()
        .ok_or_else(|| refuse("it must be a JSON object of strings".to_string()))?;
    for (name, value) in object {
        let value = value
            .as_str()
            .ok_or_else(|| refuse(format!("the value of \"{name}\" is not a string")))?;
        http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| refuse(format!("\"{name}\" is not a valid header name")))?;
        http::HeaderValue::from_str(value).map_err(|_| {
            refuse(format!(
                "the value of \"{name}\" is not a valid header value"
            ))
        })?;
    }
    Ok(())
}

/// `interval_micros` is the interval's length (months count as 30 days); `shown` is how
/// Postgres prints it, used in the message.
pub fn validate_check_interval(interval_micros: i128, shown: &str) -> Result<(), ValidationError> {
    if interval_micros < MIN_INTERVAL_MICROS {
        return Err(ValidationError::Interval(shown.to_string()));
    }
    Ok(())
}

pub fn validate_timeout(timeout_micros: i128, shown: &str) -> Result<(), ValidationError> {
    if timeout_micros <= 0 || timeout_micros > MAX_TIMEOUT_MICROS {
        return Err(ValidationError::Timeout(shown.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls() {
        assert!(validate_url("https://example.com/health").is_ok());
        assert!(validate_url("http://127.0.0.1:8080").is_ok());
        let err = validate_url("ftp://example.com").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid url \"ftp://example.com\": only http and https are supported"
        );
        assert!(validate_url("not a url").is_err());
        assert!(validate_url("http://").is_err());
        assert!(validate_url("file:///etc/passwd").is_err());
        assert!(validate_url("").is_err());
    }

    #[test]
    fn regexes() {
        assert!(validate_regex("Not Found").is_ok());
        assert!(validate_regex(r"status.\s*ok").is_ok());
        let err = validate_regex("(unclosed").unwrap_err();
        assert!(err.is_regex());
        assert!(err.to_string().starts_with("invalid regex \"(unclosed\""));
        // Over the compiled-size limit: refused here as the probe would refuse it.
        assert!(validate_regex(r"\w{5000}").is_err());
    }

    #[test]
    fn methods() {
        assert!(validate_method("GET").is_ok());
        assert!(validate_method("OPTIONS").is_ok());
        assert!(validate_method("FETCH").is_err());
        assert!(validate_method("").is_err());
    }

    #[test]
    fn headers() {
        assert!(validate_headers(&json!({})).is_ok());
        assert!(validate_headers(&json!({"Authorization": "Bearer x", "X-Id": "1"})).is_ok());
        assert!(validate_headers(&json!(["a"])).is_err());
        assert!(validate_headers(&json!({"X-N": 1})).is_err());
        assert!(validate_headers(&json!({"bad name": "x"})).is_err());
        assert!(validate_headers(&json!({"X-A": "line\nbreak"})).is_err());
    }

    #[test]
    fn intervals_and_timeouts() {
        assert!(validate_check_interval(1_000_000, "00:00:01").is_ok());
        assert!(validate_check_interval(999_999, "00:00:00.999999").is_err());
        assert!(validate_check_interval(0, "00:00:00").is_err());
        assert!(validate_timeout(1, "00:00:00.000001").is_ok());
        assert!(validate_timeout(MAX_TIMEOUT_MICROS, "00:05:00").is_ok());
        assert!(validate_timeout(MAX_TIMEOUT_MICROS + 1, "00:05:00.000001").is_err());
        assert!(validate_timeout(0, "00:00:00").is_err());
        assert!(validate_timeout(-1, "-00:00:00.000001").is_err());
    }
}
