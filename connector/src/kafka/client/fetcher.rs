//! Fetching: one long-poll Fetch in flight per leader at a time, kept across calls, so a
//! caller that waits briefly never loses or repeats a fetch and never spins. The set of
//! partitions can change (a rebalance): fetches in flight then become stale and their
//! answers are dropped.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, FetchResponse};

use super::TopicPartition;
use super::backoff::Backoff;
use super::cluster::{Cluster, ConnKey, broker_id};
use super::offsets::list_offsets;
use super::per_topic;
use crate::error::{Error, Result};
use crate::kafka::network::connection::Pending;
use crate::kafka::protocol::batch::{self, Batch};
use crate::kafka::protocol::errors;
use crate::log;

/// How long a broker may hold a Fetch when it has nothing new.
const FETCH_MAX_WAIT: Duration = Duration::from_millis(500);
/// Bytes a broker may put in one answer. It bounds the guest memory one answer takes and
/// the wait for the first record (an answer is decoded once it is whole); per-partition
/// back-pressure keeps what is buffered near `MAX_BUFFERED_PER_PARTITION` records anyway.
const FETCH_MAX_BYTES: i32 = 4 * 1024 * 1024;
const PARTITION_MAX_BYTES: i32 = 1024 * 1024;

struct InFlight {
    pending: Pending<FetchRequest>,
    /// Sent before the last reassignment: its answer is dropped.
    stale: bool,
}

#[derive(Default)]
pub struct Fetcher {
    /// Next offset to fetch, per partition this fetcher owns.
    offsets: BTreeMap<TopicPartition, i64>,
    /// The high watermark each partition's last fetch answer gave.
    high_watermarks: HashMap<TopicPartition, i64>,
    earliest_on_reset: bool,
    in_flight: HashMap<i32, InFlight>,
    /// Leaders that failed, and when to try them again.
    retry_at: HashMap<i32, Instant>,
    /// The backoff of each leader failing, until it answers again.
    backoffs: HashMap<i32, Backoff>,
    /// Turns each request's partition order (see `request`).
    rotation: usize,
}

impl Fetcher {
    /// A fetcher that, where it has no offset for a partition, starts at the earliest or
    /// the latest.
    pub fn new(earliest_on_reset: bool) -> Self {
        Fetcher {
            earliest_on_reset,
            ..Default::default()
        }
    }

    /// Owns exactly `parts` from now on, each from its offset in `start` or, without one,
    /// from the earliest or latest offset.
    pub fn assign(
        &mut self,
        cluster: &mut Cluster,
        parts: &[TopicPartition],
        start: &BTreeMap<TopicPartition, i64>,
    ) -> Result<()> {
        let mut offsets = BTreeMap::new();
        let mut missing: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in parts {
            match start.get(tp) {
                Some(o) => drop(offsets.insert(tp.clone(), *o)),
                None => missing.entry(&tp.0).or_default().push(tp.1),
            }
        }
        for (topic, ps) in missing {
            for (p, o) in list_offsets(cluster, topic, &ps, self.earliest_on_reset)? {
                offsets.insert((topic.to_string(), p), o);
            }
        }
        self.offsets = offsets;
        self.in_flight.values_mut().for_each(|f| f.stale = true);
        Ok(())
    }

    /// Records between the next offset to fetch and the high watermark, summed over the
    /// owned partitions whose high watermark is known; none when none is.
    pub fn unfetched(&self) -> Option<u64> {
        unfetched(&self.offsets, &self.high_watermarks)
    }

    /// Record batches fetched by `deadline` (possibly none), with their partitions. An
    /// answer taken empty is followed by the next fetch at once (the broker's long poll
    /// paces them), never by a wait with nothing in flight; a leader that failed is tried
    /// again after a backoff. `paused` partitions are not fetched (the caller has enough of
    /// them buffered).
    pub fn poll(
        &mut self,
        cluster: &mut Cluster,
        deadline: Instant,
        paused: &dyn Fn(&TopicPartition) -> bool,
    ) -> Result<Vec<(TopicPartition, Batch)>> {
        loop {
            let out = self.collect(cluster)?;
            if !out.is_empty() || Instant::now() >= deadline {
                return Ok(out);
            }
            self.send_fetches(cluster, paused)?;
            let next_retry = self.retry_at.values().min().copied().unwrap_or(deadline);
            cluster.wait(deadline.min(next_retry))?;
        }
    }

