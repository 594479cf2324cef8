//! The assignors a consumer group's leader runs ("consumer" protocol type), as pure
//! functions: the two classic ones, exactly as the Java client's `RangeAssignor` and
//! `RoundRobinAssignor` do, so a group mixing this client and Java consumers agrees on who
//! owns what. The bytes members exchange through the coordinator are
//! `protocol::consumer`'s.

use std::collections::{BTreeMap, BTreeSet};

use super::TopicPartition;

/// One member's subscription, as the group leader learns it from JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub member_id: String,
    pub topics: Vec<String>,
}

/// The assignors this client offers in JoinGroup, in order of preference.
pub const PROTOCOLS: &[&str] = &["range", "roundrobin"];

/// The assignment by the assignor the group chose, `None` for a name this client does not
/// know.
pub fn assign(
    name: &str,
    members: &[Subscription],
    partitions: &BTreeMap<String, i32>,
) -> Option<BTreeMap<String, Vec<TopicPartition>>> {
    match name {
        "range" => Some(range(members, partitions)),
        "roundrobin" => Some(round_robin(members, partitions)),
        _ => None,
    }
}

/// Java's `RangeAssignor`: per topic, the members subscribed to it in order of member id
/// each take a run of consecutive partitions, `n / m` of them, and the first `n % m` members
/// one more. `partitions` maps a topic to its partition count; subscribed topics missing
/// from it are skipped. Every member is in the result, possibly with nothing; a member's
/// partitions come topic by topic in topic order.
pub fn range(
    members: &[Subscription],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut assignment = empty_assignment(members);
    for (topic, subscribers) in subscribers_per_topic(members) {
        let Some(&count) = partitions.get(topic) else {
            continue;
        };
        let count = count.max(0) as usize;
        let per_member = count / subscribers.len();
        let with_extra = count % subscribers.len();
        let mut next = 0;
        for (i, member) in subscribers.iter().enumerate() {
            let take = per_member + usize::from(i < with_extra);
            let parts = assignment
                .get_mut(*member)
                .expect("every member is in the assignment");
            parts.extend((next..next + take).map(|p| (topic.to_string(), p as i32)));
            next += take;
        }
    }
    assignment
}

/// Java's `RoundRobinAssignor`: every subscribed topic-partition, in order of topic then
/// partition, goes to the next member in order of member id, skipping members not
/// subscribed to its topic. Every member is in the result, possibly with nothing.
pub fn round_robin(
    members: &[Subscription],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut assignment = empty_assignment(members);
    let ids: Vec<String> = assignment.keys().cloned().collect();
    let mut next = 0;
    for (topic, subscribers) in subscribers_per_topic(members) {
        let Some(&count) = partitions.get(topic) else {
            continue;
        };
        for p in 0..count.max(0) {
            // The topic has a subscriber, so this finds one within a turn of the circle.
            while !subscribers.contains(ids[next].as_str()) {
                next = (next + 1) % ids.len();
            }
            let parts = assignment
                .get_mut(&ids[next])
                .expect("every member is in the assignment");
            parts.push((topic.to_string(), p));
            next = (next + 1) % ids.len();
        }
    }
    assignment
}

/// Every member, each with no partitions yet.
fn empty_assignment(members: &[Subscription]) -> BTreeMap<String, Vec<TopicPartition>> {
    members
        .iter()
        .map(|m| (m.member_id.clone(), Vec::new()))
        .collect()
}

