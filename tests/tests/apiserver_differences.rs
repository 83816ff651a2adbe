//! The known differences between the in-memory API server and a real kube-apiserver, one test
//! each, as docs/inmem-apiserver.md ("Where it differs from a real API server") lists them.
//!
//! Each test shows what the in-memory server does. Against a real cluster
//! (`E2E_USE_KUBECONFIG=1`) it checks what the real server does instead, where that is
//! certain from the apiserver's source and needs nothing but the API; otherwise it says it
//! skipped. A test here that starts failing in memory means a difference went away (or
//! changed): update the document with it.

use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::{Value, json};
use testkit::apiserver::{ApiServer, Config};
use testkit::cluster::TestCluster;
use testkit::fixtures::lease;
use testkit::outcome::{code_of, status_of};

/// Sends `req` with the cluster's administrator client; returns the status code and the body.
async fn raw(client: &kube::Client, req: http::Request<Vec<u8>>) -> anyhow::Result<(u16, Value)> {
    let res = client.send(req.map(kube::client::Body::from)).await?;
    let code = res.status().as_u16();
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await?
        .to_bytes();
    Ok((code, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

fn holder(lease: &Value) -> Option<&str> {
    lease
        .pointer("/spec/holderIdentity")
        .and_then(Value::as_str)
}

/// "Consistency of reads": a list at an exact older resourceVersion is served from the
/// current state here; a real server serves that snapshot (from etcd, until compaction).
#[tokio::test]
async fn a_list_at_an_exact_old_version_reads_the_current_state() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    let first = leases
        .create(&PostParams::default(), &lease("snap", "before"))
        .await?;
    let mut second = first.clone();
    second.spec.as_mut().expect("spec").holder_identity = Some("after".into());
    leases
        .replace("snap", &PostParams::default(), &second)
        .await?;
    let old = first.metadata.resource_version.clone().unwrap_or_default();
    let uri = format!(
        "/apis/coordination.k8s.io/v1/namespaces/{}/leases?resourceVersion={old}&resourceVersionMatch=Exact",
        cluster.namespace()
    );
    let (code, list) = raw(&cluster.client(), http::Request::get(uri).body(vec![])?).await?;
    assert_eq!(code, 200, "{list}");
    let item = &list["items"][0];
    let expected = if cluster.in_memory().is_some() {
        "after"
    } else {
        "before"
    };
    assert_eq!(holder(item), Some(expected), "{list}");
    Ok(())
}

/// "Consistency of reads": the pages after the first read the current state here; a real
/// server serves every page from the first page's snapshot, so an object created between
/// pages is not in the list.
#[tokio::test]
async fn later_pages_read_the_current_state() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    for name in ["b", "c", "d"] {
        leases
            .create(&PostParams::default(), &lease(name, "x"))
            .await?;
    }
    let first = leases.list(&ListParams::default().limit(1)).await?;
    let token = first.metadata.continue_.clone().expect("a continue token");
    leases
        .create(&PostParams::default(), &lease("e", "x"))
        .await?;
    let rest = leases
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await?;
    let names: Vec<String> = rest
        .items
        .iter()
        .filter_map(|l| l.metadata.name.clone())
        .collect();
    let expected: &[&str] = if cluster.in_memory().is_some() {
        &["c", "d", "e"]
    } else {
        &["c", "d"]
    };
    assert_eq!(names, expected);
    Ok(())
}

/// "Watch history": a watch from a resourceVersion the server has not reached yet opens here
/// and delivers only changes after that version, so nothing until the server gets there (the
/// watch below ends at its timeout with the change made meanwhile undelivered); a real server
/// waits a few seconds for it, then fails the watch with "Too large resource version". In
/// memory only (the real answer's timing is the server's).
#[tokio::test]
async fn a_watch_from_a_future_version_waits_silently() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    if cluster.in_memory().is_none() {
        eprintln!("in memory only: shows a difference from the real server");
        return Ok(());
    }
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    let stream = leases
        .watch(&WatchParams::default().timeout(1), "999999999999")
        .await?;
    futures::pin_mut!(stream);
    leases
        .create(&PostParams::default(), &lease("now", "x"))
        .await?;
    while let Some(event) = stream.try_next().await? {
        match event {
            WatchEvent::Bookmark(_) => {}
            other => panic!("expected nothing but bookmarks, got {other:?}"),
        }
    }
    Ok(())
}

