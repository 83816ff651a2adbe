//! The controller conformance suite: the same end-to-end scenarios for any NewResource
//! controller that follows the sidecar, whatever its language.
//!
//! A controller is given as a command line ([`ControllerCommand`]). Each scenario starts pods
//! of one real `leader-sidecar` process and one controller process each, on the in-memory API
//! server with RBAC on (or a real cluster, see `testkit::cluster`), injects one fault, and
//! judges the controller by what it logged and what the API server saw:
//!
//! - the active windows of all controllers never overlap (the one property that matters);
//! - in memory, every status write was answered while its writer held the newest window, so no
//!   write of a deposed controller landed after a takeover;
//! - a window opened by a takeover carries a higher term than the one before it;
//! - every object created is ready for its current generation at the end (nothing lost).
//!
//! # The interface a controller must offer
//!
//! Everything reaches the controller through its environment, with the variable names of
//! `newresource-controller`'s flags (`LEADER_URL`, `WATCH_NAMESPACE`, `KUBECONFIG` or
//! `KUBE_API_SERVER` + `KUBE_TOKEN_FILE` + `KUBE_CA_FILE`, `LOG_FORMAT=json`, the probe and
//! metrics addresses: see [`spawn_controller`]); it answers with tracing-shaped JSON logs, probes
//! and a clean exit after SIGTERM. `docs/leader-api.md`, "Conformance", is the one description
//! of that interface. The controller's service account gets only the rules of the
//! `newresource-controller` ClusterRole of `deploy/base/rbac.yaml`, as a Role in the test's
//! namespace.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use newresource_controller::crd::NewResource;
use serde_json::Value;
use tokio::process::Command;
use tokio::time::Instant;

use crate::apiserver::Config;
use crate::cluster::{TempDir, TestCluster};
use crate::controller::{
    ActiveWindow, WINDOW_ENDED, WINDOW_STARTED, active_windows, check_no_overlap,
    check_writes_inside_windows, status_writes,
};
use crate::kubelet::PodCredentials;
use crate::process::LoggedChild;
use crate::sidecar::{FAST_TIMINGS, LONG_LEASE_TIMINGS, Sidecar, SidecarSpec};
use crate::{newresources, tokens, web};

/// The environment variable the `conformance` tool and suite read a controller command from.
pub const CONTROLLER_ENV: &str = "CONFORMANCE_CONTROLLER";

/// Upper bound of every wait: only a hung run ever reaches it.
const WAIT: Duration = Duration::from_secs(60);
/// Upper bound for a logged line to reach the test through a child's stderr pipe.
const PIPE_DELIVERY: Duration = Duration::from_secs(10);
/// Pods per scenario, as in the Deployment.
const PODS: [&str; 3] = ["pod-a", "pod-b", "pod-c"];
/// The rules the controller's service account gets, from the Deployment's RBAC.
const RBAC_YAML: &str = include_str!("../../deploy/base/rbac.yaml");
const CONTROLLER_CLUSTER_ROLE: &str = "newresource-controller";

/// A controller under test: a program and its arguments. Everything else reaches it through
/// the environment (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerCommand {
    /// Used in reports: `rust`, `python`, or the program's file name.
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl ControllerCommand {
    /// `newresource-controller` of this build.
    pub fn rust() -> anyhow::Result<Self> {
        Ok(Self {
            name: "rust".into(),
            program: crate::bins::try_binary("newresource-controller")?,
            args: Vec::new(),
        })
    }

    /// `examples/python-controller/controller.py`, run by `python3` from `PATH`.
    pub fn python() -> anyhow::Result<Self> {
        let script = repo_root().join("examples/python-controller/controller.py");
        anyhow::ensure!(script.exists(), "{} not found", script.display());
        Ok(Self {
            name: "python".into(),
            program: "python3".into(),
            args: vec![script.display().to_string()],
        })
    }

    /// Splits a command line at whitespace (no shell quoting: use a wrapper script for
    /// arguments with spaces).
    pub fn parse(line: &str) -> anyhow::Result<Self> {
        if line.contains(['"', '\'', '\\']) {
            bail!("{CONTROLLER_ENV}: quoting is not supported; use a wrapper script: {line:?}");
        }
        Self::from_argv(line.split_whitespace().map(str::to_owned).collect())
    }

    /// A program and its arguments, named after the program (or, for `python3 x.py`, after
    /// the script).
    pub fn from_argv(argv: Vec<String>) -> anyhow::Result<Self> {
        let mut words = argv.into_iter();
        let program = words.next().context("empty controller command line")?;
        let args: Vec<String> = words.collect();
        let named_after = args
            .iter()
            .find(|a| !a.starts_with('-'))
            .filter(|_| program.starts_with("python"))
            .unwrap_or(&program);
        let name = Path::new(named_after)
            .file_name()
            .map_or_else(|| named_after.clone(), |n| n.to_string_lossy().into_owned());
        Ok(Self {
            name,
            program: program.into(),
            args,
        })
    }

    /// The command in [`CONTROLLER_ENV`], if set.
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        match std::env::var(CONTROLLER_ENV) {
            Ok(line) if !line.trim().is_empty() => Self::parse(&line).map(Some),
            _ => Ok(None),
        }
    }
}

