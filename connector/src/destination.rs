//! The destination: maps records to Kafka, partitions them, writes each write call's
//! batch and reports exactly how many records, from the start, are durably written.
//!
//! With acks=all the producer is idempotent: every batch carries the producer id and
//! per-partition sequence numbers, so a resent batch is written once. Two kinds of record
//! can be written without being reported written, and both are remembered so the host's
//! retry of them does not write them twice:
//! - written records after the first failed one (another partition's batch succeeded):
//!   they go into the `ledger`, and the next write skips them when they come again;
//! - batches sent but never answered (in doubt): they are resent, same bytes and same
//!   sequence numbers, before the next write; the broker either writes them or answers
//!   that it already has them. Then their records join the ledger.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kafka_protocol::records::Record as KafkaRecord;

use crate::config::{ALLOW_AUTO_TOPIC_CREATION, Acks, DestinationConfig, Partitioner};
use crate::error::{Error, Result};
use crate::kafka::client::cluster::{Cluster, TopicMeta};
use crate::kafka::client::partitioner::{self, Sticky};
use crate::kafka::client::producer::{self, Flight, Outcome, PartitionBatch};
use crate::kafka::client::topics::{self, NewTopic};
use crate::kafka::protocol::batch;
use crate::kafka::protocol::compression::Compression;
use crate::mapping;
use crate::record::{COLLECTION, PARTITION, Record};

/// The most topics one destination writes to when records name them (`opencdc.collection`):
/// the names come from the records, so a tenant could otherwise make it look up, create
/// and keep metadata for any number of them. Well above one topic per table of a large
/// database; about 1 KiB each with a few partitions.
pub const MAX_TOPICS: usize = 10_000;

/// Bytes after which an idempotent producer sends a partition's batch while the write
/// goes on mapping and encoding the rest, so the broker works meanwhile.
const SEND_AT: usize = 128 << 10;
/// Batches of one partition in flight at once with idempotence: a Kafka broker keeps the
/// last five of each producer and partition to recognise a resend (KIP-98, as amended
/// for `max.in.flight.requests.per.connection` <= 5).
const MAX_IN_FLIGHT: usize = 5;

/// How a write ended: `written` records from the start are written; `error` is why the
/// next one was not.
#[derive(Debug)]
pub struct WriteOutcome {
    pub written: usize,
    pub error: Option<Error>,
}

pub struct Destination {
    config: DestinationConfig,
    /// The configured topic, shared by every record that goes to it.
    topic: Option<Rc<str>>,
    /// The topics records named and that exist, each name once (at most `MAX_TOPICS`).
    collections: HashSet<Rc<str>>,
    cluster: Cluster,
    sticky: Sticky,
    idempotence: Option<Idempotence>,
    ledger: VecDeque<LedgerEntry>,
}

/// The idempotent producer's identity and where each partition's sequence stands.
struct Idempotence {
    producer_id: i64,
    epoch: i16,
    next_sequence: HashMap<(String, i32), i32>,
    /// Batches sent but never answered, by id, to be settled before the next write.
    in_doubt: BTreeMap<usize, PartitionBatch>,
    next_id: usize,
}

/// A record written but not reported written. `in_doubt` names the batch it is waiting for.
struct LedgerEntry {
    fingerprint: u64,
    in_doubt: Option<usize>,
}

/// One partition batch of a write, before encoding.
struct Planned {
    topic: Rc<str>,
    partition: i32,
    /// Index of each record in the write's batch.
    members: Vec<usize>,
    records: Vec<KafkaRecord>,
    bytes: usize,
}

/// A write's batches on their way: the flight and, in the same order, the batches sent.
struct Sending {
    /// When the write must be done, topics created included.
    deadline: Instant,
    flight: Flight,
    sent: Vec<Planned>,
    /// Each partition's next sequence when the write sent its first batch to it.
    first_sequence: HashMap<(Rc<str>, i32), i32>,
    /// Partitions that take no more batches in this write.
    stopped: HashSet<(Rc<str>, i32)>,
    /// The first record not sent, or whose batch failed, and why.
    failure: Option<(usize, Error)>,
}

