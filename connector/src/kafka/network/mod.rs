//! The network layer: a `connection` to one broker (framing, correlation ids, requests in
//! flight, API version negotiation, holding requests while the broker throttles), the
//! `transport` under it (plain TCP today; TLS and SASL go there), and `poll`, waiting on
//! many sockets at once alike natively and on wasm32-wasip2.
//!
//! It knows brokers only by address and must not import `kafka::client`. Of
//! `kafka::protocol` it uses only what a connection needs for itself: API versions, error
//! codes, throttle times.

pub mod connection;
pub mod poll;
pub mod transport;
