//! The source: a member of a consumer group. It reads the partitions the group gives it,
//! hands out records in batches, and commits, per partition, what the pipeline acked
//! without a gap (on a size trigger, a delay trigger, before a rebalance and at teardown).
//! Heartbeats ride on the host's calls.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::commits::Commits;
use crate::config::SourceConfig;
use crate::error::{Error, Result};
use crate::kafka::client::TopicPartition;
use crate::kafka::client::backoff::Backoff;
use crate::kafka::client::cluster::Cluster;
use crate::kafka::client::fetcher::Fetcher;
use crate::kafka::client::group::{GroupSettings, Membership, Pulse};
use crate::kafka::client::topics;
use crate::kafka::protocol::batch::Batch;
use crate::log;
use crate::mapping::SourcePartition;
use crate::packed::{Packed, Sink};
use crate::position::{Position, PositionRef, same_bytes};
use crate::record::Record;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Records buffered for one partition before it stops being fetched (back-pressure).
const MAX_BUFFERED_PER_PARTITION: usize = 10_000;

/// One fetched batch of a partition, handed out record by record.
struct Chunk {
    slot: usize,
    batch: Batch,
}

/// A partition's state in the source, by its slot in `Commits`.
struct Slot {
    part: SourcePartition,
    /// Records in `buffer` not handed out yet (at most: a batch's header count).
    buffered: usize,
}

