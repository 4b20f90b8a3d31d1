//! TLS to PostgreSQL as libpq does it, with rustls: `sslmode` (disable, prefer, require,
//! verify-ca, verify-full) and `sslrootcert` (a PEM file, or `system` for the Mozilla roots
//! that HTTPS checks use), in `DATABASE_URL` or the `DB_SSLMODE`/`DB_SSLROOTCERT` settings.
//!
//! As in libpq: the default is `prefer` (TLS when the server offers it, and a connection
//! without it when TLS fails); `prefer` and `require` verify the server's certificate chain
//! only when a root certificate is given or `~/.postgresql/root.crt` exists; `verify-ca`
//! always verifies the chain; `verify-full` also the host name; `sslrootcert=system` needs
//! `verify-full`; Unix sockets never use TLS. A server certificate that is itself in the
//! root file is trusted as it is (libpq's self-signed setup, where `server.crt` is copied to
//! `root.crt`). Unlike libpq (OpenSSL), a name is only looked for in the certificate's
//! subjectAltName, not in its CN.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_name, WebPkiServerVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(text: &str) -> Result<SslMode, TlsError> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(TlsError::Unsupported(
                    "sslmode=allow (use prefer or disable)",
                ))
            }
            other => return Err(TlsError::BadMode(other.to_string())),
        })
    }

    fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres does with the connection: it knows no verification modes.
    pub fn wire(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

/// Where trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    File(PathBuf),
    System,
}

impl RootCert {
    /// `None` for an empty value (libpq's default then applies).
    pub fn parse(text: &str) -> Option<RootCert> {
        match text {
            "" => None,
            "system" => Some(RootCert::System),
            path => Some(RootCert::File(PathBuf::from(path))),
        }
    }
}

/// `sslmode` and `sslrootcert` as given (both optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    pub mode: Option<String>,
    pub root_cert: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid sslmode {0:?} (disable, prefer, require, verify-ca or verify-full)")]
    BadMode(String),
    #[error("{0} is not supported")]
    Unsupported(&'static str),
    #[error("sslrootcert=system needs sslmode=verify-full, not {0}")]
    SystemNeedsVerifyFull(&'static str),
    #[error("sslmode={mode} needs a root certificate: {path} does not exist; give sslrootcert=<file>, or sslrootcert=system for the public roots")]
    NoRootCert { mode: &'static str, path: String },
    #[error("root certificate file {path}: {reason}")]
    BadRootCert { path: String, reason: String },
    #[error("invalid connection string: {0}")]
    Syntax(String),
}

/// The TLS settings of the probe's database connections, ready to connect.
#[derive(Clone)]
pub struct DbTls {
    pub mode: SslMode,
    pub roots: Option<RootCert>,
    pub connector: MakeRustlsConnect,
}

impl fmt::Debug for DbTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl DbTls {
    /// `sslmode=…[, sslrootcert=…]`, for messages.
    pub fn describe(&self) -> String {
        match &self.roots {
            None => format!("sslmode={}", self.mode.name()),
            Some(RootCert::System) => format!("sslmode={}, sslrootcert=system", self.mode.name()),
            Some(RootCert::File(path)) => format!(
                "sslmode={}, sslrootcert={}",
                self.mode.name(),
                path.display()
            ),
        }
    }

    /// Builds the connector. `default_root` is libpq's `~/.postgresql/root.crt`.
    pub fn new(options: &TlsOptions, default_root: Option<&Path>) -> Result<DbTls, TlsError> {
        let given_root = options.root_cert.as_deref().and_then(RootCert::parse);
        let mode = match (&options.mode, &given_root) {
            (Some(mode), _) => SslMode::parse(mode)?,
            (None, Some(RootCert::System)) => SslMode::VerifyFull,
            (None, _) => SslMode::Prefer,
        };
        if given_root == Some(RootCert::System) && mode != SslMode::VerifyFull {
            return Err(TlsError::SystemNeedsVerifyFull(mode.name()));
        }
        let verifies = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull);
        let roots = match given_root {
            Some(root) => Some(root),
            None => match default_root {
                Some(path) if path.exists() => Some(RootCert::File(path.to_path_buf())),
                _ if verifies => {
                    return Err(TlsError::NoRootCert {
                        mode: mode.name(),
                        path: default_root
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|| "~/.postgresql/root.crt".to_string()),
                    })
                }
                _ => None,
            },
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Syntax(e.to_string()))?;
        let verifier: Arc<dyn ServerCertVerifier> = match (&roots, mode) {
            (_, SslMode::Disable) | (None, _) => Arc::new(Unverified(provider)),
            (Some(roots), mode) => {
                let trusted = root_certificates(roots)?;
                let mut store = match roots {
                    RootCert::System => RootCertStore {
                        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                    },
                    RootCert::File(_) => RootCertStore::empty(),
                };
                for certificate in &trusted {
                    store
                        .add(certificate.clone())
                        .map_err(|e| TlsError::BadRootCert {
                            path: describe_root(roots),
                            reason: e.to_string(),
                        })?;
                }
                let chain = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
                    .build()
                    .map_err(|e| TlsError::BadRootCert {
                        path: describe_root(roots),
                        reason: e.to_string(),
                    })?;
                Arc::new(Verified {
                    chain,
                    pinned: trusted,
                    check_name: mode == SslMode::VerifyFull,
                })
            }
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(DbTls {
            mode,
            roots,
            connector: MakeRustlsConnect::new(config),
        })
    }
}

/// libpq's default root certificate file, `~/.postgresql/root.crt`.
pub fn default_root_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".postgresql/root.crt"))
}

