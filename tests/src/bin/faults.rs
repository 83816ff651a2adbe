//! `faults`: runs the fault suite (`testkit::fault_suite`) and prints one line per run; with
//! `--soak`, repeats the faults in random order until the time is up (the longer soak that
//! CI does not run).
//!
//! ```sh
//! cargo build -p leader-sidecar -p newresource-controller -p tests --bins
//! cargo run -p tests --bin faults                        # every fault once
//! cargo run -p tests --bin faults -- --fault slow-api,api-outage
//! cargo run -p tests --bin faults -- --soak 30m          # random order until 30 minutes pass
//! cargo run -p tests --bin faults -- --controller python --fault sigstop-controller
//! ```
//!
//! Exit status: 0 when every run passed, 1 otherwise (the soak stops at the first failure and
//! prints its logs), 2 for bad flags.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rand::seq::SliceRandom;
use testkit::bins::run_tool;
use testkit::cli;
use testkit::conformance::ControllerCommand;
use testkit::fault_suite::{self, Fault};
use tokio::time::Instant;

/// Runs the fault suite against leader-sidecar and newresource-controller.
#[derive(Debug, Parser)]
#[command(name = "faults")]
struct Args {
    /// Run only these faults (comma-separated or repeated).
    #[arg(long = "fault", env = "FAULTS", value_delimiter = ',', value_parser = parse_fault)]
    faults: Vec<Fault>,

    /// Repeat the faults in random order until this much time has passed (e.g. `30m`).
    #[arg(long, env = "FAULT_SOAK", value_parser = humantime::parse_duration)]
    soak: Option<Duration>,

    /// The controller: `rust` (this build's), `python` (examples/python-controller), or a
    /// command line (as the conformance suite takes it).
    #[arg(long, env = "FAULT_CONTROLLER", default_value = "rust")]
    controller: String,
}

fn parse_fault(name: &str) -> Result<Fault, String> {
    Fault::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
        format!(
            "unknown fault {name:?}; expected one of {}",
            names.join(", ")
        )
    })
}

fn main() -> ExitCode {
    let args: Args = cli::parse_or_exit();
    run_tool("faults", run(args))
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let controller = match args.controller.as_str() {
        "rust" => ControllerCommand::rust()?,
        "python" => ControllerCommand::python()?,
        line => ControllerCommand::parse(line)?,
    };
    let faults = if args.faults.is_empty() {
        Fault::ALL.to_vec()
    } else {
        args.faults
    };
    let started = Instant::now();
    let mut runs = 0;
    let mut failed = 0;
    loop {
        let mut round = faults.clone();
        if args.soak.is_some() {
            round.shuffle(&mut rand::rng());
        }
        for fault in round {
            runs += 1;
            match fault_suite::run_with(fault, controller.clone()).await {
                Ok(outcome) => println!("{outcome}"),
                Err(e) => {
                    failed += 1;
                    println!("{:<52} FAILED: {e:#}", fault.describe());
                    if args.soak.is_some() {
                        break;
                    }
                }
            }
        }
        let soak_over = args
            .soak
            .is_none_or(|soak| failed > 0 || started.elapsed() >= soak);
        if soak_over {
            break;
        }
    }
    println!(
        "{} of {runs} runs passed in {:.0} s",
        runs - failed,
        started.elapsed().as_secs_f64()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
