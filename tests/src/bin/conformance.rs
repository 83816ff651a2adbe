//! `conformance`: runs the controller conformance scenarios (`testkit::conformance`) against a
//! controller given as a command line, and prints one line per scenario.
//!
//! ```sh
//! cargo build -p leader-sidecar -p newresource-controller -p tests --bins
//! cargo run -p tests --bin conformance -- python3 examples/python-controller/controller.py
//! cargo run -p tests --bin conformance -- --scenario sigstop-sidecar ./my-controller
//! cargo run -p tests --bin conformance            # the Rust, the Python and the Go controller
//! ```
//!
//! The controller gets its settings from the environment (`LEADER_URL`, `WATCH_NAMESPACE`,
//! `KUBECONFIG`, `LOG_FORMAT=json`, `HEALTH_PROBE_BIND_ADDRESS`, `METRICS_BIND_ADDRESS`); see `docs/leader-api.md`,
//! "Conformance". Exit status: 0 when every scenario passed (or was skipped), 1 otherwise, 2 for
//! bad flags.

use std::process::ExitCode;

use clap::Parser;
use testkit::bins::run_tool;
use testkit::cli;
use testkit::conformance::{self, CONTROLLER_ENV, ControllerCommand, Scenario};

/// Runs the controller conformance scenarios against a controller command line.
#[derive(Debug, Parser)]
#[command(name = "conformance")]
struct Args {
    /// Run only this scenario (repeatable): steady-state, kill-9-sidecar, sigterm-handover,
    /// sigstop-sidecar, api-partition.
    #[arg(long = "scenario", env = "CONFORMANCE_SCENARIOS", value_delimiter = ',', value_parser = parse_scenario)]
    scenarios: Vec<Scenario>,

    /// The controller's command line [default: $CONFORMANCE_CONTROLLER, else the Rust, the
    /// Python and (with `go` on PATH) the Go controller of this repository].
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn parse_scenario(name: &str) -> Result<Scenario, String> {
    Scenario::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        format!(
            "unknown scenario {name:?}; expected one of {}",
            names.join(", ")
        )
    })
}

fn main() -> ExitCode {
    let args: Args = cli::parse_or_exit();
    run_tool("conformance", run(args))
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let controllers = if !args.command.is_empty() {
        vec![ControllerCommand::from_argv(args.command)?]
    } else if let Some(c) = ControllerCommand::from_env()? {
        vec![c]
    } else {
        let mut all = vec![ControllerCommand::rust()?, ControllerCommand::python()?];
        match ControllerCommand::go() {
            Ok(go) => all.push(go),
            Err(e) if e.is::<conformance::MissingToolchain>() => println!("# go: skipped: {e}"),
            Err(e) => return Err(e),
        }
        all
    };
    let scenarios = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios
    };
    let mut failed = 0;
    for controller in &controllers {
        println!("# {} ({controller})", controller.name);
        for &scenario in &scenarios {
            match conformance::run(controller, scenario).await {
                Ok(summary) => println!("{summary}"),
                Err(e) => {
                    failed += 1;
                    println!(
                        "{:<8} {:<38} FAILED: {e:#}",
                        controller.name,
                        scenario.describe()
                    );
                }
            }
        }
    }
    let total = controllers.len() * scenarios.len();
    println!(
        "{} of {total} passed (set {CONTROLLER_ENV} or pass a command to test another controller)",
        total - failed
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
