//! What happens to the Lease object itself: an operator deletes it or clears its holder while
//! the holder is cut off from the API server, a standby's watch of it goes silent, and it is
//! deleted and recreated (by our electors, or by an operator with `leaseTransitions: 0`).

use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::apiserver::audit::AuditRecord;
use crate::world::{WAIT, World};

use super::{LEASE, RETRY, sidecar_token, sidecar_user};

/// What the operator does to the Lease while its holder is cut off.
#[derive(Clone, Copy, Debug)]
enum Operation {
    Delete,
    /// A merge patch that removes `spec.holderIdentity` (not a release: the holder did not
    /// write it, and `leaseDurationSeconds` stays what the holder wrote).
    ClearHolder,
}

pub async fn deleted_in_partition(w: &mut World) -> anyhow::Result<Vec<String>> {
    operator_during_partition(w, Operation::Delete).await
}

pub async fn cleared_in_partition(w: &mut World) -> anyhow::Result<Vec<String>> {
    operator_during_partition(w, Operation::ClearHolder).await
}

/// The leader's sidecar is partitioned (its requests hang), then an operator deletes the Lease
/// or clears its holder. The holder cannot know and may act until its renew deadline; so no
/// standby may acquire before the holder's `leaseDurationSeconds` has passed since the
/// operation (measured from just before the operator's request to the standby's accepted
/// acquire in the audit log), and the windows must not overlap. Then the partition heals and
/// the old holder follows.
async fn operator_during_partition(w: &mut World, op: Operation) -> anyhow::Result<Vec<String>> {
    let leader = w.window_opens(&[]).await?;
    w.create("before", 10).await?;
    w.all_ready().await?;
    let leases: Api<Lease> = Api::namespaced(w.cluster.client(), w.cluster.namespace());
    let name = w.lease_name();
    let token = sidecar_token(w, leader)?;
    let cut_user = sidecar_user(w, leader);
    let rule = w.server("a partition")?.faults().partition_token(&token);
    w.mark_fault("partition of the leading sidecar");
    // The partition is in force for the holder once one of its requests (its next renew,
    // within a retry period) is held: from here it cannot learn what the operator does.
    wait_held(w, &cut_user).await?;
    let duration = leases
        .get(&name)
        .await?
        .spec
        .and_then(|s| s.lease_duration_seconds)
        .context("the holder wrote no leaseDurationSeconds")?;
    let grace = Duration::from_secs(u64::try_from(duration)?);
    let before_op = Timestamp::now();
    match op {
        Operation::Delete => {
            leases.delete(&name, &DeleteParams::default()).await?;
        }
        Operation::ClearHolder => {
            leases
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"holderIdentity": null}})),
                )
                .await?;
        }
    }
    w.mark_fault(&format!("{op:?} by an operator"));
    let next = w.window_opens(&[leader]).await?;
    w.closed_before_takeover(leader, next).await?;
    let audit = w.server("the audit log")?.audit();
    let acquired = first_write(&audit, &name, before_op.as_millisecond(), |user| {
        user != cut_user && user.ends_with("-sidecar")
    })
    .context("a window opened but no sidecar wrote the Lease after the operator")?;
    let waited = Duration::from_millis(u64::try_from(acquired.at_ms - before_op.as_millisecond())?);
    anyhow::ensure!(
        waited >= grace,
        "{} acquired the Lease {:.2} s after the operator's {op:?}, before the cut-off holder's \
         leaseDurationSeconds ({duration} s) had passed: the holder may still act",
        acquired.user,
        waited.as_secs_f64()
    );
    w.create("partitioned", 5).await?;
    w.all_ready().await?;
    w.server("a partition")?.faults().remove(rule);
    w.mark_heal("partition healed");
    w.follows(leader, next).await?;
    w.create("healed", 5).await?;
    w.all_ready().await?;
    Ok(vec![format!(
        "{:?} while {} was cut off: {} acquired {:.2} s after it (holder's lease {duration} s)",
        op,
        w.pods[leader].name,
        w.pods[next].name,
        waited.as_secs_f64()
    )])
}

