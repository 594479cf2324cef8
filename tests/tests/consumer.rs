//! The source as a consumer-group member: resume from commits, redelivery of what was not
//! acked, members splitting partitions and taking them over, several topics.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use connector_host::Source;
use connector_host::wit::{self, Data};
use integration_tests::faults::{PrivateBroker, api};
use integration_tests::*;

async fn write_values(topic: &str, values: impl Iterator<Item = String>) {
    let recs: Vec<_> = values
        .map(|v| record(Some(Data::Raw(v.clone().into())), Some(Data::Raw(v.into())), &[]))
        .collect();
    let mut dst = open_destination(topic, &[]).await;
    let (n, err) = dst.write(&recs).await.unwrap();
    assert_eq!((n as usize, err.map(|e| e.to_string())), (recs.len(), None));
}

async fn open_group(topics: &str, group: &str, position: Option<Vec<u8>>) -> Source {
    let mut src = source(&allow_broker()).await;
    let mut cfg = config(&[
        ("servers", &broker()),
        ("topics", topics),
        ("readFromBeginning", "true"),
    ]);
    if !group.is_empty() {
        cfg.push(("groupID".into(), group.into()));
    }
    src.open(&cfg, position).await.expect("open source");
    src
}

fn value(r: &wit::Record) -> String {
    String::from_utf8(bytes(&r.payload.after).unwrap()).unwrap()
}

fn partition(r: &wit::Record) -> i32 {
    metadata_value(r, "kafka.partition").unwrap().parse().unwrap()
}

async fn ack_all(src: &mut Source, recs: &[wit::Record]) {
    let positions: Vec<Vec<u8>> = recs.iter().map(|r| r.position.clone()).collect();
    src.ack(&positions).await.unwrap();
}

#[tokio::test]
async fn a_restart_from_the_last_position_continues_after_the_last_commit() {
    let topic = new_topic("resume", 1);
    write_values(&topic, (0..100).map(|i| format!("v{i:03}"))).await;
    // No groupID: the source makes one and keeps it in every position.
    let mut first = open_group(&topic, "", None).await;
    let read = read_n(&mut first, 50, Duration::from_secs(20)).await;
    assert_eq!(read.len(), 50);
    ack_all(&mut first, &read).await;
    first.teardown().await.unwrap();

    let last = read.last().unwrap().position.clone();
    let mut second = open_group(&topic, "", Some(last)).await;
    let rest = read_n(&mut second, 60, Duration::from_secs(5)).await;
    let values: Vec<String> = rest.iter().map(value).collect();
    let want: Vec<String> = (50..100).map(|i| format!("v{i:03}")).collect();
    assert_eq!(values, want, "nothing skipped, nothing repeated");
}

#[tokio::test]
async fn unacked_records_come_again_after_a_restart_and_acked_ones_do_not() {
    let topic = new_topic("redeliver", 1);
    write_values(&topic, (0..10).map(|i| format!("v{i}"))).await;
    let group = format!("redeliver-{}", std::process::id());
    let mut first = open_group(&topic, &group, None).await;
    let read = read_n(&mut first, 10, Duration::from_secs(20)).await;
    assert_eq!(read.len(), 10);
    // Acks out of order: 0-3 and 6; 4 is missing, so only 0-3 may be committed.
    ack_all(&mut first, &read[..4]).await;
    ack_all(&mut first, &read[6..7]).await;
    first.teardown().await.unwrap();

    let mut second = open_group(&topic, &group, None).await;
    let again = read_n(&mut second, 10, Duration::from_secs(5)).await;
    let values: Vec<String> = again.iter().map(value).collect();
    assert_eq!(values, ["v4", "v5", "v6", "v7", "v8", "v9"]);
}

/// How long a group may take to do what a test waits for (join, rebalance, deliver what was
/// written): far more than it needs, so that only a hang reaches it.
const LIMIT: Duration = Duration::from_secs(30);

/// Reads from `src`, acking every batch, into `seen` (each record) and `values` (the values
/// read by any member), until `done(values)` holds; panics naming `what` after [`LIMIT`].
async fn drain_until(
    src: &mut Source,
    seen: &mut Vec<wit::Record>,
    values: &RefCell<HashSet<String>>,
    what: &str,
    done: impl Fn(&HashSet<String>) -> bool,
) {
    let deadline = Instant::now() + LIMIT;
    while !done(&values.borrow()) {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {LIMIT:?}; {} values read",
            values.borrow().len()
        );
        let batch = src.read(100, 200).await.unwrap();
        ack_all(src, &batch).await;
        values.borrow_mut().extend(batch.iter().map(value));
        seen.extend(batch);
    }
}

