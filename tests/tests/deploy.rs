//! `deploy/` as users get it: the output of the real `kubectl kustomize` and of `helm template`
//! of the chart (`testkit::render`; the installs are [`INSTALLS`]), checked against the
//! binaries it runs, then applied to the API server with RBAC on and run as pods with the
//! service account's token.
//!
//! - The static checks read the rendered manifests: every arg and env var is one the binaries
//!   accept (from their `--help`), ports, probes and the Service line up, the pod is
//!   restricted, the grace period covers the handover, and the overlays do what they say.
//! - `the_deployment_runs_with_its_service_account` runs the Deployment's replicas with the
//!   kubelet stand-in (`testkit::kubelet`): NewResources get ready, one pod leads, SIGTERM of
//!   the leader's pod hands over, and the API server answered no request of the service
//!   account with 401 or 403: the RBAC is sufficient. It also runs against a real cluster
//!   (`E2E_USE_KUBECONFIG=1`), where it installs into `newresource-system` and removes it again.
//! - `kubectl_apply_k_installs_then_upgrades_to_production`: `kubectl apply -k` of the base,
//!   then of the production overlay, with every kubectl whose kustomize reads ours; the stored
//!   Deployment equals `kubectl kustomize`'s.
//! - `every_granted_verb_is_needed` removes each verb of the Role and the ClusterRole in turn
//!   (and of the pod-label Role of `deploy/overlays/leader-label`; the chart renders the same
//!   RBAC, `helm.rs` checks) and shows the request that needs it failing with 403, in the logs and the metrics of the
//!   container that sent it, while both containers keep running and stay live: the RBAC is
//!   minimal. In memory only: it needs a fresh cluster per verb.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, ensure};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::core::ObjectMeta;
use newresource_controller::crd::NewResource;
use serde_json::{Value, json};
use testkit::apiserver::{ApiServer, Config};
use testkit::cluster::{TempDir, TestCluster, use_real_cluster};
use testkit::controller::{ActiveWindow, active_windows, check_no_overlap};
use testkit::kubelet::{
    BinaryInfo, PodCredentials, PodTemplate, Probe, RunningPod, binary_of_image,
};
use testkit::render::{has_kustomize_v4, helm_template, kustomize, to_yaml};
use testkit::{kubectl, manifests, newresources, prom, tokens};

const WAIT: Duration = Duration::from_secs(60);
const DEPLOYMENT: &str = "newresource-controller";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Helm chart's installs: a name and the `--set` values.
const CHARTS: [(&str, &[&str]); 4] = [
    ("helm", &[]),
    (PYTHON_CHART, &["controller.implementation=python"]),
    (GO_CHART, &["controller.implementation=go"]),
    (
        "helm:production,leader-label",
        &[
            "podDisruptionBudget.enabled=true",
            "topologySpread.enabled=true",
            "leaderLabel.enabled=true",
        ],
    ),
];

/// What an install creates: `kubectl kustomize deploy/<dir>`, or for a chart (see [`CHARTS`])
/// the namespace the README has users create, then `helm template`.
fn render(install: &str) -> anyhow::Result<Vec<Value>> {
    let Some((_, values)) = CHARTS.iter().find(|(name, _)| *name == install) else {
        return kustomize(&repo().join(install)).with_context(|| format!("rendering {install}"));
    };
    let namespace: Value = serde_yaml::from_str(&std::fs::read_to_string(
        repo().join("deploy/base/namespace.yaml"),
    )?)?;
    let mut args = Vec::new();
    for v in *values {
        args.extend(["--set", v]);
    }
    let chart = repo().join("deploy/helm/newresource-controller");
    let mut objects = vec![namespace];
    objects.extend(
        helm_template(&chart, DEPLOYMENT, "newresource-system", &args)
            .with_context(|| format!("rendering {install}"))?,
    );
    Ok(objects)
}

const PYTHON_OVERLAY: &str = "deploy/overlays/python-controller";
const PYTHON_CHART: &str = "helm:python";
const GO_OVERLAY: &str = "deploy/overlays/go-controller";
const GO_CHART: &str = "helm:go";
const LEADER_LABEL_OVERLAY: &str = "deploy/overlays/leader-label";

