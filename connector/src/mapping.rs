//! Mapping between OpenCDC records and Kafka records, both ways.
//!
//! Destination: key → key (a null key stays null), `payload.after` → value, metadata →
//! headers, `opencdc.createdAt` → timestamp. A header read by this connector's source
//! (`kafka.header.X`) is written back as header `X`, so Kafka-to-Kafka keeps headers as
//! they were. Keys that describe where the source read a record (`opencdc.collection`,
//! `kafka.partition`, `kafka.offset`) are not written as headers.
//!
//! Source: the reverse, plus `kafka.partition`, `kafka.offset`, `opencdc.readAt`.

use bytes::Bytes;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Record as KafkaRecord, TimestampType};
use serde::{Deserialize, Serialize};

use crate::config::{HeaderSelection, ValueFormat};
use crate::error::{Error, Result};
use crate::kafka::protocol::batch::RawRecord;
use crate::record::*;

/// Where a source record came from: the record's position, so `open` with it finds the
/// group again and `ack` finds the partition and offset.
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
    /// 32767 bytes in Kafka, so their lengths fit.
    pub fn prefix(group: &str, topic: &str, partition: i32) -> Vec<u8> {
        let mut b = Vec::with_capacity(POSITION_V1.len() + 4 + group.len() + topic.len() + 4);
        b.extend_from_slice(&POSITION_V1);
        for s in [group, topic] {
            let len = u16::try_from(s.len()).expect("Kafka names are shorter than 32768 bytes");
            b.extend_from_slice(&len.to_be_bytes());
            b.extend_from_slice(s.as_bytes());
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
        if bytes.first() == Some(&b'{') {
            return serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()));
        }
        let p = PositionRef::parse(bytes).ok_or_else(|| invalid("malformed".into()))?;
        let text =
            |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| invalid("a name is not UTF-8".into()));
        Ok(Position {
            group: text(p.group)?,
            topic: text(p.topic)?,
            partition: p.partition,
            offset: p.offset,
        })
    }
}

/// Builds the Kafka record for `rec`; `now_ms` is the timestamp when there is no
/// `opencdc.createdAt`. `headers` picks the metadata written as headers; `format` what
/// the value holds.
pub fn to_kafka(
    rec: Record,
    now_ms: i64,
    headers: &HeaderSelection,
    format: ValueFormat,
) -> Result<KafkaRecord> {
    let timestamp = match rec.metadata.iter().find(|(k, _)| k == CREATED_AT) {
        Some((_, v)) => created_at_ms(v)?,
        None => now_ms,
    };
    let value = match format {
        ValueFormat::Raw => rec.after.clone().map(|v| Bytes::from(v.into_bytes())),
        ValueFormat::OpenCdc => Some(Bytes::from(opencdc_json(&rec))),
    };
    let mut kafka_headers = indexmap::IndexMap::new();
    for (k, v) in rec.metadata {
        if matches!(k.as_str(), CREATED_AT | COLLECTION | PARTITION | OFFSET | READ_AT)
            || !headers.includes(&k)
        {
            continue;
        }
        let name = k.strip_prefix(HEADER_PREFIX).map(str::to_string).unwrap_or(k);
        kafka_headers.insert(StrBytes::from_string(name), Some(Bytes::from(v)));
    }
    Ok(KafkaRecord {
        transactional: false,
        control: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp,
        key: rec.key.map(|k| Bytes::from(k.into_bytes())),
        value,
        headers: kafka_headers,
        delete_horizon: false,
    })
}

/// The whole record as OpenCDC JSON: raw data and the position as base64, structured
/// data as JSON objects (the encoding Conduit and the bundled host use).
fn opencdc_json(rec: &Record) -> Vec<u8> {
    use base64::Engine as _;
    let b64 = |b: &[u8]| serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(b));
    let data = |d: &Option<Data>| match d {
        None => serde_json::Value::Null,
        Some(Data::Raw(b)) => b64(b),
        Some(Data::Structured(s)) => {
            serde_json::from_str(s).unwrap_or_else(|_| serde_json::Value::String(s.clone()))
        }
    };
    let operation = match rec.operation {
        Operation::Create => "create",
        Operation::Update => "update",
        Operation::Delete => "delete",
        Operation::Snapshot => "snapshot",
    };
    let metadata: serde_json::Map<String, serde_json::Value> = rec
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let json = serde_json::json!({
        "position": b64(&rec.position),
        "operation": operation,
        "metadata": metadata,
        "key": data(&rec.key),
        "payload": { "before": data(&rec.before), "after": data(&rec.after) },
    });
    serde_json::to_vec(&json).expect("a JSON value always serializes")
}

