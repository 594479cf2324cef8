//! Sending record batches to partition leaders: one Produce request per leader, all of
//! them in flight at once, and retriable failures sent again (after a metadata refresh)
//! until the deadline. A batch is resent as the same bytes, so with an idempotent producer
//! (sequence numbers in the batch) the broker writes it once however often it arrives.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest, ProduceResponse, ProducerId};

use super::backoff::Backoff;
use super::cluster::{Cluster, ConnKey};
use super::per_topic;
use crate::error::{Error, Result};
use crate::kafka::network::connection::Connection;
use crate::kafka::network::connection::Pending;
use crate::kafka::protocol::errors;

/// Which replicas must have a batch before the leader answers a Produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// No answer at all: the batch counts as written once it is on the wire.
    None,
    Leader,
    /// Every in-sync replica.
    All,
}

impl Acks {
    /// The value of the `acks` field of a Produce request.
    pub fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// One partition's records, encoded as one record batch.
#[derive(Debug, Clone)]
pub struct PartitionBatch {
    pub topic: String,
    pub partition: i32,
    pub records: Bytes,
    pub count: usize,
}

/// What became of a batch.
#[derive(Debug, Clone)]
pub enum Outcome {
    Written,
    /// Not written: refused by the broker, or never sent.
    Failed(Error),
    /// Sent, but no answer came (timeout, connection lost): it may have been written.
    InDoubt(Error),
}

impl Outcome {
    /// The outcome of another attempt at a batch, given what the earlier ones said. A
    /// batch that may have been written stays in doubt until the broker answers for it:
    /// written, or refused for good.
    fn after(self, earlier: Option<&Outcome>) -> Outcome {
        match (earlier, self) {
            (Some(Outcome::InDoubt(_)), Outcome::Failed(e)) if e.is_retriable() => Outcome::InDoubt(e),
            (_, now) => now,
        }
    }

    fn retriable(&self) -> bool {
        match self {
            Outcome::Written => false,
            Outcome::Failed(e) | Outcome::InDoubt(e) => e.is_retriable(),
        }
    }
}

/// Asks the cluster for a producer id and epoch (an idempotent, non-transactional producer).
pub fn init_producer_id(cluster: &mut Cluster) -> Result<(i64, i16)> {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let deadline = cluster.deadline();
    let resp = cluster.metadata_connection()?.request(&req, deadline)?;
    errors::check(resp.error_code, "InitProducerId")?;
    Ok((resp.producer_id.0, resp.producer_epoch))
}

/// Sends `batches` and returns them with each one's outcome. Each batch goes out as its
/// own request as soon as the iterator yields it, so the broker works on the first while
/// later ones are still being encoded; several requests are in flight per connection.
/// Returns once every batch has a final outcome or `deadline` has passed.
pub fn produce(
    cluster: &mut Cluster,
    batches: impl IntoIterator<Item = PartitionBatch>,
    acks: Acks,
    deadline: Instant,
) -> (Vec<PartitionBatch>, Vec<Outcome>) {
    let mut sent = Vec::new();
    let mut all = Vec::new();
    let mut outcome: Vec<Option<Outcome>> = Vec::new();
    for batch in batches {
        all.push(batch);
        outcome.push(None);
        let i = all.len() - 1;
        sent.extend(send_round(cluster, &all, &[i], acks, deadline, &mut outcome));
    }
    settle(cluster, &all, sent, acks, deadline, &mut outcome);
    let outcome = outcome
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::Failed(Error::Timeout("the batch was never sent".into()))))
        .collect();
    (all, outcome)
}