fn describe_root(roots: &RootCert) -> String {
    match roots {
        RootCert::System => "system".to_string(),
        RootCert::File(path) => path.display().to_string(),
    }
}

/// The trusted certificates (none for `system`: its roots come as trust anchors).
fn root_certificates(roots: &RootCert) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let path = match roots {
        RootCert::System => return Ok(Vec::new()),
        RootCert::File(path) => path,
    };
    let bad = |reason: String| TlsError::BadRootCert {
        path: path.display().to_string(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certificates.is_empty() {
        return Err(bad("no PEM certificate in it".to_string()));
    }
    Ok(certificates)
}

/// `prefer`/`require` without roots: encrypted, the certificate not verified (libpq's
/// behaviour); the handshake's signatures are still checked.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A verifying mode: the chain must lead to a trusted root, and with `check_name` (verify-full)
/// the certificate must name the host. A server certificate that is itself one of the
/// trusted certificates is trusted as it is (its name still checked for verify-full).
#[derive(Debug)]
struct Verified {
    chain: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
    check_name: bool,
}

impl ServerCertVerifier for Verified {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.chain.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match verdict {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            Err(refused)
                if self
                    .pinned
                    .iter()
                    .any(|c| c.as_ref() == end_entity.as_ref()) =>
            {
                if self.check_name {
                    let parsed = ParsedCertificate::try_from(end_entity).map_err(|_| refused)?;
                    verify_server_name(&parsed, server_name)?;
                }
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// Takes `sslmode` and `sslrootcert` out of a connection string (a `postgres://` URL or
/// libpq's `key=value` form), since tokio-postgres refuses the verification modes and
/// `sslrootcert`; returns the rest for tokio-postgres and the two options.
pub fn split_options(connection: &str) -> Result<(String, TlsOptions), TlsError> {
    let is_url = ["postgres://", "postgresql://"]
        .iter()
        .any(|prefix| connection.starts_with(prefix));
    if is_url {
        Ok(split_url(connection))
    } else {
        split_key_values(connection)
    }
}

fn take(options: &mut TlsOptions, key: &str, value: String) -> bool {
    match key {
        "sslmode" => options.mode = Some(value),
        "sslrootcert" => options.root_cert = Some(value),
        _ => return false,
    }
    true
}

fn split_url(url: &str) -> (String, TlsOptions) {
    let mut options = TlsOptions::default();
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), options);
    };
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            !take(&mut options, &decode(key), decode(value))
        })
        .collect();
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (rest, options)
}