impl fmt::Display for ControllerCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.program.display())?;
        for a in &self.args {
            write!(f, " {a}")?;
        }
        Ok(())
    }
}

/// The workspace root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// One end-to-end scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// One leader reconciles, the standbys stay idle but ready, nothing is written twice.
    SteadyState,
    /// The leading sidecar is killed with SIGKILL (and restarted, as the kubelet would).
    KillLeadingSidecar,
    /// The leading pod gets SIGTERM: its controller stops, yields, and exits 0.
    SigtermHandover,
    /// The leading sidecar is frozen with SIGSTOP for longer than the lease, then thawed.
    FrozenSidecar,
    /// The leading sidecar is cut off from the API server (its controller is not).
    ApiPartition,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::SteadyState,
        Scenario::KillLeadingSidecar,
        Scenario::SigtermHandover,
        Scenario::FrozenSidecar,
        Scenario::ApiPartition,
    ];

    /// Short name, for the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::SteadyState => "steady-state",
            Scenario::KillLeadingSidecar => "kill-9-sidecar",
            Scenario::SigtermHandover => "sigterm-handover",
            Scenario::FrozenSidecar => "sigstop-sidecar",
            Scenario::ApiPartition => "api-partition",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Scenario::SteadyState => "steady state",
            Scenario::KillLeadingSidecar => "kill -9 of the leading sidecar",
            Scenario::SigtermHandover => "SIGTERM handover",
            Scenario::FrozenSidecar => "leading sidecar frozen with SIGSTOP",
            Scenario::ApiPartition => "API partition of the leading sidecar",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// What a passed scenario observed.
#[derive(Clone, Debug)]
pub struct Summary {
    pub controller: String,
    pub scenario: Scenario,
    /// Every controller's windows, by pod.
    pub windows: Vec<(String, Vec<ActiveWindow>)>,
    /// Successful status writes (in memory only; `None` on a real cluster).
    pub status_writes: Option<usize>,
    /// From the end of the first window to the start of the next (informational).
    pub handover: Option<Duration>,
    /// Objects found ready at the end.
    pub objects: usize,
    /// Why the scenario did not run (it needs fault injection, for example).
    pub skipped: Option<String>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<8} {:<38} ",
            self.controller,
            self.scenario.describe()
        )?;
        if let Some(why) = &self.skipped {
            return write!(f, "skipped: {why}");
        }
        let windows: Vec<String> = self
            .windows
            .iter()
            .flat_map(|(pod, ws)| {
                ws.iter().map(move |w| {
                    let term = w.term.map_or_else(|| "-".to_owned(), |t| t.to_string());
                    format!("{pod}@{term}")
                })
            })
            .collect();
        write!(
            f,
            "ok   windows [{}] no overlap, {} objects ready",
            windows.join(" "),
            self.objects
        )?;
        if let Some(n) = self.status_writes {
            write!(f, ", {n} status writes all inside their writer's window")?;
        }
        if let Some(h) = self.handover {
            write!(f, ", handover gap {} ms", h.as_millis())?;
        }
        Ok(())
    }
}

