//! Abuse of the leader API port by other local processes: garbage requests, 10 000 idle
//! connections, and watchers that never read. The elector keeps renewing, the controller keeps
//! its window and keeps reconciling, and a new well-behaved client is still answered.

use crate::abuse::{IdleFlood, StalledWatcher, garbage};
use crate::controller::{WINDOW_ENDED, WINDOW_STARTED};
use crate::web;
use crate::world::World;

use super::wait_renews;

/// Idle connections opened against the leader's API port.
const IDLE: usize = 10_000;

pub async fn http_abuse(w: &mut World) -> anyhow::Result<Vec<String>> {
    let leader = w.window_opens(&[]).await?;
    w.create("before", 10).await?;
    w.all_ready().await?;
    let term = w.pods[leader].sidecar.status().await?.term;
    let ended = w.pods[leader].controller.logs_with(WINDOW_ENDED).len();

    w.mark_fault("HTTP abuse");
    let mut reports = Vec::new();
    for pod in &w.pods {
        reports.push(garbage(pod.sidecar.api).await?);
    }
    let mut stalled = Vec::new();
    for pod in &w.pods {
        stalled.push(StalledWatcher::open(pod.sidecar.api).await?);
    }
    let mut flood = IdleFlood::open(w.pods[leader].sidecar.api, IDLE).await?;

    // While all of it is held: the leader renews for several lease durations, its controller
    // reconciles new objects inside the window it had, and a new client is answered.
    w.create("abused", 10).await?;
    w.all_ready().await?;
    wait_renews(w, leader, 12).await?;
    let fresh = web::get(w.pods[leader].sidecar.api, "/leader").await?;
    anyhow::ensure!(fresh.status == 200, "a new client got {}", fresh.status);
    let status: leader_client::contract::LeaderStatus = fresh.json()?;
    anyhow::ensure!(
        status.is_leader && status.term == term,
        "leadership changed under abuse: {status:?}, term before {term:?}"
    );
    let c = &w.pods[leader].controller;
    anyhow::ensure!(
        c.logs_with(WINDOW_ENDED).len() == ended && c.logs_with(WINDOW_STARTED).len() == ended + 1,
        "{} lost its window under abuse",
        c.name
    );
    for i in (0..w.pods.len()).filter(|i| *i != leader) {
        w.follows(i, leader).await?;
    }
    let evicted = flood.closed_by_server().await;
    let held = flood.len();
    drop(flood);
    drop(stalled);
    w.mark_heal("HTTP abuse over");
    w.create("after", 5).await?;
    w.all_ready().await?;
    let answers: usize = reports.iter().map(|r| r.answers.len()).sum();
    Ok(vec![format!(
        "{answers} malformed requests refused with 4xx or a close, {held} idle connections \
         ({evicted} closed by the sidecar), stalled watchers on every pod: leader kept term \
         {term:?} and its window"
    )])
}
