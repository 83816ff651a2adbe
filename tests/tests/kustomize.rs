//! `testkit::kustomize` on fixture kustomizations and on `deploy/`: Rust-only assertions, and
//! a cross-check that every modern `kubectl kustomize` (kustomize v5) in `KUBECTL` (or on
//! PATH) renders the same documents in the same order.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::{Value, json};
use testkit::cluster::TempDir;
use testkit::kustomize::{render, to_yaml};

/// Writes `files` (path relative to `root`, contents) under `root`.
fn write(root: &Path, files: &[(&str, &str)]) -> anyhow::Result<()> {
    for (path, contents) in files {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, contents)?;
    }
    Ok(())
}

const BASE_KUSTOMIZATION: &str = "\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - namespace.yaml
  - workload.yaml
  - rbac.yaml
";

const BASE_NAMESPACE: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: fixture-base
  labels:
    team: web
";

const BASE_WORKLOAD: &str = "\
# A Deployment with two containers and an init container, its Service and ConfigMap.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: fixture-base
  annotations: {}
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      serviceAccountName: web
      # kustomize writes integral floats as integers.
      terminationGracePeriodSeconds: 30.0
      initContainers:
        - name: migrate
          image: busybox:1.36
          command: [sh, -c, 'true']
      containers:
        - name: app
          image: example.com/web:1.0
          args: [--mode=dev, --port=8080]
          env:
            - name: A
              value: a
            - name: B
              value: b
            - name: OLD
              value: old
          resources:
            limits: {cpu: 500m, memory: 128Mi}
        - name: sidecar
          image: example.com/sidecar@sha256:0123
          env:
            - name: LEVEL
              value: info
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: fixture-base
spec:
  selector: {app: web}
  ports:
    - name: http
      port: 80
      targetPort: 8080
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: fixture-base
data:
  mode: dev
  permissions: \"0644\"
";

const BASE_RBAC: &str = "\
apiVersion: v1
kind: ServiceAccount
metadata:
  name: web
  namespace: fixture-base
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: web
  namespace: fixture-base
rules:
  - apiGroups: ['']
    resources: [configmaps]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: web
  namespace: fixture-base
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: web}
subjects:
  - kind: ServiceAccount
    name: web
    namespace: fixture-base
  - kind: ServiceAccount
    name: default
  - kind: ServiceAccount
    name: elsewhere
    namespace: other
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: web-reader
rules:
  - apiGroups: ['']
    resources: [namespaces]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: web-reader
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: web-reader}
subjects:
  - kind: ServiceAccount
    name: web
    namespace: fixture-base
";

const OVERLAY_KUSTOMIZATION: &str = "\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: fixture-prod
resources:
  - ../base
  - cache.yaml
patches:
  # Strategic merge, found by its own apiVersion/kind/name/namespace.
  - path: web-env.yaml
  # JSON6902, after the strategic merge (the containers are in the patch's order by then).
  - target:
      group: apps
      version: v1
      kind: Deployment
      name: web
    patch: |-
      - op: add
        path: /spec/template/metadata/annotations
        value:
          example.com/rollout: \"2\"
      - op: replace
        path: /spec/template/spec/containers/1/args/0
        value: --mode=prod
      # YAML 1.1, as kustomize reads JSON6902 patches written in YAML: `off` is false.
      - op: add
        path: /spec/paused
        value: off
  # Strategic merge with a target: the patch's own name does not matter.
  - target:
      kind: ConfigMap
      name: web-config
    patch: |-
      apiVersion: v1
      kind: ConfigMap
      metadata:
        name: any-name
      data:
        mode: prod
        extra: \"yes\"
replicas:
  - name: web
    count: 3
  - name: cache
    count: 2
images:
  - name: example.com/web
    newTag: \"2.0\"
  - name: busybox
    newName: registry.example.com/busybox
    digest: sha256:4567
  - name: example.com/cache
    newName: example.com/cache-v2
";

