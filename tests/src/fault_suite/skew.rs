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
    w.mark_heal("kill -9 of pod-a's sidecar");
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
    w.mark_heal("kill -9 of the skewed pod-b's sidecar");
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

/// The step-back fault's sidecar timings: a renew period of 1 s (a step of one renew period is
/// then a whole second) and a renew deadline close to the lease, so that the margin left is
/// smaller than what one renew that client-go cannot see costs.
pub const STEP_TIMINGS: [&str; 6] = [
    "--lease-duration",
    "3s",
    "--renew-deadline",
    "2800ms",
    "--retry-period",
    "1s",
];

/// The leading sidecar's wall clock steps back by one renew period (1 s) right after a renew,
/// with a client-go elector (`testkit::clientgo`, polling every 100 ms) as the standby; right
/// after the next renew the leader is cut off from the API server (its requests hang).
///
/// client-go notices a change of the record only at whole-second resolution of `renewTime`. The
/// renew after the step would write the same second again: no change to client-go, which then
/// counts its lease duration from the renew before, one renew period early, while the cut-off
/// leader still leads until its renew deadline after the renew it did not see. With 3 s / 2.8 s
/// / 1 s that is an overlap of up to 0.8 s, which the judgement catches (client-go's leading
/// periods are windows like our controllers'). Our leader makes every renew change the second
/// (`elector::renew_time`), so client-go counts from the last renew and takes over only after the
/// leader's tenure ended.
///
/// The offset is changed at run time through libfaketime's `FAKETIME_TIMESTAMP_FILE`, which it
/// re-reads on every clock read with `FAKETIME_NO_CACHE=1`. libfaketime disturbs the timing of
/// the process under it: no timing is read from this run, and the faked sidecar's log
/// timestamps are in its faked clock (liveness reads its tenure from the audit log).
pub async fn wall_clock_step_back(w: &mut World) -> anyhow::Result<Vec<String>> {
    use crate::clientgo::{ClientGoElector, ClientGoTimings};
    let library = libfaketime()?;
    let offset_file = w.scratch_dir().join("faketime-offset");
    let set_offset = |seconds: f64| {
        // Written to a temporary file and renamed, so that no clock read sees it half-written.
        let tmp = offset_file.with_extension("tmp");
        std::fs::write(&tmp, format!("{seconds:+.3}\n"))
            .and_then(|()| std::fs::rename(&tmp, &offset_file))
            .context("cannot write libfaketime's offset file")
    };
    set_offset(0.0)?;
    let a = w
        .add_pod(
            &pod_name(0),
            PodOptions {
                sidecar_env: vec![
                    ("LD_PRELOAD".into(), library),
                    (
                        "FAKETIME_TIMESTAMP_FILE".into(),
                        offset_file.display().to_string(),
                    ),
                    ("FAKETIME_NO_CACHE".into(), "1".into()),
                    ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
                ],
            },
        )
        .await?;
    w.window_opens(&[]).await?;
    w.create("before", 5).await?;
    w.all_ready().await?;
    let timings = ClientGoTimings {
        lease_duration: LEASE,
        renew_deadline: Duration::from_millis(2800),
        retry_period: Duration::from_millis(100),
    };
    let (client, ns, lease) = (
        w.cluster.client(),
        w.cluster.namespace().to_owned(),
        w.lease_name(),
    );
    let go = ClientGoElector::spawn(client, &ns, &lease, "client-go", timings, false);
    renews(w, a, &go, 4, "before the step").await?;

    // Right after a renew early in a second, step back one renew period: the next renew falls
    // in the same second of the faked clock. Renews come every second, so their phase in the
    // second hardly moves: shift it first (a step of less than a second, forward or back, that
    // no renew sees twice) so that it falls early in a second.
    let mut offset = 0.0;
    for _ in 0..5 {
        let phase = renew_phase(w).await?;
        if phase < 0.4 {
            break;
        }
        offset += 1.1 - phase;
        set_offset(offset)?;
        renews(w, a, &go, 1, "while aligning pod-a's clock").await?;
    }
    early_in_a_second(w).await?;
    offset -= 1.0;
    set_offset(offset)?;
    w.mark_fault("pod-a's wall clock stepped back one renew period");
    renews(w, a, &go, 1, "after pod-a's clock stepped back").await?;
    // Cut off right after that renew: the leader keeps leading until its renew deadline.
    let token = super::sidecar_token(w, a)?;
    let cut = w.server("a partition")?.faults().partition_token(&token);
    go.wait_leading(crate::world::WAIT).await?;
    // Heal only once pod-a's controller has stopped on its own (its grants end with its
    // tenure), so that an early takeover shows as the overlap it is.
    super::window_closed(w, a, "once its tenure ended").await?;
    w.server("a partition")?.faults().remove(cut);
    w.mark_heal("pod-a's partition healed (client-go leads)");
    // Hand back to our pods, so that new objects get reconciled: client-go stops without a
    // release, and pod-a takes the Lease once client-go's record expires.
    let windows = go.stop().await;
    let tenures = windows.len();
    w.foreign_windows("client-go", windows);
    let counts = w.window_counts();
    w.window_opens_after(&counts, &[]).await?;
    w.create("after", 5).await?;
    w.all_ready().await?;
    Ok(vec![format!(
        "pod-a's clock stepped back 1 s right after a renew, then pod-a was cut off: client-go \
         took over {tenures} time(s), after pod-a's tenure"
    )])
}