/// Each subscribed topic, in topic order, with its subscribers in member id order (Java
/// orders members by group instance id when they have one; this client's members have
/// none). A member listing a topic twice, or listed twice, counts once.
fn subscribers_per_topic(members: &[Subscription]) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut per_topic: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for member in members {
        for topic in &member.topics {
            per_topic
                .entry(topic.as_str())
                .or_default()
                .insert(member.member_id.as_str());
        }
    }
    per_topic
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(member: &str, topics: &[&str]) -> Subscription {
        Subscription {
            member_id: member.to_string(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn counts(pairs: &[(&str, i32)]) -> BTreeMap<String, i32> {
        pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn tps(pairs: &[(&str, i32)]) -> Vec<TopicPartition> {
        pairs.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    /// The example in `RangeAssignor`'s Javadoc.
    #[test]
    fn range_matches_the_java_example() {
        let members = [sub("C1", &["t0", "t1"]), sub("C0", &["t0", "t1"])];
        let got = range(&members, &counts(&[("t0", 3), ("t1", 3)]));
        assert_eq!(got["C0"], tps(&[("t0", 0), ("t0", 1), ("t1", 0), ("t1", 1)]));
        assert_eq!(got["C1"], tps(&[("t0", 2), ("t1", 2)]));
        assert_eq!(got.len(), 2);
    }

    /// The example in `RoundRobinAssignor`'s Javadoc.
    #[test]
    fn round_robin_matches_the_java_example() {
        let members = [sub("C1", &["t0", "t1"]), sub("C0", &["t0", "t1"])];
        let got = round_robin(&members, &counts(&[("t0", 3), ("t1", 3)]));
        assert_eq!(got["C0"], tps(&[("t0", 0), ("t0", 2), ("t1", 1)]));
        assert_eq!(got["C1"], tps(&[("t0", 1), ("t1", 0), ("t1", 2)]));
        assert_eq!(got.len(), 2);
    }

    /// The second example in `RoundRobinAssignor`'s Javadoc: C0 on t0, C1 on t0 and t1, C2
    /// on t0, t1 and t2, with 1, 2 and 3 partitions.
    #[test]
    fn round_robin_skips_members_not_subscribed() {
        let members = [
            sub("C0", &["t0"]),
            sub("C1", &["t0", "t1"]),
            sub("C2", &["t0", "t1", "t2"]),
        ];
        let got = round_robin(&members, &counts(&[("t0", 1), ("t1", 2), ("t2", 3)]));
        assert_eq!(got["C0"], tps(&[("t0", 0)]));
        assert_eq!(got["C1"], tps(&[("t1", 0)]));
        assert_eq!(got["C2"], tps(&[("t1", 1), ("t2", 0), ("t2", 1), ("t2", 2)]));
    }

    #[test]
    fn range_with_a_member_on_one_topic() {
        let members = [sub("a", &["t0", "t1"]), sub("b", &["t1"])];
        let got = range(&members, &counts(&[("t0", 3), ("t1", 3)]));
        assert_eq!(
            got["a"],
            tps(&[("t0", 0), ("t0", 1), ("t0", 2), ("t1", 0), ("t1", 1)])
        );
        assert_eq!(got["b"], tps(&[("t1", 2)]));
    }

    #[test]
    fn more_members_than_partitions() {
        let members = [
            sub("m3", &["t"]),
            sub("m1", &["t"]),
            sub("m2", &["t"]),
            sub("m0", &["t"]),
        ];
        let partitions = counts(&[("t", 2)]);
        let want: BTreeMap<String, Vec<TopicPartition>> = [
            ("m0", tps(&[("t", 0)])),
            ("m1", tps(&[("t", 1)])),
            ("m2", vec![]),
            ("m3", vec![]),
        ]
        .into_iter()
        .map(|(m, p)| (m.to_string(), p))
        .collect();
        assert_eq!(range(&members, &partitions), want);
        assert_eq!(round_robin(&members, &partitions), want);
    }

    #[test]
    fn topics_without_metadata_and_members_without_topics() {
        let members = [sub("a", &["gone", "t"]), sub("b", &[])];
        let partitions = counts(&[("t", 1), ("unsubscribed", 4)]);
        for name in PROTOCOLS {
            let got = assign(name, &members, &partitions).unwrap();
            assert_eq!(got["a"], tps(&[("t", 0)]), "{name}");
            assert_eq!(got["b"], vec![], "{name}");
        }
        assert!(assign("cooperative-sticky", &members, &partitions).is_none());
        assert!(range(&[], &partitions).is_empty());
        assert!(round_robin(&[], &partitions).is_empty());
    }

    /// A small deterministic generator (xorshift), for the property test below.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Over many random groups: every partition of a subscribed topic with metadata is
    /// assigned exactly once, to a member subscribed to it; nothing else is assigned; every
    /// member is listed. Range balances each topic among its subscribers to within one; round
    /// robin balances the totals to within one when all subscribe to the same topics.
    #[test]
    fn every_partition_assigned_exactly_once() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..500 {
            let n_members = 1 + rng.below(7) as usize;
            let n_topics = 1 + rng.below(5) as usize;
            let same_topics = case % 3 == 0;
            let topics: Vec<String> = (0..n_topics).map(|t| format!("topic-{t}")).collect();
            let members: Vec<Subscription> = (0..n_members)
                .map(|m| Subscription {
                    member_id: format!("member-{:03}-{m}", rng.below(1000)),
                    topics: topics
                        .iter()
                        .filter(|_| same_topics || rng.below(2) == 0)
                        .cloned()
                        .collect(),
                })
                .collect();
            // Some topics have no metadata.
            let mut partitions = BTreeMap::new();
            for topic in &topics {
                if same_topics || rng.below(5) != 0 {
                    partitions.insert(topic.clone(), rng.below(12) as i32);
                }
            }
            for name in PROTOCOLS {
                let got = assign(name, &members, &partitions).unwrap();
                let ctx = format!("case {case} {name}: {members:?} {partitions:?} -> {got:?}");
                assert_eq!(got.len(), members.len(), "{ctx}");
                let mut seen: BTreeMap<TopicPartition, usize> = BTreeMap::new();
                for member in &members {
                    for tp in &got[&member.member_id] {
                        assert!(member.topics.contains(&tp.0), "{ctx}");
                        *seen.entry(tp.clone()).or_default() += 1;
                    }
                }
                let want: BTreeMap<TopicPartition, usize> = partitions
                    .iter()
                    .filter(|(t, _)| members.iter().any(|m| m.topics.contains(t)))
                    .flat_map(|(t, n)| (0..*n).map(move |p| ((t.clone(), p), 1)))
                    .collect();
                assert_eq!(seen, want, "{ctx}");
                if *name == "range" {
                    for topic in partitions.keys() {
                        let per_member: Vec<usize> = members
                            .iter()
                            .filter(|m| m.topics.contains(topic))
                            .map(|m| got[&m.member_id].iter().filter(|tp| &tp.0 == topic).count())
                            .collect();
                        let (lo, hi) = (per_member.iter().min(), per_member.iter().max());
                        if let (Some(lo), Some(hi)) = (lo, hi) {
                            assert!(hi - lo <= 1, "{ctx}");
                        }
                    }
                } else if same_topics {
                    let totals: Vec<usize> = got.values().map(Vec::len).collect();
                    assert!(
                        totals.iter().max().unwrap() - totals.iter().min().unwrap() <= 1,
                        "{ctx}"
                    );
                }
            }
        }
    }
}
