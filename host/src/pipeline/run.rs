//! Running pipelines: every end is instantiated and validated, all pipelines at once,
//! before any starts. A configuration error of the file (a path that cannot be opened, a
//! setting the bundled connector refuses) refuses the whole file; anything a tenant's own
//! component does (it does not load, it refuses its settings) and any runtime failure (a
//! trap, a limit, a deadline, an instantiation refused) fails that pipeline alone. Then each pipeline is one task that reads a batch, writes it, and acks exactly
//! the prefix the destination wrote, so the source commits only what really arrived
//! (at-least-once end to end). A stop request drains: the batch in hand is written and
//! acked, then both ends tear down (the source commits there); what has not drained
//! within the drain deadline is dropped and named.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use tokio::io::BufReader;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::ends::{DestEnd, LinesIn, SourceEnd, record_bytes};
use super::paths::Confined;
use super::{Endpoint, Pipeline, restart};
use crate::batch::RecordBatch;
use crate::engine::SharedEngine;
use crate::escape::shown_error;
use crate::failure::{Class, classify};
use crate::limits::Limits;
use crate::metrics::{PipelineMetrics, Registry, Status};
use crate::runtime::{GuestError, Instance, Role, Runtime};
use crate::sandbox::Allowlist;

/// How long one read waits for records: the longest a stop request waits for a read.
const READ_WAIT_MS: u32 = 500;

/// How often a running pipeline asks its source for its lag.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// Loads components (each once) and prepares pipelines.
pub struct Runner {
    engine: SharedEngine,
    cache_dir: PathBuf,
    /// The bundled Kafka connector, for `kafka` ends.
    kafka_component: PathBuf,
    runtimes: HashMap<PathBuf, Runtime>,
}

/// A pipeline whose ends are instantiated and validated, not yet opened; or why it
/// cannot run (a runtime failure while preparing it).
pub struct Prepared {
    pipeline: Pipeline,
    ends: Result<(SourceEnd, DestEnd), (String, Class)>,
    renewal: Renewal,
}

/// What a pipeline's ends are made from again when it restarts.
#[derive(Clone)]
struct Renewal {
    runtimes: Arc<HashMap<PathBuf, Runtime>>,
    kafka: PathBuf,
}

/// Why a pipeline could not be prepared.
enum Unready {
    /// Its configuration is wrong: the file is refused.
    Config(anyhow::Error),
    /// Its instance failed (trapped, hit a limit or a deadline, was refused a slot).
    Runtime(anyhow::Error),
}

impl Unready {
    /// An error of the bundled connector's `validate` (settings it refuses) is a
    /// configuration error; any other failure of an instance is a runtime one, and so is
    /// anything a tenant's own component says: its verdicts must not stop other tenants.
    fn of_instance(e: anyhow::Error, component: &Option<Confined>) -> Self {
        match (e.downcast_ref::<GuestError>(), component) {
            (Some(_), None) => Unready::Config(e),
            _ => Unready::Runtime(e),
        }
    }
}

/// The largest component a pipeline file may name, and how long compiling one may take.
const COMPONENT_MAX: u64 = 64 << 20;
const COMPILE_DEADLINE: Duration = Duration::from_secs(120);

impl Runner {
    pub fn new(engine: SharedEngine, cache_dir: PathBuf, kafka_component: PathBuf) -> Self {
        Runner {
            engine,
            cache_dir,
            kafka_component,
            runtimes: HashMap::new(),
        }
    }

