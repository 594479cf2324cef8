//! Which offsets may be committed: per partition, only the records handed out and acked
//! without a gap from the oldest one, so a restart never skips a record that was not
//! acked. Acks for partitions this source no longer owns are dropped.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::kafka::assignor::TopicPartition;

#[derive(Debug, Default)]
struct Partition {
    /// Offsets handed out and not yet committable, oldest first, with whether acked.
    outstanding: VecDeque<(i64, bool)>,
    /// The next offset to read after the acked prefix: what a commit would store.
    ready: Option<i64>,
    /// What the group last stored for this partition.
    committed: Option<i64>,
}

#[derive(Debug, Default)]
pub struct Commits {
    parts: HashMap<TopicPartition, Partition>,
    acked_since_commit: usize,
}

impl Commits {
    /// Starts tracking exactly these partitions (after a rebalance); others are forgotten.
    pub fn assign(&mut self, parts: &[TopicPartition]) {
        self.parts.retain(|tp, _| parts.contains(tp));
        for tp in parts {
            self.parts.entry(tp.clone()).or_default();
        }
    }

    /// A record at `offset` was handed out.
    pub fn delivered(&mut self, tp: &TopicPartition, offset: i64) {
        if let Some(p) = self.parts.get_mut(tp) {
            p.outstanding.push_back((offset, false));
        }
    }

    /// Marks a record acked; false if its partition is not this source's (any more) or the
    /// record was never handed out.
    pub fn ack(&mut self, tp: &TopicPartition, offset: i64) -> bool {
        let Some(p) = self.parts.get_mut(tp) else {
            return false;
        };
        // Offsets are handed out in increasing order, so the deque is sorted.
        let Ok(at) = p.outstanding.binary_search_by_key(&offset, |(o, _)| *o) else {
            return false;
        };
        p.outstanding[at].1 = true;
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
        self.parts
            .iter()
            .filter_map(|(tp, p)| {
                p.ready
                    .filter(|r| Some(*r) != p.committed)
                    .map(|r| (tp.clone(), r))
            })
            .collect()
    }

    /// The group stored `offsets`.
    pub fn committed(&mut self, offsets: &BTreeMap<TopicPartition, i64>) {
        for (tp, o) in offsets {
            if let Some(p) = self.parts.get_mut(tp) {
                p.committed = Some(*o);
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

    #[test]
    fn only_the_acked_prefix_is_committable() {
        let mut c = Commits::default();
        c.assign(&[tp(0), tp(1)]);
        for o in 10..15 {
            c.delivered(&tp(0), o);
        }
        assert!(c.ack(&tp(0), 11));
        assert!(c.pending().is_empty(), "10 is not acked yet");
        assert!(c.ack(&tp(0), 10));
        assert_eq!(c.pending(), BTreeMap::from([(tp(0), 12)]));
        assert!(c.ack(&tp(0), 14));
        assert_eq!(c.pending()[&tp(0)], 12, "12 and 13 hold 14 back");
        c.committed(&c.pending());
        assert!(c.pending().is_empty());
        assert!(c.ack(&tp(0), 12));
        assert_eq!(c.pending()[&tp(0)], 13);
        assert!(c.ack(&tp(0), 13));
        assert_eq!(c.pending()[&tp(0)], 15);
    }

    #[test]
    fn acks_for_lost_partitions_and_unknown_records_are_dropped() {
        let mut c = Commits::default();
        c.assign(&[tp(0), tp(1)]);
        c.delivered(&tp(1), 5);
        c.assign(&[tp(0)]);
        assert!(!c.ack(&tp(1), 5), "partition 1 went to another member");
        assert!(!c.ack(&tp(0), 99), "never handed out");
        assert!(c.pending().is_empty());
        assert_eq!(c.acked_since_commit(), 0);
    }
}
