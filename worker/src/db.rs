//! Database connections: from `DATABASE_URL` or the old app's `DB_*` settings, with
//! reconnect backoff. The probe only calls the extension's API functions.

use crate::causes::causes;
use crate::config::DatabaseArgs;
use crate::db_tls::{default_root_file, split_options, DbTls, SslMode, TlsError, TlsOptions};
use futures_util::StreamExt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, Config};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid DATABASE_URL: {0}")]
    Url(tokio_postgres::Error),
    #[error("database TLS settings: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot connect to the database ({tls}): {}", describe(.error))]
    Connect {
        tls: String,
        error: tokio_postgres::Error,
    },
    #[error("database: {}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("shutting down")]
    Cancelled,
    #[error("timed out")]
    TimedOut,
}

impl DbError {
    /// The database refused the statement because of the data it was given, so sending the
    /// same batch again cannot succeed but a part of it may: a value it cannot store, a
    /// constraint, a limit, a trigger that raised. Everything else — a lost connection, a
    /// shutdown, a statement timeout or cancel, a missing function, privilege or partition,
    /// a read-only server, a lock timeout, an internal error — is the database's state, not
    /// the data's: the batch is kept and retried, and nothing is dropped.
    pub fn refused_for_its_data(&self) -> bool {
        let DbError::Postgres(e) = self else {
            return false;
        };
        e.as_db_error()
            .is_some_and(|db| refuses_data(db.code().code(), db.constraint()))
    }
}

/// SQLSTATEs that say "this data", by class: 22 data exception, 23 integrity constraint
/// violation, 54 program limit exceeded, P0 raised by PL/pgSQL (a trigger), 2F/38/39 errors
/// inside a function. One exception: 23514 without a constraint is "no partition of relation
/// found for row" — the partitions are missing, not the data wrong.
pub fn refuses_data(sqlstate: &str, constraint: Option<&str>) -> bool {
    if sqlstate == "23514" && constraint.is_none() {
        return false;
    }
    matches!(
        sqlstate.get(..2),
        Some("22" | "23" | "54" | "P0" | "2F" | "38" | "39")
    )
}

/// What the server said (message, SQLSTATE, detail, hint), or the client-side cause chain.
/// tokio-postgres's own Display of a server error is only "db error".
pub fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        if let Some(detail) = db.detail() {
            text.push_str(&format!("; detail: {detail}"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        return text;
    }
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(current) = cause {
        text.push_str(&format!(": {current}"));
        cause = current.source();
    }
    text
}

/// A setting given as an empty string counts as not given.
fn non_empty(setting: &Option<String>) -> Option<String> {
    setting.clone().filter(|value| !value.is_empty())
}

/// Where and how the probe connects: tokio-postgres's settings and the TLS connector.
#[derive(Debug, Clone)]
pub struct DbConfig {
    pub pg: Config,
    pub tls: DbTls,
}

pub fn config(args: &DatabaseArgs) -> Result<DbConfig, DbError> {
    let (mut config, tls) = match &args.database_url {
        Some(url) => {
            // DB_SSLMODE/DB_SSLROOTCERT are defaults for what the URL does not say (as
            // libpq's PGSSLMODE/PGSSLROOTCERT are).
            let (rest, mut tls) = split_options(url)?;
            tls.mode = tls.mode.or_else(|| non_empty(&args.db_sslmode));
            tls.root_cert = tls.root_cert.or_else(|| non_empty(&args.db_sslrootcert));
            (Config::from_str(&rest).map_err(DbError::Url)?, tls)
        }
        None => {
            let mut config = Config::new();
            config
                .host(&args.db_host)
                .port(args.db_port)
                .dbname(&args.database_name)
                .user(&args.db_user_name);
            if let Some(password) = &args.db_user_password {
                config.password(password);
            }
            let tls = TlsOptions {
                mode: non_empty(&args.db_sslmode),
                root_cert: non_empty(&args.db_sslrootcert),
            };
            (config, tls)
        }
    };
    let tls = DbTls::new(&tls, default_root_file().as_deref())?;
    // Unix sockets never use TLS (libpq ignores sslmode there).
    let hosts = config.get_hosts();
    let only_sockets = !hosts.is_empty()
        && hosts
            .iter()
            .all(|host| !matches!(host, tokio_postgres::config::Host::Tcp(_)));
    let wire = if only_sockets {
        tokio_postgres::config::SslMode::Disable
    } else {
        tls.mode.wire()
    };
    config
        .application_name("webmon-worker")
        .connect_timeout(Duration::from_secs(10))
        .ssl_mode(wire);
    Ok(DbConfig { pg: config, tls })
}

/// Connects once. `notify` (if any) is woken on every NOTIFY this connection receives.
pub async fn connect(config: &DbConfig, notify: Option<Arc<Notify>>) -> Result<Client, DbError> {
    let connector = config.tls.connector.clone();
    let (client, mut connection) = match config.pg.connect(connector.clone()).await {
        // libpq's `prefer`: when the TLS handshake itself failed (a certificate that does
        // not verify, a protocol the server lacks), once more without TLS, and say so. The
        // first error is the one reported if that fails too.
        Err(error) if config.tls.mode == SslMode::Prefer && tls_failed(&error) => {
            tracing::warn!(error = %describe(&error), "sslmode=prefer: TLS to the database failed; connecting without TLS");
            let mut plain = config.pg.clone();
            plain.ssl_mode(tokio_postgres::config::SslMode::Disable);
            plain
                .connect(connector)
                .await
                .map_err(|_| DbError::Connect {
                    tls: config.tls.describe(),
                    error,
                })?
        }
        connected => connected.map_err(|error| DbError::Connect {
            tls: config.tls.describe(),
            error,
        })?,
    };
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if let Some(notify) = &notify {
                        notify.notify_one();
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "database connection closed");
                    break;
                }
            }
        }
    });
    Ok(client)
}

