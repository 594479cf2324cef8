//! The fuzz driver's bounded run, part of `just test`: 20,000 cases of a fixed seed.

use connector_fuzz::{hex, run, targets};
use kafka_connector::alloc_meter::Meter;

#[global_allocator]
static METER: Meter = Meter;

#[test]
fn twenty_thousand_mutated_responses_and_batches_decode_or_fail_cleanly() {
    let seed = 0x5eed_2026;
    let targets = targets::all();
    let report = run(&targets, seed, 20_000);
    let failures: Vec<String> = report
        .failures
        .iter()
        .map(|f| {
            format!(
                "seed {seed} case {} ({}): {}\n  {}",
                f.case,
                f.target,
                f.problem,
                hex(&f.input)
            )
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(report.decoded > 0, "no case decoded: the seeds are not valid");
}

#[test]
fn every_target_has_seeds_that_decode() {
    for t in targets::all() {
        assert!(!t.seeds.is_empty(), "{}", t.name);
        for (v, seed) in &t.seeds {
            (t.decode)(bytes::Bytes::copy_from_slice(seed), *v)
                .unwrap_or_else(|e| panic!("{} v{v}: {e}", t.name));
        }
    }
}