pub struct Source {
    config: SourceConfig,
    cluster: Cluster,
    group: Membership,
    fetcher: Fetcher,
    /// Fetched batches not fully handed out yet, oldest first. Records are parsed and
    /// mapped only as they are handed out.
    buffer: VecDeque<Chunk>,
    /// Per partition, by the slot `commits` gives it.
    slots: Vec<Slot>,
    commits: Commits,
    /// The slot the last ack was for: acks come in runs of one partition.
    last_ack_slot: usize,
    last_commit: Instant,
    rejoin: bool,
    /// When a rejoin that failed retriably is tried again, and the pauses between tries.
    rejoin_at: Option<Instant>,
    rejoin_backoff: Backoff,
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
        let mut cluster = Cluster::connect(config.client.options(REQUEST_TIMEOUT))?;
        // Each waited for (`topics::MISSING_WAIT`), then its absence is final.
        let topics_by = Instant::now() + REQUEST_TIMEOUT;
        for t in &config.topics {
            topics::wait_for(&mut cluster, t, "a source does not create topics", topics_by)?;
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
            slots: Vec::new(),
            commits: Commits::default(),
            last_ack_slot: 0,
            last_commit: Instant::now(),
            rejoin: true,
            rejoin_at: None,
            rejoin_backoff: Backoff::default(),
        };
        source.rebalance()?;
        Ok(source)
    }

    pub fn group_id(&self) -> &str {
        self.group.group_id()
    }

    /// Up to `max` records, waiting at most `wait` for the first. Before returning, the
    /// next fetch goes out, so the broker works while the caller handles these records.
    pub fn read(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>> {
        let mut out = Vec::with_capacity(max.min(self.buffered()));
        self.read_into(max, wait, &mut out)?;
        Ok(out)
    }

    /// `read`, into a packed batch.
    pub fn read_packed(&mut self, max: usize, wait: Duration) -> Result<Packed> {
        let mut out = Packed::with_capacity(max.min(self.buffered()));
        self.read_into(max, wait, &mut out)?;
        Ok(out)
    }

    /// Records in the assigned partitions not handed out yet: fetched and buffered, or not
    /// fetched yet (up to the high watermark the last fetch saw). None before any answer.
    pub fn lag(&self) -> Option<u64> {
        self.fetcher
            .unfetched()
            .map(|u| u.saturating_add(self.buffered() as u64))
    }

    fn buffered(&self) -> usize {
        self.slots.iter().map(|s| s.buffered).sum()
    }

    fn read_into(&mut self, max: usize, wait: Duration, out: &mut impl Sink) -> Result<()> {
        let deadline = Instant::now() + wait;
        loop {
            self.keep_alive()?;
            self.take(max, out)?;
            if !out.is_empty() || Instant::now() >= deadline {
                break;
            }
            self.fetch(deadline.min(self.group.next_heartbeat()))?;
        }
        if !out.is_empty() {
            let slots = &self.slots;
            let paused = |tp: &TopicPartition| paused(&self.commits, slots, tp);
            if let Err(e) = self.fetcher.prefetch(&mut self.cluster, &paused) {
                // The next fetch meets it again; these records are handed out first.
                log::warn(&format!("prefetch: {e}"));
            }
        }
        Ok(())
    }

    /// Hands out up to `max` buffered records into `out`. A record that does not parse
    /// ends the call; it is an error once `out` is empty (nothing handed out is lost).
    fn take(&mut self, max: usize, out: &mut impl Sink) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let read_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64)
            .to_string();
        while out.len() < max && !out.full() {
            let Some(chunk) = self.buffer.front_mut() else {
                break;
            };
            let slot = &mut self.slots[chunk.slot];
            let before = chunk.batch.left();
            let failed = match chunk.batch.next_record() {
                Ok(Some(r)) => {
                    self.commits.delivered(chunk.slot, r.offset);
                    out.push(&slot.part, &r, &read_at);
                    None
                }
                Ok(None) => None,
                Err(e) => Some(e),
            };
            // `left` counts the records parsed, handed out or skipped (before the fetch
            // offset), and is 0 once the batch is done.
            let after = chunk.batch.left();
            slot.buffered -= before - after;
            if after == 0 {
                self.buffer.pop_front();
            }
            match failed {
                None => {}
                Some(_) if !out.is_empty() => break,
                Some(Error::CorruptData(m)) => {
                    let p = &slot.part;
                    return Err(Error::CorruptData(format!("{}-{}: {m}", p.topic, p.partition)));
                }
                Some(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn fetch(&mut self, until: Instant) -> Result<()> {
        let slots = &self.slots;
        let commits = &self.commits;
        let paused = |tp: &TopicPartition| paused(commits, slots, tp);
        let fetched = self.fetcher.poll(&mut self.cluster, until, &paused)?;
        for (tp, batch) in fetched {
            let Some(slot) = self.commits.slot_of(&tp).filter(|s| self.commits.owns(*s)) else {
                continue;
            };
            self.slots[slot].buffered += batch.left();
            self.buffer.push_back(Chunk { slot, batch });
        }
        Ok(())
    }

    /// Heartbeat when due, rejoin when the group rebalances, commit when the delay is up.
    fn keep_alive(&mut self) -> Result<()> {
        if !self.rejoin && self.group.heartbeat_if_due(&mut self.cluster)? == Pulse::Rejoin {
            self.rejoin = true;
        }
        if self.rejoin && self.rejoin_at.is_none_or(|at| Instant::now() >= at) {
            self.rebalance_or_defer()?;
        }
        if self.last_commit.elapsed() >= self.config.commit_delay {
            self.commit_or_defer()?;
        }
        Ok(())
    }

    /// [`Source::rebalance`] of a source that is open. A retriable failure (a cut connection,
    /// a coordinator that moved or restarted) is tried again after a backoff, on a later
    /// read; meanwhile the source goes on with the partitions it had (the group refuses
    /// their commits if they moved on: at least once, never lost).
    fn rebalance_or_defer(&mut self) -> Result<()> {
        match self.rebalance() {
            Ok(()) => {
                self.rejoin_at = None;
                self.rejoin_backoff = Backoff::default();
                Ok(())
            }
            Err(e) if e.is_retriable() => {
                let now = Instant::now();
                self.rejoin_at = self.rejoin_backoff.retry_at(now, None, None);
                log::warn(&format!(
                    "rejoining group {}: {e}; trying again",
                    self.group.group_id()
                ));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Commits what is acked, joins again, and takes up the new partitions where the
    /// group's commits say. Buffered records of partitions now owned by others go.
    fn rebalance(&mut self) -> Result<()> {
        self.commit()?;
        let parts = self.group.join(&mut self.cluster)?;
        let committed = self.group.committed(&mut self.cluster, &parts)?;
        self.fetcher.assign(&mut self.cluster, &parts, &committed)?;
        self.commits.assign(&parts);
        for tp in self.commits.slots().skip(self.slots.len()) {
            self.slots.push(Slot {
                part: SourcePartition::new(self.group.group_id(), &tp.0, tp.1),
                buffered: 0,
            });
        }
        let commits = &self.commits;
        self.buffer.retain(|c| commits.owns(c.slot));
        for (i, s) in self.slots.iter_mut().enumerate() {
            if !commits.owns(i) {
                s.buffered = 0;
            }
        }
        self.rejoin = false;
        Ok(())
    }

    /// Takes acks for records this source handed out. Acks of partitions it no longer
    /// owns are dropped: another member reads them from the last commit.
    pub fn ack<'a>(&mut self, positions: impl IntoIterator<Item = &'a [u8]>) -> Result<()> {
        for p in positions {
            // Acks come in runs of one partition: a position of the partition acked last
            // is its prefix (marker, group, topic, partition) and an offset, so one compare
            // checks all of it. Anything else, or an ack that does not take, goes the long way.
            if let Some((head, offset)) = p.split_last_chunk::<8>()
                && let Some(slot) = self.slots.get(self.last_ack_slot)
                && same_bytes(head, &slot.part.prefix)
                && self.commits.ack(self.last_ack_slot, i64::from_be_bytes(*offset))
            {
                continue;
            }
            match PositionRef::parse(p) {
                Some(pos) => self.ack_one(pos)?,
                // A JSON position (of an earlier version), or an error naming what it is.
                None => {
                    let pos = Position::decode(p)?;
                    self.ack_one(PositionRef {
                        group: pos.group.as_bytes(),
                        topic: pos.topic.as_bytes(),
                        partition: pos.partition,
                        offset: pos.offset,
                    })?;
                }
            }
        }
        if self.commits.acked_since_commit() >= self.config.commit_size {
            self.commit_or_defer()?;
        }
        Ok(())
    }

    fn ack_one(&mut self, pos: PositionRef<'_>) -> Result<()> {
        if !same_bytes(pos.group, self.group.group_id().as_bytes()) {
            return Err(Error::InvalidState(format!(
                "ack for group {} in a source of group {}",
                String::from_utf8_lossy(pos.group),
                self.group_id()
            )));
        }
        let last = self.last_ack_slot;
        let slot = match self.commits.slots().nth(last) {
            Some((t, p)) if *p == pos.partition && same_bytes(t.as_bytes(), pos.topic) => Some(last),
            _ => self.commits.slot(pos.topic, pos.partition),
        };
        if let Some(s) = slot {
            self.last_ack_slot = s;
        }
        if !slot.is_some_and(|s| self.commits.ack(s, pos.offset)) {
            log::info(&format!(
                "dropping ack for {}-{}@{}: not this source's",
                String::from_utf8_lossy(pos.topic),
                pos.partition,
                pos.offset
            ));
        }
        Ok(())
    }

    /// [`Source::commit`] on the way (after acks, on the delay). A retriable failure (a cut
    /// connection, a coordinator that moved or restarted) leaves the offsets pending, to go
    /// with the next commit, as a failed heartbeat is tried again: a commit that never
    /// succeeds fails at teardown, and a restart redelivers what it left.
    fn commit_or_defer(&mut self) -> Result<()> {
        match self.commit() {
            Err(e) if e.is_retriable() => {
                log::warn(&format!(
                    "commit of group {}: {e}; the offsets go with the next commit",
                    self.group.group_id()
                ));
                Ok(())
            }
            done => done,
        }
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

/// Packed positions (`ack-batch`): `positions[ends[i-1]..ends[i]]` each; ends must not
/// decrease nor pass the end.
pub fn split_positions<'a>(positions: &'a [u8], ends: &'a [u32]) -> Result<impl Iterator<Item = &'a [u8]>> {
    let mut start = 0;
    for &end in ends {
        let end = end as usize;
        if end < start || end > positions.len() {
            return Err(Error::InvalidState(format!(
                "packed positions end at {end}, after {start}, in {} bytes",
                positions.len()
            )));
        }
        start = end;
    }
    let starts = std::iter::once(0).chain(ends.iter().map(|e| *e as usize));
    Ok(starts
        .zip(ends)
        .map(move |(start, end)| &positions[start..*end as usize]))
}

/// Whether `tp` has enough records buffered not to be fetched now.
fn paused(commits: &Commits, slots: &[Slot], tp: &TopicPartition) -> bool {
    commits
        .slot_of(tp)
        .and_then(|s| slots.get(s))
        .is_some_and(|s| s.buffered >= MAX_BUFFERED_PER_PARTITION)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_positions_split_at_their_ends() {
        let split: Vec<&[u8]> = split_positions(b"aabccc", &[2, 3, 3, 6]).unwrap().collect();
        assert_eq!(split, [&b"aa"[..], b"b", b"", b"ccc"]);
        assert_eq!(split_positions(b"", &[]).unwrap().count(), 0);
        assert!(split_positions(b"aab", &[2, 1]).is_err(), "ends go back");
        assert!(split_positions(b"aab", &[4]).is_err(), "past the end");
    }
}