/// Whether `values` holds all of `{tag}0` to `{tag}{n - 1}`.
fn all_of(values: &HashSet<String>, tag: &str, n: usize) -> bool {
    (0..n).all(|i| values.contains(&format!("{tag}{i}")))
}

#[tokio::test]
async fn two_members_split_six_partitions_and_one_takes_over_when_the_other_leaves() {
    let topic = new_topic("split", 6);
    let group = format!("split-{}", std::process::id());
    write_values(&topic, (0..600).map(|i| format!("a{i}"))).await;
    let values = RefCell::new(HashSet::new());

    let mut a = open_group(&topic, &group, None).await;
    let mut seen_a = Vec::new();
    // B joins while A keeps being called, so A hears of the rebalance (at its next heartbeat)
    // and rejoins: B's open returns once both did. A's read that rejoined returns before A
    // is called again, so from then on A reads only its own partitions.
    let b_joined = Cell::new(false);
    let (mut b, ()) = tokio::join!(
        async {
            let b = open_group(&topic, &group, None).await;
            b_joined.set(true);
            b
        },
        drain_until(&mut a, &mut seen_a, &values, "B joining", |_| b_joined.get()),
    );
    // What is written now is read by both, each from its own partitions.
    write_values(&topic, (0..600).map(|i| format!("m{i}"))).await;
    let mut seen_b = Vec::new();
    let mark_a = seen_a.len();
    let all_so_far = |v: &HashSet<String>| all_of(v, "a", 600) && all_of(v, "m", 600);
    tokio::join!(
        drain_until(&mut a, &mut seen_a, &values, "A and B reading all", all_so_far),
        drain_until(&mut b, &mut seen_b, &values, "A and B reading all", all_so_far),
    );
    let parts_a: BTreeSet<i32> = seen_a[mark_a..].iter().map(partition).collect();
    let parts_b: BTreeSet<i32> = seen_b.iter().map(partition).collect();
    assert_eq!(parts_b.len(), 3, "B owns half of the partitions: {parts_b:?}");
    assert!(
        parts_a.is_disjoint(&parts_b),
        "no partition is read by both: {parts_a:?} {parts_b:?}"
    );

    // B leaves; A takes all six over and reads what is written from now on.
    b.teardown().await.unwrap();
    write_values(&topic, (0..600).map(|i| format!("b{i}"))).await;
    let mark_a = seen_a.len();
    drain_until(&mut a, &mut seen_a, &values, "A reading what B left", |v| {
        all_of(v, "b", 600)
    })
    .await;
    let parts_after: BTreeSet<i32> = seen_a[mark_a..].iter().map(partition).collect();
    assert_eq!(parts_after.len(), 6, "{parts_after:?}");

    let all: HashSet<String> = seen_a.iter().chain(&seen_b).map(value).collect();
    let missing: Vec<String> = (0..600)
        .flat_map(|i| [format!("a{i}"), format!("m{i}"), format!("b{i}")])
        .filter(|v| !all.contains(v))
        .collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
}

#[tokio::test]
async fn one_source_reads_several_topics() {
    let (t1, t2) = (new_topic("multi-a", 2), new_topic("multi-b", 1));
    write_values(&t1, (0..20).map(|i| format!("x{i}"))).await;
    write_values(&t2, (0..20).map(|i| format!("y{i}"))).await;
    let mut src = open_group(&format!("{t1},{t2}"), "", None).await;
    let read = read_n(&mut src, 40, Duration::from_secs(20)).await;
    let collections: BTreeSet<&str> = read
        .iter()
        .map(|r| metadata_value(r, "opencdc.collection").unwrap())
        .collect();
    assert_eq!(read.len(), 40);
    assert_eq!(collections, BTreeSet::from([t1.as_str(), t2.as_str()]));
}

