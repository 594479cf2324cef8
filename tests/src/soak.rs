//! The soak: records Kafka to Kafka through `connector-host run` (a pipeline file, the host
//! a child process) on a durable broker ([`DurableBroker`]) while its proxy cuts every
//! connection every few seconds, the broker is killed (SIGKILL) and restarted, and the host
//! itself is killed (SIGKILL) and restarted. Then the destination topic is read whole and
//! every record is counted by its unique id.
//!
//! Faults come one at a time, each once records flow again after the one before: the time
//! from a fault to the next record written is its recovery. A host that stops on its own (a
//! pipeline failed) ends the soak with that failure: nothing here restarts a pipeline the
//! host gave up.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::child::Running;
use crate::durable::DurableBroker;
use crate::pipelines::*;
use crate::{allow_servers, bytes, config, metadata_value, source, unique_name};
use connector_host::wit;

/// Partitions of the source and the destination topics.
const PARTITIONS: i32 = 3;
/// The pipeline's name, as the host's metrics and summary name it.
const PIPELINE: &str = "t/soak";
/// How long one step (the host announcing its metrics, a drain, a read) may take: far more
/// than it needs, so that only a hang reaches it.
const STEP: Duration = Duration::from_secs(120);
/// How long the host may take to start: the first start compiles the component (minutes for
/// a debug build on a loaded machine).
const START: Duration = Duration::from_secs(600);
/// How often the soak looks at the host's progress.
const TICK: Duration = Duration::from_millis(100);

/// What the soak does.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Distinct records written to the source topic before the pipeline starts.
    pub records: usize,
    /// Every open connection is cut (at the proxy) this often while records flow.
    pub cut_every: Duration,
    /// Times the broker is killed with SIGKILL and restarted, spread over the run.
    pub broker_restarts: usize,
    /// Whether the host is killed with SIGKILL (after the broker restarts) and restarted.
    pub host_kill: bool,
    /// The whole soak, the source's filling included, may take this long.
    pub limit: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Cut,
    BrokerRestart,
    HostKill,
}

/// How long records took to flow again after a fault.
#[derive(Clone, Debug)]
pub struct Recovery {
    pub fault: Fault,
    pub took: Duration,
}

/// What the soak found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub records: usize,
    /// Ids written to the source and never seen at the destination.
    pub lost: usize,
    /// Records seen at the destination more than once (each copy past the first).
    pub duplicates: usize,
    /// Of those, copies of records the source had not committed when the host was killed:
    /// what at-least-once redelivers after a crash.
    pub redelivered_after_kill: usize,
    /// Records written to the destination and not committed at the source when the host was
    /// killed: the most a restart may deliver twice.
    pub uncommitted_at_kill: usize,
    pub recoveries: Vec<Recovery>,
    /// The largest peak resident memory of the host's runs, bytes.
    pub peak_rss: u64,
    /// Writing the records into the source topic.
    pub fill: Duration,
    /// From the pipeline's start until the source committed every record.
    pub moved: Duration,
    /// Why the soak stopped early: a host that stopped on its own, a run over its limit.
    pub failure: Option<String>,
}

impl Report {
    /// Duplicates no host kill explains (at-least-once allows none through cuts and broker
    /// restarts).
    pub fn unexplained_duplicates(&self) -> usize {
        self.duplicates - self.redelivered_after_kill
    }

    /// The recoveries from `fault`.
    pub fn recoveries_from(&self, fault: Fault) -> Vec<Duration> {
        self.recoveries
            .iter()
            .filter(|r| r.fault == fault)
            .map(|r| r.took)
            .collect()
    }
}

/// Runs the soak of `plan` on a broker of its own.
pub async fn run(plan: &Plan) -> Report {
    let started = Instant::now();
    let mut broker = DurableBroker::start();
    let servers = broker.addr();
    let (from, to) = (
        broker.new_topic("soak-in", PARTITIONS),
        broker.new_topic("soak-out", PARTITIONS),
    );
    fill_at(&servers, &from, plan.records, "soak").await;
    let mut report = Report {
        records: plan.records,
        fill: started.elapsed(),
        ..Report::default()
    };
    let dir = scratch("soak");
    let path = dir.join("pipelines.toml");
    std::fs::write(&path, pipeline_file(&servers, &from, &to)).expect("write the pipeline file");

    let moving = Instant::now();
    let mut run = Run {
        from: &from,
        to: &to,
        plan,
        deadline: started + plan.limit,
        base: 0,
    };
    let mut host = Host::start(&path).await;
    let committed_at_kill = run.faults(&mut broker, &mut host, &path, &mut report).await;
    report.moved = moving.elapsed();
    report.peak_rss = report.peak_rss.max(host.peak_rss());
    if report.failure.is_some() {
        host.stop().await;
        return report;
    }
    let (code, stderr) = host.stop().await;
    if code != 0 {
        report.failure = Some(format!("the drained host exited {code}:\n{}", tail(&stderr)));
        return report;
    }
    let ids = count_destination(&broker, &to, plan.records).await;
    report.lost = ids.iter().filter(|c| **c == 0).count();
    report.duplicates = ids.iter().map(|c| c.saturating_sub(1) as usize).sum();
    if report.duplicates > 0 && plan.host_kill {
        report.redelivered_after_kill = redelivered(&broker, &from, &ids, &committed_at_kill).await;
    }
    report
}

