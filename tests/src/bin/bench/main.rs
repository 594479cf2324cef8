//! `just bench`: the destination's producer throughput and memory next to librdkafka's, measured
//! in the same run against the same broker (`KAFKA_BROKER`, started by `scripts/broker.sh run`),
//! over plaintext and over TLS (and SASL), and where ours' time goes over TLS.
//!
//! For each value size (100 B, 1 KiB) each side runs in its own child process (this binary
//! re-executed as `bench run SIDE SIZE COUNT TOPIC ENDPOINT`), so each reports its own peak
//! memory:
//! - `ours`: the connector component through `connector_host`, a destination opened with
//!   acks=all and compression=snappy, written in `write-batch` calls of 10,000 records (packed
//!   before the clock starts, as a pipeline hands a source's batches on); timed from the first
//!   write to the last write returning (a write returns once its records are acknowledged);
//! - `librdkafka`: rdkafka's `BaseProducer`, acks=all, idempotence, snappy; timed from the first
//!   send to `flush()` returning with every record delivered.
//!
//! Both write the same records, generated in memory before the clock starts, to their own fresh
//! 6-partition topic (deleted after the run on the in-memory brokers, which would otherwise
//! hold every run's records). The parent prints ratios and the targets; a missed target is
//! reported, never a failure.
//!
//! The consumer side (the source) next to librdkafka's consumer, in the same way: one fresh
//! 6-partition topic per broker is filled once (by librdkafka in this process: 100 B values,
//! keys `key-{i % 10000}`, acks=all, snappy), then each side reads all of it from the beginning
//! in its own child process (`bench consume-run SIDE TOPIC COUNT ENDPOINT`) with a fresh
//! consumer group:
//! - `ours`: a source through `connector_host` (`readFromBeginning=true`), `read-batch(10000,
//!   1000)` in a loop (the records packed, read in place like librdkafka's messages), every
//!   record's partition, offset and value looked at and every batch's positions acked right
//!   after it (`ack-batch`, the positions packed) as a pipeline would; timed from
//!   `open()` returning (the group joined, the partitions assigned) to the last record received;
//! - `librdkafka`: rdkafka's `BaseConsumer`, `auto.offset.reset=earliest`, auto commit, one
//!   `poll` per message, `fetch.queue.backoff.ms=10` (see `consume_librdkafka`), other settings
//!   default; timed from the assignment (the rebalance callback) to the last record.
//!
//! Each side checks it got exactly every record once (per-partition bitsets of offsets), and
//! counts its connections to the broker (`/proc`) when its clock starts and stops.
//!
//! TLS ([`endpoint`]): the parent starts nisshis of its own with the test CA's certificate
//! (`integration_tests::secure`): one in memory with TLS alone, where both sides run the same
//! work as over plaintext (ours: `tls.enabled`, `caCert`; librdkafka: `security.protocol=SSL`);
//! and two on sqlite, since nisshi keeps SCRAM users only there: TLS + SASL SCRAM-SHA-512 (its
//! topics made up front, as none are made once authentication is on), where both sides run
//! (librdkafka: `SASL_SSL`), and its twin with TLS alone, for ours. sqlite takes a few tens of
//! thousands of records a second, so runs there are broker-bound and write and read a tenth
//! of `--count` (`--sqlite-count`): they show both sides work over SASL, not what TLS costs.
//! Then [`open`]: ours opens a destination (one connection) on each broker, 15 times in one
//! child process (`bench open-run N ENDPOINT TOPIC...`), for what the TLS handshake and SASL
//! add per connection; and [`breakdown`]: ours over TLS against ours over plaintext, round by
//! round, split into the handshakes on the clock, encryption, and the rest.
//!
//! Every comparison runs each variant (a side on a broker) `--rounds` times (default 5), the
//! order rotating from round to round (with two, alternating which goes first), and compares
//! medians: single runs on a shared 2-core machine swing by a third either way. Every round's
//! ratio is printed too. The in-memory variants of one part share their rounds (ours over
//! plaintext runs once per round for the plaintext comparison and the TLS breakdown).
//!
//! Then, on the plaintext broker: [`mirror`], Kafka to Kafka through `connector-host pipe`
//! and `run` next to a librdkafka mirror; [`latency`], end to end under a paced load, at a
//! steady rate and a low one; [`sandbox`], the connector built natively against the
//! component, CPU per record.
//!
//! `bench [produce] [consume] [mirror] [latency] [sandbox] [plaintext] [tls] [--count N]
//! [--rounds N] [--sqlite-count N] [--rate N] [--seconds N] [--low-rate N] [--low-seconds N]
//! [--latency-rounds N]`: which parts and transports (default all; `bench tls` is the TLS
//! part alone, with ours over plaintext as its baseline); `--count N` overrides the records
//! per run (1,000,000), for every part but latency; `--sqlite-count N` those on the sqlite
//! brokers (a tenth of `--count`); the others shape the latency part.
//!
//! Here: the command line, the plan and the brokers; [`producer`] and [`consumer`], each
//! part's parent (the tables) and child (ours measured); [`librdkafka`], the yardstick's side
//! of both; [`endpoint`], the brokers and how each side reaches them; [`open`] and
//! [`breakdown`], TLS's costs; [`stats`], rounds, medians, spreads and targets; [`records`],
//! the generated records; [`process`], the children run and `/proc` read.

