//! Sending record batches to partition leaders: one Produce request per leader, all of
//! them in flight at once, and retriable failures sent again (after a metadata refresh)
//! until the deadline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ProduceRequest;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};

use super::cluster::{Cluster, topic_name};
use super::connection::Pending;
use super::errors;
use crate::config::Acks;
use crate::error::{Error, Result};

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// One partition's records of a write, encoded as one record batch.
pub struct PartitionBatch {
    pub topic: String,
    pub partition: i32,
    pub records: Bytes,
}

/// A Produce request in flight and the batches (by index) it carries.
struct InFlight {
    leader: i32,
    /// None for acks=0: the broker sends no answer.
    pending: Option<Pending<ProduceRequest>>,
    batches: Vec<usize>,
}

/// Sends `batches` and returns, per batch, whether it was written as `acks` asks.
/// Never returns before every batch has its outcome or `deadline` has passed.
pub fn produce(
    cluster: &mut Cluster,
    batches: &[PartitionBatch],
    acks: Acks,
    deadline: Instant,
) -> Vec<Result<()>> {
    let mut outcome: Vec<Option<Result<()>>> = (0..batches.len()).map(|_| None).collect();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let todo: Vec<usize> = (0..batches.len())
            .filter(|&i| {
                outcome[i]
                    .as_ref()
                    .is_none_or(|r| r.as_ref().is_err_and(Error::is_retriable))
            })
            .collect();
        if todo.is_empty() {
            break;
        }
        let sent = send_round(cluster, batches, &todo, acks, deadline, &mut outcome);
        if acks == Acks::None {
            flush(cluster, deadline);
            for i in sent.iter().flat_map(|f| &f.batches) {
                outcome[*i] = Some(Ok(()));
            }
            break;
        }
        collect(cluster, batches, sent, deadline, &mut outcome);
        let retry = outcome
            .iter()
            .flatten()
            .any(|r| r.as_ref().is_err_and(Error::is_retriable));
        if !retry || Instant::now() + backoff >= deadline {
            break;
        }
        super::poll::sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
        let topics: Vec<&str> = todo.iter().map(|&i| batches[i].topic.as_str()).collect();
        let _ = cluster.refresh(&topics);
    }
    outcome
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(Error::Timeout("no answer from the partition leader".into()))))
        .collect()
}

/// Groups the batches to send by leader and queues one request per leader.
fn send_round(
    cluster: &mut Cluster,
    batches: &[PartitionBatch],
    todo: &[usize],
    acks: Acks,
    deadline: Instant,
    outcome: &mut [Option<Result<()>>],
) -> Vec<InFlight> {
    let mut by_leader: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for &i in todo {
        let b = &batches[i];
        match cluster
            .topic(&b.topic)
            .map(|t| t.leaders.get(b.partition as usize).copied())
        {
            Ok(Some(leader)) if leader >= 0 => by_leader.entry(leader).or_default().push(i),
            Ok(_) => outcome[i] = Some(Err(leader_unknown(b))),
            Err(e) => outcome[i] = Some(Err(e)),
        }
    }
    let timeout_ms = deadline
        .saturating_duration_since(Instant::now())
        .as_millis()
        .min(i32::MAX as u128) as i32;
    let mut sent = Vec::new();
    for (leader, idx) in by_leader {
        let req = request(batches, &idx, acks, timeout_ms);
        let queued = cluster.broker(leader).and_then(|conn| {
            let version = conn.version::<ProduceRequest>()?;
            if acks == Acks::None {
                conn.send_unanswered(&req, version).map(|_| None)
            } else {
                conn.send(&req, version).map(Some)
            }
        });
        match queued {
            Ok(pending) => sent.push(InFlight {
                leader,
                pending,
                batches: idx,
            }),
            Err(e) => idx.iter().for_each(|&i| outcome[i] = Some(Err(e.clone()))),
        }
    }
    sent
}

fn request(batches: &[PartitionBatch], idx: &[usize], acks: Acks, timeout_ms: i32) -> ProduceRequest {
    let mut topics: BTreeMap<&str, Vec<PartitionProduceData>> = BTreeMap::new();
    for &i in idx {
        let b = &batches[i];
        topics.entry(&b.topic).or_default().push(
            PartitionProduceData::default()
                .with_index(b.partition)
                .with_records(Some(b.records.clone())),
        );
    }
    let topic_data = topics
        .into_iter()
        .map(|(t, parts)| {
            TopicProduceData::default()
                .with_name(topic_name(t))
                .with_partition_data(parts)
        })
        .collect();
    ProduceRequest::default()
        .with_transactional_id(None)
        .with_acks(acks.wire())
        .with_timeout_ms(timeout_ms)
        .with_topic_data(topic_data)
}

/// Waits for the answers to `sent` and files each partition's outcome.
fn collect(
    cluster: &mut Cluster,
    batches: &[PartitionBatch],
    mut sent: Vec<InFlight>,
    deadline: Instant,
    outcome: &mut [Option<Result<()>>],
) {
    while !sent.is_empty() {
        sent.retain(|f| {
            let Some(conn) = cluster.connection(f.leader) else {
                let e = Error::Connection(format!("connection to broker {} lost", f.leader));
                f.batches.iter().for_each(|&i| outcome[i] = Some(Err(e.clone())));
                return false;
            };
            let Some(pending) = &f.pending else {
                return false;
            };
            match conn.take(pending) {
                None => true,
                Some(Err(e)) => {
                    f.batches.iter().for_each(|&i| outcome[i] = Some(Err(e.clone())));
                    false
                }
                Some(Ok(resp)) => {
                    for &i in &f.batches {
                        outcome[i] = Some(partition_outcome(&resp, &batches[i]));
                    }
                    false
                }
            }
        });
        if sent.is_empty() || Instant::now() >= deadline {
            break;
        }
        if let Err(e) = cluster.wait(deadline) {
            sent.iter()
                .flat_map(|f| &f.batches)
                .for_each(|&i| outcome[i] = Some(Err(e.clone())));
            break;
        }
    }
}

fn partition_outcome(resp: &kafka_protocol::messages::ProduceResponse, b: &PartitionBatch) -> Result<()> {
    let answer = resp
        .responses
        .iter()
        .filter(|t| t.name.0.as_str() == b.topic)
        .flat_map(|t| &t.partition_responses)
        .find(|p| p.index == b.partition);
    let Some(p) = answer else {
        return Err(Error::CorruptData(format!(
            "no answer for {}-{} in the Produce response",
            b.topic, b.partition
        )));
    };
    let mut context = format!("Produce to {}-{}", b.topic, b.partition);
    if let Some(msg) = p.error_message.as_deref().filter(|m| !m.is_empty()) {
        context.push_str(&format!(" ({msg})"));
    }
    errors::check(p.error_code, &context)
}

/// Waits until every queued byte is on the wire (acks=0 has nothing else to wait for).
fn flush(cluster: &mut Cluster, deadline: Instant) {
    while cluster.has_unsent() && Instant::now() < deadline {
        if cluster.wait(deadline).is_err() {
            return;
        }
    }
}

fn leader_unknown(b: &PartitionBatch) -> Error {
    errors::kafka_error(
        ResponseError::LeaderNotAvailable,
        &format!("{}-{}", b.topic, b.partition),
    )
}
