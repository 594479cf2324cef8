//! `just soak`: 1,000,000 records Kafka to Kafka through `connector-host run` while the
//! network, the broker and the host fail (see `integration_tests::soak`), `--runs` times;
//! prints each run's findings and the medians, and exits 1 when a record was lost, a
//! duplicate is not explained by the host's kill, or a run stopped early.
//!
//! soak [--records N] [--cut-every DURATION] [--broker-restarts N] [--no-host-kill]
//!      [--limit DURATION] [--runs N]

use std::time::Duration;

use anyhow::{Context, Result, bail};
use connector_format::duration;
use integration_tests::soak::{self, Fault, Plan, Report};

fn main() -> Result<()> {
    let (plan, runs) = args()?;
    println!(
        "soak: {} records, a cut every {}, {} broker restarts (SIGKILL), {} host kill (SIGKILL), {runs} run(s), each within {}",
        plan.records,
        duration::show(plan.cut_every),
        plan.broker_restarts,
        u8::from(plan.host_kill),
        duration::show(plan.limit)
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut reports = Vec::new();
    for i in 1..=runs {
        let report = rt.block_on(soak::run(&plan));
        println!("run {i}:");
        print_report(&report);
        reports.push(report);
    }
    if runs > 1 {
        print_medians(&reports);
    }
    let bad = reports.iter().filter(|r| !sound(r)).count();
    if bad > 0 {
        bail!(
            "{bad} of {runs} run(s) lost records, repeated them through cuts or broker restarts, or stopped early"
        );
    }
    Ok(())
}

/// No record lost, no duplicate but those the host's kill explains, the run finished.
fn sound(r: &Report) -> bool {
    r.failure.is_none()
        && r.lost == 0
        && r.unexplained_duplicates() == 0
        && r.duplicates <= r.uncommitted_at_kill
}

fn print_report(r: &Report) {
    if let Some(why) = &r.failure {
        println!("  STOPPED EARLY (the destination was not counted): {why}");
    }
    println!(
        "  filled the source in {:.1} s; moved in {:.1} s ({:.0} records/s with the faults)",
        r.fill.as_secs_f64(),
        r.moved.as_secs_f64(),
        r.records as f64 / r.moved.as_secs_f64()
    );
    if r.failure.is_none() {
        println!("  lost: {}", r.lost);
        println!(
            "  duplicated: {} ({} redelivered after the host's kill, which had {} written and not yet committed; {} otherwise)",
            r.duplicates,
            r.redelivered_after_kill,
            r.uncommitted_at_kill,
            r.unexplained_duplicates()
        );
    }
    println!(
        "  host's peak RSS: {:.1} MiB",
        r.peak_rss as f64 / (1 << 20) as f64
    );
    for fault in [Fault::Cut, Fault::BrokerRestart, Fault::HostKill] {
        let times = r.recoveries_from(fault);
        if !times.is_empty() {
            let shown: Vec<String> = times.iter().map(|t| format!("{:.2}", t.as_secs_f64())).collect();
            println!(
                "  recovery after {fault:?} ({}x): median {:.2} s, max {:.2} s [{}]",
                times.len(),
                median(&times).as_secs_f64(),
                times.iter().max().copied().unwrap_or_default().as_secs_f64(),
                shown.join(" ")
            );
        }
    }
}

fn print_medians(reports: &[Report]) {
    let pick = |f: &dyn Fn(&Report) -> Duration| median(&reports.iter().map(f).collect::<Vec<_>>());
    println!("medians over {} runs:", reports.len());
    println!("  moved in {:.1} s", pick(&|r| r.moved).as_secs_f64());
    println!(
        "  peak RSS {:.1} MiB",
        pick(&|r| Duration::from_nanos(r.peak_rss)).as_nanos() as f64 / (1 << 20) as f64
    );
    for fault in [Fault::Cut, Fault::BrokerRestart, Fault::HostKill] {
        let all: Vec<Duration> = reports.iter().flat_map(|r| r.recoveries_from(fault)).collect();
        if !all.is_empty() {
            println!("  recovery after {fault:?}: {:.2} s", median(&all).as_secs_f64());
        }
    }
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

fn args() -> Result<(Plan, usize)> {
    let mut plan = Plan {
        records: 1_000_000,
        cut_every: Duration::from_secs(3),
        broker_restarts: 2,
        host_kill: true,
        limit: Duration::from_secs(40 * 60),
    };
    let mut runs = 1;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--no-host-kill" {
            plan.host_kill = false;
            continue;
        }
        let value = args.next().with_context(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .with_context(|| format!("{flag}: not a number: {value}"))
        };
        let time = || duration::parse(&value).map_err(|e| anyhow::anyhow!("{flag}: {e}"));
        match flag.as_str() {
            "--records" => plan.records = number()?,
            "--cut-every" => plan.cut_every = time()?,
            "--broker-restarts" => plan.broker_restarts = number()?,
            "--limit" => plan.limit = time()?,
            "--runs" => runs = number()?,
            _ => bail!("unknown flag {flag}; see the top of tests/src/bin/soak.rs"),
        }
    }
    Ok((plan, runs))
}