const OVERLAY_WEB_ENV: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: fixture-base
spec:
  template:
    spec:
      containers:
        - name: sidecar
          env:
            - name: LEVEL
              value: debug
        - name: app
          env:
            - name: B
              value: b2
            - name: NEW
              value: new
            - name: OLD
              $patch: delete
          resources:
            limits:
              cpu: null
            requests:
              cpu: 100m
              memory: null
";

const OVERLAY_CACHE: &str = "\
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: cache
spec:
  serviceName: cache
  selector:
    matchLabels: {app: cache}
  template:
    metadata:
      labels: {app: cache}
    spec:
      containers:
        - name: cache
          image: example.com/cache:7
          volumeMounts:
            - name: config
              mountPath: /etc/cache
      volumes:
        - name: config
          configMap:
            name: web-config
            # An unquoted 0644 is octal to kustomize: 420.
            defaultMode: 0644
";

/// Every kind of kustomize's ordering list and a few others, in scrambled order.
const ORDER_RESOURCES: &str = "\
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: b-validating}
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: a-mutating}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w, namespace: z}
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: l, namespace: a}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: pdb, namespace: a}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: cj, namespace: a}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: ss, namespace: a}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d2, namespace: a-b}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d1, namespace: a}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d0}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: pvc, namespace: a}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: pv}
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: pc}
---
apiVersion: v1
kind: LimitRange
metadata: {name: lr, namespace: a}
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: a}
---
apiVersion: v1
kind: Endpoints
metadata: {name: svc, namespace: a}
---
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: a}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm, namespace: default}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm2}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: crb}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cr}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: rb, namespace: a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: cr}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: r, namespace: a}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: sa, namespace: a}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: sc}
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: rq, namespace: a}
---
apiVersion: example.com/v1
kind: Namespace
metadata: {name: custom}
---
apiVersion: v1
kind: Namespace
metadata: {name: a}
";

