//! The durable test broker (sqlite, `integration_tests::durable`): what a SIGKILL of nisshi
//! keeps. The soak relies on it to restart the broker under a running pipeline.

use std::time::Duration;

use integration_tests::durable::DurableBroker;
use integration_tests::pipelines::{fill_at, topic_values_at};
use integration_tests::*;

const N: usize = 1000;
const PARTITIONS: i32 = 2;

/// Reads `n` records of `topic` (fewer if they do not come) as a member of `group`, acks
/// them and tears down (which commits): their values.
async fn consume_and_commit(servers: &str, topic: &str, group: &str, n: usize) -> Vec<String> {
    let mut src = source(&allow_servers(servers)).await;
    let cfg = config(&[
        ("servers", servers),
        ("topic", topic),
        ("readFromBeginning", "true"),
        ("groupID", group),
    ]);
    src.open(&cfg, None).await.expect("open source");
    let got = read_n(&mut src, n, Duration::from_secs(60)).await;
    let positions: Vec<Vec<u8>> = got.iter().map(|r| r.position.clone()).collect();
    src.ack(&positions).await.expect("ack");
    src.teardown().await.expect("teardown commits");
    got.iter()
        .map(|r| String::from_utf8(bytes(&r.payload.after).unwrap_or_default()).expect("utf-8"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_topics_and_committed_offsets_survive_a_sigkill() {
    let mut b = DurableBroker::start();
    let servers = b.addr();
    let topic = b.new_topic("durable", PARTITIONS);
    let mut sent = fill_at(&servers, &topic, N, "durable").await;
    sent.sort();
    let group = unique_name("durable-group");
    let first = consume_and_commit(&servers, &topic, &group, 400).await;
    assert_eq!(first.len(), 400);
    let committed = b.committed(&group, &topic, PARTITIONS);
    assert_eq!(committed.values().sum::<i64>(), 400, "{committed:?}");

    b.kill();
    b.restart();

    assert_eq!(b.end_offsets(&topic, PARTITIONS).values().sum::<i64>(), N as i64);
    assert_eq!(
        b.committed(&group, &topic, PARTITIONS),
        committed,
        "the group's commits"
    );
    assert_eq!(
        topic_values_at(&servers, &topic, N).await,
        sent,
        "every record, once"
    );
    // The group goes on from its commits: the other 600, none of the first 400 again.
    let mut rest = consume_and_commit(&servers, &topic, &group, N - 400).await;
    rest.extend(first);
    rest.sort();
    assert_eq!(rest, sent);
}