/// `opencdc.createdAt` is unix nanoseconds; Kafka timestamps are milliseconds.
fn created_at_ms(v: &str) -> Result<i64> {
    v.trim()
        .parse::<i64>()
        .map(|ns| ns.div_euclid(1_000_000))
        .map_err(|_| Error::InvalidRecord(format!("{CREATED_AT} \"{v}\" is not unix nanoseconds")))
}

/// What every record read from one partition shares, built once per partition.
#[derive(Debug, Clone)]
pub struct SourcePartition {
    /// Its `Position::prefix`.
    pub prefix: Vec<u8>,
    pub topic: String,
    /// The partition number as text.
    pub partition: String,
}

impl SourcePartition {
    pub fn new(group: &str, topic: &str, partition: i32) -> Self {
        SourcePartition {
            prefix: Position::prefix(group, topic, partition),
            topic: topic.to_string(),
            partition: partition.to_string(),
        }
    }
}

/// Builds the OpenCDC record for a Kafka record read from `part`, handed out at
/// `read_at` (unix nanoseconds, as text). Every string is allocated at its exact length,
/// so none is copied again on its way across the boundary.
pub fn from_kafka(part: &SourcePartition, r: &RawRecord<'_>, read_at: &str) -> Record {
    let mut metadata = Vec::with_capacity(5 + r.header_count());
    metadata.push((COLLECTION.to_owned(), part.topic.clone()));
    metadata.push((
        CREATED_AT.to_owned(),
        number(r.timestamp.saturating_mul(1_000_000)),
    ));
    metadata.push((READ_AT.to_owned(), read_at.to_owned()));
    metadata.push((PARTITION.to_owned(), part.partition.clone()));
    metadata.push((OFFSET.to_owned(), number(r.offset)));
    for (name, value) in r.headers() {
        let name = String::from_utf8_lossy(name);
        let mut key = String::with_capacity(HEADER_PREFIX.len() + name.len());
        key.push_str(HEADER_PREFIX);
        key.push_str(&name);
        let value = value
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        // Headers are a map: a repeated name keeps its first place and its last value.
        match metadata[5..].iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => metadata.push((key, value)),
        }
    }
    Record {
        position: Position::with_prefix(&part.prefix, r.offset),
        operation: Operation::Create,
        metadata,
        key: r.key.map(|k| Data::Raw(k.to_vec())),
        before: None,
        after: r.value.map(|v| Data::Raw(v.to_vec())),
    }
}

/// Where a source puts the records it hands out.
pub trait Sink {
    /// Adds the record `r` of `part`, handed out at `read_at` (unix nanoseconds, as text).
    fn push(&mut self, part: &SourcePartition, r: &RawRecord<'_>, read_at: &str);
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether it takes no more records (whatever `max` says).
    fn full(&self) -> bool {
        false
    }
}

impl Sink for Vec<Record> {
    fn push(&mut self, part: &SourcePartition, r: &RawRecord<'_>, read_at: &str) {
        Vec::push(self, from_kafka(part, r, read_at));
    }
    fn len(&self) -> usize {
        Vec::len(self)
    }
}

/// A span of a `Packed` buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub len: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackedData {
    /// In `bytes`.
    Raw(Span),
    /// In `text`.
    Structured(Span),
}

/// A record of a `Packed` batch (a source's records are creates without a before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedRecord {
    pub position: Span,
    pub metadata_start: u32,
    pub metadata_len: u32,
    pub key: Option<PackedData>,
    pub after: Option<PackedData>,
}

