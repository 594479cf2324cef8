//! The network layer: a `connection` to one broker (framing, correlation ids, requests in
//! flight, API version negotiation, holding requests while the broker throttles, SASL
//! and re-authentication through `sasl`), the `transport` under it (plain TCP, or `tls`
//! over it), and `poll`, waiting on many sockets at once alike natively and on
//! wasm32-wasip2.
//!
//! It knows brokers only by address and must not import `kafka::client`. Of
//! `kafka::protocol` it uses only what a connection needs for itself: API versions, error
//! codes, throttle times, SASL mechanisms.

pub mod connection;
pub mod poll;
pub mod sasl;
#[cfg(test)]
pub mod scripted;
pub mod tls;
pub mod transport;

use crate::kafka::protocol::sasl::Credentials;

/// How every connection to a cluster is secured: TLS, SASL, both or neither.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    pub tls: Option<tls::TlsSettings>,
    pub sasl: Option<Credentials>,
}
