//! The in-memory API server against kube-rs clients: each test pins one behaviour of the real
//! API server that our elector or controller depends on. They run against a real cluster too
//! (`E2E_USE_KUBECONFIG=1 KUBECONFIG=...`), except where a test needs the in-memory server's
//! knobs, which it says.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, Preconditions,
    WatchEvent, WatchParams,
};
use kube::core::ObjectMeta;
use kube::runtime::{WatchStreamExt, conditions, wait::await_condition, watcher};
use serde_json::json;
use testkit::apiserver::Config;
use testkit::cluster::TestCluster;
use testkit::fixtures::lease;
use testkit::fixtures::{newresource_api_resource, newresource_crd};
use testkit::outcome::{code_of, status_of};

/// An object's resourceVersion. It is opaque (an etcd revision on a real server): tests compare
/// resourceVersions for equality only, never order them or do arithmetic on them.
fn rv(meta: &ObjectMeta) -> &str {
    let rv = meta.resource_version.as_deref().unwrap_or_default();
    assert!(!rv.is_empty(), "the server sets a resourceVersion");
    rv
}

async fn install_crd(cluster: &TestCluster) -> anyhow::Result<Api<DynamicObject>> {
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client());
    let crd: CustomResourceDefinition = serde_json::from_value(newresource_crd())?;
    match crds.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_already_exists() => {}
        Err(e) => return Err(e.into()),
    }
    let established = await_condition(
        crds,
        "newresources.apps.newresource.com",
        conditions::is_crd_established(),
    );
    tokio::time::timeout(Duration::from_secs(30), established).await??;
    Ok(Api::namespaced_with(
        cluster.client(),
        cluster.namespace(),
        &newresource_api_resource(),
    ))
}

fn newresource(name: &str, spec_foo: &str) -> DynamicObject {
    let mut obj = DynamicObject::new(name, &newresource_api_resource());
    obj.data = json!({"spec": {"foo": spec_foo}});
    obj
}

/// Every write gets a resourceVersion no other write has, across types; a list carries one that
/// a watch resumes from, seeing only what changed after it. Order is not compared: the API
/// conventions make resourceVersions opaque.
#[tokio::test]
async fn resource_versions_are_unique_and_a_list_version_resumes_a_watch() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client(), cluster.namespace());
    let a = leases
        .create(&PostParams::default(), &lease("a", "x"))
        .await?;
    let cm = cms
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("c".into()),
                    ..ObjectMeta::default()
                },
                ..ConfigMap::default()
            },
        )
        .await?;
    let b = leases
        .create(&PostParams::default(), &lease("b", "x"))
        .await?;
    let mut b2 = b.clone();
    b2.spec.as_mut().unwrap().holder_identity = Some("y".into());
    let b2 = leases.replace("b", &PostParams::default(), &b2).await?;
    let versions = [
        rv(&a.metadata),
        rv(&cm.metadata),
        rv(&b.metadata),
        rv(&b2.metadata),
    ];
    let unique: std::collections::BTreeSet<&str> = versions.iter().copied().collect();
    assert_eq!(unique.len(), versions.len(), "{versions:?}");
    // A read returns the version the last write returned.
    assert_eq!(rv(&leases.get("b").await?.metadata), rv(&b2.metadata));

    let list = leases.list(&ListParams::default()).await?;
    let list_rv = rv(&list.metadata_as_object_meta()).to_string();
    leases
        .create(&PostParams::default(), &lease("after", "x"))
        .await?;
    let stream = leases
        .watch(&WatchParams::default().timeout(30), &list_rv)
        .await?;
    futures::pin_mut!(stream);
    match stream.try_next().await? {
        Some(WatchEvent::Added(l)) => assert_eq!(l.metadata.name.as_deref(), Some("after")),
        other => panic!("expected the lease created after the list, got {other:?}"),
    }
    // uid and creationTimestamp are set by the server.
    assert!(a.metadata.uid.is_some() && a.metadata.creation_timestamp.is_some());
    Ok(())
}

/// Helper so the list's resourceVersion reads like an object's.
trait ListRv {
    fn metadata_as_object_meta(&self) -> ObjectMeta;
}

impl<K: Clone> ListRv for kube::core::ObjectList<K> {
    fn metadata_as_object_meta(&self) -> ObjectMeta {
        ObjectMeta {
            resource_version: self.metadata.resource_version.clone(),
            ..ObjectMeta::default()
        }
    }
}

#[tokio::test]
async fn stale_update_conflicts_and_blind_update_follows_the_type_strategy() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    let first = leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await?;

    let mut second = first.clone();
    second.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let second = leases.replace("l", &PostParams::default(), &second).await?;
    assert_ne!(rv(&second.metadata), rv(&first.metadata));

    // Writing with the old resourceVersion is a 409 Conflict with the real message.
    let mut stale = first.clone();
    stale.spec.as_mut().unwrap().holder_identity = Some("c".into());
    let status = status_of(leases.replace("l", &PostParams::default(), &stale).await);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(
        status.message.contains("the object has been modified"),
        "{}",
        status.message
    );
    let details = status.details.expect("details");
    assert_eq!(details.name, "l");
    assert_eq!(details.group, "coordination.k8s.io");
    assert_eq!(details.kind, "leases");

    // Without a resourceVersion: Lease's strategy forbids unconditional updates, so the real
    // server answers 422 rather than overwriting blindly.
    let mut blind = first.clone();
    blind.metadata.resource_version = None;
    let status = status_of(leases.replace("l", &PostParams::default(), &blind).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        status.message,
        "leases.coordination.k8s.io \"l\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
    );

    // Types whose strategy allows it (ConfigMap) take a PUT without resourceVersion as an
    // unconditional update.
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client(), cluster.namespace());
    let mut cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("cm".into()),
            ..ObjectMeta::default()
        },
        data: Some([("k".to_string(), "1".to_string())].into()),
        ..ConfigMap::default()
    };
    cms.create(&PostParams::default(), &cm).await?;
    cm.data = Some([("k".to_string(), "2".to_string())].into());
    let replaced = cms.replace("cm", &PostParams::default(), &cm).await?;
    assert_eq!(
        replaced.data.and_then(|d| d.get("k").cloned()).as_deref(),
        Some("2")
    );
    Ok(())
}

#[tokio::test]
async fn create_existing_is_already_exists_and_missing_is_not_found() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    leases
        .create(&PostParams::default(), &lease("l", "a"))
        .await?;
    let status = status_of(
        leases
            .create(&PostParams::default(), &lease("l", "a"))
            .await,
    );
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );
    assert_eq!(
        status.message,
        "leases.coordination.k8s.io \"l\" already exists"
    );

    let status = status_of(leases.get("missing").await);
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(
        status.message,
        "leases.coordination.k8s.io \"missing\" not found"
    );
    assert_eq!(status.details.map(|d| d.name), Some("missing".to_string()));
    assert!(leases.get_opt("missing").await?.is_none());

    let status = status_of(leases.delete("missing", &DeleteParams::default()).await);
    assert_eq!(status.code, 404);

    // Writing into a namespace that does not exist is a NotFound for the namespace.
    let elsewhere: Api<Lease> = Api::namespaced(cluster.client(), "no-such-namespace");
    let status = status_of(
        elsewhere
            .create(&PostParams::default(), &lease("l", "a"))
            .await,
    );
    assert_eq!(status.code, 404);
    assert!(
        status
            .message
            .contains("namespaces \"no-such-namespace\" not found")
    );
    Ok(())
}

