//! The destination creates the topics it writes to when they are missing (CreateTopics):
//! the configured topic at open, a record's collection the first time it is named; and
//! says plainly when it may not, or when the broker refuses.

use std::time::{Duration, Instant};

use connector_host::Destination;
use connector_host::wit::{self, Data};
use integration_tests::faults::{PrivateBroker, api};
use integration_tests::*;
use kafka_connector::config::{ClientConfig, parse_server};
use kafka_connector::kafka::client::cluster::Cluster;

/// The test broker, through the connector's own client, natively.
fn cluster() -> Cluster {
    let client = ClientConfig {
        servers: vec![parse_server(&broker()).expect("broker address")],
        client_id: "tests".into(),
        security: Default::default(),
    };
    Cluster::connect(client.options(Duration::from_secs(10))).expect("connect")
}

/// How many partitions the broker's metadata shows for `topic` (`None`: no such topic), each
/// with a leader.
fn partitions(topic: &str) -> Option<usize> {
    let mut cluster = cluster();
    let deadline = Instant::now() + Duration::from_secs(10);
    match cluster.topic_status(topic, deadline).expect("metadata") {
        0 => {
            let leaders = &cluster.known(topic).expect("a known topic").leaders;
            assert!(leaders.iter().all(|l| *l >= 0), "{topic}: {leaders:?}");
            Some(leaders.len())
        }
        3 => None,
        code => panic!("metadata for {topic}: error {code}"),
    }
}

fn to(topic: &str, value: &str) -> wit::Record {
    record(
        Some(Data::Raw(value.into())),
        Some(Data::Raw(value.into())),
        &[("opencdc.collection", topic)],
    )
}

fn values(recs: &[wit::Record]) -> Vec<String> {
    recs.iter()
        .map(|r| String::from_utf8(bytes(&r.payload.after).unwrap()).unwrap())
        .collect()
}

/// The values of up to `n` records of `topic`, sorted, read for at most `within`.
async fn read_values(topic: &str, n: usize, within: Duration) -> Vec<String> {
    let mut src = open_source(topic, true).await;
    let mut got = values(&read_n(&mut src, n, within).await);
    got.sort();
    got
}

/// Long enough for records that were written to arrive, on a loaded machine.
const ARRIVE: Duration = Duration::from_secs(20);
/// How long to look for records that must not be there (one more than expected).
const ABSENT: Duration = Duration::from_secs(3);

/// The remote error a destination's `open` with `settings` fails with.
async fn open_refused(settings: &[(&str, &str)]) -> wit::RemoteError {
    let mut dst = destination(&allow_broker()).await;
    let servers = broker();
    let mut cfg = config(&[("servers", &servers)]);
    cfg.extend(config(settings));
    let err = dst.open(&cfg).await.unwrap_err();
    remote(Some(guest_error(&err).clone()))
}

