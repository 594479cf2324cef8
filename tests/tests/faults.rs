//! The connector through the host against a private broker behind a fault-injecting
//! proxy (`integration_tests::faults`): what it does when connections break, the broker
//! is gone, or responses come back corrupt.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use connector_host::wit::{self, Change, Data, Operation, Record};
use connector_host::{Destination, Source};
use integration_tests::faults::{PrivateBroker, api};
use integration_tests::*;

fn record(key: Option<&str>, value: &str) -> Record {
    Record {
        position: vec![],
        operation: Operation::Create,
        metadata: vec![],
        key: key.map(|k| Data::Raw(k.as_bytes().to_vec())),
        payload: Change {
            before: None,
            after: Some(Data::Raw(value.as_bytes().to_vec())),
        },
    }
}

fn records(prefix: &str, n: usize) -> Vec<Record> {
    (0..n).map(|i| record(None, &format!("{prefix}{i}"))).collect()
}

fn value(r: &Record) -> String {
    match &r.payload.after {
        Some(Data::Raw(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Data::Structured(s)) => s.clone(),
        None => String::new(),
    }
}

fn values(rs: &[Record]) -> Vec<String> {
    rs.iter().map(value).collect()
}

/// `fut`, or a panic saying it hung.
async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not return within {limit:?}"))
}

async fn open_destination(b: &PrivateBroker, topic: &str, extra: &[(&str, &str)]) -> Destination {
    let mut dst = destination(&allow_servers(&b.addr())).await;
    let mut cfg = config(&[("servers", &b.addr()), ("topic", topic)]);
    cfg.extend(config(extra));
    within(Duration::from_secs(30), "destination open", dst.open(&cfg))
        .await
        .expect("open destination");
    dst
}

async fn open_source(b: &PrivateBroker, topic: &str) -> Source {
    let mut src = source(&allow_servers(&b.addr())).await;
    let cfg = config(&[
        ("servers", &b.addr()),
        ("topic", topic),
        ("readFromBeginning", "true"),
    ]);
    within(Duration::from_secs(30), "source open", src.open(&cfg, None))
        .await
        .expect("open source");
    src
}

/// Reads until `n` records arrived or `timeout` passed; a read error fails the test,
/// naming what was read before it.
async fn read_values(src: &mut Source, n: usize, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        let batch = within(
            Duration::from_secs(30),
            "source read",
            src.read((n - out.len()) as u32, 500),
        )
        .await
        .unwrap_or_else(|e| panic!("read failed after {out:?}: {e:#}"));
        out.extend(values(&batch));
    }
    out
}

/// (a) The proxy forwards faithfully: what goes in through it comes back out through it,
/// and every connection (bootstrap and leader) is the proxy's.
#[tokio::test]
async fn records_pass_through_the_proxy_unchanged() {
    let b = PrivateBroker::start();
    let topic = b.new_topic("proxied", 3);
    let before = b.proxy().accepted();
    let mut dst = open_destination(&b, &topic, &[]).await;
    let written: Vec<Record> = (0..50)
        .map(|i| record(Some(&format!("k{i}")), &format!("v{i}")))
        .collect();
    let (n, err) = within(Duration::from_secs(30), "write", dst.write(&written))
        .await
        .unwrap();
    assert_eq!((n, err.map(|e| e.to_string())), (50, None));
    assert!(
        b.proxy().accepted() >= before + 2,
        "bootstrap and leader connections both go through the proxy: {} accepted, {before} before",
        b.proxy().accepted()
    );

    let mut src = open_source(&b, &topic).await;
    let mut read = read_values(&mut src, 50, Duration::from_secs(20)).await;
    let mut expected = values(&written);
    read.sort();
    expected.sort();
    assert_eq!(read, expected);
    dst.teardown().await.unwrap();
    src.teardown().await.unwrap();
}

/// (b) The broker gone: a write fails within its delivery timeout with nothing written,
/// and the same destination writes again once the broker is back.
#[tokio::test]
async fn a_write_while_the_broker_is_gone_fails_in_time_and_the_destination_recovers() {
    let b = PrivateBroker::start();
    let topic = b.new_topic("gone", 1);
    let mut dst = open_destination(&b, &topic, &[("deliveryTimeout", "2s")]).await;
    let first = records("first", 3);
    assert_eq!(dst.write(&first).await.unwrap().0, 3);

    b.proxy().set_refuse(true);
    b.proxy().cut();
    let start = Instant::now();
    let (n, err) = within(
        Duration::from_secs(30),
        "write to a gone broker",
        dst.write(&records("lost", 3)),
    )
    .await
    .unwrap();
    let took = start.elapsed();
    let err = err.expect("a write to a gone broker fails");
    eprintln!("write while gone: {n} written after {took:?}: {err}");
    assert_eq!(n, 0, "{err}");
    assert!(
        matches!(err.0, wit::Error::Connection(_) | wit::Error::Timeout(_)),
        "{err}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}: {err}");
    assert!(b.proxy().refused() > 0, "the destination tried to reconnect");

    b.proxy().set_refuse(false);
    let again = records("again", 3);
    let start = Instant::now();
    let (n, err) = within(
        Duration::from_secs(30),
        "write after the broker is back",
        dst.write(&again),
    )
    .await
    .unwrap();
    assert_eq!(
        (n, err.map(|e| e.to_string())),
        (3, None),
        "after {:?}",
        start.elapsed()
    );

    // What was reported written is in the topic, once. The failed write's records may be
    // there too, once and before the next write's: a request sent on a connection that
    // then broke may have reached the broker, so the producer resends it (same sequence
    // numbers, so at most once) before it writes anything new.
    let mut src = open_source(&b, &topic).await;
    let read = read_values(&mut src, 9, Duration::from_secs(5)).await;
    let (lost, kept): (Vec<String>, Vec<String>) = read.into_iter().partition(|v| v.starts_with("lost"));
    assert_eq!(kept, ["first0", "first1", "first2", "again0", "again1", "again2"]);
    assert!(lost.is_empty() || lost == ["lost0", "lost1", "lost2"], "{lost:?}");
}