#[tokio::test]
async fn put_to_missing_lease_creates_it() -> anyhow::Result<()> {
    // Lease's registry strategy allows create-on-update (client-go's old elector relied on it).
    let cluster = TestCluster::start().await?;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    let created = leases
        .replace("fresh", &PostParams::default(), &lease("fresh", "a"))
        .await?;
    assert_eq!(created.spec.unwrap().holder_identity.as_deref(), Some("a"));
    Ok(())
}

#[tokio::test]
async fn lease_validation_and_microtime_precision() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());

    let mut bad = lease("bad", "a");
    bad.spec.as_mut().unwrap().lease_duration_seconds = Some(0);
    let status = status_of(leases.create(&PostParams::default(), &bad).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status
            .message
            .contains("spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"),
        "{}",
        status.message
    );

    let status = status_of(
        leases
            .create(&PostParams::default(), &lease("Not_A_DNS_Name", "a"))
            .await,
    );
    assert_eq!(status.code, 422);
    assert!(
        status.message.contains("RFC 1123 subdomain"),
        "{}",
        status.message
    );

    // MicroTime keeps microseconds (client-go renews with microsecond renewTime).
    let renew: jiff::Timestamp = "2026-03-04T05:06:07.123456Z".parse()?;
    let mut timed = lease("timed", "a");
    timed.spec.as_mut().unwrap().renew_time = Some(MicroTime(renew));
    leases.create(&PostParams::default(), &timed).await?;
    let back = leases.get("timed").await?;
    assert_eq!(back.spec.unwrap().renew_time.map(|t| t.0), Some(renew));

    // Unknown fields are dropped, as the real server's decoder does for built-in types.
    let raw: Api<DynamicObject> = Api::namespaced_with(
        cluster.client(),
        cluster.namespace(),
        &kube::core::ApiResource::erase::<Lease>(&()),
    );
    let mut obj = DynamicObject::new("unknown", &kube::core::ApiResource::erase::<Lease>(&()));
    obj.data = json!({"spec": {"holderIdentity": "a", "notAField": 1}});
    let stored = raw.create(&PostParams::default(), &obj).await?;
    assert_eq!(stored.data["spec"], json!({"holderIdentity": "a"}));
    Ok(())
}

#[tokio::test]
async fn concurrent_updaters_exactly_one_wins_per_resource_version() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    leases
        .create(&PostParams::default(), &lease("race", "nobody"))
        .await?;
    for round in 0..5 {
        let current = leases.get("race").await?;
        let mut tasks = Vec::new();
        for i in 0..16 {
            let leases = leases.clone();
            let mut mine = current.clone();
            mine.spec.as_mut().unwrap().holder_identity = Some(format!("r{round}-c{i}"));
            tasks.push(tokio::spawn(async move {
                leases.replace("race", &PostParams::default(), &mine).await
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            match t.await? {
                Ok(l) => winners.push(l),
                Err(e) => assert_eq!(code_of(Err::<(), _>(e)), 409),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one updater may win"
        );
        let now = leases.get("race").await?;
        assert_eq!(now.spec, winners[0].spec);
        // The winner's write is the one stored: the same resourceVersion, a new one.
        assert_eq!(rv(&now.metadata), rv(&winners[0].metadata));
        assert_ne!(rv(&now.metadata), rv(&current.metadata));
    }
    Ok(())
}

#[tokio::test]
async fn status_subresource_and_generation_for_custom_resources() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let nrs = install_crd(&cluster).await?;
    let mut obj = newresource("one", "bar");
    obj.data["status"] = json!({"ready": true});
    let created = nrs.create(&PostParams::default(), &obj).await?;
    assert_eq!(created.metadata.generation, Some(1));
    // Status is dropped on create when the status subresource is on.
    assert!(created.data.get("status").is_none());

    // A status write changes only status and leaves generation alone.
    let mut with_status = created.clone();
    with_status.data["status"] = json!({"ready": true, "observedGeneration": 1});
    with_status.data["spec"] = json!({"foo": "ignored"});
    let after_status = nrs
        .replace_status("one", &PostParams::default(), &with_status)
        .await?;
    assert_eq!(after_status.data["status"]["ready"], json!(true));
    assert_eq!(after_status.data["spec"]["foo"], json!("bar"));
    assert_eq!(after_status.metadata.generation, Some(1));

    // A main-resource write ignores status and bumps generation for a spec change.
    let mut spec_change = after_status.clone();
    spec_change.data["spec"]["foo"] = json!("baz");
    spec_change.data["status"] = json!({"ready": false});
    let after_spec = nrs
        .replace("one", &PostParams::default(), &spec_change)
        .await?;
    assert_eq!(after_spec.metadata.generation, Some(2));
    assert_eq!(after_spec.data["status"]["ready"], json!(true));

    // Metadata-only changes do not bump generation.
    let labelled = nrs
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await?;
    assert_eq!(labelled.metadata.generation, Some(2));

    // A status write with a stale resourceVersion conflicts.
    let status = status_of(
        nrs.replace_status("one", &PostParams::default(), &with_status)
            .await,
    );
    assert_eq!(status.code, 409);

    // A wrong type in status is rejected by the CRD schema.
    let status = status_of(
        nrs.patch_status(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": "yes"}})),
        )
        .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    Ok(())
}

#[tokio::test]
async fn identical_write_is_a_no_op() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let nrs = install_crd(&cluster).await?;
    nrs.create(&PostParams::default(), &newresource("same", "bar"))
        .await?;
    let patched = nrs
        .patch_status(
            "same",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}})),
        )
        .await?;
    let again = nrs
        .patch_status(
            "same",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}})),
        )
        .await?;
    assert_eq!(
        patched.metadata.resource_version,
        again.metadata.resource_version
    );
    Ok(())
}

#[tokio::test]
async fn patches_merge_json_and_strategic() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    let created = leases
        .create(&PostParams::default(), &lease("p", "a"))
        .await?;

    let merged = leases
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "b"}})),
        )
        .await?;
    assert_eq!(
        merged.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("b")
    );
    assert_eq!(
        merged.spec.as_ref().unwrap().lease_duration_seconds,
        Some(15)
    );

    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/holderIdentity", "value": "b"},
        {"op": "replace", "path": "/spec/holderIdentity", "value": "c"}
    ]))?;
    let jsoned = leases
        .patch("p", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await?;
    assert_eq!(
        jsoned.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("c")
    );

    let failed_test: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/holderIdentity", "value": "nope"}
    ]))?;
    let status = status_of(
        leases
            .patch(
                "p",
                &PatchParams::default(),
                &Patch::<()>::Json(failed_test),
            )
            .await,
    );
    assert_eq!(status.code, 422);

    let strategic = leases
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"holderIdentity": "d"}})),
        )
        .await?;
    assert_eq!(
        strategic.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("d")
    );

    // A resourceVersion in a patch is a precondition.
    let status = status_of(
        leases
            .patch(
                "p",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"resourceVersion": created.metadata.resource_version}, "spec": {"holderIdentity": "e"}})),
            )
            .await,
    );
    assert_eq!(status.code, 409);

    // Custom resources refuse strategic merge patch, as the real server does.
    let nrs = install_crd(&cluster).await?;
    nrs.create(&PostParams::default(), &newresource("s", "bar"))
        .await?;
    let status = status_of(
        nrs.patch(
            "s",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"foo": "x"}})),
        )
        .await,
    );
    assert_eq!(status.code, 415);
    Ok(())
}

