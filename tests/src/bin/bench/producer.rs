//! The producer benchmark: for each value size, each side writes the same records to a fresh
//! topic of its own in a child process; the parent compares the sides' median runs.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use connector_host::{Allowlist, EngineOptions, Limits, RecordBatch, Runtime, SharedEngine, wit};
use integration_tests::{broker, component_cache, component_path, new_topic};

use crate::librdkafka::run_librdkafka;
use crate::process::{run_child, status_kib};
use crate::records::{generate, generate_packed};
use crate::stats::{Rounds, Run, met, number, size_name};
use crate::{DISTINCT_KEYS, PARTITIONS, SIDES, TARGET_RATIO};

const SIZES: [usize; 2] = [100, 1024];
/// Records per `destination.write-batch` call.
pub(crate) const WRITE_BATCH: usize = 10_000;
const TARGET_PEAK_MIB: f64 = 100.0;

// ---------------------------------------------------------------------------------------------
// Parent: runs the children, prints the table.

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

pub(crate) fn parent(count: usize, rounds: usize) -> Result<()> {
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

fn parse_result(stdout: &str) -> Result<Measured> {
    let (v, run) = Run::parse(stdout)?;
    Ok(Measured {
        run,
        input_kib: number(&v, "input_kib")? as u64,
    })
}

// ---------------------------------------------------------------------------------------------
// Child: one side, one size.

pub(crate) fn child(side: &str, size: usize, count: usize) -> Result<()> {
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
