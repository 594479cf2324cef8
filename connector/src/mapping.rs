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
use crate::record::*;

/// Where a source record came from; its JSON is the record's position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The consumer group the record was read in.
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl Position {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a position always serializes")
    }

    /// The JSON of every position of one partition up to its offset: built once per
    /// partition, so a record's position costs a copy and a number.
    pub fn prefix(group: &str, topic: &str, partition: i32) -> Vec<u8> {
        let mut json = Position {
            group: group.into(),
            topic: topic.into(),
            partition,
            offset: 0,
        }
        .encode();
        json.truncate(json.len() - "0}".len());
        json
    }

    /// A position from a partition's `prefix` and an offset.
    pub fn with_prefix(prefix: &[u8], offset: i64) -> Vec<u8> {
        let mut json = Vec::with_capacity(prefix.len() + 21);
        json.extend_from_slice(prefix);
        json.extend_from_slice(offset.to_string().as_bytes());
        json.push(b'}');
        json
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| {
            Error::InvalidState(format!(
                "not a position of this connector ({e}): {}",
                String::from_utf8_lossy(bytes)
            ))
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

/// Builds the OpenCDC record for a Kafka record read in `group` from `topic`/`partition`.
/// `prefix` is the partition's `Position::prefix`.
pub fn from_kafka(prefix: &[u8], topic: &str, partition: i32, r: KafkaRecord, read_at_ns: i64) -> Record {
    let position = Position::with_prefix(prefix, r.offset);
    let mut metadata = vec![
        (COLLECTION.to_string(), topic.to_string()),
        (
            CREATED_AT.to_string(),
            r.timestamp.saturating_mul(1_000_000).to_string(),
        ),
        (READ_AT.to_string(), read_at_ns.to_string()),
        (PARTITION.to_string(), partition.to_string()),
        (OFFSET.to_string(), r.offset.to_string()),
    ];
    for (name, value) in r.headers {
        let value = value
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default();
        metadata.push((format!("{HEADER_PREFIX}{}", &*name), value));
    }
    Record {
        position,
        operation: Operation::Create,
        metadata,
        key: r.key.map(|k| Data::Raw(k.to_vec())),
        before: None,
        after: r.value.map(|v| Data::Raw(v.to_vec())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

        let mut k = k;
        k.offset = 42;
        let back = from_kafka(&Position::prefix("g", "t", 3), "t", 3, k, 7);
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
        let back = from_kafka(&Position::prefix("g", "t", 0), "t", 0, k, 0);
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
    fn a_position_from_a_prefix_is_the_same_json() {
        let whole = Position {
            group: "g \"1\"".into(),
            topic: "t".into(),
            partition: 2,
            offset: 1234,
        };
        let fast = Position::with_prefix(&Position::prefix("g \"1\"", "t", 2), 1234);
        assert_eq!(fast, whole.encode());
        assert_eq!(Position::decode(&fast).unwrap(), whole);
    }
}