    /// Sends a fetch to every leader without one in flight, for the partitions not
    /// `paused`, and returns at once: the broker prepares the answer while the caller
    /// works on what it has.
    pub fn prefetch(
        &mut self,
        cluster: &mut Cluster,
        paused: &dyn Fn(&TopicPartition) -> bool,
    ) -> Result<()> {
        self.send_fetches(cluster, paused)
    }

    /// Sends a fetch to every leader without one in flight, for its partitions not
    /// `paused`. A fetch the broker could only hold (every partition in it caught up) is
    /// not sent while others of that leader are paused: it would hold back their next
    /// fetch for up to `FETCH_MAX_WAIT` once the caller has drained them.
    fn send_fetches(
        &mut self,
        cluster: &mut Cluster,
        paused: &dyn Fn(&TopicPartition) -> bool,
    ) -> Result<()> {
        let now = Instant::now();
        self.retry_at.retain(|_, until| *until > now);
        self.rotation = self.rotation.wrapping_add(1);
        let mut by_leader: BTreeMap<i32, LeaderParts> = BTreeMap::new();
        for tp in self.offsets.keys() {
            match cluster.topic(&tp.0)?.leaders.get(tp.1 as usize) {
                Some(&leader) if leader >= 0 => {
                    let parts = by_leader.entry(leader).or_default();
                    if paused(tp) {
                        parts.any_paused = true;
                    } else {
                        parts.caught_up &= self.caught_up(tp);
                        parts.fetch.push(tp);
                    }
                }
                _ => {}
            }
        }
        by_leader.retain(|leader, parts| {
            !self.in_flight.contains_key(leader)
                && !self.retry_at.contains_key(leader)
                && parts.worth_sending()
        });
        let mut failed = Vec::new();
        for (leader, parts) in by_leader {
            let request = self.request(&parts.fetch, self.rotation);
            let sent = cluster.broker(leader).and_then(|conn| {
                let version = conn.version::<FetchRequest>()?;
                conn.send(&request, version)
            });
            match sent {
                Ok(pending) => drop(self.in_flight.insert(
                    leader,
                    InFlight {
                        pending,
                        stale: false,
                    },
                )),
                Err(e) if e.is_retriable() => failed.push((leader, e)),
                Err(e) => return Err(e),
            }
        }
        for (leader, e) in failed {
            self.failed(cluster, leader, &e);
        }
        Ok(())
    }

    /// Whether the last answer for `tp` showed it fetched up to its high watermark.
    fn caught_up(&self, tp: &TopicPartition) -> bool {
        self.high_watermarks
            .get(tp)
            .is_some_and(|hw| self.offsets[tp] >= *hw)
    }

    /// A leader that could not be fetched from: log, refresh metadata (leadership may have
    /// moved), and leave it alone for a while (longer each time it fails in a row).
    fn failed(&mut self, cluster: &mut Cluster, leader: i32, e: &Error) {
        let now = Instant::now();
        let throttled = cluster.throttled_until(ConnKey::Broker(leader));
        let backoff = self.backoffs.entry(leader).or_default();
        let at = backoff.retry_at(now, throttled, None).unwrap_or(now);
        log::warn(&format!(
            "fetch from broker {leader}: {e}; retrying in {} ms",
            (at - now).as_millis()
        ));
        self.retry_at.insert(leader, at);
        let topics: Vec<&str> = self.topics();
        if let Err(e) = cluster.refresh(&topics) {
            log::warn(&format!("metadata refresh: {e}"));
        }
    }