    /// Prepares every pipeline at once (one that hangs holds up the others by at most its
    /// deadlines). Configuration errors of any pipeline refuse them all, each reported; a
    /// pipeline that failed at run time (its component among the causes) comes back
    /// failed, beside the others.
    pub async fn prepare(&mut self, pipelines: Vec<Pipeline>) -> Result<Vec<Prepared>> {
        if pipelines.iter().any(|p| p.components().any(|c| c.is_none())) {
            self.kafka_runtime()?;
        }
        let broken = self.load_tenant_components(&pipelines).await;
        let runtimes = Arc::new(self.runtimes.clone());
        let mut tasks = JoinSet::new();
        for (i, p) in pipelines.into_iter().enumerate() {
            let (runtimes, kafka) = (runtimes.clone(), self.kafka_component.clone());
            let broken = p.components().flatten().find_map(|c| match broken.get(&c.path) {
                Some(why) => Some(why.clone()),
                None if !runtimes.contains_key(&c.path) => {
                    Some(format!("component {} was not loaded", c.path.display()))
                }
                None => None,
            });
            tasks.spawn(async move {
                let ends = prepare_one(&p, &runtimes, &kafka, broken).await;
                (i, p, ends)
            });
        }
        let mut done = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            done.push(joined.context("preparing a pipeline")?);
        }
        done.sort_by_key(|(i, ..)| *i);
        let renewal = Renewal {
            runtimes,
            kafka: self.kafka_component.clone(),
        };
        let mut ready = Vec::new();
        let mut problems = Vec::new();
        for (_, pipeline, ends) in done {
            let ends = match ends {
                Ok(ends) => Ok(ends),
                Err(Unready::Config(e)) => {
                    problems.push(shown_error(&e));
                    continue;
                }
                Err(Unready::Runtime(e)) => Err((shown_error(&e), classify(&e))),
            };
            ready.push(Prepared {
                pipeline,
                ends,
                renewal: renewal.clone(),
            });
        }
        match problems.is_empty() {
            true => Ok(ready),
            false => Err(anyhow!("{}", problems.join("\n"))),
        }
    }

    /// Loads the tenants' components, all at once, each read whole only up to
    /// `COMPONENT_MAX` and compiled within `COMPILE_DEADLINE` off the async threads; why
    /// each that could not be loaded failed, by path.
    async fn load_tenant_components(&mut self, pipelines: &[Pipeline]) -> HashMap<PathBuf, String> {
        let mut wanted: Vec<Confined> = pipelines
            .iter()
            .flat_map(|p| p.components().flatten().cloned())
            .collect();
        wanted.sort_by(|a, b| a.path.cmp(&b.path));
        wanted.dedup_by(|a, b| a.path == b.path);
        let mut tasks = JoinSet::new();
        // Compiles take a core and memory each: no more at once than there are cores. A
        // compile past its deadline keeps its permit until it ends.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let compiling = Arc::new(tokio::sync::Semaphore::new(cores));
        for c in wanted
            .into_iter()
            .filter(|c| !self.runtimes.contains_key(&c.path))
        {
            let (engine, cache_dir) = (self.engine.clone(), self.cache_dir.clone());
            let compiling = compiling.clone();
            tasks.spawn(async move {
                let path = c.path.clone();
                let permit = compiling.acquire_owned().await;
                let load = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    let bytes = c
                        .read_at_most(COMPONENT_MAX)
                        .with_context(|| format!("cannot read component {}", c.path.display()))?;
                    Runtime::from_bytes(&engine, &bytes, &c.path, &cache_dir)
                });
                let loaded = match tokio::time::timeout(COMPILE_DEADLINE, load).await {
                    Ok(Ok(r)) => r.map_err(|e| shown_error(&e)),
                    Ok(Err(e)) => Err(format!(
                        "loading component {} ended abnormally: {e}",
                        path.display()
                    )),
                    Err(_) => Err(format!(
                        "component {} did not compile within {}",
                        path.display(),
                        connector_format::duration::show(COMPILE_DEADLINE)
                    )),
                };
                (path, loaded)
            });
        }
        let mut broken = HashMap::new();
        while let Some(joined) = tasks.join_next().await {
            // A task that did not end normally leaves its component in neither map: its
            // pipelines fail as not loaded.
            let Ok((path, loaded)) = joined else { continue };
            match loaded {
                Ok(rt) => {
                    self.runtimes.insert(path, rt);
                }
                Err(why) => {
                    broken.insert(path, why);
                }
            }
        }
        broken
    }

    /// The bundled Kafka connector (the operator's `--component`), loaded once.
    fn kafka_runtime(&mut self) -> Result<&Runtime> {
        let path = self.kafka_component.clone();
        if !self.runtimes.contains_key(&path) {
            let rt = Runtime::load(&self.engine, &path, &self.cache_dir)?;
            self.runtimes.insert(path.clone(), rt);
        }
        Ok(&self.runtimes[&path])
    }

    /// An instance of the bundled Kafka connector.
    pub async fn instantiate(&mut self, tag: &str, allow: &Allowlist, limits: &Limits) -> Result<Instance> {
        self.kafka_runtime()?.instantiate(tag, allow, limits).await
    }
}

