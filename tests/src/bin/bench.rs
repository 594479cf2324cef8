//! `just bench`: the destination's producer throughput and memory next to librdkafka's, measured
//! in the same run against the same broker (`KAFKA_BROKER`, started by `scripts/broker.sh run`).
//!
//! For each value size (100 B, 1 KiB) each side runs in its own child process (this binary
//! re-executed as `bench run SIDE SIZE COUNT`), so each reports its own peak memory:
//! - `ours`: the connector component through `connector_host`, a destination opened with
//!   acks=all and compression=snappy, written in calls of 10,000 records; timed from the first
//!   write to the last write returning (a write returns once its records are acknowledged);
//! - `librdkafka`: rdkafka's `BaseProducer`, acks=all, idempotence, snappy; timed from the first
//!   send to `flush()` returning with every record delivered.
//!
//! Both write the same records, generated in memory before the clock starts, to their own fresh
//! 6-partition topic. The parent prints ratios and the targets; a missed target is reported,
//! never a failure. `--count N` overrides the records per run (1,000,000).

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use connector_host::{Allowlist, Limits, Runtime, wit};
use integration_tests::{broker, component_path, new_topic, workspace};
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

const SIZES: [usize; 2] = [100, 1024];
const DEFAULT_COUNT: usize = 1_000_000;
const PARTITIONS: i32 = 6;
/// Records per `destination.write` call.
const WRITE_BATCH: usize = 10_000;
const DISTINCT_KEYS: usize = 10_000;
const TARGET_RATIO: f64 = 1.0;
const TARGET_PEAK_MIB: f64 = 100.0;
const SIDES: [&str; 2] = ["ours", "librdkafka"];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("run") {
        let [_, side, size, count] = &args[..] else {
            bail!("usage: bench run ours|librdkafka SIZE COUNT");
        };
        return child(side, size.parse()?, count.parse()?);
    }
    let mut count = DEFAULT_COUNT;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--count" => {
                count = it
                    .next()
                    .context("--count needs a number")?
                    .replace('_', "")
                    .parse()
                    .context("--count needs a number")?
            }
            _ => bail!("usage: bench [--count N]   (records per run, default {DEFAULT_COUNT})"),
        }
    }
    ensure!(count > 0, "--count must be positive");
    parent(count)
}

// ---------------------------------------------------------------------------------------------
// Parent: runs the children, prints the table.

/// What one child measured.
struct Measured {
    records: u64,
    value_bytes: u64,
    seconds: f64,
    /// VmHWM of the whole child process.
    peak_kib: u64,
    /// VmRSS once the records were generated, before the client existed.
    input_kib: u64,
}

impl Measured {
    fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.seconds
    }
    fn mb_per_sec(&self) -> f64 {
        self.value_bytes as f64 / self.seconds / 1e6
    }
    fn peak_mib(&self) -> f64 {
        self.peak_kib as f64 / 1024.0
    }
    /// The peak above the generated records: what the client itself needed.
    fn client_mib(&self) -> f64 {
        self.peak_kib.saturating_sub(self.input_kib) as f64 / 1024.0
    }
}

