//! The source: a member of a consumer group. It reads the partitions the group gives it,
//! hands out records in batches, and commits, per partition, what the pipeline acked
//! without a gap (on a size trigger, a delay trigger, before a rebalance and at teardown).
//! Heartbeats ride on the host's calls.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::commits::Commits;
use crate::config::SourceConfig;
use crate::error::{Error, Result};
use crate::kafka::assignor::TopicPartition;
use crate::kafka::cluster::Cluster;
use crate::kafka::fetcher::Fetcher;
use crate::kafka::group::{GroupSettings, Membership, Pulse};
use crate::log;
use crate::mapping::{self, Position};
use crate::record::Record;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Records buffered for one partition before it stops being fetched (back-pressure).
const MAX_BUFFERED_PER_PARTITION: usize = 10_000;

pub struct Source {
    config: SourceConfig,
    cluster: Cluster,
    group: Membership,
    fetcher: Fetcher,
    /// Fetched records not handed out yet, with their partition and offset.
    buffer: VecDeque<(TopicPartition, i64, Record)>,
    buffered: HashMap<TopicPartition, usize>,
    /// Each partition's `Position::prefix`.
    prefixes: HashMap<TopicPartition, Vec<u8>>,
    commits: Commits,
    last_commit: Instant,
    rejoin: bool,
}

impl Source {
    /// Connects, joins the group and positions every assigned partition at the group's
    /// committed offset, or at the beginning or end as `readFromBeginning` says.
    pub fn open(config: SourceConfig, position: Option<&[u8]>) -> Result<Self> {
        let from_position = position.map(Position::decode).transpose()?.map(|p| p.group);
        let group_id = match (&config.group_id, from_position) {
            (Some(g), _) => g.clone(),
            (None, Some(g)) => g,
            (None, None) => new_group_id(),
        };
        let mut cluster = Cluster::connect(&config.client, REQUEST_TIMEOUT)?;
        for t in &config.topics {
            cluster.topic(t)?;
        }
        let heartbeat_interval =
            (config.session_timeout / 10).clamp(Duration::from_millis(100), Duration::from_secs(3));
        let group = Membership::new(GroupSettings {
            group_id,
            topics: config.topics.clone(),
            session_timeout: config.session_timeout,
            rebalance_timeout: config.rebalance_timeout,
            heartbeat_interval,
        });
        let mut source = Source {
            fetcher: Fetcher::new(config.read_from_beginning),
            config,
            cluster,
            group,
            buffer: VecDeque::new(),
            buffered: HashMap::new(),
            prefixes: HashMap::new(),
            commits: Commits::default(),
            last_commit: Instant::now(),
            rejoin: true,
        };
        source.keep_alive()?;
        Ok(source)
    }

    pub fn group_id(&self) -> &str {
        self.group.group_id()
    }

    /// Up to `max` records, waiting at most `wait` for the first.
    pub fn read(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>> {
        let deadline = Instant::now() + wait;
        loop {
            self.keep_alive()?;
            if !self.buffer.is_empty() || Instant::now() >= deadline {
                break;
            }
            self.fetch(deadline.min(self.group.next_heartbeat()))?;
        }
        let n = max.min(self.buffer.len());
        let mut out = Vec::with_capacity(n);
        for (tp, offset, rec) in self.buffer.drain(..n) {
            if let Some(count) = self.buffered.get_mut(&tp) {
                *count -= 1;
            }
            self.commits.delivered(&tp, offset);
            out.push(rec);
        }
        Ok(out)
    }

    fn fetch(&mut self, until: Instant) -> Result<()> {
        let buffered = &self.buffered;
        let paused = |tp: &TopicPartition| buffered.get(tp).is_some_and(|n| *n >= MAX_BUFFERED_PER_PARTITION);
        let fetched = self.fetcher.poll(&mut self.cluster, until, &paused)?;
        let read_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        for (tp, r) in fetched {
            let offset = r.offset;
            let prefix = self
                .prefixes
                .entry(tp.clone())
                .or_insert_with(|| Position::prefix(self.group.group_id(), &tp.0, tp.1));
            let rec = mapping::from_kafka(prefix, &tp.0, tp.1, r, read_at);
            *self.buffered.entry(tp.clone()).or_default() += 1;
            self.buffer.push_back((tp, offset, rec));
        }
        Ok(())
    }

    /// Heartbeat when due, rejoin when the group rebalances, commit when the delay is up.
    fn keep_alive(&mut self) -> Result<()> {
        if !self.rejoin && self.group.heartbeat_if_due(&mut self.cluster)? == Pulse::Rejoin {
            self.rejoin = true;
        }
        if self.rejoin {
            self.rebalance()?;
        }
        if self.last_commit.elapsed() >= self.config.commit_delay {
            self.commit()?;
        }
        Ok(())
    }

    /// Commits what is acked, joins again, and takes up the new partitions where the
    /// group's commits say. Buffered records of partitions now owned by others go.
    fn rebalance(&mut self) -> Result<()> {
        self.commit()?;
        let parts = self.group.join(&mut self.cluster)?;
        let committed = self.group.committed(&mut self.cluster, &parts)?;
        self.fetcher.assign(&mut self.cluster, &parts, &committed)?;
        self.commits.assign(&parts);
        self.buffer.retain(|(tp, _, _)| parts.contains(tp));
        self.buffered.retain(|tp, _| parts.contains(tp));
        self.rejoin = false;
        Ok(())
    }

    /// Takes acks for records this source handed out. Acks of partitions it no longer
    /// owns are dropped: another member reads them from the last commit.
    pub fn ack(&mut self, positions: &[Vec<u8>]) -> Result<()> {
        for p in positions {
            let pos = Position::decode(p)?;
            if pos.group != self.group.group_id() {
                return Err(Error::InvalidState(format!(
                    "ack for group {} in a source of group {}",
                    pos.group,
                    self.group_id()
                )));
            }
            if !self.commits.ack(&(pos.topic.clone(), pos.partition), pos.offset) {
                log::info(&format!(
                    "dropping ack for {}-{}@{}: not this source's",
                    pos.topic, pos.partition, pos.offset
                ));
            }
        }
        if self.commits.acked_since_commit() >= self.config.commit_size {
            self.commit()?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        self.last_commit = Instant::now();
        let pending = self.commits.pending();
        if pending.is_empty() {
            return Ok(());
        }
        match self.group.commit(&mut self.cluster, &pending)? {
            Pulse::Fine => self.commits.committed(&pending),
            // The group moved on; the new owners start from the last commit.
            Pulse::Rejoin => self.rejoin = true,
        }
        Ok(())
    }

    /// Commits what is acked, leaves the group (its partitions move to the others at
    /// once) and closes every connection.
    pub fn teardown(&mut self) -> Result<()> {
        let committed = self.commit();
        self.group.leave(&mut self.cluster);
        self.cluster.close();
        committed
    }
}

/// A group ID of this connector's own, for a source given none.
fn new_group_id() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("conduit-connector-kafka-{:016x}", h.finish())
}