/// Opens the files of `p`, then instantiates and validates its connector ends; `broken` is
/// why one of its components did not load, if one did not.
async fn prepare_one(
    p: &Pipeline,
    runtimes: &HashMap<PathBuf, Runtime>,
    kafka: &Path,
    broken: Option<String>,
) -> Result<(SourceEnd, DestEnd), Unready> {
    let instance = async |component: &Option<Confined>, role: &str| {
        let path = component.as_ref().map_or(kafka, |c| c.path.as_path());
        let rt = runtimes
            .get(path)
            .ok_or_else(|| Unready::Runtime(anyhow!("component {} was not loaded", path.display())))?;
        let tag = format!("{}/{role}", p.id());
        rt.instantiate(&tag, &p.allow, &p.limits)
            .await
            .with_context(|| format!("{}: pipeline {}", p.at, p.id()))
            .map_err(Unready::Runtime)
    };
    // Files first: whether a path refuses the whole file must not depend on what a
    // tenant's component does before it.
    let cannot =
        |verb: &str, path: &Path| format!("{}: pipeline {}: cannot {verb} {}", p.at, p.id(), path.display());
    let source_file = match &p.source {
        Endpoint::File(f) => Some((
            f.open_read()
                .with_context(|| cannot("read", &f.path))
                .map_err(Unready::Config)?,
            f.path.display().to_string(),
        )),
        _ => None,
    };
    let dest_file = match &p.destination {
        Endpoint::File(f) => Some(
            f.open_append()
                .with_context(|| cannot("write", &f.path))
                .map_err(Unready::Config)?,
        ),
        _ => None,
    };
    if let Some(why) = broken {
        return Err(Unready::Runtime(anyhow!("{}: pipeline {}: {why}", p.at, p.id())));
    }
    // An end's connector instance, its settings validated; `None` for a file or stdio end.
    let connector = async |end: &Endpoint, role: Role| {
        let Endpoint::Connector {
            component,
            config,
            at,
        } = end
        else {
            return Ok(None);
        };
        let mut i = instance(component, role.name()).await?;
        i.validate(role, config)
            .await
            .with_context(|| format!("{at}: pipeline {} {}", p.id(), role.name()))
            .map_err(|e| Unready::of_instance(e, component))?;
        Ok(Some(i))
    };
    let lines_in = |reader: Box<dyn tokio::io::AsyncBufRead + Unpin + Send>, name: &str| {
        SourceEnd::Lines(LinesIn::new(reader, name, p.limits.memory / 4))
    };
    let source = match (connector(&p.source, Role::Source).await?, source_file) {
        (Some(i), _) => SourceEnd::Connector(Box::new(i.into_source())),
        (None, Some((file, name))) => {
            lines_in(Box::new(BufReader::new(tokio::fs::File::from_std(file))), &name)
        }
        (None, None) => lines_in(Box::new(BufReader::new(tokio::io::stdin())), "stdin"),
    };
    let destination = match (connector(&p.destination, Role::Destination).await?, dest_file) {
        (Some(i), _) => DestEnd::Connector(Box::new(i.into_destination())),
        (None, Some(file)) => DestEnd::Lines(Box::new(tokio::fs::File::from_std(file))),
        (None, None) => DestEnd::stdout(&p.destination),
    };
    Ok((source, destination))
}

/// A registry entry for each prepared pipeline, in order.
pub fn registry(prepared: &[Prepared]) -> Registry {
    prepared
        .iter()
        .map(|p| {
            let m = PipelineMetrics::new(&p.pipeline.tenant, &p.pipeline.name);
            if let Err((why, class)) = &p.ends {
                m.failed_with(*class);
                m.set_status(Status::Failed(format!("{why} ({class}; never started)")));
            }
            m
        })
        .collect()
}

/// Runs every pipeline concurrently until each finishes, fails or drains after `stop`
/// turns true; a pipeline still draining `drain` after that is dropped and marked failed.
/// Statuses end in `reg` (same order as `prepared`).
pub async fn run_all(
    prepared: Vec<Prepared>,
    reg: &Registry,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let mut tasks: Vec<_> = prepared
        .into_iter()
        .zip(reg.iter().cloned())
        .filter_map(|(p, m)| {
            let (source, destination) = p.ends.ok()?;
            let running = Running {
                pipeline: p.pipeline,
                source,
                destination,
                renewal: p.renewal,
            };
            let supervised = restart::supervise(running, m.clone(), stop.clone());
            Some((Some(tokio::spawn(supervised)), m))
        })
        .collect();
    let all = async {
        for (task, m) in &mut tasks {
            if let Some(t) = task.as_mut() {
                let ended = t.await;
                *task = None;
                noted(ended, m, drain);
            }
        }
    };
    let drain_deadline = async {
        // Without a stop (no signal handlers, say) there is no drain to bound.
        if stop.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        _ = all => return,
        _ = drain_deadline => {}
    }
    for (task, m) in &mut tasks {
        if let Some(t) = task.take() {
            t.abort();
            noted(t.await, m, drain);
        }
    }
}

