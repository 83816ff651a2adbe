//! The controller conformance suite (`testkit::conformance`) for the controllers of this
//! repository: `newresource-controller` (Rust), `examples/python-controller` (Python, run by
//! `python3` from `PATH`) and `examples/go-controller` (Go, built with `go` from `PATH`; skipped
//! without it unless `REQUIRE_EXAMPLE_TOOLCHAINS=1`). Any overlap of active windows fails a scenario. Run another
//! controller through the same scenarios with the `conformance` tool:
//! `cargo run -p tests --bin conformance -- <command line>`.
//!
//! Each test prints its summary line (`cargo test -p tests --test conformance -- --nocapture`).

use testkit::conformance::{self, ControllerCommand, MissingToolchain, Scenario};

async fn passes(
    controller: anyhow::Result<ControllerCommand>,
    scenario: Scenario,
) -> anyhow::Result<()> {
    let controller = match controller {
        Ok(c) => c,
        Err(e) if e.is::<MissingToolchain>() => {
            println!("skipped: {e}");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let summary = conformance::run(&controller, scenario).await?;
    println!("conformance: {summary}");
    Ok(())
}

macro_rules! scenarios {
    ($controller:ident) => {
        mod $controller {
            use super::*;

            #[tokio::test]
            async fn steady_state() -> anyhow::Result<()> {
                passes(ControllerCommand::$controller(), Scenario::SteadyState).await
            }

            #[tokio::test]
            async fn kill_9_of_the_leading_sidecar() -> anyhow::Result<()> {
                passes(
                    ControllerCommand::$controller(),
                    Scenario::KillLeadingSidecar,
                )
                .await
            }

            #[tokio::test]
            async fn sigterm_handover() -> anyhow::Result<()> {
                passes(ControllerCommand::$controller(), Scenario::SigtermHandover).await
            }

            #[tokio::test]
            async fn leading_sidecar_frozen_with_sigstop() -> anyhow::Result<()> {
                passes(ControllerCommand::$controller(), Scenario::FrozenSidecar).await
            }

            #[tokio::test]
            async fn api_partition_of_the_leading_sidecar() -> anyhow::Result<()> {
                passes(ControllerCommand::$controller(), Scenario::ApiPartition).await
            }
        }
    };
}

scenarios!(rust);
scenarios!(python);
scenarios!(go);

/// The Go client module's and the Go controller's own checks (`go vet`, `go test`), so that one
/// test command covers every language. Skipped without `go` on `PATH` unless
/// `REQUIRE_EXAMPLE_TOOLCHAINS=1`.
#[test]
fn go_client_and_controller_vet_and_unit_tests_pass() -> anyhow::Result<()> {
    if let Some(missing) = conformance::missing_toolchain("the Go unit tests", &["go"]) {
        println!("skipped: {missing}");
        return Ok(());
    }
    for dir in ["clients/go", "examples/go-controller"] {
        let dir = conformance::repo_root().join(dir);
        conformance::run_go(&dir, &["vet", "./..."])?;
        let out = conformance::run_go(&dir, &["test", "-count=1", "-v", "./..."])?;
        // `go test -v` prints one `--- PASS` per test; none would be a silent pass.
        let passed = out.lines().filter(|l| l.starts_with("--- PASS")).count();
        anyhow::ensure!(passed > 0, "no Go tests ran in {}:\n{out}", dir.display());
        anyhow::ensure!(
            !out.lines().any(|l| l.starts_with("--- FAIL")),
            "Go tests failed in {}:\n{out}",
            dir.display()
        );
        println!("go unit tests in {}: {passed} passed", dir.display());
    }
    Ok(())
}

/// Runs `python3 -m unittest discover -s tests` in `dir` (relative to the repository root)
/// and returns how many tests ran; an empty discovery is a failure, not a silent pass.
fn python_unit_tests(dir: &str) -> anyhow::Result<u32> {
    let out = std::process::Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "tests"])
        .current_dir(conformance::repo_root().join(dir))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        out.status.success(),
        "python3 -m unittest failed in {dir} ({}):\n{stderr}",
        out.status
    );
    // unittest reports "Ran N tests".
    let ran = stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("Ran ")?
                .split_whitespace()
                .next()?
                .parse::<u32>()
                .ok()
        })
        .unwrap_or(0);
    anyhow::ensure!(ran > 0, "no Python tests ran in {dir}:\n{stderr}");
    Ok(ran)
}

/// The Python controller's own unit tests (`python3 -m unittest`), so that one test command
/// covers both languages.
#[test]
fn python_controller_unit_tests_pass() -> anyhow::Result<()> {
    let ran = python_unit_tests("examples/python-controller")?;
    println!("python controller unit tests: {ran} passed");
    Ok(())
}

/// The unit tests of the Python client package the controller uses (`clients/python`).
#[test]
fn python_leader_client_unit_tests_pass() -> anyhow::Result<()> {
    let ran = python_unit_tests("clients/python")?;
    println!("python leader_client unit tests: {ran} passed");
    Ok(())
}

/// The suite catches what it is for: a controller that keeps acting after its sidecar died
/// (`tests/fixtures/sticky-controller.py` takes one grant and never looks again) fails with an
/// overlap.
#[tokio::test]
async fn a_controller_that_ignores_lost_leadership_fails_with_an_overlap() -> anyhow::Result<()> {
    let sticky = conformance::repo_root().join("tests/fixtures/sticky-controller.py");
    let controller =
        ControllerCommand::from_argv(vec!["python3".into(), sticky.display().to_string()])?;
    let Err(e) = conformance::run(&controller, Scenario::KillLeadingSidecar).await else {
        anyhow::bail!("the sticky controller passed the kill -9 scenario");
    };
    let message = format!("{e:#}");
    anyhow::ensure!(
        message.contains("active windows overlap"),
        "failed for another reason: {message}"
    );
    let cause = message.lines().next().unwrap_or_default();
    println!("conformance: the sticky controller fails as it should: {cause}");
    Ok(())
}
