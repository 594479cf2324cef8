//! The consumer group protocol's client side ("consumer" protocol type), as pure functions:
//! the two classic assignors the group leader runs, exactly as the Java client's
//! `RangeAssignor` and `RoundRobinAssignor` do (so a group mixing this client and Java
//! consumers agrees on who owns what), and the bytes members exchange through the
//! coordinator: the member metadata (JoinGroup `protocols[].metadata`, `members[].metadata`)
//! and the assignment (SyncGroup `assignments[].assignment` and the response's
//! `assignment`). Both are a big-endian i16 version followed by kafka-protocol's
//! `ConsumerProtocolSubscription` / `ConsumerProtocolAssignment` at that version.
//!
//! Decoding reads bytes written by other clients, so it never trusts them: a length prefix
//! is checked against the bytes that remain before kafka-protocol sees it (kafka-protocol
//! preallocates a `Vec` from an array's claimed length), and anything malformed is
//! `Error::CorruptData` naming what was being decoded.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};

use crate::error::{Error, Result};

/// A topic and a partition of it.
pub type TopicPartition = (String, i32);

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

/// The version of the member metadata written: 1 carries owned partitions (none here: the
/// eager assignors do not need them), which every client since Kafka 2.4 reads, and older
/// ones read as version 0.
const SUBSCRIPTION_VERSION: i16 = 1;
/// The version of the assignment written: the layout is the same in every version, so the
/// oldest, which every client reads.
const ASSIGNMENT_VERSION: i16 = 0;

/// The member metadata for JoinGroup: subscribed to `topics`, owning nothing, no user data.
/// A topic name too long for the protocol's i16 length (Kafka allows 249 characters) cannot
/// name a topic, so it is left out.
pub fn encode_subscription(topics: &[String]) -> Bytes {
    let topics = topics
        .iter()
        .filter(|t| t.len() <= i16::MAX as usize)
        .map(|t| StrBytes::from_string(t.clone()))
        .collect();
    let message = ConsumerProtocolSubscription::default().with_topics(topics);
    encode_versioned(&message, SUBSCRIPTION_VERSION)
}

/// The topics of a member's metadata, as the group leader reads it from JoinGroup.
pub fn decode_subscription(data: &[u8]) -> Result<Vec<String>> {
    const WHAT: &str = "consumer protocol subscription (member metadata)";
    let corrupt = |m: String| Error::CorruptData(format!("{WHAT}: {m}"));
    if data.is_empty() {
        return Err(corrupt("no bytes".into()));
    }
    let (version, body) = split_version::<ConsumerProtocolSubscription>(data).map_err(corrupt)?;
    check_subscription(body, version).map_err(corrupt)?;
    let mut buf = body;
    let message = ConsumerProtocolSubscription::decode(&mut buf, version)
        .map_err(|e| corrupt(format!("version {version}: {e}")))?;
    Ok(message.topics.iter().map(|t| t.as_str().to_string()).collect())
}

/// An assignment for SyncGroup. Partitions are grouped by topic, topics in order of first
/// appearance, partitions in the order given. Topic names too long for the protocol are left
/// out, as in `encode_subscription`.
pub fn encode_assignment(parts: &[TopicPartition]) -> Bytes {
    let mut by_topic: IndexMap<&str, Vec<i32>> = IndexMap::new();
    for (topic, partition) in parts.iter().filter(|(t, _)| t.len() <= i16::MAX as usize) {
        by_topic.entry(topic.as_str()).or_default().push(*partition);
    }
    let assigned = by_topic
        .into_iter()
        .map(|(topic, partitions)| {
            AssignedTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(partitions)
        })
        .collect();
    let message = ConsumerProtocolAssignment::default().with_assigned_partitions(assigned);
    encode_versioned(&message, ASSIGNMENT_VERSION)
}

/// The partitions of an assignment, as a member reads it from the SyncGroup response. No
/// bytes at all (what the coordinator sends a member the leader gave nothing, or with some
/// errors) is no partitions.
pub fn decode_assignment(data: &[u8]) -> Result<Vec<TopicPartition>> {
    const WHAT: &str = "consumer protocol assignment";
    let corrupt = |m: String| Error::CorruptData(format!("{WHAT}: {m}"));
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let (version, body) = split_version::<ConsumerProtocolAssignment>(data).map_err(corrupt)?;
    check_assignment(body).map_err(corrupt)?;
    let mut buf = body;
    let message = ConsumerProtocolAssignment::decode(&mut buf, version)
        .map_err(|e| corrupt(format!("version {version}: {e}")))?;
    Ok(message
        .assigned_partitions
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.as_str().to_string(), *p)))
        .collect())
}

/// The version prefix, then the message at that version.
fn encode_versioned<M: Encodable>(message: &M, version: i16) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    // Only a string longer than an i16 length (filtered out by the callers) or an array of
    // more than i32::MAX entries can fail to encode.
    message
        .encode(&mut buf, version)
        .expect("consumer protocol message encodes");
    buf.freeze()
}