impl Sending {
    fn new(acks: Acks, max_in_flight: usize, deadline: Instant) -> Self {
        Sending {
            deadline,
            flight: Flight::new(acks, max_in_flight, deadline),
            sent: Vec::new(),
            first_sequence: HashMap::new(),
            stopped: HashSet::new(),
            failure: None,
        }
    }

    /// Whether `key`'s batches so far forbid sending it another: one failed for good, or,
    /// without idempotence, one was not written.
    fn blocked(&self, key: &(Rc<str>, i32), idempotent: bool) -> bool {
        let outcomes = self
            .sent
            .iter()
            .enumerate()
            .filter(|(_, p)| p.partition == key.1 && p.topic == key.0)
            .filter_map(|(i, _)| self.flight.outcome(i));
        let mut outcomes = outcomes;
        match idempotent {
            true => outcomes.any(|o| matches!(o, Outcome::Failed(e) if !e.is_retriable())),
            false => outcomes.any(|o| !matches!(o, Outcome::Written)),
        }
    }
}

/// What a write does with each of its records.
#[derive(Clone, Copy, PartialEq)]
enum Fate {
    Written,
    NotWritten,
    InDoubt(usize),
}

impl Destination {
    /// Connects, checks the configured topic exists, and with acks=all gets a producer id.
    pub fn open(config: DestinationConfig) -> Result<Self> {
        let deadline = Instant::now() + config.delivery_timeout;
        let mut cluster = Cluster::connect(config.client.options(config.delivery_timeout))?;
        if let Some(topic) = &config.topic {
            existing(&mut cluster, topic, config.topic_creation, deadline)?;
        }
        let idempotence = match config.acks {
            Acks::All => Some(Idempotence::new(&mut cluster)?),
            _ => None,
        };
        Ok(Destination {
            topic: config.topic.as_deref().map(Rc::from),
            collections: HashSet::new(),
            config,
            cluster,
            sticky: Sticky::default(),
            idempotence,
            ledger: VecDeque::new(),
        })
    }

    /// Batches of one partition in flight at once: up to `MAX_IN_FLIGHT` with idempotence
    /// (the broker checks their sequence numbers, so they are written in order or not at
    /// all), one without (a batch sent behind one that fails could be written before
    /// that one's resend).
    fn max_in_flight(&self) -> usize {
        match self.idempotence {
            Some(_) => MAX_IN_FLIGHT,
            None => 1,
        }
    }

    pub fn write(&mut self, records: Vec<Record>) -> WriteOutcome {
        let deadline = Instant::now() + self.config.delivery_timeout;
        if let Err(e) = self.settle_in_doubt(deadline) {
            return WriteOutcome {
                written: 0,
                error: Some(e),
            };
        }
        let total = records.len();
        let mut fates = vec![Fate::NotWritten; total];
        let mut prints = vec![0u64; total];
        let mut sending = Sending::new(self.config.acks, self.max_in_flight(), deadline);
        let leftover = self.plan(records, &mut fates, &mut prints, &mut sending);
        let (sent, mut failure) = self.settle_write(sending, &mut fates);
        let written = fates.iter().position(|f| *f != Fate::Written).unwrap_or(total);
        if written < total {
            // Only now are fingerprints needed: for what lies past the reported prefix.
            for p in &sent {
                for (i, r) in p.members.iter().zip(&p.records).filter(|(i, _)| **i >= written) {
                    prints[*i] = fingerprint(&p.topic, r);
                }
            }
        }
        self.ledger = beyond(written, &fates, &prints).chain(leftover).collect();
        let error = (written < total).then(|| first_error(failure.take(), written));
        WriteOutcome { written, error }
    }

