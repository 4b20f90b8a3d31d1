//! What a valid monitor is. The extension refuses anything else at INSERT/UPDATE, and the
//! probe compiles regexes with the same builder, so whatever the table accepts the probe runs.

use crate::interval::{self, IntervalError, IntervalParts};
use thiserror::Error;

/// Compiled-size limit for monitor regexes (the `regex` crate's `size_limit`).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Longest URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Largest `headers`, as JSON text, in bytes.
pub const MAX_HEADERS_BYTES: usize = 16 * 1024;
/// Largest request body, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest monitor name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest regex pattern, in bytes (its compiled size has `REGEX_SIZE_LIMIT` as well).
pub const MAX_REGEX_BYTES: usize = 4096;
/// Most regions one monitor may list.
pub const MAX_REGIONS: usize = 32;
/// Longest region name, in bytes.
pub const MAX_REGION_BYTES: usize = 63;
/// Methods a monitor may use.
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// A refused monitor setting. Each message names the bad value.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ValidationError {
    #[error("invalid url \"{url}\": {reason}")]
    Url { url: String, reason: String },
    #[error("invalid regex {regex:?}: {reason}")]
    Regex { regex: String, reason: String },
    #[error("invalid check_interval {shown}: {reason}")]
    Interval {
        shown: String,
        reason: IntervalError,
    },
    #[error("invalid timeout {shown}: {reason}")]
    Timeout {
        shown: String,
        reason: IntervalError,
    },
    #[error("invalid method \"{0}\": use one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")]
    Method(String),
    #[error("invalid headers {headers}: {reason}")]
    Headers { headers: String, reason: String },
    #[error("invalid expected_status: the range is empty, so no status could ever be up")]
    EmptyExpectedStatus,
    #[error("invalid {what}: {size} bytes, at most {max} are allowed")]
    TooLarge {
        what: &'static str,
        size: usize,
        max: usize,
    },
    #[error("invalid regions: {0}")]
    Regions(String),
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

/// The one way both sides compile a monitor's regex: unanchored, with the size limit.
pub fn compile_regex(pattern: &str) -> Result<regex::Regex, ValidationError> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| ValidationError::Regex {
            regex: pattern.to_string(),
            reason: crate::text::one_line(&e.to_string()),
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

/// Whether `name: value` is a header the probe can send.
pub fn header_is_valid(name: &str, value: &str) -> bool {
    http::HeaderName::from_bytes(name.as_bytes()).is_ok()
        && http::HeaderValue::from_str(value).is_ok()
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
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(refuse(format!("\"{name}\" is not a valid header name")));
        }
        if !header_is_valid(name, value) {
            return Err(refuse(format!(
                "the value of \"{name}\" is not a valid header value"
            )));
        }
    }
    Ok(())
}

/// The headers of a stored monitor as pairs, keeping only those the probe can send.
pub fn header_pairs(headers: &serde_json::Value) -> Vec<(String, String)> {
    headers
        .as_object()
        .map(|object| {
            object
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .filter(|(k, v)| header_is_valid(k, v))
                .collect()
        })
        .unwrap_or_default()
}

/// Size limits: one row must not make every probe that claims it allocate a lot of memory.
pub fn validate_sizes(
    url: &str,
    headers: &serde_json::Value,
    body: Option<&str>,
) -> Result<(), ValidationError> {
    let headers_bytes = headers.to_string().len();
    for (what, size, max) in [
        ("url", url.len(), MAX_URL_BYTES),
        ("headers", headers_bytes, MAX_HEADERS_BYTES),
        ("body", body.map_or(0, str::len), MAX_BODY_BYTES),
    ] {
        if size > max {
            return Err(ValidationError::TooLarge { what, size, max });
        }
    }
    Ok(())
}

