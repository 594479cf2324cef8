//! Where partitions start and end: ListOffsets for the earliest or latest offset, asked of
//! each partition's leader.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ListOffsetsRequest;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};

use super::cluster::{Cluster, broker_id, topic_name};
use crate::error::Result;
use crate::kafka::protocol::errors;

/// ListOffsets timestamps.
const EARLIEST: i64 = -2;
const LATEST: i64 = -1;

/// The earliest or latest offset of each of `partitions`.
pub fn list_offsets(
    cluster: &mut Cluster,
    topic: &str,
    partitions: &[i32],
    earliest: bool,
) -> Result<BTreeMap<i32, i64>> {
    let meta = cluster.topic(topic)?;
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for &p in partitions {
        let leader = meta.leaders.get(p as usize).copied().unwrap_or(-1);
        if leader < 0 {
            return Err(errors::kafka_error(
                ResponseError::LeaderNotAvailable,
                &format!("{topic}-{p}"),
            ));
        }
        by_leader.entry(leader).or_default().push(p);
    }
    let timestamp = if earliest { EARLIEST } else { LATEST };
    let mut offsets = BTreeMap::new();
    for (leader, parts) in by_leader {
        let req = request(topic, &parts, timestamp);
        let deadline = cluster.deadline();
        let resp = cluster.broker(leader)?.request(&req, deadline)?;
        for part in resp.topics.into_iter().flat_map(|t| t.partitions) {
            errors::check(
                part.error_code,
                &format!("ListOffsets {topic}-{}", part.partition_index),
            )?;
            offsets.insert(part.partition_index, part.offset);
        }
    }
    Ok(offsets)
}

/// ListOffsets for `parts` of `topic` at `timestamp`, as a consumer (replica -1) asks.
fn request(topic: &str, parts: &[i32], timestamp: i64) -> ListOffsetsRequest {
    let partitions = parts
        .iter()
        .map(|&p| {
            ListOffsetsPartition::default()
                .with_partition_index(p)
                .with_timestamp(timestamp)
        })
        .collect();
    let topic = ListOffsetsTopic::default()
        .with_name(topic_name(topic))
        .with_partitions(partitions);
    ListOffsetsRequest::default()
        .with_replica_id(broker_id(-1))
        .with_isolation_level(0)
        .with_topics(vec![topic])
}
