//! SASL over a connection: SaslHandshake names the mechanism, then SaslAuthenticate
//! requests carry the mechanism's messages (`protocol::sasl`) until it is done. Run on
//! every new connection, and again on a live one before the broker's session ends
//! (KIP-368, see `Connection`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;

use super::connection::Connection;
use crate::error::{Error, Result};
use crate::kafka::protocol::errors;
use crate::kafka::protocol::sasl::{Credentials, Exchange, Step, auth_failed};

/// Error code of UNSUPPORTED_SASL_MECHANISM.
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
/// Error code of ILLEGAL_SASL_STATE: what a listener without SASL answers a handshake.
const ILLEGAL_SASL_STATE: i16 = 34;

/// Authenticates `conn` with `creds`; returns how long the broker keeps the session, if
/// it limits it.
pub fn authenticate(
    conn: &mut Connection,
    creds: &Credentials,
    deadline: Instant,
) -> Result<Option<Duration>> {
    handshake(conn, creds, deadline)?;
    let (mut exchange, mut message) = Exchange::start(creds)?;
    let version = conn.version::<SaslAuthenticateRequest>()?;
    loop {
        let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(message));
        let resp = conn.request_at(&req, version, deadline)?;
        if resp.error_code != 0 {
            let said = resp.error_message.as_deref().unwrap_or("no reason given");
            return Err(refused(conn.addr(), resp.error_code, said));
        }
        match exchange.step(&resp.auth_bytes).map_err(|e| at(conn.addr(), e))? {
            Step::Send(next) => message = next,
            Step::Done => return Ok(lifetime(resp.session_lifetime_ms)),
        }
    }
}

/// SaslHandshake v1: the broker takes the mechanism or lists the ones it has.
fn handshake(conn: &mut Connection, creds: &Credentials, deadline: Instant) -> Result<()> {
    let version = conn.version::<SaslHandshakeRequest>()?;
    if version < 1 {
        return Err(Error::Other(format!(
            "broker {} speaks only SaslHandshake v0 (SASL outside Kafka requests), which this client does not",
            conn.addr()
        )));
    }
    let mechanism = creds.mechanism.name();
    let req = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
    let resp = conn.request_at(&req, version, deadline)?;
    if resp.error_code == UNSUPPORTED_SASL_MECHANISM {
        let has: Vec<&str> = resp.mechanisms.iter().map(|m| m.as_str()).collect();
        let said = format!(
            "the broker does not take saslMechanism {mechanism}; it takes: {}",
            has.join(", ")
        );
        return Err(refused(conn.addr(), resp.error_code, &said));
    }
    if resp.error_code == ILLEGAL_SASL_STATE {
        let said = "this listener takes no SASL: unset saslMechanism, or use the broker's SASL listener";
        return Err(refused(conn.addr(), resp.error_code, said));
    }
    errors::check(resp.error_code, "SaslHandshake").map_err(|e| at(conn.addr(), e))
}

/// A SaslAuthenticate error: never worth retrying with the same credentials.
fn refused(addr: &str, code: i16, said: &str) -> Error {
    match errors::check(code, "SaslAuthenticate") {
        Err(Error::Kafka { code, name, .. }) => Error::Kafka {
            code,
            name,
            message: format!("{addr}: {said}"),
            retriable: false,
        },
        _ => auth_failed(format!("{addr}: {said}")),
    }
}

/// `e` with the broker's address in front of its message.
fn at(addr: &str, e: Error) -> Error {
    match e {
        Error::Kafka {
            code,
            name,
            message,
            retriable,
        } => Error::Kafka {
            code,
            name,
            message: format!("{addr}: {message}"),
            retriable,
        },
        other => other,
    }
}

/// The session lifetime a SaslAuthenticate v1+ answer gives; 0 means unlimited.
fn lifetime(ms: i64) -> Option<Duration> {
    u64::try_from(ms)
        .ok()
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
}
