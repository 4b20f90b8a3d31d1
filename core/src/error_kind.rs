//! The kinds a check without a usable response ends with (`webmon.errors.error_kind`). The
//! probe records the network ones; the extension records `lost` and `no_probe`. The table's
//! CHECK constraint is built from `ErrorKind::ALL` (see `webmon.error_kinds()`).

/// Why a check has no response row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The host name did not resolve.
    Dns,
    /// No TCP connection (refused, unreachable, reset while connecting).
    Connect,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// The check's timeout passed.
    Timeout,
    /// Too many redirects, or a redirect that could not be followed.
    Redirect,
    /// The response started but its body could not be read.
    Body,
    /// The probe's network policy denies the target's address; nothing was sent.
    Blocked,
    /// Leased by probes `pg_webmon.max_attempts` times without a result.
    Lost,
    /// No probe claimed the check in time (no live probe for its regions, or all busy).
    NoProbe,
    /// Anything else (an invalid stored monitor, a result the database refused, …).
    Other,
}

impl ErrorKind {
    /// Every kind, in the order the documentation lists them.
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::Dns,
        ErrorKind::Connect,
        ErrorKind::Tls,
        ErrorKind::Timeout,
        ErrorKind::Redirect,
        ErrorKind::Body,
        ErrorKind::Blocked,
        ErrorKind::Lost,
        ErrorKind::NoProbe,
        ErrorKind::Other,
    ];

    /// The name stored in `webmon.errors.error_kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Dns => "dns",
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Redirect => "redirect",
            ErrorKind::Body => "body",
            ErrorKind::Blocked => "blocked",
            ErrorKind::Lost => "lost",
            ErrorKind::NoProbe => "no_probe",
            ErrorKind::Other => "other",
        }
    }

    pub fn parse(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }

    /// All names, for the CHECK constraint and the documentation.
    pub fn names() -> Vec<&'static str> {
        ErrorKind::ALL.iter().map(|kind| kind.as_str()).collect()
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let names = ErrorKind::names();
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(kind.as_str()), Some(kind));
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        assert_eq!(ErrorKind::parse("ssl"), None);
    }
}