/// How long after the leader's last renew a standby whose watch went silent may take over:
/// the lease duration counted from when it saw that renew, which it learns by reading the
/// Lease itself at least every retry period once the watch is silent, plus ε = 250 ms for the
/// acquire jitter (at most 50 ms with a 500 ms retry period), the round trips of that read and
/// of the acquire to the local API server, and scheduling on a loaded machine.
const STALLED_TAKEOVER: Duration = Duration::from_millis(3000 + 500 + 250);

/// Two pods. The standby's Lease watch silently stops delivering (the connection stays open,
/// events are held), then the leading sidecar is killed right after a renew that the standby
/// missed. The standby must take over within lease duration + retry period + ε of that last
/// renew: it may not rely on its expiry timer alone, which would first fail on the renewal it
/// never heard of (409), re-read, and wait a whole lease duration again.
pub async fn standby_watch_stalled(w: &mut World) -> anyhow::Result<Vec<String>> {
    let leader = w.window_opens(&[]).await?;
    let standby = 1 - leader;
    w.create("before", 5).await?;
    w.all_ready().await?;
    w.follows(standby, leader).await?;
    let name = w.lease_name();
    let token = sidecar_token(w, standby)?;
    let (leader_user, standby_user) = (sidecar_user(w, leader), sidecar_user(w, standby));
    let rule = w.server("holding a watch")?.faults().hold_watches(&token);
    let stalled = Timestamp::now().as_millisecond();
    w.mark_fault("the standby's Lease watch goes silent");
    // The leader's renews go on, and the standby's watch holds them back.
    let server = w.server("holding a watch")?;
    tokio::time::timeout(WAIT, server.faults().wait_held_events(1))
        .await
        .context("no watch event was held")?;
    // Once the standby has read the Lease itself (its knowledge is then as fresh as that
    // read), the leader's next renew is one it cannot have seen; kill the leader right after
    // it, so that this renew is its last.
    let read = wait_record(w, |r| {
        r.user == standby_user
            && r.resource == "leases"
            && matches!(r.verb.as_str(), "get" | "list")
            && r.code == 200
            && r.at_ms > stalled
    })
    .await?;
    wait_record(w, |r| {
        r.user == leader_user && is_accepted_write(r, &name) && r.at_ms > read.at_ms
    })
    .await?;
    w.pods[leader].sidecar.signal(libc::SIGKILL)?;
    w.mark_heal("kill -9 of the leading sidecar");
    let next = w.window_opens(&[leader]).await?;
    anyhow::ensure!(next == standby, "{} took over", w.pods[next].name);
    w.closed_before_takeover(leader, next).await?;
    let audit = w.server("the audit log")?.audit();
    let last_renew = audit
        .iter()
        .filter(|r| r.user == leader_user && is_accepted_write(r, &name))
        .map(|r| r.at_ms)
        .max()
        .context("the leader never wrote the Lease")?;
    let acquired = first_write(&audit, &name, last_renew, |u| u == standby_user)
        .context("the standby opened a window without writing the Lease")?;
    let took = Duration::from_millis(u64::try_from(acquired.at_ms - last_renew)?);
    anyhow::ensure!(
        took <= STALLED_TAKEOVER,
        "with its watch silent, {standby_user} acquired {:.2} s after the leader's last renew \
         (allowed: lease {LEASE:?} + retry {RETRY:?} + 250 ms)",
        took.as_secs_f64()
    );
    w.server("holding a watch")?.faults().remove(rule);
    w.mark_heal("the standby's watch delivers again");
    w.create("after", 5).await?;
    w.all_ready().await?;
    w.restart_sidecar(leader).await?;
    w.follows(leader, next).await?;
    Ok(vec![format!(
        "standby's watch silent: it took over {:.2} s after the last renew (bound {:.2} s)",
        took.as_secs_f64(),
        STALLED_TAKEOVER.as_secs_f64()
    )])
}

