//! A Kafka client small enough to read in an afternoon, one module per role:
//! `connection` (framing, correlation ids, requests in flight), `poll` (waiting on many
//! sockets), `versions` (ApiVersions negotiation), `cluster` (bootstrap, metadata, a
//! connection per broker), `batch` (record batches), `compression` (their codecs, pure
//! Rust), `producer`, `fetcher`, `partitioner`, `errors` (Kafka codes to typed errors),
//! `assignor` (the consumer group protocol's assignors and member metadata, pure).

pub mod assignor;
pub mod batch;
pub mod cluster;
pub mod compression;
pub mod connection;
pub mod errors;
pub mod fetcher;
pub mod group;
pub mod partitioner;
pub mod poll;
pub mod producer;
pub mod versions;