/// Runs one scenario against `controller`. An error says what went wrong and carries the tail
/// of every controller's log.
pub async fn run(controller: &ControllerCommand, scenario: Scenario) -> anyhow::Result<Summary> {
    let sidecar_args: &[&str] = match scenario {
        Scenario::SigtermHandover => &LONG_LEASE_TIMINGS,
        _ => &FAST_TIMINGS,
    };
    let mut world = World::start(controller, sidecar_args).await?;
    let result = match scenario {
        Scenario::SteadyState => steady_state(&mut world).await,
        Scenario::KillLeadingSidecar => kill_leading_sidecar(&mut world).await,
        Scenario::SigtermHandover => sigterm_handover(&mut world).await,
        Scenario::FrozenSidecar => frozen_sidecar(&mut world).await,
        Scenario::ApiPartition => api_partition(&mut world).await,
    };
    let result = match result {
        Ok(Some(skipped)) => Ok(Summary {
            controller: controller.name.clone(),
            scenario,
            windows: Vec::new(),
            status_writes: None,
            handover: None,
            objects: 0,
            skipped: Some(skipped),
        }),
        Ok(None) => world.judge(controller, scenario).await,
        Err(e) => Err(e),
    };
    // Thaw anything left frozen by a failed run, so that drop can kill it.
    for pod in &world.pods {
        let _ = pod.sidecar.signal(libc::SIGCONT);
    }
    result.map_err(|e| anyhow::anyhow!("{e:#}\n{}", world.log_tails()))
}

/// A sidecar and the controller under test, as the two containers of one pod.
struct ConformancePod {
    name: String,
    sidecar: Sidecar,
    sidecar_spec: SidecarSpec,
    /// The sidecar's own API token (in memory), so faults can single it out.
    sidecar_token: Option<String>,
    controller: LoggedChild,
    health: SocketAddr,
    /// The controller's API user, as the audit log names it.
    controller_user: String,
}

/// The cluster, the pods and the objects of one scenario run.
struct World {
    cluster: TestCluster,
    _files: TempDir,
    pods: Vec<ConformancePod>,
    api: Api<NewResource>,
    /// Every object created so far.
    objects: Vec<String>,
}

impl World {
    async fn start(controller: &ControllerCommand, sidecar_args: &[&str]) -> anyhow::Result<Self> {
        let cluster = TestCluster::start_with(Config {
            rbac: true,
            ..Config::default()
        })
        .await?;
        newresources::install_crd(&cluster.client()).await?;
        let files = TempDir::new("conformance")?;
        let accounts: Vec<String> = PODS.iter().map(|p| format!("{p}-controller")).collect();
        grant_controller_rules(&cluster, &accounts).await?;
        let mut pods = Vec::new();
        for (name, account) in PODS.iter().zip(&accounts) {
            let (sidecar_kubeconfig, sidecar_token) =
                cluster.client_kubeconfig(&format!("{name}-sidecar"))?;
            let sidecar_spec = SidecarSpec::new(
                &sidecar_kubeconfig,
                cluster.namespace(),
                "conformance",
                name,
            )
            .args(sidecar_args.iter().copied());
            let sidecar = Sidecar::spawn(sidecar_spec.clone()).await?;
            let credentials = credentials_of(&cluster, account, files.path()).await?;
            let (controller, health) = spawn_controller(
                controller,
                name,
                &credentials,
                &sidecar,
                cluster.namespace(),
            )
            .await?;
            pods.push(ConformancePod {
                name: (*name).to_owned(),
                sidecar,
                sidecar_spec,
                sidecar_token,
                controller,
                health,
                controller_user: format!("system:serviceaccount:{}:{account}", cluster.namespace()),
            });
        }
        let api = Api::namespaced(cluster.client(), cluster.namespace());
        Ok(Self {
            cluster,
            _files: files,
            pods,
            api,
            objects: Vec::new(),
        })
    }

    /// Creates `n` more objects named `<prefix>-NN`.
    async fn create(&mut self, prefix: &str, n: usize) -> anyhow::Result<()> {
        let names = newresources::names(prefix, 0..n);
        newresources::create(&self.api, &names).await?;
        self.objects.extend(names);
        Ok(())
    }

    /// Waits until every object created so far is ready for its current generation.
    async fn all_ready(&self) -> anyhow::Result<()> {
        newresources::wait_ready(&self.api, &self.objects, WAIT)
            .await
            .map(drop)
    }

