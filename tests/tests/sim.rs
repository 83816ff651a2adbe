//! The deterministic simulator (`testkit::sim`, issue #15): explores 20 000 seeds, each a run
//! of 3–5 pods (the real elector, grant book and gate) against the model API server under
//! faults, and fails on any broken invariant with the seeds and the command to replay them
//! (`cargo run -p tests --bin sim -- --seed N`). Prints the seeds per second
//! (`cargo test -p tests --test sim -- --nocapture`).

use std::time::Instant;

use testkit::sim;

const SEEDS: u64 = 20_000;

#[test]
fn every_seed_keeps_the_invariants() {
    let threads = sim::default_threads();
    let started = Instant::now();
    let summary = sim::explore(0..SEEDS, threads, &|| false);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sim: {} seeds in {secs:.1} s on {threads} threads ({:.0} seeds/s), {} failed; slowest \
         recovery after the faults: {:.3} s",
        summary.runs,
        summary.runs as f64 / secs.max(1e-9),
        summary.failures.len(),
        summary.max_recovery as f64 / 1e9
    );
    assert_eq!(summary.runs, SEEDS);
    assert!(
        summary.failures.is_empty(),
        "{} of {SEEDS} seeds failed ({}):\n{}",
        summary.failures.len(),
        summary.kinds(),
        summary.examples(3)
    );
}

#[test]
fn a_seed_replays_byte_for_byte() {
    let a = sim::run(7, true);
    let b = sim::run(7, true);
    assert!(a.trace.len() > 100, "a trace of {} lines", a.trace.len());
    assert_eq!(a.trace, b.trace);
    assert_eq!(a.verdict.is_ok(), b.verdict.is_ok());
}