#[tokio::test]
async fn list_selectors_and_pagination() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    for i in 0..7 {
        let mut l = lease(&format!("l{i}"), "a");
        l.metadata.labels = Some(
            [(
                "parity".to_string(),
                (if i % 2 == 0 { "even" } else { "odd" }).to_string(),
            )]
            .into(),
        );
        leases.create(&PostParams::default(), &l).await?;
    }
    let even = leases
        .list(&ListParams::default().labels("parity=even"))
        .await?;
    assert_eq!(even.items.len(), 4);
    let odd = leases
        .list(&ListParams::default().labels("parity in (odd),parity!=even"))
        .await?;
    assert_eq!(odd.items.len(), 3);
    let one = leases
        .list(&ListParams::default().fields("metadata.name=l3"))
        .await?;
    assert_eq!(
        one.items
            .iter()
            .map(|l| l.metadata.name.clone().unwrap())
            .collect::<Vec<_>>(),
        vec!["l3"]
    );

    let status = status_of(
        leases
            .list(&ListParams::default().fields("spec.holderIdentity=a"))
            .await,
    );
    assert_eq!(status.code, 400);

    let mut names = Vec::new();
    let mut params = ListParams::default().limit(3);
    loop {
        let page = leases.list(&params).await?;
        assert!(page.items.len() <= 3);
        names.extend(page.items.iter().map(|l| l.metadata.name.clone().unwrap()));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    names.sort();
    assert_eq!(names, (0..7).map(|i| format!("l{i}")).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test]
async fn watch_from_resource_version_replays_then_streams() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    let created = leases
        .create(&PostParams::default(), &lease("w", "a"))
        .await?;
    let start = created.metadata.resource_version.clone().unwrap();
    leases
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "b"}})),
        )
        .await?;

    let stream = leases
        .watch(
            &WatchParams::default().fields("metadata.name=w").timeout(30),
            &start,
        )
        .await?;
    futures::pin_mut!(stream);
    // The change made before the watch started is replayed...
    match stream.try_next().await? {
        Some(WatchEvent::Modified(l)) => {
            assert_eq!(l.spec.unwrap().holder_identity.as_deref(), Some("b"))
        }
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    // ...and later ones stream in order, ending with DELETED.
    leases
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "c"}})),
        )
        .await?;
    leases.delete("w", &DeleteParams::default()).await?;
    match stream.try_next().await? {
        Some(WatchEvent::Modified(l)) => {
            assert_eq!(l.spec.unwrap().holder_identity.as_deref(), Some("c"))
        }
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    match stream.try_next().await? {
        Some(WatchEvent::Deleted(l)) => assert_eq!(l.metadata.name.as_deref(), Some("w")),
        other => panic!("expected DELETED, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn watch_without_resource_version_starts_with_current_state() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    let labelled = |name: &str| {
        let mut l = lease(name, "a");
        l.metadata.labels = Some([("watched".to_string(), "yes".to_string())].into());
        l
    };
    leases
        .create(&PostParams::default(), &lease("unlabelled", "a"))
        .await?;
    leases
        .create(&PostParams::default(), &labelled("existing"))
        .await?;
    let stream = leases
        .watch(
            &WatchParams::default().labels("watched=yes").timeout(30),
            "0",
        )
        .await?;
    futures::pin_mut!(stream);
    // The current state first, filtered by the selector...
    match stream.try_next().await? {
        Some(WatchEvent::Added(l)) => assert_eq!(l.metadata.name.as_deref(), Some("existing")),
        other => panic!("expected ADDED, got {other:?}"),
    }
    // ...then live changes: the next event is the new object, not the unlabelled one.
    leases
        .create(&PostParams::default(), &labelled("later"))
        .await?;
    match stream.try_next().await? {
        Some(WatchEvent::Added(l)) => assert_eq!(l.metadata.name.as_deref(), Some("later")),
        other => panic!("expected ADDED, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn watch_selector_turns_non_matching_changes_into_deleted() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    let mut l = lease("sel", "a");
    l.metadata.labels = Some([("role".to_string(), "elector".to_string())].into());
    let created = leases.create(&PostParams::default(), &l).await?;
    let stream = leases
        .watch(
            &WatchParams::default().labels("role=elector").timeout(30),
            created.metadata.resource_version.as_deref().unwrap(),
        )
        .await?;
    futures::pin_mut!(stream);
    leases
        .patch(
            "sel",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"role": "other"}}})),
        )
        .await?;
    match stream.try_next().await? {
        Some(WatchEvent::Deleted(l)) => assert_eq!(l.metadata.name.as_deref(), Some("sel")),
        other => panic!("expected DELETED for an object leaving the selector, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn too_old_resource_version_is_410_expired() -> anyhow::Result<()> {
    // Needs a tiny history: in-memory only.
    let cluster = TestCluster::start_with(Config {
        history_limit: 3,
        ..Config::default()
    })
    .await?;
    if cluster.in_memory().is_none() {
        eprintln!("skipped against a real cluster: needs a small watch history");
        return Ok(());
    }
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    let first = leases
        .create(&PostParams::default(), &lease("old", "a"))
        .await?;
    for i in 0..5 {
        leases
            .patch(
                "old",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"holderIdentity": format!("h{i}")}})),
            )
            .await?;
    }
    let stream = leases
        .watch(
            &WatchParams::default(),
            first.metadata.resource_version.as_deref().unwrap(),
        )
        .await?;
    futures::pin_mut!(stream);
    match stream.try_next().await? {
        Some(WatchEvent::Error(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
            assert!(status.message.starts_with("too old resource version"));
        }
        other => panic!("expected an ERROR event with 410, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn bookmarks_carry_progress() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(Config {
        bookmark_interval: Duration::from_millis(50),
        ..Config::default()
    })
    .await?;
    let Some(_) = cluster.in_memory() else {
        eprintln!("skipped against a real cluster: bookmark interval is not ours to set");
        return Ok(());
    };
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    let created = leases
        .create(&PostParams::default(), &lease("b", "a"))
        .await?;
    let stream = leases
        .watch(
            &WatchParams::default().timeout(30),
            created.metadata.resource_version.as_deref().unwrap(),
        )
        .await?;
    futures::pin_mut!(stream);
    match stream.try_next().await? {
        Some(WatchEvent::Bookmark(b)) => {
            // A bookmark's version is one a watch resumes from: what follows it arrives, what
            // came before it (the creation of "b") does not.
            let stream = leases
                .watch(
                    &WatchParams::default().timeout(30),
                    &b.metadata.resource_version,
                )
                .await?;
            futures::pin_mut!(stream);
            leases
                .create(&PostParams::default(), &lease("c", "a"))
                .await?;
            loop {
                match stream.try_next().await? {
                    Some(WatchEvent::Bookmark(_)) => continue,
                    Some(WatchEvent::Added(l)) => {
                        assert_eq!(l.metadata.name.as_deref(), Some("c"));
                        break;
                    }
                    other => panic!("expected the lease created after the bookmark, got {other:?}"),
                }
            }
        }
        other => panic!("expected BOOKMARK, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn kube_runtime_watcher_sees_every_change() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    leases
        .create(&PostParams::default(), &lease("before", "a"))
        .await?;
    let events = watcher(leases.clone(), watcher::Config::default()).boxed();
    let mut objects = events.applied_objects();
    let first = objects.try_next().await?.expect("object");
    assert_eq!(first.metadata.name.as_deref(), Some("before"));
    leases
        .create(&PostParams::default(), &lease("after", "a"))
        .await?;
    let second = objects.try_next().await?.expect("object");
    assert_eq!(second.metadata.name.as_deref(), Some("after"));
    Ok(())
}

#[tokio::test]
async fn finalizers_hold_deletion_until_cleared() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let nrs = install_crd(&cluster).await?;
    let mut obj = newresource("fin", "bar");
    obj.metadata.finalizers = Some(vec!["apps.newresource.com/cleanup".into()]);
    nrs.create(&PostParams::default(), &obj).await?;
    nrs.delete("fin", &DeleteParams::default()).await?;
    let marked = nrs.get("fin").await?;
    assert!(marked.metadata.deletion_timestamp.is_some());
    nrs.patch(
        "fin",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    assert!(nrs.get_opt("fin").await?.is_none());
    Ok(())
}

#[tokio::test]
async fn delete_preconditions_are_checked() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    let created = leases
        .create(&PostParams::default(), &lease("d", "a"))
        .await?;
    let wrong = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: Some("1".into()),
            uid: None,
        }),
        ..DeleteParams::default()
    };
    let status = status_of(leases.delete("d", &wrong).await);
    assert_eq!(status.code, 409);
    let right = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: created.metadata.resource_version.clone(),
            uid: created.metadata.uid.clone(),
        }),
        ..DeleteParams::default()
    };
    leases.delete("d", &right).await?;
    assert!(leases.get_opt("d").await?.is_none());
    Ok(())
}

