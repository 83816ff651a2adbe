//! Processes that die, freeze, start together or are replaced.

use std::time::Duration;

use crate::conformance;
use crate::world::{PodOptions, World, pod_name};

use super::{
    named_counts, one_leader_all_agree, sidecar_user, terminate_pod, wait_renews, window_closed,
};

/// kill -9 of the leading sidecar: the conformance scenario (a standby takes over once the
/// Lease expires; the restarted sidecar follows), which records the kill for liveness.
pub async fn kill_leading_sidecar(w: &mut World) -> anyhow::Result<Vec<String>> {
    conformance::kill_leading_sidecar(w).await?;
    Ok(Vec::new())
}

/// SIGSTOP of the leading sidecar past the lease, then SIGCONT: the conformance scenario (it
/// comes back as a follower and its controller stays idle), which records the freeze and the
/// thaw for liveness.
pub async fn frozen_sidecar(w: &mut World) -> anyhow::Result<Vec<String>> {
    conformance::frozen_sidecar(w).await?;
    Ok(Vec::new())
}

/// kill -9 of the leading controller, which stays down. With `--consumer-timeout 2s` its
/// sidecar notices that nobody consumes the leadership, releases the Lease, and a pod whose
/// controller is alive takes over; the orphaned sidecar keeps following.
pub async fn kill_leading_controller(w: &mut World) -> anyhow::Result<Vec<String>> {
    let leader = w.window_opens(&[]).await?;
    w.create("before", 10).await?;
    w.all_ready().await?;
    w.kill_controller(leader).await?;
    w.mark_heal("kill -9 of the leading controller");
    let next = w.window_opens(&[leader]).await?;
    w.follows(leader, next).await?;
    w.create("after", 10).await?;
    w.all_ready().await?;
    // Still a follower after the new leader renewed for two lease durations: the orphan
    // sidecar does not take the Lease back while its controller is gone.
    wait_renews(w, next, 12).await?;
    w.follows(leader, next).await?;
    let orphan = sidecar_user(w, leader);
    Ok(vec![format!(
        "{} took over from a pod without a controller; {orphan} stayed follower",
        w.pods[next].name
    )])
}

/// Ten pods started together on a Lease nobody holds yet: the API server stalls their Lease
/// requests until all ten are waiting, then answers them all at once, so that they all race to
/// create and take it. Exactly one wins; all agree on it; exactly one controller opens a window.
pub async fn candidate_storm(w: &mut World) -> anyhow::Result<Vec<String>> {
    const CANDIDATES: usize = 10;
    let server = w.server("holding back Lease requests")?;
    let gate = server.faults().add(crate::apiserver::faults::FaultSpec {
        matcher: crate::apiserver::faults::FaultMatch {
            resource: Some("leases".into()),
            ..Default::default()
        },
        action: crate::apiserver::faults::FaultAction::Stall,
        times: None,
    });
    for i in 0..CANDIDATES {
        w.add_pod(&pod_name(i), PodOptions::default()).await?;
    }
    // Every sidecar has asked for the Lease (a request held back, or a retry after one was
    // released): from here on they race.
    wait_all_asked(w, CANDIDATES).await?;
    w.server("releasing Lease requests")?.faults().remove(gate);
    w.mark_heal("Lease requests released");
    let leader = one_leader_all_agree(w).await?;
    let opened = w.window_opens(&[]).await?;
    anyhow::ensure!(
        opened == leader,
        "{} opened a window but {} leads",
        w.pods[opened].name,
        w.pods[leader].name
    );
    w.create("storm", 10).await?;
    w.all_ready().await?;
    // Once the winner renewed for a few lease durations, still only its controller has opened
    // a window.
    wait_renews(w, leader, 12).await?;
    let counts = w.window_counts();
    anyhow::ensure!(
        counts.iter().sum::<usize>() == 1 && counts[leader] == 1,
        "windows opened per pod: {}",
        named_counts(w, &counts)
    );
    let refused = lease_conflicts(w)?;
    Ok(vec![format!(
        "{CANDIDATES} candidates, one leader ({}), {refused} Lease writes refused with 409",
        w.pods[leader].name
    )])
}

