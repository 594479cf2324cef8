//! `just bench`: the destination's producer throughput and memory next to librdkafka's, measured
//! in the same run against the same broker (`KAFKA_BROKER`, started by `scripts/broker.sh run`).
//!
//! For each value size (100 B, 1 KiB) each side runs in its own child process (this binary
//! re-executed as `bench run SIDE SIZE COUNT`), so each reports its own peak memory:
//! - `ours`: the connector component through `connector_host`, a destination opened with
//!   acks=all and compression=snappy, written in `write-batch` calls of 10,000 records (packed
//!   before the clock starts, as a pipeline hands a source's batches on); timed from the first
//!   write to the last write returning (a write returns once its records are acknowledged);
//! - `librdkafka`: rdkafka's `BaseProducer`, acks=all, idempotence, snappy; timed from the first
//!   send to `flush()` returning with every record delivered.
//!
//! Both write the same records, generated in memory before the clock starts, to their own fresh
//! 6-partition topic. The parent prints ratios and the targets; a missed target is reported,
//! never a failure.
//!
//! The consumer side (the source) next to librdkafka's consumer, in the same way: one fresh
//! 6-partition topic is filled once (by librdkafka in this process: 100 B values, keys
//! `key-{i % 10000}`, acks=all, snappy), then each side reads all of it from the beginning in
//! its own child process (`bench consume-run SIDE TOPIC COUNT`) with a fresh consumer group:
//! - `ours`: a source through `connector_host` (`readFromBeginning=true`), `read-batch(10000,
//!   1000)` in a loop (the records packed, read in place like librdkafka's messages), every
//!   record's partition, offset and value looked at and every batch's positions acked right
//!   after it (`ack-batch`, the positions packed) as a pipeline would; timed from
//!   `open()` returning (the group joined, the partitions assigned) to the last record received;
//! - `librdkafka`: rdkafka's `BaseConsumer`, `auto.offset.reset=earliest`, auto commit, one
//!   `poll` per message, `fetch.queue.backoff.ms=10` (see `consume_librdkafka`), other settings
//!   default; timed from the assignment (the rebalance callback) to the last record.
//!
//! Each side checks it got exactly every record once (per-partition bitsets of offsets).
//!
//! Every comparison runs both sides `--rounds` times (default 5), alternating which side goes
//! first, and compares each side's median run: single runs on a shared 2-core machine swing by
//! a third either way. Every round's ratio is printed too.
//!
//! `bench [produce] [consume] [--count N] [--rounds N]`: which parts (default both); `--count N`
//! overrides the records per run (1,000,000), for both parts.

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use connector_host::{Allowlist, DataRef, EngineOptions, Limits, RecordBatch, Runtime, SharedEngine, wit};
use integration_tests::{broker, component_cache, component_path, new_topic};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message};

