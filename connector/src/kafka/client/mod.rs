pub mod assignor;
pub mod cluster;
pub mod fetcher;
pub mod group;
pub mod partitioner;
pub mod producer;

/// A topic and a partition of it.
pub type TopicPartition = (String, i32);