    /// Waits until a controller other than those in `except` opens its first window; returns
    /// its index.
    async fn window_opens(&self, except: &[usize]) -> anyhow::Result<usize> {
        let deadline = Instant::now() + WAIT;
        loop {
            for (i, pod) in self.pods.iter().enumerate() {
                if !except.contains(&i) && !pod.controller.logs_with(WINDOW_STARTED).is_empty() {
                    return Ok(i);
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no controller opened an active window within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Called once `next` opened a window after taking over from `i`: the controller of pod
    /// `i` must have closed every window it opened. A correct controller logged `active window
    /// ended` before the takeover could happen, so the wait only covers the line's way through
    /// the stderr pipe; a controller still active is an overlap.
    async fn closed_before_takeover(&self, i: usize, next: usize) -> anyhow::Result<()> {
        let c = &self.pods[i].controller;
        let deadline = Instant::now() + PIPE_DELIVERY;
        while c.logs_with(WINDOW_ENDED).len() < c.logs_with(WINDOW_STARTED).len() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "active windows overlap: {} is still active after {} opened a window",
                c.name,
                self.pods[next].controller.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Waits until the sidecar of pod `i` follows `leader`'s sidecar.
    async fn follows(&self, i: usize, leader: usize) -> anyhow::Result<()> {
        let leader = self.pods[leader].name.as_str();
        let status = self.pods[i]
            .sidecar
            .wait_status(WAIT, |s| {
                !s.is_leader && s.holder.as_deref() == Some(leader)
            })
            .await?;
        anyhow::ensure!(!status.is_leader);
        Ok(())
    }

    /// Waits until a probe of pod `i`'s controller answers `code`.
    async fn probe(&self, i: usize, path: &str, code: u16) -> anyhow::Result<()> {
        let pod = &self.pods[i];
        let deadline = Instant::now() + WAIT;
        loop {
            let got = web::get(pod.health, path).await.map(|r| r.status);
            if matches!(got, Ok(c) if c == code) {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} {path}: {got:?}, expected {code}",
                pod.controller.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn windows(&self) -> anyhow::Result<Vec<(String, Vec<ActiveWindow>)>> {
        self.pods
            .iter()
            .map(|p| Ok((p.name.clone(), active_windows(&p.controller.logs())?)))
            .collect()
    }

    /// The checks every scenario ends with (see the module docs).
    async fn judge(
        &self,
        controller: &ControllerCommand,
        scenario: Scenario,
    ) -> anyhow::Result<Summary> {
        self.all_ready().await?;
        let windows = self.windows()?;
        let by_user: Vec<(&str, Vec<ActiveWindow>)> = self
            .pods
            .iter()
            .zip(&windows)
            .map(|(p, (_, ws))| (p.controller_user.as_str(), ws.clone()))
            .collect();
        check_no_overlap(&by_user)?;
        check_terms_grow(&windows)?;
        let status_writes = match self.cluster.in_memory() {
            Some(server) => Some(check_writes_inside_windows(&server.audit(), &by_user)?),
            None => None,
        };
        Ok(Summary {
            controller: controller.name.clone(),
            scenario,
            handover: handover_gap(&windows),
            windows,
            status_writes,
            objects: self.objects.len(),
            skipped: None,
        })
    }

    /// The last lines of every controller's log, for failure messages.
    fn log_tails(&self) -> String {
        let mut out = String::from("controller logs (last 15 lines each):");
        for pod in &self.pods {
            let logs = pod.controller.logs();
            out.push_str(&format!("\n--- {} ---", pod.controller.name));
            for line in &logs[logs.len().saturating_sub(15)..] {
                out.push_str(&format!("\n{line}"));
            }
        }
        out
    }
}

/// Fails if a window opened by a takeover does not carry a higher term than the window
/// before it: `term` is the fencing token of the contract.
fn check_terms_grow(windows: &[(String, Vec<ActiveWindow>)]) -> anyhow::Result<()> {
    let mut all: Vec<(&str, &ActiveWindow)> = windows
        .iter()
        .flat_map(|(pod, ws)| ws.iter().map(move |w| (pod.as_str(), w)))
        .collect();
    all.sort_by_key(|(_, w)| w.start);
    for pair in all.windows(2) {
        let ((a_pod, a), (b_pod, b)) = (pair[0], pair[1]);
        anyhow::ensure!(
            a.term.is_some() && b.term.is_some(),
            "windows without a term: {a_pod} {a:?}, {b_pod} {b:?}"
        );
        if a_pod != b_pod {
            anyhow::ensure!(
                b.term > a.term,
                "{b_pod} took over in term {:?}, not after {a_pod}'s term {:?}",
                b.term,
                a.term
            );
        } else {
            anyhow::ensure!(
                b.term >= a.term,
                "{a_pod}'s term went back: {a:?} then {b:?}"
            );
        }
    }
    Ok(())
}

/// From the end of the earliest window to the start of the next one, when both are logged.
fn handover_gap(windows: &[(String, Vec<ActiveWindow>)]) -> Option<Duration> {
    let mut all: Vec<&ActiveWindow> = windows.iter().flat_map(|(_, ws)| ws).collect();
    all.sort_by_key(|w| w.start);
    let (first, next) = (all.first()?, all.get(1)?);
    let gap = next.start.duration_since(first.end?);
    Duration::try_from(gap).ok()
}

/// Creates the Role the controllers' service accounts get (the `newresource-controller`
/// ClusterRole's rules, in the test's namespace), the accounts, and the binding.
async fn grant_controller_rules(cluster: &TestCluster, accounts: &[String]) -> anyhow::Result<()> {
    let ns = cluster.namespace();
    let client = cluster.client();
    let rules = cluster_role_rules(RBAC_YAML, CONTROLLER_CLUSTER_ROLE)?;
    let meta = |name: &str| ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(ns.to_owned()),
        ..ObjectMeta::default()
    };
    let pp = PostParams::default();
    Api::<Role>::namespaced(client.clone(), ns)
        .create(
            &pp,
            &Role {
                metadata: meta(CONTROLLER_CLUSTER_ROLE),
                rules: Some(rules),
            },
        )
        .await
        .context("cannot create the controllers' Role")?;
    let service_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    for account in accounts {
        service_accounts
            .create(
                &pp,
                &ServiceAccount {
                    metadata: meta(account),
                    ..ServiceAccount::default()
                },
            )
            .await
            .with_context(|| format!("cannot create serviceaccount {account}"))?;
    }
    Api::<RoleBinding>::namespaced(client, ns)
        .create(
            &pp,
            &RoleBinding {
                metadata: meta(CONTROLLER_CLUSTER_ROLE),
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name: CONTROLLER_CLUSTER_ROLE.into(),
                },
                subjects: Some(
                    accounts
                        .iter()
                        .map(|a| Subject {
                            kind: "ServiceAccount".into(),
                            name: a.clone(),
                            namespace: Some(ns.to_owned()),
                            ..Subject::default()
                        })
                        .collect(),
                ),
            },
        )
        .await
        .context("cannot create the controllers' RoleBinding")?;
    Ok(())
}

/// The rules of ClusterRole `name` in a multi-document YAML.
fn cluster_role_rules(yaml: &str, name: &str) -> anyhow::Result<Vec<PolicyRule>> {
    use serde::Deserialize;
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(doc)?;
        if value["kind"] == "ClusterRole" && value["metadata"]["name"] == name {
            return serde_json::from_value(value["rules"].clone())
                .with_context(|| format!("bad rules in ClusterRole {name}"));
        }
    }
    bail!("no ClusterRole {name} in deploy/base/rbac.yaml")
}

/// A token of `account` (TokenRequest, as `kubectl create token`), as a token file and a
/// kubeconfig in `dir`.
async fn credentials_of(
    cluster: &TestCluster,
    account: &str,
    dir: &Path,
) -> anyhow::Result<PodCredentials> {
    let token = tokens::request_token(
        &cluster.client(),
        cluster.namespace(),
        account,
        Duration::from_secs(3600),
    )
    .await?;
    PodCredentials::write(cluster.kubeconfig(), &token, dir, account)
}

/// Variables of the interface that must not leak in from the test's own environment.
const INHERITED: [&str; 8] = [
    "LEADER_ELECT",
    "LEADER_POLL_INTERVAL",
    "MAX_CONCURRENT_RECONCILES",
    "API_TIMEOUT",
    "KUBE_CA_FILE",
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    "RUST_LOG",
];

/// Starts the controller under test for pod `pod`, pointed at `sidecar`; returns it with its
/// health address.
async fn spawn_controller(
    controller: &ControllerCommand,
    pod: &str,
    credentials: &PodCredentials,
    sidecar: &Sidecar,
    namespace: &str,
) -> anyhow::Result<(LoggedChild, SocketAddr)> {
    let mut command = Command::new(&controller.program);
    command.args(&controller.args);
    for var in INHERITED {
        command.env_remove(var);
    }
    command
        .env("LEADER_URL", format!("http://{}", sidecar.api))
        .env("WATCH_NAMESPACE", namespace)
        .envs(credentials.env())
        .env("LOG_FORMAT", "json")
        // A Python controller would otherwise leave __pycache__ in the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("HEALTH_PROBE_BIND_ADDRESS", "127.0.0.1:0")
        .env("METRICS_BIND_ADDRESS", "127.0.0.1:0");
    let process = LoggedChild::spawn(&format!("{pod}/controller"), command)
        .with_context(|| format!("cannot start {controller}"))?;
    let [health] = process
        .wait_addresses("newresource-controller starting", ["health"])
        .await
        .with_context(|| format!("{controller} did not log its startup line"))?;
    Ok((process, health))
}

/// Steady state: one window, on one pod; the standbys are ready and idle; each object is
/// written once per generation.
async fn steady_state(w: &mut World) -> anyhow::Result<Option<String>> {
    let leader = w.window_opens(&[]).await?;
    w.create("steady", 20).await?;
    w.all_ready().await?;
    // A spec change bumps the generation: the status must follow it.
    w.api
        .patch(
            "steady-07",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"foo": "changed"}})),
        )
        .await?;
    w.all_ready().await?;
    for i in 0..w.pods.len() {
        w.probe(i, "/readyz", 200).await?;
        w.probe(i, "/healthz", 200).await?;
    }
    for (i, pod) in w.pods.iter().enumerate() {
        let opened = pod.controller.logs_with(WINDOW_STARTED).len();
        let expected = usize::from(i == leader);
        anyhow::ensure!(
            opened == expected,
            "{} opened {opened} windows in a steady state, expected {expected}",
            pod.controller.name
        );
    }
    if let Some(server) = w.cluster.in_memory() {
        let audit = server.audit();
        let writes = status_writes(&audit);
        let leader_user = w.pods[leader].controller_user.as_str();
        if let Some(other) = writes.iter().find(|r| r.user != leader_user) {
            bail!("a standby wrote status: {other:?}");
        }
        // 20 objects at generation 1, one of them again at generation 2; no rewrite of an
        // unchanged status.
        anyhow::ensure!(
            writes.len() == 21,
            "{} successful status writes for 21 (object, generation) pairs",
            writes.len()
        );
    }
    Ok(None)
}

