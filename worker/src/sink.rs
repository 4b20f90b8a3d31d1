//! Writers: collect results into batches (flush on size or time) and store each batch with
//! one `webmon.complete_checks` call. A write that fails on the connection keeps its batch
//! and retries on a new connection; a retried batch cannot double rows, because the extension
//! accepts a result only while this probe still leases its job for that slot, and ends the
//! lease in the same transaction. A batch refused for its data is split until the bad row is
//! found.

use crate::db;
use crate::db::DbConfig;
use crate::probe::{CheckResult, ErrorKind, Outcome};
use crate::stats::Stats;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, Mutex};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};
use tokio_util::sync::CancellationToken;
use webmon_core::text::one_line;

/// The form with each check's slot (0.4.0).
const COMPLETE_SQL: &str = "SELECT webmon.complete_checks($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
/// The form before 0.4.0, without slots: used while this role may not call the new one (a
/// role granted before the 0.4.0 update, until `webmon.grant_probe()` runs again).
const COMPLETE_WITHOUT_SLOTS_SQL: &str =
    "SELECT webmon.complete_checks($1, $2, $4, $5, $6, $7, $8, $9, $10)";
const MAY_SEND_SLOTS_SQL: &str = "SELECT coalesce(has_function_privilege(to_regprocedure(
    'webmon.complete_checks(text, bigint[], timestamptz[], timestamptz[], real[], smallint[], boolean[], text[], text[], text[])'),
    'EXECUTE'), false)";
const COMPLETE_TYPES: [Type; 10] = [
    Type::TEXT,
    Type::INT8_ARRAY,
    Type::TIMESTAMPTZ_ARRAY,
    Type::TIMESTAMPTZ_ARRAY,
    Type::FLOAT4_ARRAY,
    Type::INT2_ARRAY,
    Type::BOOL_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
];

/// A writer's connection with its prepared `complete_checks` call.
struct Connection {
    client: Client,
    complete: Statement,
}

/// How a write ended.
enum Stored {
    /// Stored (results for jobs this probe no longer leases are counted as rejected).
    All,
    /// The database refused the data: sending it again cannot succeed.
    Refused(String),
    /// Shutdown gave up while the database was unreachable.
    GaveUp,
}

pub struct Writer {
    pub id: usize,
    pub config: DbConfig,
    pub probe: String,
    pub results: Arc<Mutex<mpsc::Receiver<(CheckResult, Instant)>>>,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub stats: Arc<Stats>,
    /// Fired when shutdown can wait no longer for the database.
    pub give_up: CancellationToken,
}

/// One batch as parallel arrays, the shape `webmon.complete_checks` takes.
#[derive(Debug, Default, PartialEq)]
pub struct Columns {
    pub job_ids: Vec<i64>,
    pub slots: Vec<SystemTime>,
    pub request_timestamps: Vec<SystemTime>,
    pub response_times_ms: Vec<Option<f32>>,
    pub status_codes: Vec<Option<i16>>,
    pub regex_matches: Vec<Option<bool>>,
    pub page_contents: Vec<Option<String>>,
    pub error_kinds: Vec<Option<&'static str>>,
    pub error_messages: Vec<Option<String>>,
}

impl Columns {
    pub fn from_results(results: &[(CheckResult, Instant)]) -> Columns {
        let mut columns = Columns::default();
        for (result, _) in results {
            columns.job_ids.push(result.job_id);
            columns.slots.push(result.slot);
            columns.request_timestamps.push(result.request_timestamp);
            match &result.outcome {
                Outcome::Response {
                    status,
                    response_time_ms,
                    regex_matched,
                    page_content,
                } => {
                    columns.response_times_ms.push(Some(*response_time_ms));
                    columns
                        .status_codes
                        .push(Some(i16::try_from(*status).unwrap_or(i16::MAX)));
                    columns.regex_matches.push(*regex_matched);
                    columns.page_contents.push(page_content.clone());
                    columns.error_kinds.push(None);
                    columns.error_messages.push(None);
                }
                Outcome::NoResponse { kind, message } => {
                    columns.response_times_ms.push(None);
                    columns.status_codes.push(None);
                    columns.regex_matches.push(None);
                    columns.page_contents.push(None);
                    columns.error_kinds.push(Some(kind.as_str()));
                    columns.error_messages.push(Some(message.clone()));
                }
            }
        }
        columns
    }
}

impl Writer {
    /// Runs until the result channel is closed and drained.
    pub async fn run(self) {
        let mut connection: Option<Connection> = None;
        loop {
            let batch = self.collect().await;
            if batch.is_empty() {
                return;
            }
            self.flush(&mut connection, &batch).await;
        }
    }