/// The fixture kustomizations under `root`: (name, directory) of each to render.
fn write_fixtures(root: &Path) -> anyhow::Result<Vec<(&'static str, PathBuf)>> {
    write(
        root,
        &[
            ("base/kustomization.yaml", BASE_KUSTOMIZATION),
            ("base/namespace.yaml", BASE_NAMESPACE),
            ("base/workload.yaml", BASE_WORKLOAD),
            ("base/rbac.yaml", BASE_RBAC),
            ("overlay/kustomization.yml", OVERLAY_KUSTOMIZATION),
            ("overlay/web-env.yaml", OVERLAY_WEB_ENV),
            ("overlay/cache.yaml", OVERLAY_CACHE),
            ("order/Kustomization", "resources: [all.yaml]\n"),
            ("order/all.yaml", ORDER_RESOURCES),
        ],
    )?;
    Ok(vec![
        ("base", root.join("base")),
        ("overlay", root.join("overlay")),
        ("order", root.join("order")),
    ])
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {objects:#?}"))
}

fn kinds(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn base_renders_its_resources_in_kustomize_order() {
    let dir = TempDir::new("kustomize-base").expect("temp dir");
    write_fixtures(dir.path()).expect("fixtures");
    let objects = render(&dir.path().join("base")).expect("renders");
    assert_eq!(
        kinds(&objects),
        [
            "Namespace",
            "ServiceAccount",
            "Role",
            "ClusterRole",
            "RoleBinding",
            "ClusterRoleBinding",
            "ConfigMap",
            "Service",
            "Deployment"
        ]
    );
    // Nothing changes without transformers, except kustomize's removal of empty annotations.
    let web = find(&objects, "Deployment", "web");
    assert!(web["metadata"].get("annotations").is_none(), "{web:#}");
    assert_eq!(web["spec"]["replicas"], 1);
    let rb = find(&objects, "RoleBinding", "web");
    assert_eq!(
        rb["subjects"],
        json!([
            {"kind": "ServiceAccount", "name": "web", "namespace": "fixture-base"},
            {"kind": "ServiceAccount", "name": "default"},
            {"kind": "ServiceAccount", "name": "elsewhere", "namespace": "other"}
        ])
    );
}

#[test]
fn overlay_applies_every_supported_field() {
    let dir = TempDir::new("kustomize-overlay").expect("temp dir");
    write_fixtures(dir.path()).expect("fixtures");
    let objects = render(&dir.path().join("overlay")).expect("renders");
    assert_eq!(
        kinds(&objects),
        [
            "Namespace",
            "ServiceAccount",
            "Role",
            "ClusterRole",
            "RoleBinding",
            "ClusterRoleBinding",
            "ConfigMap",
            "Service",
            "Deployment",
            "StatefulSet"
        ]
    );

    // namespace: namespaced objects move, cluster-scoped ones do not, the Namespace is renamed.
    for object in &objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        let namespace = &object["metadata"]["namespace"];
        match kind {
            "Namespace" | "ClusterRole" | "ClusterRoleBinding" => {
                assert!(namespace.is_null(), "{object:#}")
            }
            _ => assert_eq!(namespace, "fixture-prod", "{object:#}"),
        }
    }
    let namespace = find(&objects, "Namespace", "fixture-prod");
    assert_eq!(namespace["metadata"]["labels"], json!({"team": "web"}));
    // ServiceAccount subjects follow their ServiceAccount; `default` takes the namespace; a
    // subject outside the kustomization keeps its namespace.
    assert_eq!(
        find(&objects, "RoleBinding", "web")["subjects"],
        json!([
            {"kind": "ServiceAccount", "name": "web", "namespace": "fixture-prod"},
            {"kind": "ServiceAccount", "name": "default", "namespace": "fixture-prod"},
            {"kind": "ServiceAccount", "name": "elsewhere", "namespace": "other"}
        ])
    );
    assert_eq!(
        find(&objects, "ClusterRoleBinding", "web-reader")["subjects"],
        json!([{"kind": "ServiceAccount", "name": "web", "namespace": "fixture-prod"}])
    );

    let web = find(&objects, "Deployment", "web");
    let pod = &web["spec"]["template"]["spec"];
    // Strategic merge: containers merged by name and env by name, in kustomize's order (the
    // patch's elements first); `$patch: delete` and `null` remove, new subtrees lose nulls.
    assert_eq!(
        pod["containers"],
        json!([
            {
                "name": "sidecar",
                "image": "example.com/sidecar@sha256:0123",
                "env": [{"name": "LEVEL", "value": "debug"}]
            },
            {
                "name": "app",
                "image": "example.com/web:2.0",
                "args": ["--mode=prod", "--port=8080"],
                "env": [
                    {"name": "B", "value": "b2"},
                    {"name": "NEW", "value": "new"},
                    {"name": "A", "value": "a"}
                ],
                "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "100m"}}
            }
        ])
    );
    // JSON6902.
    assert_eq!(
        web["spec"]["template"]["metadata"]["annotations"],
        json!({"example.com/rollout": "2"})
    );
    // replicas.
    assert_eq!(web["spec"]["replicas"], 3);
    let cache = find(&objects, "StatefulSet", "cache");
    assert_eq!(cache["spec"]["replicas"], 2);
    // images: a new tag; a new name and digest (replacing the tag); a new name only.
    assert_eq!(
        pod["initContainers"][0]["image"],
        "registry.example.com/busybox@sha256:4567"
    );
    assert_eq!(
        cache["spec"]["template"]["spec"]["containers"][0]["image"],
        "example.com/cache-v2:7"
    );
    // Strategic merge with a target.
    let config = find(&objects, "ConfigMap", "web-config");
    assert_eq!(
        config["data"],
        json!({"mode": "prod", "extra": "yes", "permissions": "0644"})
    );
    // Scalars typed as kustomize types them.
    assert_eq!(
        cache["spec"]["template"]["spec"]["volumes"][0]["configMap"]["defaultMode"],
        420
    );
    assert_eq!(pod["terminationGracePeriodSeconds"], json!(30));
    assert_eq!(web["spec"]["paused"], false);

    // The YAML form reads back as the same documents.
    let yaml = to_yaml(&objects).expect("yaml");
    assert_eq!(parse_documents(&yaml).expect("parses"), objects);
    assert_eq!(yaml.matches("\n---\n").count(), objects.len() - 1);
}

#[test]
fn output_follows_kustomize_legacy_order() {
    let dir = TempDir::new("kustomize-order").expect("temp dir");
    write_fixtures(dir.path()).expect("fixtures");
    let objects = render(&dir.path().join("order")).expect("renders");
    let ids: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{} {}/{}",
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["namespace"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            "Namespace /a",
            "Namespace /custom",
            "ResourceQuota a/rq",
            "StorageClass /sc",
            "CustomResourceDefinition /widgets.example.com",
            "ServiceAccount a/sa",
            "Role a/r",
            "ClusterRole /cr",
            "RoleBinding a/rb",
            "ClusterRoleBinding /crb",
            "ConfigMap default/cm",
            "ConfigMap /cm2",
            "Secret a/s",
            "Endpoints a/svc",
            "Service a/svc",
            "LimitRange a/lr",
            "PriorityClass /pc",
            "PersistentVolume /pv",
            "PersistentVolumeClaim a/pvc",
            "Deployment a-b/d2",
            "Deployment a/d1",
            "Deployment /d0",
            "StatefulSet a/ss",
            "CronJob a/cj",
            "PodDisruptionBudget a/pdb",
            "Lease a/l",
            "Widget z/w",
            "MutatingWebhookConfiguration /a-mutating",
            "ValidatingWebhookConfiguration /b-validating",
        ]
    );
}