#[tokio::test]
async fn crd_lifecycle_serves_and_removes_custom_resources() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let nrs = install_crd(&cluster).await?;
    nrs.create(&PostParams::default(), &newresource("a", "x"))
        .await?;
    let discovery = kube::discovery::Discovery::new(cluster.client())
        .run()
        .await?;
    let found = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .any(|(ar, caps)| {
            ar.kind == "NewResource" && caps.supports_operation(kube::discovery::verbs::WATCH)
        });
    assert!(
        found,
        "discovery lists NewResource after the CRD is created"
    );

    if cluster.in_memory().is_some() {
        // Deleting the CRD removes its objects and stops serving the resource.
        let crds: Api<CustomResourceDefinition> = Api::all(cluster.client());
        crds.delete(
            "newresources.apps.newresource.com",
            &DeleteParams::default(),
        )
        .await?;
        let status = status_of(nrs.list(&ListParams::default()).await);
        assert_eq!(status.code, 404);
    }
    Ok(())
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_contents() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    if cluster.in_memory().is_none() {
        eprintln!("skipped against a real cluster: namespace deletion is asynchronous there");
        return Ok(());
    }
    let namespaces: Api<Namespace> = Api::all(cluster.client());
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    leases
        .create(&PostParams::default(), &lease("gone", "a"))
        .await?;
    namespaces
        .delete(cluster.namespace(), &DeleteParams::default())
        .await?;
    assert!(leases.get_opt("gone").await?.is_none());
    assert!(namespaces.get_opt(cluster.namespace()).await?.is_none());
    Ok(())
}

#[tokio::test]
async fn generate_name_gets_a_random_suffix() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    let mut l = lease("", "a");
    l.metadata.name = None;
    l.metadata.generate_name = Some("gen-".into());
    let a = leases.create(&PostParams::default(), &l).await?;
    let b = leases.create(&PostParams::default(), &l).await?;
    let (a, b) = (a.metadata.name.unwrap(), b.metadata.name.unwrap());
    assert!(a.starts_with("gen-") && a.len() == "gen-".len() + 5);
    assert_ne!(a, b);
    Ok(())
}

#[tokio::test]
async fn events_written_through_events_api_are_read_as_core_events() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference};
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let cluster = TestCluster::start().await?;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    let held = leases
        .create(&PostParams::default(), &lease("evented", "a"))
        .await?;
    let reference = ObjectReference {
        api_version: Some("coordination.k8s.io/v1".into()),
        kind: Some("Lease".into()),
        name: held.metadata.name.clone(),
        namespace: held.metadata.namespace.clone(),
        uid: held.metadata.uid.clone(),
        ..ObjectReference::default()
    };
    // kube-runtime's recorder writes events.k8s.io/v1 Events...
    let recorder = Recorder::new(
        cluster.client(),
        Reporter {
            controller: "leader-sidecar".into(),
            instance: Some("pod-a".into()),
        },
    );
    recorder
        .publish(
            &Event {
                type_: EventType::Normal,
                reason: "LeaderElection".into(),
                note: Some("pod-a became leader".into()),
                action: "Acquire".into(),
                secondary: None,
            },
            &reference,
        )
        .await?;
    // ...which kubectl describe finds as core v1 Events about the object.
    let events: Api<CoreEvent> = Api::namespaced(cluster.client(), cluster.namespace());
    let selector = format!(
        "involvedObject.name=evented,involvedObject.namespace={},involvedObject.uid={}",
        cluster.namespace(),
        held.metadata.uid.as_deref().unwrap_or_default()
    );
    let found = events
        .list(&ListParams::default().fields(&selector))
        .await?;
    assert_eq!(found.items.len(), 1);
    let event = &found.items[0];
    assert_eq!(event.message.as_deref(), Some("pod-a became leader"));
    assert_eq!(event.reason.as_deref(), Some("LeaderElection"));
    assert_eq!(event.reporting_component.as_deref(), Some("leader-sidecar"));
    Ok(())
}

#[tokio::test]
async fn create_with_resource_version_is_refused() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    let mut l = lease("with-rv", "a");
    l.metadata.resource_version = Some("12".into());
    let status = status_of(leases.create(&PostParams::default(), &l).await);
    assert_eq!(status.code, 500);
    assert_eq!(
        status.message,
        "resourceVersion should not be set on objects to be created"
    );
    Ok(())
}

#[tokio::test]
async fn watch_ends_after_timeout_seconds() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    let stream = leases
        .watch(&WatchParams::default().timeout(1), "0")
        .await?;
    futures::pin_mut!(stream);
    // Nothing exists, so the first thing that happens is the server closing the stream.
    assert!(stream.try_next().await?.is_none());
    Ok(())
}

