//! The old app's `urls.config.<env>.json`: an array of
//! `{"url": str, "interval": int seconds, "regex": str?, "timeout": int ms?}`.
//! Parsing and validation are pure; the extension's `webmon.import_monitors` writes the result.

use crate::validate::{compile_regex, validate_url};
use serde_json::Value;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedMonitor {
    pub url: String,
    pub interval_seconds: i64,
    pub regex: Option<String>,
    pub timeout_ms: Option<i64>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ImportError {
    #[error("invalid monitor config: it must be a non-empty JSON array of monitors")]
    NotAnArray,
    #[error("invalid monitor config: the array is empty")]
    Empty,
    #[error("invalid monitor config at index {index}: {reason}")]
    Entry { index: usize, reason: String },
}

pub fn parse_config(config: &Value) -> Result<Vec<ImportedMonitor>, ImportError> {
    let entries = config.as_array().ok_or(ImportError::NotAnArray)?;
    if entries.is_empty() {
        return Err(ImportError::Empty);
    }
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            parse_entry(entry).map_err(|reason| ImportError::Entry { index, reason })
        })
        .collect()
}

fn parse_entry(entry: &Value) -> Result<ImportedMonitor, String> {
    let object = entry.as_object().ok_or("an entry must be a JSON object")?;
    let url = match object.get("url") {
        Some(Value::String(url)) => url.clone(),
        Some(_) => return Err("\"url\" must be a string".into()),
        None => return Err("\"url\" is missing".into()),
    };
    validate_url(&url).map_err(|e| e.to_string())?;
    let interval_seconds = match object.get("interval") {
        None => return Err("\"interval\" is missing".into()),
        Some(value) => positive_integer("interval", value)?,
    };
    let regex = match object.get("regex") {
        None | Some(Value::Null) => None,
        Some(Value::String(pattern)) => {
            compile_regex(pattern).map_err(|e| e.to_string())?;
            Some(pattern.clone())
        }
        Some(_) => return Err("\"regex\" must be a string".into()),
    };
    let timeout_ms = match object.get("timeout") {
        None | Some(Value::Null) => None,
        Some(value) => Some(positive_integer("timeout", value)?),
    };
    Ok(ImportedMonitor {
        url,
        interval_seconds,
        regex,
        timeout_ms,
    })
}

fn positive_integer(field: &str, value: &Value) -> Result<i64, String> {
    match value.as_i64() {
        Some(n) if n > 0 => Ok(n),
        Some(n) => Err(format!("\"{field}\" must be positive, got {n}")),
        None => Err(format!(
            "\"{field}\" must be a positive integer, got {value}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn index_of(config: Value) -> Option<usize> {
        match parse_config(&config) {
            Err(ImportError::Entry { index, .. }) => Some(index),
            _ => None,
        }
    }

    #[test]
    fn the_old_apps_sample_config() {
        let parsed = parse_config(&json!([
            {"url": "https://example.com", "interval": 10},
            {"url": "https://example.org/api", "interval": 60, "regex": "Not Found", "timeout": 5000}
        ]))
        .unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].regex.as_deref(), Some("Not Found"));
        assert_eq!(parsed[1].timeout_ms, Some(5000));
        assert_eq!(parsed[0].timeout_ms, None);
    }

    #[test]
    fn bad_variants_name_their_index() {
        let ok = json!({"url": "https://a.example", "interval": 5});
        assert_eq!(index_of(json!([ok, {"interval": 5}])), Some(1));
        assert_eq!(index_of(json!([{"url": "https://a.example"}])), Some(0));
        assert_eq!(
            index_of(json!([ok, ok, {"url": "https://a.example", "interval": 5, "regex": "("}])),
            Some(2)
        );
        assert_eq!(
            index_of(json!([{"url": "https://a.example", "interval": 0}])),
            Some(0)
        );
        assert_eq!(
            index_of(json!([{"url": "https://a.example", "interval": -3}])),
            Some(0)
        );
        assert_eq!(
            index_of(json!([{"url": "https://a.example", "interval": "10"}])),
            Some(0)
        );
        assert_eq!(
            index_of(json!([{"url": "https://a.example", "interval": 1.5}])),
            Some(0)
        );
        assert_eq!(
            index_of(json!([{"url": "https://a.example", "interval": 5, "timeout": 0}])),
            Some(0)
        );
        assert_eq!(
            index_of(json!([{"url": "ftp://a.example", "interval": 5}])),
            Some(0)
        );
        assert_eq!(parse_config(&json!([])), Err(ImportError::Empty));
        assert_eq!(
            parse_config(&json!({"url": "x"})),
            Err(ImportError::NotAnArray)
        );
    }
}
