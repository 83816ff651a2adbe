//! Authentication and RBAC of the in-memory API server, with Role/ClusterRole/bindings created
//! through the API as `kubectl apply` would create them. In-memory only: they issue tokens.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
use serde_json::json;
use testkit::apiserver::tokenrequest::API_AUDIENCE;
use testkit::apiserver::{ApiServer, Config, UserInfo};
use testkit::fixtures::lease;
use testkit::outcome::{code_of, status_of};
use testkit::tokens::request_token;

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

// --- The TokenRequest API (`serviceaccounts/token`) ---

const HOUR: Duration = Duration::from_secs(3600);

async fn create_service_account(admin: kube::Client, ns: &str, name: &str) -> anyhow::Result<()> {
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<ServiceAccount>::namespaced(admin, ns)
        .create(&PostParams::default(), &sa)
        .await?;
    Ok(())
}

/// A Role with `rules` in `ns`, bound to `subject`.
async fn grant(
    admin: kube::Client,
    ns: &str,
    name: &str,
    rules: serde_json::Value,
    subject: serde_json::Value,
) -> anyhow::Result<()> {
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "rules": rules,
    }))?;
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &role)
        .await?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [subject],
    }))?;
    Api::<RoleBinding>::namespaced(admin, ns)
        .create(&PostParams::default(), &binding)
        .await?;
    Ok(())
}

fn token_request(name: Option<&str>, expiration_seconds: Option<i64>) -> TokenRequest {
    TokenRequest {
        metadata: kube::api::ObjectMeta {
            name: name.map(str::to_string),
            ..Default::default()
        },
        spec: TokenRequestSpec {
            expiration_seconds,
            ..Default::default()
        },
        status: None,
    }
}

#[tokio::test]
async fn token_request_issues_a_token_that_rbac_governs() -> anyhow::Result<()> {
    let server = rbac_server().await?;
    let admin = server.admin_client();
    create_service_account(admin.clone(), "default", "elector").await?;
    grant(
        admin.clone(),
        "default",
        "lease-getter",
        json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]}]),
        json!({"kind": "ServiceAccount", "name": "elector", "namespace": "default"}),
    )
    .await?;
    Api::<Lease>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &lease("my-lease", "x"))
        .await?;

    let token = request_token(&admin, "default", "elector", HOUR).await?;
    let leases: Api<Lease> = Api::namespaced(server.client(&token), "default");
    leases.get("my-lease").await?;
    let err = status_of(leases.list(&ListParams::default()).await);
    assert_eq!(
        (err.code, err.message.as_str()),
        (
            403,
            "leases.coordination.k8s.io is forbidden: User \"system:serviceaccount:default:elector\" cannot list resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"default\""
        )
    );

    // The exchange is in the audit log like any other write.
    let audited: Vec<_> = server
        .audit()
        .into_iter()
        .filter(|r| r.subresource.as_deref() == Some("token"))
        .collect();
    assert_eq!(audited.len(), 1, "{audited:?}");
    let record = &audited[0];
    assert_eq!(
        (
            record.user.as_str(),
            record.verb.as_str(),
            record.resource.as_str(),
            record.namespace.as_deref(),
            record.name.as_deref(),
            record.code,
        ),
        (
            "admin",
            "create",
            "serviceaccounts",
            Some("default"),
            Some("elector"),
            201
        )
    );
    Ok(())
}