/// kill -9 of the leading sidecar: its controller stops (the stream closes, the sidecar is
/// unreachable), a standby takes over once the Lease expires, and the restarted sidecar
/// follows.
async fn kill_leading_sidecar(w: &mut World) -> anyhow::Result<Option<String>> {
    let leader = w.window_opens(&[]).await?;
    w.create("before", 10).await?;
    w.all_ready().await?;
    w.pods[leader].sidecar.signal(libc::SIGKILL)?;
    let next = w.window_opens(&[leader]).await?;
    w.closed_before_takeover(leader, next).await?;
    w.create("after", 10).await?;
    w.all_ready().await?;
    // The kubelet restarts the container on the same port.
    let pod = &mut w.pods[leader];
    let _ = pod.sidecar.wait_exit(WAIT).await?;
    let mut spec = pod.sidecar_spec.clone();
    spec.listen = Some(pod.sidecar.api);
    pod.sidecar = Sidecar::spawn(spec).await?;
    w.follows(leader, next).await?;
    w.probe(leader, "/readyz", 200).await?;
    Ok(None)
}

/// SIGTERM to both containers of the leading pod, with a lease too long to expire during the
/// test: the takeover must come from the controller's yield.
async fn sigterm_handover(w: &mut World) -> anyhow::Result<Option<String>> {
    let leader = w.window_opens(&[]).await?;
    w.create("before", 10).await?;
    w.all_ready().await?;
    w.pods[leader].controller.signal(libc::SIGTERM)?;
    w.pods[leader].sidecar.signal(libc::SIGTERM)?;
    let next = w.window_opens(&[leader]).await?;
    w.closed_before_takeover(leader, next).await?;
    let pod = &mut w.pods[leader];
    let controller_exit = pod.controller.wait_exit(WAIT).await?;
    let sidecar_exit = pod.sidecar.wait_exit(WAIT).await?;
    anyhow::ensure!(
        controller_exit.success(),
        "the controller exited with {controller_exit} after SIGTERM"
    );
    anyhow::ensure!(
        sidecar_exit.success(),
        "the sidecar exited with {sidecar_exit} after SIGTERM"
    );
    w.create("after", 10).await?;
    w.all_ready().await?;
    Ok(None)
}

