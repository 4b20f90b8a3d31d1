//! The real `webmon-worker` binary, started as a child process.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// The probe binary next to this test executable's target directory (`make test` builds it).
pub fn binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("WEBMON_WORKER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    // Tests live in target/<profile>/deps/, binaries (the benchmark) in target/<profile>/.
    let binary = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("webmon-worker"))
        .find(|candidate| candidate.exists())
        .with_context(|| format!("webmon-worker not found next to {}: build it first (cargo build -p webmon-worker, or make test)", exe.display()))?;
    Ok(binary)
}

pub struct Probe {
    pub child: Child,
    pub log: PathBuf,
}

impl Probe {
    /// Starts `webmon-worker` with these arguments and environment; output goes to `log`.
    pub fn spawn(args: &[&str], env: &[(&str, &str)], log: PathBuf) -> Result<Probe> {
        Probe::spawn_in(&std::env::current_dir()?, args, env, log)
    }

    /// A probe named `name` for `cluster`'s database `webmon` (as superuser), with `extra`
    /// environment; its log is `<name>.log` in the cluster's directory.
    pub fn for_cluster(
        cluster: &crate::cluster::Cluster,
        name: &str,
        extra: &[(&str, &str)],
    ) -> Result<Probe> {
        let url = cluster.url("postgres");
        let mut env = vec![("DATABASE_URL", url.as_str()), ("WEBMON_PROBE_NAME", name)];
        env.extend_from_slice(extra);
        Probe::spawn(&[], &env, cluster.dir.join(format!("{name}.log")))
    }

    /// Like `spawn`, in working directory `dir` (where `.env.<ENV>` files are read).
    pub fn spawn_in(
        dir: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: PathBuf,
    ) -> Result<Probe> {
        let out = std::fs::File::create(&log)?;
        let mut command = Command::new(binary()?);
        command
            .current_dir(dir)
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("DB_SSLMODE")
            .env_remove("DB_SSLROOTCERT")
            .env("LOG_LEVEL", "info")
            .env("WEBMON_SUMMARY_SECONDS", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        Ok(Probe {
            child: command.spawn()?,
            log,
        })
    }

    /// Sends a signal (SIGTERM, SIGINT) and waits for exit; returns the exit code.
    pub async fn stop(&mut self, signal: i32, timeout: Duration) -> Result<i32> {
        let pid = self.child.id().context("probe already exited")? as i32;
        unsafe { libc::kill(pid, signal) };
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .context("probe did not exit in time")??;
        Ok(status.code().unwrap_or(-1))
    }

    /// Stops with `signal` and asserts a clean exit (code 0) within 30 s.
    pub async fn stop_cleanly(&mut self, signal: i32) {
        let code = self
            .stop(signal, Duration::from_secs(30))
            .await
            .unwrap_or(-1);
        assert_eq!(
            code,
            0,
            "webmon-worker did not exit cleanly:\n{}",
            self.output()
        );
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
