//! `connector-host`: run the connector component from the command line.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use connector_format::duration::{parse as parse_duration, parse_positive};
use connector_host::metrics::Status;
use connector_host::pipeline::run::{self, Runner};
use connector_host::pipeline::{self, DEFAULT_BATCH, Endpoint, MAX_BATCH, Pipeline};
use connector_host::runtime::{ConfigPairs, Role};
use connector_host::{Allowlist, EngineOptions, Limits, SharedEngine, progress, wit};
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    version,
    about = "Runs connector components, each instance in its own sandbox, many tenants per process"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Common {
    /// The Kafka connector component (.wasm). Default: the one built beside this binary.
    #[arg(long, env = "CONNECTOR_COMPONENT", global = true)]
    component: Option<PathBuf>,
    /// Where compiled components are cached.
    #[arg(long, env = "CONNECTOR_CACHE_DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// More endpoints the connector may connect to, `host:port` or `host:low-high`, where
    /// host is an IP address, a network (`10.0.0.0/8`), a name or `*.domain` (the
    /// `servers` host:port pairs are always allowed). Repeatable. Not for `run`: pipeline
    /// files say it.
    #[arg(long = "allow", global = true)]
    allow: Vec<String>,
    /// Linear memory an instance may use, in MiB (1 to 4096). Not for `run`.
    #[arg(long = "memory-mib", value_name = "MIB", default_value = "256", value_parser = parse_memory_mib, global = true)]
    memory: usize,
    /// How often progress is logged when stderr is not a terminal (on a terminal it is
    /// redrawn every second).
    #[arg(long, default_value = "10s", value_parser = parse_positive, global = true)]
    progress_every: Duration,
}

#[derive(Subcommand)]
enum Command {
    /// Print the connector's specification as JSON.
    Spec,
    /// Check a configuration without connecting.
    Validate {
        #[arg(value_enum)]
        role: Role,
        /// Configuration, `key=value`. Repeatable.
        #[arg(short = 'c', long = "config", value_parser = parse_pair)]
        config: Vec<(String, String)>,
    },
    /// Read records from the source and print them on stdout (OpenCDC JSON Lines, or text
    /// for people with `--format text`).
    Read {
        #[arg(short = 'c', long = "config", value_parser = parse_pair)]
        config: Vec<(String, String)>,
        /// How records are printed. `json`: OpenCDC JSON Lines, raw data and positions as
        /// base64, what `write` reads. `text`: one line per record for people, like kcat's
        /// `-f`: `TOPIC [PARTITION] @ OFFSET`, then, each after a tab, `key: KEY` and
        /// `value: VALUE` (left out when null) and `header NAME: VALUE` per header. Data is
        /// shown as UTF-8 where it is valid; `\\` is a backslash, `\n`, `\r` and `\t` are
        /// those bytes, `\xNN` is any other control byte, a byte that is not UTF-8 or a `:`
        /// in a header name, `\u{N}` an invisible formatting character (such as a bidi
        /// override). So each record is exactly one line and a tab always starts a field.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        /// Stop after this many records.
        #[arg(long)]
        max: Option<u64>,
        /// Stop when no record arrived for this long (e.g. 5s). Default: never.
        #[arg(long, value_parser = parse_duration)]
        idle_exit: Option<Duration>,
        /// Start after this position (base64, as printed with a record).
        #[arg(long)]
        position: Option<String>,
    },
    /// Write JSON Lines records from stdin through the destination.
    Write {
        #[arg(short = 'c', long = "config", value_parser = parse_pair)]
        config: Vec<(String, String)>,
        /// Records per write call (1 to 100000).
        #[arg(long, default_value_t = DEFAULT_BATCH, value_parser = clap::value_parser!(u32).range(1..=MAX_BATCH as i64))]
        batch: u32,
    },
    /// Move records from a source to a destination.
    Pipe {
        /// Source configuration, `key=value`. Repeatable.
        #[arg(short = 's', long = "source", value_parser = parse_pair)]
        source: Vec<(String, String)>,
        /// Destination configuration, `key=value`. Repeatable.
        #[arg(short = 'd', long = "destination", value_parser = parse_pair)]
        destination: Vec<(String, String)>,
        #[arg(long)]
        max: Option<u64>,
        #[arg(long, value_parser = parse_duration)]
        idle_exit: Option<Duration>,
    },
    /// Run the pipelines of a pipeline file (TOML) until they finish or a SIGINT/SIGTERM
    /// drains them. Exits non-zero when any pipeline failed.
    Run {
        file: PathBuf,
        /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464).
        #[arg(long)]
        metrics: Option<SocketAddr>,
        /// Instances that may be alive at once (the size of the instance pool; at least 1).
        #[arg(long, default_value_t = EngineOptions::default().max_instances,
              value_parser = clap::value_parser!(u32).range(1..))]
        max_instances: u32,
        /// The folder the file's paths are relative to and confined in. Default: the
        /// file's folder.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Confine each tenant's paths to a folder of its own, `<folder>/<tenant>/`, instead
        /// of the folder all share (so no tenant reaches another's files).
        #[arg(long)]
        tenant_folders: bool,
        /// After a SIGINT/SIGTERM, how long pipelines may take to drain; those still
        /// draining then are dropped (named in the summary) and the host exits.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        drain_timeout: Duration,
    },
}

