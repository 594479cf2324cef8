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

/// How kclient.py (librdkafka) reaches a broker: which one (default: the test broker) and
/// with which more librdkafka settings (`security.protocol`, `sasl.*`, `ssl.*`: paths for
/// files).
///
/// ```text
/// Librdkafka::at(&b.addr())
///     .set("security.protocol", "SASL_SSL")
///     .set("ssl.ca.location", &ca_path.display().to_string())
///     .produce(&topic, &records, "none");
/// ```
#[derive(Clone, Debug, Default)]
pub struct Librdkafka {
    broker: Option<String>,
    config: Vec<(String, String)>,
    fail_fast: bool,
}

impl Librdkafka {
    /// librdkafka on the test broker, as it comes.
    pub fn new() -> Librdkafka {
        Librdkafka::default()
    }

    /// librdkafka on `broker` ("host:port").
    pub fn at(broker: &str) -> Librdkafka {
        Librdkafka {
            broker: Some(broker.to_string()),
            ..Librdkafka::default()
        }
    }

    /// One more librdkafka setting.
    pub fn set(mut self, key: &str, value: &str) -> Librdkafka {
        self.config.push((key.to_string(), value.to_string()));
        self
    }

    /// The first error librdkafka reports (authentication, TLS, transport) fails the
    /// command at once: for tests of what must fail.
    pub fn fail_fast(mut self) -> Librdkafka {
        self.fail_fast = true;
        self
    }

    /// Writes `records` to `topic`, compressed with `codec` (none, gzip, snappy, lz4,
    /// zstd), `acks=all`, librdkafka's default partitioner for records without a partition.
    pub fn produce(&self, topic: &str, records: &[KRecord], codec: &str) {
        self.produce_with(topic, records, codec, "consistent_random");
    }

    /// `produce` with librdkafka's `partitioner` setting (e.g. `murmur2_random`, the Java
    /// client's partitioning).
    pub fn produce_with(&self, topic: &str, records: &[KRecord], codec: &str, partitioner: &str) {
        self.try_produce_with(topic, records, codec, partitioner)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// `produce`, its failure returned: what kclient.py printed on stderr.
    pub fn try_produce(&self, topic: &str, records: &[KRecord], codec: &str) -> Result<(), String> {
        self.try_produce_with(topic, records, codec, "consistent_random")
    }

    fn try_produce_with(
        &self,
        topic: &str,
        records: &[KRecord],
        codec: &str,
        partitioner: &str,
    ) -> Result<(), String> {
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
        self.kclient("produce", &args, &input).map(drop)
    }

    /// Reads `n` records of `topic`, every partition from the beginning, in the order they
    /// arrive (per partition, offset order); panics if fewer arrive within 30 s.
    pub fn consume(&self, topic: &str, n: usize) -> Vec<KRecord> {
        self.try_consume(topic, n).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `consume`, its failure returned: what kclient.py printed on stderr.
    pub fn try_consume(&self, topic: &str, n: usize) -> Result<Vec<KRecord>, String> {
        let count = n.to_string();
        let out = self.kclient(
            "consume",
            &["--topic", topic, "--count", &count, "--timeout", "30"],
            "",
        )?;
        Ok(out.lines().map(parse_record).collect())
    }

    /// Runs kclient.py `command` on the broker with the settings, `args`, `stdin` as its
    /// input: its stdout, or what it said on stderr when it failed.
    fn kclient(&self, command: &str, args: &[&str], stdin: &str) -> Result<String, String> {
        let script = workspace().join("tests/interop/kclient.py");
        let broker = self.broker.clone().unwrap_or_else(broker);
        let mut kclient = Command::new(python());
        kclient
            .arg(&script)
            .args([command, "--broker", &broker])
            .args(args);
        for (k, v) in &self.config {
            kclient.arg("--config").arg(format!("{k}={v}"));
        }
        if self.fail_fast {
            kclient.arg("--fail-fast");
        }
        // Far more than it takes (a consume gives up by itself after its --timeout): only a
        // hang reaches it.
        let what = format!("kclient.py {command} {}", args.join(" "));
        let out = output_within(&mut kclient, stdin.as_bytes(), Duration::from_secs(180), &what);
        if !out.status.success() {
            return Err(format!(
                "kclient.py {command} {} on {broker} failed ({}):\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8(out.stdout).expect("kclient.py prints UTF-8"))
    }
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

/// Writes `records` to `topic` of the test broker with librdkafka (see
/// [`Librdkafka::produce`]).
pub fn librdkafka_produce(topic: &str, records: &[KRecord], codec: &str) {
    Librdkafka::new().produce(topic, records, codec)
}

/// `librdkafka_produce` with librdkafka's `partitioner` setting (e.g. `murmur2_random`, the
/// Java client's partitioning).
pub fn librdkafka_produce_with(topic: &str, records: &[KRecord], codec: &str, partitioner: &str) {
    Librdkafka::new().produce_with(topic, records, codec, partitioner)
}

/// Reads `n` records of `topic` of the test broker with librdkafka (see
/// [`Librdkafka::consume`]).
pub fn librdkafka_consume(topic: &str, n: usize) -> Vec<KRecord> {
    Librdkafka::new().consume(topic, n)
}

/// A record as kclient.py prints it (one JSON line).
fn parse_record(line: &str) -> KRecord {
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
}
