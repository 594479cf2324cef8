//! Stopping `connector-host run` with SIGTERM mid-run: every pipeline drains (the batch in
//! hand is written and acked, offsets committed) and a restart resumes from there, with no
//! record lost and none written twice.

use std::time::{Duration, Instant};

use integration_tests::pipelines::*;
use integration_tests::*;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Scrapes `http://addr/metrics` once.
async fn scrape(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .expect("metrics endpoint");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).await.unwrap();
    body
}

fn sample(metrics: &str, name: &str, id: &str) -> Option<u64> {
    let (tenant, pipeline) = id.split_once('/').unwrap();
    let key = format!("connector_{name}{{tenant=\"{tenant}\",pipeline=\"{pipeline}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&key)?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_a_restart_resumes_from_the_commits_without_loss() {
    const N: usize = 50_000;
    let (from, to) = (new_topic("drain-in", 3), new_topic("drain-out", 2));
    let mut sent = fill(&from, N, "d").await;
    sent.sort();
    let dir = scratch("drain");
    let mut file =
        String::from("[[pipeline]]\nname = \"mirror\"\ntenant = \"t\"\nidle-exit = \"4s\"\nbatch = 200\n")
            + &allow_broker_line();
    file += &kafka_end(
        "source",
        &format!("topics = \"{from}\", readFromBeginning = true, groupID = \"{from}\""),
    );
    file += &kafka_end("destination", &format!("topic = \"{to}\""));
    let path = dir.join("pipelines.toml");
    std::fs::write(&path, &file).unwrap();

    // First run: wait until records flow (seen on the metrics endpoint), then SIGTERM.
    let mut child = run_host(&path, &["--metrics", "127.0.0.1:0"]).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut stderr = String::new();
    let addr = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("the host announces its metrics address");
        stderr += &line;
        stderr.push('\n');
        if let Some(rest) = line.strip_prefix("metrics at http://") {
            break rest.trim_end_matches("/metrics").to_string();
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let m = scrape(&addr).await;
        if sample(&m, "records_written_total", "t/mirror").is_some_and(|w| w > 0) {
            break m;
        }
        assert!(Instant::now() < deadline, "no record moved in time:\n{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        metrics.contains("# TYPE connector_records_written_total counter"),
        "{metrics}"
    );
    assert_eq!(sample(&metrics, "pipeline_running", "t/mirror"), Some(1));
    let lag = sample(&metrics, "consumer_lag_records", "t/mirror").expect("the source reports its lag");
    assert!(lag <= N as u64, "{lag}");
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    while let Some(line) = lines.next_line().await.unwrap() {
        stderr += &line;
        stderr.push('\n');
    }
    let code = child.wait().await.unwrap().code();
    assert_eq!(code, Some(0), "a drained run exits 0:\n{stderr}");
    assert!(stderr.contains("stopping: draining every pipeline"), "{stderr}");
    let first = written(summary(&stderr, "t/mirror"));
    assert!(summary(&stderr, "t/mirror").contains("stopped ("), "{stderr}");
    assert!(first > 0 && first < N, "stopped mid-run: {first} of {N} written");

    // Second run: resumes from the committed offsets and finishes once idle.
    let (code, stderr) = finish(run_host(&path, &[]).spawn().unwrap(), Duration::from_secs(300)).await;
    assert_eq!(code, 0, "{stderr}");
    let second = written(summary(&stderr, "t/mirror"));
    eprintln!("first run wrote {first}, the restart {second}");
    assert_eq!(
        first + second,
        N,
        "the restart neither skipped nor repeated records"
    );
    assert_eq!(topic_values(&to, N).await, sent);
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

    let mut child = run_host(&path, &["--drain-timeout", "2s"]).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut stderr = String::new();
    // Once the good pipeline has moved its records, stop the host.
    while !stderr.contains("good/mirror: running") || !stderr.contains("written 100 ") {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("the host reports progress");
        stderr += &line;
        stderr.push('\n');
    }
    let pid = child.id().unwrap().to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    let stopped = Instant::now();
    while let Some(line) = lines.next_line().await.unwrap() {
        stderr += &line;
        stderr.push('\n');
    }
    let code = child.wait().await.unwrap().code();
    let took = stopped.elapsed();
    assert_eq!(
        code,
        Some(1),
        "a pipeline dropped makes the exit code 1:\n{stderr}"
    );
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