fn parent(count: usize) -> Result<()> {
    let broker = broker();
    let component = component_path();
    let exe = std::env::current_exe()?;
    println!(
        "producer benchmark: {count} records per run, acks=all, snappy, {PARTITIONS} partitions per topic"
    );
    println!(
        "  ours: {} through connector_host, {WRITE_BATCH} records per write call",
        component.display()
    );
    println!(
        "  librdkafka {}: BaseProducer, enable.idempotence=true, partitioner=murmur2_random, other settings default",
        rdkafka::util::get_rdkafka_version().1
    );
    println!("  broker {broker}; {} cores, {}", nproc(), cpu_model());
    println!(
        "  keys key-{{i % {DISTINCT_KEYS}}}, values pseudo-random letters; MB = 10^6 value bytes; each side in its own process"
    );
    println!();

    let mut results: Vec<(usize, [Measured; 2])> = Vec::new();
    for size in SIZES {
        let mut pair = Vec::new();
        for side in SIDES {
            eprintln!("bench: {side}, {count} x {size} B ...");
            let out = Command::new(&exe)
                .args(["run", side, &size.to_string(), &count.to_string()])
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .with_context(|| format!("cannot run {}", exe.display()))?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            ensure!(
                out.status.success(),
                "the {side} run ({size} B) failed: {}\n{stdout}",
                out.status
            );
            pair.push(
                parse_result(&stdout).with_context(|| format!("the {side} run ({size} B) said: {stdout}"))?,
            );
        }
        let [a, b]: [Measured; 2] = pair.try_into().map_err(|_| anyhow!("two sides"))?;
        results.push((size, [a, b]));
    }

    println!(
        "{:<6} {:<11} {:>12} {:>9} {:>14} {:>16} {:>16}",
        "size", "side", "records/s", "MB/s", "peak RSS MiB", "client peak MiB", "ours/librdkafka"
    );
    for (size, sides) in &results {
        let ratio = sides[0].records_per_sec() / sides[1].records_per_sec();
        for (side, m) in SIDES.iter().zip(sides) {
            println!(
                "{:<6} {:<11} {:>12.0} {:>9.1} {:>14.1} {:>16.1} {:>16}",
                size_name(*size),
                side,
                m.records_per_sec(),
                m.mb_per_sec(),
                m.peak_mib(),
                m.client_mib(),
                if *side == "ours" {
                    format!("{ratio:.2}x")
                } else {
                    String::new()
                },
            );
        }
    }
    println!();
    println!("peak RSS = VmHWM of the side's process, including the {count} generated records it holds;");
    println!(
        "client peak = peak RSS minus the RSS once the records were generated (what the client itself used)."
    );
    println!();
    println!("targets (reported, never failing the run):");
    for (size, sides) in &results {
        let ratio = sides[0].records_per_sec() / sides[1].records_per_sec();
        println!(
            "  {:<6} throughput ours >= {TARGET_RATIO:.1}x librdkafka: {ratio:.2}x  {}",
            size_name(*size),
            met(ratio >= TARGET_RATIO)
        );
    }
    for (size, sides) in &results {
        let client = sides[0].client_mib();
        println!(
            "  {:<6} peak memory ours < {TARGET_PEAK_MIB:.0} MiB: {client:.1} MiB above the generated records ({:.1} MiB whole process)  {}",
            size_name(*size),
            sides[0].peak_mib(),
            met(client < TARGET_PEAK_MIB)
        );
    }
    Ok(())
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn size_name(size: usize) -> String {
    if size % 1024 == 0 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

fn parse_result(stdout: &str) -> Result<Measured> {
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .context("no RESULT line")?;
    let v: serde_json::Value = serde_json::from_str(line)?;
    let num = |k: &str| v[k].as_f64().with_context(|| format!("no {k} in {line}"));
    Ok(Measured {
        records: num("records")? as u64,
        value_bytes: num("value_bytes")? as u64,
        seconds: num("seconds")?,
        peak_kib: num("peak_kib")? as u64,
        input_kib: num("input_kib")? as u64,
    })
}

fn nproc() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

// ---------------------------------------------------------------------------------------------
// Child: one side, one size.

fn child(side: &str, size: usize, count: usize) -> Result<()> {
    let records = generate(size, count);
    let input_kib = status_kib("VmRSS")?;
    let peak_before = status_kib("VmHWM")?;
    // From here on VmHWM is the peak of the run (Linux: "5" resets the peak RSS).
    let _ = std::fs::write("/proc/self/clear_refs", "5");

    let (elapsed, topic) = match side {
        "ours" => run_ours(&records)?,
        "librdkafka" => run_librdkafka(&records)?,
        _ => bail!("unknown side {side}"),
    };

    let peak_kib = status_kib("VmHWM")?.max(peak_before);
    let value_bytes = (size * count) as u64;
    let seconds = elapsed.as_secs_f64();
    eprintln!(
        "bench: {side} {size} B: {count} records to {topic} in {seconds:.3} s, peak {} MiB",
        peak_kib / 1024
    );
    println!(
        "RESULT {}",
        serde_json::json!({
            "side": side,
            "size": size,
            "records": count,
            "value_bytes": value_bytes,
            "seconds": seconds,
            "peak_kib": peak_kib,
            "input_kib": input_kib,
        })
    );
    Ok(())
}

/// `count` raw records: keys `key-{i % 10000}`, values `size` pseudo-random letters (like
/// kafka-producer-perf-test's payloads: neither all-equal bytes nor incompressible noise).
fn generate(size: usize, count: usize) -> Vec<wit::Record> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut records = Vec::with_capacity(count);
    for i in 0..count {
        let mut value = Vec::with_capacity(size);
        while value.len() < size {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
            for b in r.to_le_bytes().iter().take(size - value.len()) {
                value.push(b'A' + b % 26);
            }
        }
        records.push(wit::Record {
            position: vec![],
            operation: wit::Operation::Create,
            metadata: vec![],
            key: Some(wit::Data::Raw(format!("key-{}", i % DISTINCT_KEYS).into_bytes())),
            payload: wit::Change {
                before: None,
                after: Some(wit::Data::Raw(value)),
            },
        });
    }
    records
}

fn raw(d: &Option<wit::Data>) -> &[u8] {
    match d {
        Some(wit::Data::Raw(b)) => b,
        _ => unreachable!("the bench generates raw keys and values"),
    }
}

/// A field of /proc/self/status, in KiB.
fn status_kib(field: &str) -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/self/status"))
}

