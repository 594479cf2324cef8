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
//!
//! Here: the command line and the machine; [`producer`] and [`consumer`], each part's parent
//! (the table) and child (ours measured); [`librdkafka`], the yardstick's side of both;
//! [`stats`], rounds, medians and targets; [`records`], the generated records; [`process`],
//! the children run and `/proc` read.

mod consumer;
mod librdkafka;
mod process;
mod producer;
mod records;
mod stats;

use anyhow::{Context, Result, anyhow, bail, ensure};
use integration_tests::broker;

const DEFAULT_COUNT: usize = 1_000_000;
const DEFAULT_ROUNDS: usize = 5;
const PARTITIONS: i32 = 6;
const DISTINCT_KEYS: usize = 10_000;
const TARGET_RATIO: f64 = 1.0;
const SIDES: [&str; 2] = ["ours", "librdkafka"];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => {
            let [_, side, size, count] = &args[..] else {
                bail!("usage: bench run ours|librdkafka SIZE COUNT");
            };
            return producer::child(side, size.parse()?, count.parse()?);
        }
        Some("consume-run") => {
            let [_, side, topic, count] = &args[..] else {
                bail!("usage: bench consume-run ours|librdkafka TOPIC COUNT");
            };
            return consumer::child(side, topic, count.parse()?);
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
        producer::parent(count, rounds)?;
    }
    if consume {
        if produce {
            println!();
        }
        consumer::parent(count, rounds)?;
    }
    Ok(())
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
