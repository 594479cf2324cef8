//! Jitter: random spreads, so clients that acted together (a broker restart, sessions
//! begun together) do not act again in step. Spread, not secrecy. One generator for guest
//! and host, with the backoff it spreads (`connector_format::backoff`).

pub use connector_format::backoff::random_up_to;
