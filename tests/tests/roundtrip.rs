//! Records written through the destination and read back through the source, all
//! through the host and the real broker.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use connector_host::wit::{self, Data, Operation, Record};
use integration_tests::*;

/// Thirty records of every shape: raw, structured and no keys; raw, structured and no
/// values; an `id` header and a creation time each.
fn varied_records() -> Vec<Record> {
    let mut written = Vec::new();
    for i in 0..30u8 {
        let key = match i % 3 {
            0 => Some(Data::Raw(vec![0xff, i, 0x00])),
            1 => Some(Data::Structured(format!("{{\"id\":{i}}}"))),
            _ => None,
        };
        let after = match i % 4 {
            0 => None,
            1 => Some(Data::Structured(format!("{{\"n\":{i}}}"))),
            _ => Some(Data::Raw(vec![i; i as usize])),
        };
        let created = (1_700_000_000_000i64 + i as i64) * 1_000_000;
        written.push(record(
            key,
            after,
            &[
                ("id", &i.to_string()),
                ("opencdc.createdAt", &created.to_string()),
            ],
        ));
    }
    written
}

/// What a source reads back of `varied_records` in `topic`, by `id` header: key, value,
/// creation time, partition.
async fn read_back(topic: &str) -> HashMap<String, (Option<Vec<u8>>, Option<Vec<u8>>, String, String)> {
    let mut src = open_source(topic, true).await;
    let read = read_n(&mut src, 30, Duration::from_secs(20)).await;
    src.teardown().await.unwrap();
    let meta = |r: &Record, k: &str| metadata_value(r, k).unwrap_or_default().to_string();
    read.iter()
        .map(|r| {
            let seen = (
                bytes(&r.key),
                bytes(&r.payload.after),
                meta(r, "opencdc.createdAt"),
                meta(r, "kafka.partition"),
            );
            (meta(r, "kafka.header.id"), seen)
        })
        .collect()
}

#[tokio::test]
async fn write_batch_writes_what_write_writes() {
    let (plain, packed) = (new_topic("plain", 3), new_topic("packed-in", 3));
    let records = varied_records();
    let mut dst = open_destination(&plain, &[]).await;
    let (n, err) = dst.write(&records).await.unwrap();
    assert_eq!((n, err.map(|e| e.to_string())), (30, None));
    let mut dst = open_destination(&packed, &[]).await;
    let batch = connector_host::RecordBatch::pack(&records).unwrap();
    let (n, err) = dst.write_batch(&batch).await.unwrap();
    assert_eq!((n, err.map(|e| e.to_string())), (30, None));
    let (a, b) = (read_back(&plain).await, read_back(&packed).await);
    assert_eq!(a.len(), 30);
    assert_eq!(a, b);
}

#[tokio::test]
async fn keys_values_and_metadata_survive_the_round_trip() {
    let topic = new_topic("roundtrip", 3);
    let written = varied_records();
    let mut dst = open_destination(&topic, &[]).await;
    let (n, err) = dst.write(&written).await.unwrap();
    assert_eq!((n, err.map(|e| e.to_string())), (30, None));
    dst.teardown().await.unwrap();

    let mut src = open_source(&topic, true).await;
    let read = read_n(&mut src, 30, Duration::from_secs(20)).await;
    assert_eq!(read.len(), 30);
    let mut by_id: HashMap<String, &Record> = HashMap::new();
    for r in &read {
        by_id.insert(
            metadata_value(r, "kafka.header.id")
                .expect("id header")
                .to_string(),
            r,
        );
    }
    for (i, w) in written.iter().enumerate() {
        let r = by_id[&i.to_string()];
        assert_eq!(bytes(&r.key), bytes(&w.key), "key of {i}");
        assert_eq!(bytes(&r.payload.after), bytes(&w.payload.after), "value of {i}");
        assert_eq!(metadata_value(r, "opencdc.collection"), Some(topic.as_str()));
        let created = (1_700_000_000_000i64 + i as i64) * 1_000_000;
        assert_eq!(
            metadata_value(r, "opencdc.createdAt"),
            Some(created.to_string().as_str())
        );
        assert!(matches!(r.operation, Operation::Create));
    }
    // Per partition, offsets come in order and keyed records of one key share a partition.
    let mut last: HashMap<String, i64> = HashMap::new();
    for r in &read {
        let p = metadata_value(r, "kafka.partition").unwrap().to_string();
        let o: i64 = metadata_value(r, "kafka.offset").unwrap().parse().unwrap();
        assert!(last.insert(p, o).is_none_or(|prev| prev < o));
    }
    src.teardown().await.unwrap();
}

