//! The destination as a production producer: routing, codecs, order, limits, topics from
//! records, and honest counts with no duplicates when the broker goes away.

use std::collections::HashMap;
use std::time::Duration;

use connector_host::wit::{self, Data};
use integration_tests::faults::PrivateBroker;
use integration_tests::*;
use kafka_connector::kafka::client::partitioner;

fn value_of(r: &wit::Record) -> String {
    String::from_utf8(bytes(&r.payload.after).unwrap()).unwrap()
}

#[tokio::test]
async fn keyed_records_land_on_the_java_murmur2_partition() {
    let topic = new_topic("murmur", 6);
    let mut dst = open_destination(&topic, &[]).await;
    let recs: Vec<_> = (0..120)
        .map(|i| record(Some(Data::Raw(format!("key-{i}").into())), None, &[]))
        .collect();
    assert_eq!(dst.write(&recs).await.unwrap().0, 120);
    let mut src = open_source(&topic, true).await;
    let read = read_n(&mut src, 120, Duration::from_secs(20)).await;
    assert_eq!(read.len(), 120);
    let mut used = std::collections::HashSet::new();
    for r in &read {
        let key = bytes(&r.key).unwrap();
        let p: i32 = metadata_value(r, "kafka.partition").unwrap().parse().unwrap();
        assert_eq!(
            p,
            partitioner::for_key(&key, 6),
            "{}",
            String::from_utf8_lossy(&key)
        );
        used.insert(p);
    }
    assert_eq!(used.len(), 6, "120 keys spread over all partitions");
}

#[tokio::test]
async fn every_codec_writes_what_the_source_reads_back() {
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = new_topic(&format!("codec-{codec}"), 2);
        let mut dst = open_destination(&topic, &[("compression", codec)]).await;
        let recs: Vec<_> = (0..500)
            .map(|i| {
                record(
                    Some(Data::Raw(vec![i as u8])),
                    Some(Data::Raw(format!("{codec} value {i} ").repeat(5).into())),
                    &[("n", &i.to_string())],
                )
            })
            .collect();
        let (n, err) = dst.write(&recs).await.unwrap();
        assert_eq!((n, err.map(|e| e.to_string())), (500, None), "{codec}");
        let mut src = open_source(&topic, true).await;
        let read = read_n(&mut src, 500, Duration::from_secs(20)).await;
        assert_eq!(read.len(), 500, "{codec}");
        for r in &read {
            let i = metadata_value(r, "kafka.header.n").unwrap();
            assert_eq!(value_of(r), format!("{codec} value {i} ").repeat(5));
        }
    }
}

#[tokio::test]
async fn order_is_kept_per_partition_over_100k_records() {
    let topic = new_topic("order", 6);
    let mut dst = open_destination(&topic, &[("compression", "lz4")]).await;
    const N: usize = 100_000;
    const KEYS: usize = 60;
    write_numbered(&mut dst, N, KEYS, |i| i.to_string()).await;
    let mut src = open_source(&topic, true).await;
    let read = read_n(&mut src, N, Duration::from_secs(120)).await;
    assert_eq!(read.len(), N);
    assert_eq!(keys_in_order(&read), KEYS);
}

/// Writes records `0..n` (value `value(i)`, key `k{i % keys}`) in writes of 5,000.
async fn write_numbered(
    dst: &mut connector_host::Destination,
    n: usize,
    keys: usize,
    value: impl Fn(usize) -> String,
) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(5_000) {
        let recs: Vec<_> = chunk
            .iter()
            .map(|&i| {
                record(
                    Some(Data::Raw(format!("k{}", i % keys).into())),
                    Some(Data::Raw(value(i).into())),
                    &[],
                )
            })
            .collect();
        let (n, err) = dst.write(&recs).await.unwrap();
        assert_eq!((n as usize, err.map(|e| e.to_string())), (recs.len(), None));
    }
}

/// Checks that each key's values (numbers) rise in the order read; the number of keys.
fn keys_in_order(read: &[wit::Record]) -> usize {
    let mut last: HashMap<Vec<u8>, usize> = HashMap::new();
    for r in read {
        let i: usize = value_of(r).parse().unwrap();
        let prev = last.insert(bytes(&r.key).unwrap(), i);
        assert!(
            prev.is_none_or(|p| p < i),
            "record {i} after {prev:?} for its key"
        );
    }
    last.len()
}