const INSTALLS: [&str; 10] = [
    "deploy",
    "deploy/overlays/dev",
    "deploy/overlays/production",
    PYTHON_OVERLAY,
    GO_OVERLAY,
    LEADER_LABEL_OVERLAY,
    CHARTS[0].0,
    CHARTS[1].0,
    CHARTS[2].0,
    CHARTS[3].0,
];

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> anyhow::Result<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .with_context(|| format!("no {kind} {name}"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// `--flag=value` arguments of a container, by flag.
fn flag_values(container: &Value) -> BTreeMap<String, String> {
    strings(&container["args"])
        .into_iter()
        .filter_map(|a| a.split_once('='))
        .map(|(f, v)| (f.to_owned(), v.to_owned()))
        .collect()
}

fn duration_arg(container: &Value, flag: &str) -> anyhow::Result<Duration> {
    let flags = flag_values(container);
    let v = flags
        .get(flag)
        .with_context(|| format!("{} has no {flag}", container["name"]))?;
    Ok(humantime::parse_duration(v)?)
}

/// What a binary's `--help` says it accepts: long flags (aliases included) and env vars.
struct Accepted {
    flags: BTreeSet<String>,
    env: BTreeSet<String>,
}

fn accepted(info: &BinaryInfo) -> anyhow::Result<Accepted> {
    let (program, leading) = info.command()?;
    let out = std::process::Command::new(program)
        .args(leading)
        .arg("--help")
        .output()?;
    ensure!(out.status.success(), "{} --help failed", info.name);
    // One line: argparse (the Python controller) wraps inside `[env: …]`.
    let help = String::from_utf8(out.stdout)?
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let word = |s: &str| {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect::<String>()
    };
    let flags = help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter(|t| t.starts_with("--"))
        .map(|t| format!("--{}", word(&t[2..])))
        .collect();
    let mut env = BTreeSet::new();
    for part in help.split("[env: ").skip(1) {
        env.insert(word(part));
    }
    // Env vars the help names as defaults (`$POD_NAMESPACE`).
    for part in help.split('$').skip(1) {
        env.insert(word(part));
    }
    Ok(Accepted { flags, env })
}

#[test]
fn every_install_renders_completely_and_the_overlays_do_what_they_say() -> anyhow::Result<()> {
    for dir in INSTALLS {
        let objects = render(dir)?;
        for (kind, name) in [
            ("Namespace", "newresource-system"),
            (
                "CustomResourceDefinition",
                "newresources.apps.newresource.com",
            ),
            ("ServiceAccount", "newresource-controller"),
            ("Role", "newresource-controller-leader-election"),
            ("RoleBinding", "newresource-controller-leader-election"),
            ("ClusterRole", "newresource-controller"),
            ("ClusterRoleBinding", "newresource-controller"),
            ("Deployment", DEPLOYMENT),
            ("Service", "newresource-controller-metrics"),
        ] {
            find(&objects, kind, name).with_context(|| dir.to_owned())?;
        }
        let deployment = find(&objects, "Deployment", DEPLOYMENT)?;
        let replicas = deployment["spec"]["replicas"].as_u64();
        let pdb = find(&objects, "PodDisruptionBudget", DEPLOYMENT).ok();
        let spread = &deployment["spec"]["template"]["spec"]["topologySpreadConstraints"];
        match dir {
            "deploy/overlays/dev" => {
                ensure!(replicas == Some(1), "dev: {replicas:?} replicas");
                ensure!(
                    pdb.is_none(),
                    "dev: a PDB would block node drains with one replica"
                );
            }
            "deploy/overlays/production" => {
                ensure!(replicas == Some(3), "production: {replicas:?} replicas");
                let pdb = pdb.context("production: no PodDisruptionBudget")?;
                ensure!(pdb["spec"]["maxUnavailable"] == 1, "production PDB: {pdb}");
                let labels = &deployment["spec"]["template"]["metadata"]["labels"];
                for selector in [&pdb["spec"]["selector"], &spread[0]["labelSelector"]] {
                    for (k, v) in selector["matchLabels"]
                        .as_object()
                        .context("no matchLabels")?
                    {
                        ensure!(&labels[k] == v, "selector {selector} misses the pod labels");
                    }
                }
                let keys: Vec<&str> = spread
                    .as_array()
                    .context("production: no topologySpreadConstraints")?
                    .iter()
                    .filter_map(|c| c["topologyKey"].as_str())
                    .collect();
                ensure!(
                    keys.contains(&"kubernetes.io/hostname"),
                    "production spread: {keys:?}"
                );
            }
            _ => ensure!(replicas == Some(3), "{dir}: {replicas:?} replicas"),
        }
        let pod = PodTemplate::of_deployment(&objects, DEPLOYMENT)?;
        let names: Vec<&str> = pod
            .containers
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        ensure!(
            names == ["sidecar", "controller"],
            "{dir}: containers {names:?}"
        );
    }
    Ok(())
}

#[test]
fn the_deployment_passes_only_args_env_and_ports_the_binaries_accept() -> anyhow::Result<()> {
    for dir in INSTALLS {
        let objects = render(dir)?;
        let pod = PodTemplate::of_deployment(&objects, DEPLOYMENT)?;
        let mut declared: BTreeMap<String, u64> = BTreeMap::new();
        for c in &pod.containers {
            let name = c["name"].as_str().unwrap_or_default();
            let image = c["image"].as_str().context("no image")?;
            let info = binary_of_image(image)?;
            // The image tag is the crate version of the binary it carries.
            let (program, leading) = info.command()?;
            let version = std::process::Command::new(program)
                .args(leading)
                .arg("--version")
                .output()?;
            let version = String::from_utf8(version.stdout)?;
            let tag = image.rsplit(':').next().unwrap_or_default();
            ensure!(
                version.trim().ends_with(tag),
                "{dir}/{name}: image {image} but the binary says {version}"
            );
            ensure!(
                c["imagePullPolicy"] == "IfNotPresent",
                "{dir}/{name}: pull policy"
            );

            let accepted = accepted(info)?;
            for arg in strings(&c["args"]) {
                let flag = arg.split('=').next().unwrap_or(arg);
                ensure!(
                    accepted.flags.contains(flag),
                    "{dir}/{name}: {flag} is not a flag of {} (--help)",
                    info.name
                );
            }
            for e in c["env"].as_array().into_iter().flatten() {
                let var = e["name"].as_str().context("env without name")?;
                ensure!(
                    accepted.env.contains(var),
                    "{dir}/{name}: {} does not read env {var} (--help)",
                    info.name
                );
            }

            // Every listen address is explicit; those on loopback are not declared as ports,
            // the others are, with the same number.
            let flags = flag_values(c);
            let ports: BTreeMap<u64, String> = c["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        p["containerPort"].as_u64().unwrap_or(0),
                        p["name"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect();
            let mut listened = BTreeSet::new();
            for (aliases, _) in info.listeners {
                let value = aliases
                    .iter()
                    .find_map(|f| flags.get(*f))
                    .with_context(|| format!("{dir}/{name}: no {} in args", aliases[0]))?;
                let (host, port) = value.rsplit_once(':').context("not host:port")?;
                let port: u64 = port.parse()?;
                if host == "127.0.0.1" || host == "localhost" {
                    ensure!(
                        !ports.contains_key(&port),
                        "{dir}/{name}: loopback port {port} declared"
                    );
                } else {
                    ensure!(
                        ports.contains_key(&port),
                        "{dir}/{name}: {value} not declared as a port"
                    );
                    listened.insert(port);
                }
            }
            for (port, pname) in &ports {
                ensure!(
                    listened.contains(port),
                    "{dir}/{name}: port {pname} ({port}) has no listener"
                );
                ensure!(
                    declared.insert(pname.clone(), *port).is_none(),
                    "{dir}: port name {pname} used twice"
                );
            }
            // Probes use this container's declared ports, by name.
            for probe in [Probe::Startup, Probe::Liveness, Probe::Readiness] {
                let field = probe.field();
                let port = c[field]["httpGet"]["port"]
                    .as_str()
                    .with_context(|| format!("{dir}/{name}: {field} has no named HTTP port"))?;
                ensure!(
                    ports.values().any(|p| p == port),
                    "{dir}/{name}: {field} on {port}"
                );
            }
        }
        // The controller talks to the sidecar's leader API on the pod's loopback.
        let leader_listen = flag_values(pod.container("sidecar")?)
            .get("--listen")
            .cloned()
            .context("no --listen")?;
        let leader_url = flag_values(pod.container("controller")?)
            .get("--leader-url")
            .cloned()
            .context("no --leader-url")?;
        ensure!(
            leader_url == format!("http://{leader_listen}"),
            "{dir}: --leader-url {leader_url} vs --listen {leader_listen}"
        );
        // The Service exposes both metrics ports of the pods it selects.
        let service = find(&objects, "Service", "newresource-controller-metrics")?;
        let labels =
            &find(&objects, "Deployment", DEPLOYMENT)?["spec"]["template"]["metadata"]["labels"];
        for (k, v) in service["spec"]["selector"]
            .as_object()
            .context("no selector")?
        {
            ensure!(
                &labels[k] == v,
                "{dir}: the Service selects {k}={v}, not the pods"
            );
        }
        let targets: BTreeSet<&str> = service["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["targetPort"].as_str())
            .collect();
        ensure!(
            targets == BTreeSet::from(["leader-admin", "metrics"]),
            "{dir}: Service targets {targets:?}"
        );
        for t in targets {
            ensure!(
                declared.contains_key(t),
                "{dir}: Service targets undeclared port {t}"
            );
        }
    }
    Ok(())
}

#[test]
fn the_pod_is_restricted_sized_and_given_time_to_hand_over() -> anyhow::Result<()> {
    let dockerfile_user = |file: &str| -> anyhow::Result<u64> {
        let text = std::fs::read_to_string(repo().join(file))?;
        let user = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("USER "))
            .next_back()
            .with_context(|| format!("{file} sets no USER"))?;
        Ok(user.trim().split(':').next().unwrap_or_default().parse()?)
    };
    for dir in INSTALLS {
        let objects = render(dir)?;
        let deployment = find(&objects, "Deployment", DEPLOYMENT)?;
        let spec = &deployment["spec"]["template"]["spec"];
        let psc = &spec["securityContext"];
        ensure!(psc["runAsNonRoot"] == true, "{dir}: runAsNonRoot");
        ensure!(
            psc["seccompProfile"]["type"] == "RuntimeDefault",
            "{dir}: seccomp"
        );
        for key in ["hostNetwork", "hostPID", "hostIPC"] {
            ensure!(spec.get(key).is_none_or(|v| v == false), "{dir}: {key}");
        }
        ensure!(spec.get("volumes").is_none(), "{dir}: volumes (hostPath?)");
        for c in spec["containers"].as_array().context("no containers")? {
            let name = c["name"].as_str().unwrap_or_default();
            let sc = &c["securityContext"];
            ensure!(
                sc["allowPrivilegeEscalation"] == false,
                "{dir}/{name}: privilege escalation"
            );
            ensure!(
                sc["readOnlyRootFilesystem"] == true,
                "{dir}/{name}: writable root"
            );
            ensure!(
                sc["capabilities"]["drop"] == json!(["ALL"]),
                "{dir}/{name}: capabilities"
            );
            ensure!(
                sc.get("privileged").is_none_or(|v| v == false),
                "{dir}/{name}: privileged"
            );
            for r in ["cpu", "memory"] {
                ensure!(
                    c["resources"]["requests"].get(r).is_some(),
                    "{dir}/{name}: no {r} request"
                );
            }
            ensure!(
                c["resources"]["limits"].get("memory").is_some(),
                "{dir}/{name}: no memory limit"
            );
            // The image's USER is the uid the pod runs as.
            let image = c["image"].as_str().context("no image")?;
            let dockerfile = binary_of_image(image)?.dockerfile;
            let uid = dockerfile_user(dockerfile)?;
            ensure!(uid != 0, "{dockerfile}: root");
            ensure!(
                psc["runAsUser"] == uid,
                "{dir}: runAsUser vs {dockerfile} USER {uid}"
            );
        }

        // SIGTERM: the sidecar stops granting, waits out the grant (or the controller's
        // yield) and releases the Lease in one request. The grace period must cover that.
        let pod = PodTemplate::of_deployment(&objects, DEPLOYMENT)?;
        let sidecar = pod.container("sidecar")?;
        let grant = duration_arg(sidecar, "--grant")?;
        let renew_deadline = duration_arg(sidecar, "--renew-deadline")?;
        let api_timeout = duration_arg(sidecar, "--api-timeout").unwrap_or(renew_deadline / 2);
        ensure!(
            pod.termination_grace > grant + api_timeout,
            "{dir}: terminationGracePeriodSeconds {:?} <= grant {grant:?} + API timeout {api_timeout:?}",
            pod.termination_grace
        );
        // A leader whose controller stops reading steps down; one that reads stays.
        let consumer = duration_arg(sidecar, "--consumer-timeout")?;
        let poll = duration_arg(pod.container("controller")?, "--leader-poll-interval")?;
        ensure!(
            consumer > grant + poll,
            "{dir}: --consumer-timeout {consumer:?} must exceed the grant plus the poll interval"
        );
    }
    Ok(())
}

#[test]
fn rbac_binds_the_pods_service_account_to_its_lease() -> anyhow::Result<()> {
    for dir in INSTALLS {
        let objects = render(dir)?;
        let pod = PodTemplate::of_deployment(&objects, DEPLOYMENT)?;
        let lease = flag_values(pod.container("sidecar")?)
            .get("--lease-name")
            .cloned()
            .context("no --lease-name")?;
        let role = find(&objects, "Role", "newresource-controller-leader-election")?;
        ensure!(
            role["metadata"]["namespace"] == pod.namespace.as_str(),
            "{dir}: Role namespace"
        );
        for rule in role["rules"].as_array().context("no rules")? {
            let names = strings(&rule["resourceNames"]);
            let verbs = strings(&rule["verbs"]);
            if verbs != ["create"] && strings(&rule["resources"]) == ["leases"] {
                ensure!(
                    names == [lease.as_str()],
                    "{dir}: lease rule {rule} vs --lease-name {lease}"
                );
            }
        }
        for (kind, name) in [
            ("RoleBinding", "newresource-controller-leader-election"),
            ("ClusterRoleBinding", "newresource-controller"),
        ] {
            let binding = find(&objects, kind, name)?;
            ensure!(
                binding["subjects"]
                    == json!([{
                        "kind": "ServiceAccount",
                        "name": pod.service_account,
                        "namespace": pod.namespace,
                    }]),
                "{dir}: {kind} subjects {}",
                binding["subjects"]
            );
        }
    }
    Ok(())
}

/// Creates every object; on a real cluster the CRD may exist already.
async fn install(client: &kube::Client, objects: &[Value]) -> anyhow::Result<()> {
    for o in objects {
        let yaml = to_yaml(std::slice::from_ref(o))?;
        if let Err(e) = manifests::create_all(client, &yaml).await {
            let exists = matches!(e.downcast_ref::<kube::Error>(), Some(kube::Error::Api(s)) if s.code == 409);
            ensure!(
                exists && o["kind"] == "CustomResourceDefinition",
                "creating {}: {e:#}",
                o["metadata"]["name"]
            );
        }
    }
    Ok(())
}

/// Pods named as a ReplicaSet names them.
fn pod_names(n: usize) -> Vec<String> {
    let hash = &uuid::Uuid::new_v4().simple().to_string()[..10];
    (0..n)
        .map(|i| {
            format!(
                "{DEPLOYMENT}-{hash}-{i}x{}",
                &uuid::Uuid::new_v4().simple().to_string()[..4]
            )
        })
        .collect()
}

/// Starts one pod of `template` with a token requested for its service account, as the
/// kubelet does for every pod.
async fn start_pod(
    admin: &kube::Client,
    admin_kubeconfig: &Path,
    dir: &TempDir,
    template: &PodTemplate,
    name: &str,
) -> anyhow::Result<RunningPod> {
    let token = tokens::request_token(
        admin,
        &template.namespace,
        &template.service_account,
        Duration::from_secs(3600),
    )
    .await?;
    let credentials = PodCredentials::write(admin_kubeconfig, &token, dir.path(), name)?;
    RunningPod::start(template, name, &credentials).await
}

fn windows_of(pods: &[RunningPod]) -> anyhow::Result<Vec<(String, Vec<ActiveWindow>)>> {
    pods.iter()
        .map(|p| {
            Ok((
                p.name.clone(),
                active_windows(&p.container("controller")?.process.logs())?,
            ))
        })
        .collect()
}

/// Index of the pod whose controller has a window open now.
async fn wait_leader(pods: &[RunningPod], exclude: Option<usize>) -> anyhow::Result<usize> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        for (i, (_, ws)) in windows_of(pods)?.iter().enumerate() {
            if Some(i) != exclude && ws.last().is_some_and(|w| w.end.is_none()) {
                return Ok(i);
            }
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no controller became active"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_deployment_runs_with_its_service_account() -> anyhow::Result<()> {
    runs_with_its_service_account("deploy").await
}

/// The same with the Python controller in place of the Rust one: the swap changes only the
/// image, and the Python controller needs no more RBAC.
#[tokio::test]
async fn the_python_controller_overlay_runs_with_the_same_service_account() -> anyhow::Result<()> {
    python_runs_with_the_same_service_account(PYTHON_OVERLAY).await
}

/// The Helm chart's default install, run the same way: `helm template` applied with RBAC on.
#[tokio::test]
async fn the_chart_runs_with_its_service_account() -> anyhow::Result<()> {
    runs_with_its_service_account(CHARTS[0].0).await
}

#[tokio::test]
async fn the_chart_with_the_python_controller_runs_with_the_same_service_account()
-> anyhow::Result<()> {
    python_runs_with_the_same_service_account(PYTHON_CHART).await
}

async fn python_runs_with_the_same_service_account(install: &str) -> anyhow::Result<()> {
    runs_image_with_the_same_service_account(install, "newresource-controller-python:0.1.0").await
}

/// The same with the Go controller (examples/go-controller, built with `go` from `PATH`).
#[tokio::test]
async fn the_go_controller_overlay_runs_with_the_same_service_account() -> anyhow::Result<()> {
    runs_image_with_the_same_service_account(GO_OVERLAY, "newresource-controller-go:0.1.0").await
}

#[tokio::test]
async fn the_chart_with_the_go_controller_runs_with_the_same_service_account() -> anyhow::Result<()>
{
    runs_image_with_the_same_service_account(GO_CHART, "newresource-controller-go:0.1.0").await
}

async fn runs_image_with_the_same_service_account(
    install: &str,
    expected: &str,
) -> anyhow::Result<()> {
    let objects = render(install)?;
    let template = PodTemplate::of_deployment(&objects, DEPLOYMENT)?;
    let image = template.container("controller")?["image"].as_str();
    ensure!(image == Some(expected), "{install} runs {image:?}");
    runs_with_its_service_account(install).await
}

/// Installs `dir` and runs its Deployment (see [`run_deployment`]).
async fn runs_with_its_service_account(dir: &str) -> anyhow::Result<()> {
    let real = use_real_cluster();
    let cluster = TestCluster::start_with(Config {
        rbac: true,
        ..Config::default()
    })
    .await?;
    let admin = cluster.client();
    let objects = render(dir)?;
    let template = PodTemplate::of_deployment(&objects, DEPLOYMENT)?;
    if real {
        let namespaces: Api<Namespace> = Api::all(admin.clone());
        ensure!(
            namespaces.get_opt(&template.namespace).await?.is_none(),
            "namespace {} exists: refusing to run over an installation",
            template.namespace
        );
    }
    install(&admin, &objects).await?;
    let result = run_deployment(&cluster, &objects, &template).await;
    if real {
        uninstall(&admin, &objects).await;
    }
    result
}

async fn run_deployment(
    cluster: &TestCluster,
    objects: &[Value],
    template: &PodTemplate,
) -> anyhow::Result<()> {
    let admin = cluster.client();
    let dir = TempDir::new("deploy-pods")?;
    let replicas = find(objects, "Deployment", DEPLOYMENT)?["spec"]["replicas"]
        .as_u64()
        .context("no replicas")? as usize;
    let mut pods = Vec::new();
    for name in pod_names(replicas) {
        pods.push(start_pod(&admin, cluster.kubeconfig(), &dir, template, &name).await?);
    }
    for pod in &pods {
        pod.wait_ready(WAIT).await?;
        for c in ["sidecar", "controller"] {
            ensure!(
                pod.probe(c, Probe::Liveness).await? == 200,
                "{}/{c} not live",
                pod.name
            );
        }
    }

    let api: Api<NewResource> = Api::namespaced(admin.clone(), cluster.namespace());
    let first = newresources::names("before", 0..10);
    newresources::create(&api, &first).await?;
    newresources::wait_ready(&api, &first, WAIT).await?;
    let leader = wait_leader(&pods, None).await?;

    // A rollout or a drain stops the leader's pod: SIGTERM to both containers at once.
    let stopped = pods[leader].terminate().await?;
    for (container, status) in &stopped {
        let status = status.with_context(|| format!("{container} needed SIGKILL"))?;
        ensure!(status.success(), "{container} exited with {status}");
    }
    let next = wait_leader(&pods, Some(leader)).await?;
    let second = newresources::names("after", 0..5);
    newresources::create(&api, &second).await?;
    newresources::wait_ready(&api, &second, WAIT).await?;
    ensure!(next != leader);

    let windows = windows_of(&pods)?;
    let named: Vec<(&str, Vec<ActiveWindow>)> = windows
        .iter()
        .map(|(n, w)| (n.as_str(), w.clone()))
        .collect();
    check_no_overlap(&named)?;

    // Sufficient: the service account was never refused anything.
    if let Some(server) = cluster.in_memory() {
        let sa = format!(
            "system:serviceaccount:{}:{}",
            template.namespace, template.service_account
        );
        let requests: Vec<_> = server
            .audit()
            .into_iter()
            .filter(|r| r.user == sa)
            .collect();
        ensure!(
            requests.len() > 20,
            "only {} requests by {sa}",
            requests.len()
        );
        let refused: Vec<_> = requests
            .iter()
            .filter(|r| r.code == 401 || r.code == 403)
            .collect();
        ensure!(refused.is_empty(), "refused: {refused:#?}");
    }
    for pod in &mut pods {
        pod.terminate().await?;
    }
    Ok(())
}

/// Deletes what [`install`] created on a real cluster (not the CRD, which may predate us).
async fn uninstall(client: &kube::Client, objects: &[Value]) {
    use kube::api::DynamicObject;
    use kube::discovery::{Scope, pinned_kind};
    for o in objects.iter().rev() {
        if o["kind"] == "CustomResourceDefinition" {
            continue;
        }
        let Ok(obj) = serde_json::from_value::<DynamicObject>(o.clone()) else {
            continue;
        };
        let Some(types) = obj.types.as_ref() else {
            continue;
        };
        let Ok(gvk) = kube::core::GroupVersionKind::try_from(types) else {
            continue;
        };
        let Ok((resource, caps)) = pinned_kind(client, &gvk).await else {
            continue;
        };
        let api: Api<DynamicObject> = match (caps.scope, obj.metadata.namespace.as_deref()) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
            _ => Api::all_with(client.clone(), &resource),
        };
        let _ = api
            .delete(
                &obj.metadata.name.clone().unwrap_or_default(),
                &DeleteParams::default(),
            )
            .await;
    }
}

/// One verb of one rule, removed for one run.
#[derive(Clone, Debug)]
struct Removal {
    kind: &'static str,
    /// The Role or ClusterRole.
    name: String,
    rule: usize,
    verb: String,
    /// `leases`, `events`, `newresources`, `newresources/status`.
    resource: String,
}

impl Removal {
    fn container(&self) -> &'static str {
        if self.resource.starts_with("newresources") {
            "controller"
        } else {
            "sidecar"
        }
    }

    /// The manifests without this verb (and without the rule, if it was its last).
    fn apply_to(&self, objects: &[Value]) -> Vec<Value> {
        let mut out = objects.to_vec();
        for o in &mut out {
            if o["kind"] != self.kind || o["metadata"]["name"] != self.name.as_str() {
                continue;
            }
            let Some(rules) = o["rules"].as_array_mut() else {
                continue;
            };
            if let Some(verbs) = rules[self.rule]["verbs"].as_array_mut() {
                verbs.retain(|v| v != self.verb.as_str());
            }
            if strings(&rules[self.rule]["verbs"]).is_empty() {
                rules.remove(self.rule);
            }
        }
        out
    }
}

fn removals(objects: &[Value]) -> anyhow::Result<Vec<Removal>> {
    let mut out = Vec::new();
    for kind in ["Role", "ClusterRole"] {
        let roles: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
        ensure!(!roles.is_empty(), "no {kind}");
        for role in roles {
            for (i, rule) in role["rules"]
                .as_array()
                .context("no rules")?
                .iter()
                .enumerate()
            {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        out.push(Removal {
                            kind,
                            name: role["metadata"]["name"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                            rule: i,
                            verb: verb.to_owned(),
                            resource: resource.to_owned(),
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}

/// What one run without `removal` showed.
struct Refusal {
    removal: Removal,
    log: String,
    metric: String,
}

async fn run_without(objects: &[Value], removal: Removal) -> anyhow::Result<Refusal> {
    let what = format!(
        "without {} {} on {}",
        removal.kind, removal.verb, removal.resource
    );
    let server = ApiServer::start(Config {
        rbac: true,
        ..Config::default()
    })
    .await?;
    let admin = server.admin_client();
    let dir = TempDir::new("deploy-rbac")?;
    let admin_kubeconfig = dir.path().join("admin.kubeconfig");
    server.write_kubeconfig(&admin_kubeconfig, server.admin_token())?;
    install(&admin, &removal.apply_to(objects))
        .await
        .context(what.clone())?;
    // One object to reconcile, so the status write is attempted.
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("work".into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    namespaces.create(&PostParams::default(), &ns).await?;
    let api: Api<NewResource> = Api::namespaced(admin.clone(), "work");
    newresources::create(&api, &newresources::names("object", 0..1)).await?;

    let template = PodTemplate::of_deployment(objects, DEPLOYMENT)?;
    let name = &pod_names(1)[0];
    // `--pod-role-label` reads and patches the Pod's object.
    template
        .create_pod_object(&admin, name)
        .await
        .context(what.clone())?;
    let mut pod = start_pod(&admin, &admin_kubeconfig, &dir, &template, name).await?;
    let container = removal.container();
    let needle = format!(
        "cannot {} resource \\\"{}\\\"",
        removal.verb, removal.resource
    );
    let plain_needle = format!("cannot {} resource \"{}\"", removal.verb, removal.resource);
    // The log line: a warning or error carrying the API server's message.
    let log = {
        let process = &pod.container(container)?.process;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let found = process.logs().into_iter().find(|l| {
                let text = l.to_string();
                (text.contains(&needle) || text.contains(&plain_needle))
                    && matches!(l["level"].as_str(), Some("WARN" | "ERROR"))
            });
            if let Some(line) = found {
                break line;
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "{what}: {container} logged no warning with {plain_needle:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // The metric, on the container's metrics port.
    let (port, name) = match container {
        "sidecar" => ("leader-admin", "leader_sidecar_api_errors_total"),
        _ => ("metrics", "controller_api_errors_total"),
    };
    let labels = [
        ("resource", removal.resource.as_str()),
        ("verb", removal.verb.as_str()),
        ("code", "403"),
    ];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = String::from_utf8(pod.get(container, &json!(port), "/metrics").await?.body)?;
        if prom::sum(&text, name, &labels) >= 1.0 {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{what}: no {name}{labels:?} on {container}'s /metrics"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Not a crash: both containers still run and pass their liveness probes.
    ensure!(pod.all_running()?, "{what}: a container exited");
    for c in ["sidecar", "controller"] {
        ensure!(
            pod.probe(c, Probe::Liveness).await? == 200,
            "{what}: {c} not live"
        );
    }
    pod.terminate().await?;
    Ok(Refusal {
        metric: format!(
            "{name}{{resource=\"{}\",verb=\"{}\",code=\"403\"}}",
            removal.resource, removal.verb
        ),
        log: log["fields"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
            + " "
            + &log["fields"]["error"].to_string(),
        removal,
    })
}

#[tokio::test]
async fn every_granted_verb_is_needed() -> anyhow::Result<()> {
    let objects = render("deploy")?;
    let all = removals(&objects)?;
    ensure!(all.len() >= 8, "{} verbs granted", all.len());
    // With the pod role label on, the verbs it adds (the others are the base's, tested above).
    let labelled = render(LEADER_LABEL_OVERLAY)?;
    let label_verbs: Vec<Removal> = removals(&labelled)?
        .into_iter()
        .filter(|r| r.resource == "pods")
        .collect();
    ensure!(label_verbs.len() == 2, "pod verbs: {label_verbs:?}");
    let runs = all
        .into_iter()
        .map(|r| run_without(&objects, r))
        .chain(label_verbs.into_iter().map(|r| run_without(&labelled, r)));
    let results = futures::future::join_all(runs).await;
    let mut failures = Vec::new();
    for r in results {
        match r {
            Ok(refusal) => eprintln!(
                "{} {:<6} {:<20} -> {} | {}",
                refusal.removal.kind,
                refusal.removal.verb,
                refusal.removal.resource,
                refusal.metric,
                refusal.log
            ),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[tokio::test]
async fn kubectl_apply_k_installs_then_upgrades_to_production() -> anyhow::Result<()> {
    if use_real_cluster() {
        eprintln!("in memory only: it would install into the real cluster");
        return Ok(());
    }
    let mut ran = 0;
    for bin in kubectl::binaries() {
        // Debian's 1.20 bundles kustomize v2, which cannot read ours.
        if !has_kustomize_v4(&bin) {
            eprintln!("{}: no kustomize v4+, skipped", bin.display());
            continue;
        }
        // kubectl sends no token over plain HTTP, so this server runs without RBAC.
        let server = ApiServer::start(Config::default()).await?;
        let dir = TempDir::new("deploy-kubectl")?;
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig, server.admin_token())?;
        let kubectl = kubectl::Kubectl::new(&bin, &kubeconfig);
        let base = repo().join("deploy").to_string_lossy().into_owned();
        let out = kubectl.run(&["apply", "-k", &base]).await?;
        ensure!(
            out.status.success(),
            "apply -k deploy/: {}",
            kubectl::describe(&out)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            stdout.contains("deployment.apps/newresource-controller created"),
            "{stdout}"
        );

        let production = repo().join("deploy/overlays/production");
        let out = kubectl
            .run(&["apply", "-k", &production.to_string_lossy()])
            .await?;
        ensure!(
            out.status.success(),
            "apply -k production: {}",
            kubectl::describe(&out)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        for line in [
            "deployment.apps/newresource-controller configured",
            "poddisruptionbudget.policy/newresource-controller created",
            "clusterrole.rbac.authorization.k8s.io/newresource-controller unchanged",
        ] {
            ensure!(stdout.contains(line), "no {line:?} in:\n{stdout}");
        }
        // The server now holds what `kubectl kustomize` says production is.
        let rendered = render("deploy/overlays/production")?;
        let want = &find(&rendered, "Deployment", DEPLOYMENT)?["spec"]["template"]["spec"];
        let deployments: Api<kube::api::DynamicObject> = Api::namespaced_with(
            server.admin_client(),
            "newresource-system",
            &kube::api::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
                "apps",
                "v1",
                "Deployment",
            )),
        );
        let stored = serde_json::to_value(deployments.get(DEPLOYMENT).await?)?;
        let have = &stored["spec"]["template"]["spec"];
        for field in [
            "topologySpreadConstraints",
            "securityContext",
            "serviceAccountName",
        ] {
            ensure!(
                have[field] == want[field],
                "{field}: stored {} rendered {}",
                have[field],
                want[field]
            );
        }
        for (h, w) in have["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .zip(want["containers"].as_array().into_iter().flatten())
        {
            for field in ["name", "image", "args", "env", "ports", "securityContext"] {
                ensure!(
                    h[field] == w[field],
                    "container {field}: stored {} rendered {}",
                    h[field],
                    w[field]
                );
            }
        }
        ran += 1;
    }
    if ran == 0 {
        eprintln!("no kubectl with kustomize v4+ on KUBECTL/PATH: apply -k not exercised");
    }
    Ok(())
}