    /// Maps and partitions records into batches, in order, and sends each batch as it
    /// closes (see `SEND_AT`), stopping at the first record that cannot be sent (its error
    /// goes into `sending` with its index). Records the ledger says are written already
    /// are marked so and left out. Returns the ledger entries the write did not get to.
    fn plan(
        &mut self,
        records: Vec<Record>,
        fates: &mut [Fate],
        prints: &mut [u64],
        sending: &mut Sending,
    ) -> VecDeque<LedgerEntry> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let send_at = match self.idempotence {
            Some(_) => SEND_AT.min(self.config.batch_bytes),
            None => self.config.batch_bytes,
        };
        let mut open: HashMap<(Rc<str>, i32), Planned> = HashMap::new();
        let mut sticky: HashMap<Rc<str>, i32> = HashMap::new();
        let mut old_ledger = std::mem::take(&mut self.ledger);
        let mut stopped = false;
        for (i, rec) in records.into_iter().enumerate() {
            let (topic, partition, kafka) = match self.place(rec, now_ms, &mut sticky, sending.deadline) {
                Ok(p) => p,
                Err(e) => {
                    keep_first(&mut sending.failure, i, e);
                    stopped = true;
                    break;
                }
            };
            if let Some(entry) = old_ledger.front() {
                prints[i] = fingerprint(&topic, &kafka);
                if entry.fingerprint == prints[i] && entry.in_doubt.is_none() {
                    old_ledger.pop_front();
                    fates[i] = Fate::Written;
                    continue;
                }
            }
            let size = record_size(&kafka);
            if size > self.config.batch_bytes {
                let msg = format!(
                    "record {i} for {topic}-{partition} is about {size} bytes; batchBytes allows {}",
                    self.config.batch_bytes
                );
                keep_first(&mut sending.failure, i, Error::RecordTooLarge(msg));
                stopped = true;
                break;
            }
            let key = (topic, partition);
            if open
                .get(&key)
                .is_some_and(|b| b.bytes + size > self.config.batch_bytes)
            {
                let full = open.remove(&key).expect("checked above");
                self.dispatch(sending, full);
            }
            let b = open.entry(key.clone()).or_insert_with(|| Planned {
                topic: key.0.clone(),
                partition,
                members: vec![],
                records: vec![],
                bytes: 0,
            });
            b.members.push(i);
            b.records.push(kafka);
            b.bytes += size;
            if b.bytes >= send_at {
                let full = open.remove(&key).expect("just filled");
                self.dispatch(sending, full);
            }
        }
        // In the order of their first records, so the write's first records go first.
        let mut rest: Vec<Planned> = open.into_values().collect();
        rest.sort_by_key(|p| p.members[0]);
        for p in rest {
            self.dispatch(sending, p);
        }
        // The host sends the rest again: what the ledger still holds stays.
        match stopped {
            true => old_ledger,
            false => VecDeque::new(),
        }
    }

    /// Encodes a closed batch and sends it, once its partition has room in flight (see
    /// `max_in_flight`). A partition whose batch
    /// failed for good (without idempotence: was not written) takes no more in this
    /// write: its records stay unwritten for the host to send again.
    fn dispatch(&mut self, sending: &mut Sending, mut p: Planned) {
        let key = (p.topic.clone(), p.partition);
        if sending.stopped.contains(&key) {
            return;
        }
        let idempotent = self.idempotence.is_some();
        sending
            .flight
            .wait_for_room(&mut self.cluster, &p.topic, p.partition);
        if sending.blocked(&key, idempotent) {
            sending.stopped.insert(key);
            return;
        }
        if let Some(idem) = &self.idempotence {
            let seq = idem.sequence(&(p.topic.to_string(), p.partition));
            sending.first_sequence.entry(key.clone()).or_insert(seq);
        }
        match encode(self.idempotence.as_mut(), self.config.compression, &mut p) {
            Ok(batch) => {
                sending.flight.send(&mut self.cluster, batch);
                sending.sent.push(p);
            }
            Err(e) => {
                keep_first(&mut sending.failure, p.members[0], e);
                sending.stopped.insert(key);
            }
        }
    }

    /// The topic, partition and Kafka record for `rec`.
    fn place(
        &mut self,
        rec: Record,
        now_ms: i64,
        sticky: &mut HashMap<Rc<str>, i32>,
        deadline: Instant,
    ) -> Result<(Rc<str>, i32, KafkaRecord)> {
        let (topic, t) = match self.topic.clone() {
            Some(topic) => {
                let t = self.topic_meta(&topic, deadline)?;
                (topic, t)
            }
            None => {
                let name = meta(&rec, COLLECTION).ok_or_else(|| {
                    Error::InvalidRecord(format!(
                        "no topic is configured and the record has no {COLLECTION}"
                    ))
                })?;
                self.collection(name, deadline)?
            }
        };
        let from_metadata = match self.config.partitioner {
            Partitioner::Metadata => meta(&rec, PARTITION).map(str::to_string),
            _ => None,
        };
        let kafka = mapping::to_kafka(rec, now_ms, &self.config.headers, self.config.value_format)?;
        let partition = match (self.config.partitioner, from_metadata) {
            (Partitioner::Fixed(p), _) => check_partition(&t, p)?,
            (_, Some(p)) => check_partition(&t, p.parse().map_err(|_| bad_partition(&topic, &p))?)?,
            _ => match &kafka.key {
                Some(key) => partitioner::for_key(key, t.leaders.len()),
                None => *sticky
                    .entry(topic.clone())
                    .or_insert_with(|| self.sticky.advance(t.leaders.len())),
            },
        };
        Ok((topic, partition, kafka))
    }

    /// A record's collection as its topic: a name Kafka takes, among the first `MAX_TOPICS`
    /// this destination writes to, existing or created.
    fn collection(&mut self, name: &str, deadline: Instant) -> Result<(Rc<str>, TopicMeta)> {
        if let Some(topic) = self.collections.get(name).cloned() {
            let t = self.topic_meta(&topic, deadline)?;
            return Ok((topic, t));
        }
        admit(&self.collections, name)?;
        let t = self.topic_meta(name, deadline)?;
        let topic: Rc<str> = Rc::from(name);
        self.collections.insert(topic.clone());
        Ok((topic, t))
    }

    /// The topic's partitions and leaders: as last seen, else looked up (and created).
    fn topic_meta(&mut self, name: &str, deadline: Instant) -> Result<TopicMeta> {
        match self.cluster.known(name) {
            Some(t) => Ok(t.clone()),
            None => existing(&mut self.cluster, name, self.config.topic_creation, deadline),
        }
    }

    /// Waits for the write's batches (retrying what failed retriably) and files each
    /// record's fate. Per partition, in order: written batches are written; the first that
    /// was not, with idempotence, is held when in doubt (resent before the next write),
    /// and so are the in-doubt ones right behind it; once one failed, the partition's
    /// later batches count as not written (the broker takes no sequence past a gap).
    /// Each partition's next sequence follows its last batch written or held. Returns
    /// the batches sent and the first failure.
    fn settle_write(
        &mut self,
        sending: Sending,
        fates: &mut [Fate],
    ) -> (Vec<Planned>, Option<(usize, Error)>) {
        let Sending {
            flight,
            sent,
            first_sequence,
            mut failure,
            ..
        } = sending;
        let (batches, outcomes) = flight.finish(&mut self.cluster);
        // Per partition: whether a batch failed, and where its sequence goes on.
        let mut state: HashMap<(Rc<str>, i32), (bool, Option<i32>)> = HashMap::new();
        let mut reset = None;
        for ((p, batch), outcome) in sent.iter().zip(batches).zip(outcomes) {
            let (failed, next) = state.entry((p.topic.clone(), p.partition)).or_default();
            let end = (batch.base_sequence.wrapping_add(batch.count as i32)) & i32::MAX;
            match outcome {
                Outcome::Written => {
                    p.members.iter().for_each(|i| fates[*i] = Fate::Written);
                    *next = Some(end);
                }
                Outcome::InDoubt(e) if !*failed && self.idempotence.is_some() => {
                    let idem = self.idempotence.as_mut().expect("checked above");
                    let id = idem.hold(batch);
                    p.members.iter().for_each(|i| fates[*i] = Fate::InDoubt(id));
                    keep_first(&mut failure, p.members[0], e);
                    *next = Some(end);
                }
                Outcome::Failed(e) | Outcome::InDoubt(e) => {
                    if !*failed && reset.is_none() && producer::needs_new_producer_id(&e) {
                        reset = Some(e.clone());
                    }
                    *failed = true;
                    keep_first(&mut failure, p.members[0], e);
                }
            }
        }
        if let Some(idem) = &mut self.idempotence {
            for (key, first) in first_sequence {
                let next = state.get(&key).and_then(|s| s.1).unwrap_or(first);
                idem.next_sequence.insert((key.0.to_string(), key.1), next);
            }
        }
        if let Some(e) = reset {
            self.reset_if_needed(&e);
        }
        (sent, failure)
    }

    /// Resends in-doubt batches. Written (or already there): their records' ledger entries
    /// are confirmed. Refused for good: they were not written, and leave the ledger.
    /// Still no answer: the write fails, before anything new is sent.
    fn settle_in_doubt(&mut self, deadline: Instant) -> Result<()> {
        let Some(idem) = &mut self.idempotence else {
            return Ok(());
        };
        if idem.in_doubt.is_empty() {
            return Ok(());
        }
        // Held in the order they were sent: each partition's in sequence order.
        let (ids, held): (Vec<usize>, Vec<PartitionBatch>) =
            std::mem::take(&mut idem.in_doubt).into_iter().unzip();
        let (acks, max) = (self.config.acks, self.max_in_flight());
        let (batches, outcomes) = producer::produce(&mut self.cluster, held, acks, max, deadline);
        let mut still = None;
        let mut refused: HashMap<(String, i32), Error> = HashMap::new();
        for ((id, batch), outcome) in ids.into_iter().zip(batches).zip(outcomes) {
            let idem = self.idempotence.as_mut().expect("checked above");
            match outcome {
                Outcome::Written => self
                    .ledger
                    .iter_mut()
                    .filter(|e| e.in_doubt == Some(id))
                    .for_each(|e| e.in_doubt = None),
                Outcome::Failed(e) if !e.is_retriable() => {
                    // Not written, nor anything of its partition behind it: the
                    // partition's sequence goes on from its first record.
                    let key = (batch.topic.clone(), batch.partition);
                    if let std::collections::hash_map::Entry::Vacant(first) = refused.entry(key.clone()) {
                        idem.next_sequence.insert(key, batch.base_sequence);
                        first.insert(e);
                    }
                    self.ledger.retain(|e| e.in_doubt != Some(id));
                }
                Outcome::Failed(e) | Outcome::InDoubt(e) => {
                    idem.in_doubt.insert(id, batch);
                    still.get_or_insert(e);
                }
            }
        }
        if let Some(e) = refused.into_values().find(producer::needs_new_producer_id) {
            self.reset_if_needed(&e);
        }
        match still {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// A producer whose id or sequences the broker no longer accepts starts over.
    fn reset_if_needed(&mut self, e: &Error) {
        if self.idempotence.is_some() && producer::needs_new_producer_id(e) {
            match Idempotence::new(&mut self.cluster) {
                Ok(fresh) => self.idempotence = Some(fresh),
                Err(err) => crate::log::warn(&format!("cannot get a new producer id: {err}")),
            }
        }
    }

    pub fn teardown(&mut self) {
        self.cluster.close();
    }
}

impl Idempotence {
    fn new(cluster: &mut Cluster) -> Result<Self> {
        let (producer_id, epoch) = producer::init_producer_id(cluster)?;
        Ok(Idempotence {
            producer_id,
            epoch,
            next_sequence: HashMap::new(),
            in_doubt: BTreeMap::new(),
            next_id: 0,
        })
    }

    fn sequence(&self, key: &(String, i32)) -> i32 {
        self.next_sequence.get(key).copied().unwrap_or(0)
    }

    fn advance(&mut self, key: &(String, i32), count: usize) {
        let seq = self.next_sequence.entry(key.clone()).or_insert(0);
        *seq = seq.wrapping_add(count as i32) & i32::MAX;
    }

    fn hold(&mut self, batch: PartitionBatch) -> usize {
        self.next_id += 1;
        self.in_doubt.insert(self.next_id, batch);
        self.next_id
    }
}

/// Ledger entries for the records after the reported prefix that were written or are in
/// doubt, in batch order.
fn beyond<'a>(
    written: usize,
    fates: &'a [Fate],
    prints: &'a [u64],
) -> impl Iterator<Item = LedgerEntry> + 'a {
    (written..fates.len()).filter_map(move |i| match fates[i] {
        Fate::Written => Some(LedgerEntry {
            fingerprint: prints[i],
            in_doubt: None,
        }),
        Fate::InDoubt(id) => Some(LedgerEntry {
            fingerprint: prints[i],
            in_doubt: Some(id),
        }),
        Fate::NotWritten => None,
    })
}

