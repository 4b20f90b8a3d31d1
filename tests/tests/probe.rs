//! End to end: a real cluster with pg_webmon preloaded, the real `webmon-worker` binary,
//! HTTP/TLS targets on 127.0.0.1. Assertions are on rows in webmon.metrics / webmon.errors.

use std::time::{Duration, SystemTime};
use tokio_postgres::Client;
use webmon_tests::cluster::Cluster;
use webmon_tests::probe::Probe;
use webmon_tests::targets::{self, HttpTarget};
use webmon_tests::wait_until;

struct Setup {
    cluster: Cluster,
    target: HttpTarget,
    db: Client,
}

async fn setup(name: &str) -> Setup {
    let cluster = Cluster::start(name, &[]).await.expect("cluster");
    cluster.wait_for_scheduler().await.expect("scheduler");
    let target = targets::start_http().await.expect("target");
    let db = cluster.client().await.expect("client");
    Setup {
        cluster,
        target,
        db,
    }
}

impl Setup {
    fn probe(&self, name: &str, extra: &[(&str, &str)]) -> Probe {
        Probe::for_cluster(&self.cluster, name, extra).expect("spawn webmon-worker")
    }

    async fn monitor(
        &self,
        url: &str,
        interval: &str,
        regex: Option<&str>,
        timeout: Option<&str>,
    ) -> i64 {
        self.db
            .query_one(
                "INSERT INTO webmon.monitors (url, check_interval, regex, timeout) VALUES ($1, $2::text::interval, $3, $4::text::interval) RETURNING id",
                &[&url, &interval, &regex, &timeout],
            )
            .await
            .expect("insert monitor")
            .get(0)
    }

    async fn count(&self, sql: &str, id: i64) -> i64 {
        self.db.query_one(sql, &[&id]).await.expect(sql).get(0)
    }

