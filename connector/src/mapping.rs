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

use crate::config::{HeaderSelection, ValueFormat};
use crate::error::{Error, Result};
use crate::kafka::protocol::batch::RawRecord;
use crate::position::Position;
use crate::record::*;

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
        ValueFormat::OpenCdc => Some(Bytes::from(opencdc_json(&rec)?)),
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

/// The whole record as OpenCDC JSON (the encoding Conduit and the bundled host use).
fn opencdc_json(rec: &Record) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    connector_format::opencdc_json::write(rec, &mut out).map_err(|e| Error::InvalidRecord(e.0))?;
    Ok(out)
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

/// An integer as text, allocated at its exact length.
fn number(n: i64) -> String {
    itoa::Buffer::new().format(n).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::protocol::batch;

    /// `k` written at `offset` in a batch, read back by a source of group "g" from
    /// partition 3 of topic "t" at read time 7.
    fn through_kafka(k: KafkaRecord, offset: i64) -> Record {
        let mut bytes = bytes::BytesMut::from(
            &batch::encode(&mut [k], -1, kafka_protocol::records::Compression::None).unwrap()[..],
        );
        bytes[0..8].copy_from_slice(&offset.to_be_bytes());
        let mut fetched = batch::decode_batches(bytes.freeze(), 0, "t-3", &mut { usize::MAX }).unwrap();
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
    fn structured_data_that_is_no_json_object_is_an_invalid_record_in_the_opencdc_format() {
        let mut r = rec(&[]);
        r.key = Some(Data::Structured("{not json".into()));
        match to_kafka(r, 0, &HeaderSelection::None, ValueFormat::OpenCdc) {
            Err(Error::InvalidRecord(m)) => {
                assert_eq!(m, "key is structured data that is not a JSON object")
            }
            other => panic!("{other:?}"),
        }
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
