//! The local demo end to end: the `demo` binary with short election timings, against its own
//! in-memory API server, must finish cleanly, report both figures and no overlap, and write
//! the SVG and JSON. Durations are the demo's output, not asserted here.
//!
//! It needs `leader-sidecar` and `newresource-controller` built next to it (`cargo test
//! --workspace` builds them; with `-p tests`, build them first): the demo runs with
//! `--no-build`, because a cargo build from inside `cargo test` would wait for the build lock
//! this very test run holds.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

/// Upper bound of a demo run (it takes about 10 s with a 3 s lease); a hung demo fails the
/// test instead of hanging it.
const TIMEOUT: Duration = Duration::from_secs(120);

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

/// Waits for `child`; on timeout sends SIGTERM (the demo then drops its pods, killing their
/// processes, which a SIGKILL of the demo would leave running), and kills it if that is not
/// enough. Returns the exit status, or `None` on timeout.
async fn wait_bounded(child: &mut Child) -> Option<std::process::ExitStatus> {
    if let Ok(status) = tokio::time::timeout(TIMEOUT, child.wait()).await {
        return Some(status.expect("wait for the demo"));
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
async fn demo_runs_end_to_end() {
    let dir = testkit::cluster::TempDir::new("demo-test").expect("temporary directory");
    let svg = dir.path().join("timeline.svg");
    let mut child = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(["--fast", "--no-build", "--out"])
        .arg(&svg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the demo");
    let stdout = collect(child.stdout.take());
    let stderr = collect(child.stderr.take());
    let status = wait_bounded(&mut child).await;
    let stdout = stdout.await.expect("stdout reader");
    let stderr = stderr.await.expect("stderr reader");
    let shown = format!("--- stdout\n{stdout}--- stderr\n{stderr}");

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