    async fn wait_rows(&self, table: &str, id: i64, at_least: i64, timeout: Duration) -> bool {
        let sql = format!("SELECT count(*) FROM webmon.{table} WHERE monitor_id = $1");
        wait_until(timeout, || async { self.count(&sql, id).await >= at_least }).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_old_apps_scenarios_and_error_kinds() {
    let s = setup("scenarios").await;
    let tls = targets::start_self_signed_tls().await.unwrap();
    let closed = webmon_tests::cluster::free_port().unwrap();
    let ok = s.monitor(&s.target.url("/ok"), "1 hour", None, None).await;
    let not_found = s
        .monitor(
            &s.target.url("/not-found"),
            "1 hour",
            Some("Not Found"),
            None,
        )
        .await;
    let refused = s
        .monitor(&format!("http://127.0.0.1:{closed}/"), "1 hour", None, None)
        .await;
    let slow = s
        .monitor(
            &s.target.url("/delay/200"),
            "1 hour",
            None,
            Some("50 milliseconds"),
        )
        .await;
    let self_signed = s
        .monitor(
            &format!("https://127.0.0.1:{}/", tls.port()),
            "1 hour",
            None,
            None,
        )
        .await;
    let redirect_loop = s
        .monitor(&s.target.url("/loop"), "1 hour", None, None)
        .await;
    // A refused connection whose URL is full of TLS words (the old classifier searched the
    // message, which held the URL, and said `tls`), with a secret in its query string.
    let refused_tls_words = s
        .monitor(
            &format!("https://127.0.0.1:{closed}/ssl/certificate/tls-handshake?token=s3cret"),
            "1 hour",
            None,
            None,
        )
        .await;
    let mut probe = s.probe("scenarios", &[]);

    for (table, id) in [
        ("metrics", ok),
        ("metrics", not_found),
        ("errors", refused),
        ("errors", slow),
        ("errors", self_signed),
        ("errors", redirect_loop),
        ("errors", refused_tls_words),
    ] {
        assert!(
            s.wait_rows(table, id, 1, Duration::from_secs(15)).await,
            "no {table} row for monitor {id}\n{}",
            probe.output()
        );
    }
    let row =
        s.db.query_one(
            "SELECT http_status_code, regex_matched FROM webmon.metrics WHERE monitor_id = $1",
            &[&ok],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i16>(0), 200);
    assert_eq!(row.get::<_, Option<bool>>(1), None);
    let row = s
        .db
        .query_one("SELECT http_status_code, regex_matched, page_content FROM webmon.metrics WHERE monitor_id = $1", &[&not_found])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i16>(0), 404);
    assert_eq!(row.get::<_, Option<bool>>(1), Some(true));
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some("Not Found")
    );
    for (id, kind) in [
        (refused, "connect"),
        (slow, "timeout"),
        (self_signed, "tls"),
        (redirect_loop, "redirect"),
        (refused_tls_words, "connect"),
    ] {
        let row =
            s.db.query_one(
                "SELECT error_kind, error FROM webmon.errors WHERE monitor_id = $1",
                &[&id],
            )
            .await
            .unwrap();
        let message: String = row.get(1);
        assert_eq!(row.get::<_, String>(0), kind, "monitor {id}: {message}");
        assert!(!message.is_empty() && !message.contains('\n'));
        // Rows hold the monitor id, never the URL (it can carry secrets).
        assert!(
            !message.contains("s3cret") && !message.contains("http"),
            "monitor {id}: {message}"
        );
    }
    // Nothing went to metrics for checks without a response.
    for id in [refused, slow, self_signed, redirect_loop] {
        assert_eq!(
            s.count(
                "SELECT count(*) FROM webmon.metrics WHERE monitor_id = $1",
                id
            )
            .await,
            0
        );
    }
    probe.stop_cleanly(libc::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_denied_network_is_blocked_by_address_name_and_redirect_and_never_reached() {
    let s = setup("guard").await;
    // Something listening on 127.0.0.2 that counts every connection it is offered.
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let forbidden = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let in_region = |url: String, region: &'static str| {
        let db = &s.db;
        async move {
            db.query_one(
                "INSERT INTO webmon.monitors (url, check_interval, regions) VALUES ($1, '1 hour', ARRAY[$2]) RETURNING id",
                &[&url, &region],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    // Region a: a probe told by its environment to deny 127.0.0.2.
    let direct = in_region(format!("http://{forbidden}/direct"), "a").await;
    let redirected = in_region(
        s.target
            .url(&format!("/redirect/http://{forbidden}/redirected")),
        "a",
    )
    .await;
    let allowed = in_region(s.target.url("/ok"), "a").await;
    // Region b: a probe told by its flag to deny 127.0.0.1 and ::1, checking `localhost`.
    let by_name = in_region(
        format!("http://localhost:{}/by-name", s.target.addr.port()),
        "b",
    )
    .await;
    let mut env_probe = s.probe(
        "guard-a",
        &[
            ("WEBMON_REGION", "a"),
            ("WEBMON_DENY_NETWORKS", "127.0.0.2/32"),
        ],
    );
    let url = s.cluster.url("postgres");
    let mut flag_probe = Probe::spawn(
        &["--deny-networks", "127.0.0.1/32,::1/128", "--region", "b"],
        &[
            ("DATABASE_URL", url.as_str()),
            ("WEBMON_PROBE_NAME", "guard-b"),
        ],
        s.cluster.dir.join("guard-b.log"),
    )
    .unwrap();

    assert!(
        s.wait_rows("metrics", allowed, 1, Duration::from_secs(15))
            .await,
        "{}",
        env_probe.output()
    );
    for id in [direct, redirected, by_name] {
        assert!(
            s.wait_rows("errors", id, 1, Duration::from_secs(15)).await,
            "no errors row for monitor {id}\n{}\n{}",
            env_probe.output(),
            flag_probe.output()
        );
        let row =
            s.db.query_one(
                "SELECT error_kind, error FROM webmon.errors WHERE monitor_id = $1",
                &[&id],
            )
            .await
            .unwrap();
        let message: String = row.get(1);
        assert_eq!(
            row.get::<_, String>(0),
            "blocked",
            "monitor {id}: {message}"
        );
        assert!(message.contains("network policy"), "{message}");
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(s.target.hits.of("/by-name").is_empty());
    assert_eq!(
        s.target
            .hits
            .of(&format!("/redirect/http://{forbidden}/redirected"))
            .len(),
        1
    );
    env_probe.stop_cleanly(libc::SIGTERM).await;
    flag_probe.stop_cleanly(libc::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_second_interval_checks_on_its_grid_from_the_insert() {
    let s = setup("interval").await;
    let mut probe = s.probe("interval", &[]);
    // Let the probe connect and LISTEN first, so the watch starts at the insert.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            s.db.query_one("SELECT count(*) FROM webmon.probes", &[])
                .await
                .map(|r| r.get::<_, i64>(0) == 1)
                .unwrap_or(false)
        })
        .await
    );
    let inserted_at = SystemTime::now();
    let id = s
        .monitor(&s.target.url("/any/interval"), "1 second", None, None)
        .await;
    let four = wait_until(Duration::from_secs(15), || async {
        s.target.hits.of("/any/interval").len() >= 4
    })
    .await;
    assert!(
        four,
        "{:?}\n{}",
        s.target.hits.of("/any/interval"),
        probe.output()
    );
    let hits: Vec<SystemTime> = s
        .target
        .hits
        .of("/any/interval")
        .into_iter()
        .take(4)
        .collect();
    let first = hits
        .first()
        .and_then(|at| at.duration_since(inserted_at).ok())
        .unwrap_or(Duration::MAX);
    assert!(
        first < Duration::from_millis(600),
        "first check {first:?} after the insert"
    );
    // After the first (late by up to one scheduler tick), checks stay on the 1 s grid.
    for pair in hits[1..].windows(2) {
        let gap = pair[1].duration_since(pair[0]).unwrap_or_default();
        assert!(
            gap > Duration::from_millis(700) && gap < Duration::from_millis(1300),
            "gap {gap:?} in {hits:?}"
        );
    }
    assert!(s.wait_rows("metrics", id, 4, Duration::from_secs(5)).await);
    probe.stop_cleanly(libc::SIGINT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn five_thousand_results_at_batch_size_one_thousand_are_stored_exactly_once() {
    let s = setup("batch").await;
    s.db.execute(
        // A grid from a time set ahead: one check each in this test's minute (a grid from
        // now() would be spread over the hour, and some second checks would come within it).
        "INSERT INTO webmon.monitors (url, check_interval, next_check_at)
         SELECT $1 || g, '1 hour', now() + interval '1 second' FROM generate_series(1, 5000) g",
        &[&s.target.url("/any/batch/")],
    )
    .await
    .unwrap();
    let mut probe = s.probe(
        "batch",
        &[
            ("RESULT_AGGREGATOR_BATCH_SIZE", "1000"),
            ("HTTP_WORKERS_NUMBER", "500"),
        ],
    );
    let stored = wait_until(Duration::from_secs(60), || async {
        s.db.query_one("SELECT count(*) FROM webmon.metrics", &[])
            .await
            .map(|r| r.get::<_, i64>(0) >= 5000)
            .unwrap_or(false)
    })
    .await;
    assert!(stored, "{}", probe.output());
    probe.stop_cleanly(libc::SIGTERM).await;
    let row = s
        .db
        .query_one("SELECT count(*), count(DISTINCT monitor_id), count(*) FILTER (WHERE http_status_code = 200) FROM webmon.metrics", &[])
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2)
        ),
        (5000, 5000, 5000)
    );
    assert_eq!(s.target.hits.all().len(), 5000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_cap_is_cut_and_still_yields_a_result() {
    let s = setup("cap").await;
    // 2 MiB body whose only "TAIL" is at the very end, beyond a 64 KiB cap.
    let beyond = s
        .monitor(&s.target.url("/big/2097152"), "1 hour", Some("TAIL"), None)
        .await;
    let within = s
        .monitor(&s.target.url("/big/1000"), "1 hour", Some("TAIL"), None)
        .await;
    let mut probe = s.probe("cap", &[("WEBMON_BODY_CAP_BYTES", "65536")]);
    assert!(
        s.wait_rows("metrics", beyond, 1, Duration::from_secs(15))
            .await,
        "{}",
        probe.output()
    );
    assert!(
        s.wait_rows("metrics", within, 1, Duration::from_secs(15))
            .await
    );
    let db = &s.db;
    let matched = |id: i64| async move {
        db.query_one(
            "SELECT http_status_code, regex_matched FROM webmon.metrics WHERE monitor_id = $1",
            &[&id],
        )
        .await
        .unwrap()
    };
    let row = matched(beyond).await;
    assert_eq!(
        (row.get::<_, i16>(0), row.get::<_, Option<bool>>(1)),
        (200, Some(false))
    );
    let row = matched(within).await;
    assert_eq!(
        (row.get::<_, i16>(0), row.get::<_, Option<bool>>(1)),
        (200, Some(true))
    );
    probe.stop_cleanly(libc::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_finishes_or_releases_everything() {
    let s = setup("shutdown").await;
    // 200 slow checks due now and 200 due in 0.8 s (claimed ahead, waiting for their slot).
    s.db.execute(
        "INSERT INTO webmon.monitors (url, check_interval, next_check_at)
         SELECT $1 || g, '1 hour', now() + CASE WHEN g > 200 THEN interval '800 ms' ELSE interval '0' END
         FROM generate_series(1, 400) g",
        &[&s.target.url("/delay/1500?n=")],
    )
    .await
    .unwrap();
    let mut probe = s.probe("shutdown", &[]);
    let leased = wait_until(Duration::from_secs(10), || async {
        s.db.query_one(
            "SELECT count(*) FROM webmon.jobs WHERE leased_by IS NOT NULL",
            &[],
        )
        .await
        .map(|r| r.get::<_, i64>(0) >= 300)
        .unwrap_or(false)
    })
    .await;
    assert!(leased, "{}", probe.output());
    probe.stop_cleanly(libc::SIGTERM).await;
    let row =
        s.db.query_one(
            "SELECT (SELECT count(*) FROM webmon.jobs WHERE leased_by IS NOT NULL),
                    (SELECT count(*) FROM webmon.jobs WHERE requeued),
                    (SELECT count(*) FROM webmon.metrics)",
            &[],
        )
        .await
        .unwrap();
    let (still_leased, queued, stored): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        still_leased,
        0,
        "a leased job was left behind\n{}",
        probe.output()
    );
    // Every check that started was stored; every one that did not went back to the queue
    // for its slot.
    assert!(stored > 0, "no check finished during the grace period");
    assert_eq!(stored + queued, 400, "stored {stored} + requeued {queued}");
}

#[tokio::test(flavor = "multi_thread")]
async fn results_survive_a_database_restart_without_duplicates() {
    let s = setup("restart").await;
    s.db.execute(
        "INSERT INTO webmon.monitors (url, check_interval) SELECT $1 || g, '1 hour' FROM generate_series(1, 50) g",
        &[&s.target.url("/delay/2000?n=")],
    )
    .await
    .unwrap();
    let mut probe = s.probe("restart", &[]);
    let db = &s.db;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            db.query_one(
                "SELECT count(*) FROM webmon.jobs WHERE leased_by IS NOT NULL",
                &[],
            )
            .await
            .map(|r| r.get::<_, i64>(0) == 50)
            .unwrap_or(false)
        })
        .await
    );
    // The database goes away while the 50 checks are in flight, and comes back later.
    s.cluster.pg_ctl_stop().unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    s.cluster.pg_ctl_start().unwrap();
    let db = s.cluster.client().await.unwrap();
    let stored = wait_until(Duration::from_secs(30), || async {
        db.query_one("SELECT count(*) FROM webmon.metrics", &[])
            .await
            .map(|r| r.get::<_, i64>(0) >= 50)
            .unwrap_or(false)
    })
    .await;
    assert!(stored, "{}", probe.output());
    // Once the probe has exited (flushed), nothing more can arrive: count then.
    probe.stop_cleanly(libc::SIGTERM).await;
    let row = db
        .query_one(
            "SELECT count(*), count(DISTINCT monitor_id) FROM webmon.metrics",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (50, 50),
        "{}",
        probe.output()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_probe_role_with_only_grant_probe_works_and_env_files_are_honoured() {
    let s = setup("role").await;
    s.db.batch_execute("CREATE ROLE probe LOGIN; SELECT webmon.grant_probe('probe')")
        .await
        .unwrap();
    let id = s.monitor(&s.target.url("/ok"), "1 hour", None, None).await;
    // The old app's variables, from .env.<ENV> in the working directory.
    let workdir = s.cluster.dir.join("app");
    std::fs::create_dir_all(&workdir).unwrap();
    std::fs::write(
        workdir.join(".env.qa"),
        format!("DB_HOST=127.0.0.1\nDB_PORT={}\nDATABASE_NAME=webmon\nDB_USER_NAME=probe\nHTTP_WORKERS_NUMBER=10\n", s.cluster.port),
    )
    .unwrap();
    let log = s.cluster.dir.join("role.log");
    let mut probe = Probe::spawn_in(
        &workdir,
        &[],
        &[("ENV", "qa"), ("WEBMON_PROBE_NAME", "least-privilege")],
        log,
    )
    .unwrap();
    let stored = s.wait_rows("metrics", id, 1, Duration::from_secs(15)).await;
    assert!(stored, "{}", probe.output());
    let row = s.db.query_one("SELECT p.name FROM webmon.metrics m JOIN webmon.probes p ON p.id = m.probe_id WHERE m.monitor_id = $1", &[&id]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "least-privilege");
    probe.stop_cleanly(libc::SIGTERM).await;

    // `status` works for the probe role (monitor_status only).
    let status = std::process::Command::new(webmon_tests::probe::binary().unwrap())
        .current_dir(&workdir)
        .env_remove("DATABASE_URL")
        .env("ENV", "qa")
        .arg("status")
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        table.contains("UP") && table.contains(&s.target.url("/ok")),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn import_reads_the_old_apps_config_for_env() {
    let s = setup("import").await;
    let workdir = s.cluster.dir.join("import");
    std::fs::create_dir_all(&workdir).unwrap();
    std::fs::write(
        workdir.join("urls.config.qa.json"),
        r#"[
            {"url": "https://example.com", "interval": 10},
            {"url": "https://example.com/api/health", "interval": 30, "regex": "\"status\":\\s*\"ok\"", "timeout": 2000}
        ]"#,
    )
    .unwrap();
    std::fs::write(
        workdir.join("bad.json"),
        r#"[{"url": "https://example.com", "interval": -1}]"#,
    )
    .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(webmon_tests::probe::binary().unwrap())
            .current_dir(&workdir)
            .env("DATABASE_URL", s.cluster.url("postgres"))
            .env("ENV", "qa")
            .args(args)
            .output()
            .unwrap()
    };
    let first = run(&["import"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("2 new monitors"));
    let second = run(&["import"]);
    assert!(String::from_utf8_lossy(&second.stdout).contains("0 new monitors"));
    let bad = run(&["import", "bad.json"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("index 0"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let row = s
        .db
        .query_one("SELECT count(*), count(*) FILTER (WHERE timeout = '2 seconds' AND check_interval = '30 seconds') FROM webmon.monitors", &[])
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (2, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nul_byte_in_a_match_and_a_result_the_database_refuses_never_stop_the_others() {
    let s = setup("refused").await;
    let nul = s
        .monitor(&s.target.url("/nul"), "1 second", Some("b.c"), None)
        .await;
    let healthy = s
        .monitor(&s.target.url("/ok"), "1 second", None, None)
        .await;
    let refused = s
        .monitor(&s.target.url("/any/refused"), "1 second", None, None)
        .await;
    // The database refuses this monitor's results for their data (SQLSTATE class 22).
    s.db.batch_execute(&format!(
        "CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.monitor_id = {refused} THEN
                 RAISE EXCEPTION 'refusing the result of monitor %', NEW.monitor_id USING ERRCODE = '22023';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON webmon.metrics FOR EACH ROW EXECUTE FUNCTION public.refuse();"
    ))
    .await
    .unwrap();
    let mut probe = s.probe("refused", &[("RESULT_AGGREGATOR_BATCH_SIZE", "100")]);
    assert!(
        s.wait_rows("metrics", healthy, 3, Duration::from_secs(20))
            .await,
        "the healthy monitor's results were held back\n{}",
        probe.output()
    );
    assert!(
        s.wait_rows("metrics", nul, 1, Duration::from_secs(10))
            .await
    );
    let matched: String =
        s.db.query_one(
            "SELECT page_content FROM webmon.metrics WHERE monitor_id = $1 LIMIT 1",
            &[&nul],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(matched, "b\u{FFFD}c");
    // The refused result became an `other` error row that says why.
    let why = wait_until(Duration::from_secs(10), || async {
        s.count(
            "SELECT count(*) FROM webmon.errors WHERE monitor_id = $1 AND error_kind = 'other'
                AND error LIKE 'the database refused this result:%refusing the result of monitor%'",
            refused,
        )
        .await
            > 0
    })
    .await;
    assert!(why, "{}", probe.output());
    probe.stop_cleanly(libc::SIGTERM).await;
    // The log shows the database's own message, and no colour codes in a file.
    let log = probe.output();
    assert!(log.contains("refusing the result of monitor"), "{log}");
    assert!(!log.contains('\x1b'), "ANSI escape codes in the log file");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_probe_with_a_wrong_clock_writes_the_database_time() {
    let faketime = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    assert!(
        std::path::Path::new(faketime).exists(),
        "{faketime} is missing: scripts/setup.sh installs the Debian package faketime"
    );
    let s = setup("clock").await;
    let id = s.monitor(&s.target.url("/ok"), "1 hour", None, None).await;
    // The probe's wall clock runs two days ahead; its monotonic clock is left alone.
    let mut probe = s.probe(
        "clock",
        &[
            ("LD_PRELOAD", faketime),
            ("FAKETIME", "+2d"),
            ("DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    assert!(
        s.wait_rows("metrics", id, 1, Duration::from_secs(20)).await,
        "{}",
        probe.output()
    );
    probe.stop_cleanly(libc::SIGTERM).await;
    let within_a_minute: bool = s
        .db
        .query_one(
            "SELECT abs(extract(epoch FROM now() - request_timestamp)) < 60 FROM webmon.metrics WHERE monitor_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        within_a_minute,
        "request_timestamp follows the probe's wrong clock"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_starting_probe_claims_work_queued_before_it_listened_at_once() {
    let s = setup("at-once").await;
    let id = s.monitor(&s.target.url("/ok"), "1 hour", None, None).await;
    let queued = wait_until(Duration::from_secs(10), || async {
        s.count("SELECT count(*) FROM webmon.jobs WHERE monitor_id = $1", id)
            .await
            == 1
    })
    .await;
    assert!(queued);
    // A one-minute poll: only a claim at start can check it within the wait below.
    let mut probe = s.probe("at-once", &[("WEBMON_POLL_INTERVAL_MS", "60000")]);
    assert!(
        s.wait_rows("metrics", id, 1, Duration::from_secs(15)).await,
        "the queued check waited for the poll\n{}",
        probe.output()
    );
    probe.stop_cleanly(libc::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_monitor_with_regions_is_checked_in_every_slot_from_each_region() {
    let s = setup("regions").await;
    // Unclaimed checks are recorded after 2 s here (default: 2 minutes).
    for statement in [
        "ALTER SYSTEM SET pg_webmon.unclaimed_timeout = '2s'",
        "SELECT pg_reload_conf()",
    ] {
        s.db.batch_execute(statement).await.unwrap();
    }
    let mut eu = s.probe("probe-eu", &[("WEBMON_REGION", "eu")]);
    let mut us = s.probe("probe-us", &[("WEBMON_REGION", "us")]);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            s.db.query_one(
                "SELECT count(*) FROM webmon.regions WHERE live_probes = 1",
                &[],
            )
            .await
            .map(|r| r.get::<_, i64>(0) == 2)
            .unwrap_or(false)
        })
        .await,
        "{}\n{}",
        eu.output(),
        us.output()
    );
    // A time set ahead: the grid starts there, exactly, for both regions. The third region
    // has no probe.
    let id: i64 = s
        .db
        .query_one(
            "INSERT INTO webmon.monitors (url, check_interval, regions, next_check_at)
             VALUES ($1, '1 second', '{eu,us,ap}', date_trunc('second', now()) + interval '2 seconds')
             RETURNING id",
            &[&s.target.url("/any/regions")],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        s.wait_rows("metrics", id, 10, Duration::from_secs(20))
            .await
    );
    // Each slot checked once from eu and once from us, both at the slot (the database's
    // clock, to the millisecond); never more than one check per slot and region.
    let rows = s
        .db
        .query(
            "SELECT date_trunc('second', request_timestamp) AS slot, count(*) FILTER (WHERE region = 'eu'),
                    count(*) FILTER (WHERE region = 'us'),
                    max(extract(epoch FROM request_timestamp - date_trunc('second', request_timestamp)))::float8
             FROM webmon.metrics WHERE monitor_id = $1 GROUP BY 1 ORDER BY 1",
            &[&id],
        )
        .await
        .unwrap();
    let complete: Vec<_> = rows
        .iter()
        .filter(|r| r.get::<_, i64>(1) == 1 && r.get::<_, i64>(2) == 1)
        .collect();
    assert!(
        complete.len() >= 3,
        "slots checked from both regions: {}",
        complete.len()
    );
    for row in &rows {
        assert!(row.get::<_, i64>(1) <= 1 && row.get::<_, i64>(2) <= 1);
        let late: f64 = row.get(3);
        assert!(late < 0.25, "a check started {late} s after its slot");
    }
    // The region without a probe: unmonitored, its checks recorded as no_probe, and the
    // monitor is up (two regions saw it up).
    let status: (bool, String, i64) = {
        let ok = wait_until(Duration::from_secs(10), || async {
            s.db.query_one(
                "SELECT count(*) FROM webmon.errors WHERE monitor_id = $1 AND error_kind = 'no_probe' AND region = 'ap'",
                &[&id],
            )
            .await
            .map(|r| r.get::<_, i64>(0) >= 1)
            .unwrap_or(false)
        })
        .await;
        assert!(ok, "no no_probe row for the region without a probe");
        let row = s
            .db
            .query_one(
                "SELECT up, region_states::text,
                        (SELECT count(*) FROM webmon.errors WHERE monitor_id = $1 AND error_kind <> 'no_probe')
                 FROM webmon.monitor_status WHERE monitor_id = $1",
                &[&id],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(
        status,
        (
            true,
            r#"{"ap": "unmonitored", "eu": "up", "us": "up"}"#.to_string(),
            0
        )
    );
    eu.stop_cleanly(libc::SIGTERM).await;
    us.stop_cleanly(libc::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_site_that_goes_down_opens_one_incident_and_its_recovery_resolves_it() {
    let s = setup("incident").await;
    let (_listener, mut events) = s.cluster.listen("webmon_events").await.unwrap();
    let id: i64 = s
        .db
        .query_one(
            "INSERT INTO webmon.monitors (url, name, check_interval, down_after) VALUES ($1, 'flaky site', '1 second', 2) RETURNING id",
            &[&s.target.url("/ok")],
        )
        .await
        .unwrap()
        .get(0);
    let mut probe = s.probe("incident-probe", &[]);
    let state = "SELECT state FROM webmon.monitor_status WHERE monitor_id = $1";
    let up = wait_until(Duration::from_secs(20), || async {
        s.db.query_one(state, &[&id])
            .await
            .map(|r| r.get::<_, String>(0) == "up")
            .unwrap_or(false)
    })
    .await;
    assert!(up, "never up\n{}", probe.output());

    // The site fails: one `down` event after two failed checks, with the first one's cause.
    s.db.execute(
        "UPDATE webmon.monitors SET url = $1 WHERE id = $2",
        &[&s.target.url("/status/503"), &id],
    )
    .await
    .unwrap();
    let down = next_event(&mut events).await;
    assert_eq!(down["event"], "down", "{down}");
    assert_eq!(down["monitor_id"], id);
    assert_eq!(down["name"], "flaky site");
    assert_eq!(down["cause"], "status 503");
    assert_eq!(down["failed_checks"], 2);
    let (state_now, checks_since): (String, i64) = s
        .db
        .query_one(
            "SELECT s.state, (SELECT count(*) FROM webmon.metrics mt WHERE mt.monitor_id = s.monitor_id
                                AND mt.request_timestamp >= s.state_since AND mt.http_status_code = 503)
             FROM webmon.monitor_status s WHERE s.monitor_id = $1",
            &[&id],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(state_now, "down");
    assert!(
        checks_since >= 2,
        "the incident did not start at the first failed check"
    );

    // Back up: one `recovered` event with how long it was down; nothing else.
    s.db.execute(
        "UPDATE webmon.monitors SET url = $1 WHERE id = $2",
        &[&s.target.url("/ok"), &id],
    )
    .await
    .unwrap();
    let recovered = next_event(&mut events).await;
    assert_eq!(recovered["event"], "recovered", "{recovered}");
    assert_eq!(recovered["incident_id"], down["incident_id"]);
    let lasted = recovered["duration_s"].as_f64().expect("a duration");
    assert!(lasted >= 1.0, "down for {lasted} s");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        events.try_recv().is_err(),
        "an event more than down and recovered"
    );
    let incidents: i64 = s
        .db
        .query_one("SELECT count(*) FROM webmon.incidents WHERE monitor_id = $1 AND resolved_at IS NOT NULL", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(incidents, 1);
    probe.stop_cleanly(libc::SIGTERM).await;
}

/// The next NOTIFY payload, as JSON (within 20 s).
async fn next_event(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
) -> serde_json::Value {
    let payload = tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .expect("no event within 20 s")
        .expect("listener gone");
    serde_json::from_str(&payload).expect("JSON payload")
}