/// "Namespaces and CRDs … graceful deletion and propagationPolicy are ignored": a foreground
/// delete removes the object at once here; a real server keeps it, with a deletionTimestamp
/// and the `foregroundDeletion` finalizer, until the garbage collector has removed its
/// dependents (and then the finalizer). In memory only: the real outcome depends on the
/// controller manager's timing.
#[tokio::test]
async fn a_foreground_delete_removes_the_object_at_once() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    if cluster.in_memory().is_none() {
        eprintln!("in memory only: shows a difference from the real server");
        return Ok(());
    }
    let deployments: Api<Deployment> = Api::namespaced(cluster.client(), cluster.namespace());
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}},
                              "spec": {"containers": [{"name": "c", "image": "i"}]}}}
    }))?;
    deployments.create(&PostParams::default(), &d).await?;
    deployments
        .delete("d", &DeleteParams::foreground().grace_period(30))
        .await?;
    assert!(deployments.get_opt("d").await?.is_none());
    Ok(())
}

/// "Field validation": `fieldValidation=Strict` is not implemented, so an unknown field is
/// dropped silently here; a real server refuses it with 400 "strict decoding error".
#[tokio::test]
async fn strict_field_validation_is_not_implemented() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let uri = format!(
        "/api/v1/namespaces/{}/configmaps?fieldValidation=Strict",
        cluster.namespace()
    );
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "strict"}, "data": {"a": "b"}, "bogus": 1});
    let req = http::Request::post(uri)
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&body)?)?;
    let (code, answer) = raw(&cluster.client(), req).await?;
    if cluster.in_memory().is_some() {
        assert_eq!(code, 201, "{answer}");
        assert!(answer.get("bogus").is_none(), "{answer}");
    } else {
        assert_eq!(code, 400, "{answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains("strict decoding error"), "{message}");
    }
    Ok(())
}

/// "Validation covers what our components touch": other built-in types are type-checked but
/// not validated, so a ConfigMap key a real server refuses with 422 is stored here.
#[tokio::test]
async fn other_built_in_types_skip_their_validation() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client(), cluster.namespace());
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "keys"},
        "data": {"not/a/key": "x"}
    }))?;
    let result = cms.create(&PostParams::default(), &cm).await;
    if cluster.in_memory().is_some() {
        result?;
    } else {
        let status = status_of(result);
        assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    }
    Ok(())
}

/// "Strategic merge patch metadata" exists only for the fields of `PATCH_STRATEGIES`: a Pod's
/// `status.conditions` (merged by `type` on a real server) is replaced whole here.
#[tokio::test]
async fn strategic_merge_replaces_lists_outside_its_table() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    let cluster = TestCluster::start().await?;
    let pods: Api<Pod> = Api::namespaced(cluster.client(), cluster.namespace());
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "conditions"},
        "spec": {"nodeName": "no-such-node", "containers": [{"name": "c", "image": "i"}]}
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let mut types = Vec::new();
    for condition in ["Ready", "Initialized"] {
        let patched = pods
            .patch_status(
                "conditions",
                &PatchParams::default(),
                &Patch::Strategic(json!({"status": {"conditions": [
                    {"type": condition, "status": "True"}
                ]}})),
            )
            .await?;
        types = patched
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.type_)
            .collect::<Vec<String>>();
    }
    if cluster.in_memory().is_some() {
        assert_eq!(types, ["Initialized"]);
    } else {
        assert!(
            types.iter().any(|t| t == "Ready") && types.iter().any(|t| t == "Initialized"),
            "{types:?}"
        );
    }
    Ok(())
}

/// "No dryRun": refused with 400 here; a real server answers as if it wrote, and stores
/// nothing.
#[tokio::test]
async fn dry_run_is_refused() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let leases: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let result = leases.create(&params, &lease("dry", "x")).await;
    if cluster.in_memory().is_some() {
        let status = status_of(result);
        assert_eq!(status.code, 400);
        assert!(status.message.contains("dryRun"), "{}", status.message);
    } else {
        result?;
    }
    assert!(leases.get_opt("dry").await?.is_none());
    Ok(())
}

/// "No impersonation headers": `Impersonate-User` is ignored here, so the administrator's
/// request is served as the administrator's; a real server serves it as the impersonated user,
/// who may do nothing here.
#[tokio::test]
async fn impersonation_headers_are_ignored() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let uri = format!(
        "/apis/coordination.k8s.io/v1/namespaces/{}/leases",
        cluster.namespace()
    );
    let req = http::Request::get(uri)
        .header("Impersonate-User", "nobody-at-all")
        .body(vec![])?;
    let (code, answer) = raw(&cluster.client(), req).await?;
    let expected = if cluster.in_memory().is_some() {
        200
    } else {
        403
    };
    assert_eq!(code, expected, "{answer}");
    Ok(())
}