/// Waits for the first answers, then sends what failed retriably again (grouped per
/// leader, after a metadata refresh and a backoff) until all are settled or the deadline.
/// A round of retries waits for the throttles of the leaders its batches last went to.
fn settle(
    cluster: &mut Cluster,
    batches: &[PartitionBatch],
    mut sent: Vec<InFlight>,
    acks: Acks,
    deadline: Instant,
    outcome: &mut [Option<Outcome>],
) {
    let mut backoff = Backoff::default();
    loop {
        if acks == Acks::None {
            flush(cluster, deadline);
            for f in &sent {
                let done = match cluster.existing(ConnKey::Broker(f.leader)) {
                    Some(conn) => !give_up_unsent(conn),
                    None => false,
                };
                let now = match done {
                    true => Outcome::Written,
                    false => Outcome::InDoubt(no_answer()),
                };
                f.batches.iter().for_each(|&i| set(outcome, i, now.clone()));
            }
            return;
        }
        let sent_to: Vec<(i32, Vec<usize>)> = sent.iter().map(|f| (f.leader, f.batches.clone())).collect();
        collect(cluster, batches, sent, deadline, outcome);
        let todo: Vec<usize> = (0..batches.len())
            .filter(|&i| outcome[i].as_ref().is_none_or(Outcome::retriable))
            .collect();
        if todo.is_empty() || !backoff.sleep(throttled_until(cluster, &sent_to, &todo), deadline) {
            return;
        }
        let topics: Vec<&str> = todo.iter().map(|&i| batches[i].topic.as_str()).collect();
        let _ = cluster.refresh(&topics);
        sent = send_round(cluster, batches, &todo, acks, deadline, outcome);
    }
}

/// The latest throttle among the leaders the `todo` batches (in order) were sent to.
fn throttled_until(cluster: &Cluster, sent_to: &[(i32, Vec<usize>)], todo: &[usize]) -> Option<Instant> {
    sent_to
        .iter()
        .filter(|(_, idx)| idx.iter().any(|i| todo.binary_search(i).is_ok()))
        .filter_map(|(leader, _)| cluster.throttled_until(ConnKey::Broker(*leader)))
        .max()
}

/// A Produce request in flight and the batches (by index) it carries.
struct InFlight {
    leader: i32,
    /// None for acks=0: the broker sends no answer.
    pending: Option<Pending<ProduceRequest>>,
    batches: Vec<usize>,
}

/// Groups the batches to send by leader and queues one request per leader.
fn send_round(
    cluster: &mut Cluster,
    batches: &[PartitionBatch],
    todo: &[usize],
    acks: Acks,
    deadline: Instant,
    outcome: &mut [Option<Outcome>],
) -> Vec<InFlight> {
    let mut by_leader: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for &i in todo {
        let b = &batches[i];
        match cluster
            .topic(&b.topic)
            .map(|t| t.leaders.get(b.partition as usize).copied())
        {
            Ok(Some(leader)) if leader >= 0 => by_leader.entry(leader).or_default().push(i),
            Ok(_) => set(outcome, i, Outcome::Failed(leader_unknown(b))),
            Err(e) => set(outcome, i, Outcome::Failed(e)),
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
            Err(e) => idx
                .iter()
                .for_each(|&i| set(outcome, i, Outcome::Failed(e.clone()))),
        }
    }
    sent
}

fn request(batches: &[PartitionBatch], idx: &[usize], acks: Acks, timeout_ms: i32) -> ProduceRequest {
    let partitions = idx.iter().map(|&i| {
        let b = &batches[i];
        let part = PartitionProduceData::default()
            .with_index(b.partition)
            .with_records(Some(b.records.clone()));
        (b.topic.as_str(), part)
    });
    let topic_data = per_topic(partitions, |name, parts| {
        TopicProduceData::default()
            .with_name(name)
            .with_partition_data(parts)
    });
    ProduceRequest::default()
        .with_transactional_id(None)
        .with_acks(acks.wire())
        .with_timeout_ms(timeout_ms)
        .with_topic_data(topic_data)
}

