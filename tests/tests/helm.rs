//! The Helm chart (`deploy/helm/newresource-controller`) with the real `helm` (`$HELM`, which
//! `.ci/run` installs): lint, the values schema, and the promise that the chart and
//! `deploy/`'s kustomizations install the same objects, so that the two cannot drift apart.
//! `deploy.rs` runs the chart's Deployment on the in-memory API server with its service
//! account's token, as it runs kustomize's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};
use serde_json::Value;
use testkit::apiserver::{ApiServer, Config};
use testkit::cluster::TempDir;
use testkit::render;

const RELEASE: &str = "newresource-controller";
const NAMESPACE: &str = "newresource-system";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> PathBuf {
    repo().join("deploy/helm/newresource-controller")
}

fn template(args: &[&str]) -> anyhow::Result<Vec<Value>> {
    render::helm_template(&chart(), RELEASE, NAMESPACE, args)
}

/// The labels and annotation only Helm adds; everything else must match kustomize.
const HELM_LABELS: [&str; 4] = [
    "helm.sh/chart",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
];

/// Objects by `kind namespace/name`, with Helm's own labels and the CRD's keep policy removed
/// (each must be present on every Helm object), and without a Namespace object (Helm installs
/// into one).
fn normalised(objects: Vec<Value>, from_helm: bool) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for mut o in objects {
        if o["kind"] == "Namespace" {
            continue;
        }
        let id = format!(
            "{} {}/{}",
            o["kind"].as_str().unwrap_or_default(),
            o["metadata"]["namespace"].as_str().unwrap_or_default(),
            o["metadata"]["name"].as_str().unwrap_or_default()
        );
        if from_helm {
            let labels = o["metadata"]["labels"]
                .as_object_mut()
                .with_context(|| format!("{id}: no labels"))?;
            for l in HELM_LABELS {
                ensure!(labels.remove(l).is_some(), "{id}: no {l} label");
            }
            if labels.is_empty() {
                o["metadata"].as_object_mut().map(|m| m.remove("labels"));
            }
            if let Some(a) = o["metadata"]["annotations"].as_object_mut() {
                a.remove("helm.sh/resource-policy");
                if a.is_empty() {
                    o["metadata"]
                        .as_object_mut()
                        .map(|m| m.remove("annotations"));
                }
            }
        }
        ensure!(out.insert(id.clone(), o).is_none(), "{id} twice");
    }
    Ok(out)
}

/// The first path at which `a` and `b` differ.
fn difference(path: &str, a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                difference(
                    &format!("{path}.{k}"),
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                )
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (p, q))| difference(&format!("{path}[{i}]"), p, q)),
        _ => (a != b).then(|| format!("{path}: kustomize {a} helm {b}")),
    }
}

/// The chart with `values` installs what `kubectl kustomize <dir>` does.
fn same_objects(dir: &str, values: &[&str]) -> anyhow::Result<()> {
    let kustomized = normalised(render::kustomize(&repo().join(dir))?, false)?;
    let mut args = Vec::new();
    for v in values {
        args.extend(["--set", v]);
    }
    let helmed = normalised(template(&args)?, true)?;
    let ids = |m: &BTreeMap<String, Value>| m.keys().cloned().collect::<Vec<_>>();
    ensure!(
        ids(&kustomized) == ids(&helmed),
        "{dir} vs chart {values:?}: kustomize has {:?}, helm has {:?}",
        ids(&kustomized),
        ids(&helmed)
    );
    for (id, k) in &kustomized {
        if let Some(d) = difference("", k, &helmed[id]) {
            anyhow::bail!("{dir} vs chart {values:?}: {id}{d}");
        }
    }
    Ok(())
}

#[test]
fn the_default_render_installs_what_kustomize_installs() -> anyhow::Result<()> {
    same_objects("deploy", &[])
}

#[test]
fn each_overlay_has_its_values() -> anyhow::Result<()> {
    same_objects("deploy/overlays/dev", &["replicas=1", "logFormat=text"])?;
    same_objects(
        "deploy/overlays/production",
        &[
            "podDisruptionBudget.enabled=true",
            "topologySpread.enabled=true",
        ],
    )?;
    same_objects(
        "deploy/overlays/python-controller",
        &["controller.implementation=python"],
    )?;
    same_objects(
        "deploy/overlays/go-controller",
        &["controller.implementation=go"],
    )?;
    same_objects(
        "deploy/overlays/leader-label",
        &["leaderLabel.enabled=true"],
    )
}