/// Marks a pipeline whose task ended other than by itself: dropped at the drain
/// deadline, or ended abnormally.
fn noted(ended: Result<(), tokio::task::JoinError>, m: &PipelineMetrics, drain: Duration) {
    match ended {
        Ok(()) => {}
        Err(e) if e.is_cancelled() => m.set_status(Status::Failed(format!(
            "did not drain within {}; dropped (its uncommitted records come again on the next run)",
            connector_format::duration::show(drain)
        ))),
        Err(e) => m.set_status(Status::Failed(format!("the pipeline task ended abnormally: {e}"))),
    }
}

/// A prepared pipeline whose ends are ready.
pub(super) struct Running {
    pub(super) pipeline: Pipeline,
    source: SourceEnd,
    destination: DestEnd,
    renewal: Renewal,
}

/// Runs a pipeline once: opens, pumps, tears down. Ended well, its status says how;
/// failed, the error (the restart policy decides what follows).
pub(super) async fn drive(p: &mut Running, m: &PipelineMetrics, stop: watch::Receiver<bool>) -> Result<()> {
    let pumped = match open(p).await {
        Ok(()) => {
            m.set_status(Status::Running);
            pump(p, m, stop).await
        }
        Err(e) => Err(e),
    };
    let src_down = p.source.teardown().await.context("source teardown");
    let dst_down = p.destination.teardown().await.context("destination teardown");
    pumped.and(src_down).and(dst_down)?;
    match m.status() {
        Status::Draining => m.set_status(Status::Stopped),
        _ => m.set_status(Status::Finished),
    }
    Ok(())
}

/// A failure as the pipeline's status says it: the error, and what the sandbox refused
/// its instances (the address and the allow entry that would permit it).
pub(super) fn failure_text(p: &Running, e: &anyhow::Error) -> String {
    let denied = [p.source.instance(), p.destination.instance()]
        .into_iter()
        .flatten()
        .map(Instance::denied)
        .filter(|d| !d.is_empty())
        .map(|d| format!("; {d}"));
    format!("{}{}", shown_error(e), denied.collect::<String>())
}

/// New ends for a restart: connector instances made and validated again, files opened
/// again (a file source reads from its start).
pub(super) async fn renew(p: &mut Running) -> Result<()> {
    // The old instances go first, so a restart never holds two of a pipeline's slots in
    // the instance pool.
    p.source = SourceEnd::Lines(LinesIn::new(Box::new(tokio::io::empty()), "nothing", 0));
    p.destination = DestEnd::Lines(Box::new(tokio::io::sink()));
    let r = &p.renewal;
    let (source, destination) = prepare_one(&p.pipeline, &r.runtimes, &r.kafka, None)
        .await
        .map_err(|(Unready::Config(e) | Unready::Runtime(e))| e)?;
    (p.source, p.destination) = (source, destination);
    Ok(())
}

async fn open(p: &mut Running) -> Result<()> {
    if let (SourceEnd::Connector(s), Endpoint::Connector { config, .. }) = (&mut p.source, &p.pipeline.source)
    {
        s.open(config, p.pipeline.start.clone())
            .await
            .context("source open")?;
    }
    if let (DestEnd::Connector(d), Endpoint::Connector { config, .. }) =
        (&mut p.destination, &p.pipeline.destination)
    {
        d.open(config).await.context("destination open")?;
    }
    Ok(())
}