fn run_ours(records: &[wit::Record]) -> Result<(Duration, String)> {
    let broker = broker();
    let topic = new_topic("bench-ours", PARTITIONS);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let cache = std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| workspace().join("target"))
            .join("component-cache");
        let runtime = Runtime::new(&component_path(), &cache)?;
        let mut allow = Allowlist::default();
        allow.allow_servers(&broker)?;
        let mut dst = runtime
            .instantiate("bench/destination", &allow, &Limits::default())
            .await?
            .into_destination();
        let config: Vec<(String, String)> = [
            ("servers", broker.as_str()),
            ("topic", topic.as_str()),
            ("acks", "all"),
            ("compression", "snappy"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        dst.open(&config).await?;

        let mut calls = Vec::with_capacity(records.len() / WRITE_BATCH + 1);
        let start = Instant::now();
        for chunk in records.chunks(WRITE_BATCH) {
            let t = Instant::now();
            let (written, error) = dst.write(chunk).await?;
            calls.push(t.elapsed());
            if written as usize != chunk.len() || error.is_some() {
                bail!(
                    "a write of {} records reported {written} written: {}",
                    chunk.len(),
                    error.map(|e| e.to_string()).unwrap_or_default()
                );
            }
        }
        let elapsed = start.elapsed();
        dst.teardown().await?;
        let first = calls[0];
        calls.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        eprintln!(
            "bench: ours: {} write calls, ms per call: first {:.1}, median {:.1}, p90 {:.1}, max {:.1}",
            calls.len(),
            ms(first),
            ms(calls[calls.len() / 2]),
            ms(calls[calls.len() * 9 / 10]),
            ms(calls[calls.len() - 1]),
        );
        Ok((elapsed, topic))
    })
}

/// Counts delivery reports; the run fails if any record failed.
#[derive(Default)]
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {
    fn error(&self, error: KafkaError, reason: &str) {
        eprintln!("bench: librdkafka: {error}: {reason}");
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| e.to_string());
            }
        }
    }
}

fn run_librdkafka(records: &[wit::Record]) -> Result<(Duration, String)> {
    let topic = new_topic("bench-librdkafka", PARTITIONS);
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .set("client.id", "bench-librdkafka")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.codec", "snappy")
        // The Java client's (and the connector's) partitioner, so both sides fill the same partitions.
        .set("partitioner", "murmur2_random")
        .create_with_context(Deliveries::default())
        .context("cannot create the librdkafka producer")?;

    let start = Instant::now();
    for (i, r) in records.iter().enumerate() {
        let mut record = BaseRecord::to(&topic)
            .key(raw(&r.key))
            .payload(raw(&r.payload.after));
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => bail!("librdkafka refused record {i}: {e}"),
            }
        }
        if i % 1000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(Duration::from_secs(300))
        .context("librdkafka flush")?;
    let elapsed = start.elapsed();

    let ctx = producer.context();
    let failed = ctx.failed.load(Ordering::Relaxed);
    let delivered = ctx.delivered.load(Ordering::Relaxed);
    if failed > 0 {
        bail!(
            "librdkafka: {failed} delivery errors, the first: {}",
            ctx.first_error.lock().unwrap().clone().unwrap_or_default()
        );
    }
    ensure!(
        delivered == records.len() as u64,
        "librdkafka: {delivered} of {} records reported delivered",
        records.len()
    );
    Ok((elapsed, topic))
}
