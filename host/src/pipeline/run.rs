//! Running pipelines: every end is instantiated and validated before any starts; then
//! each pipeline is one task that reads a batch, writes it, and acks exactly the prefix
//! the destination wrote, so the source commits only what really arrived (at-least-once
//! end to end). A failure stops its own pipeline only. A stop request drains: the batch
//! in hand is written and acked, then both ends tear down (the source commits there).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use tokio::io::BufReader;
use tokio::sync::watch;

use super::ends::{DestEnd, LinesIn, SourceEnd, record_bytes};
use super::{Endpoint, Pipeline};
use crate::engine::SharedEngine;
use crate::limits::Limits;
use crate::metrics::{PipelineMetrics, Registry, Status};
use crate::runtime::{Instance, Runtime};
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

/// A pipeline whose ends are instantiated and validated, not yet opened.
pub struct Prepared {
    pipeline: Pipeline,
    source: SourceEnd,
    destination: DestEnd,
}

impl Runner {
    pub fn new(engine: SharedEngine, cache_dir: PathBuf, kafka_component: PathBuf) -> Self {
        Runner {
            engine,
            cache_dir,
            kafka_component,
            runtimes: HashMap::new(),
        }
    }

    /// Prepares every pipeline, or reports every one that cannot start.
    pub async fn prepare(&mut self, pipelines: Vec<Pipeline>) -> Result<Vec<Prepared>> {
        let mut ready = Vec::new();
        let mut problems = Vec::new();
        for p in pipelines {
            match self.prepare_one(&p).await {
                Ok((source, destination)) => ready.push(Prepared {
                    pipeline: p,
                    source,
                    destination,
                }),
                Err(e) => problems.push(format!("{e:#}")),
            }
        }
        match problems.is_empty() {
            true => Ok(ready),
            false => Err(anyhow!("{}", problems.join("\n"))),
        }
    }

    async fn prepare_one(&mut self, p: &Pipeline) -> Result<(SourceEnd, DestEnd)> {
        let source = match &p.source {
            Endpoint::Connector {
                component,
                config,
                at,
            } => {
                let mut s = self.instance(p, component, "source").await?.into_source();
                s.validate(config)
                    .await
                    .with_context(|| format!("{at}: pipeline {} source", p.id()))?;
                SourceEnd::Connector(Box::new(s))
            }
            Endpoint::File(path) => {
                let f = tokio::fs::File::open(path).await.with_context(|| {
                    format!("{}: pipeline {}: cannot read {}", p.at, p.id(), path.display())
                })?;
                SourceEnd::Lines(LinesIn::new(
                    Box::new(BufReader::new(f)),
                    &path.display().to_string(),
                ))
            }
            Endpoint::Stdio => SourceEnd::Lines(LinesIn::new(
                Box::new(BufReader::new(tokio::io::stdin())),
                "stdin",
            )),
        };
        let destination = match &p.destination {
            Endpoint::Connector {
                component,
                config,
                at,
            } => {
                let mut d = self
                    .instance(p, component, "destination")
                    .await?
                    .into_destination();
                d.validate(config)
                    .await
                    .with_context(|| format!("{at}: pipeline {} destination", p.id()))?;
                DestEnd::Connector(Box::new(d))
            }
            Endpoint::File(path) => {
                let f = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                    .with_context(|| {
                        format!("{}: pipeline {}: cannot write {}", p.at, p.id(), path.display())
                    })?;
                DestEnd::Lines(Box::new(f))
            }
            Endpoint::Stdio => DestEnd::Lines(Box::new(tokio::io::stdout())),
        };
        Ok((source, destination))
    }

    async fn instance(&mut self, p: &Pipeline, component: &Option<PathBuf>, role: &str) -> Result<Instance> {
        let tag = format!("{}/{role}", p.id());
        self.instantiate(component.as_deref(), &tag, &p.allow, &p.limits)
            .await
            .with_context(|| format!("{}: pipeline {}", p.at, p.id()))
    }

    /// An instance of `component` (default: the Kafka connector), loaded once per path.
    pub async fn instantiate(
        &mut self,
        component: Option<&Path>,
        tag: &str,
        allow: &Allowlist,
        limits: &Limits,
    ) -> Result<Instance> {
        let path = component.unwrap_or(&self.kafka_component).to_path_buf();
        if !self.runtimes.contains_key(&path) {
            let rt = Runtime::load(&self.engine, &path, &self.cache_dir)?;
            self.runtimes.insert(path.clone(), rt);
        }
        self.runtimes[&path].instantiate(tag, allow, limits).await
    }
}

