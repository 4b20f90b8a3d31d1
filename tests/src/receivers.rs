//! Alert receivers served in-process on 127.0.0.1: a webhook receiver that records every
//! delivery (and can be told to fail or to hang first), and a small SMTP server that records
//! every mail it accepts.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub path: String,
    pub idempotency_key: Option<String>,
    pub body: serde_json::Value,
    pub status: u16,
    pub at: SystemTime,
}

#[derive(Default)]
struct Script {
    deliveries: Vec<Delivery>,
    /// Per path: answers to give (in order) before 200.
    answers: HashMap<String, Vec<u16>>,
    /// Per path: hold this many requests for a minute before answering.
    hang: HashMap<String, usize>,
}

#[derive(Clone)]
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
}

impl WebhookReceiver {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answer these statuses to the next requests on `path`, then 200.
    pub fn answer_first(&self, path: &str, statuses: &[u16]) {
        self.lock()
            .answers
            .insert(path.to_string(), statuses.to_vec());
    }

    /// Hold the next `requests` requests on `path` for a minute (recorded when they come).
    pub fn hang_first(&self, path: &str, requests: usize) {
        self.lock().hang.insert(path.to_string(), requests);
    }

    /// Every request on `path` so far, answered or not.
    pub fn deliveries(&self, path: &str) -> Vec<Delivery> {
        self.lock()
            .deliveries
            .iter()
            .filter(|d| d.path == path)
            .cloned()
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Takes `POST /{anything}`; answers 200 unless scripted otherwise.
pub async fn start_webhook_receiver() -> anyhow::Result<WebhookReceiver> {
    let script = Arc::new(Mutex::new(Script::default()));
    let app = Router::new()
        .route("/{*path}", post(receive))
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(WebhookReceiver { addr, script })
}

async fn receive(
    State(script): State<Arc<Mutex<Script>>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let path = format!("/{path}");
    let (status, hang) = {
        let mut script = script.lock().unwrap_or_else(|p| p.into_inner());
        let hang = match script.hang.get_mut(&path) {
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        };
        let status = match script.answers.get_mut(&path) {
            Some(answers) if !answers.is_empty() => answers.remove(0),
            _ => 200,
        };
        script.deliveries.push(Delivery {
            path: path.clone(),
            idempotency_key: headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(String::from),
            body: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
            status: if hang { 0 } else { status },
            at: SystemTime::now(),
        });
        (status, hang)
    };
    if hang {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
}

/// One mail the SMTP server accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The message as sent after DATA (headers, blank line, body), dot-unstuffed.
    pub data: String,
}

#[derive(Clone)]
pub struct SmtpServer {
    pub addr: SocketAddr,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpServer {
    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Plain SMTP (no STARTTLS, no AUTH): EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT.
pub async fn start_smtp_server() -> anyhow::Result<SmtpServer> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mails = Arc::new(Mutex::new(Vec::new()));
    let accepted = mails.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let mails = accepted.clone();
            tokio::spawn(async move {
                let _ = smtp_session(stream, mails).await;
            });
        }
    });
    Ok(SmtpServer { addr, mails })
}

async fn smtp_session(
    stream: tokio::net::TcpStream,
    mails: Arc<Mutex<Vec<Mail>>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 127.0.0.1 ESMTP test\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            b"250 127.0.0.1\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = line[10..].trim().to_string();
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            to.push(line[8..].trim().to_string());
            b"250 OK\r\n"
        } else if upper == "DATA" {
            write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
            let mut data = String::new();
            while let Some(line) = lines.next_line().await? {
                if line == "." {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
                data.push('\n');
            }
            mails.lock().unwrap_or_else(|p| p.into_inner()).push(Mail {
                from: std::mem::take(&mut from),
                to: std::mem::take(&mut to),
                data,
            });
            b"250 OK queued\r\n"
        } else if upper == "RSET" || upper == "NOOP" {
            b"250 OK\r\n"
        } else if upper == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            b"502 not implemented\r\n"
        };
        write.write_all(reply).await?;
    }
    Ok(())
}
