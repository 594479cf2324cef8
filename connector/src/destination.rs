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
use crate::kafka::client::producer::{self, Outcome, PartitionBatch};
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

/// A write's batches, the first record that could not be sent, and the ledger entries
/// the write did not get to.
struct Plan {
    batches: Vec<Planned>,
    failure: Option<(usize, Error)>,
    leftover: VecDeque<LedgerEntry>,
}

/// What a write does with each of its records.
#[derive(Clone, Copy, PartialEq)]
enum Fate {
    Written,
    NotWritten,
    InDoubt(usize),
}

impl Destination {
    /// Connects, makes sure the configured topic exists (creating it if allowed), and with
    /// acks=all gets a producer id.
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
        let plan = self.plan(records, &mut fates, &mut prints, deadline);
        let mut failure = plan.failure;
        let sent = self.send(plan.batches, deadline, &mut fates, &mut failure);
        let written = fates.iter().position(|f| *f != Fate::Written).unwrap_or(total);
        if written < total {
            // Only now are fingerprints needed: for what lies past the reported prefix.
            for p in &sent {
                for (i, r) in p.members.iter().zip(&p.records).filter(|(i, _)| **i >= written) {
                    prints[*i] = fingerprint(&p.topic, r);
                }
            }
        }
        self.ledger = beyond(written, &fates, &prints).chain(plan.leftover).collect();
        let error = (written < total).then(|| first_error(failure, written));
        WriteOutcome { written, error }
    }

    /// Maps and partitions records into batches, in order, stopping at the first record
    /// that cannot be sent (the error is returned with its index). Records the ledger
    /// says are written already are marked so and left out.
    fn plan(
        &mut self,
        records: Vec<Record>,
        fates: &mut [Fate],
        prints: &mut [u64],
        deadline: Instant,
    ) -> Plan {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut planned: Vec<Planned> = Vec::new();
        let mut open: HashMap<(Rc<str>, i32), usize> = HashMap::new();
        let mut sticky: HashMap<Rc<str>, i32> = HashMap::new();
        let mut old_ledger = std::mem::take(&mut self.ledger);
        for (i, rec) in records.into_iter().enumerate() {
            let placed = self.place(rec, now_ms, &mut sticky, deadline);
            let (topic, partition, kafka) = match placed {
                Ok(p) => p,
                // The host sends the rest again: what the ledger still holds stays.
                Err(e) => {
                    return Plan {
                        batches: planned,
                        failure: Some((i, e)),
                        leftover: old_ledger,
                    };
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
                return Plan {
                    batches: planned,
                    failure: Some((i, Error::RecordTooLarge(msg))),
                    leftover: old_ledger,
                };
            }
            let key = (topic, partition);
            let slot = match open.get(&key) {
                Some(&b) if planned[b].bytes + size <= self.config.batch_bytes => b,
                _ => {
                    planned.push(Planned {
                        topic: key.0.clone(),
                        partition,
                        members: vec![],
                        records: vec![],
                        bytes: 0,
                    });
                    open.insert(key, planned.len() - 1);
                    planned.len() - 1
                }
            };
            let b = &mut planned[slot];
            b.members.push(i);
            b.records.push(kafka);
            b.bytes += size;
        }
        Plan {
            batches: planned,
            failure: None,
            leftover: VecDeque::new(),
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

    /// Encodes and sends the planned batches, each as soon as it is encoded. A partition's
    /// batches go one after the other (the next only once the previous is written);
    /// partitions go in parallel. Returns the batches sent.
    fn send(
        &mut self,
        planned: Vec<Planned>,
        deadline: Instant,
        fates: &mut [Fate],
        failure: &mut Option<(usize, Error)>,
    ) -> Vec<Planned> {
        let mut chains: BTreeMap<(Rc<str>, i32), VecDeque<Planned>> = BTreeMap::new();
        for p in planned {
            chains
                .entry((p.topic.clone(), p.partition))
                .or_default()
                .push_back(p);
        }
        let mut sent = Vec::new();
        while !chains.is_empty() {
            let mut round = Vec::new();
            let mut unencodable = Vec::new();
            let (idem, compression) = (self.idempotence.as_ref(), self.config.compression);
            let encoded = chains.iter_mut().filter_map(|(key, chain)| {
                let mut p = chain.pop_front()?;
                match encode(idem, compression, &mut p) {
                    Ok(b) => {
                        round.push((key.clone(), p));
                        Some(b)
                    }
                    Err(e) => {
                        unencodable.push((key.clone(), p.members[0], e));
                        None
                    }
                }
            });
            let (batches, outcomes) =
                producer::produce(&mut self.cluster, encoded, self.config.acks, deadline);
            for (key, first, e) in unencodable {
                keep_first(failure, first, e);
                chains.remove(&key);
            }
            for ((key, p), (batch, outcome)) in round.into_iter().zip(batches.into_iter().zip(outcomes)) {
                if !self.settled(&p, batch, outcome, fates, failure) {
                    chains.remove(&key); // the rest of this partition waits for the host's retry
                }
                sent.push(p);
            }
            chains.retain(|_, c| !c.is_empty());
        }
        sent
    }

    /// Records a batch's outcome; true if its partition may go on with its next batch.
    fn settled(
        &mut self,
        p: &Planned,
        batch: PartitionBatch,
        outcome: Outcome,
        fates: &mut [Fate],
        failure: &mut Option<(usize, Error)>,
    ) -> bool {
        match outcome {
            Outcome::Written => {
                if let Some(idem) = &mut self.idempotence {
                    idem.advance(&(batch.topic.clone(), batch.partition), batch.count);
                }
                p.members.iter().for_each(|i| fates[*i] = Fate::Written);
                true
            }
            Outcome::InDoubt(e) if self.idempotence.is_some() => {
                let id = self
                    .idempotence
                    .as_mut()
                    .map(|idem| idem.hold(batch))
                    .unwrap_or_default();
                p.members.iter().for_each(|i| fates[*i] = Fate::InDoubt(id));
                keep_first(failure, p.members[0], e);
                false
            }
            Outcome::Failed(e) | Outcome::InDoubt(e) => {
                self.reset_if_needed(&e);
                keep_first(failure, p.members[0], e);
                false
            }
        }
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
        let (ids, held): (Vec<usize>, Vec<PartitionBatch>) =
            std::mem::take(&mut idem.in_doubt).into_iter().unzip();
        let (batches, outcomes) = producer::produce(&mut self.cluster, held, self.config.acks, deadline);
        let mut still = None;
        for ((id, batch), outcome) in ids.into_iter().zip(batches).zip(outcomes) {
            match outcome {
                Outcome::Written => {
                    self.idempotence
                        .as_mut()
                        .expect("checked above")
                        .advance(&(batch.topic.clone(), batch.partition), batch.count);
                    self.ledger
                        .iter_mut()
                        .filter(|e| e.in_doubt == Some(id))
                        .for_each(|e| e.in_doubt = None);
                }
                Outcome::Failed(e) if !e.is_retriable() => {
                    self.reset_if_needed(&e);
                    self.ledger.retain(|e| e.in_doubt != Some(id));
                }
                Outcome::Failed(e) | Outcome::InDoubt(e) => {
                    self.idempotence
                        .as_mut()
                        .expect("checked above")
                        .in_doubt
                        .insert(id, batch);
                    still.get_or_insert(e);
                }
            }
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

/// Encodes a planned batch: the producer id, epoch and sequence numbers when idempotent.
fn encode(idem: Option<&Idempotence>, compression: Compression, p: &mut Planned) -> Result<PartitionBatch> {
    let base_sequence = match idem {
        Some(idem) => {
            for r in &mut p.records {
                r.producer_id = idem.producer_id;
                r.producer_epoch = idem.epoch;
            }
            idem.sequence(&(p.topic.to_string(), p.partition))
        }
        None => -1,
    };
    let records = batch::encode(&mut p.records, base_sequence, compression)?;
    Ok(PartitionBatch {
        topic: p.topic.to_string(),
        partition: p.partition,
        records,
        count: p.records.len(),
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
/// `create` says how. Missing and not to be created: an error naming it, not retriable.
fn existing(
    cluster: &mut Cluster,
    name: &str,
    create: Option<NewTopic>,
    deadline: Instant,
) -> Result<TopicMeta> {
    topics::ensure(cluster, name, create, deadline)?
        .ok_or_else(|| topics::missing(name, &format!("{ALLOW_AUTO_TOPIC_CREATION} is false")))
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
