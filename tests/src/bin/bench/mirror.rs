//! Kafka to Kafka: one source topic filled once, then each variant moves all of it to a
//! fresh topic of its own with a fresh group, in a child process; the parent watches the
//! destination fill (its high watermarks) and compares the median runs.
//!
//! - `pipe`: `connector-host pipe` (the release build next to this binary), `--max N`;
//! - `run`: `connector-host run` of a pipeline file (`max-records = N`);
//! - `in-process`: the runner's calls made by this binary through `connector_host` (a
//!   source and a destination instance: `read-batch`, `write-batch`, `ack-batch`, one after
//!   the other), each timed: where ours' time goes;
//! - `librdkafka`: [`mirror_librdkafka`], a consumer handing batches to a producer.
//!
//! Every side: acks=all, snappy, batches of the host's default (1,000 records) waiting
//! at most 500 ms for the first record, commits after the batch's delivery.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use connector_host::pipeline::DEFAULT_BATCH;
use connector_host::{Allowlist, Limits};
use integration_tests::component_path;
use integration_tests::pipelines::{allow_line, kafka_end_at, scratch};
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::consumer::{STALL, fresh_group};
use crate::endpoint::{Endpoint, Transport};
use crate::librdkafka::{delete_topic, mirror_librdkafka, produce_librdkafka, topic_records};
use crate::process::{Finished, run_measured};
use crate::records::generate;
use crate::stats::{Rounds, Run, Spread, Variant, met, number};
use crate::{Brokers, PARTITIONS, Plan, TARGET_RATIO};

/// Value size of the records moved.
pub(crate) const SIZE: usize = 100;
/// How long a read waits for its first record: the host's runner's wait (its `READ_WAIT_MS`).
pub(crate) const READ_WAIT_MS: u32 = 500;
const SIDES: [&str; 4] = ["pipe", "run", "in-process", "librdkafka"];
/// How often the parent looks at the destination's high watermarks.
const WATCH_EVERY: Duration = Duration::from_millis(5);

/// What one variant's run measured.
pub(crate) struct Moved {
    /// `seconds`: from the first record in the destination to the last.
    run: Run,
    /// From the spawn to the first record in the destination (start-up, group join, the
    /// first read and write).
    start_s: f64,
    /// From the last record in the destination to the exit (commit, teardown).
    end_s: f64,
    wall_s: f64,
    cpu_s: f64,
    /// The in-process side's own clocks (seconds): open, read, write, ack, teardown.
    calls: Option<[f64; 5]>,
}

impl std::ops::Deref for Moved {
    type Target = Run;
    fn deref(&self) -> &Run {
        &self.run
    }
}

pub(crate) fn parent(plan: &Plan, brokers: &Brokers) -> Result<()> {
    let broker = brokers.get(Transport::Plaintext);
    let at = &broker.endpoint;
    let count = plan.count;
    let host = release_host()?;
    println!(
        "Kafka to Kafka: {count} records of {SIZE} B from one {PARTITIONS}-partition topic to a fresh one per run, fresh group, acks=all, snappy"
    );
    println!(
        "  ours: {} through {} (pipe, run) or this binary (in-process); {DEFAULT_BATCH} records per read, waiting {READ_WAIT_MS} ms at most; every batch written, then acked (the source commits once commitOffsetsSize=1000 were acked: every batch here)",
        component_path().display(),
        host.display()
    );
    println!(
        "  librdkafka {}: a consumer (group, no auto commit) handing batches of {DEFAULT_BATCH} to a producer (idempotent, murmur2, linger.ms=0, the record's timestamp kept); commit after the batch's delivery",
        rdkafka::util::get_rdkafka_version().1
    );
    println!(
        "  records/s = N / (first record in the destination -> last), watched by the parent every {} ms; start = spawn -> first, end = last -> exit",
        WATCH_EVERY.as_millis()
    );
    warm_cache(&host)?;
    let from = broker.topic("bench-mirror-from")?;
    eprintln!("bench: filling {from} with {count} x {SIZE} B through librdkafka ...");
    produce_librdkafka(at, &from, &generate(SIZE, count))?;
    let filled = topic_records(at, &from)?;
    ensure!(
        filled == count as u64,
        "{from} holds {filled} records, not {count}"
    );

    let exe = std::env::current_exe()?;
    let rounds = Rounds::run(plan.rounds, SIDES.map(Variant::plaintext).to_vec(), |v| {
        let to = broker.topic(&format!("bench-mirror-{}", v.side))?;
        let group = fresh_group(&format!("bench-mirror-{}", v.side));
        eprintln!("bench: {} moves {count} records from {from} to {to} ...", v.side);
        let mut cmd = match v.side {
            "pipe" => pipe_command(&host, at, &from, &to, &group, count),
            "run" => run_command(&host, at, &from, &to, &group, count)?,
            side => {
                let mut c = Command::new(&exe);
                c.args(["k2k-run", side, &from, &to, &group, &count.to_string(), &at.arg()]);
                c
            }
        };
        let moved = watched(at, &to, count, &mut cmd, v.side)?;
        delete_topic(at, &to)?;
        Ok(moved)
    })?;
    print(&rounds, count);
    Ok(())
}

