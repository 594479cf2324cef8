//! The producer benchmark: for each value size, each variant (a side on a broker) writes the
//! same records to a fresh topic of its own in a child process; the parent compares the
//! median runs.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use connector_host::{Allowlist, Limits, RecordBatch, wit};
use integration_tests::component_path;

use crate::endpoint::{Endpoint, Transport};
use crate::librdkafka::{delete_topic, produce_librdkafka};
use crate::process::{Traffic, Wire, run_child, status_kib};
use crate::records::{generate, generate_packed};
use crate::stats::{Rounds, Run, Variant, met, number, size_name};
use crate::{Brokers, DISTINCT_KEYS, PARTITIONS, Plan, TARGET_RATIO, TLS_GOAL, TLS_TARGET};

pub(crate) const SIZES: [usize; 2] = [100, 1024];
/// Records per `destination.write-batch` call.
pub(crate) const WRITE_BATCH: usize = 10_000;
const TARGET_PEAK_MIB: f64 = 100.0;

// ---------------------------------------------------------------------------------------------
// Parent: runs the children, prints the tables.

/// What one producer child measured.
pub(crate) struct Measured {
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

/// Every size's rounds: on the in-memory brokers, and on the sqlite ones (TLS + SASL).
pub(crate) struct Results {
    pub(crate) memory: Vec<(usize, Rounds<Measured>)>,
    pub(crate) sqlite: Vec<(usize, Rounds<Measured>)>,
}

pub(crate) fn parent(plan: &Plan, brokers: &Brokers) -> Result<Results> {
    let component = component_path();
    let exe = std::env::current_exe()?;
    let count = plan.count;
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

    let run = |v: Variant, size: usize, count: usize| -> Result<Measured> {
        let broker = brokers.get(v.transport);
        let topic = broker.topic(&format!("bench-{}", v.side))?;
        eprintln!("bench: {v}, {count} x {size} B ...");
        let what = format!("the {v} run ({size} B)");
        let args = [
            "run",
            v.side,
            &size.to_string(),
            &count.to_string(),
            &topic,
            &broker.endpoint.arg(),
        ];
        let stdout = run_child(&exe, &args, &what)?;
        if !v.transport.sqlite() {
            delete_topic(&broker.endpoint, &topic)?;
        }
        parse_result(&stdout).with_context(|| format!("{what} said: {stdout}"))
    };
    let mut results = Results {
        memory: Vec::new(),
        sqlite: Vec::new(),
    };
    for size in SIZES {
        let rounds = Rounds::run(plan.rounds, plan.memory_variants(), |v| run(v, size, count))?;
        results.memory.push((size, rounds));
        if plan.tls {
            let rounds = Rounds::run(plan.rounds, plan.sqlite_variants(), |v| {
                run(v, size, plan.sqlite_count)
            })?;
            results.sqlite.push((size, rounds));
        }
    }

    if plan.plaintext {
        let [ours, librdkafka] = [Variant::ours, Variant::librdkafka].map(|f| f(Transport::Plaintext));
        table(&results.memory, ours, librdkafka);
        println!();
        for (size, r) in &results.memory {
            println!("{:<6} {}", size_name(*size), r.spread(ours, librdkafka));
        }
        println!("peak RSS = VmHWM of the side's process, including the {count} generated records it holds;");
        println!(
            "client peak = peak RSS minus the RSS once the records were generated (what the client itself used)."
        );
        println!();
        println!("targets (reported, never failing the run):");
        for (size, r) in &results.memory {
            let ratio = r.ratio(ours, librdkafka);
            println!(
                "  {:<6} throughput ours >= {TARGET_RATIO:.1}x librdkafka: {ratio:.2}x  {}",
                size_name(*size),
                met(ratio >= TARGET_RATIO)
            );
        }
        for (size, r) in &results.memory {
            let ours = r.median(ours);
            let client = ours.client_mib();
            println!(
                "  {:<6} peak memory ours < {TARGET_PEAK_MIB:.0} MiB: {client:.1} MiB above the generated records ({:.1} MiB whole process)  {}",
                size_name(*size),
                ours.peak_mib(),
                met(client < TARGET_PEAK_MIB)
            );
        }
    }
    if plan.tls {
        if plan.plaintext {
            println!();
        }
        tls_tables(plan, brokers, &results);
    }
    Ok(results)
}

/// The TLS comparisons: in memory (TLS alone), then on sqlite (TLS + SCRAM-SHA-512).
fn tls_tables(plan: &Plan, brokers: &Brokers, results: &Results) {
    let [ours, librdkafka] = [Variant::ours, Variant::librdkafka].map(|f| f(Transport::Tls));
    println!(
        "producer over TLS: a nisshi of the bench's own in memory on {} with TLS 1.3 (a test CA's certificate; no authentication)",
        brokers.get(Transport::Tls).endpoint.addr
    );
    println!(
        "  ours: tls.enabled=true, caCert = the test CA; librdkafka: security.protocol=SSL, ssl.ca.location = the test CA"
    );
    table(&results.memory, ours, librdkafka);
    println!();
    for (size, r) in &results.memory {
        println!("{:<6} {}", size_name(*size), r.spread(ours, librdkafka));
    }
    println!();
    println!("targets (reported, never failing the run):");
    for (size, r) in &results.memory {
        let ratio = r.ratio(ours, librdkafka);
        println!(
            "  {:<6} throughput over TLS ours >= {TLS_TARGET:.1}x librdkafka (goal {TLS_GOAL:.1}x): {ratio:.2}x  {}",
            size_name(*size),
            met(ratio >= TLS_TARGET)
        );
    }

    println!();
    let [ours, librdkafka] = [Variant::ours, Variant::librdkafka].map(|f| f(Transport::TlsSasl));
    println!(
        "producer over TLS + SASL SCRAM-SHA-512: {} records per run to a nisshi of the bench's own on sqlite (users live only there), {}",
        plan.sqlite_count,
        brokers.get(Transport::TlsSasl).endpoint.addr
    );
    println!(
        "  ours: as above plus saslMechanism=SCRAM-SHA-512; librdkafka: security.protocol=SASL_SSL, sasl.mechanisms=SCRAM-SHA-512"
    );
    println!(
        "  sqlite takes a few tens of thousands of records a second: both sides wait for the broker here; this shows they work, not what TLS costs"
    );
    table(&results.sqlite, ours, librdkafka);
    let tls_alone = Variant::ours(Transport::TlsSqlite);
    for (size, r) in &results.sqlite {
        let m = r.median(tls_alone);
        println!(
            "{:<6} {:<22} {:>12.0} {:>9.1}   (the same broker on sqlite with TLS, without SASL)",
            size_name(*size),
            "ours, TLS without SASL",
            m.records_per_sec(),
            m.mb_per_sec()
        );
    }
    println!();
    for (size, r) in &results.sqlite {
        println!("{:<6} {}", size_name(*size), r.spread(ours, librdkafka));
    }
}

/// One row per size and side: records/s, MB/s, peak memory, the ratio.
fn table(results: &[(usize, Rounds<Measured>)], ours: Variant, librdkafka: Variant) {
    println!(
        "{:<6} {:<22} {:>12} {:>9} {:>14} {:>16} {:>16}",
        "size", "side", "records/s", "MB/s", "peak RSS MiB", "client peak MiB", "ours/librdkafka"
    );
    for (size, r) in results {
        let ratio = r.ratio(ours, librdkafka);
        for v in [ours, librdkafka] {
            let m = r.median(v);
            println!(
                "{:<6} {:<22} {:>12.0} {:>9.1} {:>14.1} {:>16.1} {:>16}",
                size_name(*size),
                v.side,
                m.records_per_sec(),
                m.mb_per_sec(),
                m.peak_mib(),
                m.client_mib(),
                if v == ours {
                    format!("{ratio:.2}x")
                } else {
                    String::new()
                },
            );
        }
    }
}

fn parse_result(stdout: &str) -> Result<Measured> {
    let (v, run) = Run::parse(stdout)?;
    Ok(Measured {
        run,
        input_kib: number(&v, "input_kib")? as u64,
    })
}

// ---------------------------------------------------------------------------------------------
// Child: one side, one size, one broker.

/// What a producer side saw on its clock.
pub(crate) struct Produced {
    pub(crate) elapsed: Duration,
    /// Its connections to the broker when the clock stopped.
    pub(crate) connections: u64,
    /// How many of them were opened on the clock.
    pub(crate) opened_on_clock: u64,
    /// What they sent and received on the clock.
    pub(crate) wire_bytes: u64,
}

impl Produced {
    /// `elapsed`, with the connections before the clock started and after it stopped.
    pub(crate) fn new(elapsed: Duration, before: Traffic, after: Traffic) -> Produced {
        Produced {
            elapsed,
            connections: after.connections,
            opened_on_clock: after.connections.saturating_sub(before.connections),
            wire_bytes: after.bytes.saturating_sub(before.bytes),
        }
    }
}

pub(crate) fn child(side: &str, size: usize, count: usize, topic: &str, at: &Endpoint) -> Result<()> {
    let input = match side {
        "ours" => Input::Packed(generate_packed(size, count)?),
        "librdkafka" => Input::Records(generate(size, count)),
        _ => bail!("unknown side {side}"),
    };
    let input_kib = status_kib("VmRSS")?;
    let peak_before = status_kib("VmHWM")?;
    // From here on VmHWM is the peak of the run (Linux: "5" resets the peak RSS).
    let _ = std::fs::write("/proc/self/clear_refs", "5");

    let produced = match &input {
        Input::Packed(batches) => run_ours(at, topic, batches, Wire::Counted)?,
        Input::Records(records) => produce_librdkafka(at, topic, records)?,
    };

    let peak_kib = status_kib("VmHWM")?.max(peak_before);
    let value_bytes = (size * count) as u64;
    let seconds = produced.elapsed.as_secs_f64();
    eprintln!(
        "bench: {side} {size} B over {}: {count} records to {topic} in {seconds:.3} s, peak {} MiB, {} connections ({} opened on the clock)",
        at.transport,
        peak_kib / 1024,
        produced.connections,
        produced.opened_on_clock,
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
            "connections": produced.connections,
            "opened_on_clock": produced.opened_on_clock,
            "wire_bytes": produced.wire_bytes,
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

pub(crate) fn run_ours(at: &Endpoint, topic: &str, batches: &[RecordBatch], wire: Wire) -> Result<Produced> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let runtime = integration_tests::runtime();
        let mut allow = Allowlist::default();
        allow.allow_servers(&at.addr)?;
        let mut dst = runtime
            .instantiate("bench/destination", &allow, &Limits::default())
            .await?
            .into_destination();
        let mut config = at.ours()?;
        config.extend(
            [("topic", topic), ("acks", "all"), ("compression", "snappy")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        dst.open(&config).await?;

        let mut calls = Vec::with_capacity(batches.len());
        let before = wire.traffic_to(&at.addr)?;
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
        let after = wire.traffic_to(&at.addr)?;
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
        Ok(Produced::new(elapsed, before, after))
    })
}