/// How `read` prints records.
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Format {
    Json,
    Text,
}

/// `--memory-mib`: bytes, within what an instance can be given.
fn parse_memory_mib(s: &str) -> Result<usize, String> {
    let mib: u64 = s.parse().map_err(|_| format!("{s:?} is not a number of MiB"))?;
    connector_host::limits::memory_limit(u128::from(mib) << 20)
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => {
            progress::flush(Duration::from_secs(5));
            std::process::exit(code)
        }
        Err(e) => {
            progress::log(&format!("error: {e:#}"));
            progress::flush(Duration::from_secs(5));
            std::process::exit(1);
        }
    }
}

/// Runs the command; the process's exit code.
async fn run(cli: Cli) -> Result<i32> {
    let c = &cli.common;
    let component = c.component.clone().unwrap_or_else(default_component);
    let cache_dir = c
        .cache_dir
        .clone()
        .or_else(connector_host::cache::default_dir)
        .unwrap_or_default();
    let mut opts = EngineOptions::default();
    if let Command::Run { max_instances, .. } = &cli.command {
        opts.max_instances = *max_instances;
    }
    connector_host::sandbox::sockets::init_budget();
    let runner = Runner::new(SharedEngine::new(&opts)?, cache_dir, component);
    let pipeline = match &cli.command {
        Command::Spec | Command::Validate { .. } => return describe(&cli, runner).await.map(|()| 0),
        Command::Run {
            file,
            metrics,
            data_dir,
            drain_timeout,
            tenant_folders,
            ..
        } => {
            let pipelines = pipeline::file::load_in(file, data_dir.as_deref(), *tenant_folders)?;
            return run_pipelines(pipelines, *metrics, *drain_timeout, runner, c).await;
        }
        Command::Read {
            config,
            format,
            max,
            idle_exit,
            position,
        } => {
            let out = match format {
                Format::Json => Endpoint::Stdio,
                Format::Text => Endpoint::Text,
            };
            let mut p = cli_pipeline(c, "read", connector(config), out)?;
            (p.max_records, p.idle_exit) = (*max, *idle_exit);
            p.start = position.as_deref().map(decode_position).transpose()?;
            p
        }
        Command::Write { config, batch } => {
            let mut p = cli_pipeline(c, "write", Endpoint::Stdio, connector(config))?;
            p.batch = *batch;
            p
        }
        Command::Pipe {
            source,
            destination,
            max,
            idle_exit,
        } => {
            let mut p = cli_pipeline(c, "pipe", connector(source), connector(destination))?;
            (p.max_records, p.idle_exit) = (*max, *idle_exit);
            p
        }
    };
    run_pipelines(vec![pipeline], None, ONE_OFF_DRAIN, runner, c).await
}

/// How long a one-off command (`read`, `write`, `pipe`) may take to drain on a signal.
const ONE_OFF_DRAIN: Duration = Duration::from_secs(30);

/// `spec` and `validate`: one instance, no I/O.
async fn describe(cli: &Cli, mut runner: Runner) -> Result<()> {
    let limits = Limits::default();
    let inst = runner
        .instantiate("cli/spec", &Allowlist::default(), &limits)
        .await?;
    match &cli.command {
        Command::Validate { role, config } => {
            let mut inst = inst;
            inst.validate(*role, config).await?;
            println!("ok");
        }
        _ => {
            let mut inst = inst;
            let spec = inst.specify().await?;
            let mut out = std::io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &spec_json(&spec))?;
            writeln!(out)?;
        }
    }
    Ok(())
}

fn connector(config: &ConfigPairs) -> Endpoint {
    Endpoint::Connector {
        component: None,
        config: config.clone(),
        at: "command line".into(),
    }
}