/// The values that turn on the objects of `deploy/monitoring`.
const MONITORING_VALUES: [&str; 3] = [
    "serviceMonitor.enabled=true",
    "monitoring.prometheusRule.enabled=true",
    "monitoring.dashboard.enabled=true",
];

/// The monitoring objects of the chart (ServiceMonitor, PrometheusRule, the dashboard's
/// ConfigMap) are those of `kubectl kustomize deploy/monitoring`; every other object is the
/// same as without them.
#[test]
fn the_monitoring_values_render_what_deploy_monitoring_renders() -> anyhow::Result<()> {
    let kustomized = normalised(render::kustomize(&repo().join("deploy/monitoring"))?, false)?;
    let kinds: Vec<&str> = kustomized
        .keys()
        .filter_map(|id| id.split(' ').next())
        .collect();
    ensure!(
        kinds == ["ConfigMap", "PrometheusRule", "ServiceMonitor"],
        "deploy/monitoring renders {kinds:?}"
    );
    let mut args = Vec::new();
    for v in MONITORING_VALUES {
        args.extend(["--set", v]);
    }
    let mut helmed = normalised(template(&args)?, true)?;
    let plain = normalised(template(&[])?, true)?;
    for (id, o) in &plain {
        ensure!(
            helmed.remove(id).as_ref() == Some(o),
            "{id} changed with {MONITORING_VALUES:?}"
        );
    }
    let ids = |m: &BTreeMap<String, Value>| m.keys().cloned().collect::<Vec<_>>();
    ensure!(
        ids(&kustomized) == ids(&helmed),
        "deploy/monitoring has {:?}, the chart adds {:?}",
        ids(&kustomized),
        ids(&helmed)
    );
    for (id, k) in &kustomized {
        if let Some(d) = difference("", k, &helmed[id]) {
            anyhow::bail!("deploy/monitoring vs chart {MONITORING_VALUES:?}: {id}{d}");
        }
    }
    Ok(())
}

/// Another release name renames the objects and the `job` the alerts and the dashboard select
/// (the metrics Service's name); the labels values land on their objects.
#[test]
fn the_monitoring_objects_follow_the_release() -> anyhow::Result<()> {
    let chart = chart();
    let mut args = vec![
        "--set",
        "monitoring.prometheusRule.labels.release=kube-prometheus",
    ];
    args.extend(["--set", "monitoring.dashboard.labels.team=platform"]);
    for v in MONITORING_VALUES {
        args.extend(["--set", v]);
    }
    let objects = render::helm_template(&chart, "ops", "monitoring", &args)?;
    let find = |kind: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind)
            .with_context(|| format!("no {kind}"))
    };
    let service = find("Service")?;
    let job = format!(
        "job=\"{}\"",
        service["metadata"]["name"].as_str().unwrap_or_default()
    );
    ensure!(job == "job=\"ops-newresource-controller-metrics\"", "{job}");

    let rule = find("PrometheusRule")?;
    ensure!(
        rule["metadata"]["name"] == "ops-newresource-controller",
        "{rule}"
    );
    ensure!(rule["metadata"]["namespace"] == "monitoring", "{rule}");
    ensure!(
        rule["metadata"]["labels"]["release"] == "kube-prometheus",
        "{rule}"
    );
    let exprs: Vec<&str> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .context("no rules")?
        .iter()
        .filter_map(|r| r["expr"].as_str())
        .collect();
    ensure!(exprs.len() == 6, "{exprs:?}");
    for e in &exprs {
        ensure!(
            e.contains(&job) && !e.contains("job=\"newresource-controller-metrics\""),
            "{e}"
        );
    }

    let dashboard = find("ConfigMap")?;
    ensure!(dashboard["metadata"]["name"] == "ops-newresource-controller-dashboard");
    ensure!(
        dashboard["metadata"]["labels"]["grafana_dashboard"] == "1",
        "{dashboard}"
    );
    ensure!(
        dashboard["metadata"]["labels"]["team"] == "platform",
        "{dashboard}"
    );
    let json: Value = serde_json::from_str(
        dashboard["data"]["newresource-controller.json"]
            .as_str()
            .context("no dashboard JSON")?,
    )?;
    let panels = json["panels"].as_array().context("no panels")?;
    let queries: Vec<&str> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    ensure!(!queries.is_empty(), "no dashboard queries");
    for q in &queries {
        ensure!(
            q.contains(&job) && !q.contains("job=\"newresource-controller-metrics\""),
            "{q}"
        );
    }

    let monitor = find("ServiceMonitor")?;
    ensure!(
        monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"],
        "the ServiceMonitor selects what the Service selects: {monitor}"
    );
    Ok(())
}

