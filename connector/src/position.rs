//! A source record's position: where it was read (group, topic, partition, offset), so
//! `open` finds the group again and `ack` finds the partition and offset.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a source record came from.
///
/// Encoded compactly (version 1): `0xCF 0x01`, the group (u16 length, bytes), the topic
/// (u16 length, bytes), the partition (i32) and the offset (i64), big-endian. Everything
/// but the offset is the same for one partition, so a record's position is a copy of its
/// partition's `prefix` and eight bytes, and an ack reads it without allocating. JSON
/// positions (`{"group","topic","partition","offset"}`, written before version 1) are
/// still read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The consumer group the record was read in.
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The longest group or topic name: a Kafka string's length is an i16.
pub const MAX_NAME: usize = i16::MAX as usize;

/// The first bytes of a binary position: a marker no JSON text starts with, and the version.
const POSITION_V1: [u8; 2] = [0xCF, 0x01];
/// Partition and offset, after the group and topic.
const POSITION_TAIL: usize = 4 + 8;

/// A position read in place (see `Position`): what an ack needs, without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositionRef<'a> {
    pub group: &'a [u8],
    pub topic: &'a [u8],
    pub partition: i32,
    pub offset: i64,
}

impl<'a> PositionRef<'a> {
    /// A binary position; `None` if `bytes` is not one (a JSON one, or garbage).
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        // An array compare, not `strip_prefix`: that calls `memcmp` (see `same_bytes`).
        let (marker, rest) = bytes.split_first_chunk::<2>()?;
        if *marker != POSITION_V1 {
            return None;
        }
        let (group, rest) = split_short_string(rest)?;
        let (topic, rest) = split_short_string(rest)?;
        let tail: &[u8; POSITION_TAIL] = rest.try_into().ok()?;
        Some(PositionRef {
            group,
            topic,
            partition: i32::from_be_bytes(tail[..4].try_into().expect("4 bytes")),
            offset: i64::from_be_bytes(tail[4..].try_into().expect("8 bytes")),
        })
    }
}

/// Whether `a` and `b` hold the same bytes, compared eight at a time. `==` on slices
/// calls `memcmp`, which wasi-libc runs a byte at a time, and every ack compares a group
/// and a topic: with `==` that was a fifth of the instructions of reading a record.
#[inline]
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .fold(0, |d, (x, y)| d | (x ^ y));
    let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().expect("8 bytes"));
    a8.zip(b8).fold(0, |d, (x, y)| d | (word(x) ^ word(y))) == 0 && tail == 0
}

/// A u16-length-prefixed byte string at the start of `b`, and what follows it.
fn split_short_string(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u16::from_be_bytes(b.get(..2)?.try_into().ok()?) as usize;
    let rest = &b[2..];
    (rest.len() >= len).then(|| rest.split_at(len))
}

impl Position {
    pub fn encode(&self) -> Vec<u8> {
        Position::with_prefix(
            &Position::prefix(&self.group, &self.topic, self.partition),
            self.offset,
        )
    }

    /// Every position of one partition up to its offset: built once per partition, so a
    /// record's position costs a copy and eight bytes. Group and topic names are at most
    /// `MAX_NAME` bytes (config and `decode` check), so their lengths fit; a longer one
    /// would be cut, never a panic.
    pub fn prefix(group: &str, topic: &str, partition: i32) -> Vec<u8> {
        let mut b = Vec::with_capacity(POSITION_V1.len() + 4 + group.len() + topic.len() + 4);
        b.extend_from_slice(&POSITION_V1);
        for s in [group, topic] {
            let s = &s.as_bytes()[..s.len().min(MAX_NAME)];
            b.extend_from_slice(&(s.len() as u16).to_be_bytes());
            b.extend_from_slice(s);
        }
        b.extend_from_slice(&partition.to_be_bytes());
        b
    }

    /// A position from a partition's `prefix` and an offset (exactly as long as it needs).
    pub fn with_prefix(prefix: &[u8], offset: i64) -> Vec<u8> {
        let mut b = Vec::with_capacity(prefix.len() + 8);
        b.extend_from_slice(prefix);
        b.extend_from_slice(&offset.to_be_bytes());
        b
    }

    /// A position of either encoding.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let invalid = |why: String| {
            Error::InvalidState(format!(
                "not a position of this connector ({why}): {}",
                String::from_utf8_lossy(bytes)
            ))
        };
        let p: Position = if bytes.first() == Some(&b'{') {
            serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?
        } else {
            let p = PositionRef::parse(bytes).ok_or_else(|| invalid("malformed".into()))?;
            let text =
                |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| invalid("a name is not UTF-8".into()));
            Position {
                group: text(p.group)?,
                topic: text(p.topic)?,
                partition: p.partition,
                offset: p.offset,
            }
        };
        if p.group.len().max(p.topic.len()) > MAX_NAME {
            return Err(invalid(format!("a name longer than {MAX_NAME} bytes")));
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_is_slice_equality() {
        let a: Vec<u8> = (0..40).collect();
        let copy = a.clone();
        for len in 0..a.len() {
            assert!(same_bytes(&a[..len], &copy[..len]));
            assert!(!same_bytes(&a[..len], &a[..len + 1]));
            for at in 0..len {
                let mut b = a[..len].to_vec();
                b[at] ^= 0x80;
                assert!(!same_bytes(&a[..len], &b), "length {len}, differing at {at}");
            }
        }
    }

    #[test]
    fn a_position_from_a_prefix_is_the_whole_position() {
        let whole = Position {
            group: "g \"1\"".into(),
            topic: "t".into(),
            partition: 2,
            offset: 1234,
        };
        let fast = Position::with_prefix(&Position::prefix("g \"1\"", "t", 2), 1234);
        assert_eq!(fast, whole.encode());
        assert_eq!(
            fast.len(),
            fast.capacity(),
            "crosses the boundary without a shrinking copy"
        );
        assert_eq!(Position::decode(&fast).unwrap(), whole);
        let r = PositionRef::parse(&fast).unwrap();
        assert_eq!(
            (r.group, r.topic, r.partition, r.offset),
            (&b"g \"1\""[..], &b"t"[..], 2, 1234)
        );
    }

    #[test]
    fn a_name_too_long_for_kafka_is_refused_not_a_panic() {
        let long = "g".repeat(MAX_NAME + 1);
        let json = format!(r#"{{"group":"{long}","topic":"t","partition":1,"offset":7}}"#);
        let e = Position::decode(json.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("longer than 32767 bytes"), "{}", &e[..80]);
        let p = Position::prefix(&long, "t", 0);
        assert_eq!(
            PositionRef::parse(&Position::with_prefix(&p, 1))
                .unwrap()
                .group
                .len(),
            MAX_NAME
        );
    }

    #[test]
    fn json_positions_of_earlier_versions_are_still_read() {
        let json = br#"{"group":"g","topic":"t","partition":1,"offset":7}"#;
        let p = Position::decode(json).unwrap();
        assert_eq!(
            (p.group.as_str(), p.topic.as_str(), p.partition, p.offset),
            ("g", "t", 1, 7)
        );
        assert!(PositionRef::parse(json).is_none());
    }

    #[test]
    fn malformed_positions_are_refused() {
        let good = Position::with_prefix(&Position::prefix("g", "t", 0), 1);
        for bad in [
            &good[..good.len() - 1],
            &good[..3],
            b"",
            &[0xCF, 0x02, 0, 0, 0, 0],
        ] {
            assert!(PositionRef::parse(bad).is_none(), "{bad:?}");
            assert!(Position::decode(bad).is_err(), "{bad:?}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(PositionRef::parse(&long).is_none());
    }
}
