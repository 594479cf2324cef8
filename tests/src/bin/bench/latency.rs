//! End-to-end latency: a paced librdkafka producer writes a steady load into a fresh source
//! topic while a mirror (ours: `connector-host run`; librdkafka's: [`mirror_librdkafka`] in
//! a child) moves it to a fresh destination topic, where a librdkafka consumer (assigned
//! every partition, no group) takes each record's latency: its receive time minus the send
//! time the producer wrote into the value. Then the same at a low rate, where a batch
//! waits for records to arrive.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use integration_tests::unique_name;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Message, Offset, Timestamp, TopicPartitionList};

use crate::consumer::fresh_group;
use crate::endpoint::{Endpoint, Transport};
use crate::librdkafka::{create_log_append_topic, delete_topic, producer_with, send};
use crate::mirror::{READ_WAIT_MS, SIZE, release_host, run_command, shown};
use crate::process::{run_measured, terminate};
use crate::stats::{Spread, met};
use crate::{Brokers, DISTINCT_KEYS, PARTITIONS, Plan};

/// The load: records/s and seconds, at a steady rate and at a low one; runs per side.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Load {
    pub(crate) rate: usize,
    pub(crate) seconds: usize,
    pub(crate) low_rate: usize,
    pub(crate) low_seconds: usize,
    pub(crate) rounds: usize,
}

impl Load {
    pub(crate) const DEFAULT: Load = Load {
        rate: 20_000,
        seconds: 30,
        low_rate: 100,
        low_seconds: 15,
        rounds: 3,
    };

    pub(crate) fn check(&self) -> Result<()> {
        for (v, what) in [
            (self.rate, "--rate"),
            (self.seconds, "--seconds"),
            (self.low_rate, "--low-rate"),
            (self.low_seconds, "--low-seconds"),
            (self.rounds, "--latency-rounds"),
        ] {
            ensure!(v > 0, "{what} must be positive");
        }
        Ok(())
    }
}

const SIDES: [&str; 2] = ["ours (run)", "librdkafka"];
/// The producer's `linger.ms`: how long it may hold a record to batch it (in every latency).
const LINGER_MS: &str = "1";
/// The measuring consumer's `fetch.wait.max.ms`: how long the broker may hold its fetch.
const FETCH_WAIT_MS: &str = "10";
/// The target: ours' p99 at most the mirror's.
const TARGET_P99: f64 = 1.0;
/// How long the records may take to arrive after the last was sent, and the pipeline to
/// join its group and move its first record.
const ARRIVAL_LIMIT: Duration = Duration::from_secs(120);

/// One run's latencies, in ms: to the destination's LogAppendTime, and the p99 to the
/// measuring consumer's receive time.
struct Percentiles {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    received_p99: f64,
}

impl Percentiles {
    /// Of each load record's (appended, received) latency in microseconds.
    fn of(latencies: Vec<(u64, u64)>) -> Percentiles {
        let (mut appended, mut received): (Vec<u64>, Vec<u64>) = latencies.into_iter().unzip();
        appended.sort_unstable();
        received.sort_unstable();
        let at = |us: &[u64], q: f64| {
            us[((q * us.len() as f64).ceil() as usize).clamp(1, us.len()) - 1] as f64 / 1e3
        };
        Percentiles {
            p50: at(&appended, 0.50),
            p99: at(&appended, 0.99),
            p999: at(&appended, 0.999),
            max: at(&appended, 1.0),
            received_p99: at(&received, 0.99),
        }
    }
}

pub(crate) fn parent(plan: &Plan, brokers: &Brokers) -> Result<()> {
    let at = &brokers.get(Transport::Plaintext).endpoint;
    let load = plan.latency;
    println!(
        "end-to-end latency: a paced librdkafka producer ({SIZE} B, acks=all, snappy, linger.ms={LINGER_MS}, its send time in the value) -> source topic -> mirror -> destination topic ({PARTITIONS} partitions each)"
    );
    println!(
        "  ours: connector-host run (a pipeline file; reads of up to 1000 records waiting {READ_WAIT_MS} ms at most); librdkafka: the Kafka-to-Kafka mirror above"
    );
    println!(
        "  latency = the record's LogAppendTime in the destination (the broker's clock when it stored it; ms, truncated: up to 1 ms low) - the send time in its value (µs); the producer's linger is in both sides' figures"
    );
    println!(
        "  p99 received: to the measuring consumer's receive time instead (librdkafka, no group, fetch.wait.max.ms={FETCH_WAIT_MS}), its fetch delay included"
    );
    println!(
        "  each run: warm-up records until one arrives (not counted), then the load; {} runs per side, alternating which goes first",
        load.rounds
    );
    let host = release_host()?;
    let exe = std::env::current_exe()?;
    for (rate, seconds) in [(load.rate, load.seconds), (load.low_rate, load.low_seconds)] {
        let mut runs: [Vec<Percentiles>; 2] = [Vec::new(), Vec::new()];
        for round in 0..load.rounds {
            for i in 0..2 {
                let side = (round + i) % 2;
                eprintln!(
                    "bench: latency of {} at {rate}/s for {seconds} s ...",
                    SIDES[side]
                );
                runs[side].push(one_run(brokers, at, side, rate, seconds, &host, &exe)?);
            }
        }
        print(rate, seconds, &runs);
    }
    Ok(())
}

