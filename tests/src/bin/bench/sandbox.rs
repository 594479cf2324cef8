//! The sandbox's cost: the same connector code doing the same work, built natively and
//! driven in-process (`kafka_connector`'s `Destination` and `Source`, what the WIT glue
//! wraps) and built as the component driven through `connector_host`, each in a child
//! process of its own: write `--count` records of 100 B to a fresh topic (acks=all,
//! snappy, 10,000 records per write), then read them all back from the beginning with a
//! fresh group, looking at every record's partition, offset and value and acking every
//! batch. Compared: the CPU time (user + system, all threads, getrusage) of the child from
//! opening the destination to the source's teardown, per record.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use connector_host::batch::RecordView;
use connector_host::{Bounds, RecordBatch, wit};
use kafka_connector::config::{DestinationConfig, SourceConfig};
use kafka_connector::destination::Destination;
use kafka_connector::source::Source;

use crate::consumer::{CONSUME_SIZE, READ_MAX, READ_WAIT_MS, STALL, Tally, consume_ours, fresh_group};
use crate::endpoint::{Endpoint, Transport};
use crate::librdkafka::delete_topic;
use crate::mirror::shown;
use crate::process::{Wire, run_child, rusage_cpu};
use crate::producer::run_ours;
use crate::records::generate_packed;
use crate::stats::{Rounds, Run, Variant, met, number};
use crate::{Brokers, Plan};

const SIDES: [&str; 2] = ["component", "native"];
const TARGET: f64 = 1.25;

/// One child's CPU: `seconds` is its CPU time for both halves, so the rounds' "records/s"
/// are records per CPU second and their ratio native/component is component CPU over
/// native CPU.
pub(crate) struct Spent {
    run: Run,
    produce_cpu: f64,
    consume_cpu: f64,
    wall: f64,
}

impl std::ops::Deref for Spent {
    type Target = Run;
    fn deref(&self) -> &Run {
        &self.run
    }
}

