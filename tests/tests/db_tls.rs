//! TLS between the probe and PostgreSQL: a real cluster with `ssl = on` and a certificate
//! for `localhost` signed by a CA made here, and the real `webmon-worker`.

use std::path::Path;
use std::process::Output;
use std::time::Duration;
use webmon_tests::cluster::Cluster;
use webmon_tests::probe::{binary, Probe};
use webmon_tests::wait_until;

/// PEM texts: (CA certificate, server certificate, server key).
fn certificates(ca_name: &str) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca_cert, &ca_key)
        .unwrap();
    (ca_cert.pem(), server.pem(), server_key.serialize_pem())
}

/// Runs `webmon-worker status` (one connection, then exit) with these variables.
fn status(env: &[(&str, &str)]) -> Output {
    let mut command = std::process::Command::new(binary().unwrap());
    command
        .arg("status")
        .env_remove("DATABASE_URL")
        .env_remove("DB_SSLMODE")
        .env_remove("DB_SSLROOTCERT")
        .env("HOME", "/nonexistent")
        .stdin(std::process::Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

fn failure(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "expected a failure, got: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn success(output: &Output) {
    assert!(
        output.status.success(),
        "expected success: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn write_owned_by_the_server(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::process::Command::new("chmod")
        .arg("600")
        .arg(path)
        .status()
        .unwrap();
    if unsafe { libc::geteuid() } == 0 {
        std::process::Command::new("chown")
            .arg("postgres:postgres")
            .arg(path)
            .status()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_probe_verifies_the_database_certificate_and_says_why_it_cannot() {
    let cluster = Cluster::start("db-tls", &[]).await.unwrap();
    let url = |host: &str, query: &str| {
        format!(
            "postgresql://postgres@{host}:{}/webmon?application_name=x&{query}",
            cluster.port
        )
    };

    // Without TLS on the server: `require` fails clearly, `prefer` falls back.
    let message = failure(&status(&[(
        "DATABASE_URL",
        &url("127.0.0.1", "sslmode=require"),
    )]));
    assert!(
        message.contains("sslmode=require") && message.contains("server does not support TLS"),
        "{message}"
    );
    success(&status(&[(
        "DATABASE_URL",
        &url("127.0.0.1", "sslmode=prefer"),
    )]));

    // TLS on, with a certificate for `localhost` from our CA; another CA is the wrong one.
    let (ca, server_cert, server_key) = certificates("webmon test CA");
    let (wrong_ca, _, _) = certificates("some other CA");
    let data = cluster.data();
    write_owned_by_the_server(&data.join("server.crt"), &server_cert);
    write_owned_by_the_server(&data.join("server.key"), &server_key);
    let ca_file = cluster.dir.join("ca.pem");
    let wrong_ca_file = cluster.dir.join("wrong-ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    std::fs::write(&wrong_ca_file, &wrong_ca).unwrap();
    let db = cluster.client().await.unwrap();
    db.batch_execute("ALTER SYSTEM SET ssl = on").await.unwrap();
    db.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    let on = wait_until(Duration::from_secs(10), || async {
        db.query_one("SELECT current_setting('ssl') = 'on'", &[])
            .await
            .map(|row| row.get::<_, bool>(0))
            .unwrap_or(false)
    })
    .await;
    assert!(on, "ssl did not turn on:\n{}", cluster.server_log());
    let ca_path = ca_file.display().to_string();
    let wrong_path = wrong_ca_file.display().to_string();

    // verify-full with the right CA and name works, through the URL and the DB_* settings.
    success(&status(&[(
        "DATABASE_URL",
        &url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca_path}"),
        ),
    )]));
    let port = cluster.port.to_string();
    let db_settings = |mode: &'static str, root: &str| {
        status(&[
            ("DB_HOST", "localhost"),
            ("DB_PORT", &port),
            ("DATABASE_NAME", "webmon"),
            ("DB_USER_NAME", "postgres"),
            ("DB_SSLMODE", mode),
            ("DB_SSLROOTCERT", root),
        ])
    };
    success(&db_settings("verify-full", &ca_path));
    // A wrong CA fails and says so, with the settings it used.
    let message = failure(&db_settings("verify-full", &wrong_path));
    assert!(
        message.contains(&format!("sslmode=verify-full, sslrootcert={wrong_path}"))
            && message.contains("invalid peer certificate")
            && message.contains("UnknownIssuer"),
        "{message}"
    );
    let message = failure(&status(&[(
        "DATABASE_URL",
        &url(
            "localhost",
            &format!("sslmode=verify-ca&sslrootcert={wrong_path}"),
        ),
    )]));
    assert!(message.contains("UnknownIssuer"), "{message}");
    // The certificate names `localhost`, not 127.0.0.1: verify-full refuses, verify-ca
    // (chain only) accepts, require (no verification) accepts.
    let message = failure(&status(&[(
        "DATABASE_URL",
        &url(
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca_path}"),
        ),
    )]));
    assert!(message.contains("not valid for name"), "{message}");
    success(&status(&[(
        "DATABASE_URL",
        &url(
            "127.0.0.1",
            &format!("sslmode=verify-ca&sslrootcert={ca_path}"),
        ),
    )]));
    success(&status(&[(
        "DATABASE_URL",
        &url("127.0.0.1", "sslmode=require"),
    )]));
    // `prefer` with a root certificate that does not verify: connects without TLS, and says so.
    let fallback = status(&[(
        "DATABASE_URL",
        &url(
            "localhost",
            &format!("sslmode=prefer&sslrootcert={wrong_path}"),
        ),
    )]);
    success(&fallback);
    let said = String::from_utf8_lossy(&fallback.stdout).into_owned()
        + &String::from_utf8_lossy(&fallback.stderr);
    assert!(said.contains("connecting without TLS"), "{said}");
    // A verifying mode without a root certificate is refused before connecting.
    let message = failure(&status(&[(
        "DATABASE_URL",
        &url("localhost", "sslmode=verify-full"),
    )]));
    assert!(message.contains("needs a root certificate"), "{message}");

    // A running probe with the default sslmode (prefer), registered through its
    // connection: every connection is encrypted.
    let mut probe = Probe::spawn(
        &[],
        &[
            ("DB_HOST", "localhost"),
            ("DB_PORT", port.as_str()),
            ("DATABASE_NAME", "webmon"),
            ("DB_USER_NAME", "postgres"),
            ("HOME", "/nonexistent"),
            ("WEBMON_PROBE_NAME", "tls-probe"),
        ],
        cluster.dir.join("probe.log"),
    )
    .unwrap();
    let encrypted = wait_until(Duration::from_secs(20), || async {
        db.query_one(
            "SELECT count(*) >= 1 AND bool_and(s.ssl)
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.application_name = 'webmon-worker'",
            &[],
        )
        .await
        .map(|row| row.get::<_, Option<bool>>(0) == Some(true))
        .unwrap_or(false)
    })
    .await;
    assert!(encrypted, "{}", probe.output());
    let plain: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.application_name = 'webmon-worker' AND NOT s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(plain, 0);
    let registered: i64 = db
        .query_one(
            "SELECT count(*) FROM webmon.probes WHERE name = 'tls-probe'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(registered, 1);
    probe.stop_cleanly(libc::SIGTERM).await;

    // libpq's self-signed setup: the server's own certificate (a CA certificate, as
    // `openssl req -x509` makes it) is the client's root file.
    let (own, own_key) = self_signed_ca_for_localhost();
    write_owned_by_the_server(&data.join("server.crt"), &own);
    write_owned_by_the_server(&data.join("server.key"), &own_key);
    let own_file = cluster.dir.join("own.pem");
    std::fs::write(&own_file, &own).unwrap();
    db.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    let own_path = own_file.display().to_string();
    let reloaded = wait_until(Duration::from_secs(10), || async {
        db_settings("verify-full", &own_path).status.success()
    })
    .await;
    assert!(
        reloaded,
        "{}",
        failure(&db_settings("verify-full", &own_path))
    );
    success(&db_settings("verify-ca", &own_path));
    let message = failure(&status(&[(
        "DATABASE_URL",
        &url(
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={own_path}"),
        ),
    )]));
    assert!(message.contains("not valid for name"), "{message}");
    let message = failure(&db_settings("verify-ca", &ca_path));
    assert!(message.contains("invalid peer certificate"), "{message}");
}

/// A self-signed CA certificate for `localhost` and its key (PEM).
fn self_signed_ca_for_localhost() -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}