#[tokio::test]
async fn token_request_answers_and_validates_like_the_real_server() -> anyhow::Result<()> {
    let server = rbac_server().await?;
    let admin = server.admin_client();
    create_service_account(admin.clone(), "default", "elector").await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");

    // Defaults: the API server's audience, one hour.
    let answer = accounts
        .create_token_request(
            "elector",
            &PostParams::default(),
            &token_request(None, None),
        )
        .await?;
    assert_eq!(answer.metadata.name.as_deref(), Some("elector"));
    assert_eq!(answer.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(answer.spec.audiences, vec![API_AUDIENCE.to_string()]);
    assert_eq!(answer.spec.expiration_seconds, Some(3600));
    let created = answer
        .metadata
        .creation_timestamp
        .expect("creationTimestamp is set")
        .0;
    let status = answer.status.expect("status is set");
    assert!(!status.token.is_empty());
    assert_eq!(
        status.expiration_timestamp.0.duration_since(created),
        jiff::SignedDuration::from_secs(3600)
    );

    // metadata.name, when given, must be the service account's.
    let err = status_of(
        accounts
            .create_token_request(
                "elector",
                &PostParams::default(),
                &token_request(Some("other"), None),
            )
            .await,
    );
    assert_eq!(
        (err.code, err.reason.as_str(), err.message.as_str()),
        (
            422,
            "Invalid",
            "TokenRequest.authentication.k8s.io \"elector\" is invalid: metadata.name: Invalid value: \"other\": must match the service account name if specified"
        )
    );

    // Less than ten minutes: 422 Invalid, naming the object "" as the real registry does.
    let err = status_of(
        accounts
            .create_token_request(
                "elector",
                &PostParams::default(),
                &token_request(None, Some(599)),
            )
            .await,
    );
    assert_eq!(
        (err.code, err.reason.as_str(), err.message.as_str()),
        (
            422,
            "Invalid",
            "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"
        )
    );
    let details = err.details.expect("details");
    assert_eq!(
        (
            details.group.as_str(),
            details.kind.as_str(),
            details.causes[0].field.as_str()
        ),
        (
            "authentication.k8s.io",
            "TokenRequest",
            "spec.expirationSeconds"
        )
    );
    let helper = request_token(&admin, "default", "elector", Duration::from_secs(599))
        .await
        .expect_err("too short");
    assert!(helper.to_string().contains("422"), "{helper}");
    request_token(&admin, "default", "elector", Duration::from_secs(600)).await?;

    // A token for another audience is not for the API server: 401, as on a real cluster.
    let mut for_vault = token_request(None, None);
    for_vault.spec.audiences = vec!["vault".to_string()];
    let vault = accounts
        .create_token_request("elector", &PostParams::default(), &for_vault)
        .await?;
    let vault_token = vault.status.expect("status").token;
    let as_vault: Api<Lease> = Api::namespaced(server.client(&vault_token), "default");
    assert_eq!(code_of(as_vault.get("x").await), 401);
    Ok(())
}

#[tokio::test]
async fn token_request_for_a_missing_service_account_is_404() -> anyhow::Result<()> {
    let server = rbac_server().await?;
    let admin = server.admin_client();
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    let err = status_of(
        accounts
            .create_token_request("ghost", &PostParams::default(), &token_request(None, None))
            .await,
    );
    assert_eq!(
        (err.code, err.reason.as_str(), err.message.as_str()),
        (404, "NotFound", "serviceaccounts \"ghost\" not found")
    );
    let details = err.details.expect("details");
    assert_eq!(
        (details.name.as_str(), details.kind.as_str()),
        ("ghost", "serviceaccounts")
    );
    let helper = request_token(&admin, "default", "ghost", HOUR)
        .await
        .expect_err("no such service account");
    assert!(
        helper
            .to_string()
            .contains("serviceaccount default/ghost: it does not exist"),
        "{helper}"
    );

    // A missing namespace is reported first (NamespaceLifecycle admission).
    let elsewhere: Api<ServiceAccount> = Api::namespaced(admin, "nowhere");
    let err = status_of(
        elsewhere
            .create_token_request("ghost", &PostParams::default(), &token_request(None, None))
            .await,
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (404, "namespaces \"nowhere\" not found")
    );
    Ok(())
}

#[tokio::test]
async fn token_request_needs_create_on_serviceaccounts_token() -> anyhow::Result<()> {
    let server = rbac_server().await?;
    let admin = server.admin_client();
    create_service_account(admin.clone(), "default", "elector").await?;
    create_service_account(admin.clone(), "default", "other").await?;
    server.add_token("alice-token", UserInfo::user("alice", &[]));
    let alice = server.client("alice-token");
    let alice_user =
        json!({"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"});
    // Reading service accounts does not include minting their tokens.
    grant(
        admin.clone(),
        "default",
        "sa-reader",
        json!([{"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get", "create"]}]),
        alice_user.clone(),
    )
    .await?;
    let err = status_of(
        Api::<ServiceAccount>::namespaced(alice.clone(), "default")
            .create_token_request(
                "elector",
                &PostParams::default(),
                &token_request(None, None),
            )
            .await,
    );
    assert_eq!(
        (err.code, err.reason.as_str(), err.message.as_str()),
        (
            403,
            "Forbidden",
            "serviceaccounts \"elector\" is forbidden: User \"alice\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"default\""
        )
    );
    let helper = request_token(&alice, "default", "elector", HOUR)
        .await
        .expect_err("forbidden");
    assert!(
        helper.to_string().contains("forbidden")
            && helper.to_string().contains("serviceaccounts/token"),
        "{helper}"
    );

    // `create` on `serviceaccounts/token`, limited to one service account by resourceNames.
    grant(
        admin,
        "default",
        "elector-token",
        json!([{"apiGroups": [""], "resources": ["serviceaccounts/token"],
                "resourceNames": ["elector"], "verbs": ["create"]}]),
        alice_user,
    )
    .await?;
    request_token(&alice, "default", "elector", HOUR).await?;
    let err = request_token(&alice, "default", "other", HOUR)
        .await
        .expect_err("only elector");
    assert!(err.to_string().contains("403"), "{err}");
    Ok(())
}