/// SIGSTOP of the leading sidecar: its controller gets no fresh grant and must stop when the
/// last one runs out; a standby takes over after the lease duration; thawed, the old sidecar
/// follows and its controller stays idle.
async fn frozen_sidecar(w: &mut World) -> anyhow::Result<Option<String>> {
    let leader = w.window_opens(&[]).await?;
    w.create("before", 10).await?;
    w.all_ready().await?;
    w.pods[leader].sidecar.signal(libc::SIGSTOP)?;
    // A takeover needs the Lease unrenewed for its whole duration: the freeze outlasts it.
    let next = w.window_opens(&[leader]).await?;
    w.closed_before_takeover(leader, next).await?;
    w.create("frozen", 10).await?;
    w.all_ready().await?;
    w.pods[leader].sidecar.signal(libc::SIGCONT)?;
    w.follows(leader, next).await?;
    w.probe(leader, "/readyz", 200).await?;
    w.create("thawed", 10).await?;
    w.all_ready().await?;
    Ok(None)
}

/// The leading sidecar's API requests hang while its controller still reaches the API: the
/// controller must stop writing because its grants stop, not because its writes fail.
async fn api_partition(w: &mut World) -> anyhow::Result<Option<String>> {
    if w.cluster.in_memory().is_none() {
        return Ok(Some(
            "needs the in-memory API server's fault injection".into(),
        ));
    }
    let leader = w.window_opens(&[]).await?;
    w.create("before", 10).await?;
    w.all_ready().await?;
    let token = w.pods[leader]
        .sidecar_token
        .clone()
        .context("in memory every sidecar has its own token")?;
    let partition = |server: &crate::apiserver::ApiServer| server.faults().partition_token(&token);
    let rule = w.cluster.in_memory().map(partition);
    let next = w.window_opens(&[leader]).await?;
    w.closed_before_takeover(leader, next).await?;
    w.create("partitioned", 10).await?;
    w.all_ready().await?;
    if let (Some(server), Some(rule)) = (w.cluster.in_memory(), rule) {
        server.faults().remove(rule);
    }
    w.follows(leader, next).await?;
    w.create("healed", 10).await?;
    w.all_ready().await?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_parse_and_are_named() {
        let c = ControllerCommand::parse("python3 -u examples/python-controller/controller.py")
            .unwrap();
        assert_eq!(c.name, "controller.py");
        assert_eq!(c.program, PathBuf::from("python3"));
        assert_eq!(c.args, ["-u", "examples/python-controller/controller.py"]);
        let c = ControllerCommand::parse("/usr/local/bin/my-controller --verbose").unwrap();
        assert_eq!(c.name, "my-controller");
        assert!(ControllerCommand::parse("  ").is_err());
        assert!(ControllerCommand::parse("sh -c 'x y'").is_err());
    }

    #[test]
    fn scenarios_have_unique_names() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::from_name(s.name()), Some(s));
        }
        assert_eq!(Scenario::from_name("nope"), None);
    }

    #[test]
    fn the_controller_rules_come_from_the_deployment() {
        let rules = cluster_role_rules(RBAC_YAML, CONTROLLER_CLUSTER_ROLE).unwrap();
        let verbs: Vec<(String, Vec<String>)> = rules
            .iter()
            .flat_map(|r| {
                r.resources
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |res| (res, r.verbs.clone()))
            })
            .collect();
        assert!(verbs.contains(&("newresources".into(), vec!["list".into(), "watch".into()])));
        assert!(verbs.contains(&("newresources/status".into(), vec!["update".into()])));
        assert!(cluster_role_rules(RBAC_YAML, "nope").is_err());
    }

    fn window(term: i64, start_s: i64, end_s: Option<i64>) -> ActiveWindow {
        let at = |s: i64| jiff::Timestamp::from_second(1_800_000_000 + s).unwrap();
        ActiveWindow {
            term: Some(term),
            start: at(start_s),
            end: end_s.map(at),
        }
    }

    #[test]
    fn a_takeover_must_raise_the_term() {
        let good = vec![
            ("a".to_owned(), vec![window(1, 0, Some(5))]),
            ("b".to_owned(), vec![window(2, 6, None)]),
        ];
        assert!(check_terms_grow(&good).is_ok());
        assert_eq!(handover_gap(&good), Some(Duration::from_secs(1)));
        let stale = vec![
            ("a".to_owned(), vec![window(2, 0, Some(5))]),
            ("b".to_owned(), vec![window(2, 6, None)]),
        ];
        assert!(check_terms_grow(&stale).is_err());
    }
}
