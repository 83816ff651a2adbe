//! One pod's wall clock is 60 s off (libfaketime, Debian package `faketime`).
//!
//! Only the sidecar runs with libfaketime preloaded (`LD_PRELOAD`, not the `faketime` command:
//! that one forks, and a SIGKILL would then kill it and leave the sidecar running): it is the one component that reads and writes wall
//! clock values (`renewTime`, `acquireTime`) in the Lease. The controller never uses the wall
//! clock for a decision, and its log timestamps are what the suite compares windows with, so it
//! keeps the machine's clock. The monotonic clock is left alone
//! (`FAKETIME_DONT_FAKE_MONOTONIC=1`), as a skewed node's is.
//!
//! A naive elector that compares `renewTime` with its own wall clock fails one way or the
//! other: with its clock ahead (or the holder's behind) it takes over a Lease that is being
//! renewed; with its clock behind (or the holder's ahead) it waits up to 60 s longer than the
//! lease before taking over a dead holder's Lease (a "stuck" Lease). Both directions are
//! exercised for each sign, so that the skewed pod is once the standby and once the holder.

use std::time::Duration;

use anyhow::Context;

use crate::sidecar::timestamp;
use crate::world::{PodOptions, World, pod_name};

use super::{LEASE, wait_renews};

/// The skew applied.
const SKEW: Duration = Duration::from_secs(60);
/// How long a takeover of a dead holder's Lease may take here: far more than the 3 s lease
/// (so a slow machine never trips it), far less than the 60 s skew (so a stuck Lease does).
const NOT_STUCK: Duration = Duration::from_secs(25);
/// Renews that span several lease durations (12 × 500 ms = 2 lease durations).
const RENEWS: usize = 12;

/// `offset` is `+60s` or `-60s`: the skewed pod's clock against everybody else's.
pub async fn one_clock_off(w: &mut World, offset: &str) -> anyhow::Result<Vec<String>> {
    let library = libfaketime()?;
    // pod-a (true clock) leads first; pod-b runs 60 s off.
    let a = w.add_pod(&pod_name(0), PodOptions::default()).await?;
    w.window_opens(&[]).await?;
    let b = w
        .add_pod(
            &pod_name(1),
            PodOptions {
                sidecar_env: vec![
                    ("LD_PRELOAD".into(), library),
                    ("FAKETIME".into(), offset.into()),
                    ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
                ],
            },
        )
        .await?;
    let measured = measured_skew(w, b)?;
    w.create("before", 5).await?;
    w.all_ready().await?;

    // 1. The skewed pod is the standby: no early takeover while pod-a renews.
    wait_renews(w, a, RENEWS).await?;
    w.follows(b, a).await?;
    anyhow::ensure!(
        w.window_counts() == [1, 0],
        "pod-b opened a window while pod-a renewed the Lease"
    );

    // 2. pod-a dies: the skewed standby takes over in about a lease duration, not 60 s later.
    w.pods[a].sidecar.signal(libc::SIGKILL)?;
    takeover_not_stuck(w, a, b).await?;
    w.restart_sidecar(a).await?;
    w.follows(a, b).await?;
    w.create("skewed-leads", 5).await?;
    w.all_ready().await?;

    // 3. The skewed pod holds the Lease (its renewTime is 60 s off): no early takeover by a.
    let counts = w.window_counts();
    wait_renews(w, b, RENEWS).await?;
    w.follows(a, b).await?;
    anyhow::ensure!(
        w.window_counts() == counts,
        "pod-a opened a window while the skewed pod-b renewed the Lease"
    );

    // 4. The skewed holder dies: pod-a takes over, not 60 s later.
    w.pods[b].sidecar.signal(libc::SIGKILL)?;
    takeover_not_stuck(w, b, a).await?;
    w.restart_sidecar(b).await?;
    w.follows(b, a).await?;
    w.create("after", 5).await?;
    w.all_ready().await?;
    Ok(vec![format!(
        "pod-b's sidecar clock {offset} (measured {:+.1} s); no early takeover either way, takeovers of a dead holder not stuck",
        measured
    )])
}

/// The multithreaded libfaketime of the Debian package.
fn libfaketime() -> anyhow::Result<String> {
    let candidates = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|dir| dir.path().join("faketime/libfaketimeMT.so.1"));
    candidates
        .chain(std::iter::once(
            "/usr/lib/faketime/libfaketimeMT.so.1".into(),
        ))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
        .context(
            "the clock-skew faults need libfaketime (Debian package faketime; .ci/run installs it)",
        )
}

/// The skewed sidecar's clock against ours, from the timestamp of its latest log line: proof
/// that the skew is really applied, so the scenario cannot pass vacuously.
fn measured_skew(w: &World, i: usize) -> anyhow::Result<f64> {
    let logs = w.pods[i].sidecar.logs();
    let line = logs.last().context("the skewed sidecar logged nothing")?;
    let at = timestamp(line).context("no timestamp in the skewed sidecar's log")?;
    let skew = at.duration_since(jiff::Timestamp::now()).as_secs_f64();
    anyhow::ensure!(
        (skew.abs() - SKEW.as_secs_f64()).abs() < 10.0,
        "faketime did not skew the sidecar's clock: its log says {at}, {skew:+.1} s off"
    );
    Ok(skew)
}

/// After the sidecar of `dead` was killed, `next`'s controller opens a window within
/// [`NOT_STUCK`].
async fn takeover_not_stuck(w: &World, dead: usize, next: usize) -> anyhow::Result<()> {
    let counts = w.window_counts();
    let waited = tokio::time::timeout(NOT_STUCK, w.window_opens_after(&counts, &[dead])).await;
    let opened = waited.map_err(|_| {
        anyhow::anyhow!(
            "stuck Lease: no takeover {NOT_STUCK:?} after {} died (lease {LEASE:?}, skew {SKEW:?})",
            w.pods[dead].name
        )
    })??;
    anyhow::ensure!(opened == next, "{} took over", w.pods[opened].name);
    w.closed_before_takeover(dead, next).await
}