/// Encodes a planned batch: the producer id, epoch and the partition's next sequence
/// numbers when idempotent (taken: the next batch of the partition follows this one).
fn encode(
    idem: Option<&mut Idempotence>,
    compression: Compression,
    p: &mut Planned,
) -> Result<PartitionBatch> {
    let key = (p.topic.to_string(), p.partition);
    let base_sequence = match &idem {
        Some(idem) => {
            for r in &mut p.records {
                r.producer_id = idem.producer_id;
                r.producer_epoch = idem.epoch;
            }
            idem.sequence(&key)
        }
        None => -1,
    };
    let records = batch::encode(&mut p.records, base_sequence, compression)?;
    if let Some(idem) = idem {
        idem.advance(&key, p.records.len());
    }
    Ok(PartitionBatch {
        topic: key.0,
        partition: p.partition,
        records,
        count: p.records.len(),
        base_sequence,
    })
}

/// Whether a collection no record named before may be a topic of this destination, asked
/// before the broker is: a name Kafka takes, and room for one more topic.
fn admit(collections: &HashSet<Rc<str>>, name: &str) -> Result<()> {
    if let Some(why) = topics::name_problem(name) {
        return Err(Error::InvalidRecord(format!("{COLLECTION} {why}")));
    }
    if collections.len() >= MAX_TOPICS {
        return Err(Error::InvalidRecord(format!(
            "{COLLECTION} \"{name}\" names one more topic, and this destination already \
             writes to {MAX_TOPICS} topics, the most it takes"
        )));
    }
    Ok(())
}