/// Records packed into a few buffers (the WIT `record-batch`): building one allocates
/// per batch, not per record, and it crosses the boundary as four copies. Text that
/// every record shares (metadata keys, the topic, the partition, the read time) is
/// written once per batch and referred to by every record.
#[derive(Debug, Default)]
pub struct Packed {
    pub bytes: Vec<u8>,
    pub text: String,
    pub metadata: Vec<(Span, Span)>,
    pub records: Vec<PackedRecord>,
    /// Spans of the standard keys and of the read time, once written.
    shared: Option<Shared>,
    /// Per partition slot seen in this batch: its topic and partition spans.
    parts: Vec<(*const SourcePartition, Span, Span)>,
    /// The last record's timestamp and the span of its `opencdc.createdAt` text: records
    /// of one producer batch mostly share their millisecond, and then their text.
    last_created_at: Option<(i64, Span)>,
}

#[derive(Debug, Clone, Copy)]
struct Shared {
    collection: Span,
    created_at: Span,
    read_at_key: Span,
    partition: Span,
    offset: Span,
    read_at: Span,
}

/// The most `Packed::bytes` or `text` hold: spans are u32, and a batch far below that
/// is plenty for one call.
const PACKED_LIMIT: usize = 1 << 30;

impl Packed {
    pub fn with_capacity(records: usize) -> Self {
        Packed {
            bytes: Vec::with_capacity(records * 192),
            text: String::with_capacity(records * 32),
            metadata: Vec::with_capacity(records * 5),
            records: Vec::with_capacity(records),
            ..Default::default()
        }
    }

    fn text(&mut self, s: &str) -> Span {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        Span {
            start,
            len: s.len() as u32,
        }
    }

    fn bytes(&mut self, b: &[u8]) -> Span {
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(b);
        Span {
            start,
            len: b.len() as u32,
        }
    }

    fn number(&mut self, n: i64) -> Span {
        self.text(itoa::Buffer::new().format(n))
    }

    /// The spans of `part`'s topic and partition text, written on first use.
    fn part(&mut self, part: &SourcePartition) -> (Span, Span) {
        let key = part as *const SourcePartition;
        if let Some(&(_, t, p)) = self.parts.iter().find(|(k, _, _)| *k == key) {
            return (t, p);
        }
        let t = self.text(&part.topic);
        let p = self.text(&part.partition);
        self.parts.push((key, t, p));
        (t, p)
    }

    /// Every record as a `Record`, as a host rebuilds them (for tests).
    pub fn to_records(&self) -> Vec<Record> {
        let text = |s: Span| self.text[s.start as usize..(s.start + s.len) as usize].to_string();
        let bytes = |s: Span| self.bytes[s.start as usize..(s.start + s.len) as usize].to_vec();
        let data = |d: PackedData| match d {
            PackedData::Raw(s) => Data::Raw(bytes(s)),
            PackedData::Structured(s) => Data::Structured(text(s)),
        };
        self.records
            .iter()
            .map(|r| Record {
                position: bytes(r.position),
                operation: Operation::Create,
                metadata: self.metadata
                    [r.metadata_start as usize..(r.metadata_start + r.metadata_len) as usize]
                    .iter()
                    .map(|(k, v)| (text(*k), text(*v)))
                    .collect(),
                key: r.key.map(data),
                before: None,
                after: r.after.map(data),
            })
            .collect()
    }
}

