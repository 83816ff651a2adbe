//! The bench's smoke mode end to end (what CI runs of the bench): `bench --smoke` against its
//! own in-memory API server must finish, and write `REPORT.md`, `report.json` and
//! `failover.svg` with every part in them. Figures are not judged (smoke mode gives no
//! verdicts, and a test machine is no benchmark machine).
//!
//! It needs `leader-sidecar` and `newresource-controller` built next to it (`cargo test
//! --workspace` builds them; with `-p tests`, build them first); the bench finds them next to
//! its own executable, or at `$LEADER_SIDECAR_BIN` and `$NEWRESOURCE_CONTROLLER_BIN`.

use std::time::Duration;

use testkit::process::{Finished, run_bounded};
use tokio::process::Command;

/// Upper bound of a smoke run (about 40 s in a debug build); a hung bench fails the test
/// instead of hanging it.
const TIMEOUT: Duration = Duration::from_secs(180);

#[tokio::test]
async fn bench_smoke_writes_the_report_the_json_and_the_timeline() {
    let dir = testkit::cluster::TempDir::new("bench-smoke").expect("temporary directory");
    let out = dir.path().join("out");
    let mut command = Command::new(env!("CARGO_BIN_EXE_bench"));
    command.arg("--smoke").arg("--out").arg(&out);
    // Settings of the environment must not change what runs: all parts, in memory.
    for var in [
        "BENCH_QUICK",
        "BENCH_SMOKE",
        "BENCH_RUNS",
        "BENCH_ONLY",
        "BENCH_OUT",
        "BENCH_CONNECTIONS",
        "E2E_USE_KUBECONFIG",
    ] {
        command.env_remove(var);
    }
    let Finished {
        status,
        shown,
        stdout: _,
    } = run_bounded(command, TIMEOUT)
        .await
        .expect("start the bench");
    let status =
        status.unwrap_or_else(|| panic!("the bench did not finish in {TIMEOUT:?}\n{shown}"));
    assert!(status.success(), "bench exited with {status}\n{shown}");

    let read = |name: &str| {
        std::fs::read_to_string(out.join(name))
            .unwrap_or_else(|e| panic!("{name} was not written: {e}\n{shown}"))
    };
    let report = read("REPORT.md");
    let json = read("report.json");
    let svg = read("failover.svg");

    assert!(report.contains("![one failover](failover.svg)"), "{report}");
    assert!(report.contains("- mode: smoke"), "{report}");

    let parsed: serde_json::Value = serde_json::from_str(&json).expect("report.json is JSON");
    assert_eq!(parsed["mode"], "smoke", "{json}");
    let metrics: Vec<&str> = parsed["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {json}"))
        .iter()
        .filter_map(|r| r["metric"].as_str())
        .collect();
    for prefix in [
        "crash failover",
        "graceful handover",
        "/leader throughput",
        "/leader latency",
        "bare hyper baseline",
        "/leader ÷ baseline throughput, in-repo generator",
        "Lease API requests/min, 1 leader + 10 standby(s)",
        "startup",
        "sidecar peak RSS",
        "controller peak RSS",
        "failover timeline",
        "takeover with 50 NewResources",
        "takeover: cold start",
        "takeover: new leader controller peak RSS",
    ] {
        assert!(
            metrics.iter().any(|m| m.starts_with(prefix)),
            "no result {prefix:?} in {metrics:#?}"
        );
    }
    let details = &parsed["details"];
    for key in [
        "crash_failover",
        "graceful_handover",
        "leader_load",
        "lease_requests",
        "startup",
        "peak_rss_kb_by_phase",
        "controller_peak_rss",
        "failover_timeline",
        "takeover",
    ] {
        assert!(details.get(key).is_some(), "no details.{key} in {json}");
    }
    let positive = |v: &serde_json::Value, what: &str| {
        let x = v
            .as_f64()
            .unwrap_or_else(|| panic!("no number {what} in {json}"));
        assert!(x > 0.0, "{what} = {x}");
    };
    let rss = &details["controller_peak_rss"];
    for key in ["peak_rss_kb", "peak_rss_kb_leading", "peak_rss_kb_standby"] {
        positive(&rss[key], &format!("controller_peak_rss.{key}"));
    }
    let failover = &details["failover_timeline"];
    assert_eq!(failover["svg"], "failover.svg", "{json}");
    assert_eq!(failover["overlaps"], 0, "{json}");
    positive(&failover["kill_to_active_ms"], "kill_to_active_ms");
    assert_eq!(
        failover["timeline"]["lanes"].as_array().map(Vec::len),
        Some(2),
        "{json}"
    );

    let takeover = &details["takeover"];
    positive(
        &takeover["new_leader_peak_rss_kb"],
        "takeover.new_leader_peak_rss_kb",
    );
    positive(
        &takeover["window_open_to_all_reconciled_ms"]["median"],
        "takeover.window_open_to_all_reconciled_ms",
    );
    assert!(
        details["leader_load"]["ratio_to_baseline"]["median"].as_f64() > Some(0.0),
        "{json}"
    );

    assert!(svg.trim_start().starts_with("<svg"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
    assert!(svg.contains("failover "), "{svg}");
    assert!(!svg.contains("OVERLAP"), "{svg}");
}