/// The error of rendering `files` (a kustomization in the temp dir's `k/`).
fn render_error(files: &[(&str, &str)]) -> (String, PathBuf) {
    let dir = TempDir::new("kustomize-error").expect("temp dir");
    write(dir.path(), files).expect("files");
    let k = dir.path().join("k");
    match render(&k) {
        Ok(objects) => panic!("rendered {objects:#?}"),
        Err(e) => (
            format!("{e:#}"),
            k.canonicalize().expect("dir").join("kustomization.yaml"),
        ),
    }
}

const CONFIG_MAP: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n";

#[test]
fn unsupported_fields_are_errors_naming_field_and_file() {
    for (kustomization, field) in [
        (
            "resources: [c.yaml]\ncommonLabels: {a: b}\n",
            "commonLabels",
        ),
        (
            "resources: [c.yaml]\npatches:\n- path: c.yaml\n  options: {allowNameChange: true}\n",
            "patches[].options",
        ),
        (
            "resources: [c.yaml]\npatches:\n- path: c.yaml\n  target: {labelSelector: a=b}\n",
            "patches[].target.labelSelector",
        ),
        (
            "resources: [c.yaml]\nimages:\n- name: x\n  tagSuffix: -y\n",
            "images[].tagSuffix",
        ),
        (
            "resources: [c.yaml]\nreplicas:\n- name: x\n  count: 1\n  kind: Deployment\n",
            "replicas[].kind",
        ),
    ] {
        let (error, file) = render_error(&[
            ("k/kustomization.yaml", kustomization),
            ("k/c.yaml", CONFIG_MAP),
        ]);
        assert!(
            error.contains(&format!("`{field}`")) && error.contains(&file.display().to_string()),
            "{kustomization}: {error}"
        );
    }
}

