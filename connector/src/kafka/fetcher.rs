//! Fetching: one long-poll Fetch in flight per leader at a time, kept across calls, so a
//! caller that waits briefly never loses or repeats a fetch and never spins.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ListOffsetsRequest};
use kafka_protocol::records::Record;

use super::batch;
use super::cluster::{Cluster, broker_id, topic_name};
use super::connection::Pending;
use super::errors;
use crate::error::{Error, Result};
use crate::log;

/// How long a broker may hold a Fetch when it has nothing new.
const FETCH_MAX_WAIT: Duration = Duration::from_millis(500);
const FETCH_MAX_BYTES: i32 = 50 * 1024 * 1024;
const PARTITION_MAX_BYTES: i32 = 1024 * 1024;
/// How long a leader that failed is left alone before the next fetch.
const RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// ListOffsets timestamps.
const EARLIEST: i64 = -2;
const LATEST: i64 = -1;

pub struct Fetcher {
    topic: String,
    /// Next offset to fetch, per partition.
    offsets: BTreeMap<i32, i64>,
    earliest_on_reset: bool,
    in_flight: HashMap<i32, Pending<FetchRequest>>,
    /// Leaders that failed, and when to try them again.
    backoff: HashMap<i32, Instant>,
}

impl Fetcher {
    /// Starts every partition of `topic` at `start` (where given) or else at the earliest
    /// or latest offset.
    pub fn new(
        cluster: &mut Cluster,
        topic: &str,
        start: BTreeMap<i32, i64>,
        earliest: bool,
    ) -> Result<Self> {
        let meta = cluster.topic(topic)?;
        let missing: Vec<i32> = (0..meta.leaders.len() as i32)
            .filter(|p| !start.contains_key(p))
            .collect();
        let mut offsets = list_offsets(cluster, topic, &missing, earliest)?;
        offsets.extend(start);
        Ok(Fetcher {
            topic: topic.to_string(),
            offsets,
            earliest_on_reset: earliest,
            in_flight: HashMap::new(),
            backoff: HashMap::new(),
        })
    }

    /// Records fetched by `deadline` (possibly none), with their partitions. A fetch
    /// answered empty is followed by the next at once (the broker's long poll paces them);
    /// a leader that failed is tried again after a backoff.
    pub fn poll(&mut self, cluster: &mut Cluster, deadline: Instant) -> Result<Vec<(i32, Record)>> {
        loop {
            self.send_fetches(cluster)?;
            let out = self.collect(cluster)?;
            if !out.is_empty() || Instant::now() >= deadline {
                return Ok(out);
            }
            let next_retry = self.backoff.values().min().copied().unwrap_or(deadline);
            cluster.wait(deadline.min(next_retry))?;
        }
    }

    fn send_fetches(&mut self, cluster: &mut Cluster) -> Result<()> {
        let now = Instant::now();
        self.backoff.retain(|_, until| *until > now);
        let meta = cluster.topic(&self.topic)?;
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for &p in self.offsets.keys() {
            match meta.leaders.get(p as usize) {
                Some(&leader) if leader >= 0 => by_leader.entry(leader).or_default().push(p),
                _ => {}
            }
        }
        for (leader, parts) in by_leader {
            if self.in_flight.contains_key(&leader) || self.backoff.contains_key(&leader) {
                continue;
            }
            let request = self.request(&parts);
            let sent = cluster.broker(leader).and_then(|conn| {
                let version = conn.version::<FetchRequest>()?;
                conn.send(&request, version)
            });
            match sent {
                Ok(pending) => drop(self.in_flight.insert(leader, pending)),
                Err(e) if e.is_retriable() => self.failed(cluster, leader, &e),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A leader that could not be fetched from: log, refresh metadata (leadership may have
    /// moved), and leave it alone for a while.
    fn failed(&mut self, cluster: &mut Cluster, leader: i32, e: &Error) {
        log::warn(&format!(
            "fetch from broker {leader}: {e}; retrying in {RETRY_BACKOFF:?}"
        ));
        self.backoff.insert(leader, Instant::now() + RETRY_BACKOFF);
        if let Err(e) = cluster.refresh(&[&self.topic]) {
            log::warn(&format!("metadata refresh for {}: {e}", self.topic));
        }
    }

    fn request(&self, parts: &[i32]) -> FetchRequest {
        let partitions = parts
            .iter()
            .map(|&p| {
                FetchPartition::default()
                    .with_partition(p)
                    .with_fetch_offset(self.offsets[&p])
                    .with_current_leader_epoch(-1)
                    .with_last_fetched_epoch(-1)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(PARTITION_MAX_BYTES)
            })
            .collect();
        FetchRequest::default()
            .with_replica_id(broker_id(-1))
            .with_max_wait_ms(FETCH_MAX_WAIT.as_millis() as i32)
            .with_min_bytes(1)
            .with_max_bytes(FETCH_MAX_BYTES)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(topic_name(&self.topic))
                    .with_partitions(partitions),
            ])
    }

    /// Takes every answered fetch and decodes it.
    fn collect(&mut self, cluster: &mut Cluster) -> Result<Vec<(i32, Record)>> {
        let mut out = Vec::new();
        let leaders: Vec<i32> = self.in_flight.keys().copied().collect();
        for leader in leaders {
            let answer = match cluster.connection(leader) {
                None => Some(Err(Error::Connection(format!(
                    "connection to broker {leader} lost"
                )))),
                Some(conn) => conn.take(&self.in_flight[&leader]),
            };
            let Some(answer) = answer else { continue };
            self.in_flight.remove(&leader);
            match answer {
                Ok(resp) => self.apply(cluster, resp, &mut out)?,
                // A broken connection is not the caller's error: reconnect after a backoff.
                Err(e) if e.is_retriable() => self.failed(cluster, leader, &e),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn apply(
        &mut self,
        cluster: &mut Cluster,
        resp: FetchResponse,
        out: &mut Vec<(i32, Record)>,
    ) -> Result<()> {
        errors::check(resp.error_code, "Fetch")?;
        for part in resp.responses.into_iter().flat_map(|t| t.partitions) {
            let p = part.partition_index;
            let Some(&from) = self.offsets.get(&p) else {
                continue;
            };
            let what = format!("{}-{p}", self.topic);
            match ResponseError::try_from_code(part.error_code) {
                None => {}
                Some(ResponseError::OffsetOutOfRange) => {
                    let reset = list_offsets(cluster, &self.topic, &[p], self.earliest_on_reset)?;
                    log::warn(&format!(
                        "{what}: offset {from} is out of range; resetting to {:?}",
                        reset.get(&p)
                    ));
                    self.offsets.extend(reset);
                    continue;
                }
                Some(e) if e.is_retriable() => {
                    log::warn(&format!("fetch {what}: {e}; refreshing metadata"));
                    cluster.refresh(&[&self.topic])?;
                    continue;
                }
                Some(e) => return Err(errors::kafka_error(e, &format!("Fetch {what}"))),
            }
            let Some(data) = part.records else { continue };
            let decoded = batch::decode(data, from, &what)?;
            self.offsets.insert(p, decoded.next_offset);
            out.extend(decoded.records.into_iter().map(|r| (p, r)));
        }
        Ok(())
    }
}

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
        let req = ListOffsetsRequest::default()
            .with_replica_id(broker_id(-1))
            .with_isolation_level(0)
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(topic_name(topic))
                    .with_partitions(
                        parts
                            .iter()
                            .map(|&p| {
                                ListOffsetsPartition::default()
                                    .with_partition_index(p)
                                    .with_timestamp(timestamp)
                            })
                            .collect(),
                    ),
            ]);
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