/// Limits on the monitor's name, regex text and regions: each is copied into places that
/// every check reads (jobs, claims, the status view). `regions` is NULL (any probe) or 1 to
/// `MAX_REGIONS` non-empty names; an empty list would never be checked by anyone.
pub fn validate_labels(
    name: Option<&str>,
    regex: Option<&str>,
    regions: Option<&[Option<String>]>,
) -> Result<(), ValidationError> {
    for (what, size, max) in [
        ("name", name.map_or(0, str::len), MAX_NAME_BYTES),
        ("regex", regex.map_or(0, str::len), MAX_REGEX_BYTES),
    ] {
        if size > max {
            return Err(ValidationError::TooLarge { what, size, max });
        }
    }
    let Some(regions) = regions else {
        return Ok(());
    };
    let refuse = |reason: String| Err(ValidationError::Regions(reason));
    if regions.is_empty() {
        return refuse(
            "the list is empty, so no probe would check it; NULL means any probe".into(),
        );
    }
    if regions.len() > MAX_REGIONS {
        return refuse(format!(
            "{} regions, at most {MAX_REGIONS} are allowed",
            regions.len()
        ));
    }
    for region in regions {
        match region.as_deref() {
            None | Some("") => return refuse("a region is NULL or empty".into()),
            Some(region) if region.len() > MAX_REGION_BYTES => {
                return refuse(format!(
                    "a region name of {} bytes, at most {MAX_REGION_BYTES} are allowed",
                    region.len()
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// `shown` is how PostgreSQL prints the interval, used in the message.
pub fn validate_check_interval(parts: IntervalParts, shown: &str) -> Result<i64, ValidationError> {
    interval::check_interval_micros(parts).map_err(|reason| ValidationError::Interval {
        shown: shown.to_string(),
        reason,
    })
}

pub fn validate_timeout(parts: IntervalParts, shown: &str) -> Result<i64, ValidationError> {
    interval::timeout_micros(parts).map_err(|reason| ValidationError::Timeout {
        shown: shown.to_string(),
        reason,
    })
}

/// Everything the extension checks on a monitor row.
pub struct MonitorFields<'a> {
    pub url: &'a str,
    pub method: &'a str,
    pub headers: &'a serde_json::Value,
    pub check_interval: (IntervalParts, String),
    pub timeout: Option<(IntervalParts, String)>,
    pub regex: Option<&'a str>,
    pub expected_status_is_empty: bool,
}

pub fn validate_monitor(fields: &MonitorFields<'_>) -> Result<(), ValidationError> {
    validate_url(fields.url)?;
    validate_method(fields.method)?;
    validate_headers(fields.headers)?;
    validate_check_interval(fields.check_interval.0, &fields.check_interval.1)?;
    if let Some((parts, shown)) = &fields.timeout {
        validate_timeout(*parts, shown)?;
    }
    if let Some(regex) = fields.regex {
        compile_regex(regex)?;
    }
    if fields.expected_status_is_empty {
        return Err(ValidationError::EmptyExpectedStatus);
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
        for bad in ["not a url", "http://", "file:///etc/passwd", ""] {
            assert!(validate_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn regexes() {
        assert!(compile_regex("Not Found").is_ok());
        assert!(compile_regex(r"status.\s*ok").is_ok());
        let err = compile_regex("(unclosed").unwrap_err();
        assert!(err.is_regex());
        assert!(err.to_string().starts_with("invalid regex \"(unclosed\""));
        assert!(!err.to_string().contains('\n'));
        // Over the compiled-size limit.
        assert!(compile_regex(r"\w{5000}").is_err());
        assert!(compile_regex(r"[a-z0-9]{50}\s+\w+").is_ok());
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
        assert_eq!(
            header_pairs(&json!({"X-A": "1", "bad name": "2", "X-B": 3})),
            vec![("X-A".to_string(), "1".to_string())]
        );
        assert!(header_pairs(&json!([])).is_empty());
    }

    #[test]
    fn sizes_are_bounded() {
        let url = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES - 20));
        assert_eq!(url.len(), MAX_URL_BYTES);
        assert!(validate_sizes(&url, &json!({}), None).is_ok());
        assert!(validate_sizes(&format!("{url}a"), &json!({}), None).is_err());
        let big = json!({"X-Big": "v".repeat(MAX_HEADERS_BYTES)});
        assert!(validate_sizes("https://a.example", &big, None).is_err());
        let body = "b".repeat(MAX_BODY_BYTES);
        assert!(validate_sizes("https://a.example", &json!({}), Some(&body)).is_ok());
        let err =
            validate_sizes("https://a.example", &json!({}), Some(&format!("{body}b"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid body: 65537 bytes, at most 65536 are allowed"
        );
    }

    #[test]
    fn names_regexes_and_regions_are_bounded() {
        let regions = |list: &[&str]| -> Vec<Option<String>> {
            list.iter().map(|r| Some(r.to_string())).collect()
        };
        assert!(validate_labels(Some("shop"), Some("ok"), Some(&regions(&["eu", "us"]))).is_ok());
        assert!(validate_labels(None, None, None).is_ok());
        let long_name = "n".repeat(MAX_NAME_BYTES + 1);
        assert_eq!(
            validate_labels(Some(&long_name), None, None)
                .unwrap_err()
                .to_string(),
            "invalid name: 257 bytes, at most 256 are allowed"
        );
        assert!(validate_labels(None, Some(&"a".repeat(MAX_REGEX_BYTES + 1)), None).is_err());
        for bad in [
            vec![],
            regions(&[""]),
            vec![None],
            regions(&[&"r".repeat(MAX_REGION_BYTES + 1)]),
            (0..=MAX_REGIONS).map(|i| Some(format!("r{i}"))).collect(),
        ] {
            assert!(
                matches!(
                    validate_labels(None, None, Some(&bad)),
                    Err(ValidationError::Regions(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn intervals_and_timeouts_name_the_value() {
        let second = IntervalParts {
            months: 0,
            days: 0,
            micros: 1_000_000,
        };
        assert_eq!(validate_check_interval(second, "00:00:01"), Ok(1_000_000));
        let years = IntervalParts {
            months: 12,
            ..second
        };
        let err = validate_check_interval(years, "1 year 00:00:01").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid check_interval 1 year 00:00:01: months and years have no fixed length; use days"
        );
        assert!(validate_timeout(second, "00:00:01").is_ok());
    }
}
