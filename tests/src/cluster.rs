//! A throwaway PostgreSQL 15 cluster with pg_webmon preloaded and created in database
//! `webmon`. Runs as `postgres` when we are root (PostgreSQL refuses root). Stopped and
//! removed on drop.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio_postgres::{Client, NoTls};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
pub const DATABASE: &str = "webmon";
static SEQUENCE: AtomicU32 = AtomicU32::new(0);

pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    keep: bool,
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Runs a PostgreSQL program, as `postgres` when we are root.
pub fn pg_command(program: &str) -> Command {
    let path = format!("{PG_BIN}/{program}");
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", &path]);
        command
    } else {
        Command::new(path)
    }
}

fn run(command: &mut Command, what: &str) -> Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (bound and released; fine for tests).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Cluster {
    /// Starts a cluster with database `webmon` and the extension created in it;
    /// `settings` are extra postgresql.conf lines (later lines win).
    pub async fn start(name: &str, settings: &[&str]) -> Result<Cluster> {
        let cluster = Cluster::start_empty(name, settings).await?;
        let client = cluster.client().await?;
        client
            .batch_execute("CREATE EXTENSION pg_webmon")
            .await
            .context(
            "CREATE EXTENSION pg_webmon failed: is the extension installed (cargo pgrx install)?",
        )?;
        Ok(cluster)
    }

    /// Like `start`, without creating the extension.
    pub async fn start_empty(name: &str, settings: &[&str]) -> Result<Cluster> {
        let dir = std::env::temp_dir().join(format!(
            "webmon-e2e-{}-{}-{name}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        if is_root() {
            run(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&dir),
                "chown",
            )?;
        }
        let port = free_port()?;
        let data = dir.join("data");
        run(
            pg_command("initdb")
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(&data),
            "initdb",
        )?;
        let mut conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             shared_preload_libraries = 'pg_webmon'\npg_webmon.database = '{DATABASE}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 100\n",
            dir.display()
        );
        for line in settings {
            conf.push_str(line);
            conf.push('\n');
        }
        append(&data.join("postgresql.conf"), &conf)?;
        let cluster = Cluster {
            dir,
            port,
            keep: std::env::var_os("WEBMON_KEEP_CLUSTER").is_some(),
        };
        cluster.pg_ctl_start()?;
        let admin = cluster.connect("postgres").await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
            .await?;
        Ok(cluster)
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn pg_ctl_start(&self) -> Result<()> {
        run(
            pg_command("pg_ctl")
                .args(["-w", "-t", "30", "-l"])
                .arg(self.dir.join("server.log"))
                .arg("-D")
                .arg(self.data())
                .arg("start"),
            "pg_ctl start",
        )
    }

    pub fn pg_ctl_stop(&self) -> Result<()> {
        run(
            pg_command("pg_ctl")
                .args(["-w", "-m", "fast", "-D"])
                .arg(self.data())
                .arg("stop"),
            "pg_ctl stop",
        )
    }

    /// libpq-style connection string for `webmon` as `user`.
    pub fn url(&self, user: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} dbname={DATABASE}",
            self.port
        )
    }

    /// Connection string for `database` as the superuser.
    fn conninfo(&self, database: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={database}",
            self.port
        )
    }

    pub async fn connect(&self, database: &str) -> Result<Client> {
        let (client, connection) = tokio_postgres::connect(&self.conninfo(database), NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    pub async fn client(&self) -> Result<Client> {
        self.connect(DATABASE).await
    }

    /// `LISTEN channel` in `webmon` on a connection of its own; the payloads arrive on the
    /// receiver (keep the client alive as long as you listen).
    pub async fn listen(
        &self,
        channel: &str,
    ) -> Result<(Client, tokio::sync::mpsc::UnboundedReceiver<String>)> {
        let (client, mut connection) =
            tokio_postgres::connect(&self.conninfo(DATABASE), NoTls).await?;
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let tokio_postgres::AsyncMessage::Notification(notification) = message {
                    let _ = sender.send(notification.payload().to_string());
                }
            }
        });
        client.batch_execute(&format!("LISTEN {channel}")).await?;
        Ok((client, receiver))
    }

    /// Waits until the scheduler worker is connected to `webmon` (its first start fails
    /// because the database does not exist yet; it restarts after 2 s).
    pub async fn wait_for_scheduler(&self) -> Result<()> {
        let client = self.client().await?;
        let ready = crate::wait_until(Duration::from_secs(30), || async {
            client
                .query_one("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_webmon scheduler' AND datname = current_database()", &[])
                .await
                .map(|row| row.get::<_, i64>(0) == 1)
                .unwrap_or(false)
        })
        .await;
        if !ready {
            bail!(
                "the scheduler worker did not connect within 30 s; see {}",
                self.dir.join("server.log").display()
            );
        }
        Ok(())
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl_stop();
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