impl Sink for Packed {
    fn push(&mut self, part: &SourcePartition, r: &RawRecord<'_>, read_at: &str) {
        let shared = match self.shared {
            Some(s) => s,
            None => {
                let s = Shared {
                    collection: self.text(COLLECTION),
                    created_at: self.text(CREATED_AT),
                    read_at_key: self.text(READ_AT),
                    partition: self.text(PARTITION),
                    offset: self.text(OFFSET),
                    read_at: self.text(read_at),
                };
                self.shared = Some(s);
                s
            }
        };
        let (topic, partition) = self.part(part);
        let metadata_start = self.metadata.len() as u32;
        let created_at = match self.last_created_at {
            Some((t, span)) if t == r.timestamp => span,
            _ => {
                let span = self.number(r.timestamp.saturating_mul(1_000_000));
                self.last_created_at = Some((r.timestamp, span));
                span
            }
        };
        let offset = self.number(r.offset);
        self.metadata.extend_from_slice(&[
            (shared.collection, topic),
            (shared.created_at, created_at),
            (shared.read_at_key, shared.read_at),
            (shared.partition, partition),
            (shared.offset, offset),
        ]);
        for (name, value) in r.headers() {
            let name = String::from_utf8_lossy(name);
            let key_start = self.text.len() as u32;
            self.text.push_str(HEADER_PREFIX);
            self.text.push_str(&name);
            let key = Span {
                start: key_start,
                len: self.text.len() as u32 - key_start,
            };
            let value = self.text(&value.map(String::from_utf8_lossy).unwrap_or_default());
            // Headers are a map: a repeated name keeps its first place and its last value.
            let run = metadata_start as usize + 5..;
            let text = &self.text;
            let key_text = &text[key.start as usize..(key.start + key.len) as usize];
            let same = |s: Span| &text[s.start as usize..(s.start + s.len) as usize] == key_text;
            match self.metadata[run].iter().position(|(k, _)| same(*k)) {
                Some(i) => self.metadata[metadata_start as usize + 5 + i].1 = value,
                None => self.metadata.push((key, value)),
            }
        }
        let position = {
            let start = self.bytes.len() as u32;
            self.bytes.extend_from_slice(&part.prefix);
            self.bytes.extend_from_slice(&r.offset.to_be_bytes());
            Span {
                start,
                len: self.bytes.len() as u32 - start,
            }
        };
        let key = r.key.map(|k| PackedData::Raw(self.bytes(k)));
        let after = r.value.map(|v| PackedData::Raw(self.bytes(v)));
        self.records.push(PackedRecord {
            position,
            metadata_start,
            metadata_len: self.metadata.len() as u32 - metadata_start,
            key,
            after,
        });
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    fn full(&self) -> bool {
        self.bytes.len() >= PACKED_LIMIT || self.text.len() >= PACKED_LIMIT
    }
}

/// An integer as text, allocated at its exact length.
fn number(n: i64) -> String {
    itoa::Buffer::new().format(n).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::protocol::batch;

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

    /// `k` written at `offset` in a batch, read back by a source of group "g" from
    /// partition 3 of topic "t" at read time 7.
    fn through_kafka(k: KafkaRecord, offset: i64) -> Record {
        let mut bytes = bytes::BytesMut::from(
            &batch::encode(&mut [k], -1, kafka_protocol::records::Compression::None).unwrap()[..],
        );
        bytes[0..8].copy_from_slice(&offset.to_be_bytes());
        let mut fetched = batch::decode_batches(bytes.freeze(), 0, "t-3").unwrap();
        let r = fetched.batches[0].next_record().unwrap().unwrap();
        from_kafka(&SourcePartition::new("g", "t", 3), &r, "7")
    }

    fn rec(metadata: &[(&str, &str)]) -> Record {
        Record {
            position: vec![],
            operation: Operation::Create,
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            key: Some(Data::Structured("{\"id\":1}".into())),
            before: None,
            after: Some(Data::Raw(vec![0, 1, 2])),
        }
    }

    #[test]
    fn metadata_becomes_headers_and_comes_back_prefixed() {
        let r = rec(&[
            ("trace", "abc"),
            ("kafka.header.origin", "upstream"),
            (CREATED_AT, "1700000000123456789"),
            (COLLECTION, "ignored"),
            (OFFSET, "9"),
        ]);
        let k = to_kafka(r, 5, &HeaderSelection::All, ValueFormat::Raw).unwrap();
        assert_eq!(k.timestamp, 1_700_000_000_123);
        let names: Vec<_> = k.headers.keys().map(|h| h.to_string()).collect();
        assert_eq!(names, ["trace", "origin"]);
        assert_eq!(k.key.as_deref(), Some(&b"{\"id\":1}"[..]));

        let back = through_kafka(k, 42);
        let get = |key: &str| {
            back.metadata
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("kafka.header.trace"), Some("abc"));
        assert_eq!(get("kafka.header.origin"), Some("upstream"));
        assert_eq!(get(CREATED_AT), Some("1700000000123000000"));
        assert_eq!(get(COLLECTION), Some("t"));
        assert_eq!(get(PARTITION), Some("3"));
        assert_eq!(get(OFFSET), Some("42"));
        assert_eq!(get(READ_AT), Some("7"));
        assert_eq!(back.after, Some(Data::Raw(vec![0, 1, 2])));
        let pos = Position::decode(&back.position).unwrap();
        assert_eq!(
            pos,
            Position {
                group: "g".into(),
                topic: "t".into(),
                partition: 3,
                offset: 42
            }
        );
    }

    #[test]
    fn a_packed_batch_holds_the_same_records() {
        let mut ks: Vec<KafkaRecord> = (0..5)
            .map(|i| {
                let mut k = to_kafka(rec(&[]), 1_000 + i, &HeaderSelection::All, ValueFormat::Raw).unwrap();
                k.offset = i;
                if i % 2 == 0 {
                    k.headers
                        .insert(StrBytes::from_string(format!("h{i}")), Some(Bytes::from("é")));
                }
                if i == 3 {
                    k.key = None;
                }
                k
            })
            .collect();
        let data = batch::encode(&mut ks, -1, kafka_protocol::records::Compression::None).unwrap();
        let parts = [
            SourcePartition::new("g", "t", 3),
            SourcePartition::new("g", "u", 10),
        ];
        let (mut plain, mut packed) = (Vec::new(), Packed::with_capacity(1));
        for (i, part) in parts.iter().enumerate() {
            let mut fetched = batch::decode_batches(data.clone(), 0, "t-3").unwrap();
            while let Some(r) = fetched.batches[0].next_record().unwrap() {
                Sink::push(&mut plain, part, &r, &format!("7{i}"));
                Sink::push(&mut packed, part, &r, "70");
            }
        }
        // One read time per call: the packed batch's first one holds for all.
        for r in &mut plain {
            r.metadata
                .iter_mut()
                .filter(|(k, _)| k == READ_AT)
                .for_each(|(_, v)| *v = "70".into());
        }
        assert_eq!(Sink::len(&packed), 10);
        assert_eq!(packed.to_records(), plain);
        assert_eq!(
            packed.text.matches(COLLECTION).count(),
            1,
            "shared text is written once"
        );
    }

    #[test]
    fn headers_come_back_in_order_and_a_null_value_is_empty() {
        let mut k = to_kafka(rec(&[]), 5, &HeaderSelection::All, ValueFormat::Raw).unwrap();
        k.headers
            .insert(StrBytes::from_static_str("a"), Some(Bytes::from_static(b"1")));
        k.headers.insert(StrBytes::from_static_str("b"), None);
        let back = through_kafka(k, 0);
        let headers: Vec<_> = back.metadata[5..]
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(headers, [("kafka.header.a", "1"), ("kafka.header.b", "")]);
    }

    #[test]
    fn headers_can_be_chosen_and_the_value_can_be_the_whole_record() {
        let r = rec(&[("a", "1"), ("b", "2"), ("kafka.header.c", "3")]);
        let only = HeaderSelection::Keys(vec!["b".into(), "kafka.header.c".into()]);
        let k = to_kafka(r.clone(), 0, &only, ValueFormat::Raw).unwrap();
        let names: Vec<_> = k.headers.keys().map(|h| h.to_string()).collect();
        assert_eq!(names, ["b", "c"]);
        assert!(
            to_kafka(r.clone(), 0, &HeaderSelection::None, ValueFormat::Raw)
                .unwrap()
                .headers
                .is_empty()
        );
        let k = to_kafka(r, 0, &HeaderSelection::None, ValueFormat::OpenCdc).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&k.value.unwrap()).unwrap();
        assert_eq!(v["key"], serde_json::json!({"id": 1}));
        assert_eq!(v["payload"]["after"], "AAEC");
        assert_eq!(v["metadata"]["a"], "1");
        assert_eq!(v["operation"], "create");
    }

    #[test]
    fn nulls_stay_null() {
        let mut r = rec(&[]);
        r.key = None;
        r.after = None;
        let k = to_kafka(r, 5, &HeaderSelection::All, ValueFormat::Raw).unwrap();
        assert_eq!((k.key.clone(), k.value.clone(), k.timestamp), (None, None, 5));
        let back = through_kafka(k, 0);
        assert_eq!((back.key, back.after), (None, None));
    }

    #[test]
    fn a_bad_created_at_is_an_invalid_record() {
        let r = to_kafka(
            rec(&[(CREATED_AT, "yesterday")]),
            0,
            &HeaderSelection::All,
            ValueFormat::Raw,
        );
        assert!(matches!(r, Err(Error::InvalidRecord(_))));
        assert!(Position::decode(b"nope").is_err());
    }
}

#[cfg(test)]
mod position_tests {
    use super::*;

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