/// Waits until a Lease request of each of the first `n` pods' sidecars has been held. Not
/// necessarily all at once: a held request times out after `--api-timeout` and is retried after
/// a backoff, so when the pods start slowly (the Python controller takes longer to start) the
/// first sidecars may be between two attempts when the last one asks.
async fn wait_all_asked(w: &World, n: usize) -> anyhow::Result<()> {
    let server = w.server("holding back Lease requests")?;
    let deadline = tokio::time::Instant::now() + crate::world::WAIT;
    let mut seen = std::collections::BTreeSet::new();
    loop {
        seen.extend(server.faults().held_users());
        let asked = (0..n)
            .filter(|i| seen.contains(&sidecar_user(w, *i)))
            .count();
        if asked == n {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "only {asked} of {n} sidecars asked for the Lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lease writes the API server refused with 409 (AlreadyExists or Conflict).
fn lease_conflicts(w: &World) -> anyhow::Result<usize> {
    Ok(w.server("counting conflicts")?
        .audit()
        .iter()
        .filter(|r| r.resource == "leases" && r.code == 409)
        .count())
}

/// A rolling update of the 3 replicas as the Deployment's strategy does it (`maxSurge: 1`,
/// `maxUnavailable: 0`): start a new pod, wait until it is ready, then terminate an old pod
/// (SIGTERM to both containers), one at a time, the leader's pod first. Every old pod hands
/// over at most once, the new pods never overlap, and nothing is lost on the way.
pub async fn rolling_update(w: &mut World) -> anyhow::Result<Vec<String>> {
    let first = w.window_opens(&[]).await?;
    let old: Vec<usize> = std::iter::once(first)
        .chain((0..w.pods.len()).filter(|i| *i != first))
        .collect();
    w.create("before", 5).await?;
    w.all_ready().await?;
    for (step, &i) in old.iter().enumerate() {
        let new = w
            .add_pod(&pod_name(3 + step), PodOptions::default())
            .await?;
        w.probe(new, "/readyz", 200).await?;
        let counts = w.window_counts();
        let was_active = w.pods[i]
            .controller
            .logs_with(crate::controller::WINDOW_STARTED)
            .len()
            > w.pods[i]
                .controller
                .logs_with(crate::controller::WINDOW_ENDED)
                .len();
        w.mark_heal(&format!("SIGTERM to {}", w.pods[i].name));
        terminate_pod(w, i).await?;
        window_closed(w, i, "after it exited").await?;
        if was_active {
            let next = w.window_opens_after(&counts, &[i]).await?;
            w.closed_before_takeover(i, next).await?;
        }
        w.create(&format!("step{step}"), 5).await?;
        w.all_ready().await?;
    }
    let handovers = handovers(w)?;
    let replaced: Vec<String> = old.iter().map(|i| w.pods[*i].name.clone()).collect();
    let mut from: Vec<&String> = handovers.iter().map(|(a, _)| a).collect();
    from.sort();
    let before = from.len();
    from.dedup();
    anyhow::ensure!(
        from.len() == before && from.iter().all(|p| replaced.contains(p)),
        "handovers {handovers:?}: each replaced pod ({replaced:?}) may hand over at most once"
    );
    Ok(vec![format!(
        "{} handovers for 3 replaced pods: {}",
        handovers.len(),
        handovers
            .iter()
            .map(|(a, b)| format!("{a}→{b}"))
            .collect::<Vec<_>>()
            .join(", ")
    )])
}

/// Consecutive windows of different pods, as (from, to).
fn handovers(w: &World) -> anyhow::Result<Vec<(String, String)>> {
    let mut all: Vec<(String, jiff::Timestamp)> = w
        .windows()?
        .into_iter()
        .flat_map(|(pod, ws)| ws.into_iter().map(move |x| (pod.clone(), x.start)))
        .collect();
    all.sort_by_key(|(_, at)| *at);
    Ok(all
        .windows(2)
        .filter(|p| p[0].0 != p[1].0)
        .map(|p| (p[0].0.clone(), p[1].0.clone()))
        .collect())
}