/// One pipeline: the source topic to the destination topic, a group of its own. A session
/// timeout of 10 s (30 s by default) lets the group give a killed host's partitions to its
/// successor sooner.
fn pipeline_file(servers: &str, from: &str, to: &str) -> String {
    let (tenant, name) = PIPELINE.split_once('/').expect("tenant/name");
    format!("[[pipeline]]\nname = \"{name}\"\ntenant = \"{tenant}\"\n")
        + &allow_line(servers)
        + &kafka_end_at(
            servers,
            "source",
            &format!(
                "topics = \"{from}\", readFromBeginning = true, groupID = \"{from}\", sessionTimeout = \"10s\""
            ),
        )
        + &kafka_end_at(servers, "destination", &format!("topic = \"{to}\""))
}

/// `connector-host run` of the soak's pipeline file, its metrics endpoint and memory watched.
struct Host {
    running: Running,
    pid: u32,
    metrics: String,
    peak: u64,
}

impl Host {
    async fn start(path: &Path) -> Host {
        let mut running = Running::spawn(&mut run_host(path, &["--metrics", "127.0.0.1:0"]));
        let metrics = metrics_addr(&mut running, START).await;
        Host {
            pid: running.id(),
            running,
            metrics,
            peak: 0,
        }
    }

    /// Records this run of the host wrote; `None` when its endpoint does not answer.
    async fn written(&mut self) -> Option<u64> {
        self.peak = self.peak_rss();
        let scraped = try_scrape(&self.metrics).await?;
        Some(metric(&scraped, "records_written_total", PIPELINE).unwrap_or(0))
    }

    /// Its peak resident memory so far (sampled at each look at its progress: the last
    /// sample stands once it is gone).
    fn peak_rss(&self) -> u64 {
        self.peak.max(peak_rss(self.pid).unwrap_or(0))
    }

    /// SIGKILL; waits until it is gone.
    async fn kill(&mut self) {
        self.peak = self.peak_rss();
        self.running.kill();
        let gone = crate::wait_until(STEP, || self.running.has_exited()).await;
        assert!(gone, "the host outlived a SIGKILL by {STEP:?}");
    }

    /// SIGTERM (a drain) unless it stopped already, then reaped: its exit code and stderr.
    async fn stop(mut self) -> (i32, String) {
        if !self.running.has_exited() {
            self.running.terminate();
        }
        self.running.finish(STEP).await
    }
}

/// The last lines of a host's stderr, for a report.
fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The fault schedule and the progress it follows.
struct Run<'a> {
    from: &'a str,
    to: &'a str,
    plan: &'a Plan,
    deadline: Instant,
    /// Records written by the host's earlier runs (the destination's end offsets at the kill).
    base: u64,
}