mod breakdown;
mod consumer;
mod endpoint;
mod latency;
mod librdkafka;
mod mirror;
mod open;
mod process;
mod producer;
mod records;
mod sandbox;
mod stats;

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::endpoint::{Broker, Endpoint, Transport};
use crate::stats::Variant;

const DEFAULT_COUNT: usize = 1_000_000;
/// Records per run on the sqlite brokers (TLS + SASL), which take a few tens of thousands a
/// second: a tenth of `--count`, unless `--sqlite-count` says otherwise.
const SQLITE_SHARE: usize = 10;
const DEFAULT_ROUNDS: usize = 5;
const PARTITIONS: i32 = 6;
const DISTINCT_KEYS: usize = 10_000;
const TARGET_RATIO: f64 = 1.0;
/// Over TLS: the target, and the goal.
const TLS_TARGET: f64 = 0.8;
const TLS_GOAL: f64 = 1.0;
const SIDES: [&str; 2] = ["ours", "librdkafka"];

/// What the command line asked for.
pub(crate) struct Plan {
    pub(crate) count: usize,
    pub(crate) sqlite_count: usize,
    pub(crate) rounds: usize,
    pub(crate) plaintext: bool,
    pub(crate) tls: bool,
    pub(crate) latency: latency::Load,
}

impl Plan {
    /// What runs against the in-memory brokers: the plaintext comparison, the TLS one, and
    /// ours over plaintext always (the TLS breakdown's baseline), in one set of rounds.
    pub(crate) fn memory_variants(&self) -> Vec<Variant> {
        let mut v = vec![Variant::ours(Transport::Plaintext)];
        if self.plaintext {
            v.push(Variant::librdkafka(Transport::Plaintext));
        }
        if self.tls {
            v.push(Variant::ours(Transport::Tls));
            v.push(Variant::librdkafka(Transport::Tls));
        }
        v
    }

    /// What runs against the sqlite brokers (with TLS only): both sides over TLS + SASL,
    /// and ours over TLS alone on the same storage.
    pub(crate) fn sqlite_variants(&self) -> Vec<Variant> {
        if !self.tls {
            return Vec::new();
        }
        vec![
            Variant::ours(Transport::TlsSqlite),
            Variant::ours(Transport::TlsSasl),
            Variant::librdkafka(Transport::TlsSasl),
        ]
    }
}

/// The brokers of the run: the test broker, and with TLS those the bench starts.
pub(crate) struct Brokers(Vec<Broker>);

impl Brokers {
    fn start(plan: &Plan, produce: bool, consume: bool) -> Brokers {
        let mut brokers = vec![Broker::plaintext()];
        if plan.tls {
            // The TLS + SASL broker's topics, made up front: a producer run of each side per
            // size and round, the consumer's, the open run's.
            let topics =
                usize::from(produce) * 2 * producer::SIZES.len() * plan.rounds + usize::from(consume) + 1;
            for t in [Transport::Tls, Transport::TlsSqlite, Transport::TlsSasl] {
                eprintln!("bench: starting a nisshi over {t} ...");
                brokers.push(Broker::start(t, topics));
            }
        }
        Brokers(brokers)
    }

