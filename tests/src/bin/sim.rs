//! `sim`: the deterministic simulator of the leader protocol (`testkit::sim`).
//!
//! ```sh
//! cargo run -p tests --bin sim -- --seed 42              # replay one seed: trace and verdict
//! cargo run -p tests --bin sim -- --seeds 100000         # explore seeds 0..100000
//! cargo run -p tests --bin sim -- --seeds 5000 --from 7000
//! cargo run --release -p tests --bin sim -- --soak 10m   # explore until 10 minutes pass
//! ```
//!
//! Exit status: 0 when every run passed, 1 when one failed (its seed and the command to replay
//! it are printed), 2 for bad flags.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use testkit::cli;
use testkit::sim;

/// Simulates sidecars, controllers and the API server under faults, in virtual time.
#[derive(Debug, Parser)]
#[command(name = "sim")]
struct Args {
    /// Replay this seed and print its trace.
    #[arg(long, env = "SIM_SEED", conflicts_with_all = ["seeds", "soak", "from"])]
    seed: Option<u64>,

    /// Explore this many seeds [default: 1000].
    #[arg(long, env = "SIM_SEEDS", conflicts_with = "soak")]
    seeds: Option<u64>,

    /// First seed to explore.
    #[arg(long, env = "SIM_FROM", default_value_t = 0)]
    from: u64,

    /// Explore consecutive seeds until this much time has passed (e.g. `10m`).
    #[arg(long, env = "SIM_SOAK", value_parser = humantime::parse_duration)]
    soak: Option<Duration>,

    /// Threads [default: one per core].
    #[arg(long, env = "SIM_THREADS", value_parser = clap::value_parser!(u64).range(1..=1024))]
    threads: Option<u64>,
}

fn main() -> ExitCode {
    let args: Args = cli::parse_or_exit();
    if let Some(seed) = args.seed {
        let report = sim::run(seed, true);
        let mut out = std::io::stdout().lock();
        let mut text = report.trace.join("\n");
        text.push('\n');
        if let Err(v) = &report.verdict {
            text.push_str(&format!("seed {seed} ({} pods) failed: {v}\n", report.pods));
        }
        // A closed pipe (`| head`) is not an error worth a panic.
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
        return match report.verdict {
            Ok(_) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    let threads = args
        .threads
        .map_or_else(sim::default_threads, |t| t as usize);
    let started = Instant::now();
    let (range, stop): (_, Box<dyn Fn() -> bool + Sync>) = match args.soak {
        Some(limit) => (
            args.from..u64::MAX,
            Box::new(move || started.elapsed() >= limit),
        ),
        None => {
            let count = args.seeds.unwrap_or(1000);
            (
                args.from..args.from.saturating_add(count),
                Box::new(|| false),
            )
        }
    };
    let summary = sim::explore(range, threads, &*stop);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} seeds from {} in {secs:.1} s on {threads} threads ({:.0} seeds/s); {} failed; \
         slowest recovery after the faults: {:.3} s",
        summary.runs,
        args.from,
        summary.runs as f64 / secs.max(1e-9),
        summary.failures.len(),
        summary.max_recovery as f64 / 1e9
    );
    if !summary.failures.is_empty() {
        print!(
            "failures by kind: {}\n{}",
            summary.kinds(),
            summary.examples(5)
        );
    }
    if summary.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