/// libpq's `key = value` list: values bare or in single quotes, `\` escaping one character.
fn split_key_values(text: &str) -> Result<(String, TlsOptions), TlsError> {
    let mut options = TlsOptions::default();
    let mut kept = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        if key.is_empty() {
            if chars.peek().is_some() {
                return Err(TlsError::Syntax("a value without a key".to_string()));
            }
            break;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(TlsError::Syntax(format!("{key:?} has no \"=\"")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let quoted = chars.next_if_eq(&'\'').is_some();
        let mut value = String::new();
        let mut closed = !quoted;
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '\'' if quoted => {
                    closed = true;
                    break;
                }
                c if c.is_whitespace() && !quoted => break,
                c => value.push(c),
            }
        }
        if !closed {
            return Err(TlsError::Syntax(format!(
                "the value of {key:?} has no closing quote"
            )));
        }
        if !take(&mut options, &key, value.clone()) {
            let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{escaped}'"));
        }
    }
    Ok((kept.join(" "), options))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(mode: Option<&str>, root: Option<&str>) -> TlsOptions {
        TlsOptions {
            mode: mode.map(String::from),
            root_cert: root.map(String::from),
        }
    }

    #[test]
    fn urls_give_up_the_tls_options_and_keep_the_rest_as_written() {
        let (rest, found) = split_options(
            "postgresql://probe:p%40ss@db.example:5433/webmon?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20dir%2Fca.pem&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgresql://probe:p%40ss@db.example:5433/webmon?application_name=x&connect_timeout=5"
        );
        assert_eq!(
            found,
            options(Some("verify-full"), Some("/etc/ca dir/ca.pem"))
        );
        let (rest, found) = split_options("postgres://u@h/db?sslmode=require").unwrap();
        assert_eq!(
            (rest.as_str(), found),
            ("postgres://u@h/db", options(Some("require"), None))
        );
        let (rest, found) = split_options("postgres://u@h/db").unwrap();
        assert_eq!(
            (rest.as_str(), found),
            ("postgres://u@h/db", TlsOptions::default())
        );
    }

    #[test]
    fn key_value_strings_give_up_the_tls_options_and_keep_quoting() {
        let (rest, found) = split_options(
            r"host=127.0.0.1 port = 5433 sslmode=verify-ca  sslrootcert='/tmp/my ca.pem' password='it\'s' user=probe",
        )
        .unwrap();
        assert_eq!(found, options(Some("verify-ca"), Some("/tmp/my ca.pem")));
        assert_eq!(
            rest,
            r"host='127.0.0.1' port='5433' password='it\'s' user='probe'"
        );
        // What is kept parses as it did before.
        let config: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"it's"[..]));
        assert_eq!(config.get_ports(), &[5433]);
        for bad in ["host", "host=127.0.0.1 password='open", "=x"] {
            assert!(split_options(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn modes_follow_libpq() {
        let missing = Path::new("/nonexistent/root.crt");
        let tls = DbTls::new(&TlsOptions::default(), Some(missing)).unwrap();
        assert_eq!((tls.mode, tls.roots), (SslMode::Prefer, None));
        let tls = DbTls::new(&options(Some("require"), None), Some(missing)).unwrap();
        assert_eq!(tls.describe(), "sslmode=require");
        // sslrootcert=system means verify-full, and only that.
        let tls = DbTls::new(&options(None, Some("system")), None).unwrap();
        assert_eq!(tls.describe(), "sslmode=verify-full, sslrootcert=system");
        assert!(matches!(
            DbTls::new(&options(Some("require"), Some("system")), None),
            Err(TlsError::SystemNeedsVerifyFull("require"))
        ));
        // Verification without a root certificate is refused before connecting.
        let error = DbTls::new(&options(Some("verify-full"), None), Some(missing))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("/nonexistent/root.crt does not exist"),
            "{error}"
        );
        let error = DbTls::new(
            &options(Some("verify-ca"), Some("/nonexistent/ca.pem")),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("root certificate file /nonexistent/ca.pem:"),
            "{error}"
        );
        // An empty sslrootcert is libpq's default.
        let tls = DbTls::new(&options(Some("require"), Some("")), Some(missing)).unwrap();
        assert_eq!(tls.roots, None);
        for bad in ["verify_full", "allow", ""] {
            assert!(SslMode::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let path = std::env::temp_dir().join(format!("webmon-empty-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let error = DbTls::new(&options(Some("verify-full"), path.to_str()), None)
            .unwrap_err()
            .to_string();
        std::fs::remove_file(&path).ok();
        assert!(error.contains("no PEM certificate"), "{error}");
    }
}