#[tokio::test]
async fn malformed_bodies_get_4xx_for_every_type() -> anyhow::Result<()> {
    // In-memory only: it walks the server's own type list.
    let server = testkit::apiserver::ApiServer::start(Config::default()).await?;
    let crds: Api<CustomResourceDefinition> = Api::all(server.admin_client());
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(newresource_crd())?,
    )
    .await?;
    let client = server.admin_client();
    let bodies = [
        "[]",
        "\"x\"",
        "{",
        r#"{"metadata": "x"}"#,
        r#"{"metadata": {"name": 5}}"#,
        r#"{"metadata": {"name": "a", "labels": "x"}}"#,
        r#"{"metadata": {"name": "a"}, "spec": "x"}"#,
        r#"{"metadata": {"name": "a"}, "spec": {"names": "x", "versions": "x"}}"#,
        r#"{"metadata": {"name": "a"}, "status": "x", "rules": "x", "subjects": 1}"#,
        r#"{"metadata": {"name": "a", "resourceVersion": "x"}, "spec": [1]}"#,
    ];
    for rt in server.store().types() {
        let base = if rt.group.is_empty() {
            format!("/api/{}", rt.version)
        } else {
            format!("/apis/{}/{}", rt.group, rt.version)
        };
        let collection = if rt.namespaced {
            format!("{base}/namespaces/default/{}", rt.plural)
        } else {
            format!("{base}/{}", rt.plural)
        };
        for body in bodies {
            for (method, uri, content_type) in [
                ("POST", collection.clone(), "application/json"),
                ("PUT", format!("{collection}/a"), "application/json"),
                (
                    "PATCH",
                    format!("{collection}/default"),
                    "application/merge-patch+json",
                ),
                (
                    "PATCH",
                    format!("{collection}/default"),
                    "application/json-patch+json",
                ),
                (
                    "PATCH",
                    format!("{collection}/default"),
                    "application/strategic-merge-patch+json",
                ),
                ("DELETE", format!("{collection}/a"), "application/json"),
            ] {
                let req = http::Request::builder()
                    .method(method)
                    .uri(&uri)
                    .header("content-type", content_type)
                    .body(body.as_bytes().to_vec())?;
                let resp = client.send(req.map(Into::into)).await?;
                let code = resp.status().as_u16();
                assert!(
                    (200..500).contains(&code),
                    "{method} {uri} with {body}: {code}"
                );
            }
        }
    }
    Ok(())
}

/// The UID in an update's body is a precondition, checked before the server looks for the
/// object: a write naming the UID of a deleted object is a 409 on a real server, not a 404;
/// without a UID it is a 404. The same for an object created again under the same name.
#[tokio::test]
async fn an_update_carrying_a_deleted_objects_uid_conflicts() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let nrs = install_crd(&cluster).await?;
    let created = nrs
        .create(&PostParams::default(), &newresource("gone", "x"))
        .await?;
    nrs.delete("gone", &DeleteParams::default()).await?;
    let mut with_status = created.clone();
    with_status.data["status"] = json!({"ready": true});

    let status = status_of(
        nrs.replace_status("gone", &PostParams::default(), &with_status)
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    let uid = created.metadata.uid.clone().unwrap_or_default();
    assert!(
        status.message.contains(&format!(
            "Precondition failed: UID in precondition: {uid}, UID in object meta: "
        )),
        "{}",
        status.message
    );
    // The main resource too.
    assert_eq!(
        code_of(
            nrs.replace("gone", &PostParams::default(), &with_status)
                .await
        ),
        409
    );
    // Without the UID, the same write finds nothing.
    let mut anonymous = with_status.clone();
    anonymous.metadata.uid = None;
    assert_eq!(
        code_of(
            nrs.replace_status("gone", &PostParams::default(), &anonymous)
                .await
        ),
        404
    );

    // Created again: the old UID is still refused, before the resourceVersion is looked at.
    let again = nrs
        .create(&PostParams::default(), &newresource("gone", "y"))
        .await?;
    let mut stale = with_status.clone();
    stale.metadata.resource_version = again.metadata.resource_version.clone();
    let status = status_of(
        nrs.replace_status("gone", &PostParams::default(), &stale)
            .await,
    );
    assert_eq!(status.code, 409);
    assert!(
        status
            .message
            .contains("Precondition failed: UID in precondition"),
        "{}",
        status.message
    );
    Ok(())
}

#[tokio::test]
async fn per_type_strategies_match_the_real_registry() -> anyhow::Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Event as CoreEvent, Service, ServiceAccount};
    use k8s_openapi::api::events::v1::Event as EventsV1;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let cluster = TestCluster::start().await?;
    let (client, ns) = (cluster.client(), cluster.namespace());

    // Services need RFC 1035 names (a letter first).
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "1abc"}}))?;
    assert_eq!(
        code_of(services.create(&PostParams::default(), &svc).await),
        422
    );

    // PodDisruptionBudgets refuse PUT without resourceVersion.
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    let pdb: PodDisruptionBudget = serde_json::from_value(
        json!({"metadata": {"name": "pdb"}, "spec": {"maxUnavailable": 1}}),
    )?;
    pdbs.create(&PostParams::default(), &pdb).await?;
    assert_eq!(
        code_of(pdbs.replace("pdb", &PostParams::default(), &pdb).await),
        422
    );

    // DELETE answers with the object for service accounts, with a Status for custom resources.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "sa"}}))?;
    sas.create(&PostParams::default(), &sa).await?;
    assert!(sas.delete("sa", &DeleteParams::default()).await?.is_left());
    let nrs = install_crd(&cluster).await?;
    nrs.create(&PostParams::default(), &newresource("gone", "x"))
        .await?;
    assert!(
        nrs.delete("gone", &DeleteParams::default())
            .await?
            .is_right()
    );

    // An Event lives in the namespace of the object it is about: a real server refuses one whose
    // involvedObject names another namespace, or none (outside "default").
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), ns);
    for involved in [
        json!({"kind": "Lease", "name": "l", "namespace": "elsewhere"}),
        json!({"kind": "Lease", "name": "l"}),
    ] {
        let elsewhere: CoreEvent = serde_json::from_value(json!({
            "metadata": {"name": "elsewhere"},
            "involvedObject": involved,
            "source": {"component": "leader-sidecar"},
            "reason": "R"
        }))?;
        let status = status_of(core.create(&PostParams::default(), &elsewhere).await);
        assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
        assert!(
            status.message.contains("involvedObject.namespace")
                && status.message.contains("does not match event.namespace"),
            "{}",
            status.message
        );
    }
    // Through events.k8s.io/v1 (`regarding`), a new-style Event (with eventTime) must name
    // the namespace of its object outside "default" and "kube-system"; that it matches its own
    // is not checked. It also needs its reporting controller, instance and action.
    let v1: Api<EventsV1> = Api::namespaced(client.clone(), ns);
    let no_namespace: EventsV1 = serde_json::from_value(json!({
        "metadata": {"name": "nowhere"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "regarding": {"kind": "Lease", "name": "l"},
        "reportingController": "example.com/other",
        "reportingInstance": "pod-a",
        "action": "Acquire",
        "reason": "R",
        "type": "Normal"
    }))?;
    let status = status_of(v1.create(&PostParams::default(), &no_namespace).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status.message.contains("involvedObject.namespace"),
        "{}",
        status.message
    );
    let mut elsewhere = no_namespace.clone();
    elsewhere.metadata.name = Some("elsewhere".into());
    if let Some(r) = elsewhere.regarding.as_mut() {
        r.namespace = Some("elsewhere".into());
    }
    v1.create(&PostParams::default(), &elsewhere).await?;
    let incomplete: EventsV1 = serde_json::from_value(json!({
        "metadata": {"name": "incomplete"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "regarding": {"kind": "Lease", "name": "l", "namespace": ns},
        "reason": "R",
        "type": "Normal"
    }))?;
    let status = status_of(v1.create(&PostParams::default(), &incomplete).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    for missing in ["reportingController", "reportingInstance", "action"] {
        assert!(
            status
                .message
                .contains(&format!("{missing}: Required value")),
            "{}",
            status.message
        );
    }

    // Core Events only need path-segment names; events.k8s.io validates subdomains.
    let event: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "Lease.Upper"},
        "involvedObject": {"kind": "Lease", "name": "l", "namespace": ns},
        "source": {"component": "leader-sidecar"},
        "reason": "R"
    }))?;
    core.create(&PostParams::default(), &event).await?;
    let strict: EventsV1 = serde_json::from_value(json!({
        "metadata": {"name": "Lease.Upper2"},
        "eventTime": "2026-01-01T00:00:00.000000Z"
    }))?;
    assert_eq!(
        code_of(v1.create(&PostParams::default(), &strict).await),
        422
    );
    // `source` selects on source.component.
    let by_source = core
        .list(&ListParams::default().fields("source=leader-sidecar"))
        .await?;
    assert_eq!(by_source.items.len(), 1);

    // Deployments count annotation changes in generation.
    let deployments: Api<Deployment> = Api::namespaced(client, ns);
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
    }))?;
    deployments.create(&PostParams::default(), &d).await?;
    let annotated = deployments
        .patch(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"k": "v"}}})),
        )
        .await?;
    assert_eq!(annotated.metadata.generation, Some(2));
    Ok(())
}