/// Waits for `n` renews of pod `a`, failing at once if client-go takes the Lease meanwhile.
async fn renews(
    w: &World,
    a: usize,
    go: &crate::clientgo::ClientGoElector,
    n: usize,
    when: &str,
) -> anyhow::Result<()> {
    tokio::select! {
        r = wait_renews(w, a, n) => r,
        r = go.wait_leading(crate::world::WAIT) => r.and_then(|()| Err(anyhow::anyhow!(
            "client-go took over {when}, while {} renewed the Lease",
            w.pods[a].name
        ))),
    }
}

/// The sub-second part of the `renewTime` of the leader's next renew, in seconds.
async fn renew_phase(w: &World) -> anyhow::Result<f64> {
    use k8s_openapi::api::coordination::v1::Lease;
    let leases: kube::Api<Lease> = kube::Api::namespaced(w.cluster.client(), w.cluster.namespace());
    let deadline = tokio::time::Instant::now() + crate::world::WAIT;
    let first = leases.get(&w.lease_name()).await?.metadata.resource_version;
    loop {
        let lease = leases.get(&w.lease_name()).await?;
        if lease.metadata.resource_version != first
            && let Some(t) = lease.spec.and_then(|s| s.renew_time).map(|t| t.0)
        {
            return Ok(f64::from(t.subsec_millisecond()) / 1000.0);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the leader did not renew within {:?}",
            crate::world::WAIT
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the leader writes a `renewTime` that lies in the first 400 ms of its second;
/// returns right after that renew.
async fn early_in_a_second(w: &World) -> anyhow::Result<()> {
    use k8s_openapi::api::coordination::v1::Lease;
    let leases: kube::Api<Lease> = kube::Api::namespaced(w.cluster.client(), w.cluster.namespace());
    let deadline = tokio::time::Instant::now() + crate::world::WAIT;
    let mut last = None;
    loop {
        let lease = leases.get(&w.lease_name()).await?;
        let rv = lease.metadata.resource_version.clone();
        let renewed = lease.spec.and_then(|s| s.renew_time).map(|t| t.0);
        if last.is_some() && rv != last && renewed.is_some_and(|t| t.subsec_millisecond() < 400) {
            return Ok(());
        }
        last = rv;
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the leader's renewTime never fell early in a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
