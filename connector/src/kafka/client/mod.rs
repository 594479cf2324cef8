//! The client layer: what producers and consumers do with a cluster. `cluster` (bootstrap,
//! Metadata, connections keyed by what they are for), `producer`, `fetcher` with `offsets`
//! (where partitions start and end), `group` (consumer group membership, committed offsets)
//! with its `assignor`s, `partitioner`, `topics` (names, creating missing ones), and
//! `backoff`, the one retry policy.
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
#[cfg(test)]
pub mod scripted;
pub mod topics;

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::TopicName;

use crate::kafka::network::Security;

pub use producer::Acks;

/// A topic and a partition of it.
pub type TopicPartition = (String, i32);

/// Request entries grouped per topic, topics in name order, as every request that names
/// partitions lists them; `topic` makes a topic's entry of its name and its partitions'.
pub fn per_topic<'a, P, T>(
    parts: impl IntoIterator<Item = (&'a str, P)>,
    mut topic: impl FnMut(TopicName, Vec<P>) -> T,
) -> Vec<T> {
    let mut by: BTreeMap<&str, Vec<P>> = BTreeMap::new();
    for (t, p) in parts {
        by.entry(t).or_default().push(p);
    }
    by.into_iter()
        .map(|(t, ps)| topic(cluster::topic_name(t), ps))
        .collect()
}

/// How to reach a cluster; the connector's config builds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Bootstrap servers, `host:port` each (an IPv6 host in brackets).
    pub bootstrap: Vec<String>,
    /// Sent in every request header: brokers log it and key quotas by it.
    pub client_id: String,
    /// How long a request may take to be answered.
    pub request_timeout: Duration,
    /// TLS and SASL for every connection.
    pub security: Security,
}