/// Runs `cmd` while watching `to` fill up to `count` records.
fn watched(at: &Endpoint, to: &str, count: usize, cmd: &mut Command, side: &str) -> Result<Moved> {
    let watch = Watch::start(at, to, count as u64)?;
    let spawned = Instant::now();
    let what = format!("the {side} mirror");
    let finished = run_measured(cmd, &what, |_| {}, &AtomicBool::new(false));
    let seen = watch.stop();
    let f = finished?;
    let (first, last) = seen?;
    let in_dest = topic_records(at, to)?;
    ensure!(
        in_dest == count as u64,
        "{what} left {in_dest} records in {to}, not {count}"
    );
    let calls = match side {
        "in-process" => Some(breakdown(&f)?),
        _ => None,
    };
    let secs = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64();
    Ok(Moved {
        run: Run {
            records: count as u64,
            value_bytes: (count * SIZE) as u64,
            seconds: secs(first, last),
            peak_kib: 0,
            connections: 0,
            opened_on_clock: 0,
            wire_bytes: 0,
        },
        start_s: secs(spawned, first),
        end_s: f.wall.as_secs_f64() - secs(spawned, last),
        wall_s: f.wall.as_secs_f64(),
        cpu_s: f.cpu.as_secs_f64(),
        calls,
    })
}

fn breakdown(f: &Finished) -> Result<[f64; 5]> {
    let (v, _) =
        Run::parse(&f.stdout).with_context(|| format!("the in-process mirror said: {}", f.stderr))?;
    Ok([
        number(&v, "open_s")?,
        number(&v, "read_s")?,
        number(&v, "write_s")?,
        number(&v, "ack_s")?,
        number(&v, "teardown_s")?,
    ])
}

fn print(rounds: &Rounds<Moved>, count: usize) {
    let reference = Variant::plaintext("librdkafka");
    println!();
    println!("| side | records/s | ratio to librdkafka (rounds) | start s | end s | wall s | CPU s |");
    println!("|---|---|---|---|---|---|---|");
    for side in SIDES {
        let v = Variant::plaintext(side);
        let m = rounds.median(v);
        let ratio = if v == reference {
            String::new()
        } else {
            let each = rounds.round_ratios(v, reference);
            format!("{:.2}x ({})", rounds.ratio(v, reference), shown(&each))
        };
        println!(
            "| {side} | {:.0} | {ratio} | {:.2} | {:.2} | {:.2} | {:.2} |",
            m.records_per_sec(),
            m.start_s,
            m.end_s,
            m.wall_s,
            m.cpu_s,
        );
    }
    println!(
        "medians of {} runs per side (each side's median run by records/s); every run moved exactly {count} records (the destination's watermarks)",
        rounds.runs(reference).len()
    );
    let inproc = rounds.runs(Variant::plaintext("in-process"));
    let part = |i: usize| {
        Spread::of(
            &inproc
                .iter()
                .map(|m| m.calls.map_or(0.0, |c| c[i]))
                .collect::<Vec<_>>(),
        )
    };
    println!(
        "where ours' time goes (in-process, the runner's calls timed, medians [range] in s): open (group join) {}, read-batch {}, write-batch {}, ack-batch {}, teardown (commit) {}",
        part(0).show(2, ""),
        part(1).show(2, ""),
        part(2).show(2, ""),
        part(3).show(3, ""),
        part(4).show(3, "")
    );
    let overhead = |side| {
        let d = rounds.round_differences(Variant::plaintext(side), Variant::plaintext("in-process"), |m| {
            m.wall_s
        });
        Spread::of(&d).show(2, " s")
    };
    println!(
        "the CLI's own cost (wall time minus in-process's, round by round: process start, engine, component from the cache, progress): pipe {}, run {}",
        overhead("pipe"),
        overhead("run")
    );
    println!("targets (reported, never failing the run):");
    for side in ["pipe", "run"] {
        let ratio = rounds.ratio(Variant::plaintext(side), reference);
        println!(
            "  Kafka to Kafka through {side} >= {TARGET_RATIO:.1}x librdkafka: {ratio:.2}x  {}",
            met(ratio >= TARGET_RATIO)
        );
    }
}