fn remote(e: Option<wit::Error>) -> wit::RemoteError {
    match e {
        Some(wit::Error::Remote(r)) => r,
        other => panic!("expected a remote error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_topic_is_created_at_open_with_the_configured_partitions() {
    let topic = unique_name("made-at-open");
    assert_eq!(partitions(&topic), None);
    let mut dst = open_destination(&topic, &[("topicPartitions", "4")]).await;
    assert_eq!(partitions(&topic), Some(4));
    // Creating it again is no error: the broker's 36 TOPIC_ALREADY_EXISTS is taken as done.
    cluster()
        .create_topic(&topic, 4)
        .expect("an existing topic is fine");
    let recs: Vec<_> = (0..40).map(|i| to("ignored", &format!("v{i:02}"))).collect();
    let (n, err) = dst.write(&recs).await.unwrap();
    assert_eq!((n, err.map(|e| e.to_string())), (40, None));
    let mut expected = values(&recs);
    expected.sort();
    assert_eq!(read_values(&topic, 40, ARRIVE).await, expected);
}

#[tokio::test]
async fn records_name_topics_that_are_created_when_first_written_to() {
    let (a, b) = (unique_name("coll-a"), unique_name("coll-b"));
    let mut dst = open_destination_at(&broker(), &[("topicPartitions", "2")]).await;
    let (n, err) = dst
        .write(&[to(&a, "a1"), to(&b, "b1"), to(&a, "a2")])
        .await
        .unwrap();
    assert_eq!((n, err.map(|e| e.to_string())), (3, None));
    assert_eq!((partitions(&a), partitions(&b)), (Some(2), Some(2)));
    // Known now: the next write goes straight to them.
    let (n, err) = dst.write(&[to(&b, "b2")]).await.unwrap();
    assert_eq!((n, err.map(|e| e.to_string())), (1, None));
    assert_eq!(read_values(&a, 2, ARRIVE).await, ["a1", "a2"]);
    assert_eq!(read_values(&b, 2, ARRIVE).await, ["b1", "b2"]);
}

#[tokio::test]
async fn with_creation_off_a_missing_topic_is_an_error_naming_it_and_not_retriable() {
    let topic = unique_name("not-made");
    let r = open_refused(&[("topic", &topic), ("allowAutoTopicCreation", "false")]).await;
    assert_eq!(
        (r.code, r.name.as_str(), r.retriable),
        (3, "UNKNOWN_TOPIC_OR_PARTITION", false)
    );
    assert!(
        r.message.contains(&format!("\"{topic}\"")) && r.message.contains("allowAutoTopicCreation is false"),
        "{}",
        r.message
    );

    // Named by a record: the records before it are written, it and those after are not.
    let there = new_topic("there", 1);
    let mut dst = open_destination_at(&broker(), &[("allowAutoTopicCreation", "false")]).await;
    let (n, err) = dst
        .write(&[to(&there, "1"), to(&topic, "2"), to(&there, "3")])
        .await
        .unwrap();
    assert_eq!(n, 1);
    let r = remote(err.map(|e| e.0));
    assert_eq!((r.code, r.retriable), (3, false));
    assert!(r.message.contains(&format!("\"{topic}\"")), "{}", r.message);
    assert_eq!(partitions(&topic), None, "not created");
    assert_eq!(read_values(&there, 2, ABSENT).await, ["1"]);
}

/// Creation off: a topic that another client creates a moment after `open` (or that the
/// broker's Metadata has not caught up with) is waited for, not a permanent failure.
#[tokio::test]
async fn with_creation_off_a_topic_created_moments_later_is_waited_for() {
    let topic = unique_name("made-later");
    let creator = {
        let topic = topic.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1000));
            cluster().create_topic(&topic, 1).expect("create");
        })
    };
    let off = [("allowAutoTopicCreation", "false")];
    let mut dst = open_destination(&topic, &off).await;
    creator.join().unwrap();
    let (n, err) = dst.write(&[to("ignored", "v")]).await.unwrap();
    assert_eq!((n, err.map(|e| e.to_string())), (1, None));
    assert_eq!(read_values(&topic, 1, ARRIVE).await, ["v"]);
}

#[tokio::test]
async fn a_refused_creation_names_the_topic_and_the_brokers_reason() {
    // nisshi takes at most 64 replicas whatever its number of brokers, Kafka no more than
    // it has brokers: both answer 1000 with 38 INVALID_REPLICATION_FACTOR.
    let topic = unique_name("refused");
    let r = open_refused(&[("topic", &topic), ("topicReplicationFactor", "1000")]).await;
    assert_eq!(
        (r.code, r.name.as_str(), r.retriable),
        (38, "INVALID_REPLICATION_FACTOR", false)
    );
    assert!(
        r.message.contains(&format!("creating topic \"{topic}\"")),
        "{}",
        r.message
    );
    assert_eq!(partitions(&topic), None);
}