/// Moves batches until the source is exhausted, a stop condition holds, or a stop request.
/// While the destination writes a batch the source reads the next (they are different
/// instances, so the broker's time for one overlaps the other's work); acks still follow
/// their write, exactly the prefix written, batch after batch. A stop request is seen
/// between batches: the batch being written is acked, and one read ahead meanwhile is
/// dropped unacked (the source delivers it again after a restart).
async fn pump(p: &mut Running, m: &PipelineMetrics, stop: watch::Receiver<bool>) -> Result<()> {
    let cfg = &p.pipeline;
    let mut reads = Reads {
        last_record: Instant::now(),
        lag_asked: None,
    };
    let mut ahead: Option<RecordBatch> = None;
    loop {
        // A batch read ahead is not written: unacked, it comes again after a restart.
        if *stop.borrow() {
            m.set_status(Status::Draining);
            return Ok(());
        }
        let written = m.written.load(Relaxed);
        let left = |written: u64| {
            cfg.max_records
                .map_or(u64::MAX, |max| max.saturating_sub(written))
        };
        if ahead.is_none() && left(written) == 0 {
            return Ok(());
        }
        let records = match ahead.take() {
            Some(records) => records,
            None => match reads.next(&mut p.source, m, cfg, left(written)).await? {
                Read::Records(records) => records,
                Read::Nothing => continue,
                Read::End => return Ok(()),
            },
        };
        // What may be read while this batch is written: nothing when it reaches
        // `max-records` (a batch not all written fails the pipeline anyway).
        let after = left(written + records.len() as u64);
        let read_next = after > 0;
        let (written, next) = tokio::join!(p.destination.write(&records), async {
            match read_next {
                true => Some(reads.next(&mut p.source, m, cfg, after).await),
                false => None,
            }
        });
        ack_written(&mut p.source, m, &records, written).await?;
        match next.transpose()? {
            Some(Read::Records(next)) => ahead = Some(next),
            Some(Read::End) => return Ok(()),
            Some(Read::Nothing) | None => {}
        }
    }
}

/// What a read gave: records, nothing this time, or nothing ever again (the source is
/// exhausted, or idle for `idle-exit`).
enum Read {
    Records(RecordBatch),
    Nothing,
    End,
}

/// A pipeline's reading: when a record last came, when the lag was last asked.
struct Reads {
    last_record: Instant,
    lag_asked: Option<Instant>,
}

impl Reads {
    /// Reads up to `left` records (at most a batch) and asks the lag once a second.
    async fn next(
        &mut self,
        source: &mut SourceEnd,
        m: &PipelineMetrics,
        cfg: &Pipeline,
        left: u64,
    ) -> Result<Read> {
        let want = left.min(cfg.batch as u64);
        let asked = Instant::now();
        let records = source.read(want as u32, READ_WAIT_MS).await.inspect_err(|_| {
            m.errors.fetch_add(1, Relaxed);
        });
        let records = records.context("source read")?;
        // The lag is for people and scrapers: asking once a second is enough.
        if self.lag_asked.is_none_or(|t| t.elapsed() >= LAG_EVERY) {
            let lag = source.lag().await.context("source lag")?;
            m.lag.store(lag.map_or(-1, |l| l as i64), Relaxed);
            self.lag_asked = Some(Instant::now());
        }
        if records.is_empty() {
            let idle = cfg.idle_exit.is_some_and(|d| self.last_record.elapsed() >= d);
            if source.exhausted() || idle {
                return Ok(Read::End);
            }
            // A source that answers "nothing" at once would have the pump spin on the
            // host's CPU: it waits out the read's wait here instead.
            let waited = asked.elapsed();
            let wait = Duration::from_millis(READ_WAIT_MS.into());
            if waited < wait {
                tokio::time::sleep(wait - waited).await;
            }
            return Ok(Read::Nothing);
        }
        self.last_record = Instant::now();
        m.read.fetch_add(records.len() as u64, Relaxed);
        Ok(Read::Records(records))
    }
}

/// Checks a write's count and acks exactly the prefix written; an error when not all of
/// the batch was written.
async fn ack_written(
    source: &mut SourceEnd,
    m: &PipelineMetrics,
    records: &RecordBatch,
    written: Result<(usize, Option<anyhow::Error>)>,
) -> Result<()> {
    let written = written.inspect_err(|_| {
        m.errors.fetch_add(1, Relaxed);
    });
    let (n, failed) = written.context("destination write")?;
    // `n` is at most the batch, and `failed` says why when less (`DestEnd::write`).
    let total = records.len();
    m.written.fetch_add(n as u64, Relaxed);
    let done = || records.iter().take(n);
    m.bytes.fetch_add(done().map(|r| record_bytes(&r)).sum(), Relaxed);
    if n > 0 {
        source
            .ack(done().map(|r| r.position()))
            .await
            .context("source ack")?;
    }
    if let Some(e) = failed {
        m.errors.fetch_add(1, Relaxed);
        // The cause stays an error of its own: its class decides about restarts.
        return Err(e.context(format!(
            "destination wrote {n} of {total} records; the next failed"
        )));
    }
    Ok(())
}
