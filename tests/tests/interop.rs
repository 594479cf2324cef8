//! Interop with a real Kafka client, librdkafka (confluent-kafka's wheel, set up by
//! scripts/interop-setup.sh): what our destination writes librdkafka reads, and what
//! librdkafka writes our source reads, through the host and the real broker.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use connector_host::wit::{Change, Data, Operation, Record};
use integration_tests::interop::{KRecord, librdkafka_consume, librdkafka_produce, librdkafka_produce_with};
use integration_tests::*;
use kafka_connector::position::Position;

/// Codecs librdkafka writes with in `librdkafka_writes_our_source_reads`.
const CODECS: &[&str] = &["none", "gzip", "snappy", "lz4", "zstd"];

const PARTITIONS: i32 = 3;
const N: usize = 200;

fn bytes(d: &Option<Data>) -> Option<Vec<u8>> {
    d.as_ref().map(|d| match d {
        Data::Raw(b) => b.clone(),
        Data::Structured(s) => s.as_bytes().to_vec(),
    })
}

/// The `id` header every record of these tests carries.
fn id_of(headers: &[(String, Option<Vec<u8>>)]) -> usize {
    let (_, v) = headers.iter().find(|(n, _)| n == "id").expect("an id header");
    String::from_utf8(v.clone().expect("id has a value"))
        .unwrap()
        .parse()
        .unwrap()
}

/// Keys of every sort: none, non-UTF-8 bytes, text, structured (written as its JSON text),
/// empty (not null); most repeat, so one key's records must stay in order on one partition.
fn key(i: usize) -> Option<Data> {
    match i % 6 {
        0 => None,
        1 => Some(Data::Raw(vec![0xff, 0x00, (i % 13) as u8, 0xc3])),
        2 => Some(Data::Raw(format!("user-{}", i % 17).into_bytes())),
        3 => Some(Data::Structured(format!("{{\"id\":{}}}", i % 7))),
        4 => Some(Data::Raw(vec![0x80 | (i % 64) as u8; i % 9 + 1])),
        _ if i % 12 == 5 => Some(Data::Raw(vec![])),
        _ => None,
    }
}

/// Values: null, empty (not null), structured, non-UTF-8 bytes of many lengths.
fn value(i: usize) -> Option<Data> {
    match i % 5 {
        0 => None,
        1 => Some(Data::Raw(vec![])),
        2 => Some(Data::Structured(format!("{{\"n\":{i}}}"))),
        _ => Some(Data::Raw((0..i).map(|b| (b * 7 + 0x80) as u8).collect())),
    }
}

fn created_ms(i: usize) -> i64 {
    1_700_000_000_000 + i as i64
}

type Headers = Vec<(String, Option<Vec<u8>>)>;

/// Record `i` for our destination, and the headers it must carry in Kafka.
fn our_record(i: usize) -> (Record, Headers) {
    let mut metadata = vec![
        ("id".to_string(), i.to_string()),
        (
            "opencdc.createdAt".to_string(),
            (created_ms(i) * 1_000_000).to_string(),
        ),
        ("kafka.header.trace".to_string(), format!("tr-{i}")),
        ("note".to_string(), "grüße €".to_string()),
    ];
    if i.is_multiple_of(7) {
        metadata.push(("empty".to_string(), String::new()));
    }
    let headers = metadata
        .iter()
        .filter(|(k, _)| k != "opencdc.createdAt")
        .map(|(k, v)| {
            let name = k.strip_prefix("kafka.header.").unwrap_or(k).to_string();
            (name, Some(v.clone().into_bytes()))
        })
        .collect();
    let rec = Record {
        position: vec![],
        operation: Operation::Create,
        metadata,
        key: key(i),
        payload: Change {
            before: None,
            after: value(i),
        },
    };
    (rec, headers)
}

/// Per partition, offsets must run 0, 1, 2... and the ids (the order written) increase.
fn assert_partition_order(read: &[(i32, i64, usize)]) {
    let mut per_partition: BTreeMap<i32, Vec<(i64, usize)>> = BTreeMap::new();
    for &(p, o, id) in read {
        per_partition.entry(p).or_default().push((o, id));
    }
    for (p, recs) in &per_partition {
        let offsets: Vec<i64> = recs.iter().map(|r| r.0).collect();
        assert_eq!(
            offsets,
            (0..recs.len() as i64).collect::<Vec<_>>(),
            "offsets of partition {p}"
        );
        let ids: Vec<usize> = recs.iter().map(|r| r.1).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "partition {p} out of order: {ids:?}"
        );
    }
}

