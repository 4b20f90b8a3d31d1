//! Alert delivery: lease due notifications (`webmon.claim_notifications`), send each to its
//! channel — webhook, Slack, Discord (an HTTP POST) or email (SMTP, with lettre) — and report
//! what happened (`webmon.finish_notifications`). At least once: a probe that dies while
//! delivering leaves its lease to run out, and the notification is sent again with the same
//! idempotency key (in the payload, the `Idempotency-Key` header and the email's Message-ID).
//! Every address, HTTP or SMTP, passes the probe's network policy first.

use crate::db::{self, DbConfig, DbError};
use crate::guard::{literal_address, NetworkPolicy};
use crate::probe::{classify, guarded_http_client, permitted};
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use webmon_core::channels::{self, EmailSettings, SmtpSecurity};
use webmon_core::text::{cut, one_line};

/// Most deliveries in flight at once.
const MAX_IN_FLIGHT: usize = 64;
/// Claim at least this often without a NOTIFY.
const POLL: Duration = Duration::from_secs(1);
/// How long to wait before trying again when the database does not let this probe claim.
const NOT_ALLOWED_PAUSE: Duration = Duration::from_secs(60);

/// Why a delivery failed, and whether trying again could change it (`permanent`: a receiver's
/// 4xx other than 408 and 429, an SMTP 5xx, a message that cannot be built): such a
/// notification is given up at once, so that the alerts behind it go out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    pub permanent: bool,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure {
            message,
            permanent: false,
        }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

fn permanent(message: String) -> Failure {
    Failure {
        message,
        permanent: true,
    }
}

/// Whether a receiver's HTTP status refuses the notification for good.
pub fn refused_for_good(status: u16) -> bool {
    (400..500).contains(&status) && status != 408 && status != 429
}

/// A leased notification.
#[derive(Debug, Clone)]
pub struct Notification {
    pub id: i64,
    pub channel: String,
    pub kind: String,
    pub settings: Value,
    pub payload: Value,
    pub idempotency_key: String,
}

pub struct Deliverer {
    pub config: DbConfig,
    pub probe: String,
    pub policy: Arc<NetworkPolicy>,
    /// One delivery attempt may take this long (an HTTP exchange, or an SMTP session).
    pub timeout: Duration,
    pub stop: CancellationToken,
}

/// A lease covers a batch's deliveries (in parallel, each within `timeout`) and the report
/// of their outcome, with room to spare; a probe killed meanwhile leaves it to run out.
pub fn lease(timeout: Duration) -> Duration {
    timeout * 2 + Duration::from_secs(5)
}