#[tokio::test]
async fn an_invalid_collection_is_an_invalid_record_and_nothing_after_it_is_written() {
    let good = unique_name("before-bad");
    let mut dst = open_destination_at(&broker(), &[]).await;
    for bad in ["orders/2024", "..", &"x".repeat(250)] {
        let after = unique_name("after-bad");
        let (n, err) = dst
            .write(&[
                to(&good, bad),
                to(bad, "bad"),
                to(&good, "later"),
                to(&after, "later"),
            ])
            .await
            .unwrap();
        assert_eq!(n, 1, "{bad}");
        match err.map(|e| e.0) {
            Some(wit::Error::InvalidRecord(m)) => {
                let shown: String = bad.chars().take(64).collect();
                assert!(m.contains("opencdc.collection") && m.contains(&shown), "{m}");
                assert!(m.contains("is not a Kafka topic name"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            partitions(&after),
            None,
            "a topic named after the bad record was created"
        );
    }
    // One record per write, the first: nothing after the bad record.
    let mut firsts = vec!["..".to_string(), "orders/2024".into(), "x".repeat(250)];
    firsts.sort();
    assert_eq!(read_values(&good, 4, ABSENT).await, firsts);
}

/// Writers opening (or first writing) together all try to create the topic: one is first,
/// the others hear 36 TOPIC_ALREADY_EXISTS or find it, and all write.
#[tokio::test]
async fn writers_racing_to_create_one_topic_all_succeed() {
    let topic = unique_name("raced");
    let open = || open_destination(&topic, &[("topicPartitions", "3")]);
    let (mut a, mut b, mut c) = tokio::join!(open(), open(), open());
    assert_eq!(partitions(&topic), Some(3));
    let written = tokio::join!(
        write_one(&mut a, to("-", "a")),
        write_one(&mut b, to("-", "b")),
        write_one(&mut c, to("-", "c"))
    );
    assert_eq!(written, ((1, None), (1, None), (1, None)));
    assert_eq!(read_values(&topic, 3, ARRIVE).await, ["a", "b", "c"]);

    let collection = unique_name("raced-coll");
    let servers = broker();
    let open = || open_destination_at(&servers, &[("topicPartitions", "2")]);
    let (mut x, mut y, mut z) = tokio::join!(open(), open(), open());
    let written = tokio::join!(
        write_one(&mut x, to(&collection, "x")),
        write_one(&mut y, to(&collection, "y")),
        write_one(&mut z, to(&collection, "z"))
    );
    assert_eq!(written, ((1, None), (1, None), (1, None)));
    assert_eq!(partitions(&collection), Some(2));
    assert_eq!(read_values(&collection, 3, ARRIVE).await, ["x", "y", "z"]);
}

async fn write_one(dst: &mut Destination, rec: wit::Record) -> (u32, Option<String>) {
    let (n, err) = dst.write(&[rec]).await.expect("write");
    (n, err.map(|e| e.to_string()))
}

/// A created topic whose metadata does not come is waited for only until `deliveryTimeout`:
/// a timeout (retriable), and the next attempt finds the topic the first one created.
#[tokio::test]
async fn the_wait_for_a_new_topics_leaders_ends_with_the_delivery_timeout() {
    let b = PrivateBroker::start();
    let servers = b.addr();
    let topic = unique_name("unseen");
    // Metadata at connect and the lookup that finds the topic missing pass; the looks for
    // its leaders after CreateTopics get no answer.
    b.proxy().hold_responses(api::METADATA, 2);
    let mut dst = destination(&allow_servers(&servers)).await;
    let cfg = config(&[
        ("servers", &servers),
        ("topic", &topic),
        ("deliveryTimeout", "2s"),
    ]);
    let err = dst.open(&cfg).await.unwrap_err();
    assert!(
        matches!(guest_error(&err), wit::Error::Timeout(_)),
        "{:?}",
        guest_error(&err)
    );
    assert_eq!(b.proxy().responses(api::CREATE_TOPICS), 1);
    b.proxy().release_responses();

    let mut dst = open_destination_at(&servers, &[("topic", &topic)]).await;
    assert_eq!(b.proxy().responses(api::CREATE_TOPICS), 1, "created once");
    let (n, err) = dst.write(&[to("-", "after")]).await.unwrap();
    assert_eq!((n, err.map(|e| e.to_string())), (1, None));
}
