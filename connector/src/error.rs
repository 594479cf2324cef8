//! The connector's one error type. It mirrors the WIT `error` variant so that the glue in
//! `lib.rs` converts it one to one, while the client logic stays testable natively.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A configuration problem, naming the parameter.
    InvalidConfig { parameter: String, message: String },
    /// A broker could not be reached or a connection broke.
    Connection(String),
    /// The host refused a connect or a name lookup (its allowlist): every retry would be
    /// refused the same way until the operator changes it.
    NotPermitted(String),
    /// A TLS connection could not be set up (certificate, name, protocol); names the
    /// broker. Not retriable: it fails the same way until a setting changes.
    Tls(String),
    /// The broker answered with a Kafka error code.
    Kafka {
        code: i16,
        name: String,
        message: String,
        retriable: bool,
    },
    /// An operation did not finish before its deadline.
    Timeout(String),
    /// A record is larger than the broker accepts.
    RecordTooLarge(String),
    /// A response or record batch is malformed.
    CorruptData(String),
    /// A call that is not valid in the current state.
    InvalidState(String),
    /// A record from the host that cannot be written as it is.
    InvalidRecord(String),
    /// Anything else.
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn config(parameter: &str, message: impl Into<String>) -> Self {
        Error::InvalidConfig {
            parameter: parameter.to_string(),
            message: message.into(),
        }
    }

    /// Whether the same operation may succeed when tried again (after a metadata refresh
    /// or a reconnect).
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Kafka { retriable, .. } => *retriable,
            Error::Connection(_) | Error::Timeout(_) => true,
            _ => false,
        }
    }
}

impl Error {
    /// Whether the cluster refused this client's settings (its certificates, TLS, its
    /// credentials or mechanism), or the host refused the access: every broker and every
    /// retry will say the same.
    pub fn is_refusal(&self) -> bool {
        // 58 SASL_AUTHENTICATION_FAILED, 33 UNSUPPORTED_SASL_MECHANISM, 34 ILLEGAL_SASL_STATE.
        matches!(
            self,
            Error::Tls(_)
                | Error::NotPermitted(_)
                | Error::Kafka {
                    code: 58 | 33 | 34,
                    ..
                }
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidConfig { parameter, message } => {
                write!(f, "invalid config \"{parameter}\": {message}")
            }
            Error::Connection(m) => write!(f, "connection error: {m}"),
            Error::NotPermitted(m) => write!(f, "not permitted: {m}"),
            Error::Tls(m) => write!(f, "tls error: {m}"),
            Error::Kafka {
                code, name, message, ..
            } => {
                write!(f, "kafka error {code} {name}: {message}")
            }
            Error::Timeout(m) => write!(f, "timed out: {m}"),
            Error::RecordTooLarge(m) => write!(f, "record too large: {m}"),
            Error::CorruptData(m) => write!(f, "corrupt data: {m}"),
            Error::InvalidState(m) => write!(f, "invalid state: {m}"),
            Error::InvalidRecord(m) => write!(f, "invalid record: {m}"),
            Error::Other(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {}

/// An I/O error of a socket or a lookup as the connector says it: a refusal by the host
/// becomes `NotPermitted`, anything else a (retriable) `Connection` error. `what` says what
/// was being done, e.g. `cannot connect to 10.0.0.5:9092`.
pub fn io(what: &str, e: &std::io::Error) -> Error {
    // WASI's `access-denied` (the host's socket address check, or its lookup check)
    // arrives as EACCES.
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            Error::NotPermitted(format!("{what}: the host does not permit it"))
        }
        _ => Error::Connection(format!("{what}: {}", io_reason(e))),
    }
}

/// An I/O error's text without its errno: `(os error 2)` in a component is WASI's
/// numbering (2 is EACCES there, ENOENT on Linux), which would only mislead.
pub fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match e.raw_os_error() {
        Some(n) => text
            .strip_suffix(&format!(" (os error {n})"))
            .map_or_else(|| text.clone(), str::to_string),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error as IoError, ErrorKind};

    #[test]
    fn a_refusal_by_the_host_is_final_and_says_what_was_refused() {
        // wasi-libc's EACCES; its number (2 in WASI) must not show.
        let denied = IoError::from(ErrorKind::PermissionDenied);
        let e = io("cannot connect to 10.0.0.5:9092", &denied);
        assert_eq!(
            e,
            Error::NotPermitted("cannot connect to 10.0.0.5:9092: the host does not permit it".into())
        );
        assert!(!e.is_retriable() && e.is_refusal());
        assert!(
            e.to_string()
                .starts_with("not permitted: cannot connect to 10.0.0.5:9092")
        );
    }

    #[test]
    fn other_socket_errors_stay_retriable_and_lose_their_errno() {
        let refused = IoError::from_raw_os_error(111); // ECONNREFUSED on Linux
        assert!(refused.to_string().contains("(os error 111)"));
        let e = io("cannot connect to b:9092", &refused);
        assert!(e.is_retriable() && !e.is_refusal(), "{e:?}");
        let Error::Connection(m) = e else { panic!() };
        assert!(
            m.starts_with("cannot connect to b:9092: ") && !m.contains("os error"),
            "{m}"
        );
        assert_eq!(io_reason(&IoError::other("plain")), "plain");
    }
}
