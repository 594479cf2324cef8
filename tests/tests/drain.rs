//! Stopping `connector-host run` with SIGTERM mid-run: every pipeline drains (the batch in
//! hand is written and acked, offsets committed) and a restart resumes from there, with no
//! record lost and none written twice.

use std::time::{Duration, Instant};

use connector_host::wit::Data;
use integration_tests::child::Running;
use integration_tests::faults::{PrivateBroker, api};
use integration_tests::pipelines::*;
use integration_tests::*;

/// How long the host may take to reach what a test waits for: far more than it needs, so that
/// only a hang reaches it.
const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_a_restart_resumes_from_the_commits_without_loss() {
    const N: usize = 50_000;
    // Writes the pipeline makes get their answers through the private broker's proxy, which
    // lets the first few through and then holds the next back: the run is stopped with that
    // write in flight, as certainly mid-run as can be, however fast the machine.
    const PASSED: u64 = 3;
    const BATCH: usize = 200;
    let b = PrivateBroker::start();
    let servers = b.addr();
    let (from, to) = (b.new_topic("drain-in", 3), b.new_topic("drain-out", 2));
    let mut sent = fill_at(&servers, &from, N, "d").await;
    sent.sort();
    let dir = scratch("drain");
    let mut file =
        format!("[[pipeline]]\nname = \"mirror\"\ntenant = \"t\"\nidle-exit = \"4s\"\nbatch = {BATCH}\n")
            + &allow_line(&servers);
    file += &kafka_end_at(
        &servers,
        "source",
        &format!("topics = \"{from}\", readFromBeginning = true, groupID = \"{from}\""),
    );
    // A held answer must not time the write out (10 s by default) on a loaded machine.
    file += &kafka_end_at(
        &servers,
        "destination",
        &format!("topic = \"{to}\", deliveryTimeout = \"60s\""),
    );
    let path = dir.join("pipelines.toml");
    std::fs::write(&path, &file).unwrap();

    // First run: once records flow (seen on the metrics endpoint) and a write waits on its
    // answer, SIGTERM; the answer comes once the host drains.
    b.proxy().hold_responses(api::PRODUCE, PASSED);
    let mut host = Running::spawn(&mut run_host(&path, &["--metrics", "127.0.0.1:0"]));
    let addr = metrics_addr(&mut host, LIMIT).await;
    let mut last = String::new();
    let metrics = wait_for(LIMIT, async || {
        last = scrape(&addr).await;
        metric(&last, "records_written_total", "t/mirror")
            .is_some_and(|w| w > 0)
            .then(|| last.clone())
    })
    .await
    .unwrap_or_else(|| panic!("no record moved in {LIMIT:?}:\n{last}\n{}", host.stderr()));
    let in_flight = wait_until(LIMIT, || b.proxy().held_responses() > 0).await;
    assert!(
        in_flight,
        "no write waited on its answer within {LIMIT:?}:\n{}",
        host.stderr()
    );
    assert!(
        metrics.contains("# TYPE connector_records_written_total counter"),
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "pipeline_running", "t/mirror"), Some(1));
    let lag = metric(&metrics, "consumer_lag_records", "t/mirror").expect("the source reports its lag");
    assert!(lag <= N as u64, "{lag}");
    host.terminate();
    host.wait_for_stderr(LIMIT, "the host to start draining", |s| {
        s.contains("stopping: draining every pipeline")
    })
    .await;
    b.proxy().release_responses();
    let (code, stderr) = host.finish(LIMIT).await;
    assert_eq!(code, 0, "a drained run exits 0:\n{stderr}");
    let first = written(summary(&stderr, "t/mirror"));
    assert!(summary(&stderr, "t/mirror").contains("stopped ("), "{stderr}");
    // The answered writes, and the one in flight at the SIGTERM, which the drain completed.
    let at_most = (PASSED as usize + 1) * BATCH;
    assert!(
        first > 0 && first <= at_most,
        "stopped mid-run: {first} of {N} written (at most {at_most})"
    );

    // Second run: resumes from the committed offsets and finishes once idle.
    let (code, stderr) = finish(&mut run_host(&path, &[]), Duration::from_secs(300)).await;
    assert_eq!(code, 0, "{stderr}");
    let second = written(summary(&stderr, "t/mirror"));
    eprintln!("first run wrote {first}, the restart {second}");
    assert_eq!(
        first + second,
        N,
        "the restart neither skipped nor repeated records"
    );
    assert_eq!(topic_values_at(&servers, &to, N).await, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_that_does_not_drain_in_time_is_dropped_and_named_and_the_rest_drain() {
    let (from, to) = (new_topic("drain-late-in", 1), new_topic("drain-late-out", 1));
    fill(&from, 100, "late").await;
    let dir = scratch("drain-late");
    std::fs::copy(hostile_component_path(), dir.join("hostile_guest.wasm")).unwrap();
    let mut file =
        String::from("[[pipeline]]\nname = \"mirror\"\ntenant = \"good\"\n") + &allow_broker_line();
    file += &kafka_end(
        "source",
        &format!("topics = \"{from}\", readFromBeginning = true, groupID = \"{from}\""),
    );
    file += &kafka_end("destination", &format!("topic = \"{to}\""));
    // A read that never returns, and a read deadline longer than the drain's.
    file += "\n[[pipeline]]\nname = \"stuck\"\ntenant = \"evil\"\ndeadlines = { read = \"10m\" }\n\
             [pipeline.source]\ntype = \"component\"\ncomponent = \"hostile_guest.wasm\"\n\
             settings = { mode = \"hang-read\" }\n\
             [pipeline.destination]\ntype = \"file\"\npath = \"stuck.jsonl\"\n";
    let path = dir.join("pipelines.toml");
    std::fs::write(&path, &file).unwrap();

    let mut host = Running::spawn(&mut run_host(&path, &["--drain-timeout", "2s"]));
    // Once the good pipeline has moved its records, stop the host.
    host.wait_for_stderr(LIMIT, "good/mirror to write its 100 records", |s| {
        s.contains("good/mirror: running") && s.contains("written 100 ")
    })
    .await;
    host.terminate();
    let stopped = Instant::now();
    let (code, stderr) = host.finish(LIMIT).await;
    let took = stopped.elapsed();
    assert_eq!(code, 1, "a pipeline dropped makes the exit code 1:\n{stderr}");
    assert!(
        took < Duration::from_secs(20),
        "the host exits after the drain deadline, took {took:?}"
    );
    let good = summary(&stderr, "good/mirror");
    assert!(good.contains("stopped (100 read, 100 written"), "{good}");
    let stuck = summary(&stderr, "evil/stuck");
    assert!(
        stuck.contains("failed") && stuck.contains("did not drain within 2s; dropped"),
        "{stuck}"
    );
}

/// The destination fails mid-way (a record larger than its `batchBytes`) while the source
/// reads the next batch meanwhile: exactly the prefix written is acked and committed, so a
/// restart of the group starts at the record that failed, and the batch read ahead is
/// neither written nor acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_failing_mid_way_acks_exactly_the_written_prefix_though_the_next_batch_was_read() {
    const N: usize = 100;
    const FAILS_AT: usize = 45;
    let (from, to) = (new_topic("prefix-in", 1), new_topic("prefix-out", 1));
    let value = |i: usize| match i {
        FAILS_AT => "x".repeat(20_000),
        _ => format!("p-{i}"),
    };
    let mut dst = open_destination(&from, &[]).await;
    let recs: Vec<_> = (0..N)
        .map(|i| record(None, Some(Data::Raw(value(i).into_bytes())), &[]))
        .collect();
    assert_eq!(dst.write(&recs).await.unwrap().0 as usize, N);
    dst.teardown().await.unwrap();

    let dir = scratch("prefix");
    let mut file =
        String::from("[[pipeline]]\nname = \"mirror\"\ntenant = \"t\"\nbatch = 10\n") + &allow_broker_line();
    file += &kafka_end(
        "source",
        &format!("topics = \"{from}\", readFromBeginning = true, groupID = \"{from}\""),
    );
    file += &kafka_end("destination", &format!("topic = \"{to}\", batchBytes = 10000"));
    let path = dir.join("pipelines.toml");
    std::fs::write(&path, &file).unwrap();
    let (code, stderr) = finish(&mut run_host(&path, &[]), LIMIT).await;
    assert_eq!(code, 1, "{stderr}");
    let line = summary(&stderr, "t/mirror");
    assert!(
        line.contains("failed") && line.contains("record too large"),
        "{line}"
    );
    assert_eq!(written(line), FAILS_AT, "{line}");

    let mut want: Vec<String> = (0..FAILS_AT).map(value).collect();
    want.sort();
    assert_eq!(topic_values(&to, FAILS_AT).await, want);
    // The group's commits: it resumes at the record that failed.
    let mut src = source(&allow_broker()).await;
    let cfg = config(&[("servers", &broker()), ("topic", &from), ("groupID", &from)]);
    src.open(&cfg, None).await.unwrap();
    let next = read_n(&mut src, 1, LIMIT).await;
    src.teardown().await.unwrap();
    assert_eq!(
        bytes(&next[0].payload.after).unwrap(),
        value(FAILS_AT).into_bytes()
    );
}
