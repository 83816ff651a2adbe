//! The real kubectl against the `inmem-apiserver` binary (or the cluster from `KUBECONFIG`
//! with `E2E_USE_KUBECONFIG=1`): the workflows users run, once per binary in `KUBECTL`.

use std::path::Path;
use std::process::Output;

use testkit::cluster::{TempDir, use_real_cluster};
use testkit::kubectl::{Kubectl, binaries, describe};
use testkit::process::ApiServerProcess;
use tokio::io::{AsyncBufReadExt, BufReader};

const LEASE_YAML: &str = "apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: demo
spec:
  holderIdentity: pod-a
  leaseDurationSeconds: 15
";

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh server process (or the real cluster) and a namespace for one kubectl binary.
struct Setup {
    _server: Option<ApiServerProcess>,
    _dir: TempDir,
    kubectl: Kubectl,
    namespace: String,
}

async fn setup(bin: &Path) -> anyhow::Result<Setup> {
    let dir = TempDir::new("kubectl-test")?;
    let (server, kubeconfig) = if use_real_cluster() {
        (
            None,
            std::path::PathBuf::from(std::env::var_os("KUBECONFIG").unwrap_or_default()),
        )
    } else {
        let server = ApiServerProcess::spawn(
            Path::new(env!("CARGO_BIN_EXE_inmem-apiserver")),
            &["--admin-token", "kubectl-test-admin"],
        )
        .await?;
        let path = dir.path().join("kubeconfig");
        testkit::apiserver::write_kubeconfig(&path, &server.url, "kubectl-test-admin")?;
        (Some(server), path)
    };
    let kubectl = Kubectl::new(bin, &kubeconfig);
    let namespace = format!(
        "kubectl-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    // `create -f` (JSON); `imperative_create_sends_protobuf_and_auth_can_i` covers the
    // protobuf-sending `create namespace`.
    let manifest = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{{\"name\":\"{namespace}\"}}}}"
    );
    let created = kubectl
        .run_with_stdin(&["create", "-f", "-"], &manifest)
        .await?;
    assert!(created.status.success(), "{}", describe(&created));
    Ok(Setup {
        _server: server,
        _dir: dir,
        kubectl,
        namespace,
    })
}

async fn ok(k: &Kubectl, args: &[&str]) -> anyhow::Result<String> {
    let out = k.run(args).await?;
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        describe(&out)
    );
    Ok(stdout(&out))
}

async fn ok_stdin(k: &Kubectl, args: &[&str], input: &str) -> anyhow::Result<String> {
    let out = k.run_with_stdin(args, input).await?;
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        describe(&out)
    );
    Ok(stdout(&out))
}

#[tokio::test]
async fn lease_workflow_create_get_replace_conflict_watch() -> anyhow::Result<()> {
    for bin in binaries() {
        let s = setup(&bin).await?;
        let (k, ns) = (&s.kubectl, s.namespace.as_str());

        let created = ok_stdin(k, &["-n", ns, "create", "-f", "-"], LEASE_YAML).await?;
        assert!(
            created.contains("lease.coordination.k8s.io/demo created"),
            "{created}"
        );

        let yaml = ok(k, &["-n", ns, "get", "lease", "demo", "-o", "yaml"]).await?;
        assert!(yaml.contains("holderIdentity: pod-a"), "{yaml}");
        assert!(yaml.contains("resourceVersion:"), "{yaml}");
        assert!(yaml.contains("uid:"), "{yaml}");

        let table = ok(k, &["-n", ns, "get", "leases"]).await?;
        let header: Vec<&str> = table
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(header, vec!["NAME", "HOLDER", "AGE"], "{table}");
        assert!(table.contains("demo") && table.contains("pod-a"), "{table}");

        // `get -w` prints the current row, then a row per change.
        let mut watch = k.spawn(&[
            "-n",
            ns,
            "get",
            "lease",
            "demo",
            "-w",
            "--output-watch-events",
            "-o",
            "json",
        ])?;
        let mut lines = BufReader::new(watch.stdout.take().expect("piped stdout")).lines();
        let mut first_event = String::new();
        while !first_event.contains("\"type\"") {
            first_event.push_str(&lines.next_line().await?.unwrap_or_default());
        }

        // A replace with the resourceVersion read before someone else's write fails.
        ok(
            k,
            &[
                "-n",
                ns,
                "patch",
                "lease",
                "demo",
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"holderIdentity":"pod-b"}}"#,
            ],
        )
        .await?;
        let stale = yaml.replace("holderIdentity: pod-a", "holderIdentity: pod-c");
        let out = k
            .run_with_stdin(&["-n", ns, "replace", "-f", "-"], &stale)
            .await?;
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("the object has been modified"),
            "{}",
            describe(&out)
        );

        let mut seen = String::new();
        while !seen.contains("MODIFIED") {
            match lines.next_line().await? {
                Some(line) => seen.push_str(&line),
                None => panic!("kubectl get -w ended before a MODIFIED event: {seen}"),
            }
        }
        assert!(first_event.contains("ADDED"), "{first_event}");
        watch.kill().await?;
    }
    Ok(())
}

