//! Sending record batches to partition leaders: each batch as a request of its own as soon
//! as it is encoded (`Flight`), many in flight at once, and retriable failures sent again
//! (after a metadata refresh) until the deadline, a partition's batches in order. A batch
//! is resent as the same bytes, so with an idempotent producer (sequence numbers in the
//! batch) the broker writes it once however often it arrives.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest, ProduceResponse, ProducerId};

use super::backoff::Backoff;
use super::cluster::{Cluster, ConnKey};
use super::per_topic;
use crate::error::{Error, Result};
use crate::kafka::network::connection::{Connection, Pending, Unanswered};
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
    /// The sequence number of its first record (-1 without idempotence).
    pub base_sequence: i32,
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
/// own request as soon as the iterator yields it and its partition has room in flight
/// (`max_in_flight`), so the broker works on the first while later ones are still being
/// encoded. Returns once every batch has a final outcome or `deadline` has passed.
pub fn produce(
    cluster: &mut Cluster,
    batches: impl IntoIterator<Item = PartitionBatch>,
    acks: Acks,
    max_in_flight: usize,
    deadline: Instant,
) -> (Vec<PartitionBatch>, Vec<Outcome>) {
    let mut flight = Flight::new(acks, max_in_flight, deadline);
    for batch in batches {
        flight.wait_for_room(cluster, &batch.topic, batch.partition);
        flight.send(cluster, batch);
    }
    flight.finish(cluster)
}

/// Batches sent to their leaders and what has become of each so far: a write's batches
/// go out one by one as they are encoded, while earlier ones are in flight.
pub struct Flight {
    acks: Acks,
    /// The most batches of one partition sent and not answered at once.
    max_in_flight: usize,
    deadline: Instant,
    batches: Vec<PartitionBatch>,
    outcome: Vec<Option<Outcome>>,
    sent: Vec<InFlight>,
}

impl Flight {
    pub fn new(acks: Acks, max_in_flight: usize, deadline: Instant) -> Self {
        Flight {
            acks,
            max_in_flight: max_in_flight.max(1),
            deadline,
            batches: Vec::new(),
            outcome: Vec::new(),
            sent: Vec::new(),
        }
    }

    /// Sends `batch` now, as a request of its own; its index in the flight. A partition's
    /// batches must be sent in the order of their sequence numbers, each once there is
    /// room (`wait_for_room`).
    pub fn send(&mut self, cluster: &mut Cluster, batch: PartitionBatch) -> usize {
        self.batches.push(batch);
        self.outcome.push(None);
        let i = self.batches.len() - 1;
        let (acks, deadline) = (self.acks, self.deadline);
        let sent = send_round(cluster, &self.batches, &[i], acks, deadline, &mut self.outcome);
        self.sent.extend(sent);
        i
    }

    /// The outcome of batch `i` so far (none while it waits for its answer).
    pub fn outcome(&self, i: usize) -> Option<&Outcome> {
        self.outcome[i].as_ref()
    }

    /// Waits until fewer than `max_in_flight` batches of `topic`-`partition` are
    /// unanswered, or the deadline has passed (then they are in doubt). A batch refused
    /// as out of order behind one to be sent again is to be sent again too.
    pub fn wait_for_room(&mut self, cluster: &mut Cluster, topic: &str, partition: i32) {
        if self.acks == Acks::None {
            return; // no answers come
        }
        let max = self.max_in_flight;
        let sent = std::mem::take(&mut self.sent);
        self.sent = collect(
            cluster,
            &self.batches,
            sent,
            self.deadline,
            &mut self.outcome,
            |batches, sent| unanswered(batches, sent, topic, partition) < max,
        );
        infer(&self.batches, &mut self.outcome);
    }

    /// Waits for every answer, sends what failed retriably again until the deadline, and
    /// returns the batches, in the order sent, with their outcomes.
    pub fn finish(mut self, cluster: &mut Cluster) -> (Vec<PartitionBatch>, Vec<Outcome>) {
        let sent = std::mem::take(&mut self.sent);
        let limits = (self.acks, self.max_in_flight, self.deadline);
        settle(cluster, &self.batches, sent, limits, &mut self.outcome);
        let outcome = self
            .outcome
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Failed(Error::Timeout("the batch was never sent".into()))))
            .collect();
        (self.batches, outcome)
    }
}

