//! A second, independent Kafka client for interop tests: librdkafka, through the
//! confluent-kafka Python wheel, driven by `tests/interop/kclient.py` with the python of the
//! venv `scripts/interop-setup.sh` makes.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::child::output_within;
use crate::{broker, workspace};

/// A Kafka record as librdkafka writes or reads it. `partition` is where to write it
/// (`None`: librdkafka's partitioner decides) or where it was read; `offset` and
/// `timestamp_ms` are only known for records read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub timestamp_ms: Option<i64>,
}

/// The venv's python, found as scripts/interop-setup.sh places it.
fn python() -> PathBuf {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let cache = var("WASM_KAFKA_CACHE").unwrap_or_else(|| {
        var("XDG_CACHE_HOME")
            .or_else(|| var("HOME").map(|h| h.join(".cache")))
            .expect("neither WASM_KAFKA_CACHE, XDG_CACHE_HOME nor HOME is set")
            .join("wasm-kafka")
    });
    let python = cache.join("venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/interop-setup.sh (it installs confluent-kafka, i.e. librdkafka)",
        python.display()
    );
    python
}

/// Runs kclient.py with `args` (after the broker's address), `stdin` as its input; returns
/// its stdout, or panics with its stderr.
fn kclient(command: &str, args: &[&str], stdin: &str) -> String {
    let script = workspace().join("tests/interop/kclient.py");
    let mut kclient = Command::new(python());
    kclient
        .arg(&script)
        .args([command, "--broker", &broker()])
        .args(args);
    // Far more than it takes (a consume gives up by itself after its --timeout): only a
    // hang reaches it.
    let what = format!("kclient.py {command} {}", args.join(" "));
    let out = output_within(&mut kclient, stdin.as_bytes(), Duration::from_secs(180), &what);
    assert!(
        out.status.success(),
        "kclient.py {command} {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kclient.py prints UTF-8")
}

fn b64(bytes: &Option<Vec<u8>>) -> Value {
    bytes.as_ref().map_or(Value::Null, |b| STANDARD.encode(b).into())
}

fn unb64(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(STANDARD.decode(s).expect("kclient.py prints base64")),
        other => panic!("not base64 or null: {other}"),
    }
}

/// Writes `records` to `topic` with librdkafka, compressed with `codec` (none, gzip, snappy,
/// lz4, zstd), `acks=all`, librdkafka's default partitioner for records without a partition.
pub fn librdkafka_produce(topic: &str, records: &[KRecord], codec: &str) {
    librdkafka_produce_with(topic, records, codec, "consistent_random")
}

/// `librdkafka_produce` with librdkafka's `partitioner` setting (e.g. `murmur2_random`, the
/// Java client's partitioning).
pub fn librdkafka_produce_with(topic: &str, records: &[KRecord], codec: &str, partitioner: &str) {
    let mut input = String::new();
    for r in records {
        let headers: Vec<Value> = r.headers.iter().map(|(n, v)| json!([n, b64(v)])).collect();
        let mut line = json!({"key": b64(&r.key), "value": b64(&r.value), "headers": headers});
        if let Some(p) = r.partition {
            line["partition"] = p.into();
        }
        input.push_str(&line.to_string());
        input.push('\n');
    }
    let args = [
        "--topic",
        topic,
        "--codec",
        codec,
        "--acks",
        "all",
        "--partitioner",
        partitioner,
    ];
    kclient("produce", &args, &input);
}

/// Reads `n` records of `topic` with librdkafka, every partition from the beginning, in the
/// order they arrive (per partition, offset order); panics if fewer arrive within 30 s.
pub fn librdkafka_consume(topic: &str, n: usize) -> Vec<KRecord> {
    let count = n.to_string();
    let out = kclient(
        "consume",
        &["--topic", topic, "--count", &count, "--timeout", "30"],
        "",
    );
    out.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("kclient.py prints JSON Lines");
            let headers = v["headers"]
                .as_array()
                .expect("headers")
                .iter()
                .map(|h| (h[0].as_str().expect("header name").to_string(), unb64(&h[1])))
                .collect();
            KRecord {
                key: unb64(&v["key"]),
                value: unb64(&v["value"]),
                headers,
                partition: Some(v["partition"].as_i64().expect("partition") as i32),
                offset: v["offset"].as_i64(),
                timestamp_ms: v["timestamp"].as_i64(),
            }
        })
        .collect()
}
