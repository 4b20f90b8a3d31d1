//! `make run` end to end: the script (scripts/run.sh, what `make run` calls) in the
//! background must produce metrics rows for the demo monitors, then stop cleanly on SIGINT
//! and leave no process behind; run again on its kept cluster of an older version, it
//! upgrades that cluster and keeps its data.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_postgres::NoTls;
use webmon_tests::cluster::{free_port, pg_command};
use webmon_tests::wait_until;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Processes whose command line mentions `needle` (besides ourselves).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name == me || !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(format!("{name}: {cmdline}"));
            }
        }
    }
    found
}

struct Run {
    run_dir: PathBuf,
    port: u16,
    demo: String,
    config: PathBuf,
}

impl Run {
    /// Starts scripts/run.sh (what `make run` calls) and waits, builds included, until it
    /// says it is running; returns the script and what it printed.
    async fn start(&self) -> (tokio::process::Child, String) {
        let mut script = tokio::process::Command::new("bash")
            .arg(repo_root().join("scripts/run.sh"))
            .env("WEBMON_RUN_DIR", &self.run_dir)
            .env("WEBMON_PORT", self.port.to_string())
            .env("WEBMON_DEMO_LISTEN", &self.demo)
            .env("WEBMON_CONFIG", &self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(script.stdout.take().unwrap()).lines();
        let mut transcript = String::new();
        let ready = tokio::time::timeout(Duration::from_secs(1200), async {
            while let Ok(Some(line)) = lines.next_line().await {
                transcript.push_str(&line);
                transcript.push('\n');
                if line.starts_with("pg_webmon is running") {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        assert!(ready, "make run never came up:\n{transcript}");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        (script, transcript)
    }

    async fn client(&self) -> tokio_postgres::Client {
        let (db, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=webmon",
                self.port
            ),
            NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        db
    }

    /// SIGINT, as Ctrl-C: the script stops everything and leaves no process behind.
    async fn stop(&self, mut script: tokio::process::Child) {
        unsafe { libc::kill(script.id().unwrap() as i32, libc::SIGINT) };
        let status = tokio::time::timeout(Duration::from_secs(60), script.wait())
            .await
            .expect("make run did not stop")
            .unwrap();
        assert!(status.code().is_some(), "killed by a signal: {status:?}");
        let needle = self.run_dir.to_string_lossy().to_string();
        let database = format!("port={} ", self.port);
        let left = || {
            [needle.as_str(), self.demo.as_str(), database.as_str()]
                .iter()
                .flat_map(|n| processes_mentioning(n))
                .collect::<Vec<_>>()
        };
        let gone = wait_until(Duration::from_secs(10), || async { left().is_empty() }).await;
        assert!(gone, "left behind: {:?}", left());
        // The data is kept for the next run.
        assert!(self.run_dir.join("pgdata/PG_VERSION").exists());
    }

    fn pg_ctl(&self, action: &str) {
        let status = pg_command("pg_ctl")
            .args(["-w", "-D"])
            .arg(self.run_dir.join("pgdata"))
            .args(["-l"])
            .arg(self.run_dir.join("postgres.log"))
            .arg(action)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl {action}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn make_run_monitors_the_demo_stops_cleanly_on_sigint_and_upgrades_a_kept_cluster() {
    let run_dir = std::env::temp_dir().join(format!("webmon-make-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir).unwrap();
    let demo = format!("127.0.0.1:{}", free_port().unwrap());
    // The example config, pointed at this run's demo target.
    let example =
        std::fs::read_to_string(repo_root().join("examples/urls.config.example.json")).unwrap();
    let config = run_dir.join("urls.config.json");
    std::fs::write(&config, example.replace("127.0.0.1:8089", &demo)).unwrap();
    let run = Run {
        run_dir: run_dir.clone(),
        port: free_port().unwrap(),
        demo,
        config,
    };

    // A fresh clone: the script makes the cluster.
    let (script, _) = run.start().await;
    let running_at = Instant::now();
    let db = run.client().await;
    let monitors_with_rows = || async {
        db.query_one("SELECT count(DISTINCT monitor_id) FROM webmon.metrics", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0)
    };
    // healthy, slow, error, flaky, regex, not-found answer with a status: six monitors with metrics rows.
    let produced = wait_until(Duration::from_secs(30), || async {
        monitors_with_rows().await >= 6
    })
    .await;
    assert!(
        produced,
        "only {} demo monitors have rows after {:?}",
        monitors_with_rows().await,
        running_at.elapsed()
    );
    let errors: i64 = db
        .query_one(
            "SELECT count(*) FROM webmon.errors WHERE error_kind IN ('connect', 'timeout')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        errors > 0,
        "the unreachable and too-slow demo monitors produced no error rows"
    );
    drop(db);
    run.stop(script).await;

    // A kept cluster of an older version (0.1.0, as shipped): the next run upgrades it and
    // keeps its data, instead of hiding the error.
    run.pg_ctl("start");
    let db = run.client().await;
    db.batch_execute(
        "DROP EXTENSION pg_webmon CASCADE;
         CREATE EXTENSION pg_webmon VERSION '0.1.0';
         INSERT INTO webmon.monitors (url, name) VALUES ('http://127.0.0.1:9/kept', 'kept from 0.1.0');",
    )
    .await
    .unwrap();
    drop(db);
    run.pg_ctl("stop");
    let (script, transcript) = run.start().await;
    let db = run.client().await;
    let row = db
        .query_one(
            "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'pg_webmon'),
                    (SELECT count(*) FROM webmon.monitors WHERE name = 'kept from 0.1.0')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        env!("CARGO_PKG_VERSION"),
        "{transcript}"
    );
    assert_eq!(row.get::<_, i64>(1), 1);
    let checked = wait_until(Duration::from_secs(30), || async {
        db.query_one("SELECT count(*) FROM webmon.metrics", &[])
            .await
            .map(|r| r.get::<_, i64>(0) > 0)
            .unwrap_or(false)
    })
    .await;
    assert!(checked, "no checks after the upgrade");
    drop(db);
    run.stop(script).await;
    let _ = std::fs::remove_dir_all(&run_dir);
}
