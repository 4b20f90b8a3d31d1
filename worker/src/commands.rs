//! The small subcommands: `import` (the old app's config file) and `status` (a table of
//! `webmon.monitor_status`).

use crate::config::DatabaseArgs;
use crate::db;
use std::path::Path;
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("no file given and ENV is not set (the default is urls.config.<ENV>.json)")]
    NoFile,
    #[error(transparent)]
    Database(#[from] db::DbError),
    #[error("{0}")]
    Refused(String),
}

impl From<tokio_postgres::Error> for CommandError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => {
                CommandError::Refused(format!("{} (SQLSTATE {})", db.message(), db.code().code()))
            }
            None => CommandError::Database(db::DbError::Postgres(e)),
        }
    }
}

/// Imports a config file; returns (entries in the file, new monitors).
pub async fn import(
    database: &DatabaseArgs,
    file: Option<&Path>,
) -> Result<(usize, i64), CommandError> {
    let default = crate::config::default_import_file();
    let path = file.or(default.as_deref()).ok_or(CommandError::NoFile)?;
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| CommandError::Read {
        path: shown.clone(),
        source,
    })?;
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| CommandError::Json {
            path: shown,
            source,
        })?;
    let entries = config.as_array().map_or(0, Vec::len);
    let client = db::connect(&db::config(database)?, None).await?;
    let row = client
        .query_one("SELECT webmon.import_monitors($1::jsonb)", &[&config])
        .await?;
    Ok((entries, row.try_get(0)?))
}

const STATUS_WITH_UPTIME_SQL: &str = "
    SELECT s.monitor_id, s.up, s.last_status_code, s.last_response_time_ms, s.last_checked_at,
           s.last_error_kind, s.url, u.uptime_pct::float8 AS uptime_pct, u.p95_ms
    FROM webmon.monitor_status s LEFT JOIN webmon.uptime('1 day') u USING (monitor_id)
    ORDER BY s.monitor_id";
const STATUS_SQL: &str = "
    SELECT s.monitor_id, s.up, s.last_status_code, s.last_response_time_ms, s.last_checked_at,
           s.last_error_kind, s.url, NULL::float8 AS uptime_pct, NULL::real AS p95_ms
    FROM webmon.monitor_status s ORDER BY s.monitor_id";

/// Renders `webmon.monitor_status` (with 24 h uptime and p95 when the role may read them).
pub async fn status_table(client: &tokio_postgres::Client) -> Result<String, CommandError> {
    let rows = match client.query(STATUS_WITH_UPTIME_SQL, &[]).await {
        Ok(rows) => rows,
        // A probe role may read monitor_status but not the result tables behind uptime().
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
            client.query(STATUS_SQL, &[]).await?
        }
        Err(e) => return Err(e.into()),
    };
    let now = SystemTime::now();
    let mut table = vec![[
        "id",
        "state",
        "status",
        "last ms",
        "checked",
        "uptime 24h",
        "p95 ms",
        "error",
        "url",
    ]
    .map(String::from)
    .to_vec()];
    for row in rows {
        let up: Option<bool> = row.try_get("up")?;
        let checked: Option<SystemTime> = row.try_get("last_checked_at")?;
        table.push(vec![
            row.try_get::<_, i64>("monitor_id")?.to_string(),
            match up {
                Some(true) => "UP".into(),
                Some(false) => "DOWN".into(),
                None => "pending".into(),
            },
            opt(row.try_get::<_, Option<i16>>("last_status_code")?),
            opt(row
                .try_get::<_, Option<f32>>("last_response_time_ms")?
                .map(|ms| format!("{ms:.0}"))),
            checked.map_or("-".into(), |at| {
                ago(now.duration_since(at).unwrap_or_default())
            }),
            opt(row
                .try_get::<_, Option<f64>>("uptime_pct")?
                .map(|pct| format!("{pct:.2}%"))),
            opt(row
                .try_get::<_, Option<f32>>("p95_ms")?
                .map(|ms| format!("{ms:.0}"))),
            opt(row.try_get::<_, Option<String>>("last_error_kind")?),
            row.try_get("url")?,
        ]);
    }
    Ok(render(&table))
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

pub fn ago(elapsed: Duration) -> String {
    let seconds = elapsed.as_secs();
    match seconds {
        0..=59 => format!("{seconds}s ago"),
        60..=3599 => format!("{}m ago", seconds / 60),
        _ => format!("{}h ago", seconds / 3600),
    }
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c + 1 == row.len() {
                    cell.clone()
                } else {
                    format!("{cell:<width$}", width = widths[c])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_aligned() {
        let rows = vec![
            vec!["id".to_string(), "state".to_string(), "url".to_string()],
            vec!["1".to_string(), "UP".to_string(), "http://a".to_string()],
            vec![
                "10".to_string(),
                "pending".to_string(),
                "http://bb".to_string(),
            ],
        ];
        assert_eq!(
            render(&rows),
            "id  state    url\n1   UP       http://a\n10  pending  http://bb\n"
        );
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(ago(Duration::from_secs(5)), "5s ago");
        assert_eq!(ago(Duration::from_secs(125)), "2m ago");
        assert_eq!(ago(Duration::from_secs(7300)), "2h ago");
    }
}
