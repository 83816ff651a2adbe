//! One reconcile against the API server (in memory, or the real cluster; see
//! `testkit::cluster`): the status write is a compare-and-swap, a deleted object is success,
//! nothing is sent when nothing changes or when the gate is closed.

use std::sync::Arc;

use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use newresource_controller::crd::{NewResource, NewResourceSpec, NewResourceStatus};
use newresource_controller::gate::LeadershipGate;
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