/// `0.95x, 1.02x, ...`
pub(crate) fn shown(ratios: &[f64]) -> String {
    ratios
        .iter()
        .map(|r| format!("{r:.2}x"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The release build of the host, next to this binary (`just bench` builds it).
pub(crate) fn release_host() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let host = exe
        .parent()
        .context("this binary's folder")?
        .join("connector-host");
    ensure!(
        host.exists(),
        "{} is missing: `cargo build --release -p connector-host` (just bench does)",
        host.display()
    );
    Ok(host)
}

/// The host's flags every run gives: the component, and the tests' compile cache.
fn host_command(host: &std::path::Path) -> Command {
    let mut c = Command::new(host);
    c.arg("--component")
        .arg(component_path())
        .arg("--cache-dir")
        .arg(integration_tests::component_cache());
    c
}

/// Compiles the component into the cache once, outside every clock.
fn warm_cache(host: &std::path::Path) -> Result<()> {
    let mut c = host_command(host);
    c.arg("spec");
    run_measured(&mut c, "connector-host spec", |_| {}, &AtomicBool::new(false)).map(drop)
}

fn pipe_command(
    host: &std::path::Path,
    at: &Endpoint,
    from: &str,
    to: &str,
    group: &str,
    count: usize,
) -> Command {
    let mut c = host_command(host);
    c.arg("pipe");
    for s in [
        format!("servers={}", at.addr),
        format!("topic={from}"),
        "readFromBeginning=true".into(),
        format!("groupID={group}"),
    ] {
        c.args(["-s", &s]);
    }
    for d in [
        format!("servers={}", at.addr),
        format!("topic={to}"),
        "acks=all".into(),
        "compression=snappy".into(),
    ] {
        c.args(["-d", &d]);
    }
    c.args(["--max", &count.to_string()]);
    c
}

/// `connector-host run` of a pipeline file moving `from` to `to`; `count`: its
/// `max-records` (none when 0).
pub(crate) fn run_command(
    host: &std::path::Path,
    at: &Endpoint,
    from: &str,
    to: &str,
    group: &str,
    count: usize,
) -> Result<Command> {
    let dir = scratch("bench-mirror");
    let max = match count {
        0 => String::new(),
        n => format!("max-records = {n}\n"),
    };
    let file = format!(
        "[[pipeline]]\nname = \"mirror\"\ntenant = \"bench\"\n{}{max}\n{}\n{}",
        allow_line(&at.addr),
        kafka_end_at(
            &at.addr,
            "source",
            &format!("topic = \"{from}\", readFromBeginning = \"true\", groupID = \"{group}\"")
        ),
        kafka_end_at(
            &at.addr,
            "destination",
            &format!("topic = \"{to}\", acks = \"all\", compression = \"snappy\"")
        ),
    );
    let path = dir.join("pipelines.toml");
    std::fs::write(&path, file).with_context(|| format!("write {}", path.display()))?;
    let mut c = host_command(host);
    c.arg("run").arg(path);
    Ok(c)
}

/// A thread that watches a topic's high watermarks until it holds `count` records: when
/// the first record and the last arrived.
struct Watch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<(Instant, Instant)>>,
}

impl Watch {
    fn start(at: &Endpoint, topic: &str, count: u64) -> Result<Watch> {
        let client: BaseConsumer = at
            .librdkafka()
            .create()
            .context("cannot create a librdkafka client")?;
        let stop = Arc::new(AtomicBool::new(false));
        let (topic, stopped) = (topic.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut first = None;
            loop {
                let mut total = 0;
                for p in 0..PARTITIONS {
                    let (_, high) = client
                        .fetch_watermarks(&topic, p, Duration::from_secs(10))
                        .with_context(|| format!("watermarks of {topic}-{p}"))?;
                    total += high as u64;
                }
                let now = Instant::now();
                if total > 0 {
                    first.get_or_insert(now);
                }
                if total >= count {
                    return Ok((first.unwrap_or(now), now));
                }
                if stopped.load(Ordering::Relaxed) {
                    bail!("{topic} got {total} of {count} records");
                }
                // The watching period: nothing is awaited here.
                std::thread::sleep(WATCH_EVERY);
            }
        });
        Ok(Watch { stop, thread })
    }

    /// Stops it (once the mover exited): when the first and the last record arrived.
    fn stop(self) -> Result<(Instant, Instant)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .unwrap_or_else(|_| bail!("the watermark watcher panicked"))
    }
}