#[tokio::test]
async fn delete_collection_metadata_lists_and_initial_events_bookmark() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    for (name, team) in [("a", "x"), ("b", "x"), ("c", "y")] {
        let mut l = lease(name, "h");
        l.metadata.labels = Some([("team".to_string(), team.to_string())].into());
        leases.create(&PostParams::default(), &l).await?;
    }
    // Metadata-only lists (PartialObjectMetadataList) carry names but no spec.
    let metadata = leases.list_metadata(&ListParams::default()).await?;
    assert_eq!(metadata.items.len(), 3);
    assert_eq!(metadata.items[0].metadata.name.as_deref(), Some("a"));

    // deletecollection honours the label selector.
    leases
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("team=x"),
        )
        .await?;
    let left = leases.list(&ListParams::default()).await?;
    assert_eq!(
        left.items
            .iter()
            .map(|l| l.metadata.name.clone().unwrap_or_default())
            .collect::<Vec<_>>(),
        vec!["c"]
    );

    // sendInitialEvents: current objects, then a bookmark marking their end.
    if cluster.in_memory().is_some() {
        let path = format!(
            "/apis/coordination.k8s.io/v1/namespaces/{}/leases?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=5",
            cluster.namespace()
        );
        let req = http::Request::get(path).body(Vec::new())?;
        let lines = cluster.client().request_events::<Lease>(req).await?;
        futures::pin_mut!(lines);
        match lines.try_next().await? {
            Some(WatchEvent::Added(l)) => assert_eq!(l.metadata.name.as_deref(), Some("c")),
            other => panic!("expected ADDED, got {other:?}"),
        }
        match lines.try_next().await? {
            Some(WatchEvent::Bookmark(b)) => assert_eq!(
                b.metadata
                    .annotations
                    .get("k8s.io/initial-events-end")
                    .map(String::as_str),
                Some("true")
            ),
            other => panic!("expected the initial-events-end BOOKMARK, got {other:?}"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn crd_selectable_fields_are_field_selectors() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    if cluster.in_memory().is_none() {
        eprintln!("skipped against a real cluster: would change the shared NewResource CRD");
        return Ok(());
    }
    let mut crd = newresource_crd();
    crd["spec"]["versions"][0]["selectableFields"] = json!([{"jsonPath": ".spec.foo"}]);
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client());
    crds.create(&PostParams::default(), &serde_json::from_value(crd)?)
        .await?;
    let nrs: Api<DynamicObject> = Api::namespaced_with(
        cluster.client(),
        cluster.namespace(),
        &newresource_api_resource(),
    );
    nrs.create(&PostParams::default(), &newresource("one", "alpha"))
        .await?;
    nrs.create(&PostParams::default(), &newresource("two", "beta"))
        .await?;
    let found = nrs
        .list(&ListParams::default().fields("spec.foo=beta"))
        .await?;
    assert_eq!(found.items.len(), 1);
    assert_eq!(found.items[0].metadata.name.as_deref(), Some("two"));
    // A field that is not selectable is still refused.
    let status = status_of(nrs.list(&ListParams::default().fields("spec.bar=x")).await);
    assert_eq!(status.code, 400);
    Ok(())
}

fn pod(name: &str) -> anyhow::Result<k8s_openapi::api::core::v1::Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "x"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))?)
}

/// What `--pod-role-label` relies on: a merge patch of a Pod's labels carrying the
/// `resourceVersion` it read is refused with 409 once the Pod changed, and applied otherwise.
#[tokio::test]
async fn pod_label_patches_honour_their_resource_version() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(cluster.client(), cluster.namespace());
    let created = pods
        .create(&PostParams::default(), &pod("labelled")?)
        .await?;
    let read_rv = created.metadata.resource_version.clone();
    let label = |value: &str, rv: &Option<String>| json!({"metadata": {"resourceVersion": rv, "labels": {"example.com/role": value}}});
    let patched = pods
        .patch(
            "labelled",
            &PatchParams::default(),
            &Patch::Merge(label("leader", &read_rv)),
        )
        .await?;
    let labels = patched.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("example.com/role").map(String::as_str),
        Some("leader")
    );
    assert_eq!(
        labels.get("app").map(String::as_str),
        Some("x"),
        "other labels kept"
    );
    // A second writer that read before the first wrote.
    let stale = pods
        .patch(
            "labelled",
            &PatchParams::default(),
            &Patch::Merge(label("standby", &read_rv)),
        )
        .await;
    assert_eq!(code_of(stale), 409);
    let now = pods.get("labelled").await?;
    assert_eq!(
        now.metadata
            .labels
            .unwrap_or_default()
            .get("example.com/role")
            .map(String::as_str),
        Some("leader")
    );
    Ok(())
}