impl Run<'_> {
    /// The broker restarts, then the host kill, at even shares of the records.
    fn schedule(&self) -> Vec<(u64, Fault)> {
        let mut faults = vec![Fault::BrokerRestart; self.plan.broker_restarts];
        if self.plan.host_kill {
            faults.push(Fault::HostKill);
        }
        let n = faults.len() as u64 + 1;
        let records = self.plan.records as u64;
        faults
            .into_iter()
            .enumerate()
            .map(|(i, f)| (records * (i as u64 + 1) / n, f))
            .collect()
    }

    /// Injects the faults while records flow, until the source committed every record (or the
    /// host stopped on its own, or the limit passed: `report.failure`). The source's commits
    /// at the host's kill, per partition.
    async fn faults(
        &mut self,
        broker: &mut DurableBroker,
        host: &mut Host,
        path: &Path,
        report: &mut Report,
    ) -> BTreeMap<i32, i64> {
        let mut schedule = self.schedule().into_iter().peekable();
        let mut committed_at_kill = BTreeMap::new();
        let mut pending: Option<(Fault, Instant, u64)> = None;
        let mut last_cut = Instant::now();
        let mut last_check = Instant::now();
        let records = self.plan.records as u64;
        loop {
            if Instant::now() > self.deadline {
                report.failure = Some(format!(
                    "not done within {:?}; the host's stderr:\n{}",
                    self.plan.limit,
                    tail(&host.running.stderr())
                ));
                break;
            }
            if host.running.has_exited() {
                report.failure = Some(format!(
                    "the host stopped on its own{}:\n{}",
                    pending.map_or(String::new(), |(f, at, _)| format!(
                        " {:?} after a {f:?}",
                        at.elapsed()
                    )),
                    tail(&host.running.stderr())
                ));
                break;
            }
            let Some(now) = host.written().await.map(|w| self.base + w) else {
                tokio::time::sleep(TICK).await;
                continue;
            };
            if now >= records && last_check.elapsed() >= Duration::from_secs(1) {
                last_check = Instant::now();
                let committed: i64 = broker.committed(self.from, self.from, PARTITIONS).values().sum();
                if committed as u64 >= records {
                    break;
                }
            }
            if let Some((fault, at, before)) = pending {
                if now > before {
                    if fault != Fault::Cut {
                        eprintln!("soak: records flow again {:?} after the {fault:?}", at.elapsed());
                    }
                    report.recoveries.push(Recovery {
                        fault,
                        took: at.elapsed(),
                    });
                    pending = None;
                }
            } else if let Some((_, fault)) = schedule.next_if(|(at, _)| now >= *at) {
                let at = Instant::now();
                eprintln!("soak: {fault:?} at {now} of {records} records written");
                match fault {
                    Fault::BrokerRestart => {
                        broker.kill();
                        broker.restart();
                    }
                    Fault::HostKill => {
                        host.kill().await;
                        report.peak_rss = report.peak_rss.max(host.peak);
                        // What the killed host had sent reaches the broker (or never does).
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        committed_at_kill = broker.committed(self.from, self.from, PARTITIONS);
                        let written: i64 = broker.end_offsets(self.to, PARTITIONS).values().sum();
                        let committed: i64 = committed_at_kill.values().sum();
                        report.uncommitted_at_kill = (written - committed).max(0) as usize;
                        self.base = written as u64;
                        *host = Host::start(path).await;
                    }
                    Fault::Cut => unreachable!("cuts are not scheduled"),
                }
                pending = Some((fault, at, now.max(self.base)));
            } else if now + 1000 < records && last_cut.elapsed() >= self.plan.cut_every {
                broker.proxy().cut();
                last_cut = Instant::now();
                pending = Some((Fault::Cut, last_cut, now));
            }
            tokio::time::sleep(TICK).await;
        }
        committed_at_kill
    }
}

/// The id (`soak-<id>`) of a record the soak wrote.
fn id_of(r: &wit::Record) -> usize {
    let value = String::from_utf8(bytes(&r.payload.after).unwrap_or_default()).expect("utf-8");
    value
        .strip_prefix("soak-")
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("a record the soak did not write: {value:?}"))
}

/// How often each of `records` ids arrived at the destination topic.
async fn count_destination(broker: &DurableBroker, topic: &str, records: usize) -> Vec<u32> {
    let mut ids = vec![0u32; records];
    read_whole(broker, topic, |r| ids[id_of(r)] += 1).await;
    ids
}

/// Copies past the first of the records that the source had not committed when the host was
/// killed (`committed`, per partition): what a restart redelivers. Reads the source topic
/// for where each repeated id was.
async fn redelivered(
    broker: &DurableBroker,
    from: &str,
    ids: &[u32],
    committed: &BTreeMap<i32, i64>,
) -> usize {
    let mut n = 0;
    read_whole(broker, from, |r| {
        let copies = ids[id_of(r)];
        let at = |key| metadata_value(r, key).and_then(|v| v.parse::<i64>().ok());
        let uncommitted = match (at("kafka.partition"), at("kafka.offset")) {
            (Some(p), Some(o)) => committed.get(&(p as i32)).is_none_or(|c| o >= *c),
            _ => panic!("a source record without kafka.partition and kafka.offset"),
        };
        if copies > 1 && uncommitted {
            n += copies as usize - 1;
        }
    })
    .await;
    n
}

/// Reads `topic` whole, every record up to its end offsets now, through a group of its own.
async fn read_whole(broker: &DurableBroker, topic: &str, mut each: impl FnMut(&wit::Record)) {
    let total: i64 = broker.end_offsets(topic, PARTITIONS).values().sum();
    let servers = broker.addr();
    let mut src = source(&allow_servers(&servers)).await;
    let group = unique_name("soak-check");
    let cfg = config(&[
        ("servers", &servers),
        ("topic", topic),
        ("readFromBeginning", "true"),
        ("groupID", &group),
    ]);
    src.open(&cfg, None)
        .await
        .expect("open a source on the soak's broker");
    let (mut seen, mut last_progress) = (0i64, Instant::now());
    while seen < total {
        assert!(
            last_progress.elapsed() < STEP,
            "reading {topic} back: {seen} of {total} records, none for {STEP:?}"
        );
        let batch = src.read(5000, 500).await.expect("read");
        if !batch.is_empty() {
            last_progress = Instant::now();
        }
        seen += batch.len() as i64;
        batch.iter().for_each(&mut each);
    }
    src.teardown().await.expect("teardown");
}