    /// Waits for a first result, then collects until the batch is full or the flush
    /// interval has passed. Empty means the channel is closed.
    async fn collect(&self) -> Vec<(CheckResult, Instant)> {
        let mut batch = Vec::with_capacity(self.batch_size);
        let mut receiver = self.results.lock().await;
        if receiver.recv_many(&mut batch, self.batch_size).await == 0 {
            return batch;
        }
        let deadline = tokio::time::Instant::now() + self.flush_interval;
        while batch.len() < self.batch_size {
            let room = self.batch_size - batch.len();
            tokio::select! {
                received = receiver.recv_many(&mut batch, room) => if received == 0 { break },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        batch
    }

    /// Stores a batch. A lost connection is retried with backoff until it works (or shutdown
    /// gives up); a part the database refuses for its data is split in two, so the good rows
    /// are stored and a bad one ends as an `other` error row saying why. Never a retry
    /// without end on data the database will never take.
    async fn flush(&self, connection: &mut Option<Connection>, batch: &[(CheckResult, Instant)]) {
        let mut parts = vec![batch.to_vec()];
        while let Some(mut part) = parts.pop() {
            let refusal = match self.store(connection, &part).await {
                Stored::All => continue,
                Stored::GaveUp => return,
                Stored::Refused(refusal) => refusal,
            };
            if part.len() > 1 {
                let second = part.split_off(part.len() / 2);
                parts.push(second);
                parts.push(part);
                continue;
            }
            let (result, finished_at) = &part[0];
            tracing::warn!(writer = self.id, job_id = result.job_id, error = %refusal, "the database refused a result; storing it as an error of kind other");
            let replacement = CheckResult {
                job_id: result.job_id,
                slot: result.slot,
                request_timestamp: result.request_timestamp,
                outcome: Outcome::NoResponse {
                    kind: ErrorKind::Other,
                    message: one_line(&format!("the database refused this result: {refusal}")),
                },
            };
            if let Stored::Refused(again) =
                self.store(connection, &[(replacement, *finished_at)]).await
            {
                self.stats.rejected.fetch_add(1, Relaxed);
                tracing::error!(writer = self.id, job_id = result.job_id, error = %again, "the database refused the result and its replacement; the check will be recorded as lost when its lease expires");
            }
        }
    }

    /// One part, retried on connection errors with backoff.
    async fn store(
        &self,
        connection: &mut Option<Connection>,
        part: &[(CheckResult, Instant)],
    ) -> Stored {
        let columns = Columns::from_results(part);
        let mut delay = Duration::from_millis(100);
        loop {
            match self.write(connection, &columns).await {
                Ok(accepted) => {
                    let accepted = u64::try_from(accepted).unwrap_or(0);
                    self.stats.written.fetch_add(accepted, Relaxed);
                    let rejected = part.len() as u64 - accepted.min(part.len() as u64);
                    if rejected > 0 {
                        self.stats.rejected.fetch_add(rejected, Relaxed);
                        tracing::warn!(writer = self.id, rejected, "results for jobs no longer leased by this probe were not stored (lease expired or monitor deleted)");
                    }
                    if let Some(oldest) = part.iter().map(|(_, at)| *at).min() {
                        self.stats.record_write_lag(oldest.elapsed());
                    }
                    return Stored::All;
                }
                Err(e) if e.refused_for_its_data() => return Stored::Refused(e.to_string()),
                Err(e) => {
                    *connection = None;
                    tracing::warn!(writer = self.id, error = %e, results = part.len(), retry_in_ms = delay.as_millis() as u64, "cannot write results; keeping them and retrying");
                    tokio::select! {
                        _ = self.give_up.cancelled() => {
                            tracing::error!(writer = self.id, results = part.len(), "shutting down with unwritten results; their jobs will be checked again after the lease expires");
                            return Stored::GaveUp;
                        }
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = db::next_backoff(delay);
                }
            }
        }
    }

    async fn write(
        &self,
        connection: &mut Option<Connection>,
        columns: &Columns,
    ) -> Result<i32, db::DbError> {
        let open = match connection.take().filter(|open| !open.client.is_closed()) {
            Some(open) => connection.insert(open),
            None => {
                let client = db::connect(&self.config, None).await?;
                let may_send_slots: bool = client.query_one(MAY_SEND_SLOTS_SQL, &[]).await?.get(0);
                let sql = if may_send_slots {
                    COMPLETE_SQL
                } else {
                    tracing::warn!(writer = self.id, "this role may not call complete_checks with slots (granted before pg_webmon 0.4.0): using the older form; run SELECT webmon.grant_probe(<role>) again");
                    COMPLETE_WITHOUT_SLOTS_SQL
                };
                let complete = client.prepare_typed(sql, &COMPLETE_TYPES).await?;
                connection.insert(Connection { client, complete })
            }
        };
        let row = open
            .client
            .query_one(
                &open.complete,
                &[
                    &self.probe,
                    &columns.job_ids,
                    &columns.slots,
                    &columns.request_timestamps,
                    &columns.response_times_ms,
                    &columns.status_codes,
                    &columns.regex_matches,
                    &columns.page_contents,
                    &columns.error_kinds,
                    &columns.error_messages,
                ],
            )
            .await?;
        Ok(row.try_get::<_, Option<i32>>(0)?.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_become_parallel_columns() {
        let at = SystemTime::now();
        let results = vec![
            (
                CheckResult {
                    job_id: 1,
                    slot: at,
                    request_timestamp: at,
                    outcome: Outcome::Response {
                        status: 404,
                        response_time_ms: 12.5,
                        regex_matched: Some(true),
                        page_content: Some("Not Found".into()),
                    },
                },
                Instant::now(),
            ),
            (
                CheckResult {
                    job_id: 2,
                    slot: at,
                    request_timestamp: at,
                    outcome: Outcome::NoResponse {
                        kind: ErrorKind::Connect,
                        message: "refused".into(),
                    },
                },
                Instant::now(),
            ),
        ];
        let columns = Columns::from_results(&results);
        assert_eq!(columns.job_ids, vec![1, 2]);
        assert_eq!(columns.slots, vec![at, at]);
        assert_eq!(columns.status_codes, vec![Some(404), None]);
        assert_eq!(columns.response_times_ms, vec![Some(12.5), None]);
        assert_eq!(
            columns.page_contents,
            vec![Some("Not Found".to_string()), None]
        );
        assert_eq!(columns.error_kinds, vec![None, Some("connect")]);
        assert_eq!(
            columns.error_messages,
            vec![None, Some("refused".to_string())]
        );
    }
}