/// A difference (docs/inmem-apiserver.md, "Pods are objects only"): a Pod's spec can be
/// changed here, where a real server refuses most spec changes with 422. In memory only.
#[tokio::test]
async fn pods_are_objects_only_and_their_spec_can_change() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    if cluster.in_memory().is_none() {
        eprintln!("in memory only: shows a difference from the real server");
        return Ok(());
    }
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(cluster.client(), cluster.namespace());
    pods.create(&PostParams::default(), &pod("mutable")?)
        .await?;
    let changed = pods
        .patch(
            "mutable",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"serviceAccountName": "other"}})),
        )
        .await?;
    let spec = changed.spec.unwrap_or_default();
    assert_eq!(spec.service_account_name.as_deref(), Some("other"));
    assert!(
        changed.status.is_none_or(|s| s.phase.is_none()),
        "nothing runs it"
    );
    Ok(())
}

// Protobuf (`application/vnd.kubernetes.protobuf`)

mod protobuf {
    use http_body_util::BodyExt;
    use serde_json::{Value, json};
    use testkit::apiserver::protobuf::{codec, split_watch_frame};
    use testkit::apiserver::{ApiServer, Config};
    use testkit::fixtures::newresource_crd;

    const PB: &str = "application/vnd.kubernetes.protobuf";
    const NS: &str = "default";

    struct Answer {
        code: u16,
        content_type: String,
        body: Vec<u8>,
    }

