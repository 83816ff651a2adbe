//! Authentication and RBAC of the in-memory API server, with Role/ClusterRole/bindings created
//! through the API as `kubectl apply` would create them. In-memory only: they issue tokens.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchParams};
use serde_json::json;
use testkit::apiserver::{ApiServer, Config, UserInfo};
use testkit::fixtures::lease;
use testkit::outcome::{code_of, status_of};

async fn rbac_server() -> anyhow::Result<ApiServer> {
    Ok(ApiServer::start(Config {
        rbac: true,
        ..Config::default()
    })
    .await?)
}

/// The sidecar's Role as deploy/ will write it: resourceNames limit get/update/patch to one
/// Lease; create and watch cannot be limited by name for create, so they are separate rules.
async fn grant_lease_role(admin: kube::Client, ns: &str, sa: &str) -> anyhow::Result<()> {
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "leader-election", "namespace": ns},
        "rules": [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "resourceNames": ["my-lease"], "verbs": ["get", "update", "patch", "watch", "list"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}
        ]
    }))?;
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &role)
        .await?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "leader-election", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "leader-election"},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]
    }))?;
    Api::<RoleBinding>::namespaced(admin, ns)
        .create(&PostParams::default(), &binding)
        .await?;
    Ok(())
}

#[tokio::test]
async fn unknown_token_is_401_and_anonymous_is_403() -> anyhow::Result<()> {
    let server = rbac_server().await?;
    let bad = server.client("not-a-token");
    let leases: Api<Lease> = Api::namespaced(bad, "default");
    assert_eq!(code_of(leases.list(&ListParams::default()).await), 401);

    let anonymous: Api<Lease> = Api::namespaced(
        testkit::apiserver::client_for(&server.url(), None),
        "default",
    );
    let err = status_of(anonymous.list(&ListParams::default()).await);
    assert_eq!(err.code, 403);
    assert!(
        err.message
            .contains("User \"system:anonymous\" cannot list resource \"leases\""),
        "{}",
        err.message
    );
    Ok(())
}

#[tokio::test]
async fn role_with_resource_names_limits_a_service_account_to_one_lease() -> anyhow::Result<()> {
    let server = rbac_server().await?;
    grant_lease_role(server.admin_client(), "default", "elector").await?;
    let token = server.service_account_token("default", "elector");
    let leases: Api<Lease> = Api::namespaced(server.client(&token), "default");

    // create is allowed for any name; get/update/patch only for my-lease.
    leases
        .create(&PostParams::default(), &lease("my-lease", "x"))
        .await?;
    let mine = leases.get("my-lease").await?;
    leases
        .replace("my-lease", &PostParams::default(), &mine)
        .await?;
    leases
        .patch(
            "my-lease",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": "y"}})),
        )
        .await?;
    leases
        .create(&PostParams::default(), &lease("other", "x"))
        .await?;
    let err = status_of(leases.get("other").await);
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        err.message,
        "leases.coordination.k8s.io \"other\" is forbidden: User \"system:serviceaccount:default:elector\" cannot get resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"default\""
    );

    // A watch or list pinned to the name by fieldSelector is authorized for that name...
    let stream = leases
        .watch(
            &WatchParams::default()
                .fields("metadata.name=my-lease")
                .timeout(1),
            "0",
        )
        .await;
    assert!(stream.is_ok(), "watch of my-lease must be allowed");
    leases
        .list(&ListParams::default().fields("metadata.name=my-lease"))
        .await?;
    // ...but not for all leases.
    assert_eq!(code_of(leases.list(&ListParams::default()).await), 403);

    // Other namespaces are out of reach.
    let elsewhere: Api<Lease> = Api::namespaced(server.client(&token), "kube-system");
    assert_eq!(
        code_of(
            elsewhere
                .create(&PostParams::default(), &lease("my-lease", "x"))
                .await
        ),
        403
    );
    Ok(())
}