/// The topic's partitions and leaders, the topic created first if it is missing and
/// `create` says how. Not to be created, it is waited for a moment (Metadata may lag
/// behind another client's creation); still missing, an error naming it, not retriable.
fn existing(
    cluster: &mut Cluster,
    name: &str,
    create: Option<NewTopic>,
    deadline: Instant,
) -> Result<TopicMeta> {
    let why = || format!("{ALLOW_AUTO_TOPIC_CREATION} is false");
    match create {
        Some(_) => {
            topics::ensure(cluster, name, create, deadline)?.ok_or_else(|| topics::missing(name, &why()))
        }
        None => topics::wait_for(cluster, name, &why(), deadline),
    }
}

fn meta<'a>(rec: &'a Record, key: &str) -> Option<&'a str> {
    rec.metadata
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn check_partition(t: &TopicMeta, p: i32) -> Result<i32> {
    if p >= 0 && (p as usize) < t.leaders.len() {
        Ok(p)
    } else {
        Err(Error::InvalidRecord(format!(
            "{} has no partition {p} (it has {})",
            t.name,
            t.leaders.len()
        )))
    }
}

fn bad_partition(topic: &str, p: &str) -> Error {
    Error::InvalidRecord(format!(
        "{PARTITION} \"{p}\" is not a partition number of {topic}"
    ))
}

