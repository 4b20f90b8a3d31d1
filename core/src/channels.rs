//! Where alerts go: the kinds of `webmon.channels` and what each one's `settings` must hold.
//! The extension refuses any other settings at INSERT/UPDATE (SQLSTATE 22023, with the
//! reason), and the probe delivers with the same rules, so a stored channel is deliverable.

use crate::validate::MAX_URL_BYTES;
use serde_json::{Map, Value};

/// The kinds of channel, as `webmon.channels.kind` holds them.
pub const KINDS: [&str; 5] = ["webhook", "slack", "discord", "email", "pg_notify"];
/// Most recipients of one email channel.
pub const MAX_RECIPIENTS: usize = 50;
/// Longest email address, in bytes (RFC 5321's path limit).
pub const MAX_ADDRESS_BYTES: usize = 254;
/// Most extra headers of a webhook.
pub const MAX_HEADERS: usize = 20;
/// Headers a webhook's settings may not set: the probe sets them (or HTTP does).
pub const RESERVED_HEADERS: [&str; 6] = [
    "content-length",
    "content-type",
    "host",
    "transfer-encoding",
    "connection",
    "idempotency-key",
];

/// How an email channel talks to its SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain SMTP (a relay on the same host or network).
    None,
    /// STARTTLS, required (the default).
    StartTls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

/// An email channel's settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailSettings {
    pub host: String,
    pub port: u16,
    pub from: String,
    pub to: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub security: SmtpSecurity,
}

/// Why a channel's settings are refused, in one line that names the problem.
pub fn settings_problem(kind: &str, settings: &Value) -> Option<String> {
    check(kind, settings)
        .err()
        .map(|reason| format!("invalid settings for a {kind} channel: {reason}"))
}

fn check(kind: &str, settings: &Value) -> Result<(), String> {
    let Some(object) = settings.as_object() else {
        return Err("settings must be a JSON object".into());
    };
    match kind {
        "webhook" => {
            only_keys(object, &["url", "headers"])?;
            http_url(object)?;
            headers(object).map(|_| ())
        }
        "slack" | "discord" => {
            only_keys(object, &["url"])?;
            http_url(object).map(|_| ())
        }
        "email" => email(settings).map(|_| ()),
        "pg_notify" => {
            only_keys(object, &["channel"])?;
            let channel = string(object, "channel")?;
            if channel.is_empty() || channel.len() > 63 {
                return Err(format!(
                    "\"channel\" must be 1 to 63 bytes, not {}",
                    channel.len()
                ));
            }
            Ok(())
        }
        other => Err(format!(
            "unknown kind \"{other}\": use one of {}",
            KINDS.join(", ")
        )),
    }
}

/// A webhook's, Slack's or Discord's URL.
pub fn http_url(object: &Map<String, Value>) -> Result<url::Url, String> {
    let text = string(object, "url")?;
    if text.len() > MAX_URL_BYTES {
        return Err(format!("\"url\" is longer than {MAX_URL_BYTES} bytes"));
    }
    let url = url::Url::parse(text).map_err(|e| format!("\"url\" {text:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "\"url\" {text:?} must be an http or https URL with a host"
        ));
    }
    Ok(url)
}

/// A webhook's extra headers (e.g. an Authorization), as name and value pairs.
pub fn headers(object: &Map<String, Value>) -> Result<Vec<(String, String)>, String> {
    let Some(value) = object.get("headers") else {
        return Ok(Vec::new());
    };
    let Some(map) = value.as_object() else {
        return Err("\"headers\" must be an object of names and string values".into());
    };
    if map.len() > MAX_HEADERS {
        return Err(format!("\"headers\" has more than {MAX_HEADERS} entries"));
    }
    map.iter()
        .map(|(name, value)| {
            let Some(value) = value.as_str() else {
                return Err(format!("header {name:?} must have a string value"));
            };
            let parsed = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("{name:?} is not a valid header name"))?;
            if RESERVED_HEADERS.contains(&parsed.as_str()) {
                return Err(format!(
                    "header {name:?} is set by the probe (reserved: {})",
                    RESERVED_HEADERS.join(", ")
                ));
            }
            http::HeaderValue::from_str(value)
                .map_err(|_| format!("the value of header {name:?} is not a valid header value"))?;
            Ok((name.clone(), value.to_string()))
        })
        .collect()
}