#[tokio::test]
async fn tokens_stop_working_when_the_service_account_is_deleted_or_recreated() -> anyhow::Result<()>
{
    let server = rbac_server().await?;
    let admin = server.admin_client();
    create_service_account(admin.clone(), "default", "elector").await?;
    grant(
        admin.clone(),
        "default",
        "lease-lister",
        json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["list"]}]),
        json!({"kind": "ServiceAccount", "name": "elector", "namespace": "default"}),
    )
    .await?;
    let token = request_token(&admin, "default", "elector", HOUR).await?;
    let bypass = server.service_account_token("default", "elector");
    let leases = |token: &str| Api::<Lease>::namespaced(server.client(token), "default");
    assert_eq!(
        code_of(leases(&token).list(&ListParams::default()).await),
        200
    );

    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    accounts.delete("elector", &DeleteParams::default()).await?;
    assert_eq!(
        code_of(leases(&token).list(&ListParams::default()).await),
        401
    );
    // The token is bound to the uid: a new ServiceAccount of the same name does not revive it.
    create_service_account(admin.clone(), "default", "elector").await?;
    assert_eq!(
        code_of(leases(&token).list(&ListParams::default()).await),
        401
    );
    let fresh = request_token(&admin, "default", "elector", HOUR).await?;
    assert_eq!(
        code_of(leases(&fresh).list(&ListParams::default()).await),
        200
    );
    // service_account_token bypasses the API and the binding (documented).
    assert_eq!(
        code_of(leases(&bypass).list(&ListParams::default()).await),
        200
    );
    Ok(())
}

#[tokio::test]
async fn tokens_expire_by_the_server_clock() -> anyhow::Result<()> {
    let server = ApiServer::start(Config::default()).await?;
    let admin = server.admin_client();
    create_service_account(admin.clone(), "default", "elector").await?;
    let token = request_token(&admin, "default", "elector", Duration::from_secs(600)).await?;
    let leases = |token: &str| Api::<Lease>::namespaced(server.client(token), "default");
    assert_eq!(
        code_of(leases(&token).list(&ListParams::default()).await),
        200
    );
    // Well inside the lifetime; then past expiry plus the one-minute leeway (the exact
    // boundary is a unit test in apiserver::tokenrequest).
    server.advance_token_clock(Duration::from_secs(590));
    assert_eq!(
        code_of(leases(&token).list(&ListParams::default()).await),
        200
    );
    server.advance_token_clock(Duration::from_secs(75));
    assert_eq!(
        code_of(leases(&token).list(&ListParams::default()).await),
        401
    );
    // A token issued now counts from the server's (moved) clock.
    let fresh = request_token(&admin, "default", "elector", Duration::from_secs(600)).await?;
    assert_eq!(
        code_of(leases(&fresh).list(&ListParams::default()).await),
        200
    );
    Ok(())
}