#[tokio::test]
async fn apply_patch_describe_delete_and_validation() -> anyhow::Result<()> {
    for bin in binaries() {
        let s = setup(&bin).await?;
        let (k, ns) = (&s.kubectl, s.namespace.as_str());

        let applied = ok_stdin(k, &["-n", ns, "apply", "-f", "-"], LEASE_YAML).await?;
        assert!(applied.contains("created"), "{applied}");
        let again = ok_stdin(k, &["-n", ns, "apply", "-f", "-"], LEASE_YAML).await?;
        assert!(again.contains("unchanged"), "{again}");
        let changed = ok_stdin(
            k,
            &["-n", ns, "apply", "-f", "-"],
            &LEASE_YAML.replace("pod-a", "pod-z"),
        )
        .await?;
        assert!(changed.contains("configured"), "{changed}");

        ok(
            k,
            &[
                "-n",
                ns,
                "patch",
                "lease",
                "demo",
                "--type",
                "json",
                "-p",
                r#"[{"op":"replace","path":"/spec/holderIdentity","value":"pod-j"}]"#,
            ],
        )
        .await?;
        ok(
            k,
            &[
                "-n",
                ns,
                "patch",
                "lease",
                "demo",
                "-p",
                r#"{"spec":{"leaseDurationSeconds":20}}"#,
            ],
        )
        .await?;
        let holder = ok(
            k,
            &[
                "-n",
                ns,
                "get",
                "lease",
                "demo",
                "-o",
                "jsonpath={.spec.holderIdentity}/{.spec.leaseDurationSeconds}",
            ],
        )
        .await?;
        assert_eq!(holder, "pod-j/20");

        // An Event about the Lease shows up in describe, as client-go's recorder makes it.
        let uid = ok(
            k,
            &[
                "-n",
                ns,
                "get",
                "lease",
                "demo",
                "-o",
                "jsonpath={.metadata.uid}",
            ],
        )
        .await?;
        let event = format!(
            "apiVersion: v1
kind: Event
metadata:
  name: demo.leader
involvedObject:
  apiVersion: coordination.k8s.io/v1
  kind: Lease
  name: demo
  namespace: {ns}
  uid: {uid}
reason: LeaderElection
message: pod-j became leader
type: Normal
source:
  component: leader-sidecar
firstTimestamp: \"2026-01-01T00:00:00Z\"
lastTimestamp: \"2026-01-01T00:00:00Z\"
count: 1
"
        );
        ok_stdin(k, &["-n", ns, "create", "-f", "-"], &event).await?;
        let described = ok(k, &["-n", ns, "describe", "lease", "demo"]).await?;
        assert!(
            described.contains("Holder Identity:") && described.contains("pod-j"),
            "{described}"
        );
        assert!(
            described.contains("LeaderElection") && described.contains("pod-j became leader"),
            "{described}"
        );

        // Client-side validation uses the server's OpenAPI document.
        let bad = LEASE_YAML.replace("leaseDurationSeconds", "leaseDurationSecondz");
        let out = k
            .run_with_stdin(&["-n", ns, "create", "-f", "-"], &bad)
            .await?;
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("unknown field") && stderr(&out).contains("leaseDurationSecondz"),
            "{}",
            describe(&out)
        );

        // Server-side validation: a Lease duration of 0 is invalid.
        let zero = LEASE_YAML
            .replace("name: demo", "name: zero")
            .replace("15", "0");
        let out = k
            .run_with_stdin(&["-n", ns, "create", "-f", "-"], &zero)
            .await?;
        assert!(
            stderr(&out).contains("must be greater than 0"),
            "{}",
            describe(&out)
        );

        let deleted = ok(k, &["-n", ns, "delete", "lease", "demo"]).await?;
        assert!(deleted.contains("deleted"), "{deleted}");
        let out = k.run(&["-n", ns, "get", "lease", "demo"]).await?;
        assert!(
            stderr(&out).contains("NotFound") || stderr(&out).contains("not found"),
            "{}",
            describe(&out)
        );
    }
    Ok(())
}