    pub(crate) fn get(&self, t: Transport) -> &Broker {
        self.0
            .iter()
            .find(|b| b.transport() == t)
            .unwrap_or_else(|| panic!("no broker over {t}"))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Broker> {
        self.0.iter()
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => {
            let [_, side, size, count, topic, at] = &args[..] else {
                bail!("usage: bench run ours|librdkafka SIZE COUNT TOPIC ENDPOINT");
            };
            return producer::child(side, size.parse()?, count.parse()?, topic, &Endpoint::parse(at)?);
        }
        Some("consume-run") => {
            let [_, side, topic, count, at] = &args[..] else {
                bail!("usage: bench consume-run ours|librdkafka TOPIC COUNT ENDPOINT");
            };
            return consumer::child(side, topic, count.parse()?, &Endpoint::parse(at)?);
        }
        Some("k2k-run") => {
            let [_, side, from, to, group, count, at] = &args[..] else {
                bail!("usage: bench k2k-run in-process|librdkafka FROM TO GROUP COUNT ENDPOINT");
            };
            return mirror::child(side, from, to, group, count.parse()?, &Endpoint::parse(at)?);
        }
        Some("sandbox-run") => {
            let [_, side, count, topic, at] = &args[..] else {
                bail!("usage: bench sandbox-run native|component COUNT TOPIC ENDPOINT");
            };
            return sandbox::child(side, count.parse()?, topic, &Endpoint::parse(at)?);
        }
        Some("open-run") => {
            let usage = "usage: bench open-run N (ENDPOINT TOPIC)...";
            let n: usize = args.get(1).context(usage)?.parse()?;
            let pairs = &args[2..];
            ensure!(!pairs.is_empty() && pairs.len().is_multiple_of(2), "{usage}");
            let targets = pairs
                .chunks(2)
                .map(|p| Ok((Endpoint::parse(&p[0])?, p[1].clone())))
                .collect::<Result<Vec<_>>>()?;
            return open::child(n, &targets);
        }
        _ => {}
    }
    let usage = || {
        anyhow!(
            "usage: bench [produce] [consume] [mirror] [latency] [sandbox] [plaintext] [tls] [--count N] [--rounds N] [--sqlite-count N] [--rate N] [--seconds N] [--low-rate N] [--low-seconds N] [--latency-rounds N]\n  parts (default all): produce, consume (each over plaintext and TLS, as `plaintext`/`tls` say), mirror (Kafka to Kafka), latency (end to end), sandbox (native against component CPU)\n  --count: records per run (default {DEFAULT_COUNT}); --rounds: runs per side (default {DEFAULT_ROUNDS}); --sqlite-count: records per run on the sqlite TLS + SASL broker (default a tenth of --count)\n  latency: --rate records/s for --seconds (default {}/s for {} s), then --low-rate for --low-seconds (default {}/s for {} s), --latency-rounds runs per side (default {})",
            latency::Load::DEFAULT.rate,
            latency::Load::DEFAULT.seconds,
            latency::Load::DEFAULT.low_rate,
            latency::Load::DEFAULT.low_seconds,
            latency::Load::DEFAULT.rounds,
        )
    };
    let number = |v: Option<&String>, what: &str| -> Result<usize> {
        let v = v.with_context(|| format!("{what} needs a number"))?;
        v.replace('_', "")
            .parse()
            .with_context(|| format!("{what} needs a number, not {v}"))
    };
    let (mut count, mut rounds, mut sqlite_count) = (DEFAULT_COUNT, DEFAULT_ROUNDS, None);
    let mut load = latency::Load::DEFAULT;
    let (mut produce, mut consume, mut plaintext, mut tls) = (false, false, false, false);
    let (mut mirror, mut latency, mut sandbox) = (false, false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--count" => count = number(it.next(), "--count")?,
            "--rounds" => rounds = number(it.next(), "--rounds")?,
            "--sqlite-count" => sqlite_count = Some(number(it.next(), "--sqlite-count")?),
            "--rate" => load.rate = number(it.next(), "--rate")?,
            "--seconds" => load.seconds = number(it.next(), "--seconds")?,
            "--low-rate" => load.low_rate = number(it.next(), "--low-rate")?,
            "--low-seconds" => load.low_seconds = number(it.next(), "--low-seconds")?,
            "--latency-rounds" => load.rounds = number(it.next(), "--latency-rounds")?,
            "produce" | "producer" => produce = true,
            "consume" | "consumer" => consume = true,
            "mirror" | "k2k" => mirror = true,
            "latency" => latency = true,
            "sandbox" => sandbox = true,
            "plaintext" | "plain" => plaintext = true,
            "tls" => tls = true,
            _ => return Err(usage()),
        }
    }
    ensure!(count > 0, "--count must be positive");
    ensure!(rounds > 0, "--rounds must be positive");
    load.check()?;
    if !(produce || consume || mirror || latency || sandbox) {
        (produce, consume, mirror, latency, sandbox) = (true, true, true, true, true);
    }
    if !plaintext && !tls {
        // TLS is a part of the producer and consumer benchmarks only.
        (plaintext, tls) = (true, produce || consume);
    }
    let plan = Plan {
        count,
        sqlite_count: sqlite_count.unwrap_or(count / SQLITE_SHARE).max(1),
        rounds,
        plaintext,
        tls,
        latency: load,
    };
    let brokers = Brokers::start(&plan, produce, consume);
    println!(
        "broker {}; {} cores, {}",
        brokers.get(Transport::Plaintext).endpoint.addr,
        nproc(),
        cpu_model()
    );
    println!();
    let produced = if produce {
        Some(producer::parent(&plan, &brokers)?)
    } else {
        None
    };
    let consumed = if consume {
        if produce {
            println!();
        }
        Some(consumer::parent(&plan, &brokers)?)
    } else {
        None
    };
    if plan.tls {
        println!();
        let opens = open::parent(&brokers)?;
        open::print(&opens);
        println!();
        breakdown::print(produced.as_ref(), consumed.as_ref(), &opens);
    }
    let started = std::time::Instant::now();
    let part = |name: &str, run: &dyn Fn() -> Result<()>| -> Result<()> {
        println!();
        let t = std::time::Instant::now();
        run()?;
        eprintln!("bench: {name} took {:.0} s", t.elapsed().as_secs_f64());
        Ok(())
    };
    if mirror {
        part("Kafka to Kafka", &|| mirror::parent(&plan, &brokers))?;
    }
    if latency {
        part("latency", &|| latency::parent(&plan, &brokers))?;
    }
    if sandbox {
        part("the sandbox's cost", &|| sandbox::parent(&plan, &brokers))?;
    }
    eprintln!(
        "bench: the new parts took {:.0} s",
        started.elapsed().as_secs_f64()
    );
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
