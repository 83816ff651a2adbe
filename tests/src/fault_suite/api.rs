//! An API server that is cut off, down, slow, or refusing.

use std::time::Duration;

use crate::apiserver::faults::{FaultAction, FaultMatch, FaultSpec};
use crate::conformance;
use crate::world::World;

use super::{
    LEASE, named_counts, one_leader_all_agree, sidecar_token, sidecar_user, window_closed,
};

/// The leading sidecar's API requests hang while everybody else is served: the conformance
/// scenario (its controller stops because its grants stop, a standby takes over, the healed
/// sidecar follows), which records the partition and its healing for liveness.
pub async fn partition(w: &mut World) -> anyhow::Result<Vec<String>> {
    conformance::api_partition(w).await?;
    Ok(Vec::new())
}

/// Every pod's requests (sidecars and controllers) hang for twice the lease duration. Nobody
/// can renew, so the leader's controller must stop before the outage ends, and no controller
/// may start while it lasts; afterwards exactly one pod leads and the backlog is reconciled.
pub async fn outage(w: &mut World) -> anyhow::Result<Vec<String>> {
    let leader = w.window_opens(&[]).await?;
    w.create("before", 10).await?;
    w.all_ready().await?;
    let mut tokens = Vec::new();
    for i in 0..w.pods.len() {
        tokens.push(sidecar_token(w, i)?);
        tokens.push(w.pods[i].controller_token.clone());
    }
    let server = w.server("an API outage")?;
    let counts = w.window_counts();
    let rules: Vec<u64> = tokens
        .iter()
        .map(|t| server.faults().partition_token(t))
        .collect();
    w.mark_fault("full API outage");
    // The outage's length is the fault itself, not a synchronisation: twice the lease, so a
    // leader that kept acting on its old renewals would be caught.
    let outage = 2 * LEASE;
    let ends = tokio::time::Instant::now() + outage;
    window_closed(w, leader, "once its sidecar could not renew").await?;
    let stopped_in_time = tokio::time::Instant::now() < ends;
    tokio::time::sleep_until(ends).await;
    anyhow::ensure!(
        w.window_counts() == counts,
        "a controller opened a window during the outage: {} before, {} after",
        named_counts(w, &counts),
        named_counts(w, &w.window_counts())
    );
    for (i, pod) in w.pods.iter().enumerate() {
        let s = pod.sidecar.status().await?;
        anyhow::ensure!(
            !s.is_leader,
            "{} still says leader after the outage",
            w.pods[i].name
        );
    }
    let server = w.server("an API outage")?;
    for rule in rules {
        server.faults().remove(rule);
    }
    w.mark_heal("API outage over");
    let next = w.window_opens_after(&counts, &[]).await?;
    let agreed = one_leader_all_agree(w).await?;
    anyhow::ensure!(next == agreed, "window on {next} but {agreed} leads");
    w.create("after", 10).await?;
    w.all_ready().await?;
    anyhow::ensure!(
        stopped_in_time,
        "the leader's controller was still active when the outage ended"
    );
    Ok(vec![format!(
        "{} stopped during the {} s outage, {} leads after it",
        w.pods[leader].name,
        outage.as_secs(),
        w.pods[next].name
    )])
}

