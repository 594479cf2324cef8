//! `just bench` (last part): what an idle connector instance costs the host. Starts 100
//! instances of the Kafka connector with a warm compile cache, each in its own store with
//! the default limits, and keeps them alive; prints the instantiation time per instance
//! (median, p99) and the process's resident memory per instance. The reference, measured in
//! the same run, is the same with wasmtime's on-demand allocator instead of the instance
//! pool. Targets (< 5 ms, < 10 MiB) are reported, never failing the run.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use connector_host::{Allowlist, EngineOptions, Instance, Limits, Runtime, SharedEngine};
use integration_tests::{component_cache, component_path};

const INSTANCES: usize = 100;
const TARGET_MS: f64 = 5.0;
const TARGET_MIB: f64 = 10.0;

struct Run {
    times: Vec<Duration>,
    rss_per_instance_kib: f64,
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // Each allocator in its own process would be cleaner for memory; one after the other in
    // one process is fair as long as the first run's instances are dropped first.
    let pooled = rt.block_on(measure(true))?;
    let on_demand = rt.block_on(measure(false))?;
    println!("{INSTANCES} idle instances of the connector (warm compile cache, default limits):");
    println!(
        "{:<26} {:>12} {:>12} {:>16}",
        "", "median", "p99", "RSS / instance"
    );
    for (name, r) in [
        ("ours (instance pool)", &pooled),
        ("reference (on demand)", &on_demand),
    ] {
        println!(
            "{name:<26} {:>9.3} ms {:>9.3} ms {:>12.2} MiB",
            ms(percentile(&r.times, 50)),
            ms(percentile(&r.times, 99)),
            r.rss_per_instance_kib / 1024.0
        );
    }
    let ratio = ms(percentile(&on_demand.times, 50)) / ms(percentile(&pooled.times, 50));
    println!("instantiation: the pool is {ratio:.2}x as fast as on-demand (median)");
    println!("targets (reported, never failing the run):");
    let median = ms(percentile(&pooled.times, 50));
    let mib = pooled.rss_per_instance_kib / 1024.0;
    println!(
        "  median instantiation < {TARGET_MS} ms: {median:.3} ms {}",
        verdict(median < TARGET_MS)
    );
    println!(
        "  memory per idle instance < {TARGET_MIB} MiB: {mib:.2} MiB {}",
        verdict(mib < TARGET_MIB)
    );
    Ok(())
}

async fn measure(pooling: bool) -> Result<Run> {
    let opts = EngineOptions {
        pooling,
        ..EngineOptions::default()
    };
    let engine = SharedEngine::new(&opts)?;
    let runtime = Runtime::load(&engine, &component_path(), &component_cache())?;
    let (allow, limits) = (Allowlist::default(), Limits::default());
    // Warm up: the compiled code mapped and the first slot touched.
    drop(runtime.instantiate("bench/warm", &allow, &limits).await?);
    let before = rss_kib()?;
    let mut alive: Vec<Instance> = Vec::with_capacity(INSTANCES);
    let mut times = Vec::with_capacity(INSTANCES);
    for i in 0..INSTANCES {
        let start = Instant::now();
        let inst = runtime
            .instantiate(&format!("bench/idle-{i}"), &allow, &limits)
            .await?;
        times.push(start.elapsed());
        alive.push(inst);
    }
    // Idle, but started: each guest has run once (its runtime initialised).
    for inst in &mut alive {
        inst.specify().await?;
    }
    let after = rss_kib()?;
    times.sort();
    Ok(Run {
        times,
        rss_per_instance_kib: after.saturating_sub(before) as f64 / INSTANCES as f64,
    })
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[((sorted.len() * p).div_ceil(100)).saturating_sub(1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn verdict(met: bool) -> &'static str {
    if met { "(met)" } else { "(MISSED)" }
}

/// VmRSS of this process, in KiB.
fn rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")
}