/// A read that waits on a caught-up partition keeps a fetch in flight for all of its wait:
/// a record written meanwhile comes back in that same read. (A fetch answered empty was
/// once followed by a sleep with nothing in flight, up to the end of the wait.)
#[tokio::test]
async fn a_record_written_while_a_read_waits_comes_back_in_that_read() {
    // A broker of its own, whose proxy tells when the source's fetch was answered.
    let b = PrivateBroker::start();
    let topic = b.new_topic("waiting", 1);
    let mut src = open_source_at(&b.addr(), &topic, true).await;
    let mut dst = open_destination_at(&b.addr(), &[("topic", &topic)]).await;
    let rec = record(None, Some(Data::Raw(b"late".to_vec())), &[]);
    let answered = b.proxy().responses(api::FETCH);
    let write_later = async {
        // Once a fetch of the read was answered (empty, after the broker held it 500 ms):
        // the moment the source once slept with nothing in flight.
        let fetched = wait_until(LIMIT, || b.proxy().responses(api::FETCH) > answered).await;
        assert!(fetched, "no fetch was answered within {LIMIT:?}");
        dst.write(std::slice::from_ref(&rec)).await.unwrap()
    };
    // The wait ends before the first heartbeat is due (every 3 s with the default session
    // timeout), which would also have ended such a sleep.
    let (read, written) = tokio::join!(src.read(1, 2_500), write_later);
    assert_eq!(written.0, 1);
    let read = read.unwrap();
    assert_eq!(read.iter().map(value).collect::<Vec<_>>(), ["late"]);
}

#[tokio::test]
async fn read_batch_holds_the_same_records_as_read_with_headers_and_null_keys() {
    let topic = new_topic("packed", 3);
    let mut recs: Vec<_> = (0..300)
        .map(|i| {
            let v = format!("v{i:03}");
            let headers: &[(&str, &str)] = if i % 7 == 0 { &[("trace", "t-é")] } else { &[] };
            let key = (i % 5 != 0).then(|| Data::Raw(format!("k{i}").into()));
            record(key, Some(Data::Raw(v.into())), headers)
        })
        .collect();
    recs[1].payload.after = None;
    let mut dst = open_destination(&topic, &[]).await;
    let (n, err) = dst.write(&recs).await.unwrap();
    assert_eq!((n as usize, err.map(|e| e.to_string())), (recs.len(), None));

    let mut plain = open_group(&topic, &format!("plain-{}", std::process::id()), None).await;
    let mut want = read_n(&mut plain, recs.len(), Duration::from_secs(20)).await;
    let packed_group = format!("packed-{}", std::process::id());
    let mut packed = open_group(&topic, &packed_group, None).await;
    let (mut got, mut acks) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < recs.len() && Instant::now() < deadline {
        let batch = packed.read_batch(64, 500).await.expect("read_batch");
        acks.extend(batch.iter().map(|r| r.position().to_vec()));
        got.extend(batch.to_records());
    }
    // The same records but for where they were read: the group in the position, readAt.
    let key = |r: &wit::Record| {
        (
            partition(r),
            metadata_value(r, "kafka.offset").unwrap().to_string(),
        )
    };
    let normalize = |rs: &mut Vec<wit::Record>| {
        rs.sort_by_key(key);
        for r in rs.iter_mut() {
            let p = kafka_connector::position::Position::decode(&r.position).unwrap();
            r.position = format!("{}-{}@{}", p.topic, p.partition, p.offset).into_bytes();
            r.metadata.retain(|(k, _)| k != "opencdc.readAt");
        }
    };
    normalize(&mut want);
    normalize(&mut got);
    assert_eq!(got.len(), recs.len());
    assert_eq!(format!("{got:#?}"), format!("{want:#?}"));
    assert!(
        got.iter()
            .any(|r| metadata_value(r, "kafka.header.trace") == Some("t-é"))
    );
    assert!(got.iter().any(|r| r.key.is_none()) && got.iter().any(|r| r.payload.after.is_none()));
    // Half through ack, half through ack-batch: all acked, so the group has nothing left.
    let half = acks.len() / 2;
    packed
        .ack(&acks[..half])
        .await
        .expect("positions of a batch ack like any");
    packed
        .ack_batch(acks[half..].iter().map(Vec::as_slice))
        .await
        .expect("packed positions ack too");
    packed.teardown().await.unwrap();
    let mut again = open_group(&topic, &packed_group, None).await;
    let left = read_n(&mut again, 1, Duration::from_secs(2)).await;
    assert_eq!(left.len(), 0, "every record was acked and committed");
}

#[tokio::test]
async fn lag_counts_the_records_not_handed_out_yet() {
    let topic = new_topic("lag", 2);
    write_values(&topic, (0..1000).map(|i| format!("v{i}"))).await;
    let mut src = open_group(&topic, "", None).await;
    assert_eq!(src.lag().await.unwrap(), None, "nothing fetched yet: unknown");
    let got = read_n(&mut src, 300, Duration::from_secs(30)).await;
    assert_eq!(src.lag().await.unwrap(), Some(1000 - got.len() as u64));
    let rest = read_n(&mut src, 1000 - got.len(), Duration::from_secs(30)).await;
    assert_eq!(got.len() + rest.len(), 1000);
    assert_eq!(src.lag().await.unwrap(), Some(0));
    src.teardown().await.unwrap();
}