    fn topics(&self) -> Vec<&str> {
        let mut topics: Vec<&str> = self.offsets.keys().map(|(t, _)| t.as_str()).collect();
        topics.dedup();
        topics
    }

    /// A broker fills an answer in request order until `FETCH_MAX_BYTES`: each request
    /// starts one topic and one partition further, so no partition starves the others.
    fn request(&self, parts: &[&TopicPartition], rotation: usize) -> FetchRequest {
        let partitions = parts.iter().map(|tp| {
            let part = FetchPartition::default()
                .with_partition(tp.1)
                .with_fetch_offset(self.offsets[*tp])
                .with_current_leader_epoch(-1)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(PARTITION_MAX_BYTES);
            (tp.0.as_str(), part)
        });
        let mut topics: Vec<FetchTopic> = per_topic(partitions, |name, mut ps| {
            let by = rotation % ps.len();
            ps.rotate_left(by);
            FetchTopic::default().with_topic(name).with_partitions(ps)
        });
        let by = rotation % topics.len().max(1);
        topics.rotate_left(by);
        FetchRequest::default()
            .with_replica_id(broker_id(-1))
            .with_max_wait_ms(FETCH_MAX_WAIT.as_millis() as i32)
            .with_min_bytes(1)
            .with_max_bytes(FETCH_MAX_BYTES)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(topics)
    }

    /// Takes every answered fetch and decodes it.
    fn collect(&mut self, cluster: &mut Cluster) -> Result<Vec<(TopicPartition, Batch)>> {
        let mut out = Vec::new();
        let leaders: Vec<i32> = self.in_flight.keys().copied().collect();
        for leader in leaders {
            let answer = match cluster.existing(ConnKey::Broker(leader)) {
                None => Some(Err(Error::Connection(format!(
                    "connection to broker {leader} lost"
                )))),
                Some(conn) => conn.take(&self.in_flight[&leader].pending),
            };
            let Some(answer) = answer else { continue };
            let Some(fetch) = self.in_flight.remove(&leader) else {
                continue;
            };
            if answer.is_ok() {
                self.backoffs.remove(&leader);
            }
            match answer {
                Ok(_) if fetch.stale => {}
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
        out: &mut Vec<(TopicPartition, Batch)>,
    ) -> Result<()> {
        errors::check(resp.error_code, "Fetch")?;
        let mut budget = batch::MAX_DECOMPRESSED_FETCH;
        for topic in resp.responses {
            let name = topic.topic.0.to_string();
            for part in topic.partitions {
                let tp = (name.clone(), part.partition_index);
                let Some(&from) = self.offsets.get(&tp) else {
                    continue;
                };
                let what = format!("{}-{}", tp.0, tp.1);
                match ResponseError::try_from_code(part.error_code) {
                    None => {}
                    Some(ResponseError::OffsetOutOfRange) => {
                        let reset = list_offsets(cluster, &tp.0, &[tp.1], self.earliest_on_reset)?;
                        let to = reset.get(&tp.1).copied().unwrap_or(from);
                        log::warn(&format!(
                            "{what}: offset {from} is out of range; resetting to {to}"
                        ));
                        self.offsets.insert(tp, to);
                        continue;
                    }
                    Some(e) if e.is_retriable() => {
                        log::warn(&format!("fetch {what}: {e}; refreshing metadata"));
                        cluster.refresh(&[&tp.0])?;
                        continue;
                    }
                    Some(e) => return Err(errors::kafka_error(e, &format!("Fetch {what}"))),
                }
                self.high_watermarks.insert(tp.clone(), part.high_watermark);
                let Some(data) = part.records else { continue };
                let fetched = batch::decode_batches(data, from, &what, &mut budget)?;
                self.offsets.insert(tp.clone(), fetched.next_offset);
                out.extend(fetched.batches.into_iter().map(|b| (tp.clone(), b)));
            }
        }
        Ok(())
    }
}

/// One leader's partitions, as `send_fetches` sorts them.
struct LeaderParts<'a> {
    /// The partitions to fetch: those not paused.
    fetch: Vec<&'a TopicPartition>,
    /// Whether every partition in `fetch` is known to be caught up.
    caught_up: bool,
    /// Whether some of the leader's partitions are paused.
    any_paused: bool,
}

impl Default for LeaderParts<'_> {
    fn default() -> Self {
        LeaderParts {
            fetch: Vec::new(),
            caught_up: true,
            any_paused: false,
        }
    }
}

