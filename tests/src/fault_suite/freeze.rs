//! The leading *controller* (not its sidecar) frozen with SIGSTOP past its grant, then thawed:
//! once, then again at other phases of its polling. Its sidecar keeps the Lease all along (the
//! sidecar does not care whether its controller runs), so after each thaw the same pod's
//! controller must be active again at once and do new work promptly.
//!
//! A controller that kept the last grant it was given and waits for news on `/leader/watch`
//! stalls here: the grant ran out while it was stopped, the stream has nothing new to say (the
//! same holder, the same term), and the sidecar granted nobody else. The events queued on the
//! stream meanwhile are "still leader" in the same term; they are no grant, and a gate that
//! reads them as "nothing changed" never asks `GET /leader` again.

use std::time::Duration;

use crate::newresources;
use crate::prom;
use crate::world::{WAIT, World};

use super::{LIVENESS, one_leader_all_agree};

/// Each round: how long after the controller's `GET /leader` was answered (as the sidecar
/// counts it) the freeze starts, and how long it lasts. The controller asks half-way through
/// each 2 s grant, so about every second: the offsets spread the freezes over that cadence,
/// from an answer still on its way to the controller (0 ms) to just before the next request
/// is sent (≈ 1 s); every freeze outlasts the grant in force when it starts, and lets the
/// sidecar queue two to four stream events.
const ROUNDS: [(u64, u64); 6] = [
    (0, 2500),
    (150, 2000),
    (400, 3000),
    (650, 4000),
    (900, 2000),
    (990, 3500),
];
/// Objects created after each thaw.
const PER_ROUND: usize = 3;

pub async fn frozen_controller(w: &mut World) -> anyhow::Result<Vec<String>> {
    let leader = w.window_opens(&[]).await?;
    w.create("before", 5).await?;
    w.all_ready().await?;
    let term = w.pods[leader].sidecar.status().await?.term;
    let name = w.pods[leader].name.clone();
    let mut windows = 1;
    for (round, (offset, freeze)) in ROUNDS.into_iter().enumerate() {
        answered_poll(w, leader).await?;
        // The phase and the length of the freeze are the fault itself.
        tokio::time::sleep(Duration::from_millis(offset)).await;
        w.pods[leader].controller.signal(libc::SIGSTOP)?;
        w.mark_fault(&format!("SIGSTOP of {name}'s controller (round {round})"));
        tokio::time::sleep(Duration::from_millis(freeze)).await;
        w.pods[leader].controller.signal(libc::SIGCONT)?;
        w.mark_heal(&format!("SIGCONT of {name}'s controller (round {round})"));

        // The sidecar never stopped leading, in the same term, and nobody else took over.
        let status = w.pods[leader].sidecar.status().await?;
        anyhow::ensure!(
            status.is_leader && status.term == term,
            "round {round}: {name}'s sidecar no longer leads in term {term:?}: {status:?}"
        );
        // New work is done within the liveness bound: the thawed controller acts again.
        let prefix = format!("thaw{round}");
        let names = newresources::names(&prefix, 0..PER_ROUND);
        w.create(&prefix, PER_ROUND).await?;
        newresources::wait_ready(&w.api, &names, LIVENESS.ready_after_heal)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "round {round} ({offset} ms after a poll, frozen {freeze} ms): {name}'s \
                     controller is not active again although its sidecar leads: {e:#}"
                )
            })?;
        let counts = w.window_counts();
        anyhow::ensure!(
            counts
                .iter()
                .enumerate()
                .all(|(i, n)| i == leader || *n == 0),
            "round {round}: another controller opened a window: {counts:?}"
        );
        windows = counts[leader];
    }
    let agreed = one_leader_all_agree(w).await?;
    anyhow::ensure!(agreed == leader, "{} leads at the end", w.pods[agreed].name);
    Ok(vec![format!(
        "{name}'s controller frozen {} times (2–4 s, spread over its poll cadence), active \
         again after each thaw ({windows} windows, all in term {term:?})",
        ROUNDS.len()
    )])
}

/// Waits until the sidecar of pod `i` answers one more `GET /leader` (its controller's poll),
/// read from the sidecar's request counter.
async fn answered_poll(w: &World, i: usize) -> anyhow::Result<()> {
    let sidecar = &w.pods[i].sidecar;
    let count = || async {
        let text = sidecar.metrics().await?;
        anyhow::Ok(prom::sum(
            &text,
            "leader_sidecar_http_requests_total",
            &[("path", "/leader"), ("code", "200")],
        ))
    };
    let before = count().await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while count().await? <= before {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{}: no GET /leader answered within {WAIT:?}",
            sidecar.identity
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
