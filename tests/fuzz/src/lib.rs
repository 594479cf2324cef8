//! A fuzz driver for everything the connector reads from a broker: cases made by mutating
//! valid encodings (`targets`, `mutate`) with a seeded PRNG (`rng`), each decoded under
//! `catch_unwind` with the bytes it allocates counted (`kafka_connector::alloc_meter`, which
//! the binaries install as their global allocator). A case fails when its decode panics,
//! fails with anything but a typed `CorruptData` error, allocates more than its target's
//! bound, or (unmutated) does not decode.

pub mod abort;
pub mod mutate;
pub mod rng;
pub mod targets;

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use kafka_connector::alloc_meter::peak_during;
use kafka_connector::error::Error;

use rng::Rng;
use targets::{Kind, Target};

/// One generated case: which target, the version its input is decoded at, the input.
pub struct Case {
    pub target: usize,
    pub version: i16,
    pub input: Vec<u8>,
    pub mutated: bool,
}

/// Case `i` of the run seeded with `seed`, made again from those two alone.
pub fn case(targets: &[Target], seed: u64, i: u64) -> Case {
    let mut rng = Rng::for_case(seed, i);
    let target = rng.below(targets.len());
    let t = &targets[target];
    let (version, seed_input) = rng.pick(&t.seeds).clone();
    let (_, other) = rng.pick(&t.seeds);
    let mut input = seed_input;
    // Now and then a valid input as it is: it must decode.
    let mutated = !rng.one_in(32);
    if mutated {
        mutate::mutate(&mut rng, &mut input, other);
        if t.kind == Kind::Batch && rng.one_in(2) {
            mutate::reseal(&mut input);
        }
    }
    Case {
        target,
        version,
        input,
        mutated,
    }
}

/// A case that broke a rule, with what is needed to run it again.
#[derive(Debug)]
pub struct Failure {
    pub case: u64,
    pub target: &'static str,
    pub problem: String,
    pub input: Vec<u8>,
}

/// What running a case gave: its failure if any, and the bytes its decode allocated.
pub struct Outcome {
    pub problem: Option<String>,
    pub peak: usize,
    pub decoded: bool,
}

/// Decodes `case` and checks the rules.
pub fn check(targets: &[Target], case: &Case) -> Outcome {
    let t = &targets[case.target];
    let body = Bytes::copy_from_slice(&case.input);
    let (result, peak) = peak_during(|| catch_unwind(AssertUnwindSafe(|| (t.decode)(body, case.version))));
    let bound = t.bound(case.input.len());
    let problem = match &result {
        Err(panic) => Some(format!("panicked: {}", panic_message(panic.as_ref()))),
        Ok(Err(e)) if !matches!(e, Error::CorruptData(_)) => Some(format!("an untyped error: {e:?}")),
        Ok(Err(e)) if !case.mutated => Some(format!("a valid input did not decode: {e}")),
        _ if peak > bound => Some(format!(
            "allocated {peak} bytes for {} input bytes (bound {bound})",
            case.input.len()
        )),
        _ => None,
    };
    Outcome {
        problem,
        peak,
        decoded: matches!(result, Ok(Ok(()))),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// What a run found.
#[derive(Default)]
pub struct Report {
    pub cases: u64,
    /// Cases whose input decoded without an error.
    pub decoded: u64,
    pub failures: Vec<Failure>,
    /// The most bytes one decode allocated, and in which case and target.
    pub max_peak: usize,
    pub max_peak_case: (u64, &'static str),
    /// The highest share of its bound a decode allocated (at most 1 when nothing failed).
    pub max_of_bound: f64,
    /// The highest peak allocation per input byte, among messages of 256 bytes or more that
    /// decompress nothing (small inputs and codecs are dominated by fixed costs).
    pub max_per_byte: f64,
}

/// The most failures a run keeps (it counts on).
const KEPT: usize = 20;

/// Runs cases `0..cases` of the run seeded with `seed`.
pub fn run(targets: &[Target], seed: u64, cases: u64) -> Report {
    let mut report = Report::default();
    for i in 0..cases {
        abort::running(i);
        let case = case(targets, seed, i);
        let t = &targets[case.target];
        let out = check(targets, &case);
        report.cases += 1;
        report.decoded += out.decoded as u64;
        if out.peak > report.max_peak {
            report.max_peak = out.peak;
            report.max_peak_case = (i, t.name);
        }
        let bound = t.bound(case.input.len());
        report.max_of_bound = report.max_of_bound.max(out.peak as f64 / bound as f64);
        if t.fixed_allowance == 0 && case.input.len() >= 256 {
            report.max_per_byte = report.max_per_byte.max(out.peak as f64 / case.input.len() as f64);
        }
        if let Some(problem) = out.problem
            && report.failures.len() < KEPT
        {
            report.failures.push(Failure {
                case: i,
                target: t.name,
                problem,
                input: case.input,
            });
        }
    }
    report
}

/// `bytes` as hex, to paste into a test.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