/// Every request of every pod (sidecars and controllers) is served only after 1.5 s, beyond
/// the sidecars' request timeout (`--api-timeout`, half the 2 s renew deadline), while new
/// objects arrive. Each renew times out on the client while the API server may still apply it
/// later, so for twice the lease the leader cannot know that it renewed and must step down; a
/// standby's acquire that times out but lands must not make two leaders; and the leader's
/// status writes, slowed too, must not land after another controller took over.
pub async fn slow(w: &mut World) -> anyhow::Result<Vec<String>> {
    let leader = w.window_opens(&[]).await?;
    w.create("before", 10).await?;
    w.all_ready().await?;
    let server = w.server("a slow API")?;
    let mut users = Vec::new();
    for i in 0..w.pods.len() {
        users.push(sidecar_user(w, i));
        users.push(w.pods[i].controller_user.clone());
    }
    let slow = |user: String| FaultSpec {
        matcher: FaultMatch {
            user: Some(user),
            ..FaultMatch::default()
        },
        action: FaultAction::LatencyMs(1500),
        times: None,
    };
    let rules: Vec<u64> = users
        .into_iter()
        .map(|u| server.faults().add(slow(u)))
        .collect();
    w.mark_fault("slow API");
    let slow_for = 2 * LEASE;
    let ends = tokio::time::Instant::now() + slow_for;
    // Work arrives while everything is slow: the leader's status writes are in flight when
    // its window ends.
    w.create("slow", 10).await?;
    window_closed(w, leader, "while its renews timed out").await?;
    // The slowness lasts its set time (the fault), whatever happens meanwhile.
    tokio::time::sleep_until(ends).await;
    let server = w.server("a slow API")?;
    for rule in rules {
        server.faults().remove(rule);
    }
    w.mark_heal("API fast again");
    let now_leading = one_leader_all_agree(w).await?;
    let counts = w.window_counts();
    let next = if w.pods[now_leading]
        .controller
        .logs_with(crate::controller::WINDOW_STARTED)
        .len()
        > w.pods[now_leading]
            .controller
            .logs_with(crate::controller::WINDOW_ENDED)
            .len()
    {
        now_leading
    } else {
        w.window_opens_after(&counts, &[]).await?
    };
    w.create("after", 10).await?;
    w.all_ready().await?;
    Ok(vec![format!(
        "{} stepped down while its renews timed out, {} leads after",
        w.pods[leader].name, w.pods[next].name
    )])
}

/// Bursts of 429 (with `Retry-After: 1`) to every sidecar's requests and of 503 to every
/// controller's requests, then the other way round, while objects are created. The first burst
/// is shorter than the renew deadline, the second longer than the lease. Refusals are retried
/// or waited out; whatever leadership changes they cause, windows never overlap and every
/// object ends up reconciled.
pub async fn error_bursts(w: &mut World) -> anyhow::Result<Vec<String>> {
    w.window_opens(&[]).await?;
    w.create("before", 5).await?;
    w.all_ready().await?;
    let bursts = [
        (429, 503, Duration::from_millis(1500)),
        (503, 429, LEASE + Duration::from_secs(1)),
    ];
    for (round, (sidecar_code, controller_code, length)) in bursts.into_iter().enumerate() {
        let server = w.server("error bursts")?;
        let burst = |user: String, code: u16| FaultSpec {
            matcher: FaultMatch {
                user: Some(user),
                ..FaultMatch::default()
            },
            action: FaultAction::Error {
                code,
                retry_after: (code == 429).then_some(1),
            },
            times: None,
        };
        let mut rules = Vec::new();
        for i in 0..w.pods.len() {
            rules.push(server.faults().add(burst(sidecar_user(w, i), sidecar_code)));
            let controller = w.pods[i].controller_user.clone();
            rules.push(server.faults().add(burst(controller, controller_code)));
        }
        w.mark_fault(&format!("error burst {round}"));
        let ends = tokio::time::Instant::now() + length;
        w.create(&format!("burst{round}"), 5).await?;
        // The burst lasts its set time (the fault itself).
        tokio::time::sleep_until(ends).await;
        let server = w.server("error bursts")?;
        for rule in rules {
            server.faults().remove(rule);
        }
        w.mark_heal(&format!("error burst {round} over"));
        one_leader_all_agree(w).await?;
        w.all_ready().await?;
    }
    w.create("after", 5).await?;
    w.all_ready().await?;
    let leader = one_leader_all_agree(w).await?;
    let refused = w
        .server("error bursts")?
        .audit()
        .iter()
        .filter(|r| r.code == 429 || r.code == 503)
        .count();
    Ok(vec![format!(
        "{refused} requests refused in two bursts, {} leads after",
        w.pods[leader].name
    )])
}
