//! The consumer protocol's bytes ("consumer" protocol type), which members exchange
//! through the coordinator without the broker reading them: the member metadata (JoinGroup
//! `protocols[].metadata`, `members[].metadata`) and the assignment (SyncGroup
//! `assignments[].assignment` and the response's `assignment`). Both are a big-endian i16
//! version followed by kafka-protocol's `ConsumerProtocolSubscription` /
//! `ConsumerProtocolAssignment` at that version.
//!
//! Decoding reads bytes written by other clients, so it never trusts them: a length prefix
//! is checked against the bytes that remain before kafka-protocol sees it (kafka-protocol
//! preallocates a `Vec` from an array's claimed length), and anything malformed is
//! `Error::CorruptData` naming what was being decoded.

use bytes::{BufMut, Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};

use crate::error::{Error, Result};

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
pub fn encode_assignment(parts: &[(String, i32)]) -> Bytes {
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
pub fn decode_assignment(data: &[u8]) -> Result<Vec<(String, i32)>> {
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

    fn tps(pairs: &[(&str, i32)]) -> Vec<(String, i32)> {
        pairs.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    /// A small deterministic generator (xorshift), for the garbage test below.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
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