#[test]
fn missing_files_are_errors_naming_the_path() {
    let (error, file) = render_error(&[("k/kustomization.yaml", "resources: [nothere.yaml]\n")]);
    assert!(
        error.contains("nothere.yaml")
            && error.contains("does not exist")
            && error.contains(&file.display().to_string()),
        "{error}"
    );
    let (error, _) = render_error(&[
        (
            "k/kustomization.yaml",
            "resources: [c.yaml]\npatches:\n- path: gone.yaml\n",
        ),
        ("k/c.yaml", CONFIG_MAP),
    ]);
    assert!(
        error.contains("gone.yaml") && error.contains("does not exist"),
        "{error}"
    );
    let (error, _) = render_error(&[("k/kustomization.yaml", "resources: [../sub]\n")]);
    assert!(error.contains("sub"), "{error}");
    let dir = TempDir::new("kustomize-empty").expect("temp dir");
    let error = format!("{:#}", render(dir.path()).expect_err("no kustomization"));
    assert!(error.contains("no kustomization file"), "{error}");
}

#[test]
fn what_kustomize_would_do_differently_is_refused() {
    let deployment = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  template:
    spec:
      containers:
        - name: c
          image: i
          ports: [{containerPort: 80, protocol: TCP}]
";
    for (patch, expected) in [
        // A JSON6902 patch without a target.
        ("- {op: add, path: /x, value: 1}\n", "needs a `target`"),
        // kustomize keeps these directives as fields.
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  $retainKeys: [template]\n",
            "does not interpret this directive",
        ),
        // Lists merged on two keys, present on both sides.
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    spec:\n      containers:\n        - name: c\n          ports: [{containerPort: 81, protocol: TCP}]\n",
            "on `containerPort` and `protocol`",
        ),
        // A patch that matches nothing.
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: other}\nspec: {paused: true}\n",
            "no resource matches",
        ),
    ] {
        let (error, _) = render_error(&[
            (
                "k/kustomization.yaml",
                "resources: [d.yaml]\npatches:\n- path: p.yaml\n",
            ),
            ("k/d.yaml", deployment),
            ("k/p.yaml", patch),
        ]);
        assert!(error.contains(expected), "{patch}: {error}");
    }
    // A value kustomize reads differently quoted and unquoted, written both ways.
    let (error, _) = render_error(&[
        ("k/kustomization.yaml", "resources: [c.yaml]\n"),
        (
            "k/c.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: \"0644\"}\nbinaryData: {b: 0644}\n",
        ),
    ]);
    assert!(error.contains("both quoted and unquoted"), "{error}");
    // Strategic merge needs the in-memory server's schema of the kind.
    let (error, _) = render_error(&[
        (
            "k/kustomization.yaml",
            "resources: [s.yaml]\npatches:\n- patch: |-\n    apiVersion: apps/v1\n    kind: StatefulSet\n    metadata: {name: s}\n    spec: {replicas: 2}\n",
        ),
        (
            "k/s.yaml",
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: s}\n",
        ),
    ]);
    assert!(error.contains("JSON6902"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// Cross-check against kubectl kustomize

fn parse_documents(yaml: &str) -> anyhow::Result<Vec<Value>> {
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(document)?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// The `Kustomize Version: vX.Y.Z` major version `kubectl version --client` reports, if any
/// (kubectl before 1.24 reports none).
fn kustomize_major(kubectl: &Path) -> Option<u64> {
    let output = Command::new(kubectl)
        .args(["version", "--client"])
        .output()
        .ok()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let version = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("Kustomize Version:"))?;
    version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// The paths where `a` and `b` differ (at most a few), for a readable assertion message.
fn differences(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    if out.len() >= 20 || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let here = format!("{path}.{key}");
                match (x.get(key), y.get(key)) {
                    (Some(p), Some(q)) => differences(&here, p, q, out),
                    (Some(p), None) => out.push(format!("{here}: ours {p}, kubectl's missing")),
                    (None, Some(q)) => out.push(format!("{here}: ours missing, kubectl's {q}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                differences(&format!("{path}[{i}]"), p, q, out);
            }
        }
        _ => out.push(format!("{path}: ours {a}, kubectl's {b}")),
    }
}

fn id(object: &Value) -> String {
    format!(
        "{} {}/{}",
        object["kind"].as_str().unwrap_or("?"),
        object["metadata"]["namespace"].as_str().unwrap_or(""),
        object["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// Renders `dir` with ours and with `kubectl kustomize`; a readable message if they differ.
fn compare(kubectl: &Path, dir: &Path) -> Result<(), String> {
    let ours = render(dir).map_err(|e| format!("{}: our render failed: {e:#}", dir.display()))?;
    let output = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .map_err(|e| format!("running {}: {e}", kubectl.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} kustomize {} failed: {}",
            kubectl.display(),
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let theirs = parse_documents(&String::from_utf8_lossy(&output.stdout))
        .map_err(|e| format!("parsing kubectl's output: {e}"))?;
    if ours == theirs {
        return Ok(());
    }
    let mut message = format!(
        "{}: ours differs from `{} kustomize`\nours:    {:?}\nkubectl: {:?}\n",
        dir.display(),
        kubectl.display(),
        ours.iter().map(id).collect::<Vec<_>>(),
        theirs.iter().map(id).collect::<Vec<_>>()
    );
    if let Some(i) = (0..ours.len().min(theirs.len())).find(|&i| ours[i] != theirs[i]) {
        let mut diffs = Vec::new();
        differences("", &ours[i], &theirs[i], &mut diffs);
        message.push_str(&format!(
            "first differing document #{i} ({}):\n  {}\nours:\n{}kubectl's:\n{}",
            id(&ours[i]),
            diffs.join("\n  "),
            serde_yaml::to_string(&ours[i]).unwrap_or_default(),
            serde_yaml::to_string(&theirs[i]).unwrap_or_default()
        ));
    }
    Err(message)
}

/// `deploy/` and its overlays, those that hold a kustomization (they are being written).
fn deploy_dirs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    [
        "deploy",
        "deploy/base",
        "deploy/overlays/dev",
        "deploy/overlays/production",
        "deploy/overlays/python-controller",
    ]
    .iter()
    .map(|d| root.join(d))
    .filter(|d| {
        ["kustomization.yaml", "kustomization.yml", "Kustomization"]
            .iter()
            .any(|f| d.join(f).is_file())
    })
    .collect()
}

#[test]
fn deploy_kustomizations_render() {
    for dir in deploy_dirs() {
        let objects = render(&dir).unwrap_or_else(|e| panic!("{}: {e:#}", dir.display()));
        assert!(!objects.is_empty(), "{} renders nothing", dir.display());
    }
}

#[test]
fn matches_kubectl_kustomize() {
    let dir = TempDir::new("kustomize-crosscheck").expect("temp dir");
    let mut dirs: Vec<(String, PathBuf)> = write_fixtures(dir.path())
        .expect("fixtures")
        .into_iter()
        .map(|(name, d)| (format!("fixture {name}"), d))
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for d in deploy_dirs() {
        let name = d.strip_prefix(&root).unwrap_or(&d).display().to_string();
        dirs.push((name, d));
    }

    let mut checked = 0;
    let mut failures = Vec::new();
    for kubectl in testkit::kubectl::binaries() {
        match kustomize_major(&kubectl) {
            Some(major) if major >= 5 => {}
            other => {
                eprintln!(
                    "{}: kustomize {} cannot render these kustomizations the way kustomize v5 \
                     does; not cross-checked against it",
                    kubectl.display(),
                    other.map_or("(none reported)".to_string(), |m| format!("v{m}"))
                );
                continue;
            }
        }
        for (_, d) in &dirs {
            if let Err(message) = compare(&kubectl, d) {
                failures.push(message);
            }
        }
        eprintln!(
            "cross-checked against {} kustomize: {}",
            kubectl.display(),
            dirs.iter()
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        checked += 1;
    }
    if checked == 0 {
        eprintln!(
            "kustomize cross-check not run: no kubectl with kustomize v5 in KUBECTL or on PATH"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