/// Identifies a record across a host's retry: topic, key, value and headers (not the
/// timestamp, which is the write time when the record has none).
fn fingerprint(topic: &str, r: &KafkaRecord) -> u64 {
    let mut h = DefaultHasher::new();
    topic.hash(&mut h);
    r.key.hash(&mut h);
    r.value.hash(&mut h);
    for (k, v) in &r.headers {
        k.as_bytes().hash(&mut h);
        v.hash(&mut h);
    }
    h.finish()
}

/// A record's size in a batch, close enough to keep batches under `batchBytes`.
fn record_size(r: &KafkaRecord) -> usize {
    const OVERHEAD: usize = 24;
    let len = |b: &Option<bytes::Bytes>| b.as_ref().map_or(0, |b| b.len());
    let headers: usize = r.headers.iter().map(|(k, v)| k.len() + len(v) + 10).sum();
    OVERHEAD + len(&r.key) + len(&r.value) + headers
}

fn keep_first(slot: &mut Option<(usize, Error)>, index: usize, e: Error) {
    if slot.as_ref().is_none_or(|(i, _)| index < *i) {
        *slot = Some((index, e));
    }
}

/// The error of the first record not written.
fn first_error(failure: Option<(usize, Error)>, written: usize) -> Error {
    match failure {
        Some((_, e)) => e,
        None => Error::Other(format!("record {written} was not written")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::client::scripted::{self, Broker};

    /// A destination on `broker` with batches of about ten records of `value` below.
    fn destination(broker: &Broker, acks: &str) -> Destination {
        let settings = [
            ("servers", broker.addr.as_str()),
            ("topic", scripted::TOPIC),
            ("acks", acks),
            ("compression", "none"),
            ("batchBytes", "1500"),
            ("partitioner", "fixed"),
            ("partition", "0"),
            ("deliveryTimeout", "20s"),
        ];
        let raw: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Destination::open(DestinationConfig::parse(&raw).unwrap()).unwrap()
    }

    fn values(range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
        range.map(|i| format!("{i:0>100}").into_bytes()).collect()
    }

    fn records(values: &[Vec<u8>]) -> Vec<Record> {
        values
            .iter()
            .map(|v| crate::record::Record {
                position: vec![],
                operation: crate::record::Operation::Create,
                metadata: vec![],
                key: None,
                before: None,
                after: Some(crate::record::Data::Raw(v.clone())),
            })
            .collect()
    }

    /// Several batches of one partition are in flight; the first is refused retriably
    /// (NOT_LEADER_OR_FOLLOWER), so the broker refuses those behind it as out of order.
    /// They are sent again in order, never more than five at once (the retry round holds
    /// to that too): every record written once, in order.
    #[test]
    fn batches_behind_a_retried_one_are_resent_in_order() {
        let broker = Broker::start(1, HashMap::from([(0, 6)]));
        let mut dst = destination(&broker, "all");
        let want = values(0..90);
        let outcome = dst.write(records(&want));
        assert_eq!((outcome.written, outcome.error), (90, None));
        let most = broker.state.lock().unwrap().most_in_flight;
        assert!(
            (2..=MAX_IN_FLIGHT).contains(&most),
            "{most} batches in flight at once"
        );
        assert_eq!(broker.log(0), want);
    }

    /// Five batches in flight are written, but their answers are lost with the connection;
    /// the batches after them go out on a new one and are written. Those five are written
    /// too (the broker takes a partition's batches only in sequence order), not resent: by
    /// then the broker remembers only the last five batches, so a resend would be refused
    /// as out of order, and the host's retry of it would write those records twice.
    #[test]
    fn batches_in_doubt_before_a_written_one_are_written() {
        use scripted::{CUT, SILENT};
        let script = HashMap::from([(0, SILENT), (1, SILENT), (2, SILENT), (3, SILENT), (4, CUT)]);
        let broker = Broker::start(1, script);
        let mut dst = destination(&broker, "all");
        let want = values(0..150);
        let outcome = dst.write(records(&want));
        assert_eq!((outcome.written, outcome.error), (150, None));
        assert_eq!(broker.log(0), want);
    }

    /// The second batch of a partition is refused for good (INVALID_RECORD) while later
    /// ones are in flight: the write reports the first batch's records only, with that
    /// error, and the host's retry of the rest writes them once, in order, continuing the
    /// partition's sequence from the refused batch.
    #[test]
    fn a_batch_refused_for_good_ends_the_prefix_and_the_retry_keeps_the_order() {
        let broker = Broker::start(1, HashMap::from([(1, 87)]));
        let mut dst = destination(&broker, "all");
        let want = values(0..60);
        let outcome = dst.write(records(&want));
        assert!(outcome.written < 30, "written {}", outcome.written);
        match &outcome.error {
            Some(Error::Kafka { code: 87, .. }) => {}
            other => panic!("the refused batch's error, not its followers': {other:?}"),
        }
        the_retry_writes_the_rest_in_order(&broker, &mut dst, &want, outcome);
    }

    /// The write left a prefix written; the host's retry of the rest writes it, so the
    /// log holds every value once, in order.
    fn the_retry_writes_the_rest_in_order(
        broker: &Broker,
        dst: &mut Destination,
        want: &[Vec<u8>],
        first: WriteOutcome,
    ) {
        let written = first.written;
        assert!(written > 0 && written < want.len(), "written {written}");
        assert_eq!(broker.log(0), want[..written]);
        let retry = dst.write(records(&want[written..]));
        assert_eq!((retry.written, retry.error), (want.len() - written, None));
        assert_eq!(broker.log(0), want);
    }

    /// Without idempotence the broker does not order resends, so a partition has one
    /// batch in flight, and none is sent behind one that failed: the prefix ends at the
    /// failed batch (written on its resend), and the retry keeps the order.
    #[test]
    fn without_idempotence_a_partition_has_one_batch_in_flight() {
        let broker = Broker::start(1, HashMap::from([(1, 6)]));
        let mut dst = destination(&broker, "1");
        let want = values(0..60);
        let outcome = dst.write(records(&want));
        assert_eq!(broker.state.lock().unwrap().most_in_flight, 1);
        the_retry_writes_the_rest_in_order(&broker, &mut dst, &want, outcome);
    }

    /// acks=0: no answers to wait for; a partition's batches all go out, and count as
    /// written once on the wire.
    #[test]
    fn with_acks_0_every_batch_goes_out_unanswered() {
        let broker = Broker::start(1, HashMap::new());
        let mut dst = destination(&broker, "0");
        let want = values(0..60);
        let outcome = dst.write(records(&want));
        assert_eq!((outcome.written, outcome.error), (60, None));
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        while broker.log(0).len() < want.len() && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(broker.log(0), want);
    }

    #[test]
    fn the_ledger_holds_what_lies_past_the_prefix_and_was_written_or_is_in_doubt() {
        let fates = [
            Fate::Written,
            Fate::NotWritten,
            Fate::Written,
            Fate::InDoubt(7),
            Fate::NotWritten,
            Fate::Written,
        ];
        let prints = [10, 11, 12, 13, 14, 15];
        let entries: Vec<(u64, Option<usize>)> = beyond(1, &fates, &prints)
            .map(|e| (e.fingerprint, e.in_doubt))
            .collect();
        assert_eq!(entries, [(12, None), (13, Some(7)), (15, None)]);
    }

    #[test]
    fn collections_must_be_topic_names_and_their_number_is_bounded() {
        let mut seen: HashSet<Rc<str>> = HashSet::new();
        let msg = |r: Result<()>| match r {
            Err(Error::InvalidRecord(m)) => m,
            other => panic!("{other:?}"),
        };
        let bad = msg(admit(&seen, "orders/2024"));
        assert!(
            bad.starts_with("opencdc.collection \"orders/2024\" is not a Kafka topic name"),
            "{bad}"
        );
        let huge = msg(admit(&seen, &"z".repeat(1 << 20)));
        assert!(huge.len() < 200, "a long name is cut short: {} bytes", huge.len());
        seen.extend((0..MAX_TOPICS - 1).map(|i| Rc::from(format!("t{i}"))));
        admit(&seen, "one-more").unwrap();
        seen.insert(Rc::from("one-more"));
        let full = msg(admit(&seen, "beyond"));
        assert!(
            full.contains("\"beyond\"") && full.contains("10000 topics"),
            "{full}"
        );
    }

    #[test]
    fn fingerprints_ignore_the_timestamp_but_not_the_content() {
        let rec = |value: &str, ts: i64| {
            let r = crate::record::Record {
                position: vec![],
                operation: crate::record::Operation::Create,
                metadata: vec![("h".into(), "1".into())],
                key: None,
                before: None,
                after: Some(crate::record::Data::Raw(value.into())),
            };
            mapping::to_kafka(
                r,
                ts,
                &crate::config::HeaderSelection::All,
                crate::config::ValueFormat::Raw,
            )
            .unwrap()
        };
        assert_eq!(fingerprint("t", &rec("a", 1)), fingerprint("t", &rec("a", 2)));
        assert_ne!(fingerprint("t", &rec("a", 1)), fingerprint("t", &rec("b", 1)));
        assert_ne!(fingerprint("t", &rec("a", 1)), fingerprint("u", &rec("a", 1)));
    }
}