#[tokio::test]
async fn cluster_role_binding_and_status_subresource_rules() -> anyhow::Result<()> {
    let server = rbac_server().await?;
    let admin = server.admin_client();
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(admin.clone());
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(testkit::fixtures::newresource_crd())?,
    )
    .await?;
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "newresource-controller"},
        "rules": [
            {"apiGroups": ["apps.newresource.com"], "resources": ["newresources"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["apps.newresource.com"], "resources": ["newresources/status"], "verbs": ["update", "patch"]}
        ]
    }))?;
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await?;
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "newresource-controller"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "newresource-controller"},
        "subjects": [{"kind": "ServiceAccount", "name": "controller", "namespace": "system"}]
    }))?;
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await?;

    let ar = testkit::fixtures::newresource_api_resource();
    let as_admin: Api<kube::api::DynamicObject> = Api::namespaced_with(admin, "default", &ar);
    let mut obj = kube::api::DynamicObject::new("nr", &ar);
    obj.data = json!({"spec": {"foo": "bar"}});
    as_admin.create(&PostParams::default(), &obj).await?;

    let token = server.service_account_token("system", "controller");
    let as_sa: Api<kube::api::DynamicObject> =
        Api::namespaced_with(server.client(&token), "default", &ar);
    as_sa.list(&ListParams::default()).await?;
    as_sa
        .patch_status(
            "nr",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}})),
        )
        .await?;
    // The main resource is read-only for it.
    let err = status_of(
        as_sa
            .patch(
                "nr",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"foo": "x"}})),
            )
            .await,
    );
    assert_eq!(err.code, 403);
    assert!(
        err.message
            .contains("cannot patch resource \"newresources\""),
        "{}",
        err.message
    );
    Ok(())
}

#[tokio::test]
async fn groups_and_users_from_tokens() -> anyhow::Result<()> {
    let server = rbac_server().await?;
    server.add_token("alice-token", UserInfo::user("alice", &["readers"]));
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "lease-reader"},
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["list"]}]
    }))?;
    Api::<ClusterRole>::all(server.admin_client())
        .create(&PostParams::default(), &role)
        .await?;
    let leases: Api<Lease> = Api::all(server.client("alice-token"));
    assert_eq!(code_of(leases.list(&ListParams::default()).await), 403);
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "readers"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "lease-reader"},
        "subjects": [{"kind": "Group", "name": "readers", "apiGroup": "rbac.authorization.k8s.io"}]
    }))?;
    Api::<ClusterRoleBinding>::all(server.admin_client())
        .create(&PostParams::default(), &binding)
        .await?;
    leases.list(&ListParams::default()).await?;
    // Discovery is open to every authenticated user.
    kube::discovery::Discovery::new(server.client("alice-token"))
        .run()
        .await?;
    Ok(())
}

#[tokio::test]
async fn non_resource_urls_are_authorized_by_rules() -> anyhow::Result<()> {
    let server = rbac_server().await?;
    let anonymous = testkit::apiserver::client_for(&server.url(), None);
    let get = |path: &str| http::Request::get(path).body(Vec::new());
    // /version is public; discovery needs an authenticated user (or a rule).
    let version = anonymous.send(get("/version")?.map(Into::into)).await?;
    assert_eq!(version.status().as_u16(), 200);
    let api = anonymous.send(get("/api")?.map(Into::into)).await?;
    assert_eq!(api.status().as_u16(), 403);

    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "anonymous-discovery"},
        "rules": [{"nonResourceURLs": ["/api", "/apis/*"], "verbs": ["get"]}]
    }))?;
    Api::<ClusterRole>::all(server.admin_client())
        .create(&PostParams::default(), &role)
        .await?;
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "anonymous-discovery"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "anonymous-discovery"},
        "subjects": [{"kind": "User", "name": "system:anonymous", "apiGroup": "rbac.authorization.k8s.io"}]
    }))?;
    Api::<ClusterRoleBinding>::all(server.admin_client())
        .create(&PostParams::default(), &binding)
        .await?;
    let api = anonymous.send(get("/api")?.map(Into::into)).await?;
    assert_eq!(api.status().as_u16(), 200);
    let group = anonymous
        .send(get("/apis/coordination.k8s.io")?.map(Into::into))
        .await?;
    assert_eq!(group.status().as_u16(), 200);
    // The wildcard covers only what it names.
    let openapi = anonymous.send(get("/openapi/v2")?.map(Into::into)).await?;
    assert_eq!(openapi.status().as_u16(), 403);
    Ok(())
}