/// A registry entry for each prepared pipeline, in order.
pub fn registry(prepared: &[Prepared]) -> Registry {
    prepared
        .iter()
        .map(|p| PipelineMetrics::new(&p.pipeline.tenant, &p.pipeline.name))
        .collect()
}

/// Runs every pipeline concurrently until each finishes, fails or drains after `stop`
/// turns true. Statuses end in `reg` (same order as `prepared`).
pub async fn run_all(prepared: Vec<Prepared>, reg: &Registry, stop: watch::Receiver<bool>) {
    let tasks: Vec<_> = prepared
        .into_iter()
        .zip(reg.iter().cloned())
        .map(|(p, m)| tokio::spawn(drive(p, m, stop.clone())))
        .collect();
    for (task, m) in tasks.into_iter().zip(reg) {
        if let Err(e) = task.await {
            m.set_status(Status::Failed(format!("the pipeline task ended abnormally: {e}")));
        }
    }
}

async fn drive(mut p: Prepared, m: Arc<PipelineMetrics>, stop: watch::Receiver<bool>) {
    let pumped = match open(&mut p).await {
        Ok(()) => {
            m.set_status(Status::Running);
            pump(&mut p, &m, stop).await
        }
        Err(e) => Err(e),
    };
    let src_down = p.source.teardown().await.context("source teardown");
    let dst_down = p.destination.teardown().await.context("destination teardown");
    match pumped.and(src_down).and(dst_down) {
        Ok(()) if m.status() == Status::Draining => m.set_status(Status::Stopped),
        Ok(()) => m.set_status(Status::Finished),
        Err(e) => {
            let denied = [p.source.instance(), p.destination.instance()]
                .into_iter()
                .flatten()
                .map(Instance::denied)
                .filter(|d| !d.is_empty())
                .map(|d| format!("; {d}"));
            m.set_status(Status::Failed(format!("{e:#}{}", denied.collect::<String>())));
        }
    }
}

async fn open(p: &mut Prepared) -> Result<()> {
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
async fn pump(p: &mut Prepared, m: &PipelineMetrics, stop: watch::Receiver<bool>) -> Result<()> {
    let cfg = &p.pipeline;
    let mut last_record = Instant::now();
    let mut lag_asked: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            m.set_status(Status::Draining);
            return Ok(());
        }
        let written = m.written.load(Relaxed);
        if cfg.max_records.is_some_and(|max| written >= max) {
            return Ok(());
        }
        let want = cfg
            .max_records
            .map_or(cfg.batch as u64, |max| (max - written).min(cfg.batch as u64));
        let records = p.source.read(want as u32, READ_WAIT_MS).await.inspect_err(|_| {
            m.errors.fetch_add(1, Relaxed);
        });
        let records = records.context("source read")?;
        // The lag is for people and scrapers: asking once a second is enough.
        if lag_asked.is_none_or(|t| t.elapsed() >= LAG_EVERY) {
            let lag = p.source.lag().await.context("source lag")?;
            m.lag.store(lag.map_or(-1, |l| l as i64), Relaxed);
            lag_asked = Some(Instant::now());
        }
        if records.is_empty() {
            let idle = cfg.idle_exit.is_some_and(|d| last_record.elapsed() >= d);
            if p.source.exhausted() || idle {
                return Ok(());
            }
            continue;
        }
        last_record = Instant::now();
        m.read.fetch_add(records.len() as u64, Relaxed);
        let written = p.destination.write(&records).await.inspect_err(|_| {
            m.errors.fetch_add(1, Relaxed);
        });
        let (n, failed) = written.context("destination write")?;
        let total = records.len();
        m.written.fetch_add(n as u64, Relaxed);
        let done = || records.iter().take(n);
        m.bytes.fetch_add(done().map(|r| record_bytes(&r)).sum(), Relaxed);
        if n > 0 {
            p.source
                .ack(done().map(|r| r.position()))
                .await
                .context("source ack")?;
        }
        if let Some(e) = failed {
            m.errors.fetch_add(1, Relaxed);
            return Err(anyhow!(
                "destination wrote {n} of {total} records; the next failed: {e}"
            ));
        }
    }
}