const SIZES: [usize; 2] = [100, 1024];
const DEFAULT_COUNT: usize = 1_000_000;
const DEFAULT_ROUNDS: usize = 5;
const PARTITIONS: i32 = 6;
/// Records per `destination.write-batch` call.
const WRITE_BATCH: usize = 10_000;
const DISTINCT_KEYS: usize = 10_000;
const TARGET_RATIO: f64 = 1.0;
const TARGET_PEAK_MIB: f64 = 100.0;
const SIDES: [&str; 2] = ["ours", "librdkafka"];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => {
            let [_, side, size, count] = &args[..] else {
                bail!("usage: bench run ours|librdkafka SIZE COUNT");
            };
            return child(side, size.parse()?, count.parse()?);
        }
        Some("consume-run") => {
            let [_, side, topic, count] = &args[..] else {
                bail!("usage: bench consume-run ours|librdkafka TOPIC COUNT");
            };
            return consume_child(side, topic, count.parse()?);
        }
        _ => {}
    }
    let usage = || {
        anyhow!(
            "usage: bench [produce] [consume] [--count N] [--rounds N]   (default both parts; records per run, default {DEFAULT_COUNT}; runs per side, default {DEFAULT_ROUNDS})"
        )
    };
    let number = |v: Option<&String>, what: &str| -> Result<usize> {
        let v = v.with_context(|| format!("{what} needs a number"))?;
        v.replace('_', "")
            .parse()
            .with_context(|| format!("{what} needs a number, not {v}"))
    };
    let (mut count, mut rounds) = (DEFAULT_COUNT, DEFAULT_ROUNDS);
    let (mut produce, mut consume) = (false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--count" => count = number(it.next(), "--count")?,
            "--rounds" => rounds = number(it.next(), "--rounds")?,
            "produce" | "producer" => produce = true,
            "consume" | "consumer" => consume = true,
            _ => return Err(usage()),
        }
    }
    ensure!(count > 0, "--count must be positive");
    ensure!(rounds > 0, "--rounds must be positive");
    if !produce && !consume {
        (produce, consume) = (true, true);
    }
    let broker = broker();
    println!("broker {broker}; {} cores, {}", nproc(), cpu_model());
    println!();
    if produce {
        parent(count, rounds)?;
    }
    if consume {
        if produce {
            println!();
        }
        consume_parent(count, rounds)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Parent: runs the children, prints the table.

/// Both sides run `n` times; each side's median run (by records/s) is the one compared.
struct Rounds<M> {
    /// The median run of each side, in `SIDES` order.
    median: [M; 2],
    /// Ours over librdkafka, round by round.
    ratios: Vec<f64>,
}

impl<M: std::ops::Deref<Target = Run>> Rounds<M> {
    /// Runs both sides `n` times, alternating which goes first (so neither always meets a
    /// broker the other just warmed or loaded).
    fn run(n: usize, mut run: impl FnMut(&str) -> Result<M>) -> Result<Self> {
        let mut runs: [Vec<M>; 2] = [Vec::new(), Vec::new()];
        let mut ratios = Vec::new();
        for round in 0..n {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                runs[side].push(run(SIDES[side])?);
            }
            ratios.push(runs[0][round].records_per_sec() / runs[1][round].records_per_sec());
        }
        let median = runs.map(|mut v| {
            v.sort_by(|a, b| a.records_per_sec().total_cmp(&b.records_per_sec()));
            v.swap_remove(v.len() / 2)
        });
        Ok(Rounds { median, ratios })
    }

    /// Ours over librdkafka, median against median.
    fn ratio(&self) -> f64 {
        self.median[0].records_per_sec() / self.median[1].records_per_sec()
    }

    /// The rounds' own ratios, for the spread behind the medians.
    fn spread(&self) -> String {
        let each: Vec<String> = self.ratios.iter().map(|r| format!("{r:.2}x")).collect();
        format!(
            "median of {} runs per side; the rounds' own ratios: {}",
            self.ratios.len(),
            each.join(", ")
        )
    }
}

/// What every child measures, read from its `RESULT` line.
struct Run {
    records: u64,
    value_bytes: u64,
    seconds: f64,
    /// VmHWM of the whole child process.
    peak_kib: u64,
}

impl Run {
    /// The child's `RESULT {json}` line, and the run it reports.
    fn parse(stdout: &str) -> Result<(serde_json::Value, Run)> {
        let line = stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("RESULT "))
            .context("no RESULT line")?;
        let v: serde_json::Value = serde_json::from_str(line)?;
        let run = Run {
            records: number(&v, "records")? as u64,
            value_bytes: number(&v, "value_bytes")? as u64,
            seconds: number(&v, "seconds")?,
            peak_kib: number(&v, "peak_kib")? as u64,
        };
        Ok((v, run))
    }
    fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.seconds
    }
    fn mb_per_sec(&self) -> f64 {
        self.value_bytes as f64 / self.seconds / 1e6
    }
    fn peak_mib(&self) -> f64 {
        self.peak_kib as f64 / 1024.0
    }
}

fn number(v: &serde_json::Value, key: &str) -> Result<f64> {
    v[key].as_f64().with_context(|| format!("no {key} in {v}"))
}

/// What one producer child measured.
struct Measured {
    run: Run,
    /// VmRSS once the records were generated, before the client existed.
    input_kib: u64,
}

impl std::ops::Deref for Measured {
    type Target = Run;
    fn deref(&self) -> &Run {
        &self.run
    }
}

impl Measured {
    /// The peak above the generated records: what the client itself needed.
    fn client_mib(&self) -> f64 {
        self.peak_kib.saturating_sub(self.input_kib) as f64 / 1024.0
    }
}

