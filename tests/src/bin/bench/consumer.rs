//! The consumer benchmark: one topic per broker filled once, then each variant (a side on a
//! broker) reads all of it from the beginning in a child process of its own, with a fresh
//! group; the parent compares the median runs.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use connector_host::{Allowlist, DataRef, Limits, RecordBatch};
use integration_tests::component_path;

use crate::endpoint::{Endpoint, Transport};
use crate::librdkafka::{consume_librdkafka, produce_librdkafka, topic_records};
use crate::process::{Wire, process_cpu, run_child, status_kib};
use crate::records::generate;
use crate::stats::{Rounds, Run, Variant, met, number};
use crate::{Brokers, DISTINCT_KEYS, PARTITIONS, Plan, TARGET_RATIO, TLS_GOAL, TLS_TARGET};

/// Value size of the records the consumer benchmark reads.
pub(crate) const CONSUME_SIZE: usize = 100;
/// `source.read-batch(max, wait-ms)` as the benchmark calls it.
pub(crate) const READ_MAX: u32 = 10_000;
pub(crate) const READ_WAIT_MS: u32 = 1_000;
/// librdkafka's `fetch.queue.backoff.ms` in the consumer benchmark (its default is 1000).
pub(crate) const LIBRDKAFKA_FETCH_QUEUE_BACKOFF_MS: &str = "10";
/// A side that gets no record for this long has stalled: the run fails (a broken run, not a
/// slow one).
pub(crate) const STALL: Duration = Duration::from_secs(60);

/// What one consumer child measured.
pub(crate) struct ConsumeMeasured {
    /// Its `seconds` run from the group joined (partitions assigned) to the last record.
    run: Run,
    /// From `open()`/`subscribe()` to the partitions assigned (not in `seconds`).
    join_ms: f64,
    /// From the clock's start to the first record.
    first_ms: f64,
    /// CPU time (user + system, all threads) of the side's process on the clock.
    pub(crate) cpu_seconds: f64,
}

impl std::ops::Deref for ConsumeMeasured {
    type Target = Run;
    fn deref(&self) -> &Run {
        &self.run
    }
}

