//! What an alert says: one short, human line per event (the extension stores it in each
//! notification's payload as `message`; the probe sends it as the Slack or Discord text and
//! the email's subject and first line).

/// What happened to an incident, for its alert.
#[derive(Debug, Clone, Copy)]
pub struct Alert<'a> {
    /// `down`, `degraded`, `recovered` or `reminder`.
    pub event: &'a str,
    /// The incident's kind (`down`, `degraded`): what a `recovered` ends.
    pub kind: &'a str,
    pub name: &'a str,
    pub url: &'a str,
    /// When the incident started, as text (UTC).
    pub since: &'a str,
    /// How long it lasted (recovered) or has lasted so far (reminder), in seconds.
    pub duration_s: Option<f64>,
    pub cause: Option<&'a str>,
}

/// The alert's line, e.g. `DOWN: shop (https://shop.example.com/) since 2026-11-29 10:00:00
/// UTC: connect: connection refused`.
pub fn message(alert: &Alert) -> String {
    let who = if alert.name.is_empty() || alert.name == alert.url {
        alert.url.to_string()
    } else {
        format!("{} ({})", alert.name, alert.url)
    };
    let cause = alert
        .cause
        .filter(|cause| !cause.is_empty())
        .map(|cause| format!(": {cause}"))
        .unwrap_or_default();
    let lasted = alert.duration_s.map(human_duration).unwrap_or_default();
    match (alert.event, alert.kind) {
        ("down", _) => format!("DOWN: {who} since {}{cause}", alert.since),
        ("degraded", _) => format!(
            "DEGRADED: {who} is slower than its degraded_after_ms since {}",
            alert.since
        ),
        ("recovered", "degraded") => format!(
            "RECOVERED: {who} is fast again after {lasted} degraded (since {})",
            alert.since
        ),
        ("recovered", _) => format!(
            "RECOVERED: {who} is up again after {lasted} down (since {})",
            alert.since
        ),
        ("reminder", _) => format!(
            "STILL DOWN: {who} for {lasted} (since {}){cause}",
            alert.since
        ),
        (other, _) => format!(
            "{}: {who} since {}{cause}",
            other.to_uppercase(),
            alert.since
        ),
    }
}

/// A monitor's URL as alerts show it: without credentials, query or fragment, which can hold
/// secrets (`https://user:pw@host/path?token=x` → `https://host/path`). Text that is not a
/// URL is cut at its first `?` or `#`.
pub fn shown_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => text
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

/// A duration people read at a glance: `45 s`, `5 min 12 s`, `2 h 5 min`, `3 d 4 h`.
pub fn human_duration(seconds: f64) -> String {
    let total = if seconds.is_finite() && seconds > 0.0 {
        seconds.round().min(u64::MAX as f64) as u64
    } else {
        0
    };
    let (days, hours, minutes, secs) = (
        total / 86_400,
        total % 86_400 / 3_600,
        total % 3_600 / 60,
        total % 60,
    );
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{secs} s"),
        (0, 0, _) => format!("{minutes} min {secs} s"),
        (0, _, _) => format!("{hours} h {minutes} min"),
        _ => format!("{days} d {hours} h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert<'a>(event: &'a str, kind: &'a str) -> Alert<'a> {
        Alert {
            event,
            kind,
            name: "shop",
            url: "https://shop.example.com/",
            since: "2026-11-29 10:00:00 UTC",
            duration_s: Some(312.4),
            cause: Some("connect: connection refused"),
        }
    }

    #[test]
    fn each_event_reads_as_one_line() {
        assert_eq!(
            message(&alert("down", "down")),
            "DOWN: shop (https://shop.example.com/) since 2026-11-29 10:00:00 UTC: connect: connection refused"
        );
        assert_eq!(
            message(&alert("recovered", "down")),
            "RECOVERED: shop (https://shop.example.com/) is up again after 5 min 12 s down (since 2026-11-29 10:00:00 UTC)"
        );
        assert_eq!(
            message(&alert("recovered", "degraded")),
            "RECOVERED: shop (https://shop.example.com/) is fast again after 5 min 12 s degraded (since 2026-11-29 10:00:00 UTC)"
        );
        assert!(message(&alert("degraded", "degraded")).starts_with("DEGRADED: shop"));
        assert_eq!(
            message(&alert("reminder", "down")),
            "STILL DOWN: shop (https://shop.example.com/) for 5 min 12 s (since 2026-11-29 10:00:00 UTC): connect: connection refused"
        );
    }

    #[test]
    fn a_monitor_without_a_name_is_named_by_its_url() {
        let mut unnamed = alert("down", "down");
        unnamed.name = "";
        unnamed.cause = None;
        assert_eq!(
            message(&unnamed),
            "DOWN: https://shop.example.com/ since 2026-11-29 10:00:00 UTC"
        );
    }

    #[test]
    fn shown_urls_keep_no_secrets() {
        assert_eq!(
            shown_url("https://user:pw@shop.example.com:8443/health?token=s3cret#top"),
            "https://shop.example.com:8443/health"
        );
        assert_eq!(shown_url("http://127.0.0.1:9/ok"), "http://127.0.0.1:9/ok");
        assert_eq!(shown_url("not a url?key=1"), "not a url");
    }

    #[test]
    fn durations_are_rounded_to_two_units() {
        assert_eq!(human_duration(0.4), "0 s");
        assert_eq!(human_duration(45.0), "45 s");
        assert_eq!(human_duration(3_599.0), "59 min 59 s");
        assert_eq!(human_duration(7_500.0), "2 h 5 min");
        assert_eq!(human_duration(280_800.0), "3 d 6 h");
        assert_eq!(human_duration(f64::NAN), "0 s");
        assert_eq!(human_duration(-5.0), "0 s");
    }
}