/// A one-off pipeline of tenant `cli`, allowed the `servers` hosts and `--allow`.
fn cli_pipeline(c: &Common, name: &str, source: Endpoint, destination: Endpoint) -> Result<Pipeline> {
    let mut allow = Allowlist::default();
    for entry in &c.allow {
        allow.allow(entry)?;
    }
    for servers in [&source, &destination].into_iter().filter_map(|e| e.servers()) {
        allow.allow_servers(servers)?;
    }
    Ok(Pipeline {
        tenant: "cli".into(),
        name: name.into(),
        at: "command line".into(),
        allow,
        limits: Limits {
            memory: c.memory,
            ..Limits::default()
        },
        max_records: None,
        idle_exit: None,
        batch: DEFAULT_BATCH,
        source,
        start: None,
        destination,
        restart: Default::default(),
    })
}

/// Prepares every pipeline (all errors before anything starts), runs them with progress
/// reporting until done or drained by a signal, then prints one summary line each.
async fn run_pipelines(
    pipelines: Vec<Pipeline>,
    metrics: Option<SocketAddr>,
    drain: Duration,
    mut runner: Runner,
    c: &Common,
) -> Result<i32> {
    warn_if_over_socket_budget(&pipelines);
    let prepared = runner.prepare(pipelines).await?;
    let reg = Arc::new(run::registry(&prepared));
    if let Some(addr) = metrics {
        let bound = connector_host::metrics::serve(addr, reg.clone()).await?;
        progress::log(&format!("metrics at http://{bound}/metrics"));
    }
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(stop_on_signals(stop_tx));
    progress::report(&reg, c.progress_every, run::run_all(prepared, &reg, stop, drain)).await;
    for m in reg.iter() {
        let (read, written, errors) = (
            m.read.load(Relaxed),
            m.written.load(Relaxed),
            m.errors.load(Relaxed),
        );
        let counts = format!("{read} read, {written} written, {errors} errors");
        match m.status() {
            Status::Failed(why) => {
                progress::log(&format!("pipeline {} failed ({counts}): {why}", m.id()));
            }
            s => progress::log(&format!("pipeline {} {} ({counts})", m.id(), s.word())),
        }
    }
    Ok(connector_host::metrics::exit_code(&reg))
}

/// The host's sockets are bounded per instance and in all; when the per-instance limits
/// (and the files the pipelines hold open) add up to more than the host's budget, one
/// tenant's sockets may crowd out another's.
fn warn_if_over_socket_budget(pipelines: &[Pipeline]) {
    let budget = connector_host::sandbox::sockets::budget();
    let files = |p: &Pipeline| {
        [&p.source, &p.destination]
            .iter()
            .filter(|e| matches!(e, Endpoint::File(_)))
            .count()
    };
    let wanted: usize = pipelines
        .iter()
        .map(|p| {
            p.limits
                .sockets
                .saturating_mul(p.components().count())
                .saturating_add(files(p))
        })
        .fold(0, usize::saturating_add);
    if wanted > budget {
        progress::log(&format!(
            "warning: the pipelines' socket limits and open files add up to {wanted}, more than the host's budget \
             of {budget} (its descriptor limit less a reserve): lower `limits.sockets` or raise `ulimit -n`"
        ));
    }
}

/// The first SIGINT or SIGTERM drains every pipeline; a second one exits at once.
async fn stop_on_signals(stop: watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        progress::log("warning: cannot listen for signals; stop with SIGKILL");
        return;
    };
    for n in 0.. {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if n > 0 {
            progress::log("second signal: exiting without draining");
            std::process::exit(130);
        }
        progress::log("stopping: draining every pipeline (signal again to exit at once)");
        let _ = stop.send(true);
    }
}

/// The component built beside this binary: `target/<profile>/connector-host` →
/// `target/wasm32-wasip2/release/kafka_connector.wasm`.
fn default_component() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let target = exe
        .parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    target.join("wasm32-wasip2/release/kafka_connector.wasm")
}

fn decode_position(b64: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .context("--position is not base64")
}

fn type_name(t: wit::ParameterType) -> &'static str {
    match t {
        wit::ParameterType::String => "string",
        wit::ParameterType::Int => "int",
        wit::ParameterType::Float => "float",
        wit::ParameterType::Bool => "bool",
        wit::ParameterType::Duration => "duration",
        wit::ParameterType::List => "list",
    }
}

fn spec_json(s: &wit::Specification) -> serde_json::Value {
    let params = |ps: &[wit::Parameter]| -> Vec<serde_json::Value> {
        ps.iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name,
                    "description": p.description,
                    "type": type_name(p.type_),
                    "default": p.default,
                    "required": p.required,
                    "allowed": p.allowed,
                    "sensitive": p.sensitive,
                })
            })
            .collect()
    };
    serde_json::json!({
        "name": s.name,
        "summary": s.summary,
        "description": s.description,
        "version": s.version,
        "author": s.author,
        "source": params(&s.source_params),
        "destination": params(&s.destination_params),
    })
}
