//! The local demo end to end: the `demo` binary with short election timings, against its own
//! in-memory API server, must finish cleanly, report both figures and no overlap, and write
//! the SVG and JSON. Durations are the demo's output, not asserted here.
//!
//! It needs `leader-sidecar` and `newresource-controller` built next to it (`cargo test
//! --workspace` builds them; with `-p tests`, build them first): the demo runs with
//! `--no-build`, because a cargo build from inside `cargo test` would wait for the build lock
//! this very test run holds.

use std::time::Duration;

use testkit::process::{Finished, run_bounded};
use tokio::process::Command;

/// Upper bound of a demo run (it takes about 10 s with a 3 s lease); a hung demo fails the
/// test instead of hanging it.
const TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test]
async fn demo_runs_end_to_end() {
    let dir = testkit::cluster::TempDir::new("demo-test").expect("temporary directory");
    let svg = dir.path().join("timeline.svg");
    let mut command = Command::new(env!("CARGO_BIN_EXE_demo"));
    command.args(["--fast", "--no-build", "--out"]).arg(&svg);
    let Finished {
        status,
        shown,
        stdout,
    } = run_bounded(command, TIMEOUT).await.expect("start the demo");
    let status =
        status.unwrap_or_else(|| panic!("the demo did not finish in {TIMEOUT:?}\n{shown}"));
    assert!(status.success(), "demo exited with {status}\n{shown}");
    for line in [
        "crash failover (kill -9 → standby active): ",
        "graceful handover (SIGTERM → standby active): ",
        "active windows overlapping: none",
    ] {
        assert!(stdout.contains(line), "no {line:?} in the output\n{shown}");
    }

    let picture = std::fs::read_to_string(&svg).expect("the SVG was written");
    assert!(picture.trim_start().starts_with("<svg"), "{picture}");

    let json = std::fs::read_to_string(dir.path().join("timeline.json"))
        .expect("timeline.json was written next to the SVG");
    let figures: serde_json::Value = serde_json::from_str(&json).expect("timeline.json is JSON");
    for field in ["failover_ms", "handover_ms"] {
        let value = figures[field]
            .as_f64()
            .unwrap_or_else(|| panic!("no number {field} in {json}"));
        assert!(value > 0.0, "{field} = {value}");
    }
}
