//! `connector-host`: run the connector component from the command line.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use connector_host::runtime::ConfigPairs;
use connector_host::{Allowlist, Destination, Limits, Runtime, Source, opencdc_json, wit};

#[derive(Parser)]
#[command(
    version,
    about = "Runs connector components, each instance in its own sandbox"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Common {
    /// The connector component (.wasm). Default: the one built beside this binary.
    #[arg(long, env = "CONNECTOR_COMPONENT", global = true)]
    component: Option<PathBuf>,
    /// Where compiled components are cached.
    #[arg(long, env = "CONNECTOR_CACHE_DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// More hosts, IPs or CIDR blocks the connector may connect to (the hosts in
    /// `servers` are always allowed). Repeatable.
    #[arg(long = "allow", global = true)]
    allow: Vec<String>,
    /// Linear memory an instance may use, in MiB.
    #[arg(long, default_value_t = 256, global = true)]
    memory_mib: usize,
    /// Tag for the instance's log lines.
    #[arg(long, default_value = "cli", global = true)]
    tag: String,
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
    /// Read records from the source and print them as JSON Lines on stdout.
    Read {
        #[arg(short = 'c', long = "config", value_parser = parse_pair)]
        config: Vec<(String, String)>,
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
        /// Records per write call.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
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
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Role {
    Source,
    Destination,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 5s or 2m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?} is not a duration like 500ms, 5s or 2m")),
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    let c = &cli.common;
    let component = c.component.clone().unwrap_or_else(default_component);
    let cache_dir = c
        .cache_dir
        .clone()
        .unwrap_or_else(connector_host::cache::default_dir);
    let runtime = Runtime::new(&component, &cache_dir)?;
    let limits = Limits {
        memory: c.memory_mib << 20,
    };
    let instance = |config: &ConfigPairs| -> Result<Allowlist> {
        let mut allow = Allowlist::default();
        for entry in &c.allow {
            allow.allow(entry)?;
        }
        if let Some((_, servers)) = config.iter().find(|(k, _)| k == "servers") {
            allow.allow_servers(servers)?;
        }
        Ok(allow)
    };
    match &cli.command {
        Command::Spec => {
            let mut inst = runtime
                .instantiate(&c.tag, &Allowlist::default(), &limits)
                .await?;
            let spec = inst.specify().await?;
            let mut out = std::io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &spec_json(&spec))?;
            writeln!(out)?;
        }
        Command::Validate { role, config } => {
            let inst = runtime
                .instantiate(&c.tag, &Allowlist::default(), &limits)
                .await?;
            match role {
                Role::Source => inst.into_source().validate(config).await?,
                Role::Destination => inst.into_destination().validate(config).await?,
            }
            println!("ok");
        }
        Command::Read {
            config,
            max,
            idle_exit,
            position,
        } => {
            let mut src = runtime
                .instantiate(&c.tag, &instance(config)?, &limits)
                .await?
                .into_source();
            let position = position.as_deref().map(decode_position).transpose()?;
            src.open(config, position).await?;
            let result = read_loop(&mut src, *max, *idle_exit, async |recs| print_records(recs)).await;
            src.teardown().await?;
            result?;
        }
        Command::Write { config, batch } => {
            let mut dst = runtime
                .instantiate(&c.tag, &instance(config)?, &limits)
                .await?
                .into_destination();
            dst.open(config).await?;
            let result = write_stdin(&mut dst, *batch).await;
            dst.teardown().await?;
            eprintln!("wrote {} records", result?);
        }
        Command::Pipe {
            source,
            destination,
            max,
            idle_exit,
        } => {
            let mut src = runtime
                .instantiate(&format!("{}/source", c.tag), &instance(source)?, &limits)
                .await?
                .into_source();
            let mut dst = runtime
                .instantiate(
                    &format!("{}/destination", c.tag),
                    &instance(destination)?,
                    &limits,
                )
                .await?
                .into_destination();
            src.open(source, None).await?;
            dst.open(destination).await?;
            let mut moved = 0u64;
            let sink = async |recs: &[wit::Record]| {
                moved += write_all(&mut dst, recs).await?;
                Ok(())
            };
            let result = read_loop(&mut src, *max, *idle_exit, sink).await;
            src.teardown().await?;
            dst.teardown().await?;
            result?;
            eprintln!("moved {moved} records");
        }
    }
    Ok(())
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

const READ_BATCH: u32 = 1000;
const READ_WAIT_MS: u32 = 1000;

/// Reads until `max` records or `idle_exit` without any; hands each batch to `sink`
/// and acks it once the sink took it (for a pipe: once the destination wrote it, so
/// commits follow what was really written: at-least-once end to end).
async fn read_loop(
    src: &mut Source,
    max: Option<u64>,
    idle_exit: Option<Duration>,
    mut sink: impl AsyncFnMut(&[wit::Record]) -> Result<()>,
) -> Result<()> {
    let mut seen = 0u64;
    let mut last = Instant::now();
    while max.is_none_or(|m| seen < m) {
        let want = max.map_or(READ_BATCH as u64, |m| (m - seen).min(READ_BATCH as u64)) as u32;
        let records = src.read(want, READ_WAIT_MS).await?;
        if records.is_empty() {
            if idle_exit.is_some_and(|d| last.elapsed() >= d) {
                break;
            }
            continue;
        }
        last = Instant::now();
        seen += records.len() as u64;
        sink(&records).await?;
        let positions: Vec<Vec<u8>> = records.into_iter().map(|r| r.position).collect();
        src.ack(&positions).await?;
    }
    Ok(())
}

fn print_records(records: &[wit::Record]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for r in records {
        serde_json::to_writer(&mut out, &opencdc_json::to_json(r)?)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

async fn write_stdin(dst: &mut Destination, batch: usize) -> Result<u64> {
    let mut lines = std::io::stdin().lock().lines();
    let mut written = 0u64;
    let mut line_no = 0usize;
    loop {
        let mut records = Vec::with_capacity(batch);
        while records.len() < batch {
            let Some(line) = lines.next() else { break };
            line_no += 1;
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let value = serde_json::from_str(&line).with_context(|| format!("stdin line {line_no}"))?;
            records.push(opencdc_json::from_json(&value).with_context(|| format!("stdin line {line_no}"))?);
        }
        if records.is_empty() {
            return Ok(written);
        }
        written += write_all(dst, &records).await?;
    }
}

async fn write_all(dst: &mut Destination, records: &[wit::Record]) -> Result<u64> {
    let (n, err) = dst.write(records).await?;
    if let Some(e) = err {
        bail!("{n} of {} records written; the next failed: {e}", records.len());
    }
    Ok(n as u64)
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