/// Waits for the answers to `sent` and files each batch's outcome. What is still
/// unanswered at `deadline`, or lost with its connection, is in doubt.
fn collect(
    cluster: &mut Cluster,
    batches: &[PartitionBatch],
    mut sent: Vec<InFlight>,
    deadline: Instant,
    outcome: &mut [Option<Outcome>],
) {
    loop {
        sent.retain(|f| {
            let answer = match (cluster.existing(ConnKey::Broker(f.leader)), &f.pending) {
                (Some(conn), Some(pending)) => conn.take(pending),
                _ => Some(Err(Error::Connection(format!(
                    "connection to broker {} lost",
                    f.leader
                )))),
            };
            match answer {
                None => return true,
                Some(Err(e)) => f
                    .batches
                    .iter()
                    .for_each(|&i| set(outcome, i, Outcome::InDoubt(e.clone()))),
                Some(Ok(resp)) => f
                    .batches
                    .iter()
                    .for_each(|&i| set(outcome, i, partition_outcome(&resp, &batches[i]))),
            }
            false
        });
        if sent.is_empty() {
            return;
        }
        let waited = if Instant::now() < deadline {
            cluster.wait(deadline)
        } else {
            Err(no_answer())
        };
        if let Err(e) = waited {
            for f in &sent {
                // Its request may still be queued (a throttle) or its answer late: the
                // connection is dropped so neither goes out or lingers after this call.
                if let Some(conn) = cluster.existing(ConnKey::Broker(f.leader)) {
                    conn.fail(e.clone());
                }
                f.batches
                    .iter()
                    .for_each(|&i| set(outcome, i, Outcome::InDoubt(e.clone())));
            }
            return;
        }
    }
}

fn set(outcome: &mut [Option<Outcome>], i: usize, now: Outcome) {
    outcome[i] = Some(now.after(outcome[i].as_ref()));
}

fn no_answer() -> Error {
    Error::Timeout("no answer from the partition leader before deliveryTimeout".into())
}

fn partition_outcome(resp: &ProduceResponse, b: &PartitionBatch) -> Outcome {
    let answer = resp
        .responses
        .iter()
        .filter(|t| t.name.0.as_str() == b.topic)
        .flat_map(|t| &t.partition_responses)
        .find(|p| p.index == b.partition);
    let Some(p) = answer else {
        let msg = format!(
            "no answer for {}-{} in the Produce response",
            b.topic, b.partition
        );
        return Outcome::InDoubt(Error::CorruptData(msg));
    };
    // The broker already has this batch: a resend after a lost answer.
    if p.error_code == ResponseError::DuplicateSequenceNumber.code() {
        return Outcome::Written;
    }
    let mut context = format!("Produce to {}-{}", b.topic, b.partition);
    if let Some(msg) = p.error_message.as_deref().filter(|m| !m.is_empty()) {
        context.push_str(&format!(" ({msg})"));
    }
    match errors::check(p.error_code, &context) {
        Ok(()) => Outcome::Written,
        Err(e) => Outcome::Failed(e),
    }
}

/// Whether an error says the producer's id or sequence numbers no longer match the
/// broker's, so the producer must start over with a new id.
pub fn needs_new_producer_id(e: &Error) -> bool {
    const CODES: [ResponseError; 3] = [
        ResponseError::OutOfOrderSequenceNumber,
        ResponseError::UnknownProducerId,
        ResponseError::InvalidProducerEpoch,
    ];
    matches!(e, Error::Kafka { code, .. } if CODES.iter().any(|c| c.code() == *code))
}

/// Whether `conn` still holds bytes it did not send (a throttle, a full socket) or has
/// broken; then it is dropped, so nothing goes out after the call returns.
fn give_up_unsent(conn: &mut Connection) -> bool {
    if conn.broken().is_some() {
        return true;
    }
    if conn.has_unsent() {
        conn.fail(no_answer());
        return true;
    }
    false
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_in_doubt_stays_in_doubt_until_the_broker_answers_for_it() {
        let doubt = Outcome::InDoubt(Error::Timeout("t".into()));
        let not_sent = Outcome::Failed(Error::Connection("refused".into()));
        assert!(matches!(
            not_sent.clone().after(Some(&doubt)),
            Outcome::InDoubt(_)
        ));
        assert!(matches!(not_sent.after(None), Outcome::Failed(_)));
        assert!(matches!(Outcome::Written.after(Some(&doubt)), Outcome::Written));
        let refused_for_good = Outcome::Failed(errors::check(10, "p").unwrap_err());
        assert!(matches!(
            refused_for_good.after(Some(&doubt)),
            Outcome::Failed(Error::RecordTooLarge(_))
        ));
    }

    #[test]
    fn sequence_and_epoch_errors_call_for_a_new_producer_id() {
        for code in [45, 59, 47] {
            assert!(
                needs_new_producer_id(&errors::check(code, "p").unwrap_err()),
                "{code}"
            );
        }
        assert!(!needs_new_producer_id(&errors::check(6, "p").unwrap_err()));
    }
}