/// The Lease is deleted (our electors recreate it), then deleted and recreated by an operator
/// with `leaseTransitions: 0` while every sidecar is cut off from the API server (so that no
/// elector is faster than the operator). After each, the next tenure's term (the fencing
/// token) must be greater than every term observed before: by any controller window, any
/// sidecar's answer.
pub async fn recreated(w: &mut World) -> anyhow::Result<Vec<String>> {
    let leases: Api<Lease> = Api::namespaced(w.cluster.client(), w.cluster.namespace());
    let name = w.lease_name();
    w.window_opens(&[]).await?;
    w.create("before", 5).await?;
    w.all_ready().await?;
    let mut notes = Vec::new();
    for (step, by_operator) in [false, true].into_iter().enumerate() {
        let highest = highest_term(w).await?;
        let counts = w.window_counts();
        let mut cut = Vec::new();
        if by_operator {
            for i in 0..w.pods.len() {
                let token = sidecar_token(w, i)?;
                cut.push(w.server("a partition")?.faults().partition_token(&token));
            }
        }
        leases.delete(&name, &DeleteParams::default()).await?;
        if by_operator {
            // Recreated at once, as `kubectl replace --force` or a GitOps tool would, with the
            // counter back at 0 and no holder.
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            leases
                .create(&PostParams::default(), &lease)
                .await
                .context("the operator's recreate")?;
            for rule in cut {
                w.server("a partition")?.faults().remove(rule);
            }
            notes.push("recreated by an operator with leaseTransitions 0".to_owned());
            w.mark_heal("Lease deleted and recreated by an operator");
        } else {
            notes.push("deleted, recreated by an elector".to_owned());
            w.mark_heal("Lease deleted");
        }
        let next = w.window_opens_after(&counts, &[]).await?;
        let windows = w.windows()?;
        let term = windows[next]
            .1
            .last()
            .and_then(|win| win.term)
            .context("a window without a term")?;
        anyhow::ensure!(
            i64::from(highest) < term,
            "step {step}: after the Lease was {}, {} leads in term {term}, not above the \
             highest term seen before ({highest}): the fencing token went back",
            if by_operator {
                "recreated with leaseTransitions 0"
            } else {
                "deleted"
            },
            w.pods[next].name
        );
        w.create(&format!("after{step}"), 5).await?;
        w.all_ready().await?;
        if let Some(last) = notes.last_mut() {
            last.push_str(&format!(": term {highest} → {term}"));
        }
    }
    Ok(vec![notes.join("; ")])
}

/// The highest term any controller window carried or any sidecar reports.
async fn highest_term(w: &mut World) -> anyhow::Result<i32> {
    let mut highest = 0i64;
    for (_, ws) in w.windows()? {
        for win in ws {
            highest = highest.max(win.term.unwrap_or(0));
        }
    }
    for (_, status) in super::statuses(w).await {
        highest = highest.max(i64::from(status.term.unwrap_or(0)));
    }
    Ok(i32::try_from(highest)?)
}

/// An accepted create, update or patch of Lease `name`.
fn is_accepted_write(r: &AuditRecord, name: &str) -> bool {
    r.resource == "leases"
        && r.name.as_deref().is_none_or(|n| n == name)
        && matches!(r.verb.as_str(), "create" | "update" | "patch")
        && r.code < 300
}

/// The first accepted write of Lease `name` at or after `from_ms` by a user `who` accepts.
fn first_write<'a>(
    audit: &'a [AuditRecord],
    name: &str,
    from_ms: i64,
    who: impl Fn(&str) -> bool,
) -> Option<&'a AuditRecord> {
    audit
        .iter()
        .filter(|r| r.at_ms >= from_ms && who(&r.user) && is_accepted_write(r, name))
        .min_by_key(|r| r.at_ms)
}

/// Waits until a request of `user` is being held by a hang rule.
async fn wait_held(w: &World, user: &str) -> anyhow::Result<()> {
    let server = w.server("a partition")?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !server.faults().held_users().iter().any(|u| u == user) {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no request of {user} was held within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Waits until the audit log has a record `pred` accepts; returns it.
async fn wait_record(
    w: &World,
    pred: impl Fn(&AuditRecord) -> bool,
) -> anyhow::Result<AuditRecord> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(r) = w.server("the audit log")?.audit().into_iter().find(&pred) {
            return Ok(r);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no such request in the audit log within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