#[tokio::test]
async fn crd_then_get_newresources() -> anyhow::Result<()> {
    for bin in binaries() {
        let s = setup(&bin).await?;
        let (k, ns) = (&s.kubectl, s.namespace.as_str());
        let crd = serde_json::to_string(&testkit::fixtures::newresource_crd())?;
        ok_stdin(k, &["apply", "-f", "-"], &crd).await?;
        ok(
            k,
            &[
                "wait",
                "--for",
                "condition=established",
                "crd/newresources.apps.newresource.com",
                "--timeout=30s",
            ],
        )
        .await?;

        let nr = "apiVersion: apps.newresource.com/v1alpha1
kind: NewResource
metadata:
  name: sample
spec:
  foo: hello
";
        ok_stdin(k, &["-n", ns, "apply", "-f", "-"], nr).await?;
        let table = ok(k, &["-n", ns, "get", "newresources"]).await?;
        let header: Vec<&str> = table
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(header, vec!["NAME", "FOO", "READY", "AGE"], "{table}");
        assert!(
            table.contains("sample") && table.contains("hello"),
            "{table}"
        );
        let short = ok(
            k,
            &[
                "-n",
                ns,
                "get",
                "nr",
                "sample",
                "-o",
                "jsonpath={.spec.foo}",
            ],
        )
        .await?;
        assert_eq!(short, "hello");

        // A wrong type is refused by kubectl's validation with the CRD's published schema.
        let bad = nr.replace("foo: hello", "foo: {nested: 1}");
        let out = k
            .run_with_stdin(&["-n", ns, "apply", "-f", "-"], &bad)
            .await?;
        assert!(!out.status.success(), "{}", describe(&out));

        let resources = ok(k, &["api-resources", "--api-group", "apps.newresource.com"]).await?;
        assert!(
            resources.contains("newresources") && resources.contains("nr"),
            "{resources}"
        );
    }
    Ok(())
}

const DEPLOYMENT_YAML: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: pair
spec:
  replicas: 3
  selector:
    matchLabels: {app: pair}
  template:
    metadata:
      labels: {app: pair}
    spec:
      containers:
      - name: sidecar
        image: sidecar:1
        args: [--lease-name=pair]
        env:
        - {name: A, value: a}
        - {name: B, value: b}
      - name: controller
        image: controller:1
";

#[tokio::test]
async fn apply_merges_lists_by_key_with_strategic_merge_patch() -> anyhow::Result<()> {
    for bin in binaries() {
        let s = setup(&bin).await?;
        let (k, ns) = (&s.kubectl, s.namespace.as_str());
        ok_stdin(k, &["-n", ns, "apply", "-f", "-"], DEPLOYMENT_YAML).await?;
        // Change one container's image and drop one env var: kubectl sends a strategic merge
        // patch naming only what changed, keyed by container and env names.
        let changed = DEPLOYMENT_YAML
            .replace("image: controller:1", "image: controller:2")
            .replace("        - {name: B, value: b}\n", "");
        let out = ok_stdin(k, &["-n", ns, "apply", "-f", "-"], &changed).await?;
        assert!(out.contains("configured"), "{out}");
        let containers = ok(
            k,
            &[
                "-n",
                ns,
                "get",
                "deployment",
                "pair",
                "-o",
                "jsonpath={range .spec.template.spec.containers[*]}{.name}={.image};{end}",
            ],
        )
        .await?;
        assert_eq!(containers, "sidecar=sidecar:1;controller=controller:2;");
        let env = ok(
            k,
            &[
                "-n",
                ns,
                "get",
                "deployment",
                "pair",
                "-o",
                "jsonpath={.spec.template.spec.containers[0].env[*].name}",
            ],
        )
        .await?;
        assert_eq!(env, "A");
        let generation = ok(
            k,
            &[
                "-n",
                ns,
                "get",
                "deployment",
                "pair",
                "-o",
                "jsonpath={.metadata.generation}",
            ],
        )
        .await?;
        assert_eq!(generation, "2");
    }
    Ok(())
}