/// Small batches (`batchBytes`), so each write keeps several batches of a partition in
/// flight (up to five, the idempotent producer's sequence numbers keeping them in order):
/// every record arrives once, in order per key.
#[tokio::test]
async fn several_batches_of_a_partition_in_flight_arrive_once_and_in_order() {
    let topic = new_topic("in-flight", 3);
    let mut dst = open_destination(&topic, &[("batchBytes", "2000"), ("compression", "none")]).await;
    const N: usize = 20_000;
    const KEYS: usize = 30;
    write_numbered(&mut dst, N, KEYS, |i| format!("{i:0>40}")).await;
    let mut src = open_source(&topic, true).await;
    let mut read = read_n(&mut src, N, Duration::from_secs(120)).await;
    read.extend(src.read(1000, 1000).await.unwrap());
    assert_eq!(read.len(), N, "every record once");
    assert_eq!(keys_in_order(&read), KEYS);
}

/// Without idempotence (acks 0 and 1) a partition has one batch in flight at a time; with
/// small batches each write still holds many: every record arrives once, in order per key.
#[tokio::test]
async fn acks_0_and_1_write_every_record_once_in_order() {
    const N: usize = 6_000;
    const KEYS: usize = 12;
    for acks in ["0", "1"] {
        let topic = new_topic(&format!("acks-{acks}"), 3);
        let settings = [("acks", acks), ("batchBytes", "2000"), ("compression", "none")];
        let mut dst = open_destination(&topic, &settings).await;
        write_numbered(&mut dst, N, KEYS, |i| format!("{i:0>40}")).await;
        let mut src = open_source(&topic, true).await;
        let mut read = read_n(&mut src, N, Duration::from_secs(120)).await;
        read.extend(src.read(1000, 1000).await.unwrap());
        assert_eq!(read.len(), N, "acks={acks}: every record once");
        assert_eq!(keys_in_order(&read), KEYS, "acks={acks}");
    }
}

