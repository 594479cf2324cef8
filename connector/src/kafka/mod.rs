//! A Kafka client small enough to read in an afternoon, in three layers.
//!
//! - `network`: a connection to one broker and waiting on many sockets.
//! - `protocol`: the bytes: record batches, their codecs, API versions, error codes.
//! - `client`: the cluster, producing, fetching, consumer groups.

pub mod client;
pub mod network;
pub mod protocol;