#[test]
fn the_chart_copies_of_the_monitoring_files_are_byte_equal() -> anyhow::Result<()> {
    for (original, copy) in [
        ("prometheusrule.yaml", "files/prometheusrule.yaml"),
        (
            "dashboards/newresource-controller.json",
            "files/dashboards/newresource-controller.json",
        ),
    ] {
        let a = std::fs::read(repo().join("deploy/monitoring").join(original))?;
        let b = std::fs::read(chart().join(copy))?;
        ensure!(
            a == b,
            "deploy/helm/newresource-controller/{copy} differs from deploy/monitoring/{original}; \
             copy it again"
        );
    }
    Ok(())
}

#[test]
fn the_chart_copy_of_the_crd_is_the_generated_one() -> anyhow::Result<()> {
    let generated = std::fs::read_to_string(repo().join("deploy/base/crd.yaml"))?;
    let copy = std::fs::read_to_string(chart().join("files/crd.yaml"))?;
    ensure!(
        generated == copy,
        "deploy/helm/newresource-controller/files/crd.yaml differs from deploy/base/crd.yaml; \
         copy it again after `newresource-controller crd`"
    );
    Ok(())
}

#[test]
fn helm_lint_is_clean() -> anyhow::Result<()> {
    let chart = chart();
    let out = render::helm(&["lint", "--strict", &chart.to_string_lossy()])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && stdout.contains("0 chart(s) failed"),
        "helm lint --strict:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Non-default values: every option renders, and what it renders is what it says.
#[test]
fn non_default_values_render_what_they_say() -> anyhow::Result<()> {
    let objects = template(&[
        "--set",
        "replicas=5",
        "--set",
        "lease.name=my-lease",
        "--set",
        "lease.namespace=elsewhere",
        "--set",
        "lease.duration=20s",
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "serviceAccount.name=custom-sa",
        "--set",
        "crds.install=false",
        "--set",
        "sidecar.extraArgs={--max-connections=64}",
        "--set",
        "sidecar.image.pullPolicy=Always",
    ])?;
    let find = |kind: &str| {
        objects
            .iter()
            .filter(move |o| o["kind"] == kind)
            .collect::<Vec<_>>()
    };
    ensure!(
        find("CustomResourceDefinition").is_empty(),
        "crds.install=false"
    );
    ensure!(find("ServiceMonitor").len() == 1, "serviceMonitor.enabled");
    let deployment = find("Deployment")
        .first()
        .copied()
        .context("no Deployment")?
        .clone();
    ensure!(deployment["spec"]["replicas"] == 5);
    let pod = &deployment["spec"]["template"]["spec"];
    ensure!(pod["serviceAccountName"] == "custom-sa");
    let sidecar = &pod["containers"][0];
    ensure!(sidecar["imagePullPolicy"] == "Always");
    let args: Vec<&str> = sidecar["args"]
        .as_array()
        .context("no args")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for want in [
        "--lease-name=my-lease",
        "--lease-namespace=elsewhere",
        "--lease-duration=20s",
        "--max-connections=64",
    ] {
        ensure!(args.contains(&want), "{want} not in {args:?}");
    }
    // The Lease's Role and binding follow the Lease to its namespace and name.
    let role = find("Role")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "newresource-controller-leader-election")
        .context("no leader-election Role")?;
    ensure!(role["metadata"]["namespace"] == "elsewhere", "{role}");
    ensure!(role["rules"][0]["resourceNames"][0] == "my-lease", "{role}");
    let sa = find("ServiceAccount");
    ensure!(
        sa.len() == 1 && sa[0]["metadata"]["name"] == "custom-sa",
        "{sa:?}"
    );
    // rbac.create=false and serviceAccount.create=false leave them to the user.
    let bare = template(&[
        "--set",
        "rbac.create=false",
        "--set",
        "serviceAccount.create=false",
    ])?;
    let kinds: Vec<&str> = bare.iter().filter_map(|o| o["kind"].as_str()).collect();
    ensure!(
        kinds
            .iter()
            .all(|k| !k.contains("Role") && *k != "ServiceAccount"),
        "{kinds:?}"
    );
    Ok(())
}

