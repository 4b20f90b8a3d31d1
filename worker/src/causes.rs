//! Walking an error's causes. An `io::Error` hides the error it wraps from `source()` (a
//! TLS failure arrives as io::Error(io::Error(rustls::Error))), so the walk looks inside.

use std::error::Error;

/// The error, its causes, and the errors wrapped inside any `io::Error` among them, in order.
pub fn causes<'a>(error: &'a (dyn Error + 'static)) -> Vec<&'a (dyn Error + 'static)> {
    let mut found = Vec::new();
    let mut cause = Some(error);
    while let Some(current) = cause {
        let mut inner = Some(current);
        while let Some(candidate) = inner {
            found.push(candidate);
            inner = candidate
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map(|wrapped| wrapped as &(dyn Error + 'static));
        }
        cause = current.source();
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_inside_io_errors_are_found() {
        let tls = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        assert!(causes(&tls).iter().any(|e| e.is::<rustls::Error>()));
        let plain = std::io::Error::other("certificate");
        assert!(!causes(&plain).iter().any(|e| e.is::<rustls::Error>()));
    }
}