/// (c) Connections cut under a source in the middle of a read: it reconnects by itself
/// and reads what is written afterwards, once each.
#[tokio::test]
async fn a_source_keeps_reading_after_its_connections_are_cut() {
    let b = PrivateBroker::start();
    let topic = b.new_topic("cut", 1);
    let mut dst = open_destination(&b, &topic, &[]).await;
    let mut src = open_source(&b, &topic).await;
    assert_eq!(dst.write(&records("before", 5)).await.unwrap().0, 5);
    assert_eq!(
        read_values(&mut src, 5, Duration::from_secs(20)).await,
        values(&records("before", 5))
    );

    let accepted = b.proxy().accepted();
    let open = b.proxy().open_connections();
    // The read is blocked on its long-poll fetch when the cut comes: the cut is armed once
    // the read has started (`join!` polls it first), and comes while a fetch is in flight
    // (at once if one is, else right after the next is sent; the broker holds a fetch it
    // has nothing for 500 ms, well inside the read's wait).
    let (read, ()) = within(Duration::from_secs(30), "read across a cut", async {
        tokio::join!(src.read(10, 1500), async {
            b.proxy().cut_while_in_flight(api::FETCH);
        })
    })
    .await;
    let read = read.expect("a cut is not the caller's error");
    assert!(read.is_empty(), "{:?}", values(&read));
    assert!(open > 0, "connections were open before the cut");
    assert!(!b.proxy().cut_pending(), "the cut came during the read");

    assert_eq!(dst.write(&records("after", 5)).await.unwrap().0, 5);
    let read = read_values(&mut src, 5, Duration::from_secs(20)).await;
    assert_eq!(read, values(&records("after", 5)));
    assert!(src.read(10, 500).await.unwrap().is_empty(), "nothing read twice");
    assert!(b.proxy().accepted() > accepted, "the clients reconnected");
}

/// A response cut in its middle (after its first bytes, before its records end): the
/// source reconnects and fetches again, losing and repeating nothing.
#[tokio::test]
async fn a_fetch_response_cut_midway_is_fetched_again() {
    let b = PrivateBroker::start();
    let topic = b.new_topic("midway", 1);
    // Uncompressed, so the fetch response is as large as the records.
    let mut dst = open_destination(&b, &topic, &[("compression", "none")]).await;
    let big: Vec<Record> = (0..20)
        .map(|i| record(None, &format!("big{i}-{}", "x".repeat(4000))))
        .collect();
    assert_eq!(dst.write(&big).await.unwrap().0, 20);

    let mut src = open_source(&b, &topic).await;
    let accepted = b.proxy().accepted();
    // The next response the source gets is its first fetch, about 80 kB: cut it after 30 kB.
    b.proxy().cut_after_response_bytes(30_000);
    let read = read_values(&mut src, 20, Duration::from_secs(20)).await;
    assert!(!b.proxy().cut_pending(), "the cut happened");
    assert!(b.proxy().accepted() > accepted, "the source reconnected");
    assert_eq!(read, values(&big));
    assert!(src.read(10, 500).await.unwrap().is_empty(), "nothing read twice");
}

/// (d) Bytes flipped inside the record data of a fetch response: the batch CRC catches
/// it and the read returns a corrupt-data error (the instance does not trap); once the
/// responses are clean again, the same source reads the records.
#[tokio::test]
async fn a_corrupt_fetch_response_is_a_corrupt_data_error() {
    const MARK: &[u8] = b"corrupt-me";
    let b = PrivateBroker::start();
    let topic = b.new_topic("corrupt", 1);
    let mut dst = open_destination(&b, &topic, &[]).await;
    let written = records("corrupt-me-", 3);
    assert_eq!(dst.write(&written).await.unwrap().0, 3);

    let corrupted = Arc::new(AtomicU32::new(0));
    let count = corrupted.clone();
    b.proxy().corrupt_responses(move |api_key, frame| {
        if api_key != api::FETCH {
            return;
        }
        if let Some(at) = frame.windows(MARK.len()).position(|w| w == MARK) {
            frame[at] ^= 0x20; // 'c' -> 'C': same length, different CRC
            count.fetch_add(1, Ordering::SeqCst);
        }
    });

    let mut src = open_source(&b, &topic).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let err = loop {
        assert!(Instant::now() < deadline, "no error within 20 s");
        match within(Duration::from_secs(30), "read", src.read(10, 500)).await {
            Ok(rs) => assert!(rs.is_empty(), "corrupt records were returned: {:?}", values(&rs)),
            Err(e) => break e,
        }
    };
    assert!(corrupted.load(Ordering::SeqCst) > 0);
    match guest_error(&err) {
        wit::Error::CorruptData(m) => {
            assert!(m.contains(&format!("{topic}-0")), "{m}");
            eprintln!("corrupt fetch: {m}");
        }
        other => panic!("{other:?}"),
    }

    b.proxy().stop_corrupting();
    let read = read_values(&mut src, 3, Duration::from_secs(20)).await;
    assert_eq!(read, values(&written), "the same source reads the clean records");
}
