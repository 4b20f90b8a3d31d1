//! Alerts end to end: a real cluster, the real probe, HTTP targets, a webhook receiver and an
//! SMTP server, all on 127.0.0.1. Incidents turn into notifications in the transaction that
//! stores the deciding result; probes deliver them at least once, with one idempotency key.

use serde_json::Value;
use std::time::Duration;
use tokio_postgres::Client;
use webmon_tests::cluster::Cluster;
use webmon_tests::probe::Probe;
use webmon_tests::receivers::{self, Delivery, WebhookReceiver};
use webmon_tests::targets::{self, HttpTarget};
use webmon_tests::wait_until;

struct Setup {
    cluster: Cluster,
    target: HttpTarget,
    receiver: WebhookReceiver,
    db: Client,
}

async fn setup(name: &str) -> Setup {
    let cluster = Cluster::start(name, &[]).await.expect("cluster");
    cluster.wait_for_scheduler().await.expect("scheduler");
    let target = targets::start_http().await.expect("target");
    let receiver = receivers::start_webhook_receiver().await.expect("receiver");
    let db = cluster.client().await.expect("client");
    Setup {
        cluster,
        target,
        receiver,
        db,
    }
}

impl Setup {
    fn probe(&self, name: &str, extra: &[(&str, &str)]) -> Probe {
        Probe::for_cluster(&self.cluster, name, extra).expect("spawn webmon-worker")
    }

    async fn channel(&self, name: &str, kind: &str, settings: Value, is_default: bool) {
        self.db
            .execute(
                "INSERT INTO webmon.channels (name, kind, settings, is_default) VALUES ($1, $2, $3, $4)",
                &[&name, &kind, &settings, &is_default],
            )
            .await
            .expect("channel");
    }

    /// A monitor checked every second; `extra` sets more columns (SQL after the values).
    async fn monitor(&self, name: &str, path: &str, extra: &str) -> i64 {
        let id: i64 = self
            .db
            .query_one(
                "INSERT INTO webmon.monitors (url, name, check_interval) VALUES ($1, $2, '1 second') RETURNING id",
                &[&self.target.url(path), &name],
            )
            .await
            .expect("monitor")
            .get(0);
        if !extra.is_empty() {
            self.db
                .execute(
                    &format!("UPDATE webmon.monitors SET {extra} WHERE id = $1"),
                    &[&id],
                )
                .await
                .expect("monitor settings");
        }
        id
    }

    async fn point(&self, monitor: i64, path: &str) {
        self.db
            .execute(
                "UPDATE webmon.monitors SET url = $1 WHERE id = $2",
                &[&self.target.url(path), &monitor],
            )
            .await
            .expect("url");
    }