pub(crate) fn parent(plan: &Plan, brokers: &Brokers) -> Result<()> {
    let broker = brokers.get(Transport::Plaintext);
    let count = plan.count;
    println!(
        "the sandbox's cost: the same connector code writing {count} records of {CONSUME_SIZE} B (acks=all, snappy, 10000 per write) then reading them back (fresh group, read {READ_MAX} per call, every batch acked)"
    );
    println!(
        "  native: kafka_connector's Destination and Source built for this machine, called in-process; component: the wasm32-wasip2 component through connector_host (write-batch, read-batch, ack-batch)"
    );
    println!(
        "  CPU = user + system time of the side's process (all threads; getrusage) from opening the destination to the source's teardown; records generated before"
    );
    let exe = std::env::current_exe()?;
    let rounds = Rounds::run(plan.rounds, SIDES.map(Variant::plaintext).to_vec(), |v| {
        let topic = broker.topic(&format!("bench-sandbox-{}", v.side))?;
        eprintln!("bench: {}: {count} records through {topic} ...", v.side);
        let what = format!("the {} sandbox run", v.side);
        let args = [
            "sandbox-run",
            v.side,
            &count.to_string(),
            &topic,
            &broker.endpoint.arg(),
        ];
        let stdout = run_child(&exe, &args, &what)?;
        delete_topic(&broker.endpoint, &topic)?;
        let (v, run) = Run::parse(&stdout).with_context(|| format!("{what} said: {stdout}"))?;
        Ok(Spent {
            run,
            produce_cpu: number(&v, "produce_cpu")?,
            consume_cpu: number(&v, "consume_cpu")?,
            wall: number(&v, "wall")?,
        })
    })?;
    let [component, native] = SIDES.map(Variant::plaintext);
    let per = |s: f64| s * 1e6 / count as f64;
    println!();
    println!("| side | CPU µs/record: write | read | both | wall s | component/native CPU (rounds) |");
    println!("|---|---|---|---|---|---|");
    let ratio = rounds.ratio(native, component);
    for v in [component, native] {
        let m = rounds.median(v);
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            v.side,
            per(m.produce_cpu),
            per(m.consume_cpu),
            per(m.seconds),
            m.wall,
            match v == component {
                true => format!("{ratio:.2}x ({})", shown(&rounds.round_ratios(native, component))),
                false => String::new(),
            }
        );
    }
    println!(
        "each side's median run by CPU; target: the component's CPU per record <= {TARGET:.2}x native: {ratio:.2}x  {}",
        met(ratio <= TARGET)
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Child: `sandbox-run native|component COUNT TOPIC ENDPOINT`.

pub(crate) fn child(side: &str, count: usize, topic: &str, at: &Endpoint) -> Result<()> {
    let batches = generate_packed(CONSUME_SIZE, count)?;
    let (start, cpu_start);
    let (cpu_written, tally) = match side {
        "native" => {
            let records: Vec<Vec<_>> = batches
                .iter()
                .map(|b| b.iter().map(|r| r.to_record()).collect())
                .collect();
            drop(batches);
            (start, cpu_start) = (Instant::now(), rusage_cpu());
            produce_native(at, topic, records)?;
            let cpu_written = rusage_cpu();
            (cpu_written, consume_native(at, topic, count)?)
        }
        "component" => {
            // The component compiled (or loaded from the cache) before the clock.
            integration_tests::runtime();
            (start, cpu_start) = (Instant::now(), rusage_cpu());
            run_ours(at, topic, &batches, Wire::Ignored)?;
            let cpu_written = rusage_cpu();
            (cpu_written, consume_ours(at, topic, count, Wire::Ignored)?.tally)
        }
        _ => bail!("unknown side {side}"),
    };
    let (cpu_end, wall) = (rusage_cpu(), start.elapsed());
    ensure!(
        tally.records == count as u64 && tally.duplicates == 0,
        "{side}: {} records read back ({} duplicates), not {count}",
        tally.records,
        tally.duplicates
    );
    let s = |d: Duration| d.as_secs_f64();
    println!(
        "RESULT {}",
        serde_json::json!({
            "side": side,
            "records": count,
            "value_bytes": count * CONSUME_SIZE,
            "seconds": s(cpu_end - cpu_start),
            "peak_kib": 0,
            "connections": 0,
            "opened_on_clock": 0,
            "wire_bytes": 0,
            "produce_cpu": s(cpu_written - cpu_start),
            "consume_cpu": s(cpu_end - cpu_written),
            "wall": s(wall),
        })
    );
    Ok(())
}

fn settings(at: &Endpoint, pairs: &[(&str, &str)]) -> Result<Vec<(String, String)>> {
    let mut config = at.ours()?;
    config.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Ok(config)
}

fn produce_native(
    at: &Endpoint,
    topic: &str,
    batches: Vec<Vec<kafka_connector::record::Record>>,
) -> Result<()> {
    let config = settings(
        at,
        &[("topic", topic), ("acks", "all"), ("compression", "snappy")],
    )?;
    let mut dst = Destination::open(DestinationConfig::parse(&config)?)?;
    for batch in batches {
        let n = batch.len();
        let outcome = dst.write(batch);
        if outcome.written != n || outcome.error.is_some() {
            bail!(
                "a write of {n} records wrote {}: {:?}",
                outcome.written,
                outcome.error
            );
        }
    }
    dst.teardown();
    Ok(())
}

/// Reads `count` records as `consume_ours` does: packed batches, looked at in place.
fn consume_native(at: &Endpoint, topic: &str, count: usize) -> Result<Tally> {
    let group = fresh_group("bench-native");
    let config = settings(
        at,
        &[
            ("topic", topic),
            ("readFromBeginning", "true"),
            ("groupID", &group),
        ],
    )?;
    let mut src = Source::open(SourceConfig::parse(&config)?, None)?;
    let mut tally = Tally::new();
    let mut last = Instant::now();
    let wait = Duration::from_millis(READ_WAIT_MS.into());
    while tally.records < count as u64 {
        let b = src.read_packed(READ_MAX as usize, wait)?.finish()?;
        let batch = RecordBatch::new(
            wit::RecordBatch {
                bytes: b.bytes,
                text: b.text,
                metadata: b.metadata,
                records: b.records,
            },
            &Bounds::NONE,
        )?;
        if batch.is_empty() {
            ensure!(last.elapsed() < STALL, "native: no record for {STALL:?}");
            continue;
        }
        last = Instant::now();
        tally.add_batch(&batch)?;
        src.ack(batch.iter().map(|r| r.position()))?;
    }
    src.teardown()?;
    Ok(tally)
}
