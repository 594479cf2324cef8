//! The connector's one error type. It mirrors the WIT `error` variant so that the glue in
//! `lib.rs` converts it one to one, while the client logic stays testable natively.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A configuration problem, naming the parameter.
    InvalidConfig { parameter: String, message: String },
    /// A broker could not be reached or a connection broke.
    Connection(String),
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
    /// credentials or mechanism): every broker and every retry will say the same.
    pub fn is_refusal(&self) -> bool {
        // 58 SASL_AUTHENTICATION_FAILED, 33 UNSUPPORTED_SASL_MECHANISM, 34 ILLEGAL_SASL_STATE.
        matches!(
            self,
            Error::Tls(_)
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
