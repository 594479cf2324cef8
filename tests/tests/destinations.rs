//! A tenant's own destination component that breaks the write contract (`connector-host
//! run`): a write that reports fewer records than it was given and no error, or more than
//! it was given, fails its pipeline naming the component and the numbers, and the source
//! commits exactly the prefix really written.

use std::time::Duration;

use integration_tests::pipelines::*;
use integration_tests::*;

/// Records in the topic; the pipeline reads them `BATCH` at a time.
const N: usize = 50;
const BATCH: usize = 10;

/// Runs a pipeline from a fresh topic of `N` records, group `group`, to the hostile
/// destination in `mode` (its first write honest, the next a lie): the host's exit code,
/// the pipeline's summary line, and its records read and written.
async fn run_to_hostile_destination(mode: &str, topic: &str, group: &str) -> (i32, String, usize, usize) {
    fill(topic, N, mode).await;
    let dir = scratch(mode);
    std::fs::copy(hostile_component_path(), dir.join("hostile_guest.wasm")).unwrap();
    let mut file = format!("[[pipeline]]\nname = \"{mode}\"\ntenant = \"evil\"\nbatch = {BATCH}\n")
        + &allow_broker_line();
    file += &kafka_end(
        "source",
        &format!("topics = \"{topic}\", readFromBeginning = true, groupID = \"{group}\""),
    );
    file += &format!(
        "[pipeline.destination]\ntype = \"component\"\ncomponent = \"hostile_guest.wasm\"\n\
         settings = {{ mode = \"{mode}\" }}\n"
    );
    let path = dir.join("pipelines.toml");
    std::fs::write(&path, &file).unwrap();
    let (code, stderr) = finish(&mut run_host(&path, &[]), Duration::from_secs(120)).await;
    let line = summary(&stderr, &format!("evil/{mode}")).to_string();
    let read: usize = line
        .split_once(" (")
        .and_then(|(_, r)| r.split_once(" read"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("a read count in {line}"));
    let written = written(&line);
    (code, line, read, written)
}

/// The offset the group `group` resumes `topic` (one partition) at: that of the first
/// record a new member of it reads.
async fn resumes_at(topic: &str, group: &str) -> u64 {
    let mut src = source(&allow_servers(&broker())).await;
    let cfg = config(&[("servers", &broker()), ("topic", topic), ("groupID", group)]);
    src.open(&cfg, None).await.expect("open source");
    let first = read_n(&mut src, 1, Duration::from_secs(60)).await;
    src.teardown().await.expect("teardown");
    metadata_value(&first[0], "kafka.offset")
        .and_then(|o| o.parse().ok())
        .expect("a kafka.offset")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_short_without_an_error_fails_the_pipeline_and_only_the_prefix_is_committed() {
    let (topic, group) = (new_topic("short", 1), format!("short-{}", std::process::id()));
    let (code, line, read, written) = run_to_hostile_destination("write-short", &topic, &group).await;
    assert_eq!(code, 1, "{line}");
    assert!(
        line.contains("connector evil/write-short/destination broke the write contract: wrote")
            && line.contains("records and gave no error for the rest"),
        "{line}"
    );
    // The honest first batch and half of the second: fewer than were read.
    assert!(written < read && written > 0, "{line}");
    assert_eq!(resumes_at(&topic, &group).await, written as u64, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_reporting_more_than_it_was_given_fails_the_pipeline_and_counts_none_of_it() {
    let (topic, group) = (new_topic("over", 1), format!("over-{}", std::process::id()));
    let (code, line, read, written) = run_to_hostile_destination("write-over", &topic, &group).await;
    assert_eq!(code, 1, "{line}");
    // The lying write is of one batch (the next one may have been read ahead meanwhile).
    let want = format!(
        "connector evil/write-over/destination broke the write contract: reported {} of {BATCH} records written",
        BATCH + 1
    );
    assert!(line.contains(&want), "{line}");
    // Only the honest first batch counts and is committed; none of the second.
    assert!(written > 0 && written < read, "{line}");
    assert_eq!(resumes_at(&topic, &group).await, written as u64, "{line}");
}