/// An email channel's settings: `smtp` ("host:port"), `from`, `to` (a list), and optionally
/// `username` and `password` (together), `tls` (`starttls`, the default; `tls`; `none`).
pub fn email(settings: &Value) -> Result<EmailSettings, String> {
    let Some(object) = settings.as_object() else {
        return Err("settings must be a JSON object".into());
    };
    only_keys(
        object,
        &["smtp", "from", "to", "username", "password", "tls"],
    )?;
    let smtp = string(object, "smtp")?;
    let (host, port) = smtp
        .rsplit_once(':')
        .ok_or_else(|| format!("\"smtp\" {smtp:?} must be host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port
        .parse()
        .ok()
        .filter(|port| *port > 0)
        .ok_or_else(|| format!("\"smtp\" {smtp:?}: the port must be from 1 to 65535"))?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!(
            "\"smtp\" {smtp:?}: the host is missing or has spaces"
        ));
    }
    let from = address(string(object, "from")?)?;
    let to = match object.get("to") {
        Some(Value::Array(list)) if !list.is_empty() && list.len() <= MAX_RECIPIENTS => list
            .iter()
            .map(|item| {
                item.as_str()
                    .ok_or_else(|| "\"to\" must list strings".to_string())
                    .and_then(address)
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(format!(
                "\"to\" must be a list of 1 to {MAX_RECIPIENTS} addresses"
            ))
        }
    };
    let optional = |key: &str| -> Result<Option<String>, String> {
        match object.get(key) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(format!("\"{key}\" must be a string")),
        }
    };
    let (username, password) = (optional("username")?, optional("password")?);
    if username.is_some() != password.is_some() {
        return Err("\"username\" and \"password\" go together".into());
    }
    let security = match optional("tls")?.as_deref() {
        None | Some("starttls") => SmtpSecurity::StartTls,
        Some("tls") => SmtpSecurity::Tls,
        Some("none") => SmtpSecurity::None,
        Some(other) => return Err(format!("\"tls\" {other:?} must be starttls, tls or none")),
    };
    Ok(EmailSettings {
        host: host.to_string(),
        port,
        from,
        to,
        username,
        password,
        security,
    })
}

/// An email address as SMTP takes it: a local part of letters, digits and
/// ``!#$%&'*+/=?^_`{|}~.-`` (dots not first, last or doubled), `@`, and a domain of labels of
/// letters, digits and hyphens (or an address literal in brackets); at most 254 bytes. No
/// display name, no quoted local part.
fn address(text: &str) -> Result<String, String> {
    let bad = || Err(format!("{text:?} is not an email address"));
    let Some((local, domain)) = text.rsplit_once('@') else {
        return bad();
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
    let domain_ok =
        if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            literal.parse::<std::net::Ipv4Addr>().is_ok()
                || literal
                    .strip_prefix("IPv6:")
                    .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok())
        } else {
            !domain.is_empty()
                && domain.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
        };
    if text.len() <= MAX_ADDRESS_BYTES && local_ok && domain_ok {
        Ok(text.to_string())
    } else {
        bad()
    }
}

fn string<'a>(object: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    match object.get(key) {
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(format!("\"{key}\" must be a string")),
        None => Err(format!("\"{key}\" is missing")),
    }
}

