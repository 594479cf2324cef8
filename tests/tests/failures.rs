//! Error classes and restarts: a permanent failure (the host's allowlist refusing the
//! address a broker advertises) ends `read`, `write` and `run` at once, saying what was
//! refused and that restarting cannot help; a retriable one (the broker unreachable for a
//! while) restarts the pipeline, which then delivers every record.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use integration_tests::child::{Running, output_within};
use integration_tests::faults::{PrivateBroker, api};
use integration_tests::pipelines::*;
use integration_tests::*;

/// Far longer than a refusal may take: only a hang reaches it.
const LIMIT: Duration = Duration::from_secs(90);

/// A refusal is final at once; retrying for the whole group or delivery timeout (30 s,
/// 10 s) would take far longer than this.
const QUICK: Duration = Duration::from_secs(15);

/// `connector-host <command>` with the connector on `servers` (only those are allowed).
fn one_off(command: &str, servers: &str, settings: &[&str]) -> Command {
    let mut c = Command::new(host_binary());
    c.arg("--component").arg(component_path()).arg(command);
    c.args(["-c", &format!("servers={servers}")]);
    for s in settings {
        c.args(["-c", s]);
    }
    c
}

/// What a refusal of the broker's advertised address must say: the address, the allow
/// entry that would permit it, that it is final; never a WASI errno.
fn assert_says_refused(stderr: &str, advertised: &str) {
    assert!(stderr.contains("not permitted"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "only an operator allow entry \"{advertised}\" permits it"
        )),
        "the allow entry is named:\n{stderr}"
    );
    assert!(stderr.contains("permanent: restarting cannot help"), "{stderr}");
    assert!(!stderr.contains("os error"), "no errno in messages:\n{stderr}");
    assert!(
        !stderr.contains("trying again"),
        "a refusal is not retried:\n{stderr}"
    );
}