fn print(rate: usize, seconds: usize, runs: &[Vec<Percentiles>; 2]) {
    println!();
    println!(
        "{rate} records/s for {seconds} s ({} records per run):",
        rate * seconds
    );
    println!(
        "| side | p50 ms | p99 ms | p99.9 ms | max ms | p99 ours/librdkafka (rounds) | p99 received ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    let median = |side: usize, f: fn(&Percentiles) -> f64| {
        Spread::of(&runs[side].iter().map(f).collect::<Vec<_>>()).median
    };
    let ratios: Vec<f64> = runs[0].iter().zip(&runs[1]).map(|(o, l)| o.p99 / l.p99).collect();
    let ratio = median(0, |p| p.p99) / median(1, |p| p.p99);
    for (side, name) in SIDES.iter().enumerate() {
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.1} |",
            median(side, |p| p.p50),
            median(side, |p| p.p99),
            median(side, |p| p.p999),
            median(side, |p| p.max),
            match side {
                0 => format!("{ratio:.2}x ({})", shown(&ratios)),
                _ => String::new(),
            },
            median(side, |p| p.received_p99),
        );
    }
    println!(
        "medians of the runs' own percentiles; target p99 ours <= {TARGET_P99:.1}x librdkafka's: {ratio:.2}x  {}",
        met(ratio <= TARGET_P99)
    );
}

/// One side's run at `rate` for `seconds`: the load records' latencies.
fn one_run(
    brokers: &Brokers,
    at: &Endpoint,
    side: usize,
    rate: usize,
    seconds: usize,
    host: &std::path::Path,
    exe: &std::path::Path,
) -> Result<Percentiles> {
    let broker = brokers.get(Transport::Plaintext);
    let from = broker.topic("bench-latency-from")?;
    let to = unique_name("bench-latency-to");
    create_log_append_topic(at, &to)?;
    let group = fresh_group("bench-latency");
    let count = rate * seconds;
    let arrivals = Arrivals::start(at, &to, count)?;
    let mut cmd = match side {
        0 => run_command(host, at, &from, &to, &group, 0)?,
        _ => {
            let mut c = Command::new(exe);
            c.args(["k2k-run", "librdkafka", &from, &to, &group, "0", &at.arg()]);
            c
        }
    };
    let (pid, terminated) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicBool::new(false)));
    let mirror = {
        let (pid, terminated) = (pid.clone(), terminated.clone());
        std::thread::spawn(move || {
            run_measured(
                &mut cmd,
                "the mirror",
                |p| pid.store(p, Ordering::Relaxed),
                &terminated,
            )
        })
    };
    let paced = pace(at, &from, rate, count, &arrivals, &mirror);
    let arrived = paced.and_then(|()| arrivals.wait_all(&mirror));
    while pid.load(Ordering::Relaxed) == 0 && !mirror.is_finished() {
        std::thread::sleep(Duration::from_millis(1));
    }
    if !mirror.is_finished() {
        terminate(pid.load(Ordering::Relaxed), &terminated);
    }
    let stopped = mirror
        .join()
        .unwrap_or_else(|_| bail!("the mirror's thread panicked"));
    let latencies = arrivals.stop();
    arrived?;
    stopped?;
    let latencies = latencies?;
    delete_topic(at, &from)?;
    delete_topic(at, &to)?;
    Ok(Percentiles::of(latencies))
}