impl LeaderParts<'_> {
    fn worth_sending(&self) -> bool {
        !self.fetch.is_empty() && !(self.caught_up && self.any_paused)
    }
}

/// Both numbers come from brokers (a high watermark, a committed or listed offset), so
/// any pair is possible: a partition's lag is their exact difference, 0 when the offset is
/// past the high watermark (nothing to fetch there as far as this client knows), and the
/// sum saturates.
fn unfetched(offsets: &BTreeMap<TopicPartition, i64>, hws: &HashMap<TopicPartition, i64>) -> Option<u64> {
    let lag = |hw: i64, next: i64| u64::try_from(i128::from(hw) - i128::from(next)).unwrap_or(0);
    let known = offsets
        .iter()
        .filter_map(|(tp, next)| Some(lag(*hws.get(tp)?, *next)));
    known.fold(None, |sum, n| Some(sum.unwrap_or(0).saturating_add(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_request_starts_one_topic_and_one_partition_further() {
        let tp = |t: &str, p: i32| (t.to_string(), p);
        let f = Fetcher {
            offsets: BTreeMap::from([(tp("a", 0), 5), (tp("a", 1), 6), (tp("a", 2), 7), (tp("b", 0), 8)]),
            ..Fetcher::default()
        };
        let parts: Vec<&TopicPartition> = f.offsets.keys().collect();
        let order = |rotation| {
            let req = f.request(&parts, rotation);
            let order: Vec<(String, i32, i64)> = req
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(|p| (t.topic.0.to_string(), p.partition, p.fetch_offset))
                })
                .collect();
            order
        };
        let o = |t: &str, p, off| (t.to_string(), p, off);
        assert_eq!(order(0), [o("a", 0, 5), o("a", 1, 6), o("a", 2, 7), o("b", 0, 8)]);
        assert_eq!(order(1), [o("b", 0, 8), o("a", 1, 6), o("a", 2, 7), o("a", 0, 5)]);
        assert_eq!(order(2), [o("a", 2, 7), o("a", 0, 5), o("a", 1, 6), o("b", 0, 8)]);
    }

    #[test]
    fn unfetched_sums_known_high_watermarks_of_owned_partitions() {
        let tp = |p: i32| ("t".to_string(), p);
        let offsets = BTreeMap::from([(tp(0), 10), (tp(1), 50), (tp(2), 7)]);
        assert_eq!(unfetched(&offsets, &HashMap::new()), None);
        // Partition 1 is ahead of its last-known high watermark (counted as 0); partition 3
        // is not owned any more; partition 2's high watermark is not known yet.
        let hws = HashMap::from([(tp(0), 25), (tp(1), 40), (tp(3), 1000)]);
        assert_eq!(unfetched(&offsets, &hws), Some(15));
    }

    #[test]
    fn lag_from_extreme_offsets_saturates_instead_of_overflowing() {
        let tp = |p: i32| ("t".to_string(), p);
        // A broker's high watermark far above a negative next offset, and far below one.
        let offsets = BTreeMap::from([(tp(0), -5), (tp(1), i64::MAX), (tp(2), 0), (tp(3), 0)]);
        let hws = HashMap::from([
            (tp(0), i64::MAX),
            (tp(1), i64::MIN),
            (tp(2), i64::MAX),
            (tp(3), i64::MAX),
        ]);
        assert_eq!(unfetched(&offsets, &hws), Some(u64::MAX));
        let behind = HashMap::from([(tp(1), i64::MIN)]);
        assert_eq!(unfetched(&offsets, &behind), Some(0));
    }
}
