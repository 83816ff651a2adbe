//! Another client writes malformed records into the Lease the pods compete for.
//!
//! Each write replaces the Lease with the resourceVersion just read (the API server refuses
//! unconditional Lease updates, as the real one does) or merge-patches it. The sidecars must not panic, must answer `/leader` throughout, must treat what they
//! cannot trust conservatively (a holder without `renewTime` or without `leaseDurationSeconds`
//! is still a holder, for our lease duration from when it was seen), and must end with
//! exactly one leader whose controller starts only after the old one stopped.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::world::World;

use super::{one_leader_all_agree, window_closed};

/// A holder that is not one of the pods.
const INTRUDER: &str = "intruder";

/// One malformed record.
#[derive(Clone, Copy, Debug)]
enum Malformation {
    /// `spec` missing altogether.
    NoSpec,
    /// A holder, but no `renewTime` (nor `acquireTime`).
    NoRenewTime,
    /// A holder and a `renewTime`, but no `leaseDurationSeconds`.
    NoDuration,
    /// Fields no Lease has, in `spec` and at the top level.
    UnknownFields,
    /// A 256 KiB `holderIdentity`.
    HugeHolder,
}

impl Malformation {
    const ALL: [Malformation; 5] = [
        Malformation::NoSpec,
        Malformation::NoRenewTime,
        Malformation::NoDuration,
        Malformation::UnknownFields,
        Malformation::HugeHolder,
    ];

    /// The holder the pods must report once they read it (`None`: no holder).
    fn holder(self) -> Option<String> {
        match self {
            Malformation::NoSpec => None,
            Malformation::HugeHolder => Some("h".repeat(256 * 1024)),
            _ => Some(INTRUDER.to_owned()),
        }
    }
}

pub async fn malformed_leases(w: &mut World) -> anyhow::Result<Vec<String>> {
    let leases: Api<Lease> = Api::namespaced(w.cluster.client(), w.cluster.namespace());
    let lease_name = w.lease_name();
    w.window_opens(&[]).await?;
    let mut notes = Vec::new();
    for (n, m) in Malformation::ALL.into_iter().enumerate() {
        let leader = one_leader_all_agree(w).await?;
        let counts = w.window_counts();
        write(&leases, &lease_name, m).await?;
        w.mark_heal(&format!("{m:?} written"));
        if let Some(holder) = m.holder() {
            // Everybody sees the foreign holder (and keeps answering while it is there); the
            // old leader's controller stops, since the Lease no longer names its pod.
            for i in 0..w.pods.len() {
                w.pods[i]
                    .sidecar
                    .wait_status(crate::world::WAIT, |s| {
                        !s.is_leader && s.holder.as_deref() == Some(holder.as_str())
                    })
                    .await?;
            }
            window_closed(w, leader, "after another client took the Lease").await?;
        }
        let next = w.window_opens_after(&counts, &[]).await?;
        let agreed = one_leader_all_agree(w).await?;
        anyhow::ensure!(next == agreed, "{m:?}: window on {next} but {agreed} leads");
        w.create(&format!("m{n}"), 3).await?;
        w.all_ready().await?;
        notes.push(format!("{m:?}→{}", w.pods[next].name));
    }
    Ok(vec![format!("recovered from each: {}", notes.join(", "))])
}

/// Writes `m` into the Lease, replacing whatever is there.
async fn write(leases: &Api<Lease>, name: &str, m: Malformation) -> anyhow::Result<()> {
    let mut lease = leases.get(name).await?;
    let now = MicroTime(jiff::Timestamp::now());
    let pp = PostParams::default();
    let spec = |holder: String| LeaseSpec {
        holder_identity: Some(holder),
        lease_duration_seconds: Some(3),
        renew_time: Some(now.clone()),
        acquire_time: Some(now.clone()),
        ..LeaseSpec::default()
    };
    lease.spec = match m {
        Malformation::NoSpec => None,
        Malformation::NoRenewTime => Some(LeaseSpec {
            renew_time: None,
            acquire_time: None,
            ..spec(INTRUDER.into())
        }),
        Malformation::NoDuration => Some(LeaseSpec {
            lease_duration_seconds: None,
            ..spec(INTRUDER.into())
        }),
        Malformation::HugeHolder => m.holder().map(spec),
        Malformation::UnknownFields => {
            // Not expressible with the typed struct: a merge patch carries them. The API
            // server drops unknown fields (with a warning) unless asked to be strict.
            let patch = json!({
                "spec": {
                    "holderIdentity": INTRUDER,
                    "renewTime": now,
                    "leaseDurationSeconds": 3,
                    "fencingToken": 99,
                },
                "status": {"leader": true},
            });
            leases
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            return Ok(());
        }
    };
    leases.replace(name, &pp, &lease).await?;
    Ok(())
}