/// Warm-up records until one arrives, then `count` load records at `rate` a second.
fn pace(
    at: &Endpoint,
    topic: &str,
    rate: usize,
    count: usize,
    arrivals: &Arrivals,
    mirror: &std::thread::JoinHandle<Result<crate::process::Finished>>,
) -> Result<()> {
    let producer = producer_with(at, &[("linger.ms", LINGER_MS)])?;
    let warm = Instant::now();
    let mut sent = 0u64;
    while arrivals.warm.load(Ordering::Relaxed) == 0 {
        ensure!(!mirror.is_finished(), "the mirror ended before the load");
        ensure!(
            warm.elapsed() < ARRIVAL_LIMIT,
            "no warm-up record arrived within {ARRIVAL_LIMIT:?}"
        );
        let payload = value('W', sent);
        send(&producer, BaseRecord::to(topic).payload(&payload[..]))?;
        sent += 1;
        producer.poll(Duration::from_millis(50));
    }
    let start = Instant::now();
    let mut i = 0;
    while i < count {
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as usize + 1).min(count);
        while i < due {
            let key = format!("key-{}", i % DISTINCT_KEYS);
            let payload = value('L', i as u64);
            send(
                &producer,
                BaseRecord::to(topic).key(key.as_bytes()).payload(&payload[..]),
            )?;
            i += 1;
        }
        // The pacing period: records due within it go out together.
        producer.poll(Duration::from_millis(1));
    }
    producer
        .flush(Duration::from_secs(60))
        .context("librdkafka flush")?;
    Ok(())
}

/// A value of `SIZE` bytes: a kind letter (`W`arm-up, `L`oad), the sequence number and the
/// send time in microseconds since the epoch, then filler.
fn value(kind: char, seq: u64) -> Vec<u8> {
    let mut v = format!("{kind}{seq:010}:{:016}:", now_us()).into_bytes();
    v.resize(SIZE, b'x');
    v
}

fn parse(v: &[u8]) -> Option<(u8, usize, u64)> {
    let text = std::str::from_utf8(v.get(..29)?).ok()?;
    Some((
        v[0],
        text.get(1..11)?.parse().ok()?,
        text.get(12..28)?.parse().ok()?,
    ))
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The measuring consumer on the destination topic, on a thread of its own.
struct Arrivals {
    warm: Arc<AtomicU64>,
    /// Load records that arrived (each counted once).
    load: Arc<AtomicU64>,
    count: usize,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<Vec<(u64, u64)>>>,
}

impl Arrivals {
    fn start(at: &Endpoint, topic: &str, count: usize) -> Result<Arrivals> {
        let consumer: BaseConsumer = at
            .librdkafka()
            .set("group.id", fresh_group("bench-latency-check"))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", FETCH_WAIT_MS)
            .create()
            .context("cannot create the measuring consumer")?;
        let mut parts = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            parts.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&parts)?;
        let (warm, load, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (w, l, s) = (warm.clone(), load.clone(), stop.clone());
        let mut latencies = vec![None; count];
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Some(m) = consumer.poll(Duration::from_millis(50)) else {
                    continue;
                };
                let received = now_us();
                let m = m.context("the measuring consumer")?;
                let value = m.payload().unwrap_or_default();
                match parse(value) {
                    Some((b'W', _, _)) => {
                        w.fetch_add(1, Ordering::Relaxed);
                    }
                    // A record that came twice (at-least-once) counts its first arrival.
                    Some((b'L', seq, sent)) if seq < count && latencies[seq].is_none() => {
                        let Timestamp::LogAppendTime(ms) = m.timestamp() else {
                            bail!(
                                "a record in the destination without LogAppendTime: {:?}",
                                m.timestamp()
                            );
                        };
                        let appended = (ms as u64 * 1000).saturating_sub(sent);
                        latencies[seq] = Some((appended, received.saturating_sub(sent)));
                        l.fetch_add(1, Ordering::Relaxed);
                    }
                    Some((b'L', seq, _)) if seq < count => {}
                    _ => bail!(
                        "a record the load did not send: {:?}",
                        String::from_utf8_lossy(value)
                    ),
                }
            }
            Ok(latencies.into_iter().flatten().collect())
        });
        Ok(Arrivals {
            warm,
            load,
            count,
            stop,
            thread,
        })
    }

    /// Waits until every load record arrived.
    fn wait_all(&self, mirror: &std::thread::JoinHandle<Result<crate::process::Finished>>) -> Result<()> {
        let start = Instant::now();
        while (self.load.load(Ordering::Relaxed) as usize) < self.count {
            ensure!(!mirror.is_finished(), "the mirror ended before the load arrived");
            ensure!(
                start.elapsed() < ARRIVAL_LIMIT && !self.thread.is_finished(),
                "{} of {} load records arrived",
                self.load.load(Ordering::Relaxed),
                self.count
            );
            // The polling period: nothing is awaited here.
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Stops the consumer: each load record's latencies in microseconds (to its
    /// LogAppendTime, to its receipt), all of them.
    fn stop(self) -> Result<Vec<(u64, u64)>> {
        self.stop.store(true, Ordering::Relaxed);
        let latencies = self
            .thread
            .join()
            .unwrap_or_else(|_| bail!("the measuring consumer panicked"))?;
        ensure!(
            latencies.len() == self.count,
            "{} of {} load records arrived",
            latencies.len(),
            self.count
        );
        Ok(latencies)
    }
}