/// The version prefix and the rest. A version newer than kafka-protocol knows is read as
/// the newest it knows, as the Java client does: newer versions only add fields at the end.
fn split_version<M: Message>(data: &[u8]) -> Result<(i16, &[u8]), String> {
    let Some((prefix, body)) = data.split_first_chunk::<2>() else {
        return Err(format!("{} bytes, too short for a version", data.len()));
    };
    let version = i16::from_be_bytes(*prefix);
    if version < M::VERSIONS.min {
        return Err(format!("unsupported version {version}"));
    }
    Ok((version.min(M::VERSIONS.max), body))
}

/// Walks a `ConsumerProtocolSubscription` at `version` without building it, checking every
/// length against the bytes left.
fn check_subscription(body: &[u8], version: i16) -> Result<(), String> {
    let mut walk = Walk { data: body };
    walk.array("topics", MIN_STRING, |w| w.string(false, "topic"))?;
    walk.bytes("user data")?;
    if version >= 1 {
        walk.array("owned partitions", MIN_STRING + MIN_ARRAY, |w| {
            w.string(false, "owned topic")?;
            w.array("owned partition ids", 4, |w| w.take(4, "partition id").map(drop))
        })?;
    }
    if version >= 2 {
        walk.take(4, "generation id")?;
    }
    if version >= 3 {
        walk.string(true, "rack id")?;
    }
    Ok(())
}

/// Walks a `ConsumerProtocolAssignment` (the same layout at every version) without building
/// it, checking every length against the bytes left.
fn check_assignment(body: &[u8]) -> Result<(), String> {
    let mut walk = Walk { data: body };
    walk.array("assigned topics", MIN_STRING + MIN_ARRAY, |w| {
        w.string(false, "assigned topic")?;
        w.array("assigned partition ids", 4, |w| {
            w.take(4, "partition id").map(drop)
        })
    })?;
    walk.bytes("user data")
}

/// The fewest bytes a string (its i16 length) and an array (its i32 length) take.
const MIN_STRING: usize = 2;
const MIN_ARRAY: usize = 4;

/// A cursor over the classic (non-flexible) encoding, for checking lengths only. Trailing
/// bytes are left alone: newer versions add fields at the end.
struct Walk<'a> {
    data: &'a [u8],
}

