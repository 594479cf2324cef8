//! Which offsets may be committed: per partition, only the records handed out and acked
//! without a gap from the oldest one, so a restart never skips a record that was not
//! acked. Acks for partitions this source no longer owns are dropped.

use std::collections::{BTreeMap, VecDeque};

use crate::kafka::client::TopicPartition;
use crate::position::same_bytes;

#[derive(Debug, Default)]
struct Partition {
    /// Whether this source owns the partition now.
    owned: bool,
    /// Offsets handed out and not yet committable, oldest first, with whether acked.
    outstanding: VecDeque<(i64, bool)>,
    /// The next offset to read after the acked prefix: what a commit would store.
    ready: Option<i64>,
    /// What the group last stored for this partition.
    committed: Option<i64>,
}

/// Partitions are numbered by slot, in the order they were first assigned: a slot stays
/// the same partition's for the life of the source (owned or not), so callers can keep
/// their own per-partition state in a `Vec` by slot and never hash a topic name.
#[derive(Debug, Default)]
pub struct Commits {
    slots: Vec<(TopicPartition, Partition)>,
    acked_since_commit: usize,
}

impl Commits {
    /// Owns exactly these partitions from now on (after a rebalance): new ones get a slot,
    /// kept ones keep their state, the others' state is forgotten.
    pub fn assign(&mut self, parts: &[TopicPartition]) {
        for (tp, p) in &mut self.slots {
            if !parts.contains(tp) {
                *p = Partition::default();
            }
        }
        for tp in parts {
            match self.slot_of(tp) {
                Some(i) => self.slots[i].1.owned = true,
                None => self.slots.push((
                    tp.clone(),
                    Partition {
                        owned: true,
                        ..Default::default()
                    },
                )),
            }
        }
    }

    /// Every slot's partition, owned or not, by slot.
    pub fn slots(&self) -> impl Iterator<Item = &TopicPartition> {
        self.slots.iter().map(|(tp, _)| tp)
    }

    pub fn owns(&self, slot: usize) -> bool {
        self.slots.get(slot).is_some_and(|(_, p)| p.owned)
    }

    pub fn slot_of(&self, tp: &TopicPartition) -> Option<usize> {
        self.slot(tp.0.as_bytes(), tp.1)
    }

    /// The slot of a topic (as bytes, e.g. from a position) and partition.
    pub fn slot(&self, topic: &[u8], partition: i32) -> Option<usize> {
        self.slots
            .iter()
            .position(|((t, p), _)| *p == partition && same_bytes(t.as_bytes(), topic))
    }

    /// A record at `offset` was handed out.
    pub fn delivered(&mut self, slot: usize, offset: i64) {
        if let Some((_, p)) = self.slots.get_mut(slot)
            && p.owned
        {
            p.outstanding.push_back((offset, false));
        }
    }

    /// Marks a record acked; false if its partition is not this source's (any more) or the
    /// record was never handed out.
    pub fn ack(&mut self, slot: usize, offset: i64) -> bool {
        let Some((_, p)) = self.slots.get_mut(slot) else {
            return false;
        };
        if !p.owned {
            return false;
        }
        match p.outstanding.front() {
            // Acks mostly come in the order records were handed out.
            Some(&(o, _)) if o == offset => {
                p.outstanding.pop_front();
                p.ready = Some(o + 1);
            }
            _ => {
                // Offsets are handed out in increasing order, so the deque is sorted.
                let Ok(at) = p.outstanding.binary_search_by_key(&offset, |(o, _)| *o) else {
                    return false;
                };
                p.outstanding[at].1 = true;
            }
        }
        while let Some(&(o, true)) = p.outstanding.front() {
            p.outstanding.pop_front();
            p.ready = Some(o + 1);
        }
        self.acked_since_commit += 1;
        true
    }

    pub fn acked_since_commit(&self) -> usize {
        self.acked_since_commit
    }

    /// Offsets to commit: partitions whose acked prefix moved since their last commit.
    pub fn pending(&self) -> BTreeMap<TopicPartition, i64> {
        self.slots
            .iter()
            .filter_map(|(tp, p)| {
                p.ready
                    .filter(|r| p.owned && Some(*r) != p.committed)
                    .map(|r| (tp.clone(), r))
            })
            .collect()
    }

    /// The group stored `offsets`.
    pub fn committed(&mut self, offsets: &BTreeMap<TopicPartition, i64>) {
        for (tp, o) in offsets {
            if let Some(i) = self.slot_of(tp) {
                self.slots[i].1.committed = Some(*o);
            }
        }
        self.acked_since_commit = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        ("t".to_string(), p)
    }

    /// Slots follow the order of the first assignment in these tests: partition p is slot p.
    fn s(p: i32) -> usize {
        p as usize
    }

    #[test]
    fn only_the_acked_prefix_is_committable() {
        let mut c = Commits::default();
        c.assign(&[tp(0), tp(1)]);
        for o in 10..15 {
            c.delivered(s(0), o);
        }
        assert!(c.ack(s(0), 11));
        assert!(c.pending().is_empty(), "10 is not acked yet");
        assert!(c.ack(s(0), 10));
        assert_eq!(c.pending(), BTreeMap::from([(tp(0), 12)]));
        assert!(c.ack(s(0), 14));
        assert_eq!(c.pending()[&tp(0)], 12, "12 and 13 hold 14 back");
        c.committed(&c.pending());
        assert!(c.pending().is_empty());
        assert!(c.ack(s(0), 12));
        assert_eq!(c.pending()[&tp(0)], 13);
        assert!(c.ack(s(0), 13));
        assert_eq!(c.pending()[&tp(0)], 15);
    }

    #[test]
    fn acks_for_lost_partitions_and_unknown_records_are_dropped() {
        let mut c = Commits::default();
        c.assign(&[tp(0), tp(1)]);
        c.delivered(s(1), 5);
        c.assign(&[tp(0)]);
        assert!(!c.ack(s(1), 5), "partition 1 went to another member");
        assert!(!c.ack(s(0), 99), "never handed out");
        assert!(c.pending().is_empty());
        assert_eq!(c.acked_since_commit(), 0);
        c.assign(&[tp(1), tp(0), tp(2)]);
        assert_eq!(
            (c.slot_of(&tp(1)), c.slot(b"t", 2), c.slot(b"u", 0)),
            (Some(1), Some(2), None)
        );
        assert!(!c.ack(s(1), 5), "taken back, but starting afresh");
    }
}