fn parent(count: usize, rounds: usize) -> Result<()> {
    let component = component_path();
    let exe = std::env::current_exe()?;
    println!(
        "producer benchmark: {count} records per run, acks=all, snappy, {PARTITIONS} partitions per topic"
    );
    println!(
        "  ours: {} through connector_host, {WRITE_BATCH} records per write-batch call (packed)",
        component.display()
    );
    println!(
        "  librdkafka {}: BaseProducer, enable.idempotence=true, partitioner=murmur2_random, other settings default",
        rdkafka::util::get_rdkafka_version().1
    );
    println!(
        "  keys key-{{i % {DISTINCT_KEYS}}}, values pseudo-random letters; MB = 10^6 value bytes; each side in its own process"
    );
    println!();

    let mut results: Vec<(usize, Rounds<Measured>)> = Vec::new();
    for size in SIZES {
        let run = |side: &str| {
            eprintln!("bench: {side}, {count} x {size} B ...");
            let what = format!("the {side} run ({size} B)");
            let stdout = run_child(&exe, &["run", side, &size.to_string(), &count.to_string()], &what)?;
            parse_result(&stdout).with_context(|| format!("{what} said: {stdout}"))
        };
        results.push((size, Rounds::run(rounds, run)?));
    }

    println!(
        "{:<6} {:<11} {:>12} {:>9} {:>14} {:>16} {:>16}",
        "size", "side", "records/s", "MB/s", "peak RSS MiB", "client peak MiB", "ours/librdkafka"
    );
    for (size, r) in &results {
        let ratio = r.ratio();
        for (side, m) in SIDES.iter().zip(&r.median) {
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
    for (size, r) in &results {
        println!("{:<6} {}", size_name(*size), r.spread());
    }
    println!("peak RSS = VmHWM of the side's process, including the {count} generated records it holds;");
    println!(
        "client peak = peak RSS minus the RSS once the records were generated (what the client itself used)."
    );
    println!();
    println!("targets (reported, never failing the run):");
    for (size, r) in &results {
        let ratio = r.ratio();
        println!(
            "  {:<6} throughput ours >= {TARGET_RATIO:.1}x librdkafka: {ratio:.2}x  {}",
            size_name(*size),
            met(ratio >= TARGET_RATIO)
        );
    }
    for (size, r) in &results {
        let ours = &r.median[0];
        let client = ours.client_mib();
        println!(
            "  {:<6} peak memory ours < {TARGET_PEAK_MIB:.0} MiB: {client:.1} MiB above the generated records ({:.1} MiB whole process)  {}",
            size_name(*size),
            ours.peak_mib(),
            met(client < TARGET_PEAK_MIB)
        );
    }
    Ok(())
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn size_name(size: usize) -> String {
    if size.is_multiple_of(1024) {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

fn parse_result(stdout: &str) -> Result<Measured> {
    let (v, run) = Run::parse(stdout)?;
    Ok(Measured {
        run,
        input_kib: number(&v, "input_kib")? as u64,
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
    let input = match side {
        "ours" => Input::Packed(generate_packed(size, count)?),
        "librdkafka" => Input::Records(generate(size, count)),
        _ => bail!("unknown side {side}"),
    };
    let input_kib = status_kib("VmRSS")?;
    let peak_before = status_kib("VmHWM")?;
    // From here on VmHWM is the peak of the run (Linux: "5" resets the peak RSS).
    let _ = std::fs::write("/proc/self/clear_refs", "5");

    let (elapsed, topic) = match &input {
        Input::Packed(batches) => run_ours(batches)?,
        Input::Records(records) => run_librdkafka(records)?,
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
    records(size).take(count).collect()
}

/// `generate`'s records packed, `WRITE_BATCH` per batch: what ours is handed, as a pipeline
/// hands a source's batches on (built a batch at a time, never all records at once).
fn generate_packed(size: usize, count: usize) -> Result<Vec<RecordBatch>> {
    let mut all = records(size).take(count).peekable();
    let mut batches = Vec::with_capacity(count / WRITE_BATCH + 1);
    while all.peek().is_some() {
        let chunk: Vec<wit::Record> = all.by_ref().take(WRITE_BATCH).collect();
        batches.push(RecordBatch::pack(&chunk)?);
    }
    Ok(batches)
}

/// Records with keys `key-{i % DISTINCT_KEYS}` and values of `size` pseudo-random letters.
fn records(size: usize) -> impl Iterator<Item = wit::Record> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..).map(move |i| {
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
        wit::Record {
            position: vec![],
            operation: wit::Operation::Create,
            metadata: vec![],
            key: Some(wit::Data::Raw(format!("key-{}", i % DISTINCT_KEYS).into_bytes())),
            payload: wit::Change {
                before: None,
                after: Some(wit::Data::Raw(value)),
            },
        }
    })
}

fn raw(d: &Option<wit::Data>) -> &[u8] {
    match d {
        Some(wit::Data::Raw(b)) => b,
        _ => unreachable!("the bench generates raw keys and values"),
    }
}

/// Runs this binary again with `args` (one side of a part); its stdout, once it succeeded.
fn run_child(exe: &std::path::Path, args: &[&str], what: &str) -> Result<String> {
    let out = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(out.status.success(), "{what} failed: {}\n{stdout}", out.status);
    Ok(stdout)
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

/// A producer side's records, generated before its clock starts.
enum Input {
    /// Ours: packed, one batch per write call.
    Packed(Vec<RecordBatch>),
    /// librdkafka: one by one.
    Records(Vec<wit::Record>),
}

fn run_ours(batches: &[RecordBatch]) -> Result<(Duration, String)> {
    let broker = broker();
    let topic = new_topic("bench-ours", PARTITIONS);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let runtime = Runtime::load(
            &SharedEngine::new(&EngineOptions::default())?,
            &component_path(),
            &component_cache(),
        )?;
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

        let mut calls = Vec::with_capacity(batches.len());
        let start = Instant::now();
        for chunk in batches {
            let t = Instant::now();
            let (written, error) = dst.write_batch(chunk).await?;
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
    let elapsed = produce_librdkafka(&topic, records)?;
    Ok((elapsed, topic))
}

/// Writes `records` to `topic` with librdkafka (acks=all, idempotence, snappy, murmur2) and
/// returns the time from the first send to `flush()` returning, every record delivered.
fn produce_librdkafka(topic: &str, records: &[wit::Record]) -> Result<Duration> {
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
        let mut record = BaseRecord::to(topic)
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
    Ok(elapsed)
}

// ---------------------------------------------------------------------------------------------
// Consumer: one topic filled once, then each side reads all of it in its own process.

/// Value size of the records the consumer benchmark reads.
const CONSUME_SIZE: usize = 100;
/// `source.read-batch(max, wait-ms)` as the benchmark calls it.
const READ_MAX: u32 = 10_000;
const READ_WAIT_MS: u32 = 1_000;
/// librdkafka's `fetch.queue.backoff.ms` in the consumer benchmark (its default is 1000).
const LIBRDKAFKA_FETCH_QUEUE_BACKOFF_MS: &str = "10";
/// A side that gets no record for this long has stalled: the run fails (a broken run, not a
/// slow one).
const STALL: Duration = Duration::from_secs(60);

/// What one consumer child measured.
struct ConsumeMeasured {
    /// Its `seconds` run from the group joined (partitions assigned) to the last record.
    run: Run,
    /// From `open()`/`subscribe()` to the partitions assigned (not in `seconds`).
    join_ms: f64,
    /// From the clock's start to the first record.
    first_ms: f64,
    /// CPU time (user + system, all threads) of the side's process on the clock.
    cpu_seconds: f64,
}

impl std::ops::Deref for ConsumeMeasured {
    type Target = Run;
    fn deref(&self) -> &Run {
        &self.run
    }
}

fn consume_parent(count: usize, rounds: usize) -> Result<()> {
    let component = component_path();
    let exe = std::env::current_exe()?;
    let version = rdkafka::util::get_rdkafka_version().1;
    println!(
        "consumer benchmark: {count} records of {CONSUME_SIZE} B in one {PARTITIONS}-partition topic, read from the beginning by each side with a fresh group"
    );
    println!(
        "  topic filled once by librdkafka {version} (acks=all, idempotence, snappy, murmur2_random), keys key-{{i % {DISTINCT_KEYS}}}"
    );
    println!(
        "  ours: {} through connector_host, source readFromBeginning=true, read-batch({READ_MAX}, {READ_WAIT_MS}) in a loop, every batch acked (ack-batch); commit settings default",
        component.display()
    );
    println!(
        "  librdkafka {version}: BaseConsumer, one poll per message, auto.offset.reset=earliest, enable.auto.commit=true, fetch.queue.backoff.ms={LIBRDKAFKA_FETCH_QUEUE_BACKOFF_MS} (default 1000: whole-second stalls), other settings default"
    );
    println!(
        "  clock: from the partitions assigned (ours: open() returned; librdkafka: the assign callback) to the last record received"
    );
    println!();

    let topic = new_topic("bench-consume", PARTITIONS);
    eprintln!("bench: filling {topic} with {count} x {CONSUME_SIZE} B through librdkafka ...");
    let fill = {
        let records = generate(CONSUME_SIZE, count);
        produce_librdkafka(&topic, &records)?
    };
    let in_topic = topic_records(&topic)?;
    ensure!(
        in_topic == count as u64,
        "{topic} holds {in_topic} records after the fill, not {count}"
    );
    eprintln!("bench: filled {topic} in {:.3} s", fill.as_secs_f64());

    let run = |side: &str| {
        eprintln!("bench: {side} reads {count} records from {topic} ...");
        let what = format!("the {side} consumer run");
        let stdout = run_child(&exe, &["consume-run", side, &topic, &count.to_string()], &what)?;
        parse_consume_result(&stdout).with_context(|| format!("{what} said: {stdout}"))
    };
    let rounds = Rounds::run(rounds, run)?;
    let ratio = rounds.ratio();
    println!(
        "{:<11} {:>12} {:>9} {:>14} {:>7} {:>9} {:>10} {:>16}",
        "side", "records/s", "MB/s", "peak RSS MiB", "CPU s", "join ms", "first ms", "ours/librdkafka"
    );
    for (side, m) in SIDES.iter().zip(&rounds.median) {
        println!(
            "{:<11} {:>12.0} {:>9.1} {:>14.1} {:>7.2} {:>9.0} {:>10.0} {:>16}",
            side,
            m.records_per_sec(),
            m.mb_per_sec(),
            m.peak_mib(),
            m.cpu_seconds,
            m.join_ms,
            m.first_ms,
            if *side == "ours" {
                format!("{ratio:.2}x")
            } else {
                String::new()
            },
        );
    }
    println!();
    println!("{}", rounds.spread());
    println!("each side received exactly {count} records, every (partition, offset) once;");
    println!(
        "peak RSS = VmHWM of the side's whole process (ours: host, wasmtime, compiled component, guest memory);"
    );
    println!("CPU = user + system time of the side's process (all its threads) on the clock;");
    println!(
        "join = open() (ours) or subscribe() to the assignment (librdkafka), outside the clock; first = clock start to the first record."
    );
    println!();
    println!("targets (reported, never failing the run):");
    println!(
        "  consume throughput ours >= {TARGET_RATIO:.1}x librdkafka: {ratio:.2}x  {}",
        met(ratio >= TARGET_RATIO)
    );
    Ok(())
}

fn parse_consume_result(stdout: &str) -> Result<ConsumeMeasured> {
    let (v, run) = Run::parse(stdout)?;
    Ok(ConsumeMeasured {
        run,
        join_ms: number(&v, "join_ms")?,
        first_ms: number(&v, "first_ms")?,
        cpu_seconds: number(&v, "cpu_seconds")?,
    })
}

/// Records in `topic` (high minus low watermark, summed over its partitions).
fn topic_records(topic: &str) -> Result<u64> {
    let client: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .create()
        .context("cannot create a librdkafka client")?;
    let mut total = 0;
    for p in 0..PARTITIONS {
        let (low, high) = client
            .client()
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .with_context(|| format!("watermarks of {topic}-{p}"))?;
        total += (high - low) as u64;
    }
    Ok(total)
}

/// What a consumer side saw.
struct Consumed {
    tally: Tally,
    elapsed: Duration,
    /// Process CPU time on the clock.
    cpu: Duration,
    join: Duration,
    first: Duration,
}

fn consume_child(side: &str, topic: &str, count: usize) -> Result<()> {
    let c = match side {
        "ours" => consume_ours(topic, count)?,
        "librdkafka" => consume_librdkafka(topic, count)?,
        _ => bail!("unknown side {side}"),
    };
    let peak_kib = status_kib("VmHWM")?;
    let t = &c.tally;
    ensure!(
        t.duplicates == 0,
        "{side}: {} of {} records were duplicates",
        t.duplicates,
        t.records
    );
    ensure!(
        t.records == count as u64,
        "{side}: {} records received, not {count}",
        t.records
    );
    let seconds = c.elapsed.as_secs_f64();
    eprintln!(
        "bench: {side} read {} records from {topic} in {seconds:.3} s, {:.2} s CPU (join {:.0} ms, first record {:.0} ms), peak {} MiB",
        t.records,
        c.cpu.as_secs_f64(),
        c.join.as_secs_f64() * 1e3,
        c.first.as_secs_f64() * 1e3,
        peak_kib / 1024
    );
    println!(
        "RESULT {}",
        serde_json::json!({
            "side": side,
            "records": t.records,
            "value_bytes": t.value_bytes,
            "seconds": seconds,
            "peak_kib": peak_kib,
            "join_ms": c.join.as_secs_f64() * 1e3,
            "first_ms": c.first.as_secs_f64() * 1e3,
            "cpu_seconds": c.cpu.as_secs_f64(),
        })
    );
    Ok(())
}

/// Counts records and finds duplicates: one bitset of offsets per partition.
struct Tally {
    records: u64,
    value_bytes: u64,
    duplicates: u64,
    seen: Vec<Vec<u64>>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            records: 0,
            value_bytes: 0,
            duplicates: 0,
            seen: vec![Vec::new(); PARTITIONS as usize],
        }
    }

    fn add(&mut self, partition: i32, offset: i64, value_len: usize) -> Result<()> {
        ensure!(
            (0..PARTITIONS).contains(&partition) && offset >= 0,
            "a record at partition {partition}, offset {offset}"
        );
        ensure!(
            value_len == CONSUME_SIZE,
            "a record of {value_len} B at {partition}@{offset}, not {CONSUME_SIZE} B"
        );
        let bits = &mut self.seen[partition as usize];
        let (word, bit) = (offset as usize / 64, offset as usize % 64);
        if bits.len() <= word {
            bits.resize((word + 1).next_power_of_two(), 0);
        }
        if bits[word] & (1 << bit) != 0 {
            self.duplicates += 1;
        }
        bits[word] |= 1 << bit;
        self.records += 1;
        self.value_bytes += value_len as u64;
        Ok(())
    }
}

fn fresh_group(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A numeric metadata entry of a source record (`kafka.partition`, `kafka.offset`).
fn metadata_num<T: std::str::FromStr>(value: Option<&str>, key: &str) -> Result<T> {
    value
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("a record without a numeric {key}"))
}

fn consume_ours(topic: &str, count: usize) -> Result<Consumed> {
    let broker = broker();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let runtime = Runtime::load(&SharedEngine::new(&EngineOptions::default())?, &component_path(), &component_cache())?;
        let mut allow = Allowlist::default();
        allow.allow_servers(&broker)?;
        let mut src = runtime
            .instantiate("bench/source", &allow, &Limits::default())
            .await?
            .into_source();
        let group = fresh_group("bench-ours");
        let config: Vec<(String, String)> = [
            ("servers", broker.as_str()),
            ("topic", topic),
            ("readFromBeginning", "true"),
            ("groupID", group.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let t = Instant::now();
        src.open(&config, None).await?;
        let join = t.elapsed();

        let mut tally = Tally::new();
        let start = Instant::now();
        let cpu_start = process_cpu()?;
        let (mut first, mut last) = (None, start);
        let (mut reads, mut empty, mut in_read, mut in_ack) = (0u64, 0u64, Duration::ZERO, Duration::ZERO);
        // The longest read call shows a stall (a read that waited with records left).
        let mut longest = Duration::ZERO;
        let mut cpu_end = cpu_start;
        while tally.records < count as u64 {
            let t = Instant::now();
            let batch = src.read_batch(READ_MAX, READ_WAIT_MS).await?;
            let now = Instant::now();
            in_read += now - t;
            longest = longest.max(now - t);
            reads += 1;
            if batch.is_empty() {
                empty += 1;
                ensure!(
                    now - last < STALL,
                    "ours: no record for {STALL:?} after {} of {count}",
                    tally.records
                );
                continue;
            }
            first.get_or_insert(now - start);
            last = now;
            if tally.records + batch.len() as u64 >= count as u64 {
                cpu_end = process_cpu()?;
            }
            let mut positions = Vec::with_capacity(batch.len());
            for r in batch.iter() {
                let len = match r.after() {
                    Some(DataRef::Raw(v)) => v.len(),
                    _ => bail!("ours: a record without a raw value"),
                };
                tally.add(
                    metadata_num(r.metadata_value("kafka.partition"), "kafka.partition")?,
                    metadata_num(r.metadata_value("kafka.offset"), "kafka.offset")?,
                    len,
                )?;
                positions.push(r.position());
            }
            let t = Instant::now();
            src.ack_batch(positions).await?;
            in_ack += t.elapsed();
        }
        let elapsed = last - start;
        src.teardown().await?;
        eprintln!(
            "bench: ours: {reads} read calls ({empty} empty, the longest {:.1} ms), {:.3} s in read, {:.3} s in ack, {:.3} s in the bench's own bookkeeping",
            longest.as_secs_f64() * 1e3,
            in_read.as_secs_f64(),
            in_ack.as_secs_f64(),
            (elapsed.saturating_sub(in_read + in_ack)).as_secs_f64(),
        );
        Ok(Consumed {
            tally,
            elapsed,
            cpu: cpu_end.saturating_sub(cpu_start),
            join,
            first: first.unwrap_or_default(),
        })
    })
}

/// Notes when librdkafka got its partitions, and the process CPU time then.
#[derive(Default)]
struct Assigned(Mutex<Option<(Instant, Duration)>>);

impl ClientContext for Assigned {
    fn error(&self, error: KafkaError, reason: &str) {
        eprintln!("bench: librdkafka: {error}: {reason}");
    }
}

impl ConsumerContext for Assigned {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(parts) = rebalance
            && parts.count() > 0
        {
            self.0
                .lock()
                .unwrap()
                .get_or_insert_with(|| (Instant::now(), process_cpu().unwrap_or_default()));
        }
    }
}

fn consume_librdkafka(topic: &str, count: usize) -> Result<Consumed> {
    let consumer: BaseConsumer<Assigned> = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .set("client.id", "bench-librdkafka")
        .set("group.id", fresh_group("bench-librdkafka"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        // The one setting off its default: with 1000 ms, a partition whose prefetch queue passed
        // queued.min.messages (100,000, i.e. whenever the application falls behind the fetcher, as
        // it does here against a local broker) is not fetched for a whole second, so the run took
        // 0.95 s, 1.8 s or 2.8 s at the same CPU time. librdkafka's docs advise lowering it
        // against such ~1 s stalls; 10 ms makes the yardstick steady (and no slower).
        .set("fetch.queue.backoff.ms", LIBRDKAFKA_FETCH_QUEUE_BACKOFF_MS)
        .create_with_context(Assigned::default())
        .context("cannot create the librdkafka consumer")?;
    let subscribed = Instant::now();
    consumer.subscribe(&[topic])?;

    let mut tally = Tally::new();
    let (mut first, mut last) = (None, subscribed);
    while tally.records < count as u64 {
        match consumer.poll(Duration::from_millis(READ_WAIT_MS as u64)) {
            None => ensure!(
                last.elapsed() < STALL,
                "librdkafka: no record for {STALL:?} after {} of {count}",
                tally.records
            ),
            Some(Err(e)) => bail!("librdkafka: {e}"),
            Some(Ok(m)) => {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
                tally.add(m.partition(), m.offset(), m.payload().map_or(0, <[u8]>::len))?;
            }
        }
    }
    let cpu_end = process_cpu()?;
    let (start, cpu_start) = consumer
        .context()
        .0
        .lock()
        .unwrap()
        .context("librdkafka delivered records without an assignment")?;
    // Closing (a last commit, leaving the group) is outside the clock, as teardown is for ours.
    drop(consumer);
    Ok(Consumed {
        tally,
        elapsed: last - start,
        cpu: cpu_end.saturating_sub(cpu_start),
        join: start - subscribed,
        first: first.map_or(Duration::ZERO, |f| f - start),
    })
}

/// User + system CPU time of this process, all threads (/proc/self/stat, in USER_HZ = 100 ticks).
fn process_cpu() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which may hold spaces), from field 3 on.
    let rest = stat.rsplit_once(')').context("/proc/self/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i - 3)
            .and_then(|v| v.parse().ok())
            .context("/proc/self/stat has no CPU times")
    };
    Ok(Duration::from_millis((ticks(14)? + ticks(15)?) * 10))
}
