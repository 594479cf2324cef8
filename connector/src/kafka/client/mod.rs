//! The client layer: what producers and consumers do with a cluster. `cluster` (bootstrap,
//! Metadata, connections keyed by what they are for), `producer`, `fetcher` with `offsets`
//! (where partitions start and end), `group` (consumer group membership, committed offsets)
//! with its `assignor`s, `partitioner`, and `backoff`, the one retry policy.
//!
//! It talks to brokers through `kafka::network` and `kafka::protocol`, and imports nothing
//! of the connector around it: the connector builds [`ClientOptions`] from its config.

pub mod assignor;
pub mod backoff;
pub mod cluster;
pub mod fetcher;
pub mod group;
pub mod offsets;
pub mod partitioner;
pub mod producer;

use std::time::Duration;

pub use producer::Acks;

/// A topic and a partition of it.
pub type TopicPartition = (String, i32);

/// How to reach a cluster; the connector's config builds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Bootstrap servers, `host:port` each (an IPv6 host in brackets).
    pub bootstrap: Vec<String>,
    /// Sent in every request header: brokers log it and key quotas by it.
    pub client_id: String,
    /// How long a request may take to be answered.
    pub request_timeout: Duration,
}
