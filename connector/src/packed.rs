//! Where a source puts the records it hands out (`Sink`): a list of records, or a packed
//! `record-batch` (`Packed`) built straight from the fetched Kafka records.

use connector_format::record_batch::{Buffers, Builder, PackedSpans, Span, Value};

use crate::kafka::protocol::batch::RawRecord;
use crate::mapping::{SourcePartition, from_kafka};
use crate::record::*;

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

/// Records packed into a `record-batch` as they are read: building one allocates per
/// batch, not per record. Text that every record shares (metadata keys, the topic, the
/// partition, the read time) is written once per batch and referred to by every record.
/// The records are those `mapping::from_kafka` builds, without building them.
#[derive(Debug, Default)]
pub struct Packed {
    batch: Builder,
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

/// Metadata entries every record starts with (see `mapping::from_kafka`).
const STANDARD_ENTRIES: u32 = 5;

/// The most a batch's bytes or text hold before the sink is full: spans are u32, and a
/// batch far below that is plenty for one call.
const PACKED_LIMIT: usize = 1 << 30;

impl Packed {
    pub fn with_capacity(records: usize) -> Self {
        Packed {
            batch: Builder::with_capacity(records, 192),
            ..Default::default()
        }
    }

    /// The batch's buffers.
    pub fn finish(self) -> connector_format::Result<Buffers> {
        self.batch.finish()
    }

    /// Every record, owned (for tests).
    #[cfg(test)]
    pub fn to_records(&self) -> Vec<Record> {
        self.batch
            .batch()
            .unwrap()
            .iter()
            .map(|r| r.to_record())
            .collect()
    }

    fn shared(&mut self, read_at: &str) -> Shared {
        if let Some(s) = self.shared {
            return s;
        }
        let b = &mut self.batch;
        let s = Shared {
            collection: b.add_text(COLLECTION),
            created_at: b.add_text(CREATED_AT),
            read_at_key: b.add_text(READ_AT),
            partition: b.add_text(PARTITION),
            offset: b.add_text(OFFSET),
            read_at: b.add_text(read_at),
        };
        self.shared = Some(s);
        s
    }

    /// The spans of `part`'s topic and partition text, written on first use.
    fn part(&mut self, part: &SourcePartition) -> (Span, Span) {
        let key = part as *const SourcePartition;
        if let Some(&(_, t, p)) = self.parts.iter().find(|(k, _, _)| *k == key) {
            return (t, p);
        }
        let t = self.batch.add_text(&part.topic);
        let p = self.batch.add_text(&part.partition);
        self.parts.push((key, t, p));
        (t, p)
    }

    fn created_at(&mut self, timestamp: i64) -> Span {
        match self.last_created_at {
            Some((t, span)) if t == timestamp => span,
            _ => {
                let ns = timestamp.saturating_mul(1_000_000);
                let span = self.batch.add_text(itoa::Buffer::new().format(ns));
                self.last_created_at = Some((timestamp, span));
                span
            }
        }
    }

    /// Adds the headers as `kafka.header.*` entries after the record's standard ones.
    /// Headers are a map: a repeated name keeps its first place and its last value.
    fn headers(&mut self, r: &RawRecord<'_>, first: u32) {
        for (name, value) in r.headers() {
            let b = &mut self.batch;
            let key = b.add_text_of(&[HEADER_PREFIX, &String::from_utf8_lossy(name)]);
            let value = b.add_text(&value.map(String::from_utf8_lossy).unwrap_or_default());
            let entries = first..b.entries();
            let text = b.text_of(key);
            match entries
                .into_iter()
                .find(|&i| b.entry_key(i).and_then(|k| b.text_of(k)) == text)
            {
                Some(i) => b.set_entry_value(i, value),
                None => b.add_entry(key, value),
            }
        }
    }
}

impl Sink for Packed {
    fn push(&mut self, part: &SourcePartition, r: &RawRecord<'_>, read_at: &str) {
        let shared = self.shared(read_at);
        let (topic, partition) = self.part(part);
        let created_at = self.created_at(r.timestamp);
        let b = &mut self.batch;
        let offset = b.add_text(itoa::Buffer::new().format(r.offset));
        let first = b.entries();
        for (k, v) in [
            (shared.collection, topic),
            (shared.created_at, created_at),
            (shared.read_at_key, shared.read_at),
            (shared.partition, partition),
            (shared.offset, offset),
        ] {
            b.add_entry(k, v);
        }
        self.headers(r, first + STANDARD_ENTRIES);
        let b = &mut self.batch;
        let position = b.add_bytes_of(&[&part.prefix, &r.offset.to_be_bytes()]);
        let key = r.key.map(|k| Value::Raw(b.add_bytes(k)));
        let after = r.value.map(|v| Value::Raw(b.add_bytes(v)));
        let metadata = Span {
            start: first,
            len: b.entries() - first,
        };
        b.add_record(&PackedSpans {
            position,
            operation: Operation::Create,
            metadata,
            key,
            before: None,
            after,
        });
    }

    fn len(&self) -> usize {
        self.batch.len()
    }

    fn full(&self) -> bool {
        self.batch.past(PACKED_LIMIT)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::Record as KafkaRecord;

    use super::*;
    use crate::config::{HeaderSelection, ValueFormat};
    use crate::kafka::protocol::batch;
    use crate::mapping::to_kafka;

    fn rec() -> Record {
        Record {
            position: vec![],
            operation: Operation::Create,
            metadata: vec![],
            key: Some(Data::Structured("{\"id\":1}".into())),
            before: None,
            after: Some(Data::Raw(vec![0, 1, 2])),
        }
    }

    #[test]
    fn a_packed_batch_holds_the_same_records() {
        let mut ks: Vec<KafkaRecord> = (0..5)
            .map(|i| {
                let mut k = to_kafka(rec(), 1_000 + i, &HeaderSelection::All, ValueFormat::Raw).unwrap();
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
            let mut fetched = batch::decode_batches(data.clone(), 0, "t-3", &mut { usize::MAX }).unwrap();
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
        let text = packed.finish().unwrap().text;
        assert_eq!(text.matches(COLLECTION).count(), 1, "shared text is written once");
    }
}