#[tokio::test]
async fn a_record_too_large_is_refused_and_the_count_is_right() {
    let topic = new_topic("too-large", 1);
    let mut dst = open_destination(&topic, &[("batchBytes", "10000"), ("compression", "none")]).await;
    let small = |i: u8| record(None, Some(Data::Raw(vec![i; 100])), &[]);
    let huge = record(None, Some(Data::Raw(vec![7; 20_000])), &[]);
    let (n, err) = dst.write(&[small(1), small(2), huge, small(3)]).await.unwrap();
    assert_eq!(n, 2);
    match err.map(|e| e.0) {
        Some(wit::Error::RecordTooLarge(m)) => assert!(m.contains("record 2") && m.contains("10000"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Only the two before it were written.
    let (n, err) = dst.write(&[small(3)]).await.unwrap();
    assert_eq!((n, err.is_none()), (1, true));
    let mut src = open_source(&topic, true).await;
    let read = read_n(&mut src, 4, Duration::from_secs(5)).await;
    let firsts: Vec<u8> = read.iter().map(|r| bytes(&r.payload.after).unwrap()[0]).collect();
    assert_eq!(firsts, [1, 2, 3]);
}

#[tokio::test]
async fn without_a_topic_each_record_goes_to_its_collection() {
    let (a, b) = (new_topic("fan-a", 1), new_topic("fan-b", 1));
    let mut dst = open_destination_at(&broker(), &[]).await;
    let to = |t: &str, v: &str| record(None, Some(Data::Raw(v.into())), &[("opencdc.collection", t)]);
    let (n, err) = dst
        .write(&[to(&a, "a1"), to(&b, "b1"), to(&a, "a2")])
        .await
        .unwrap();
    assert_eq!((n, err.map(|e| e.to_string())), (3, None));
    let values = |recs: Vec<wit::Record>| recs.iter().map(value_of).collect::<Vec<_>>();
    assert_eq!(
        values(read_n(&mut open_source(&a, true).await, 2, Duration::from_secs(10)).await),
        ["a1", "a2"]
    );
    assert_eq!(
        values(read_n(&mut open_source(&b, true).await, 1, Duration::from_secs(10)).await),
        ["b1"]
    );

    let (n, err) = dst.write(&[to(&a, "a3"), record(None, None, &[])]).await.unwrap();
    assert_eq!(n, 1);
    assert!(
        matches!(err.map(|e| e.0), Some(wit::Error::InvalidRecord(m)) if m.contains("opencdc.collection"))
    );
}

#[tokio::test]
async fn the_partition_can_be_fixed_or_taken_from_metadata() {
    let topic = new_topic("placed", 4);
    let mut fixed = open_destination(&topic, &[("partitioner", "fixed"), ("partition", "3")]).await;
    let keyed = |k: &str| record(Some(Data::Raw(k.into())), Some(Data::Raw(k.into())), &[]);
    assert_eq!(
        fixed
            .write(&[keyed("x"), keyed("y"), keyed("z")])
            .await
            .unwrap()
            .0,
        3
    );
    let mut from_meta = open_destination(&topic, &[("partitioner", "metadata")]).await;
    let placed = |p: &str| {
        record(
            None,
            Some(Data::Raw(format!("p{p}").into())),
            &[("kafka.partition", p)],
        )
    };
    assert_eq!(from_meta.write(&[placed("1"), placed("2")]).await.unwrap().0, 2);
    let (n, err) = from_meta.write(&[placed("9")]).await.unwrap();
    assert_eq!(n, 0);
    assert!(matches!(err.map(|e| e.0), Some(wit::Error::InvalidRecord(m)) if m.contains("no partition 9")));

    let mut src = open_source(&topic, true).await;
    for r in read_n(&mut src, 5, Duration::from_secs(10)).await {
        let p = metadata_value(&r, "kafka.partition").unwrap().to_string();
        let v = value_of(&r);
        let want = v.strip_prefix('p').unwrap_or("3").to_string();
        assert_eq!(p, want, "{v}");
    }
}

#[tokio::test]
async fn the_value_can_carry_the_whole_record() {
    let topic = new_topic("opencdc-value", 1);
    let mut dst = open_destination(&topic, &[("valueFormat", "opencdc"), ("headers", "none")]).await;
    let rec = record(
        Some(Data::Structured(r#"{"id":7}"#.into())),
        Some(Data::Raw(b"hi".to_vec())),
        &[("m", "v")],
    );
    assert_eq!(dst.write(&[rec]).await.unwrap().0, 1);
    let read = read_n(&mut open_source(&topic, true).await, 1, Duration::from_secs(10)).await;
    let v: serde_json::Value = serde_json::from_slice(&bytes(&read[0].payload.after).unwrap()).unwrap();
    assert_eq!(v["key"], serde_json::json!({"id": 7}));
    assert_eq!(v["payload"]["after"], "aGk=");
    assert_eq!(v["metadata"]["m"], "v");
    assert_eq!(
        metadata_value(&read[0], "kafka.header.m"),
        None,
        "headers=none writes no headers"
    );
}

/// A Produce whose answer is lost is sent again; the idempotent producer makes the broker
/// keep one copy.
#[tokio::test]
async fn a_lost_answer_is_resent_without_a_duplicate() {
    let broker = PrivateBroker::start();
    let topic = broker.new_topic("lost-answer", 1);
    let mut dst = open_destination_at(&broker.addr(), &[("topic", &topic), ("deliveryTimeout", "10s")]).await;
    let recs: Vec<_> = (0..50)
        .map(|i| record(None, Some(Data::Raw(format!("v{i}").into())), &[]))
        .collect();
    // Cut the connection as soon as the broker starts answering: the batch is written,
    // the answer never arrives.
    broker.proxy().cut_after_response_bytes(1);
    let (n, err) = dst.write(&recs).await.unwrap();
    assert_eq!((n, err.map(|e| e.to_string())), (50, None));
    let read = read_n(
        &mut open_source_at(&broker.addr(), &topic, true).await,
        100,
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(read.len(), 50, "no duplicates");
}

/// The broker goes away for longer than deliveryTimeout: the write reports an honest
/// count. The host's retry, as a pipeline sends it (the unwritten tail and then newer
/// records, so its batches differ from the lost ones), adds no duplicates.
#[tokio::test]
async fn a_broker_gone_mid_write_gives_an_honest_count_and_the_retry_no_duplicates() {
    let broker = PrivateBroker::start();
    let topic = broker.new_topic("gone", 3);
    let mut dst = open_destination_at(&broker.addr(), &[("topic", &topic), ("deliveryTimeout", "2s")]).await;
    let recs: Vec<_> = (0..300)
        .map(|i| {
            record(
                Some(Data::Raw(format!("k{i}").into())),
                Some(Data::Raw(format!("v{i}").into())),
                &[],
            )
        })
        .collect();
    assert_eq!(dst.write(&recs[..100]).await.unwrap().0, 100);

    // The answers to the next write are lost (it is written), then the broker is unreachable.
    broker.proxy().cut_after_response_bytes(1);
    broker.proxy().set_refuse(true);
    let (n, err) = dst.write(&recs[100..200]).await.unwrap();
    assert!(n < 100 && err.is_some(), "written {n}, error {err:?}");
    broker.proxy().set_refuse(false);

    // The host sends what was not reported written, and what came since, until all is.
    let mut next = 100 + n as usize;
    for _ in 0..5 {
        if next == 300 {
            break;
        }
        next += dst.write(&recs[next..]).await.unwrap().0 as usize;
    }
    assert_eq!(next, 300);
    let read = read_n(
        &mut open_source_at(&broker.addr(), &topic, true).await,
        400,
        Duration::from_secs(5),
    )
    .await;
    let mut values: Vec<String> = read.iter().map(value_of).collect();
    values.sort();
    let mut want: Vec<String> = (0..300).map(|i| format!("v{i}")).collect();
    want.sort();
    assert_eq!(values, want, "every record exactly once");
}