#[test]
fn read_and_write_fail_at_once_when_the_allowlist_refuses_the_advertised_broker() {
    // Reached at its own listener, the broker advertises its proxy: another port.
    let broker = PrivateBroker::start();
    let topic = broker.new_topic("refused", 1);
    let (servers, advertised) = (broker.broker_addr().to_string(), broker.addr());

    let mut read = one_off(
        "read",
        &servers,
        &[&format!("topic={topic}"), "readFromBeginning=true"],
    );
    read.args(["--max", "1"]);
    let started = Instant::now();
    let out = output_within(&mut read, b"", LIMIT, "read to fail");
    let (took, stderr) = (started.elapsed(), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(took < QUICK, "read took {took:?} to fail:\n{stderr}");
    assert_says_refused(&stderr, &advertised);

    let mut write = one_off("write", &servers, &[&format!("topic={topic}")]);
    let line = br#"{"operation":"create","payload":{"after":"aGk="}}"#;
    let started = Instant::now();
    let out = output_within(&mut write, &[&line[..], b"\n"].concat(), LIMIT, "write to fail");
    let (took, stderr) = (started.elapsed(), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(took < QUICK, "write took {took:?} to fail:\n{stderr}");
    assert_says_refused(&stderr, &advertised);
}

/// A pipeline file of one pipeline `acme/mirror` from `from` on the test broker to `to`
/// on `servers` (a private broker's proxy), restarted per `restart`.
fn mirror(from: &str, to: &str, servers: &str, allow: &str, restart: &str) -> String {
    let mut file = format!(
        "[[pipeline]]\nname = \"mirror\"\ntenant = \"acme\"\nbatch = 20\nidle-exit = \"4s\"\n\
         restart = {restart}\nallow = [\"{}\", \"{allow}\"]\n",
        broker()
    );
    file += &kafka_end(
        "source",
        &format!(
            "topics = \"{from}\", readFromBeginning = true, groupID = \"{from}\", commitOffsetsSize = 20"
        ),
    );
    file += &kafka_end_at(
        servers,
        "destination",
        &format!("topic = \"{to}\", deliveryTimeout = \"1s\""),
    );
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_whose_broker_goes_away_mid_stream_restarts_and_delivers_every_record() {
    const N: usize = 400;
    let from = new_topic("restart-in", 2);
    let sent: BTreeSet<String> = fill(&from, N, "r").await.into_iter().collect();
    let dest = PrivateBroker::start();
    let to = dest.new_topic("restart-out", 1);
    let dir = scratch("restart");
    let path = dir.join("pipelines.toml");
    let restart = r#"{ attempts = 10, backoff = "200ms", max-backoff = "1s" }"#;
    std::fs::write(&path, mirror(&from, &to, &dest.addr(), &dest.addr(), restart)).unwrap();

    // A few writes pass, then the destination's broker goes away while one waits.
    dest.proxy().hold_responses(api::PRODUCE, 3);
    let mut host = Running::spawn(&mut run_host(&path, &[]));
    assert!(
        wait_until(LIMIT, || dest.proxy().held_responses() > 0).await,
        "a write waits on the broker:\n{}",
        host.stderr()
    );
    dest.proxy().set_refuse(true);
    dest.proxy().cut();
    dest.proxy().release_responses();
    host.wait_for_stderr(LIMIT, "a second restart", |s| s.contains("restart 2 of 10"))
        .await;
    dest.proxy().set_refuse(false);
    let (code, stderr) = host.finish(LIMIT).await;

    assert_eq!(code, 0, "{stderr}");
    let line = summary(&stderr, "acme/mirror");
    assert!(line.contains("finished"), "{line}");
    assert!(stderr.contains("of pipeline acme/mirror in "), "{stderr}");
    assert!(stderr.contains("after a retriable failure: "), "{stderr}");
    let restarts = stderr
        .lines()
        .filter_map(|l| {
            l.strip_prefix("progress acme/mirror: ")?
                .rsplit_once("restarts ")?
                .1
                .parse::<u32>()
                .ok()
        })
        .max();
    assert!(
        restarts >= Some(2),
        "progress lines count the restarts:\n{stderr}"
    );
    // At-least-once: every record arrived (those not acked before a failure came again).
    let got: BTreeSet<String> = topic_values_at(&dest.addr(), &to, N).await.into_iter().collect();
    let missing: Vec<_> = sent.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "{} records lost: {missing:?}\n{stderr}",
        missing.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_address_is_not_restarted_and_metrics_say_so() {
    let from = new_topic("refused-in", 1);
    fill(&from, 10, "x").await;
    let dest = PrivateBroker::start();
    let to = dest.new_topic("refused-out", 1);
    let dir = scratch("refused");
    let path = dir.join("pipelines.toml");
    // The destination's bootstrap is its broker's own listener, which advertises the proxy.
    let servers = dest.broker_addr().to_string();
    let restart = r#"{ attempts = 10, backoff = "200ms" }"#;
    // A pipeline beside it keeps the host running (until told to stop) for the scrapes.
    let keeper = format!(
        "\n[[pipeline]]\nname = \"keeper\"\ntenant = \"acme\"\n{}{}\
         [pipeline.destination]\ntype = \"file\"\npath = \"kept.jsonl\"\n",
        allow_broker_line(),
        kafka_end(
            "source",
            &format!("topics = \"{from}\", groupID = \"{from}-keeper\"")
        ),
    );
    std::fs::write(&path, mirror(&from, &to, &servers, &servers, restart) + &keeper).unwrap();

    let metrics_port = free_port().to_string();
    let mut host = Running::spawn(&mut run_host(
        &path,
        &["--metrics", &format!("127.0.0.1:{metrics_port}")],
    ));
    let addr = metrics_addr(&mut host, LIMIT).await;
    let failed = "connector_pipeline_failed{tenant=\"acme\",pipeline=\"mirror\"} 1";
    let text = wait_for(LIMIT, async || {
        Some(scrape(&addr).await).filter(|t| t.contains(failed))
    })
    .await;
    let text = text.expect("the pipeline fails");
    assert!(
        text.contains("connector_pipeline_last_failure_permanent{tenant=\"acme\",pipeline=\"mirror\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("connector_pipeline_restarts_total{tenant=\"acme\",pipeline=\"mirror\"} 0"),
        "{text}"
    );
    host.terminate();
    let (code, stderr) = host.finish(LIMIT).await;
    assert_eq!(code, 1, "{stderr}");
    assert_says_refused(summary(&stderr, "acme/mirror"), &dest.addr());
    assert!(!stderr.contains("restart 1 of"), "{stderr}");
}
