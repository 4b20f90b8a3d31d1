//! The extension in a real cluster: what CREATE EXTENSION says without the preload, and
//! the scheduler worker's life (reload, errors in a tick, SIGTERM).

use futures_util::StreamExt;
use std::time::Duration;
use tokio_postgres::{AsyncMessage, NoTls};
use webmon_tests::cluster::Cluster;
use webmon_tests::wait_until;

#[tokio::test(flavor = "multi_thread")]
async fn without_the_preload_create_extension_works_and_says_how_to_fix_it() {
    let cluster = Cluster::start_empty("no-preload", &["shared_preload_libraries = ''"])
        .await
        .unwrap();
    let (client, mut connection) = tokio_postgres::connect(&cluster.url("postgres"), NoTls)
        .await
        .unwrap();
    let (notices_tx, mut notices) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notice(notice) = message {
                let _ = notices_tx.send(format!(
                    "{} HINT: {}",
                    notice.message(),
                    notice.hint().unwrap_or("")
                ));
            }
        }
    });
    client
        .batch_execute("CREATE EXTENSION pg_webmon")
        .await
        .unwrap();
    let warning = tokio::time::timeout(Duration::from_secs(5), notices.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(warning.contains("no scheduler is running"), "{warning}");
    assert!(warning.contains("shared_preload_libraries"), "{warning}");
    // CREATE EXTENSION makes no partition (it would belong to the extension); without a
    // scheduler, run_maintenance() makes them, and none belongs to the extension.
    let partitions = "SELECT count(*) FROM pg_inherits WHERE inhparent IN ('webmon.metrics'::regclass, 'webmon.errors'::regclass)";
    assert_eq!(count(&client, partitions).await, 0);
    client
        .batch_execute("SELECT webmon.run_maintenance()")
        .await
        .unwrap();
    // Today and 7 days ahead plus the default partition, for each table.
    assert_eq!(count(&client, partitions).await, 18);
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM pg_depend d JOIN pg_inherits i ON i.inhrelid = d.objid
             WHERE d.deptype = 'e' AND i.inhparent IN ('webmon.metrics'::regclass, 'webmon.errors'::regclass)"
        )
        .await,
        0
    );
    client
        .batch_execute("INSERT INTO webmon.monitors (url) VALUES ('http://127.0.0.1:9/')")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scheduler_reloads_settings_survives_errors_and_stops_cleanly() {
    let cluster = Cluster::start("scheduler-life", &[]).await.unwrap();
    cluster.wait_for_scheduler().await.unwrap();
    let db = cluster.client().await.unwrap();
    // A setting changed at run time (no restart) is used: premake 7 → 10 after a reload.
    for statement in [
        "ALTER SYSTEM SET pg_webmon.partition_premake = 10",
        "ALTER SYSTEM SET pg_webmon.maintenance_interval = 1",
        "SELECT pg_reload_conf()",
    ] {
        db.batch_execute(statement).await.unwrap();
    }
    let premade = wait_until(Duration::from_secs(10), || async {
        db.query_one(
            "SELECT count(*) FROM webmon.partitions WHERE parent = 'webmon.metrics'::regclass",
            &[],
        )
        .await
        .map(|r| r.get::<_, i64>(0) == 11)
        .unwrap_or(false)
    })
    .await;
    assert!(
        premade,
        "the reloaded premake was not applied\n{}",
        cluster.server_log()
    );

    // An error inside a tick (a bad setting) is a WARNING; the next ticks go on.
    db.batch_execute("ALTER SYSTEM SET pg_webmon.partition_interval = '10 minutes'")
        .await
        .unwrap();
    db.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    let warned = wait_until(Duration::from_secs(10), || async {
        cluster.server_log().contains("maintenance failed")
    })
    .await;
    assert!(warned, "{}", cluster.server_log());
    // The scheduler still sweeps: a lease that ended a second ago goes back to the queue
    // (leases are swept every five seconds).
    db.batch_execute(
        "INSERT INTO webmon.monitors (url) VALUES ('http://127.0.0.1:9/after-error');
         UPDATE webmon.jobs SET leased_by = 1, leased_slot = now(), attempts = 1,
                lease_expires_at = now() - interval '1 second'",
    )
    .await
    .unwrap();
    let queued = wait_until(Duration::from_secs(12), || async {
        db.query_one(
            "SELECT count(*) FROM webmon.jobs WHERE requeued AND leased_by IS NULL",
            &[],
        )
        .await
        .map(|r| r.get::<_, i64>(0) == 1)
        .unwrap_or(false)
    })
    .await;
    assert!(
        queued,
        "the scheduler stopped after an error\n{}",
        cluster.server_log()
    );
    let pid: i32 = db
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_webmon scheduler'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let activity: String = db
        .query_one("SELECT query FROM pg_stat_activity WHERE pid = $1", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(activity.starts_with("pg_webmon scheduler"), "{activity}");

    // SIGTERM: a clean exit (code 0), so the postmaster does not restart it.
    db.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let stopped = wait_until(Duration::from_secs(5), || async {
        cluster.server_log().contains("pg_webmon scheduler stopped")
    })
    .await;
    assert!(stopped, "{}", cluster.server_log());
    assert!(!cluster
        .server_log()
        .contains(&format!("(PID {pid}) exited with exit code 1")));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_maintenance_worker_vacuums_the_queue_when_it_has_dead_rows() {
    let cluster = Cluster::start("queue-vacuum", &["pg_webmon.queue_vacuum_interval = 1"])
        .await
        .unwrap();
    cluster.wait_for_scheduler().await.unwrap();
    let db = cluster.client().await.unwrap();
    let vacuums =
        "SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = 'webmon.jobs'::regclass";
    // 1,500 jobs (none due), each updated twice: 3,000 dead row versions.
    db.batch_execute(
        "INSERT INTO webmon.monitors (url, next_check_at)
             SELECT 'http://127.0.0.1:9/vacuum/' || g, now() + interval '1 hour' FROM generate_series(1, 1500) g;
         UPDATE webmon.jobs SET attempts = 0;
         UPDATE webmon.jobs SET attempts = 0;",
    )
    .await
    .unwrap();
    let before = count(&db, vacuums).await;
    // This session's statistics reach the server when it is idle (at most once a second).
    let vacuumed = wait_until(Duration::from_secs(20), || async {
        count(&db, vacuums).await > before
    })
    .await;
    assert!(
        vacuumed,
        "webmon.jobs was not vacuumed by the maintenance worker\n{}",
        cluster.server_log()
    );
    let dead = count(
        &db,
        "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'webmon.jobs'::regclass",
    )
    .await;
    assert!(dead < 1000, "{dead} dead rows left after the vacuum");
    // The worker goes on: it is still there, and a second round of dead rows is vacuumed too.
    db.batch_execute("UPDATE webmon.jobs SET attempts = 0; UPDATE webmon.jobs SET attempts = 0;")
        .await
        .unwrap();
    let after_first = count(&db, vacuums).await;
    let again = wait_until(Duration::from_secs(20), || async {
        count(&db, vacuums).await > after_first
    })
    .await;
    assert!(again, "no second vacuum\n{}", cluster.server_log());
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}