#[tokio::test]
async fn discovery_lists_the_token_subresource() -> anyhow::Result<()> {
    let server = rbac_server().await?;
    let admin = server.admin_client();
    let list: serde_json::Value = admin
        .request(http::Request::get("/api/v1").body(Vec::new())?)
        .await?;
    let resources = list["resources"].as_array().expect("resources");
    let names: Vec<&str> = resources
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    let at = names
        .iter()
        .position(|n| *n == "serviceaccounts/token")
        .expect("serviceaccounts/token is listed");
    assert_eq!(names[at - 1], "serviceaccounts");
    assert_eq!(
        resources[at],
        json!({
            "name": "serviceaccounts/token",
            "singularName": "",
            "namespaced": true,
            "group": "authentication.k8s.io",
            "version": "v1",
            "kind": "TokenRequest",
            "verbs": ["create"],
        })
    );
    // kube-rs' discovery takes it in its stride.
    kube::discovery::Discovery::new(admin).run().await?;
    Ok(())
}

/// The kubectl's minor version, if it reports one; an error if it cannot be run.
async fn kubectl_minor(bin: &std::path::Path) -> anyhow::Result<Option<u32>> {
    use anyhow::Context as _;
    let out = tokio::process::Command::new(bin)
        .args(["version", "--client", "-o", "json"])
        .output()
        .await
        .with_context(|| format!("cannot run {} (set KUBECTL)", bin.display()))?;
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    Ok(doc
        .pointer("/clientVersion/minor")
        .and_then(serde_json::Value::as_str)
        .and_then(|m| m.trim_end_matches('+').parse().ok()))
}

#[tokio::test]
async fn kubectl_create_token_uses_the_token_request_api() -> anyhow::Result<()> {
    use testkit::kubectl::{Kubectl, binaries, describe};
    for bin in binaries() {
        // `kubectl create token` exists from 1.24 on (Debian's 1.20 lacks it).
        match kubectl_minor(&bin).await? {
            Some(minor) if minor >= 24 => {}
            other => {
                eprintln!(
                    "skipping {}: kubectl minor version {other:?} has no `create token`",
                    bin.display()
                );
                continue;
            }
        }
        // AlwaysAllow: kubectl is what is under test here; RBAC of the subresource is above.
        let server = ApiServer::start(Config::default()).await?;
        let admin = server.admin_client();
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "ns"}}))?;
        Api::<Namespace>::all(admin.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        create_service_account(admin.clone(), "ns", "newresource-controller").await?;
        let dir = testkit::cluster::TempDir::new("kubectl-token")?;
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig, server.admin_token())?;
        let kubectl = Kubectl::new(&bin, &kubeconfig);

        let out = kubectl
            .run(&[
                "create",
                "token",
                "newresource-controller",
                "-n",
                "ns",
                "--duration",
                "20m",
            ])
            .await?;
        assert!(out.status.success(), "{}", describe(&out));
        let token = String::from_utf8(out.stdout)?.trim().to_string();
        assert_eq!(token.split('.').count(), 3, "a JWT-shaped token: {token}");
        let leases: Api<Lease> = Api::namespaced(server.client(&token), "ns");
        assert_eq!(code_of(leases.list(&ListParams::default()).await), 200);
        assert!(
            server
                .audit()
                .iter()
                .any(|r| r.subresource.as_deref() == Some("token")
                    && r.code == 201
                    && r.user_agent.starts_with("kubectl")),
            "kubectl's TokenRequest is audited"
        );

        let missing = kubectl
            .run(&["create", "token", "ghost", "-n", "ns"])
            .await?;
        assert!(!missing.status.success());
        assert!(
            String::from_utf8_lossy(&missing.stderr)
                .contains("serviceaccounts \"ghost\" not found"),
            "{}",
            describe(&missing)
        );
        let short = kubectl
            .run(&[
                "create",
                "token",
                "newresource-controller",
                "-n",
                "ns",
                "--duration",
                "5m",
            ])
            .await?;
        assert!(
            String::from_utf8_lossy(&short.stderr)
                .contains("may not specify a duration less than 10 minutes"),
            "{}",
            describe(&short)
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_token_bound_to_a_secret_dies_with_the_secret() -> anyhow::Result<()> {
    use k8s_openapi::api::authentication::v1::BoundObjectReference;
    use k8s_openapi::api::core::v1::Secret;
    let server = ApiServer::start(Config::default()).await?;
    let admin = server.admin_client();
    create_service_account(admin.clone(), "default", "elector").await?;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "default");
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "anchor"}}))?;
    secrets.create(&PostParams::default(), &secret).await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    let bound_to = |kind: &str, api_version: &str, uid: Option<&str>| {
        let mut request = token_request(None, None);
        request.spec.bound_object_ref = Some(BoundObjectReference {
            kind: Some(kind.to_string()),
            api_version: Some(api_version.to_string()),
            name: Some("anchor".to_string()),
            uid: uid.map(str::to_string),
        });
        request
    };

    let answer = accounts
        .create_token_request(
            "elector",
            &PostParams::default(),
            &bound_to("Secret", "v1", None),
        )
        .await?;
    let token = answer.status.expect("status").token;
    let leases: Api<Lease> = Api::namespaced(server.client(&token), "default");
    assert_eq!(code_of(leases.list(&ListParams::default()).await), 200);

    // A uid that is not the Secret's: 409, as for an object deleted and recreated.
    let err = status_of(
        accounts
            .create_token_request(
                "elector",
                &PostParams::default(),
                &bound_to("Secret", "v1", Some("not-the-uid")),
            )
            .await,
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (
            409,
            "Operation cannot be fulfilled on Secret \"anchor\": the UID in the bound object reference (not-the-uid) does not match the UID in record. The object might have been deleted and then recreated"
        )
    );
    // Kinds a token cannot be bound to: 400.
    let err = status_of(
        accounts
            .create_token_request(
                "elector",
                &PostParams::default(),
                &bound_to("ConfigMap", "v1", None),
            )
            .await,
    );
    assert_eq!(
        (err.code, err.message.as_str()),
        (
            400,
            "cannot bind token to object of type /v1, Kind=ConfigMap"
        )
    );

    secrets.delete("anchor", &DeleteParams::default()).await?;
    assert_eq!(code_of(leases.list(&ListParams::default()).await), 401);
    Ok(())
}

