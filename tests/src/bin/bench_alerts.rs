//! `bench_alerts`: how long an alert takes, from the transaction that stores the failing check
//! (a notification's created_at is its start) to the webhook's arrival at a receiver on
//! 127.0.0.1. 200 monitors checked every second (down_after = 1) go down together, then up
//! together, three times: 1,200 deliveries under a burst, then one monitor alone, ten times.
//! Prints p50 / p99 / max per case.

use anyhow::{bail, Context, Result};
use std::time::{Duration, SystemTime};
use tokio_postgres::Client;
use webmon_tests::cluster::Cluster;
use webmon_tests::probe::Probe;
use webmon_tests::receivers::{self, WebhookReceiver};
use webmon_tests::targets;
use webmon_tests::wait_until;

const MONITORS: i64 = 200;
const ROUNDS: usize = 3;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let cluster = Cluster::start("bench-alerts", &[]).await?;
    cluster.wait_for_scheduler().await?;
    let db = cluster.client().await?;
    let target = targets::start_http().await?;
    let receiver = receivers::start_webhook_receiver().await?;
    db.execute(
        "INSERT INTO webmon.channels (name, kind, settings, is_default) VALUES ('bench', 'webhook', $1, true)",
        &[&serde_json::json!({"url": receiver.url("/hook")})],
    )
    .await?;
    db.execute(
        "INSERT INTO webmon.monitors (url, name, check_interval, down_after)
         SELECT $1, 'bench ' || g, '1 second', 1 FROM generate_series(1, $2::bigint) g",
        &[&target.url("/ok"), &MONITORS],
    )
    .await?;
    let mut probe = Probe::for_cluster(&cluster, "bench-alerts", &[])?;
    if !all_in_state(&db, "up", MONITORS, None).await {
        bail!("monitors never all up\n{}", probe.output());
    }

    println!("## alert latency: failing check's transaction → webhook arrival (127.0.0.1)");
    let mut burst = Vec::new();
    for _ in 0..ROUNDS {
        for (path, state) in [("/status/503", "down"), ("/ok", "up")] {
            burst.extend(flip(&db, &receiver, &target.url(path), state, None).await?);
        }
    }
    report(
        &format!("{MONITORS} monitors at once, {ROUNDS} × down and up"),
        &mut burst,
    );

    let mut alone = Vec::new();
    for _ in 0..5 {
        for (path, state) in [("/status/503", "down"), ("/ok", "up")] {
            alone.extend(flip(&db, &receiver, &target.url(path), state, Some(1)).await?);
        }
    }
    report("one monitor, 5 × down and up", &mut alone);
    probe.stop_cleanly(libc::SIGTERM).await;
    Ok(())
}

/// Points the monitors (all, or one) at `url`, waits for their new state and their
/// notifications' deliveries, and returns each delivery's latency in ms.
async fn flip(
    db: &Client,
    receiver: &WebhookReceiver,
    url: &str,
    state: &str,
    monitor: Option<i64>,
) -> Result<Vec<f64>> {
    let before: i64 = db
        .query_one("SELECT coalesce(max(id), 0) FROM webmon.notifications", &[])
        .await?
        .get(0);
    let changed = db
        .execute(
            "UPDATE webmon.monitors SET url = $1 WHERE $2::bigint IS NULL OR id = $2",
            &[&url, &monitor],
        )
        .await?;
    let expected = changed as usize;
    if !all_in_state(db, state, changed as i64, monitor).await {
        bail!("monitors did not turn {state}");
    }
    let rows = db
        .query(
            "SELECT idempotency_key::text, created_at FROM webmon.notifications WHERE id > $1",
            &[&before],
        )
        .await?;
    let arrived = wait_until(Duration::from_secs(60), || async {
        let got = receiver.deliveries("/hook");
        rows.iter().all(|row| {
            got.iter()
                .any(|d| d.idempotency_key.as_deref() == Some(row.get::<_, &str>(0)))
        })
    })
    .await;
    if rows.len() != expected || !arrived {
        bail!(
            "{} notifications for {expected} changes, all delivered: {arrived}",
            rows.len()
        );
    }
    let got = receiver.deliveries("/hook");
    rows.iter()
        .map(|row| {
            let key: &str = row.get(0);
            let written: SystemTime = row.get(1);
            let delivery = got
                .iter()
                .find(|d| d.idempotency_key.as_deref() == Some(key))
                .context("delivery")?;
            Ok(delivery
                .at
                .duration_since(written)
                .unwrap_or_default()
                .as_secs_f64()
                * 1000.0)
        })
        .collect()
}

/// Waits (60 s at most) until `count` monitors (of all, or the one) are in `state`.
async fn all_in_state(db: &Client, state: &str, count: i64, monitor: Option<i64>) -> bool {
    wait_until(Duration::from_secs(60), || async {
        db.query_one(
            "SELECT count(*) FROM webmon.monitor_status WHERE state = $1 AND ($2::bigint IS NULL OR monitor_id = $2)",
            &[&state, &monitor],
        )
        .await
        .map(|r| r.get::<_, i64>(0) >= count)
        .unwrap_or(false)
    })
    .await
}

fn report(case: &str, samples: &mut [f64]) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "- {case}: {} deliveries, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        samples.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}