#[tokio::test]
async fn our_destination_writes_librdkafka_reads() {
    let topic = new_topic("interop-dst", PARTITIONS);
    let (records, headers): (Vec<Record>, Vec<_>) = (0..N).map(our_record).unzip();

    let mut dst = destination(&allow_broker()).await;
    dst.open(&config(&[("servers", &broker()), ("topic", &topic)]))
        .await
        .expect("open destination");
    // Several write calls, so records without a key go to more than one partition.
    for chunk in records.chunks(50) {
        let (n, err) = dst.write(chunk).await.unwrap();
        assert_eq!((n as usize, err.map(|e| e.to_string())), (chunk.len(), None));
    }
    dst.teardown().await.unwrap();

    let read = librdkafka_consume(&topic, N);
    assert_eq!(read.len(), N);
    let mut by_id: HashMap<usize, &KRecord> = HashMap::new();
    for r in &read {
        assert!(
            by_id.insert(id_of(&r.headers), r).is_none(),
            "id read twice: {r:?}"
        );
    }
    for i in 0..N {
        let r = by_id.get(&i).unwrap_or_else(|| panic!("record {i} not read"));
        assert_eq!(r.key, bytes(&records[i].key), "key of {i}");
        assert_eq!(r.value, bytes(&records[i].payload.after), "value of {i}");
        assert_eq!(r.headers, headers[i], "headers of {i}");
        assert_eq!(r.timestamp_ms, Some(created_ms(i)), "timestamp of {i}");
    }
    let placed: Vec<_> = read
        .iter()
        .map(|r| (r.partition.unwrap(), r.offset.unwrap(), id_of(&r.headers)))
        .collect();
    assert_partition_order(&placed);

    // Keyed records sit where librdkafka's Java-compatible partitioner puts the same keys.
    let mut keys: Vec<Vec<u8>> = records.iter().filter_map(|r| bytes(&r.key)).collect();
    keys.sort();
    keys.dedup();
    let probe_topic = new_topic("interop-murmur2", PARTITIONS);
    let probes: Vec<KRecord> = keys
        .iter()
        .map(|k| KRecord {
            key: Some(k.clone()),
            ..KRecord::default()
        })
        .collect();
    librdkafka_produce_with(&probe_topic, &probes, "none", "murmur2_random");
    let theirs: HashMap<Vec<u8>, i32> = librdkafka_consume(&probe_topic, keys.len())
        .into_iter()
        .map(|r| (r.key.expect("keyed"), r.partition.unwrap()))
        .collect();
    assert_eq!(theirs.len(), keys.len());
    for r in &read {
        if let Some(k) = &r.key {
            assert_eq!(r.partition, Some(theirs[k]), "partition of key {k:x?}");
        }
    }
}

#[tokio::test]
async fn librdkafka_writes_our_source_reads() {
    for &codec in CODECS {
        let topic = new_topic(&format!("interop-src-{codec}"), PARTITIONS);
        let produced: Vec<KRecord> = (0..N)
            .map(|i| {
                let mut headers = vec![
                    ("id".to_string(), Some(i.to_string().into_bytes())),
                    ("trace".to_string(), Some(format!("tr-{i}").into_bytes())),
                    ("grüße".to_string(), Some("€ ✓".as_bytes().to_vec())),
                ];
                if i % 9 == 0 {
                    headers.push(("nothing".to_string(), None));
                }
                KRecord {
                    key: bytes(&key(i)),
                    value: bytes(&value(i)),
                    headers,
                    // Most placed by librdkafka's partitioner, some chosen here.
                    partition: (i % 10 == 0).then_some((i / 10) as i32 % PARTITIONS),
                    ..KRecord::default()
                }
            })
            .collect();
        librdkafka_produce(&topic, &produced, codec);
        // Where each record landed, at which offset and time, as librdkafka reads it.
        let truth: HashMap<usize, KRecord> = librdkafka_consume(&topic, N)
            .into_iter()
            .map(|r| (id_of(&r.headers), r))
            .collect();
        assert_eq!(truth.len(), N, "codec {codec}");

        let mut src = source(&allow_broker()).await;
        let cfg = config(&[
            ("servers", &broker()),
            ("topic", &topic),
            ("readFromBeginning", "true"),
        ]);
        src.open(&cfg, None).await.expect("open source");
        let read = read_n(&mut src, N, Duration::from_secs(30)).await;
        assert_eq!(read.len(), N, "codec {codec}");
        assert!(
            src.read(10, 300).await.unwrap().is_empty(),
            "codec {codec}: more than {N} records"
        );
        src.teardown().await.unwrap();

        let mut placed = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for r in &read {
            let id: usize = metadata_value(r, "kafka.header.id")
                .expect("id header")
                .parse()
                .unwrap();
            assert!(seen.insert(id), "codec {codec}: record {id} read twice");
            let (want, at) = (&produced[id], &truth[&id]);
            let ctx = format!("codec {codec}, record {id}");
            assert_eq!(bytes(&r.key), want.key, "{ctx}: key");
            assert_eq!(bytes(&r.payload.after), want.value, "{ctx}: value");
            assert!(matches!(r.operation, Operation::Create), "{ctx}");
            // Metadata values are strings: a null header value arrives as "".
            let headers: Vec<(String, String)> = r
                .metadata
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("kafka.header.")?.to_string(), v.clone())))
                .collect();
            let want_headers: Vec<(String, String)> = want
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.clone(),
                        String::from_utf8(v.clone().unwrap_or_default()).unwrap(),
                    )
                })
                .collect();
            assert_eq!(headers, want_headers, "{ctx}: headers");
            let (p, o) = (at.partition.unwrap(), at.offset.unwrap());
            if let Some(chosen) = want.partition {
                assert_eq!(p, chosen, "{ctx}: librdkafka honours the partition");
            }
            assert_eq!(
                metadata_value(r, "opencdc.collection"),
                Some(topic.as_str()),
                "{ctx}"
            );
            assert_eq!(
                metadata_value(r, "kafka.partition"),
                Some(p.to_string().as_str()),
                "{ctx}"
            );
            assert_eq!(
                metadata_value(r, "kafka.offset"),
                Some(o.to_string().as_str()),
                "{ctx}"
            );
            let created = at.timestamp_ms.unwrap() * 1_000_000;
            assert_eq!(
                metadata_value(r, "opencdc.createdAt"),
                Some(created.to_string().as_str()),
                "{ctx}: createdAt"
            );
            let position = Position::decode(&r.position).expect("a position of the connector");
            assert!(!position.group.is_empty(), "{ctx}: the position names the group");
            assert_eq!(
                (position.topic.as_str(), position.partition, position.offset),
                (topic.as_str(), p, o),
                "{ctx}: position"
            );
            placed.push((p, o, id));
        }
        // Our source hands each partition's records over in offset order.
        assert_partition_order(&placed);
    }
}