// ---------------------------------------------------------------------------------------------
// Child: `k2k-run in-process|librdkafka FROM TO GROUP COUNT ENDPOINT` (COUNT 0: until killed).

pub(crate) fn child(side: &str, from: &str, to: &str, group: &str, count: u64, at: &Endpoint) -> Result<()> {
    let max = (count > 0).then_some(count);
    match side {
        "librdkafka" => {
            let wait = Duration::from_millis(READ_WAIT_MS.into());
            let moved = mirror_librdkafka(at, from, to, group, DEFAULT_BATCH as usize, wait, max)?;
            println!("RESULT {}", serde_json::json!({ "records": moved }));
            Ok(())
        }
        "in-process" => {
            let max = max.context("the in-process mirror needs a count")?;
            let v = mirror_ours(at, from, to, group, max)?;
            println!("RESULT {v}");
            Ok(())
        }
        _ => bail!("unknown side {side}"),
    }
}

/// The runner's loop, made here with each call timed.
fn mirror_ours(at: &Endpoint, from: &str, to: &str, group: &str, count: u64) -> Result<serde_json::Value> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let runtime = integration_tests::runtime();
        let mut allow = Allowlist::default();
        allow.allow_servers(&at.addr)?;
        let limits = Limits::default();
        let mut src = runtime
            .instantiate("bench/source", &allow, &limits)
            .await?
            .into_source();
        let mut dst = runtime
            .instantiate("bench/destination", &allow, &limits)
            .await?
            .into_destination();
        let settings = |pairs: &[(&str, &str)]| {
            let mut c = vec![("servers".to_string(), at.addr.clone())];
            c.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            c
        };
        let t = Instant::now();
        src.open(
            &settings(&[("topic", from), ("readFromBeginning", "true"), ("groupID", group)]),
            None,
        )
        .await?;
        dst.open(&settings(&[
            ("topic", to),
            ("acks", "all"),
            ("compression", "snappy"),
        ]))
        .await?;
        let open = t.elapsed();
        let (mut read, mut write, mut ack) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        let (mut moved, mut last) = (0u64, Instant::now());
        while moved < count {
            let want = (count - moved).min(DEFAULT_BATCH.into()) as u32;
            let t = Instant::now();
            let batch = src.read_batch(want, READ_WAIT_MS).await?;
            read += t.elapsed();
            if batch.is_empty() {
                ensure!(
                    last.elapsed() < STALL,
                    "ours: no record for {STALL:?} after {moved}"
                );
                continue;
            }
            last = Instant::now();
            let t = Instant::now();
            let (n, error) = dst.write_batch(&batch).await?;
            write += t.elapsed();
            if n as usize != batch.len() || error.is_some() {
                bail!("a write of {} records wrote {n}: {error:?}", batch.len());
            }
            let t = Instant::now();
            src.ack_batch(batch.iter().map(|r| r.position())).await?;
            ack += t.elapsed();
            moved += u64::from(n);
        }
        let t = Instant::now();
        src.teardown().await?;
        dst.teardown().await?;
        let s = |d: Duration| d.as_secs_f64();
        Ok(serde_json::json!({
            "records": moved,
            "value_bytes": moved * SIZE as u64,
            "seconds": 0.0,
            "peak_kib": 0,
            "connections": 0,
            "opened_on_clock": 0,
            "wire_bytes": 0,
            "open_s": s(open),
            "read_s": s(read),
            "write_s": s(write),
            "ack_s": s(ack),
            "teardown_s": s(t.elapsed()),
        }))
    })
}