/// `SelfSubjectAccessReview` / `SelfSubjectRulesReview`, as `kubectl auth can-i` sends them, in
/// JSON and in protobuf, answered from the RBAC the server enforces for the caller.
#[tokio::test]
async fn self_subject_reviews_answer_from_rbac() -> anyhow::Result<()> {
    use http_body_util::BodyExt;
    use testkit::apiserver::protobuf::codec;
    const PB: &str = "application/vnd.kubernetes.protobuf";
    let server = rbac_server().await?;
    let admin = server.admin_client();
    grant_lease_role(admin.clone(), "default", "elector").await?;
    let sa = server.client(&server.service_account_token("default", "elector"));

    async fn post(
        client: &kube::Client,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let req = http::Request::post(path)
            .header("content-type", content_type)
            .header("accept", format!("{content_type}, application/json"))
            .body(body)?;
        let resp = client.send(req.map(Into::into)).await?;
        let code = resp.status().as_u16();
        Ok((code, resp.into_body().collect().await?.to_bytes().to_vec()))
    }
    const SSAR: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
    const SSRR: &str = "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews";
    let review = |spec: serde_json::Value| json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": spec});
    let allowed = |client: kube::Client, spec: serde_json::Value, protobuf: bool| {
        let body = review(spec);
        async move {
            let (code, answer) = if protobuf {
                let (code, bytes) = post(&client, SSAR, codec::encode_object(&body)?, PB).await?;
                (code, codec::decode_object(&bytes)?)
            } else {
                let (code, bytes) = post(
                    &client,
                    SSAR,
                    serde_json::to_vec(&body)?,
                    "application/json",
                )
                .await?;
                (code, serde_json::from_slice::<serde_json::Value>(&bytes)?)
            };
            assert_eq!(code, 201, "{answer}");
            assert_eq!(answer["spec"], body["spec"]);
            // No `reason`: the real RBAC authorizer explains an allow ("RBAC: allowed by
            // RoleBinding ..."); this server does not (a documented difference).
            assert!(answer["status"].get("reason").is_none(), "{answer}");
            anyhow::Ok(answer["status"]["allowed"].as_bool().unwrap_or(false))
        }
    };
    let lease = |verb: &str, name: &str| {
        let mut attributes = json!({"namespace": "default", "verb": verb,
            "group": "coordination.k8s.io", "resource": "leases"});
        if !name.is_empty() {
            attributes["name"] = json!(name);
        }
        json!({"resourceAttributes": attributes})
    };
    for protobuf in [false, true] {
        assert!(allowed(sa.clone(), lease("get", "my-lease"), protobuf).await?);
        assert!(!allowed(sa.clone(), lease("get", "other"), protobuf).await?);
        assert!(!allowed(sa.clone(), lease("delete", "my-lease"), protobuf).await?);
        assert!(allowed(sa.clone(), lease("create", ""), protobuf).await?);
        let elsewhere = json!({"resourceAttributes": {"namespace": "kube-system", "verb": "create",
            "group": "coordination.k8s.io", "resource": "leases"}});
        assert!(!allowed(sa.clone(), elsewhere, protobuf).await?);
        let status = json!({"resourceAttributes": {"namespace": "default", "verb": "update",
            "group": "coordination.k8s.io", "resource": "leases", "subresource": "status", "name": "my-lease"}});
        assert!(!allowed(sa.clone(), status, protobuf).await?);
        let discovery = json!({"nonResourceAttributes": {"path": "/apis", "verb": "get"}});
        assert!(allowed(sa.clone(), discovery, protobuf).await?);
        let metrics = json!({"nonResourceAttributes": {"path": "/metrics", "verb": "get"}});
        assert!(!allowed(sa.clone(), metrics, protobuf).await?);
        // The administrator (system:masters) may do anything.
        assert!(allowed(admin.clone(), lease("delete", "x"), protobuf).await?);
    }

    // Exactly one of resourceAttributes and nonResourceAttributes: 422.
    let (code, _) = post(
        &sa,
        SSAR,
        serde_json::to_vec(&review(json!({})))?,
        "application/json",
    )
    .await?;
    assert_eq!(code, 422);
    // Anonymous users are not authenticated, so no bootstrap role lets them review.
    let anonymous = testkit::apiserver::client_for(&server.url(), None);
    let (code, _) = post(
        &anonymous,
        SSAR,
        serde_json::to_vec(&review(lease("get", "x")))?,
        "application/json",
    )
    .await?;
    assert_eq!(code, 403);
    // Create-only (authorization comes first: a caller who may not list gets 403).
    let listed = admin
        .send(http::Request::get(SSAR).body(Vec::new())?.map(Into::into))
        .await?;
    assert_eq!(listed.status().as_u16(), 405);

    // The rules review lists what the bindings grant in the namespace.
    let rules_review = |ns: &str| json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview", "spec": {"namespace": ns}});
    let (code, bytes) = post(
        &sa,
        SSRR,
        codec::encode_object(&rules_review("default"))?,
        PB,
    )
    .await?;
    assert_eq!(code, 201);
    let status = codec::decode_object(&bytes)?["status"].clone();
    assert_eq!(status["incomplete"], false, "{status}");
    let rules = status["resourceRules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(rules.contains(&json!({"verbs": ["get", "update", "patch", "watch", "list"],
        "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["my-lease"]})), "{status}");
    assert!(
        rules.contains(
            &json!({"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
        "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]})
        ),
        "{status}"
    );
    let (_, bytes) = post(
        &sa,
        SSRR,
        serde_json::to_vec(&rules_review("kube-system"))?,
        "application/json",
    )
    .await?;
    let other: serde_json::Value = serde_json::from_slice(&bytes)?;
    assert!(!other.to_string().contains("my-lease"), "{other}");
    let (code, _) = post(
        &sa,
        SSRR,
        serde_json::to_vec(&rules_review(""))?,
        "application/json",
    )
    .await?;
    assert_eq!(code, 400);
    let (_, bytes) = post(
        &admin,
        SSRR,
        serde_json::to_vec(&rules_review("default"))?,
        "application/json",
    )
    .await?;
    let everything: serde_json::Value = serde_json::from_slice(&bytes)?;
    assert_eq!(
        everything["status"]["resourceRules"][0],
        json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})
    );

    // Discovery lists both, create-only and cluster-scoped.
    let resp = sa
        .send(
            http::Request::get("/apis/authorization.k8s.io/v1")
                .body(Vec::new())?
                .map(Into::into),
        )
        .await?;
    let list: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await?.to_bytes())?;
    let names: Vec<(&str, bool, &str)> = list["resources"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    (
                        r["name"].as_str().unwrap_or_default(),
                        r["namespaced"].as_bool().unwrap_or(true),
                        r["verbs"][0].as_str().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        names,
        vec![
            ("selfsubjectaccessreviews", false, "create"),
            ("selfsubjectrulesreviews", false, "create")
        ]
    );
    Ok(())
}