    async fn state(&self, monitor: i64) -> String {
        self.db
            .query_one(
                "SELECT state FROM webmon.monitor_status WHERE monitor_id = $1",
                &[&monitor],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or_default()
    }

    /// Deliveries on `path` for `monitor` (by the payload's monitor_id; Slack and Discord
    /// payloads carry only text, so for those pass None).
    fn deliveries(&self, path: &str, monitor: Option<i64>) -> Vec<Delivery> {
        self.receiver
            .deliveries(path)
            .into_iter()
            .filter(|d| monitor.is_none_or(|id| d.body["monitor_id"] == id))
            .collect()
    }

    /// Waits (30 s at most) until `path` got `count` deliveries for `monitor`.
    async fn wait_for_deliveries(
        &self,
        path: &str,
        monitor: Option<i64>,
        count: usize,
    ) -> Vec<Delivery> {
        wait_until(Duration::from_secs(30), || async {
            self.deliveries(path, monitor).len() >= count
        })
        .await;
        self.deliveries(path, monitor)
    }

    async fn notifications(&self) -> Vec<(String, String, Option<String>, i32, bool)> {
        self.db
            .query(
                "SELECT channel, event, last_error, attempts, delivered_at IS NOT NULL FROM webmon.notifications ORDER BY id",
                &[],
            )
            .await
            .expect("notifications")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect()
    }
}

fn events(deliveries: &[Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| d.body["event"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_site_going_down_and_back_tells_each_of_its_channels_once_each_way() {
    let s = setup("alerts-down-up").await;
    s.channel(
        "hooks",
        "webhook",
        serde_json::json!({"url": s.receiver.url("/hook")}),
        true,
    )
    .await;
    s.channel(
        "team",
        "slack",
        serde_json::json!({"url": s.receiver.url("/slack")}),
        true,
    )
    .await;
    s.channel(
        "chat",
        "discord",
        serde_json::json!({"url": s.receiver.url("/discord")}),
        false,
    )
    .await;
    let site = s.monitor("site one", "/ok", "down_after = 2").await;
    // Only the Discord channel, named by the monitor: the defaults hear nothing of it.
    let other = s
        .monitor(
            "site two",
            "/status/500",
            "down_after = 1, channels = '{chat}'",
        )
        .await;
    let mut probe = s.probe("alerts-probe", &[]);
    let up = wait_until(Duration::from_secs(20), || async {
        s.state(site).await == "up"
    })
    .await;
    assert!(up, "never up\n{}", probe.output());

    s.point(site, "/status/503").await;
    let hooks = s.wait_for_deliveries("/hook", Some(site), 1).await;
    assert_eq!(events(&hooks), ["down"], "{}", probe.output());
    let down = &hooks[0];
    assert_eq!(down.body["name"], "site one");
    assert_eq!(down.body["url"], s.target.url("/status/503"));
    assert_eq!(down.body["cause"], "status 503");
    assert!(down.body["message"]
        .as_str()
        .unwrap_or_default()
        .starts_with("DOWN: site one ("));
    let key = down.body["idempotency_key"].as_str().expect("a key");
    assert_eq!(down.idempotency_key.as_deref(), Some(key));

    s.point(site, "/ok").await;
    let hooks = s.wait_for_deliveries("/hook", Some(site), 2).await;
    assert_eq!(events(&hooks), ["down", "recovered"]);
    let recovered = &hooks[1];
    assert_eq!(recovered.body["incident_id"], down.body["incident_id"]);
    assert!(recovered.body["duration_s"].as_f64().unwrap_or(0.0) >= 1.0);
    assert!(recovered.body["message"]
        .as_str()
        .unwrap_or_default()
        .contains("is up again after"));
    assert_ne!(
        recovered.body["idempotency_key"],
        down.body["idempotency_key"]
    );

    let slack = s.wait_for_deliveries("/slack", None, 2).await;
    let texts: Vec<&str> = slack
        .iter()
        .map(|d| d.body["text"].as_str().unwrap_or(""))
        .collect();
    assert!(
        texts[0].starts_with("DOWN: site one") && texts[1].starts_with("RECOVERED: site one"),
        "{texts:?}"
    );
    let discord = s.wait_for_deliveries("/discord", None, 1).await;
    assert!(discord[0].body["content"]
        .as_str()
        .unwrap_or_default()
        .starts_with("DOWN: site two"));

    // Nothing more: each event once per channel, every notification delivered at its first attempt.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(s.deliveries("/hook", None).len(), 2);
    assert_eq!(s.deliveries("/slack", None).len(), 2);
    assert_eq!(s.deliveries("/discord", None).len(), 1);
    let rows = s.notifications().await;
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert!(
        rows.iter()
            .all(|(_, _, _, attempts, delivered)| *attempts == 1 && *delivered),
        "{rows:?}"
    );
    assert_eq!(s.state(other).await, "down");
    probe.stop_cleanly(libc::SIGTERM).await;
}

/// A notification written straight into the outbox, to the channel `hooks`.
async fn queue_notification(db: &Client) -> i64 {
    db.query_one(
        "INSERT INTO webmon.notifications (channel, event, payload)
         VALUES ('hooks', 'down', '{\"message\": \"DOWN: test\"}') RETURNING id",
        &[],
    )
    .await
    .expect("notification")
    .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_failing_twice_gets_the_alert_once_after_three_attempts_with_one_key() {
    let s = setup("alerts-retry").await;
    s.channel(
        "hooks",
        "webhook",
        serde_json::json!({"url": s.receiver.url("/flaky")}),
        true,
    )
    .await;
    s.receiver.answer_first("/flaky", &[500, 500]);
    let id = queue_notification(&s.db).await;
    let mut probe = s.probe("retry-probe", &[]);
    let delivered = wait_until(Duration::from_secs(30), || async {
        s.db.query_one(
            "SELECT delivered_at IS NOT NULL FROM webmon.notifications WHERE id = $1",
            &[&id],
        )
        .await
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false)
    })
    .await;
    assert!(delivered, "not delivered\n{}", probe.output());
    let got = s.deliveries("/flaky", None);
    let statuses: Vec<u16> = got.iter().map(|d| d.status).collect();
    assert_eq!(statuses, [500, 500, 200]);
    let keys: Vec<_> = got.iter().map(|d| d.idempotency_key.clone()).collect();
    assert!(
        keys[0].is_some() && keys.iter().all(|k| *k == keys[0]),
        "{keys:?}"
    );
    assert!(got
        .iter()
        .all(|d| d.body["idempotency_key"].as_str() == keys[0].as_deref()));
    let rows = s.notifications().await;
    assert_eq!(rows[0].3, 3, "{rows:?}");
    assert!(
        rows[0].2.as_deref().unwrap_or("").contains("HTTP 500"),
        "{rows:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        s.deliveries("/flaky", None).len(),
        3,
        "delivered again after it succeeded"
    );
    probe.stop_cleanly(libc::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_probe_killed_while_delivering_leaves_the_alert_to_another_after_its_lease() {
    let s = setup("alerts-kill").await;
    s.channel(
        "hooks",
        "webhook",
        serde_json::json!({"url": s.receiver.url("/slow")}),
        true,
    )
    .await;
    // The first request hangs; the probe is killed while it waits for the answer.
    s.receiver.hang_first("/slow", 1);
    let id = queue_notification(&s.db).await;
    // A 5 s timeout: the kill lands while the request hangs; the lease is 2 × 5 s + 5 s.
    let timeout = [("WEBMON_NOTIFICATION_TIMEOUT_MS", "5000")];
    let mut first = s.probe("doomed-probe", &timeout);
    let arrived = wait_until(Duration::from_secs(20), || async {
        !s.deliveries("/slow", None).is_empty()
    })
    .await;
    assert!(arrived, "no delivery\n{}", first.output());
    first
        .stop(libc::SIGKILL, Duration::from_secs(5))
        .await
        .expect("kill -9");
    let (attempts, delivered): (i32, bool) =
        s.db.query_one(
            "SELECT attempts, delivered_at IS NOT NULL FROM webmon.notifications WHERE id = $1",
            &[&id],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .expect("row");
    assert_eq!((attempts, delivered), (1, false));

    let mut second = s.probe("heir-probe", &timeout);
    let got = s.wait_for_deliveries("/slow", None, 2).await;
    assert_eq!(got.len(), 2, "not delivered again\n{}", second.output());
    assert_eq!(got[1].status, 200);
    assert_eq!(
        got[0].idempotency_key, got[1].idempotency_key,
        "a repeat carries the same key"
    );
    // Not before the first lease (15 s from the claim, just before the first request) ran out.
    let waited = got[1].at.duration_since(got[0].at).unwrap_or_default();
    assert!(
        waited >= Duration::from_secs(13),
        "delivered again after {waited:?}, inside the lease"
    );
    let delivered = wait_until(Duration::from_secs(10), || async {
        s.notifications().await.first().is_some_and(|row| row.4)
    })
    .await;
    assert!(delivered, "{:?}", s.notifications().await);
    second.stop_cleanly(libc::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_maintenance_window_keeps_a_failing_site_quiet_and_alerts_resume_after_it() {
    let s = setup("alerts-maintenance").await;
    s.channel(
        "hooks",
        "webhook",
        serde_json::json!({"url": s.receiver.url("/hook")}),
        true,
    )
    .await;
    let site = s
        .monitor("under works", "/status/503", "down_after = 1")
        .await;
    s.db.execute(
        "INSERT INTO webmon.maintenance (monitor_id, during, reason)
         VALUES ($1, tstzrange(now() - interval '1 minute', now() + interval '1 hour'), 'upgrade')",
        &[&site],
    )
    .await
    .expect("window");
    let mut probe = s.probe("maintenance-probe", &[]);
    let stored = wait_until(Duration::from_secs(20), || async {
        s.db.query_one(
            "SELECT count(*) FROM webmon.metrics WHERE monitor_id = $1",
            &[&site],
        )
        .await
        .map(|r| r.get::<_, i64>(0) >= 3)
        .unwrap_or(false)
    })
    .await;
    assert!(
        stored,
        "checks are not stored during the window\n{}",
        probe.output()
    );
    assert_eq!(s.state(site).await, "maintenance");
    let incidents: i64 =
        s.db.query_one("SELECT count(*) FROM webmon.incidents", &[])
            .await
            .expect("count")
            .get(0);
    assert_eq!(incidents, 0);
    assert!(s.notifications().await.is_empty());
    assert!(s.receiver.deliveries("/hook").is_empty());

    // The window ends: the next failed check opens the incident and tells the channel.
    s.db.execute("DELETE FROM webmon.maintenance", &[])
        .await
        .expect("end");
    let hooks = s.wait_for_deliveries("/hook", Some(site), 1).await;
    assert_eq!(events(&hooks), ["down"], "{}", probe.output());
    assert_eq!(s.state(site).await, "down");
    probe.stop_cleanly(libc::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_site_is_degraded_and_a_down_one_is_reminded_of() {
    let s = setup("alerts-degraded").await;
    s.channel(
        "hooks",
        "webhook",
        serde_json::json!({"url": s.receiver.url("/hook")}),
        true,
    )
    .await;
    let slow = s
        .monitor(
            "slow site",
            "/delay/300",
            "down_after = 2, degraded_after_ms = 100",
        )
        .await;
    let dead = s
        .monitor(
            "dead site",
            "/status/500",
            "down_after = 1, remind_every = '1 second'",
        )
        .await;
    let mut probe = s.probe("degraded-probe", &[]);
    let slow_hooks = s.wait_for_deliveries("/hook", Some(slow), 1).await;
    assert_eq!(events(&slow_hooks), ["degraded"], "{}", probe.output());
    assert!(slow_hooks[0].body["message"]
        .as_str()
        .unwrap_or_default()
        .starts_with("DEGRADED: slow site"));
    assert_eq!(s.state(slow).await, "degraded");

    let dead_hooks = s.wait_for_deliveries("/hook", Some(dead), 3).await;
    let told = events(&dead_hooks);
    assert_eq!(told[..3], ["down", "reminder", "reminder"], "{told:?}");
    assert!(dead_hooks[1].body["message"]
        .as_str()
        .unwrap_or_default()
        .starts_with("STILL DOWN: dead site"));
    assert_eq!(
        dead_hooks[1].body["incident_id"],
        dead_hooks[0].body["incident_id"]
    );
    probe.stop_cleanly(libc::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_email_channel_sends_a_readable_mail_through_smtp() {
    let s = setup("alerts-email").await;
    let smtp = receivers::start_smtp_server().await.expect("smtp");
    s.channel(
        "ops mail",
        "email",
        serde_json::json!({"smtp": smtp.addr.to_string(), "from": "webmon@example.com",
                           "to": ["ops@example.com", "oncall@example.com"], "tls": "none"}),
        true,
    )
    .await;
    let site = s
        .monitor("mail site", "/status/502", "down_after = 1")
        .await;
    let mut probe = s.probe("email-probe", &[]);
    let arrived = wait_until(Duration::from_secs(30), || async {
        !smtp.mails().is_empty()
    })
    .await;
    assert!(arrived, "no mail\n{}", probe.output());
    let mail = &smtp.mails()[0];
    assert_eq!(mail.from, "<webmon@example.com>");
    assert_eq!(mail.to, ["<ops@example.com>", "<oncall@example.com>"]);
    // Headers unfolded, quoted-printable soft breaks joined.
    let text = mail.data.replace("\n ", " ").replace("=\n", "");
    let key: String =
        s.db.query_one(
            "SELECT idempotency_key::text FROM webmon.notifications",
            &[],
        )
        .await
        .expect("key")
        .get(0);
    assert!(
        text.contains("Subject: [pg_webmon] DOWN: mail site ("),
        "{text}"
    );
    assert!(
        text.contains(&format!("Message-ID: <{key}@pg_webmon>")),
        "{text}"
    );
    assert!(
        text.contains(&format!("URL: {}", s.target.url("/status/502"))),
        "{text}"
    );
    assert!(text.contains("Cause: status 502"), "{text}");
    let delivered = wait_until(Duration::from_secs(10), || async {
        s.notifications().await.first().is_some_and(|row| row.4)
    })
    .await;
    assert!(delivered, "{:?}", s.notifications().await);
    assert_eq!(s.state(site).await, "down");
    probe.stop_cleanly(libc::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_pass_the_network_policy_of_the_probe() {
    let s = setup("alerts-guard").await;
    let smtp = receivers::start_smtp_server().await.expect("smtp");
    s.channel(
        "hooks",
        "webhook",
        serde_json::json!({"url": s.receiver.url("/guarded")}),
        false,
    )
    .await;
    // By name: the address after DNS is judged.
    s.channel(
        "named",
        "webhook",
        serde_json::json!({"url": format!("http://localhost:{}/guarded", s.receiver.addr.port())}),
        false,
    )
    .await;
    s.channel(
        "mail",
        "email",
        serde_json::json!({"smtp": smtp.addr.to_string(), "from": "a@example.com", "to": ["b@example.com"], "tls": "none"}),
        false,
    )
    .await;
    s.db.batch_execute(
        "INSERT INTO webmon.notifications (channel, event, payload)
         SELECT c, 'down', '{\"message\": \"DOWN: test\"}' FROM unnest(ARRAY['hooks', 'named', 'mail']) c",
    )
    .await
    .expect("notifications");
    let mut probe = s.probe(
        "guarded-probe",
        &[("WEBMON_DENY_NETWORKS", "127.0.0.0/8,::1")],
    );
    let refused = wait_until(Duration::from_secs(20), || async {
        s.notifications()
            .await
            .iter()
            .filter(|row| {
                row.2
                    .as_deref()
                    .unwrap_or("")
                    .contains("blocked by the network policy")
            })
            .count()
            == 3
    })
    .await;
    assert!(refused, "{:?}\n{}", s.notifications().await, probe.output());
    assert!(s.receiver.deliveries("/guarded").is_empty());
    assert!(smtp.mails().is_empty());
    probe.stop_cleanly(libc::SIGTERM).await;
}