#[tokio::test]
async fn read_from_beginning_false_reads_only_new_records() {
    let topic = new_topic("latest", 2);
    let mut dst = open_destination(&topic, &[]).await;
    let old: Vec<_> = (0..5)
        .map(|i| record(None, Some(Data::Raw(format!("old{i}").into())), &[]))
        .collect();
    assert_eq!(dst.write(&old).await.unwrap().0, 5);
    let mut src = open_source(&topic, false).await;
    assert!(src.read(10, 300).await.unwrap().is_empty());
    let new: Vec<_> = (0..5)
        .map(|i| record(None, Some(Data::Raw(format!("new{i}").into())), &[]))
        .collect();
    assert_eq!(dst.write(&new).await.unwrap().0, 5);
    let read = read_n(&mut src, 5, Duration::from_secs(20)).await;
    let values: Vec<_> = read
        .iter()
        .map(|r| String::from_utf8(bytes(&r.payload.after).unwrap()).unwrap())
        .collect();
    assert_eq!(values, ["new0", "new1", "new2", "new3", "new4"]);
    assert!(src.read(10, 300).await.unwrap().is_empty(), "nothing more");
}

#[tokio::test]
async fn every_acks_setting_writes() {
    for acks in ["0", "1", "all"] {
        let topic = new_topic(&format!("acks{acks}"), 1);
        let mut dst = open_destination(&topic, &[("acks", acks)]).await;
        let recs: Vec<_> = (0..10)
            .map(|i| record(None, Some(Data::Raw(vec![i])), &[]))
            .collect();
        assert_eq!(dst.write(&recs).await.unwrap().0, 10, "acks={acks}");
        let mut src = open_source(&topic, true).await;
        assert_eq!(
            read_n(&mut src, 10, Duration::from_secs(20)).await.len(),
            10,
            "acks={acks}"
        );
    }
}

#[tokio::test]
async fn read_returns_when_its_wait_is_over() {
    let topic = new_topic("quiet", 1);
    let mut src = open_source(&topic, true).await;
    let start = Instant::now();
    assert!(src.read(100, 400).await.unwrap().is_empty());
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_missing_topic_is_named_in_the_error() {
    let mut dst = destination(&allow_broker()).await;
    let err = dst
        .open(&config(&[
            ("servers", &broker()),
            ("topic", "no-such-topic"),
            ("allowAutoTopicCreation", "false"),
        ]))
        .await
        .unwrap_err();
    match guest_error(&err) {
        wit::Error::Remote(r) => {
            assert_eq!((r.code, r.name.as_str()), (3, "UNKNOWN_TOPIC_OR_PARTITION"));
            assert!(r.message.contains("no-such-topic"), "{}", r.message);
        }
        other => panic!("{other:?}"),
    }
    let mut src = source(&allow_broker()).await;
    let err = src
        .open(
            &config(&[("servers", &broker()), ("topic", "no-such-topic")]),
            None,
        )
        .await
        .unwrap_err();
    // A topic that stays unknown is final: restarting the source cannot help.
    match guest_error(&err) {
        wit::Error::Remote(r) => {
            assert_eq!((r.code, r.retriable), (3, false), "{}", r.message);
            assert!(
                r.message.contains("\"no-such-topic\" does not exist"),
                "{}",
                r.message
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_broker_is_a_connection_error() {
    // Allowed, so the peer refuses it (retriable), not the host (`sandbox.rs`).
    let mut dst = destination(&allow_servers("127.0.0.1:1")).await;
    let err = dst
        .open(&config(&[("servers", "127.0.0.1:1"), ("topic", "t")]))
        .await
        .unwrap_err();
    match guest_error(&err) {
        wit::Error::Connection(m) => assert!(m.contains("127.0.0.1:1") && !m.contains("os error"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn calls_out_of_order_are_invalid_state_errors() {
    let mut src = source(&allow_broker()).await;
    let err = src.read(1, 0).await.unwrap_err();
    assert!(matches!(guest_error(&err), wit::Error::InvalidState(_)));
    let mut dst = destination(&allow_broker()).await;
    let (n, err) = dst.write(&[record(None, None, &[])]).await.unwrap();
    assert_eq!(n, 0);
    assert!(matches!(err.map(|e| e.0), Some(wit::Error::InvalidState(_))));
}