#[test]
fn the_schema_refuses_bad_values_naming_them() -> anyhow::Result<()> {
    let chart = chart();
    let chart = chart.to_string_lossy();
    for (value, message) in [
        ("replicas=-1", "at '/replicas'"),
        (
            "sidecar.image.pullPolicy=Sometimes",
            "at '/sidecar/image/pullPolicy'",
        ),
        ("lease.duration=fifteen", "at '/lease/duration'"),
        (
            "controller.implementation=java",
            "at '/controller/implementation'",
        ),
        ("leaderLabel.key=Not A Key", "at '/leaderLabel/key'"),
        (
            "sidecar.imag.tag=x",
            "additional properties 'imag' not allowed",
        ),
        (
            "monitoring.prometheusRule.enable=true",
            "additional properties 'enable' not allowed",
        ),
    ] {
        let out = render::helm(&["template", RELEASE, &chart, "--set", value])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "{value} was accepted");
        ensure!(
            stderr.contains(message),
            "{value}: no {message:?} in:\n{stderr}"
        );
    }
    Ok(())
}

/// `helm install --dry-run=server` against the in-memory API server: helm reads discovery and
/// the OpenAPI schema, checks that none of the objects exists, and stores nothing. A plain
/// `helm install` is refused there (docs/inmem-apiserver.md): helm 4 applies server-side,
/// which this server does not implement; with `--server-side=false` helm creates the objects
/// and its release Secret (in protobuf) and the install succeeds.
#[tokio::test]
async fn helm_install_dry_run_server_against_the_in_memory_server() -> anyhow::Result<()> {
    let server = ApiServer::start(Config::default()).await?;
    let dir = TempDir::new("helm-install")?;
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig, server.admin_token())?;
    let kubeconfig = kubeconfig.to_string_lossy().into_owned();
    let chart = chart().to_string_lossy().into_owned();
    // helm blocks; the server runs on this test's runtime.
    let install = |extra: &'static [&'static str]| {
        let (chart, kubeconfig) = (chart.clone(), kubeconfig.clone());
        tokio::task::spawn_blocking(move || {
            let mut args = vec![
                "install",
                RELEASE,
                &chart,
                "--namespace",
                NAMESPACE,
                "--create-namespace",
                "--kubeconfig",
                &kubeconfig,
            ];
            args.extend_from_slice(extra);
            render::helm(&args)
        })
    };
    let out = install(&["--dry-run=server"]).await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && stdout.contains("Dry run complete"),
        "helm install --dry-run=server:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        stdout.contains(&format!("kubectl -n {NAMESPACE} get lease {RELEASE}")),
        "the notes name the Lease:\n{stdout}"
    );
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::all(server.admin_client());
    ensure!(
        deployments
            .list(&Default::default())
            .await?
            .items
            .is_empty(),
        "a dry run stored a Deployment"
    );

    let out = install(&[]).await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains("server-side apply"),
        "helm install was expected to be refused for server-side apply (a documented \
         difference); it printed:\n{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );

    let out = install(&["--server-side=false"]).await??;
    ensure!(
        out.status.success(),
        "helm install --server-side=false:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        !deployments
            .list(&Default::default())
            .await?
            .items
            .is_empty(),
        "helm install --server-side=false stored no Deployment"
    );
    // helm's release record: a Secret it sent as protobuf.
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(server.admin_client(), NAMESPACE);
    let releases = secrets
        .list(&kube::api::ListParams::default().labels(&format!("owner=helm,name={RELEASE}")))
        .await?;
    ensure!(
        releases.items.len() == 1
            && releases.items[0].type_.as_deref() == Some("helm.sh/release.v1"),
        "helm's release Secret: {:?}",
        releases.items
    );
    Ok(())
}
