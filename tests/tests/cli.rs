//! The `connector-host` command line: write JSON Lines in, read them back out.

use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use integration_tests::child::output_within;
use integration_tests::*;

/// How long one command may take before the test fails (with what it printed so far):
/// far more than any takes, so only a hang (a record lost, waited for forever) reaches it.
const LIMIT: Duration = Duration::from_secs(60);

fn host() -> Command {
    let mut c = Command::new(host_binary());
    c.arg("--component").arg(component_path());
    c
}

/// Runs `cmd` with `stdin`, waiting on it for at most [`LIMIT`], for `what`.
fn run(cmd: &mut Command, stdin: &str, what: &str) -> Output {
    output_within(cmd, stdin.as_bytes(), LIMIT, what)
}

/// `connector-host write` of `lines` (JSON Lines) to `topic`.
fn write_lines(topic: &str, lines: &str) {
    let mut write = host();
    write.args([
        "write",
        "-c",
        &format!("servers={}", broker()),
        "-c",
        &format!("topic={topic}"),
    ]);
    let what = format!("the write of {} lines to {topic}", lines.lines().count());
    let out = run(&mut write, lines, &what);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `connector-host read` of `n` records from the beginning of `topic`, with `extra` flags:
/// what it printed on stdout.
fn read_from_start(topic: &str, n: usize, extra: &[&str]) -> String {
    let mut read = host();
    read.args([
        "read",
        "-c",
        &format!("servers={}", broker()),
        "-c",
        &format!("topic={topic}"),
    ])
    .args(["-c", "readFromBeginning=true", "--max", &n.to_string()])
    .args(extra);
    let out = run(
        &mut read,
        "",
        &format!("{n} records of {topic} (one per stdout line)"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// [`read_from_start`]: the raw data found at `pointer` (a JSON pointer such as `/key`) of
/// each record, decoded from base64, sorted.
fn read_sorted(topic: &str, n: usize, pointer: &str) -> Vec<String> {
    let mut values: Vec<String> = read_from_start(topic, n, &[])
        .lines()
        .map(|l| {
            let record: serde_json::Value = serde_json::from_str(l).unwrap();
            let b64 = record.pointer(pointer).and_then(|v| v.as_str()).unwrap();
            String::from_utf8(STANDARD.decode(b64).unwrap()).unwrap()
        })
        .collect();
    values.sort();
    values
}

#[test]
fn write_then_read_through_the_command_line() {
    let topic = new_topic("cli", 2);
    let lines: String = (0..4)
        .map(|i| format!("{{\"key\":{{\"id\":{i}}},\"payload\":{{\"after\":{{\"n\":{i}}}}}}}\n"))
        .collect();
    write_lines(&topic, &lines);
    // Keys were structured on the way in; Kafka keeps bytes, so they come back raw (base64).
    let keys = read_sorted(&topic, 4, "/key");
    assert_eq!(keys, [r#"{"id":0}"#, r#"{"id":1}"#, r#"{"id":2}"#, r#"{"id":3}"#]);
}

#[test]
fn a_bad_config_exits_non_zero_naming_the_parameter() {
    let mut validate = host();
    validate.args([
        "validate",
        "destination",
        "-c",
        "servers=a:1",
        "-c",
        "topic=t",
        "-c",
        "acks=2",
    ]);
    let out = run(&mut validate, "", "validate to refuse acks=2");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid config \"acks\""), "{stderr}");
}

#[test]
fn pipe_moves_records_from_a_source_to_a_destination() {
    let (from, to) = (new_topic("pipe-in", 2), new_topic("pipe-out", 1));
    let servers = format!("servers={}", broker());
    let lines: String = (0..5)
        .map(|i| format!("{{\"payload\":{{\"after\":{{\"n\":{i}}}}}}}\n"))
        .collect();
    write_lines(&from, &lines);

    let mut pipe = host();
    pipe.args([
        "pipe",
        "-s",
        &servers,
        "-s",
        &format!("topic={from}"),
        "-s",
        "readFromBeginning=true",
    ])
    .args(["-d", &servers, "-d", &format!("topic={to}"), "--max", "5"]);
    let pipe = run(&mut pipe, "", &format!("5 records piped from {from} to {to}"));
    assert!(pipe.status.success(), "{}", String::from_utf8_lossy(&pipe.stderr));
    let stderr = String::from_utf8_lossy(&pipe.stderr);
    assert!(
        stderr.contains("pipeline cli/pipe finished (5 read, 5 written, 0 errors)"),
        "{stderr}"
    );

    let values = read_sorted(&to, 5, "/payload/after");
    assert_eq!(
        values,
        (0..5).map(|i| format!("{{\"n\":{i}}}")).collect::<Vec<_>>()
    );
}

#[test]
fn numbers_a_flag_cannot_mean_are_refused_naming_the_flag_and_the_bounds() {
    let servers = format!("servers={}", broker());
    let read = ["read", "-c", &servers, "-c", "topic=t"];
    let cases: [(Vec<&str>, &str); 7] = [
        // Shifted into bytes, this wrapped to 0 and was taken.
        (
            vec!["--memory-mib", "17592186044416", "spec"],
            "'--memory-mib <MIB>': an instance's memory must be from 1 MiB to 4096 MiB",
        ),
        (
            vec!["--memory-mib", "4097", "spec"],
            "from 1 MiB to 4096 MiB (a wasm32 memory is at most 4 GiB), not 4097 MiB",
        ),
        (vec!["--memory-mib", "0", "spec"], "'--memory-mib <MIB>'"),
        (
            vec!["run", "none.toml", "--max-instances", "0"],
            "'--max-instances <MAX_INSTANCES>': 0 is not in 1..",
        ),
        (
            vec!["write", "-c", &servers, "-c", "topic=t", "--batch", "0"],
            "'--batch <BATCH>': 0 is not in 1..=100000",
        ),
        (
            vec!["--progress-every", "0s", "spec"],
            "'--progress-every <PROGRESS_EVERY>': \"0s\" must be more than zero",
        ),
        (
            [&read[..], &["--idle-exit", "99999999999h"]].concat(),
            "\"99999999999h\" is too long a duration",
        ),
    ];
    for (args, want) in cases {
        let out = run(host().args(&args), "", &format!("{args:?} to be refused"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

#[test]
fn read_as_text_shows_each_record_on_one_line_with_its_data_escaped() {
    let topic = new_topic("cli-text", 1);
    // A key that is not UTF-8 and a value with a newline that tries to forge a record.
    let key = STANDARD.encode(b"k\xff1");
    let forged = STANDARD.encode(format!("two\n{topic} [0] @ 9\tkey: forged").as_bytes());
    let lines = format!(
        "{{\"key\":\"{key}\",\"metadata\":{{\"trace\":\"a\\tb\"}},\"payload\":{{\"after\":\"{forged}\"}}}}\n\
         {{\"payload\":{{\"after\":{{\"n\":1}}}}}}\n"
    );
    write_lines(&topic, &lines);
    let text = read_from_start(&topic, 2, &["--format", "text"]);
    let want = format!(
        "{topic} [0] @ 0\tkey: k\\xff1\tvalue: two\\n{topic} [0] @ 9\\tkey: forged\theader trace: a\\tb\n\
         {topic} [0] @ 1\tvalue: {{\"n\":1}}\n"
    );
    assert_eq!(text, want);
}
