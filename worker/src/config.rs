//! Command line and environment. Every flag has an environment variable; the old Python
//! app's names are kept. `.env.<ENV>` is loaded first when `ENV` is set, and never
//! overrides a variable that is already set; flags override both.

use crate::guard::{parse_network, NetworkPolicy};
use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use std::path::PathBuf;
use std::time::Duration;

/// The longest timeout a monitor may have (webmon-core), in ms.
const MAX_TIMEOUT_MS: u64 = webmon_core::interval::MAX_TIMEOUT_MICROS as u64 / 1000;

#[derive(Debug, Parser)]
#[command(
    name = "webmon-worker",
    version,
    about = "The pg_webmon probe: claims checks from PostgreSQL, runs them, writes results back"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub run: RunArgs,
    /// Threads running checks and database calls. 1 (the default) is the most efficient per
    /// check (no cross-thread wake-ups; ~10,000 checks per CPU-second) and sustains ~6,000
    /// checks/s at 200 ms target latency; above that use 0 (one per CPU core) or more probes.
    #[arg(long, env = "WEBMON_THREADS", default_value_t = 1, global = true, value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub threads: u16,
    /// Log filter: error, warn, info, debug, trace, or a tracing filter expression.
    #[arg(long, env = "LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the probe (the default).
    Run,
    /// Import the old app's urls.config.<env>.json into webmon.monitors.
    Import {
        /// The JSON file; default: urls.config.<ENV>.json when ENV is set.
        file: Option<PathBuf>,
    },
    /// Print webmon.monitor_status as a table.
    Status {
        /// Refresh every this many seconds until interrupted (0: print once).
        #[arg(long, default_value_t = 0)]
        watch: u64,
    },
    /// Serve demo endpoints (healthy, slow, failing, flaky, regex) on a local address.
    DemoTarget {
        #[arg(long, env = "WEBMON_DEMO_LISTEN", default_value = "127.0.0.1:8089")]
        listen: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// libpq-style URL or key=value string; when set, the DB_* settings are ignored (but for
    /// DB_SSLMODE and DB_SSLROOTCERT, defaults for what the URL does not say).
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    #[arg(long, env = "DB_HOST", default_value = "localhost", global = true)]
    pub db_host: String,
    #[arg(long, env = "DB_PORT", default_value_t = 5432, global = true)]
    pub db_port: u16,
    #[arg(long, env = "DATABASE_NAME", default_value = "postgres", global = true)]
    pub database_name: String,
    #[arg(long, env = "DB_USER_NAME", default_value = "postgres", global = true)]
    pub db_user_name: String,
    #[arg(long, env = "DB_USER_PASSWORD", global = true, hide_env_values = true)]
    pub db_user_password: Option<String>,
    /// TLS to the database, as libpq's sslmode: disable, prefer (the default), require,
    /// verify-ca, verify-full. In DATABASE_URL: `?sslmode=…`.
    #[arg(long, env = "DB_SSLMODE", global = true)]
    pub db_sslmode: Option<String>,
    /// The CA certificate(s) (PEM) the database's certificate must chain to, or `system`
    /// (Mozilla's roots); default ~/.postgresql/root.crt if it exists. In DATABASE_URL:
    /// `&sslrootcert=…`.
    #[arg(long, env = "DB_SSLROOTCERT", global = true)]
    pub db_sslrootcert: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Name this probe registers under (unique per probe); default: the host name.
    #[arg(long, env = "WEBMON_PROBE_NAME")]
    pub probe_name: Option<String>,
    /// Region of this probe; monitors with `regions` set are only checked by probes in one of them.
    #[arg(long, env = "WEBMON_REGION")]
    pub region: Option<String>,
    /// Timeout in ms for monitors without their own (at most a monitor's longest timeout, 5 minutes).
    #[arg(long, env = "HTTP_CHECK_DEFAULT_TIMEOUT", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_MS))]
    pub default_timeout_ms: u64,
    /// Most checks in flight (tokio tasks, not threads), including claimed checks waiting for their slot.
    #[arg(long, env = "HTTP_WORKERS_NUMBER", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_in_flight: u64,
    /// Writer tasks, each with its own database connection.
    #[arg(long, env = "RESULT_AGGREGATORS_NUMBER", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub writers: u64,
    /// Most results per write (one webmon.complete_checks call).
    #[arg(long, env = "RESULT_AGGREGATOR_BATCH_SIZE", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch_size: u64,
    /// A batch is written at the latest this many ms after its first result.
    #[arg(long, env = "WEBMON_FLUSH_INTERVAL_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub flush_interval_ms: u64,
    /// Most response body bytes read per check; the regex searches these.
    #[arg(long, env = "WEBMON_BODY_CAP_BYTES", default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(0..=(64 << 20)))]
    pub body_cap_bytes: u64,
    /// Lease per claimed check in seconds, counted from its slot; must cover timeout and write delay.
    #[arg(long, env = "WEBMON_LEASE_SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub lease_seconds: u64,
    /// Claim checks this many ms before their slot and start each at its slot.
    #[arg(long, env = "WEBMON_LOOKAHEAD_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub lookahead_ms: u64,
    /// Claim at least this often even without a NOTIFY (ms).
    #[arg(long, env = "WEBMON_POLL_INTERVAL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub poll_interval_ms: u64,
    /// On SIGTERM/SIGINT, how long in-flight checks may run before they are abandoned and released (s).
    #[arg(long, env = "WEBMON_SHUTDOWN_GRACE_SECONDS", default_value_t = 10)]
    pub shutdown_grace_seconds: u64,
    /// Networks checks may not connect to, comma-separated (CIDR or address), in addition to
    /// link-local (169.254.0.0/16, fe80::/10), fd00:ec2::254, 0.0.0.0 and ::, which are always denied
    /// unless allowed explicitly. Checked for every address after DNS and on every redirect.
    #[arg(long, env = "WEBMON_DENY_NETWORKS", value_delimiter = ',', value_parser = parse_network)]
    pub deny_networks: Vec<IpNet>,
    /// When given, checks connect only to these networks (comma-separated CIDR or address);
    /// the most specific network in either list decides.
    #[arg(long, env = "WEBMON_ALLOW_NETWORKS", value_delimiter = ',', value_parser = parse_network)]
    pub allow_networks: Vec<IpNet>,
    /// Deliver alerts (webmon.notifications) from this probe; any number of probes may.
    #[arg(long, env = "WEBMON_NOTIFICATIONS", default_value_t = true, action = clap::ArgAction::Set)]
    pub notifications: bool,
    /// Longest time one alert delivery may take (ms); a delivery lease lasts twice this plus 5 s.
    #[arg(long, env = "WEBMON_NOTIFICATION_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub notification_timeout_ms: u64,
    /// Seconds between summary log lines (0: none).
    #[arg(long, env = "WEBMON_SUMMARY_SECONDS", default_value_t = 10)]
    pub summary_seconds: u64,
}

