//! `just fuzz`: runs the fuzz driver. `--cases N` (default 1,000,000), `--seed S` (default
//! from the clock; printed either way), `--case I` to run one case of a seed again and
//! show its input.

use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use connector_fuzz::{case, check, hex, run, targets};
use kafka_connector::alloc_meter::Meter;

#[global_allocator]
static METER: Meter = Meter;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| {
                v.replace('_', "")
                    .parse::<u64>()
                    .unwrap_or_else(|_| panic!("{name} takes a number"))
            })
    };
    let seed = arg("--seed").unwrap_or_else(|| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        now.as_nanos() as u64
    });
    connector_fuzz::abort::install(seed);
    let targets = targets::all();
    if let Some(i) = arg("--case") {
        let c = case(&targets, seed, i);
        let out = check(&targets, &c);
        println!(
            "seed {seed} case {i}: {} v{} ({} bytes, {} allocated): {}\n{}",
            targets[c.target].name,
            c.version,
            c.input.len(),
            out.peak,
            out.problem.as_deref().unwrap_or("ok"),
            hex(&c.input)
        );
        return if out.problem.is_some() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let cases = arg("--cases").unwrap_or(1_000_000);
    let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
    println!(
        "fuzz: seed {seed}, {cases} cases over {} targets: {}",
        names.len(),
        names.join(", ")
    );
    let start = Instant::now();
    let report = run(&targets, seed, cases);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "fuzz: {} cases in {secs:.1} s ({:.0} cases/s), seed {seed}; {} decoded, the rest refused as corrupt data",
        report.cases,
        report.cases as f64 / secs,
        report.decoded
    );
    println!(
        "fuzz: peak allocation of one decode {} bytes (case {}, {}); at most {:.1} bytes per input byte (messages of 256 bytes or more, no codec); bound {} per byte + {} MiB (+ {} MiB where batches decompress), {:.0}% of it at most",
        report.max_peak,
        report.max_peak_case.0,
        report.max_peak_case.1,
        report.max_per_byte,
        targets::PER_INPUT_BYTE,
        targets::FIXED >> 20,
        targets::all()
            .iter()
            .map(|t| t.fixed_allowance)
            .max()
            .unwrap_or(0)
            >> 20,
        report.max_of_bound * 100.0
    );
    for f in &report.failures {
        println!(
            "FAILED seed {seed} case {} ({}): {}\n  rerun: just fuzz --seed {seed} --case {}\n  input: {}",
            f.case,
            f.target,
            f.problem,
            f.case,
            hex(&f.input)
        );
    }
    if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