/// kubectl's imperative generators send protobuf bodies; the server decodes them as a real one
/// does. Each object is read back as JSON.
#[tokio::test]
async fn imperative_create_sends_protobuf_and_auth_can_i() -> anyhow::Result<()> {
    for bin in binaries() {
        let s = setup(&bin).await?;
        let (k, ns) = (&s.kubectl, s.namespace.as_str());
        let extra = format!("{ns}-pb");
        ok(k, &["create", "namespace", &extra]).await?;
        ok(k, &["-n", ns, "create", "serviceaccount", "robot"]).await?;
        ok(
            k,
            &[
                "-n",
                ns,
                "create",
                "role",
                "reader",
                "--verb=get",
                "--resource=leases",
            ],
        )
        .await?;
        ok(
            k,
            &[
                "-n",
                ns,
                "create",
                "configmap",
                "settings",
                "--from-literal=mode=fast",
            ],
        )
        .await?;

        let get = |args: Vec<String>| async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let text = ok(k, &args).await?;
            anyhow::Ok(serde_json::from_str::<serde_json::Value>(&text)?)
        };
        let namespace = get(vec![
            "get".into(),
            "namespace".into(),
            extra.clone(),
            "-o".into(),
            "json".into(),
        ])
        .await?;
        assert_eq!(namespace["metadata"]["name"], extra.as_str(), "{namespace}");
        assert_eq!(namespace["status"]["phase"], "Active", "{namespace}");
        let of = |kind: &str, name: &str| {
            vec![
                "-n".to_string(),
                ns.to_string(),
                "get".into(),
                kind.into(),
                name.into(),
                "-o".into(),
                "json".into(),
            ]
        };
        let account = get(of("serviceaccount", "robot")).await?;
        assert_eq!(account["metadata"]["namespace"], ns, "{account}");
        let role = get(of("role", "reader")).await?;
        assert_eq!(
            role["rules"],
            serde_json::json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]}]),
            "{role}"
        );
        let config = get(of("configmap", "settings")).await?;
        assert_eq!(
            config["data"],
            serde_json::json!({"mode": "fast"}),
            "{config}"
        );

        if !use_real_cluster() {
            // This server authorizes everything without --rbac (AlwaysAllow).
            let yes = ok(k, &["-n", ns, "auth", "can-i", "get", "leases"]).await?;
            assert_eq!(yes.trim(), "yes", "{bin:?}");
        }
    }
    Ok(())
}

/// `auth can-i` against RBAC. kubectl reads credentials only for TLS servers, so against this
/// plain-HTTP server it is `system:anonymous`: the test grants that user a narrow Role (and,
/// as no bootstrap role does for anonymous, the right to review its own access).
#[tokio::test]
async fn auth_can_i_answers_from_rbac() -> anyhow::Result<()> {
    if use_real_cluster() {
        return Ok(());
    }
    for bin in binaries() {
        let dir = TempDir::new("kubectl-can-i")?;
        let server = ApiServerProcess::spawn(
            Path::new(env!("CARGO_BIN_EXE_inmem-apiserver")),
            &["--admin-token", "can-i-admin", "--rbac"],
        )
        .await?;
        let path = dir.path().join("kubeconfig");
        testkit::apiserver::write_kubeconfig(&path, &server.url, "can-i-admin")?;
        let admin = testkit::apiserver::client_for(&server.url, Some("can-i-admin"));
        let objects = [
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
            serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "lease-reader", "namespace": "team"},
                "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]}]}),
            serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "anonymous-reads", "namespace": "team"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lease-reader"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:anonymous"}]}),
            serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "self-review"},
                "rules": [
                    {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
                    {"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*"], "verbs": ["get"]}]}),
            serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "anonymous-self-review"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "self-review"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:anonymous"}]}),
        ];
        for object in objects {
            let api_version = object["apiVersion"].as_str().unwrap_or_default();
            let kind = object["kind"].as_str().unwrap_or_default();
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
            let resource = kube::api::ApiResource::from_gvk(&gvk);
            let api: kube::Api<kube::api::DynamicObject> =
                match object["metadata"]["namespace"].as_str() {
                    Some(ns) => kube::Api::namespaced_with(admin.clone(), ns, &resource),
                    None => kube::Api::all_with(admin.clone(), &resource),
                };
            let dynamic: kube::api::DynamicObject = serde_json::from_value(object)?;
            api.create(&Default::default(), &dynamic).await?;
        }
        let k = Kubectl::new(&bin, &path);
        let yes = ok(&k, &["-n", "team", "auth", "can-i", "get", "leases"]).await?;
        assert_eq!(yes.trim(), "yes", "{bin:?}");
        let no = k
            .run(&["-n", "team", "auth", "can-i", "list", "leases"])
            .await?;
        assert_eq!(stdout(&no).trim(), "no", "{bin:?}: {}", describe(&no));
        assert!(!no.status.success(), "can-i exits 1 for no");
        let elsewhere = k
            .run(&["-n", "default", "auth", "can-i", "get", "leases"])
            .await?;
        assert_eq!(stdout(&elsewhere).trim(), "no", "{}", describe(&elsewhere));
        let list = ok(&k, &["-n", "team", "auth", "can-i", "--list"]).await?;
        let lease_row = list
            .lines()
            .find(|l| l.starts_with("leases.coordination.k8s.io"))
            .unwrap_or_default();
        assert!(lease_row.contains("[get]"), "{list}");
        assert!(
            list.contains("selfsubjectaccessreviews.authorization.k8s.io"),
            "{list}"
        );
        drop(server);
    }
    Ok(())
}
