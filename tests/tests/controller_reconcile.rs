//! One reconcile against the API server (in memory, or the real cluster; see
//! `testkit::cluster`): the status write is a compare-and-swap, a deleted object is success,
//! nothing is sent when nothing changes or when the gate is closed.

use std::sync::Arc;

use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use leader_client::gate::LeadershipGate;
use newresource_controller::crd::{NewResource, NewResourceSpec, NewResourceStatus};
use newresource_controller::metrics::Metrics;
use newresource_controller::reconcile::{Context, Error, reconcile};
use testkit::cluster::TestCluster;

struct Fixture {
    cluster: TestCluster,
    api: Api<NewResource>,
}

async fn fixture() -> anyhow::Result<Fixture> {
    let cluster = TestCluster::start().await?;
    testkit::newresources::install_crd(&cluster.client()).await?;
    let api = Api::namespaced(cluster.client(), cluster.namespace());
    Ok(Fixture { cluster, api })
}

impl Fixture {
    async fn create(&self, name: &str) -> anyhow::Result<NewResource> {
        let obj = NewResource::new(name, NewResourceSpec { foo: "bar".into() });
        Ok(self.api.create(&PostParams::default(), &obj).await?)
    }

    fn context(&self, gate: LeadershipGate) -> Arc<Context> {
        Arc::new(Context::new(self.cluster.client(), gate, Metrics::new()))
    }

    /// Status writes the server answered for `name` (in memory only).
    fn status_writes(&self, name: &str) -> Option<usize> {
        let server = self.cluster.in_memory()?;
        Some(
            server
                .audit()
                .iter()
                .filter(|r| r.subresource.as_deref() == Some("status"))
                .filter(|r| r.name.as_deref() == Some(name))
                .count(),
        )
    }
}

fn has(ctx: &Context, series: &str) -> bool {
    ctx.metrics.encode().lines().any(|l| l == series)
}

#[tokio::test]
async fn marks_ready_for_the_current_generation_then_has_nothing_to_do() -> anyhow::Result<()> {
    let f = fixture().await?;
    let obj = f.create("one").await?;
    let ctx = f.context(LeadershipGate::always_open());
    reconcile(Arc::new(obj), ctx.clone()).await?;
    let updated = f.api.get("one").await?;
    assert_eq!(
        updated.status,
        Some(NewResourceStatus {
            ready: true,
            observed_generation: updated.metadata.generation
        })
    );
    // Reconciling the updated object sends nothing.
    reconcile(Arc::new(updated), ctx.clone()).await?;
    assert_eq!(f.status_writes("one").unwrap_or(1), 1);
    assert!(has(
        &ctx,
        r#"controller_reconcile_total{controller="newresource",result="success"} 2"#
    ));
    Ok(())
}

#[tokio::test]
async fn a_stale_read_conflicts_instead_of_overwriting() -> anyhow::Result<()> {
    let f = fixture().await?;
    let stale = f.create("two").await?;
    f.api
        .patch(
            "two",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"foo": "newer"}})),
        )
        .await?;
    let ctx = f.context(LeadershipGate::always_open());
    let err = reconcile(Arc::new(stale), ctx.clone()).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    assert_eq!(
        f.api
            .get("two")
            .await?
            .status
            .and_then(|s| s.observed_generation),
        None
    );
    assert!(has(
        &ctx,
        r#"controller_reconcile_errors_total{controller="newresource",error_type="conflict"} 1"#
    ));
    Ok(())
}

/// The status write carries the object's UID, so a real API server answers a write to a
/// deleted object with 409 (the UID precondition), not 404: the controller re-reads and finds
/// it gone.
#[tokio::test]
async fn a_deleted_object_is_success() -> anyhow::Result<()> {
    let f = fixture().await?;
    let obj = f.create("three").await?;
    f.api.delete("three", &DeleteParams::default()).await?;
    let ctx = f.context(LeadershipGate::always_open());
    reconcile(Arc::new(obj), ctx.clone()).await?;
    assert!(has(
        &ctx,
        r#"controller_reconcile_total{controller="newresource",result="not_found"} 1"#
    ));
    assert!(
        !ctx.metrics
            .encode()
            .contains("controller_reconcile_errors_total{"),
        "a gone object is not an error"
    );
    Ok(())
}

/// An object deleted and created again under the same name is another object: the write for
/// the old one is done (the new one gets its own reconcile), and the new one keeps its status.
#[tokio::test]
async fn an_object_recreated_under_its_name_is_a_different_object() -> anyhow::Result<()> {
    let f = fixture().await?;
    let old = f.create("again").await?;
    f.api.delete("again", &DeleteParams::default()).await?;
    let new = f.create("again").await?;
    assert_ne!(old.metadata.uid, new.metadata.uid);
    let ctx = f.context(LeadershipGate::always_open());
    reconcile(Arc::new(old), ctx.clone()).await?;
    assert!(has(
        &ctx,
        r#"controller_reconcile_total{controller="newresource",result="not_found"} 1"#
    ));
    assert_eq!(f.api.get("again").await?.status, None);
    // The new object reconciles normally.
    reconcile(Arc::new(new), ctx.clone()).await?;
    assert!(f.api.get("again").await?.status.is_some_and(|s| s.ready));
    Ok(())
}

#[tokio::test]
async fn a_closed_gate_sends_nothing() -> anyhow::Result<()> {
    let f = fixture().await?;
    let obj = f.create("four").await?;
    let (_publisher, closed) = LeadershipGate::new();
    let ctx = f.context(closed);
    let err = reconcile(Arc::new(obj), ctx.clone()).await.unwrap_err();
    assert!(matches!(err, Error::NotLeader), "{err:?}");
    assert_eq!(f.status_writes("four").unwrap_or(0), 0);
    assert!(f.api.get("four").await?.status.is_none_or(|s| !s.ready));
    assert!(has(
        &ctx,
        r#"controller_reconcile_errors_total{controller="newresource",error_type="not_leader"} 1"#
    ));
    Ok(())
}