pub(crate) fn parent(plan: &Plan, brokers: &Brokers) -> Result<Results> {
    let component = component_path();
    let exe = std::env::current_exe()?;
    let version = rdkafka::util::get_rdkafka_version().1;
    let count = plan.count;
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

    // One topic per broker, filled once.
    let mut topics: Vec<(Transport, String, usize)> = Vec::new();
    let variants = [plan.memory_variants(), plan.sqlite_variants()];
    for v in variants.iter().flatten() {
        if topics.iter().any(|(t, _, _)| *t == v.transport) {
            continue;
        }
        let broker = brokers.get(v.transport);
        let n = if broker.transport().sqlite() {
            plan.sqlite_count
        } else {
            count
        };
        let topic = broker.topic("bench-consume")?;
        eprintln!(
            "bench: filling {topic} over {} with {n} x {CONSUME_SIZE} B through librdkafka ...",
            v.transport
        );
        let fill = {
            let records = generate(CONSUME_SIZE, n);
            produce_librdkafka(&broker.endpoint, &topic, &records)?
        };
        let in_topic = topic_records(&broker.endpoint, &topic)?;
        ensure!(
            in_topic == n as u64,
            "{topic} holds {in_topic} records after the fill, not {n}"
        );
        eprintln!("bench: filled {topic} in {:.3} s", fill.elapsed.as_secs_f64());
        topics.push((v.transport, topic, n));
    }

    let run = |v: Variant| {
        let (_, topic, n) = topics
            .iter()
            .find(|(t, _, _)| *t == v.transport)
            .expect("filled above");
        let endpoint = &brokers.get(v.transport).endpoint;
        eprintln!("bench: {v} reads {n} records from {topic} ...");
        let what = format!("the {v} consumer run");
        let args = ["consume-run", v.side, topic, &n.to_string(), &endpoint.arg()];
        let stdout = run_child(&exe, &args, &what)?;
        parse_consume_result(&stdout).with_context(|| format!("{what} said: {stdout}"))
    };
    let memory = Rounds::run(plan.rounds, plan.memory_variants(), run)?;
    let sqlite = if plan.tls {
        Some(Rounds::run(plan.rounds, plan.sqlite_variants(), run)?)
    } else {
        None
    };

    if plan.plaintext {
        let [ours, librdkafka] = [Variant::ours, Variant::librdkafka].map(|f| f(Transport::Plaintext));
        let ratio = memory.ratio(ours, librdkafka);
        table(&memory, ours, librdkafka);
        println!();
        println!("{}", memory.spread(ours, librdkafka));
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
    }
    if let Some(sqlite) = &sqlite {
        if plan.plaintext {
            println!();
        }
        let [ours, librdkafka] = [Variant::ours, Variant::librdkafka].map(|f| f(Transport::Tls));
        let ratio = memory.ratio(ours, librdkafka);
        println!(
            "consumer over TLS: the same, from the TLS nisshi in memory (ours: tls.enabled, caCert; librdkafka: security.protocol=SSL)"
        );
        table(&memory, ours, librdkafka);
        println!();
        println!("{}", memory.spread(ours, librdkafka));
        println!("targets (reported, never failing the run):");
        println!(
            "  consume throughput over TLS ours >= {TLS_TARGET:.1}x librdkafka (goal {TLS_GOAL:.1}x): {ratio:.2}x  {}",
            met(ratio >= TLS_TARGET)
        );
        println!();
        let [ours, librdkafka] = [Variant::ours, Variant::librdkafka].map(|f| f(Transport::TlsSasl));
        println!(
            "consumer over TLS + SASL SCRAM-SHA-512: {} records from the sqlite nisshi (broker-bound, see the producer)",
            plan.sqlite_count
        );
        table(sqlite, ours, librdkafka);
        let m = sqlite.median(Variant::ours(Transport::TlsSqlite));
        println!(
            "{:<22} {:>12.0} {:>9.1}   (the same broker on sqlite with TLS, without SASL)",
            "ours, TLS without SASL",
            m.records_per_sec(),
            m.mb_per_sec()
        );
        println!();
        println!("{}", sqlite.spread(ours, librdkafka));
    }
    Ok(Results { memory })
}

/// The rounds on the in-memory brokers (the breakdown's).
pub(crate) struct Results {
    pub(crate) memory: Rounds<ConsumeMeasured>,
}

/// One row per side: records/s, MB/s, memory, CPU, join and first-record times, the ratio.
fn table(rounds: &Rounds<ConsumeMeasured>, ours: Variant, librdkafka: Variant) {
    let ratio = rounds.ratio(ours, librdkafka);
    println!(
        "{:<22} {:>12} {:>9} {:>14} {:>7} {:>9} {:>10} {:>16}",
        "side", "records/s", "MB/s", "peak RSS MiB", "CPU s", "join ms", "first ms", "ours/librdkafka"
    );
    for v in [ours, librdkafka] {
        let m = rounds.median(v);
        println!(
            "{:<22} {:>12.0} {:>9.1} {:>14.1} {:>7.2} {:>9.0} {:>10.0} {:>16}",
            v.side,
            m.records_per_sec(),
            m.mb_per_sec(),
            m.peak_mib(),
            m.cpu_seconds,
            m.join_ms,
            m.first_ms,
            if v == ours {
                format!("{ratio:.2}x")
            } else {
                String::new()
            },
        );
    }
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

/// What a consumer side saw.
pub(crate) struct Consumed {
    pub(crate) tally: Tally,
    pub(crate) elapsed: Duration,
    /// Process CPU time on the clock.
    pub(crate) cpu: Duration,
    pub(crate) join: Duration,
    pub(crate) first: Duration,
    /// Its connections to the broker when the clock stopped, and how many of them were
    /// opened on the clock.
    pub(crate) connections: u64,
    pub(crate) opened_on_clock: u64,
    /// What they sent and received on the clock.
    pub(crate) wire_bytes: u64,
}

pub(crate) fn child(side: &str, topic: &str, count: usize, at: &Endpoint) -> Result<()> {
    let c = match side {
        "ours" => consume_ours(at, topic, count, Wire::Counted)?,
        "librdkafka" => consume_librdkafka(at, topic, count)?,
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
        "bench: {side} read {} records from {topic} over {} in {seconds:.3} s, {:.2} s CPU (join {:.0} ms, first record {:.0} ms), peak {} MiB, {} connections ({} opened on the clock)",
        t.records,
        at.transport,
        c.cpu.as_secs_f64(),
        c.join.as_secs_f64() * 1e3,
        c.first.as_secs_f64() * 1e3,
        peak_kib / 1024,
        c.connections,
        c.opened_on_clock,
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
            "connections": c.connections,
            "opened_on_clock": c.opened_on_clock,
            "wire_bytes": c.wire_bytes,
        })
    );
    Ok(())
}

