//! The bench's smoke mode end to end (what CI runs of the bench): `bench --smoke` against its
//! own in-memory API server must finish, and write `REPORT.md`, `report.json` and
//! `failover.svg` with every part in them. Figures are not judged (smoke mode gives no
//! verdicts, and a test machine is no benchmark machine).
//!
//! It needs `leader-sidecar` and `newresource-controller` built next to it (`cargo test
//! --workspace` builds them; with `-p tests`, build them first); the bench finds them next to
//! its own executable, or at `$LEADER_SIDECAR_BIN` and `$NEWRESOURCE_CONTROLLER_BIN`.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

/// Upper bound of a smoke run (about 30 s in a debug build); a hung bench fails the test
/// instead of hanging it.
const TIMEOUT: Duration = Duration::from_secs(180);

/// Reads a pipe to its end in the background, so that a chatty child never blocks on it.
fn collect(
    pipe: Option<impl tokio::io::AsyncRead + Unpin + Send + 'static>,
) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let mut text = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut text).await;
        }
        String::from_utf8_lossy(&text).into_owned()
    })
}

/// Waits for `child`; on timeout sends SIGTERM, then kills it. `None` on timeout.
async fn wait_bounded(child: &mut Child) -> Option<std::process::ExitStatus> {
    if let Ok(status) = tokio::time::timeout(TIMEOUT, child.wait()).await {
        return Some(status.expect("wait for the bench"));
    }
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) has no memory effects; the pid is our own child's.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    if tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    None
}

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
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the bench");
    let stdout = collect(child.stdout.take());
    let stderr = collect(child.stderr.take());
    let status = wait_bounded(&mut child).await;
    let stdout = stdout.await.expect("stdout reader");
    let stderr = stderr.await.expect("stderr reader");
    let shown = format!("--- stdout\n{stdout}--- stderr\n{stderr}");
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
        "Lease API requests/min, 1 leader + 10 standby(s)",
        "startup",
        "sidecar peak RSS",
        "controller peak RSS",
        "failover timeline",
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

    assert!(svg.trim_start().starts_with("<svg"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
    assert!(svg.contains("failover "), "{svg}");
    assert!(!svg.contains("OVERLAP"), "{svg}");
}