impl Deliverer {
    pub async fn run(self) {
        let http = match guarded_http_client(self.policy.clone())
            .timeout(self.timeout)
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "alerts: cannot build the HTTP client; no notifications are delivered by this probe");
                return;
            }
        };
        let wake = Arc::new(Notify::new());
        loop {
            let Ok(client) =
                db::connect_with_backoff(&self.config, Some(wake.clone()), &self.stop, "alerts")
                    .await
            else {
                return;
            };
            let pause = match self.deliver_loop(&client, &http, &wake).await {
                Ok(()) => return,
                Err(e) if cannot_claim(&e) => {
                    tracing::warn!(error = %e, "alerts: this probe cannot claim notifications (a database before 0.6.0, or a probe role granted before it: run SELECT webmon.grant_probe('<role>')); trying again in a minute");
                    NOT_ALLOWED_PAUSE
                }
                Err(e) => {
                    tracing::warn!(error = %e, "alerts: database error; reconnecting");
                    POLL
                }
            };
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Deliveries run side by side, up to `MAX_IN_FLIGHT`; each is reported as it ends (with
    /// the others that ended by then), and
    /// a free place is filled by the next claim, so a slow or dead receiver holds up only
    /// its own notifications. On stop: no new claims; those in flight end and are reported.
    async fn deliver_loop(
        &self,
        client: &Client,
        http: &reqwest::Client,
        wake: &Notify,
    ) -> Result<(), DbError> {
        client.batch_execute("LISTEN webmon_notifications").await?;
        let claim = client
            .prepare(
                "SELECT notification_id, channel, kind, settings, payload, idempotency_key::text
                 FROM webmon.claim_notifications($1, $2, make_interval(secs => $3))",
            )
            .await?;
        let finish = client
            .prepare("SELECT webmon.finish_notifications($1, $2, $3, $4)")
            .await?;
        let lease = lease(self.timeout).as_secs_f64();
        let mut in_flight = FuturesUnordered::new();
        loop {
            let mut more_waiting = false;
            if !self.stop.is_cancelled() && in_flight.len() < MAX_IN_FLIGHT {
                let free = (MAX_IN_FLIGHT - in_flight.len()) as i32;
                let rows = client.query(&claim, &[&self.probe, &free, &lease]).await?;
                more_waiting = rows.len() == free as usize;
                for row in &rows {
                    match notification_from_row(row) {
                        Ok(n) => in_flight.push(async move {
                            let outcome = self.deliver(http, &n).await;
                            (n, outcome)
                        }),
                        Err(e) => {
                            tracing::error!(error = %e, "alerts: unreadable notification row; it is retried after its lease")
                        }
                    }
                }
            }
            if in_flight.is_empty() {
                if self.stop.is_cancelled() {
                    return Ok(());
                }
                tokio::select! {
                    biased;
                    _ = self.stop.cancelled() => {}
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
                continue;
            }
            let room = in_flight.len() < MAX_IN_FLIGHT && !self.stop.is_cancelled();
            tokio::select! {
                biased;
                Some(first) = in_flight.next() => {
                    // This one and every other that has ended too, in one report.
                    let mut ended = vec![first];
                    while let Some(Some(next)) = in_flight.next().now_or_never() {
                        ended.push(next);
                    }
                    let mut ids = Vec::with_capacity(ended.len());
                    let mut errors = Vec::with_capacity(ended.len());
                    let mut finals = Vec::with_capacity(ended.len());
                    for (n, outcome) in ended {
                        match outcome {
                            Ok(()) => {
                                tracing::info!(notification = n.id, channel = %n.channel, "alerts: delivered");
                                errors.push(None);
                                finals.push(false);
                            }
                            Err(failure) if failure.permanent => {
                                tracing::warn!(notification = n.id, channel = %n.channel, error = %failure.message, "alerts: refused for good; given up");
                                errors.push(Some(failure.message));
                                finals.push(true);
                            }
                            Err(failure) => {
                                tracing::warn!(notification = n.id, channel = %n.channel, error = %failure.message, "alerts: delivery failed; retried with backoff");
                                errors.push(Some(failure.message));
                                finals.push(false);
                            }
                        }
                        ids.push(n.id);
                    }
                    client
                        .query_one(&finish, &[&self.probe, &ids, &errors, &finals])
                        .await?;
                }
                _ = wake.notified(), if room => {}
                _ = tokio::time::sleep(POLL), if room && !more_waiting => {}
                _ = std::future::ready(()), if room && more_waiting => {}
            }
        }
    }

    async fn deliver(&self, http: &reqwest::Client, n: &Notification) -> Result<(), Failure> {
        let delivered = tokio::time::timeout(self.timeout, async {
            match n.kind.as_str() {
                "webhook" | "slack" | "discord" => post(http, &self.policy, n).await,
                "email" => email(&self.policy, n, self.timeout).await,
                other => Err(format!("channel kind {other} is not delivered by probes").into()),
            }
        })
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {:?}", self.timeout).into()));
        delivered.map_err(|failure| Failure {
            // One storable line: a NUL in a receiver's error would make its report fail.
            message: one_line(&failure.message),
            permanent: failure.permanent,
        })
    }
}

/// The role may not call the notification API (42501), or the database has none (42883).
fn cannot_claim(error: &DbError) -> bool {
    let DbError::Postgres(e) = error else {
        return false;
    };
    e.as_db_error()
        .is_some_and(|db| matches!(db.code().code(), "42501" | "42883"))
}

fn notification_from_row(row: &tokio_postgres::Row) -> Result<Notification, tokio_postgres::Error> {
    Ok(Notification {
        id: row.try_get(0)?,
        channel: row.try_get(1)?,
        kind: row.try_get(2)?,
        settings: row.try_get(3)?,
        payload: row.try_get(4)?,
        idempotency_key: row.try_get(5)?,
    })
}

/// Discord refuses a message over 2,000 characters (UTF-16 units: an emoji can count twice,
/// so a margin); Slack cuts at 40,000.
const DISCORD_MAX_CHARS: usize = 1900;
const SLACK_MAX_CHARS: usize = 40_000;

/// What is POSTed: the payload itself to a webhook; Slack's and Discord's message formats
/// (the text cut to what they take).
pub fn http_body(kind: &str, payload: &Value) -> Value {
    let text = payload
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("pg_webmon alert");
    match kind {
        "slack" => json!({ "text": cut(text, SLACK_MAX_CHARS) }),
        "discord" => json!({ "content": cut(text, DISCORD_MAX_CHARS) }),
        _ => payload.clone(),
    }
}

async fn post(
    http: &reqwest::Client,
    policy: &NetworkPolicy,
    n: &Notification,
) -> Result<(), Failure> {
    let settings = n
        .settings
        .as_object()
        .ok_or("channel settings are not an object")?;
    let url = channels::http_url(settings)?;
    if let Some(address) = literal_address(&url) {
        policy
            .check(address)
            .map_err(|blocked| blocked.to_string())?;
    }
    let mut request = http
        .post(url)
        .header("Idempotency-Key", &n.idempotency_key)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(http_body(&n.kind, &n.payload).to_string());
    for (name, value) in channels::headers(settings)? {
        request = request.header(name, value);
    }
    let response = request.send().await.map_err(|e| classify(e).1)?;
    let status = response.status();
    let message = format!("the receiver answered HTTP {}", status.as_u16());
    match status.as_u16() {
        _ if status.is_success() => Ok(()),
        code if refused_for_good(code) => Err(permanent(message)),
        _ => Err(message.into()),
    }
}

/// The email's subject and text: the alert's line, then its details.
pub fn email_text(payload: &Value) -> (String, String) {
    let field = |key: &str| match payload.get(key) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let message = field("message");
    let subject: String = format!("[pg_webmon] {message}").chars().take(200).collect();
    let mut body = format!("{message}\n\n");
    for (label, key) in [
        ("Monitor", "name"),
        ("URL", "url"),
        ("Incident", "incident_id"),
        ("Started", "started_at"),
        ("Resolved", "resolved_at"),
        ("Cause", "cause"),
        ("Failed checks", "failed_checks"),
        ("Idempotency key", "idempotency_key"),
    ] {
        let value = field(key);
        if !value.is_empty() {
            body.push_str(&format!("{label}: {value}\n"));
        }
    }
    (subject, body)
}

async fn email(policy: &NetworkPolicy, n: &Notification, timeout: Duration) -> Result<(), Failure> {
    let settings = channels::email(&n.settings).map_err(permanent)?;
    let (subject, text) = email_text(&n.payload);
    let mut message = Message::builder()
        .from(
            settings
                .from
                .parse()
                .map_err(|e| permanent(format!("from: {e}")))?,
        )
        .subject(subject)
        .message_id(Some(format!("<{}@pg_webmon>", n.idempotency_key)))
        .header(ContentType::TEXT_PLAIN);
    for to in &settings.to {
        message = message.to(to.parse().map_err(|e| permanent(format!("to {to}: {e}")))?);
    }
    let message = message.body(text).map_err(|e| permanent(e.to_string()))?;
    let address = smtp_address(policy, &settings).await?;
    let mut transport =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(address.ip().to_string())
            .port(address.port())
            .timeout(Some(timeout));
    let parameters = || TlsParameters::new(settings.host.clone()).map_err(|e| e.to_string());
    transport = match settings.security {
        SmtpSecurity::None => transport.tls(Tls::None),
        SmtpSecurity::StartTls => transport.tls(Tls::Required(parameters()?)),
        SmtpSecurity::Tls => transport.tls(Tls::Wrapper(parameters()?)),
    };
    if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
        transport = transport.credentials(Credentials::new(user.clone(), password.clone()));
    }
    transport
        .build()
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| Failure {
            permanent: e.is_permanent(),
            message: format!("smtp: {e}"),
        })
}