/// Waits for the first answers, then sends what failed retriably again (grouped per
/// leader, after a metadata refresh and a backoff) until all are settled or the deadline.
/// A round of retries waits for the throttles of the leaders its batches last went to,
/// and sends at most `max_in_flight` of a partition's batches: the rest follow in the
/// next round.
fn settle(
    cluster: &mut Cluster,
    batches: &[PartitionBatch],
    mut sent: Vec<InFlight>,
    (acks, max_in_flight, deadline): (Acks, usize, Instant),
    outcome: &mut [Option<Outcome>],
) {
    let mut backoff = Backoff::default();
    loop {
        if acks == Acks::None {
            flush(cluster, deadline);
            for f in &sent {
                // On the wire only if the connection it was queued on is still there, with
                // nothing left unsent: one reopened for a later batch says nothing of it.
                let done = match (cluster.existing(ConnKey::Broker(f.leader)), &f.request) {
                    (Some(conn), Request::Unanswered(sent)) => conn.queued(sent) && !give_up_unsent(conn),
                    _ => false,
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
        collect(cluster, batches, sent, deadline, outcome, |_, sent| {
            sent.is_empty()
        });
        infer(batches, outcome);
        let todo: Vec<usize> = (0..batches.len())
            .filter(|&i| outcome[i].as_ref().is_none_or(Outcome::retriable))
            .collect();
        if todo.is_empty() {
            return;
        }
        // Only batches deferred as unsent are left: no pause, but not past the deadline.
        let failed = todo.iter().any(|&i| outcome[i].is_some());
        if failed && !backoff.sleep(throttled_until(cluster, &sent_to, &todo), deadline) {
            return;
        }
        if Instant::now() >= deadline {
            return;
        }
        let round = first_of_each_partition(batches, &todo, max_in_flight);
        for &i in todo.iter().filter(|i| round.binary_search(i).is_err()) {
            defer(outcome, i);
        }
        let topics: Vec<&str> = round.iter().map(|&i| batches[i].topic.as_str()).collect();
        let _ = cluster.refresh(&topics);
        sent = send_round(cluster, batches, &round, acks, deadline, outcome);
    }
}

/// The first `max` batches of each partition among `todo` (ascending, so in the order sent).
fn first_of_each_partition(batches: &[PartitionBatch], todo: &[usize], max: usize) -> Vec<usize> {
    let mut taken: HashMap<(&str, i32), usize> = HashMap::new();
    let mut round = Vec::new();
    for &i in todo {
        let n = taken
            .entry((batches[i].topic.as_str(), batches[i].partition))
            .or_default();
        *n += 1;
        if *n <= max {
            round.push(i);
        }
    }
    round
}

/// A batch left for the next round. One the broker refused (out of order behind an
/// earlier one) is as if unsent, so that refusal is not judged again once the earlier
/// ones are written; one in doubt stays in doubt.
fn defer(outcome: &mut [Option<Outcome>], i: usize) {
    if matches!(outcome[i], Some(Outcome::Failed(_))) {
        outcome[i] = None;
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
    request: Request,
    batches: Vec<usize>,
}

enum Request {
    Answered(Pending<ProduceRequest>),
    /// acks=0: the broker sends no answer.
    Unanswered(Unanswered),
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
    for (leader, idx) in by_leader
        .into_iter()
        .flat_map(|(l, idx)| layers(batches, idx).map(move |i| (l, i)))
    {
        let req = request(batches, &idx, acks, timeout_ms);
        let queued = cluster.broker(leader).and_then(|conn| {
            let version = conn.version::<ProduceRequest>()?;
            if acks == Acks::None {
                conn.send_unanswered(&req, version).map(Request::Unanswered)
            } else {
                conn.send(&req, version).map(Request::Answered)
            }
        });
        match queued {
            Ok(request) => sent.push(InFlight {
                leader,
                request,
                batches: idx,
            }),
            Err(e) => idx
                .iter()
                .for_each(|&i| set(outcome, i, Outcome::Failed(e.clone()))),
        }
    }
    sent
}

/// Splits a leader's batches (in order) into requests of at most one batch per partition
/// (a broker takes one per partition in a request), a partition's batches in order.
fn layers(batches: &[PartitionBatch], idx: Vec<usize>) -> impl Iterator<Item = Vec<usize>> {
    let mut layers: Vec<Vec<usize>> = Vec::new();
    let mut seen: HashMap<(&str, i32), usize> = HashMap::new();
    for i in idx {
        let n = seen
            .entry((batches[i].topic.as_str(), batches[i].partition))
            .or_default();
        if *n == layers.len() {
            layers.push(Vec::new());
        }
        layers[*n].push(i);
        *n += 1;
    }
    layers.into_iter()
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

/// Files the outcomes of the batches in `sent` as their answers arrive, until `done`
/// holds for what is still unanswered; returns that. What is still unanswered at
/// `deadline`, or lost with its connection, is in doubt.
fn collect(
    cluster: &mut Cluster,
    batches: &[PartitionBatch],
    mut sent: Vec<InFlight>,
    deadline: Instant,
    outcome: &mut [Option<Outcome>],
    done: impl Fn(&[PartitionBatch], &[InFlight]) -> bool,
) -> Vec<InFlight> {
    loop {
        sent.retain(|f| {
            let answer = match (cluster.existing(ConnKey::Broker(f.leader)), &f.request) {
                (Some(conn), Request::Answered(pending)) => conn.take(pending),
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
        if sent.is_empty() || done(batches, &sent) {
            return sent;
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
            return Vec::new();
        }
    }
}

/// Batches of `topic`-`partition` in `sent` whose answers are due.
fn unanswered(batches: &[PartitionBatch], sent: &[InFlight], topic: &str, partition: i32) -> usize {
    sent.iter()
        .filter(|f| matches!(f.request, Request::Answered(_)))
        .flat_map(|f| &f.batches)
        .filter(|&&i| batches[i].partition == partition && batches[i].topic == topic)
        .count()
}

/// What the answers so far say of the batches without one, from the order an idempotent
/// producer's batches are written in (see `follow_earlier_failures`, `written_up_to`).
fn infer(batches: &[PartitionBatch], outcome: &mut [Option<Outcome>]) {
    written_up_to(batches, outcome);
    follow_earlier_failures(batches, outcome);
}

/// A broker refuses a batch whose sequence does not follow the last it wrote for the
/// partition (OUT_OF_ORDER_SEQUENCE_NUMBER): what follows an earlier batch of the
/// partition that is to be sent again. Such a batch is sent again after that one, not
/// refused for good (KIP-98: up to five batches in flight per partition, in order).
fn follow_earlier_failures(batches: &[PartitionBatch], outcome: &mut [Option<Outcome>]) {
    const OUT_OF_ORDER: i16 = ResponseError::OutOfOrderSequenceNumber.code();
    let mut to_resend: HashSet<(&str, i32)> = HashSet::new();
    for (b, o) in batches.iter().zip(outcome.iter_mut()) {
        let key = (b.topic.as_str(), b.partition);
        if let Some(Outcome::Failed(Error::Kafka {
            code: OUT_OF_ORDER,
            retriable,
            ..
        })) = o
        {
            *retriable = to_resend.contains(&key);
        }
        if o.as_ref().is_none_or(Outcome::retriable) {
            to_resend.insert(key);
        }
    }
}

/// A broker writes an idempotent producer's batches of a partition only in sequence
/// order, so a batch written says that every batch of the partition sent before it was
/// written too: one in doubt (its answer lost with a connection) is written. Resending it
/// instead could reach the broker after it has forgotten it (it remembers the last five)
/// and be refused, and then written twice by the host's retry.
fn written_up_to(batches: &[PartitionBatch], outcome: &mut [Option<Outcome>]) {
    let mut written_later: HashSet<(&str, i32)> = HashSet::new();
    for (b, o) in batches.iter().zip(outcome.iter_mut()).rev() {
        if b.base_sequence < 0 {
            continue;
        }
        let key = (b.topic.as_str(), b.partition);
        match o {
            Some(Outcome::Written) => drop(written_later.insert(key)),
            Some(Outcome::InDoubt(_)) if written_later.contains(&key) => *o = Some(Outcome::Written),
            _ => {}
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
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;
    use crate::kafka::client::ClientOptions;
    use crate::kafka::client::scripted::{self, Broker};
    use crate::kafka::network::Security;
    use crate::kafka::protocol::batch;
    use crate::kafka::protocol::compression::Compression;

    fn batch(value: &str) -> PartitionBatch {
        let mut record = [batch::tests::record(0, value)];
        PartitionBatch {
            topic: scripted::TOPIC.into(),
            partition: 0,
            records: batch::encode(&mut record, -1, Compression::None).unwrap(),
            count: 1,
            base_sequence: -1,
        }
    }

    /// acks=0: a batch counts as written once on the wire of the connection it was queued
    /// on. That connection broke and a later batch went out on a new one: the first batch
    /// is in doubt, not written.
    #[test]
    fn with_acks_0_a_batch_on_a_connection_that_broke_is_in_doubt() {
        let broker = Broker::start(1, HashMap::new());
        let mut cluster = Cluster::connect(ClientOptions {
            bootstrap: vec![broker.addr.clone()],
            client_id: "test".into(),
            request_timeout: Duration::from_secs(10),
            security: Security::default(),
        })
        .unwrap();
        cluster.refresh(&[scripted::TOPIC]).unwrap();
        let mut flight = Flight::new(Acks::None, 5, Instant::now() + Duration::from_secs(10));
        flight.send(&mut cluster, batch("lost"));
        let conn = cluster.existing(ConnKey::Broker(0)).unwrap();
        conn.fail(Error::Connection("cut".into()));
        flight.send(&mut cluster, batch("sent"));
        let (_, outcome) = flight.finish(&mut cluster);
        assert!(matches!(outcome[0], Outcome::InDoubt(_)), "{:?}", outcome[0]);
        assert!(matches!(outcome[1], Outcome::Written), "{:?}", outcome[1]);
    }

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