impl RunArgs {
    pub fn default_timeout(&self) -> Duration {
        Duration::from_millis(self.default_timeout_ms)
    }
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }
    pub fn lookahead(&self) -> Duration {
        Duration::from_millis(self.lookahead_ms)
    }
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
    pub fn network_policy(&self) -> NetworkPolicy {
        NetworkPolicy::new(&self.deny_networks, &self.allow_networks)
    }
    pub fn probe_name(&self) -> String {
        self.probe_name.clone().unwrap_or_else(default_probe_name)
    }
}

fn default_probe_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "webmon-worker".to_string())
}

/// Loads `.env.<ENV>` (the old app's convention) when `ENV` is set. Variables already in
/// the environment win. A missing file is fine; a malformed one is an error.
pub fn load_env_file() -> Result<Option<PathBuf>, dotenvy::Error> {
    let Ok(env) = std::env::var("ENV") else {
        return Ok(None);
    };
    let path = PathBuf::from(format!(".env.{env}"));
    match dotenvy::from_path(&path) {
        Ok(()) => Ok(Some(path)),
        Err(dotenvy::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The old app's config file for `ENV`, when no file is given.
pub fn default_import_file() -> Option<PathBuf> {
    std::env::var("ENV")
        .ok()
        .map(|env| PathBuf::from(format!("urls.config.{env}.json")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_values() {
        let cli = Cli::try_parse_from(["webmon-worker"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.threads, 1);
        assert_eq!(cli.run.default_timeout_ms, 10_000);
        assert_eq!(cli.run.max_in_flight, 1000);
        assert_eq!(cli.run.batch_size, 500);
        assert_eq!(cli.run.body_cap_bytes, 1 << 20);
    }

    #[test]
    fn flags_parse_and_bad_numbers_are_refused() {
        let cli = Cli::try_parse_from([
            "webmon-worker",
            "--max-in-flight",
            "7",
            "--batch-size",
            "1000",
            "status",
        ])
        .unwrap();
        assert_eq!(cli.run.max_in_flight, 7);
        assert!(matches!(cli.command, Some(Command::Status { watch: 0 })));
        assert!(Cli::try_parse_from(["webmon-worker", "--max-in-flight", "0"]).is_err());
        assert!(Cli::try_parse_from(["webmon-worker", "--default-timeout-ms", "-5"]).is_err());
        assert!(Cli::try_parse_from(["webmon-worker", "--batch-size", "many"]).is_err());
    }

    #[test]
    fn network_lists_are_comma_separated_and_checked() {
        let cli = Cli::try_parse_from([
            "webmon-worker",
            "--deny-networks",
            "127.0.0.2/32, 10.0.0.0/8",
            "--allow-networks",
            "0.0.0.0/0",
        ])
        .unwrap();
        assert_eq!(cli.run.deny_networks.len(), 2);
        let policy = cli.run.network_policy();
        assert!(policy.check("127.0.0.2".parse().unwrap()).is_err());
        assert!(policy.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(
            policy.check("::1".parse().unwrap()).is_err(),
            "not in the allow list"
        );
        let error = Cli::try_parse_from(["webmon-worker", "--deny-networks", "10.0.0.0/40"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("is not a network"), "{error}");
    }
}