/// Unknown keys are refused: a misspelt one would otherwise be ignored silently.
fn only_keys(object: &Map<String, Value>, allowed: &[&str]) -> Result<(), String> {
    match object.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(key) => Err(format!(
            "unknown key \"{key}\" (allowed: {})",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn webhooks_need_an_http_url_and_may_add_headers() {
        assert_eq!(
            settings_problem("webhook", &json!({"url": "https://hooks.example.com/x"})),
            None
        );
        assert_eq!(
            settings_problem(
                "webhook",
                &json!({"url": "http://127.0.0.1:9/x", "headers": {"Authorization": "Bearer t"}})
            ),
            None
        );
        for (settings, says) in [
            (json!({}), "\"url\" is missing"),
            (
                json!({"url": "ftp://example.com/"}),
                "must be an http or https URL",
            ),
            (json!({"url": "not a url"}), "\"url\" \"not a url\""),
            (json!({"url": 7}), "\"url\" must be a string"),
            (
                json!({"url": "http://x/", "header": {}}),
                "unknown key \"header\"",
            ),
            (
                json!({"url": "http://x/", "headers": {"a b": "c"}}),
                "not a valid header name",
            ),
            (
                json!({"url": "http://x/", "headers": {"a": "c\nd"}}),
                "not a valid header value",
            ),
            (
                json!({"url": "http://x/", "headers": {"a": 1}}),
                "must have a string value",
            ),
            (json!(["http://x/"]), "must be a JSON object"),
        ] {
            let problem = settings_problem("webhook", &settings).unwrap_or_default();
            assert!(problem.contains(says), "{settings}: {problem}");
            assert!(problem.starts_with("invalid settings for a webhook channel: "));
        }
    }

    #[test]
    fn slack_and_discord_take_only_a_url() {
        for kind in ["slack", "discord"] {
            assert_eq!(
                settings_problem(
                    kind,
                    &json!({"url": "https://hooks.slack.com/services/T/B/x"})
                ),
                None
            );
            assert!(
                settings_problem(kind, &json!({"url": "https://x/", "headers": {}}))
                    .unwrap_or_default()
                    .contains("unknown key \"headers\"")
            );
        }
    }

    #[test]
    fn email_needs_a_server_a_sender_and_recipients() {
        let good = json!({"smtp": "127.0.0.1:2525", "from": "webmon@example.com", "to": ["ops@example.com"], "tls": "none"});
        assert_eq!(settings_problem("email", &good), None);
        let parsed = email(&good).unwrap();
        assert_eq!((parsed.host.as_str(), parsed.port), ("127.0.0.1", 2525));
        assert_eq!(parsed.security, SmtpSecurity::None);
        let default_tls =
            email(&json!({"smtp": "[::1]:25", "from": "a@b", "to": ["c@d"]})).unwrap();
        assert_eq!(
            (default_tls.host.as_str(), default_tls.security),
            ("::1", SmtpSecurity::StartTls)
        );
        for (settings, says) in [
            (json!({"from": "a@b", "to": ["c@d"]}), "\"smtp\" is missing"),
            (
                json!({"smtp": "mail", "from": "a@b", "to": ["c@d"]}),
                "must be host:port",
            ),
            (
                json!({"smtp": "mail:0", "from": "a@b", "to": ["c@d"]}),
                "port must be from 1 to 65535",
            ),
            (
                json!({"smtp": "mail:99999", "from": "a@b", "to": ["c@d"]}),
                "port must be from 1 to 65535",
            ),
            (
                json!({"smtp": "mail:25", "from": "ab", "to": ["c@d"]}),
                "\"ab\" is not an email address",
            ),
            (
                json!({"smtp": "mail:25", "from": "a@b", "to": []}),
                "\"to\" must be a list of 1 to 50",
            ),
            (
                json!({"smtp": "mail:25", "from": "a@b", "to": "c@d"}),
                "\"to\" must be a list",
            ),
            (
                json!({"smtp": "mail:25", "from": "a@b", "to": ["Ops <c@d>"]}),
                "is not an email address",
            ),
            (
                json!({"smtp": "mail:25", "from": "a@b", "to": ["c@d"], "username": "u"}),
                "go together",
            ),
            (
                json!({"smtp": "mail:25", "from": "a@b", "to": ["c@d"], "tls": "ssl"}),
                "must be starttls, tls or none",
            ),
        ] {
            let problem = settings_problem("email", &settings).unwrap_or_default();
            assert!(problem.contains(says), "{settings}: {problem}");
        }
        for fine in [
            "o.k+tag@mail.example.com",
            "root@[127.0.0.1]",
            "x@[IPv6:::1]",
        ] {
            assert_eq!(address(fine), Ok(fine.to_string()));
        }
        let many: Vec<String> = (0..51).map(|i| format!("u{i}@example.com")).collect();
        assert!(
            settings_problem("email", &json!({"smtp": "m:25", "from": "a@b", "to": many}))
                .is_some()
        );
    }

    #[test]
    fn pg_notify_takes_a_channel_name_and_unknown_kinds_are_refused() {
        assert_eq!(
            settings_problem("pg_notify", &json!({"channel": "alerts"})),
            None
        );
        assert!(settings_problem("pg_notify", &json!({"channel": ""})).is_some());
        assert!(settings_problem("pg_notify", &json!({"channel": "x".repeat(64)})).is_some());
        assert!(settings_problem("pager", &json!({}))
            .unwrap_or_default()
            .contains(
                "unknown kind \"pager\": use one of webhook, slack, discord, email, pg_notify"
            ));
    }
}