    impl Answer {
        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).unwrap_or_else(|e| {
                panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body))
            })
        }
        fn protobuf(&self) -> Value {
            assert_eq!(
                self.content_type,
                PB,
                "{}",
                String::from_utf8_lossy(&self.body)
            );
            codec::decode_object(&self.body).expect("a protobuf object")
        }
    }

    async fn call(
        client: &kube::Client,
        method: &str,
        uri: &str,
        content_type: &str,
        accept: Option<&str>,
        body: Vec<u8>,
    ) -> anyhow::Result<Answer> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", content_type);
        if let Some(accept) = accept {
            req = req.header("accept", accept);
        }
        let resp = client.send(req.body(body)?.map(Into::into)).await?;
        let code = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = resp.into_body().collect().await?.to_bytes().to_vec();
        Ok(Answer {
            code,
            content_type,
            body,
        })
    }

    /// One object of each of the 16 built-in kinds, exercising the special JSON forms
    /// (quantities, int-or-string, times, bytes, inline embeddings, CRD schemas).
    fn fixtures() -> Vec<(&'static str, Value)> {
        vec![
            (
                "/api/v1/namespaces",
                json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "NAME", "labels": {"team": "a"}}}),
            ),
            (
                "/api/v1/namespaces/default/serviceaccounts",
                json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "NAME"}, "automountServiceAccountToken": false,
                "secrets": [{"name": "s"}]}),
            ),
            (
                "/api/v1/namespaces/default/configmaps",
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "NAME", "annotations": {"a": "b"}},
                "data": {"mode": "fast"}, "binaryData": {"bin": "AAEC/w=="}}),
            ),
            (
                "/api/v1/namespaces/default/pods",
                json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "NAME", "labels": {"app": "x"}},
                "spec": {"containers": [{"name": "c", "image": "i",
                    "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"}],
                    "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}},
                    "readinessProbe": {"httpGet": {"port": "http", "path": "/ready"}, "periodSeconds": 5},
                    "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}],
                    "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
                    "volumes": [{"name": "v", "configMap": {"name": "cm"}}],
                    "terminationGracePeriodSeconds": 0}}),
            ),
            (
                "/api/v1/namespaces/default/secrets",
                json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "NAME"}, "type": "Opaque", "data": {"k": "c2VjcmV0"}}),
            ),
            (
                "/api/v1/namespaces/default/services",
                json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "NAME"},
                "spec": {"selector": {"app": "x"}, "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}}),
            ),
            (
                "/api/v1/namespaces/default/events",
                json!({"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": "NAME"},
                "involvedObject": {"kind": "Lease", "name": "l", "namespace": NS},
                "reason": "Elected", "message": "m", "count": 3, "type": "Normal",
                "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:01Z",
                "source": {"component": "leader-sidecar"}}),
            ),
            (
                "/apis/events.k8s.io/v1/namespaces/default/events",
                json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                "metadata": {"name": "NAME"},
                "eventTime": "2026-01-01T00:00:00.123456Z", "reportingController": "c",
                "reportingInstance": "i", "action": "Elect", "reason": "Elected", "type": "Normal",
                "regarding": {"kind": "Lease", "name": "l", "namespace": NS}}),
            ),
            (
                "/apis/coordination.k8s.io/v1/namespaces/default/leases",
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "NAME"},
                "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15, "leaseTransitions": 0,
                    "acquireTime": "2026-01-01T00:00:00.000001Z", "renewTime": "2026-01-01T00:00:02.500000Z"}}),
            ),
            (
                "/apis/apps/v1/namespaces/default/deployments",
                json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "NAME"},
                "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "x"}},
                    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                    "template": {"metadata": {"labels": {"app": "x"}},
                        "spec": {"containers": [{"name": "c", "image": "i"}]}}}}),
            ),
            (
                "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
                json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": {"name": "NAME"},
                "spec": {"minAvailable": "50%", "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["x"]}]}}}),
            ),
            (
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                newresource_crd(),
            ),
            (
                "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "NAME"},
                "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"], "resourceNames": ["l"]}]}),
            ),
            (
                "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "NAME"},
                "rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]}),
            ),
            (
                "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "NAME"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
                "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": NS}]}),
            ),
            (
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "NAME"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "r"},
                "subjects": [{"kind": "Group", "name": "g", "apiGroup": "rbac.authorization.k8s.io"}]}),
            ),
        ]
    }

    /// The fixture with a name (distinct per collection: core and events.k8s.io Events share
    /// one storage).
    fn named(mut object: Value, name: &str) -> Value {
        // The CRD's name is fixed by its group and plural.
        if object["kind"] != "CustomResourceDefinition" {
            object["metadata"]["name"] = json!(name);
        }
        object
    }

    /// What differs between two creations of the same object.
    fn comparable(mut object: Value) -> Value {
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            for key in ["name", "uid", "resourceVersion", "creationTimestamp"] {
                meta.remove(key);
            }
        }
        if let Some(labels) = object
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            labels.remove("kubernetes.io/metadata.name");
        }
        object
    }

    #[tokio::test]
    async fn every_built_in_kind_round_trips_through_protobuf() -> anyhow::Result<()> {
        let server = ApiServer::start(Config::default()).await?;
        let client = server.admin_client();
        for (collection, fixture) in fixtures() {
            let kind = fixture["kind"].as_str().unwrap_or_default().to_string();
            let is_crd = kind == "CustomResourceDefinition";
            // JSON POST: the server's normalised object.
            let from_json = call(
                &client,
                "POST",
                collection,
                "application/json",
                None,
                serde_json::to_vec(&named(
                    fixture.clone(),
                    &format!("via-json-{}", collection.len()),
                ))?,
            )
            .await?;
            assert_eq!(
                from_json.code,
                201,
                "{kind}: {}",
                String::from_utf8_lossy(&from_json.body)
            );
            let stored = from_json.json();
            // JSON -> protobuf -> JSON is the identity on it.
            let encoded = codec::encode_object(&stored)?;
            assert_eq!(codec::decode_object(&encoded)?, stored, "{kind}");

            // An Accept: protobuf GET answers the same object in protobuf.
            let name = stored["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let item = format!("{collection}/{name}");
            let got_json = call(&client, "GET", &item, "", None, Vec::new())
                .await?
                .json();
            let got_pb = call(&client, "GET", &item, "", Some(PB), Vec::new()).await?;
            assert_eq!(got_pb.code, 200);
            assert_eq!(got_pb.protobuf(), got_json, "{kind}");
            // So does a list, with its list kind.
            let list_pb = call(&client, "GET", collection, "", Some(PB), Vec::new())
                .await?
                .protobuf();
            let list_json = call(&client, "GET", collection, "", None, Vec::new())
                .await?
                .json();
            assert_eq!(list_pb, list_json, "{kind} list");

            if is_crd {
                // Same name: remove it, then create it again from protobuf.
                let gone = call(&client, "DELETE", &item, "", None, Vec::new()).await?;
                assert_eq!(gone.code, 200);
            }
            // A protobuf POST creates the same object as the JSON POST (client's Accept:
            // protobuf, as client-go's typed clients send).
            let body = codec::encode_object(&named(
                fixture.clone(),
                &format!("via-pb-{}", collection.len()),
            ))?;
            let from_pb = call(
                &client,
                "POST",
                collection,
                PB,
                Some(&format!("{PB}, application/json")),
                body,
            )
            .await?;
            assert_eq!(
                from_pb.code,
                201,
                "{kind}: {:?}",
                codec::decode_object(&from_pb.body)
            );
            let created = from_pb.protobuf();
            assert_eq!(comparable(created), comparable(stored), "{kind}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn errors_malformed_bodies_and_custom_resources() -> anyhow::Result<()> {
        let server = ApiServer::start(Config::default()).await?;
        let client = server.admin_client();
        let leases = "/apis/coordination.k8s.io/v1/namespaces/default/leases";

        // An error is a protobuf Status when only protobuf is accepted.
        let missing = call(
            &client,
            "GET",
            &format!("{leases}/nope"),
            "",
            Some(PB),
            Vec::new(),
        )
        .await?;
        assert_eq!(missing.code, 404);
        let status = missing.protobuf();
        assert_eq!(
            (
                status["kind"].as_str(),
                status["code"].as_i64(),
                status["reason"].as_str()
            ),
            (Some("Status"), Some(404), Some("NotFound")),
            "{status}"
        );

        // So is a 401 (authentication fails before anything else).
        let stranger = testkit::apiserver::client_for(&server.url(), Some("no-such-token"));
        let unauthorized = call(&stranger, "GET", leases, "", Some(PB), Vec::new()).await?;
        assert_eq!(unauthorized.code, 401);
        assert_eq!(unauthorized.protobuf()["reason"], "Unauthorized");

        // Garbage and truncated bodies are 400 Status, never a crash.
        let good = codec::encode_object(
            &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "t"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 5}}),
        )?;
        for body in [
            b"garbage".to_vec(),
            b"k8s\0\xff\xff".to_vec(),
            good[..good.len() - 3].to_vec(),
            codec::encode_unknown("v1", "NoSuchKind", b""),
        ] {
            let answer = call(&client, "POST", leases, PB, None, body).await?;
            assert_eq!(
                answer.code,
                400,
                "{}",
                String::from_utf8_lossy(&answer.body)
            );
            assert_eq!(answer.json()["reason"], "BadRequest");
        }
        let created = call(&client, "POST", leases, PB, None, good).await?;
        assert_eq!(
            created.code,
            201,
            "{}",
            String::from_utf8_lossy(&created.body)
        );

        // Custom resources have no protobuf form: a body is 415, an Accept of only protobuf 406
        // (answered in JSON), protobuf-or-JSON falls back to JSON.
        let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
        let crd = call(
            &client,
            "POST",
            crds,
            "application/json",
            None,
            serde_json::to_vec(&newresource_crd())?,
        )
        .await?;
        assert_eq!(crd.code, 201);
        let group = crd.json()["spec"]["group"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let version = crd.json()["spec"]["versions"][0]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let plural = crd.json()["spec"]["names"]["plural"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let kind = crd.json()["spec"]["names"]["kind"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let crs = format!("/apis/{group}/{version}/namespaces/default/{plural}");
        let cr = json!({"apiVersion": format!("{group}/{version}"), "kind": kind, "metadata": {"name": "x"}});
        let mut body = b"k8s\0".to_vec();
        body.extend(serde_json::to_vec(&cr)?);
        let refused = call(&client, "POST", &crs, PB, None, body).await?;
        assert_eq!(
            refused.code,
            415,
            "{}",
            String::from_utf8_lossy(&refused.body)
        );
        assert_eq!(refused.json()["reason"], "UnsupportedMediaType");
        let only_pb = call(&client, "GET", &crs, "", Some(PB), Vec::new()).await?;
        assert_eq!(only_pb.code, 406);
        assert_eq!(only_pb.json()["reason"], "NotAcceptable");
        let either = call(
            &client,
            "GET",
            &crs,
            "",
            Some(&format!("{PB}, application/json")),
            Vec::new(),
        )
        .await?;
        assert_eq!(
            (either.code, either.content_type.as_str()),
            (200, "application/json")
        );
        Ok(())
    }

    #[tokio::test]
    async fn protobuf_watch_streams_length_prefixed_watch_events() -> anyhow::Result<()> {
        let server = ApiServer::start(Config::default()).await?;
        let client = server.admin_client();
        let leases = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "w"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 5}});
        let created = call(
            &client,
            "POST",
            leases,
            "application/json",
            None,
            serde_json::to_vec(&lease)?,
        )
        .await?;
        assert_eq!(created.code, 201);
        let req = http::Request::get(format!("{leases}?watch=1"))
            .header("accept", format!("{PB}, application/json"))
            .body(Vec::new())?;
        let resp = client.send(req.map(Into::into)).await?;
        assert_eq!(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/vnd.kubernetes.protobuf;stream=watch")
        );
        let mut body = resp.into_body();
        let mut buffer: Vec<u8> = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut updated = false;
        let mut events = Vec::new();
        while events.len() < 2 {
            if let Some(frame) = split_watch_frame(&buffer) {
                let (event, object, rest) = frame?;
                events.push((event, object));
                buffer = rest.to_vec();
                continue;
            }
            if !events.is_empty() && !updated {
                let patch = json!({"spec": {"holderIdentity": "b"}});
                let patched = call(
                    &client,
                    "PATCH",
                    &format!("{leases}/w"),
                    "application/merge-patch+json",
                    None,
                    serde_json::to_vec(&patch)?,
                )
                .await?;
                assert_eq!(patched.code, 200);
                updated = true;
            }
            let frame = tokio::time::timeout_at(deadline, body.frame()).await?;
            let Some(frame) = frame else { break };
            if let Ok(data) = frame?.into_data() {
                buffer.extend_from_slice(&data);
            }
        }
        assert_eq!(events[0].0, "ADDED");
        assert_eq!(events[0].1, created.json());
        assert_eq!(events[1].0, "MODIFIED");
        assert_eq!(events[1].1["spec"]["holderIdentity"], "b");
        Ok(())
    }
}