/// "RBAC: no escalation checks": a service account that may create Roles can create one that
/// grants more than it holds here; a real server refuses with 403 ("is attempting to grant RBAC
/// permissions not currently held"). In memory only: it issues a token.
#[tokio::test]
async fn roles_can_grant_more_than_their_creator_holds() -> anyhow::Result<()> {
    let server = ApiServer::start(Config {
        rbac: true,
        ..Config::default()
    })
    .await?;
    let admin = server.admin_client();
    let ns = "default";
    Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "author"}}))?,
        )
        .await?;
    let may_create_roles: Role = serde_json::from_value(json!({
        "metadata": {"name": "role-author"},
        "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"],
                   "verbs": ["create"]}]
    }))?;
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &may_create_roles)
        .await?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "role-author"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "role-author"},
        "subjects": [{"kind": "ServiceAccount", "name": "author", "namespace": ns}]
    }))?;
    Api::<RoleBinding>::namespaced(admin, ns)
        .create(&PostParams::default(), &binding)
        .await?;

    let author = server.client(&server.service_account_token(ns, "author"));
    let everything: Role = serde_json::from_value(json!({
        "metadata": {"name": "everything"},
        "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]
    }))?;
    Api::<Role>::namespaced(author.clone(), ns)
        .create(&PostParams::default(), &everything)
        .await?;
    // It still holds only what it was bound to.
    let leases: Api<Lease> = Api::namespaced(author, ns);
    assert_eq!(code_of(leases.list(&ListParams::default()).await), 403);
    Ok(())
}

/// "RBAC: … no ClusterRole aggregation": a ClusterRole with an `aggregationRule` keeps its
/// own (empty) rules here; on a real cluster the controller manager fills them in from the
/// ClusterRoles it selects. In memory only (that happens asynchronously there).
#[tokio::test]
async fn cluster_roles_are_not_aggregated() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    if cluster.in_memory().is_none() {
        eprintln!("in memory only: shows a difference from the real server");
        return Ok(());
    }
    let roles: Api<ClusterRole> = Api::all(cluster.client());
    let suffix = cluster.namespace();
    let part: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": format!("part-{suffix}"), "labels": {"aggregate-to": suffix}},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]
    }))?;
    roles.create(&PostParams::default(), &part).await?;
    let whole: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": format!("whole-{suffix}")},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"aggregate-to": suffix}}]}
    }))?;
    roles.create(&PostParams::default(), &whole).await?;
    let stored = roles.get(&format!("whole-{suffix}")).await?;
    assert!(stored.rules.unwrap_or_default().is_empty());
    for name in [format!("part-{suffix}"), format!("whole-{suffix}")] {
        roles.delete(&name, &DeleteParams::default()).await?;
    }
    Ok(())
}

/// "Plain HTTP/1.1 … no priority-and-fairness": answers carry none of the headers with which
/// a real server names the flow schema and priority level that admitted the request.
#[tokio::test]
async fn answers_carry_no_priority_and_fairness_headers() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let uri = format!(
        "/apis/coordination.k8s.io/v1/namespaces/{}/leases",
        cluster.namespace()
    );
    let res = cluster
        .client()
        .send(http::Request::get(uri).body(kube::client::Body::empty())?)
        .await?;
    assert_eq!(res.status().as_u16(), 200);
    let flow_schema = res
        .headers()
        .get("X-Kubernetes-PF-FlowSchema-UID")
        .is_some();
    assert_eq!(flow_schema, cluster.in_memory().is_none());
    if let Some(server) = cluster.in_memory() {
        assert!(
            server.url().starts_with("http://"),
            "no TLS: {}",
            server.url()
        );
    }
    Ok(())
}

/// "Service-account tokens are not signed": a TokenRequest's token is JWT-shaped with
/// `"alg": "none"` here (its third part is random bytes, not a signature); a real server signs
/// it (RS256 or ES256).
#[tokio::test]
async fn service_account_tokens_are_unsigned() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let sas: Api<ServiceAccount> = Api::namespaced(cluster.client(), cluster.namespace());
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "signed"}}))?,
    )
    .await?;
    let token = testkit::tokens::request_token(
        &cluster.client(),
        cluster.namespace(),
        "signed",
        Duration::from_secs(600),
    )
    .await?;
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "JWT-shaped");
    let header: Value = serde_json::from_slice(&base64_url(parts[0])?)?;
    if cluster.in_memory().is_some() {
        assert_eq!(header["alg"], json!("none"));
    } else {
        assert_ne!(header["alg"], json!("none"));
    }
    Ok(())
}

fn base64_url(part: &str) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part.trim_end_matches('='))?)
}