impl<'a> Walk<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.data.len() < n {
            return Err(format!("{what}: needs {n} bytes, {} left", self.data.len()));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    fn i16(&mut self, what: &str) -> Result<i16, String> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, what: &str) -> Result<i32, String> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, nullable: bool, what: &str) -> Result<(), String> {
        match self.i16(what)? {
            -1 if nullable => Ok(()),
            n if n >= 0 => self.take(n as usize, what).map(drop),
            n => Err(format!("{what}: string length {n}")),
        }
    }

    /// Nullable bytes with an i32 length.
    fn bytes(&mut self, what: &str) -> Result<(), String> {
        match self.i32(what)? {
            -1 => Ok(()),
            n if n >= 0 => self.take(n as usize, what).map(drop),
            n => Err(format!("{what}: length {n}")),
        }
    }

    /// A non-nullable array whose entries take at least `min_entry` bytes each.
    fn array(
        &mut self,
        what: &str,
        min_entry: usize,
        mut entry: impl FnMut(&mut Self) -> Result<(), String>,
    ) -> Result<(), String> {
        let n = self.i32(what)?;
        if n < 0 {
            return Err(format!("{what}: array length {n}"));
        }
        let left = self.data.len();
        if n as usize > left / min_entry {
            return Err(format!("{what}: {n} entries cannot fit in the {left} bytes left"));
        }
        for _ in 0..n {
            entry(self)?;
        }
        Ok(())
    }
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

    #[test]
    fn subscription_round_trip() {
        for topics in [
            vec![],
            vec!["orders".to_string()],
            vec!["a".into(), "b.c-d_e".into(), "ü".into()],
        ] {
            let bytes = encode_subscription(&topics);
            assert_eq!(&bytes[..2], &SUBSCRIPTION_VERSION.to_be_bytes());
            assert_eq!(decode_subscription(&bytes).unwrap(), topics);
        }
    }

    #[test]
    fn assignment_round_trip() {
        let parts = tps(&[("t0", 0), ("t0", 2), ("t1", 1), ("t0", 5)]);
        let bytes = encode_assignment(&parts);
        assert_eq!(&bytes[..2], &ASSIGNMENT_VERSION.to_be_bytes());
        // Grouped by topic, in order of first appearance.
        assert_eq!(
            decode_assignment(&bytes).unwrap(),
            tps(&[("t0", 0), ("t0", 2), ("t0", 5), ("t1", 1)])
        );
        assert_eq!(decode_assignment(&encode_assignment(&[])).unwrap(), vec![]);
    }

    #[test]
    fn an_empty_assignment_is_no_partitions() {
        assert_eq!(decode_assignment(&[]).unwrap(), vec![]);
    }

    /// Member metadata as the Java client writes it at version 0: topics "t0" and "t1", no
    /// user data.
    #[test]
    fn decodes_a_java_version_0_subscription() {
        let bytes = [
            0, 0, // version 0
            0, 0, 0, 2, // two topics
            0, 2, b't', b'0', // "t0"
            0, 2, b't', b'1', // "t1"
            0xff, 0xff, 0xff, 0xff, // user data: null
        ];
        assert_eq!(decode_subscription(&bytes).unwrap(), vec!["t0", "t1"]);
    }

    /// Version 3 (owned partitions, generation, rack), and a version newer than any known,
    /// read as version 3 with its extra trailing field ignored.
    #[test]
    fn decodes_version_3_and_newer_subscriptions() {
        let mut body = vec![
            0, 0, 0, 1, // one topic
            0, 1, b't', // "t"
            0, 0, 0, 2, 0xab, 0xcd, // user data: two bytes
            0, 0, 0, 1, // one owned topic
            0, 1, b't', // "t"
            0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, // partitions 0 and 3
            0, 0, 0, 7, // generation 7
            0, 2, b'r', b'1', // rack "r1"
        ];
        let v3 = [&[0u8, 3][..], &body].concat();
        assert_eq!(decode_subscription(&v3).unwrap(), vec!["t"]);
        body.extend_from_slice(&[0, 0, 0, 42]); // a field from the future
        let v9 = [&[0u8, 9][..], &body].concat();
        assert_eq!(decode_subscription(&v9).unwrap(), vec!["t"]);
    }

    /// An assignment as the Java client writes it at version 1: t0 partitions 0 and 2, no
    /// user data.
    #[test]
    fn decodes_a_java_assignment() {
        let bytes = [
            0, 1, // version 1
            0, 0, 0, 1, // one topic
            0, 2, b't', b'0', // "t0"
            0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, // partitions 0 and 2
            0xff, 0xff, 0xff, 0xff, // user data: null
        ];
        assert_eq!(decode_assignment(&bytes).unwrap(), tps(&[("t0", 0), ("t0", 2)]));
        let newer = [&[0u8, 7][..], &bytes[2..]].concat();
        assert_eq!(decode_assignment(&newer).unwrap(), tps(&[("t0", 0), ("t0", 2)]));
    }

    fn assert_corrupt<T: std::fmt::Debug>(got: Result<T>, what: &str, input: &[u8]) {
        match got {
            Err(Error::CorruptData(m)) => assert!(m.contains(what), "{m} for {input:?}"),
            other => panic!("{other:?} for {input:?}"),
        }
    }

    #[test]
    fn every_truncation_is_corrupt() {
        let sub = encode_subscription(&["alpha".to_string(), "beta".to_string()]);
        for n in 0..sub.len() {
            assert_corrupt(decode_subscription(&sub[..n]), "subscription", &sub[..n]);
        }
        let asg = encode_assignment(&tps(&[("alpha", 0), ("alpha", 1), ("beta", 9)]));
        for n in 1..asg.len() {
            assert_corrupt(decode_assignment(&asg[..n]), "assignment", &asg[..n]);
        }
    }

    #[test]
    fn absurd_lengths_and_garbage_are_corrupt() {
        let cases: &[&[u8]] = &[
            &[0xff, 0xff],                                                 // version -1
            &[0, 0, 0x7f, 0xff, 0xff, 0xff, 0, 1, b'x'],                   // 2^31-1 entries claimed
            &[0, 0, 0x80, 0, 0, 0],                                        // negative entries
            &[0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],                   // null array
            &[0, 0, 0, 0, 0, 1, 0x7f, 0xff, 0, 0, 0, 0],                   // string longer than the bytes
            &[0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff],                   // null topic name
            &[0, 0, 0, 0, 0, 1, 0, 2, 0xc3, 0x28, 0xff, 0xff, 0xff, 0xff], // not UTF-8
            &[0, 0, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff],                   // user data longer than the bytes
            &[0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0],                            // negative user data length
        ];
        for bytes in cases {
            assert_corrupt(decode_subscription(bytes), "subscription", bytes);
            assert_corrupt(decode_assignment(bytes), "assignment", bytes);
        }
        // A nested array claiming 2^31-1 partition ids.
        let nested = [0, 1, 0, 0, 0, 1, 0, 1, b't', 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        assert_corrupt(decode_assignment(&nested), "assigned partition ids", &nested);
        let owned = [
            0, 1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0, 1, b't', 0x7f, 0xff, 0xff, 0xff,
        ];
        assert_corrupt(decode_subscription(&owned), "owned partition ids", &owned);
        assert_corrupt(decode_subscription(&[7]), "too short", &[7]);
        assert_corrupt(decode_assignment(&[7]), "too short", &[7]);

        // Random bytes: never a panic.
        let mut rng = Rng(42);
        for _ in 0..20_000 {
            let len = rng.below(40) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
            // Mostly small versions and lengths, so decoding gets past the first fields.
            if len >= 2 {
                bytes[0] = 0;
                bytes[1] = rng.below(5) as u8;
            }
            for b in bytes.iter_mut().skip(2).step_by(2) {
                if rng.below(3) == 0 {
                    *b = 0;
                }
            }
            let _ = decode_subscription(&bytes);
            let _ = decode_assignment(&bytes);
        }
    }
}