/// Counts records and finds duplicates: one bitset of offsets per partition.
pub(crate) struct Tally {
    pub(crate) records: u64,
    pub(crate) value_bytes: u64,
    pub(crate) duplicates: u64,
    pub(crate) seen: Vec<Vec<u64>>,
}

impl Tally {
    pub(crate) fn new() -> Self {
        Tally {
            records: 0,
            value_bytes: 0,
            duplicates: 0,
            seen: vec![Vec::new(); PARTITIONS as usize],
        }
    }

    pub(crate) fn add(&mut self, partition: i32, offset: i64, value_len: usize) -> Result<()> {
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

    /// Adds every record of a batch of ours, by its `kafka.partition` and `kafka.offset`.
    pub(crate) fn add_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        for r in batch.iter() {
            let len = match r.after() {
                Some(DataRef::Raw(v)) => v.len(),
                _ => bail!("ours: a record without a raw value"),
            };
            self.add(
                metadata_num(r.metadata_value("kafka.partition"), "kafka.partition")?,
                metadata_num(r.metadata_value("kafka.offset"), "kafka.offset")?,
                len,
            )?;
        }
        Ok(())
    }
}

pub(crate) fn fresh_group(prefix: &str) -> String {
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

pub(crate) fn consume_ours(at: &Endpoint, topic: &str, count: usize, wire: Wire) -> Result<Consumed> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let runtime = integration_tests::runtime();
        let mut allow = Allowlist::default();
        allow.allow_servers(&at.addr)?;
        let mut src = runtime
            .instantiate("bench/source", &allow, &Limits::default())
            .await?
            .into_source();
        let group = fresh_group("bench-ours");
        let mut config = at.ours()?;
        config.extend(
            [
                ("topic", topic),
                ("readFromBeginning", "true"),
                ("groupID", group.as_str()),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let t = Instant::now();
        src.open(&config, None).await?;
        let join = t.elapsed();

        let mut tally = Tally::new();
        let before = wire.traffic_to(&at.addr)?;
        let start = Instant::now();
        let cpu_start = process_cpu()?;
        let (mut first, mut last) = (None, start);
        let (mut reads, mut empty, mut in_read, mut in_ack) = (0u64, 0u64, Duration::ZERO, Duration::ZERO);
        // The longest read call shows a stall (a read that waited with records left).
        let mut longest = Duration::ZERO;
        let (mut cpu_end, mut after) = (cpu_start, before);
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
                after = wire.traffic_to(&at.addr)?;
            }
            tally.add_batch(&batch)?;
            let t = Instant::now();
            src.ack_batch(batch.iter().map(|r| r.position())).await?;
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
            connections: after.connections,
            opened_on_clock: after.connections.saturating_sub(before.connections),
            wire_bytes: after.bytes.saturating_sub(before.bytes),
        })
    })
}