/// The SMTP server's first address the network policy allows (resolved here, so that the
/// policy judges it; TLS still verifies the host name).
async fn smtp_address(
    policy: &NetworkPolicy,
    settings: &EmailSettings,
) -> Result<SocketAddr, String> {
    let resolved = tokio::net::lookup_host((settings.host.as_str(), settings.port))
        .await
        .map_err(|e| format!("smtp: dns error: {e}"))?
        .collect();
    match permitted(policy, resolved) {
        (allowed, _) if !allowed.is_empty() => Ok(allowed[0]),
        (_, Some(blocked)) => Err(blocked.to_string()),
        _ => Err(format!("smtp: {} has no address", settings.host)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> Value {
        json!({
            "event": "down", "message": "DOWN: shop (https://shop.example/) since 2026-11-29 10:00:00 UTC: status 503",
            "name": "shop", "url": "https://shop.example/", "incident_id": 7, "started_at": "2026-11-29T10:00:00+00:00",
            "resolved_at": null, "cause": "status 503", "failed_checks": 2, "idempotency_key": "k-1"
        })
    }

    #[test]
    fn only_a_refusal_no_retry_can_change_is_final() {
        assert!(refused_for_good(400) && refused_for_good(404) && refused_for_good(422));
        assert!(!refused_for_good(408) && !refused_for_good(429));
        assert!(!refused_for_good(500) && !refused_for_good(503) && !refused_for_good(302));
    }

    #[test]
    fn a_lease_outlasts_a_batch_and_its_report() {
        assert_eq!(lease(Duration::from_secs(10)), Duration::from_secs(25));
    }

    #[test]
    fn slack_and_discord_get_the_line_and_webhooks_the_whole_payload() {
        let line = "DOWN: shop (https://shop.example/) since 2026-11-29 10:00:00 UTC: status 503";
        assert_eq!(http_body("slack", &payload()), json!({ "text": line }));
        assert_eq!(http_body("discord", &payload()), json!({ "content": line }));
        assert_eq!(http_body("webhook", &payload()), payload());
        let long = json!({ "message": "x".repeat(3000) });
        assert_eq!(
            http_body("discord", &long)["content"]
                .as_str()
                .map(str::len),
            Some(1900)
        );
    }

    #[test]
    fn an_email_reads_as_the_line_then_its_details() {
        let (subject, body) = email_text(&payload());
        assert_eq!(
            subject,
            "[pg_webmon] DOWN: shop (https://shop.example/) since 2026-11-29 10:00:00 UTC: status 503"
        );
        assert!(body.starts_with("DOWN: shop"));
        assert!(body.contains("\nURL: https://shop.example/\n"));
        assert!(body.contains("\nIncident: 7\n"));
        assert!(body.contains("\nFailed checks: 2\n"));
        assert!(body.contains("\nIdempotency key: k-1\n"));
        assert!(
            !body.contains("Resolved"),
            "a null field is left out: {body}"
        );
    }
}