/// Did the TLS handshake fail (rustls's error in the cause chain, also inside io::Errors)?
fn tls_failed(error: &tokio_postgres::Error) -> bool {
    causes(error)
        .iter()
        .any(|cause| cause.is::<rustls::Error>())
}

/// Connects, retrying with exponential backoff (100 ms to 5 s) until it works or `cancel` fires.
pub async fn connect_with_backoff(
    config: &DbConfig,
    notify: Option<Arc<Notify>>,
    cancel: &CancellationToken,
    what: &str,
) -> Result<Client, DbError> {
    let mut delay = Duration::from_millis(100);
    loop {
        match connect(config, notify.clone()).await {
            Ok(client) => return Ok(client),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "{what}: cannot connect to the database");
                tokio::select! {
                    _ = cancel.cancelled() => return Err(DbError::Cancelled),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = next_backoff(delay);
            }
        }
    }
}

pub fn next_backoff(delay: Duration) -> Duration {
    (delay * 2).min(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> DatabaseArgs {
        DatabaseArgs {
            database_url: None,
            db_host: "127.0.0.1".into(),
            db_port: 6543,
            database_name: "webmon".into(),
            db_user_name: "probe".into(),
            db_user_password: Some("secret".into()),
            db_sslmode: None,
            db_sslrootcert: None,
        }
    }

    #[test]
    fn old_app_variables_build_the_config() {
        let config = config(&args()).unwrap();
        assert_eq!(config.pg.get_ports(), &[6543]);
        assert_eq!(config.pg.get_dbname(), Some("webmon"));
        assert_eq!(config.pg.get_user(), Some("probe"));
        assert_eq!(config.pg.get_password(), Some(&b"secret"[..]));
        assert_eq!(config.tls.mode, SslMode::Prefer);
        let mut with_tls = args();
        with_tls.db_sslmode = Some("require".into());
        let config = super::config(&with_tls).unwrap();
        assert_eq!(
            config.pg.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        with_tls.db_sslmode = Some("verify-full".into());
        with_tls.db_sslrootcert = Some("/nonexistent/ca.pem".into());
        assert!(matches!(super::config(&with_tls), Err(DbError::Tls(_))));
    }

    #[test]
    fn database_url_wins_and_bad_urls_are_refused() {
        let mut with_url = args();
        with_url.database_url = Some("postgresql://u@127.0.0.1:7000/other".into());
        let config = config(&with_url).unwrap();
        assert_eq!(config.pg.get_ports(), &[7000]);
        assert_eq!(config.pg.get_dbname(), Some("other"));
        // The URL's TLS options win; DB_SSLMODE/DB_SSLROOTCERT fill in what it leaves out.
        with_url.database_url = Some("postgresql://u@127.0.0.1:7000/other?sslmode=disable".into());
        with_url.db_sslmode = Some("verify-full".into());
        let config = super::config(&with_url).unwrap();
        assert_eq!(
            config.pg.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        with_url.database_url = Some("postgresql://u@127.0.0.1:7000/other".into());
        with_url.db_sslmode = Some("require".into());
        let config = super::config(&with_url).unwrap();
        assert_eq!(config.tls.mode, SslMode::Require);
        with_url.db_sslmode = Some(String::new());
        assert_eq!(super::config(&with_url).unwrap().tls.mode, SslMode::Prefer);
        // A Unix socket never uses TLS, whatever the mode.
        with_url.database_url = Some("host=/var/run/postgresql dbname=x".into());
        let config = super::config(&with_url).unwrap();
        assert_eq!(
            config.pg.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        with_url.database_url = Some("postgresql://u@127.0.0.1:notaport/x".into());
        assert!(super::config(&with_url).is_err());
    }

    #[test]
    fn only_data_errors_split_a_batch() {
        for data in ["22021", "22P05", "23505", "54000", "P0001", "38000"] {
            assert!(refuses_data(data, None), "{data}");
        }
        assert!(refuses_data("23514", Some("errors_error_kind_check")));
        // The connection, the server's state, privileges, missing objects or partitions,
        // timeouts, "unknown probe" (55000): retried with the whole batch kept.
        for state in [
            "08006", "57P01", "57014", "53300", "40001", "55P03", "55000", "25006", "42501",
            "42883", "XX000", "23514", "",
        ] {
            assert!(!refuses_data(state, None), "{state}");
        }
    }

    #[test]
    fn backoff_doubles_to_a_ceiling() {
        assert_eq!(
            next_backoff(Duration::from_millis(100)),
            Duration::from_millis(200)
        );
        assert_eq!(next_backoff(Duration::from_secs(4)), Duration::from_secs(5));
    }
}
