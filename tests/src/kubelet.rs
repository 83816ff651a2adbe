//! Runs the pod template of a rendered `deploy/` Deployment as local processes, as a kubelet
//! would run the pod, so the end-to-end suite exercises the manifests exactly as written: the
//! images' binaries, their `args`, their `env` (downward API included), the service account's
//! token, the probes and the termination grace period.
//!
//! What stands in for the parts of a node we do not have:
//! - **Images.** `leader-sidecar:0.1.0` runs the workspace binary `leader-sidecar` (the
//!   image's entrypoint; `tests/tests/dockerfiles.rs` checks the Dockerfiles agree), and
//!   `newresource-controller-python` runs `python3 examples/python-controller/controller.py`.
//! - **The service-account volume.** In a pod the binaries find the token under
//!   `/var/run/secrets/kubernetes.io/serviceaccount`; here a token requested for the pod's
//!   `serviceAccountName` (see [`crate::tokens`]) reaches them as `KUBECONFIG` (a kubeconfig
//!   holding it) and as `KUBE_API_SERVER`, `KUBE_TOKEN_FILE` and `KUBE_CA_FILE` (what a client
//!   of the volume reads, such as the Python controller); see [`PodCredentials`]. Nothing else
//!   of the test's environment reaches the containers.
//! - **The pod's network namespace.** All pods share the host's loopback, so every listen
//!   address in the arguments gets port 0, and a later container's reference to a port an
//!   earlier container of the same pod listens on (the controller's
//!   `--leader-url=http://127.0.0.1:4040`) is pointed at the port really bound. Ports are
//!   learnt from each binary's startup log line; [`BINARIES`] lists which flag is which.
//!   Probes and [`RunningPod::get`] resolve `containerPort`s (by name or number) the same way.
//!
//! Anything else the template asks for that cannot be honoured here (an unknown image, a
//! `valueFrom` other than `fieldRef`, `$(VAR)` expansion, a listen address we cannot map) is
//! an error, so a manifest change is never silently ignored.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use tokio::process::Command;
use tokio::time::Instant;

use crate::process::LoggedChild;
use crate::web;

/// A binary the kubelet stand-in knows how to run: its startup log line and the log fields
/// that carry the addresses bound for each listen flag (aliases included).
pub struct BinaryInfo {
    /// The image name (without registry and tag).
    pub name: &'static str,
    pub program: Program,
    /// The Dockerfile that builds the image, relative to the repository root.
    pub dockerfile: &'static str,
    pub startup_line: &'static str,
    pub listeners: &'static [(&'static [&'static str], &'static str)],
}

/// What an image's entrypoint runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// The workspace binary of the image's name.
    Workspace,
    /// `python3 <script>`, the script relative to the repository root.
    Python(&'static str),
    /// `examples/go-controller`, built with `go` (see [`ControllerCommand::go`]).
    ///
    /// [`ControllerCommand::go`]: crate::conformance::ControllerCommand::go
    GoController,
}

impl BinaryInfo {
    /// The program and leading arguments that run this image's entrypoint here.
    pub fn command(&self) -> anyhow::Result<(PathBuf, Vec<String>)> {
        match self.program {
            Program::Workspace => Ok((crate::bins::try_binary(self.name)?, Vec::new())),
            Program::Python(script) => {
                let script = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join(script);
                ensure!(script.exists(), "{} not found", script.display());
                Ok((python3()?, vec![script.display().to_string()]))
            }
            Program::GoController => Ok((
                crate::conformance::ControllerCommand::go()?.program,
                Vec::new(),
            )),
        }
    }
}

/// `python3` from `PATH`, as an absolute path (containers run with a cleared environment).
fn python3() -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("python3"))
        .find(|p| p.is_file())
        .context("python3 is not on PATH")
}

const CONTROLLER_LISTENERS: &[(&[&str], &str)] = &[
    (&["--metrics-bind-address"], "metrics"),
    (&["--health-probe-bind-address"], "health"),
];

/// The images of this repository.
pub const BINARIES: [BinaryInfo; 4] = [
    BinaryInfo {
        name: "leader-sidecar",
        program: Program::Workspace,
        dockerfile: "Dockerfile.sidecar",
        startup_line: "leader-sidecar starting",
        listeners: &[
            (&["--listen"], "listen"),
            (
                &[
                    "--admin-listen",
                    "--metrics-bind-address",
                    "--health-probe-bind-address",
                ],
                "admin",
            ),
        ],
    },
    BinaryInfo {
        name: "newresource-controller",
        program: Program::Workspace,
        dockerfile: "Dockerfile.controller",
        startup_line: "newresource-controller starting",
        listeners: CONTROLLER_LISTENERS,
    },
    // examples/python-controller/Dockerfile: the same contract, in Python.
    BinaryInfo {
        name: "newresource-controller-python",
        program: Program::Python("examples/python-controller/controller.py"),
        dockerfile: "examples/python-controller/Dockerfile",
        startup_line: "newresource-controller starting",
        listeners: CONTROLLER_LISTENERS,
    },
    // examples/go-controller/Dockerfile: the same contract, in Go.
    BinaryInfo {
        name: "newresource-controller-go",
        program: Program::GoController,
        dockerfile: "examples/go-controller/Dockerfile",
        startup_line: "newresource-controller starting",
        listeners: CONTROLLER_LISTENERS,
    },
];

/// The binary an image runs: the image name without registry path and tag.
pub fn binary_of_image(image: &str) -> anyhow::Result<&'static BinaryInfo> {
    let last = image.rsplit('/').next().unwrap_or(image);
    let name = last.split([':', '@']).next().unwrap_or(last);
    BINARIES
        .iter()
        .find(|b| b.name == name)
        .with_context(|| format!("no binary of this repository for image {image:?}"))
}

/// The pod template of a Deployment, as rendered from `deploy/`.
#[derive(Clone, Debug)]
pub struct PodTemplate {
    pub deployment: String,
    pub namespace: String,
    pub service_account: String,
    pub termination_grace: Duration,
    /// The `spec.template.spec.containers` entries.
    pub containers: Vec<Value>,
    /// The whole `spec.template` (metadata and spec), for the Pod objects.
    template: Value,
}

impl PodTemplate {
    /// The template of Deployment `name` among rendered objects.
    pub fn of_deployment(objects: &[Value], name: &str) -> anyhow::Result<Self> {
        let deployment = objects
            .iter()
            .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == name)
            .with_context(|| format!("no Deployment {name} in the manifests"))?;
        let spec = &deployment["spec"]["template"]["spec"];
        let containers = spec["containers"]
            .as_array()
            .filter(|c| !c.is_empty())
            .with_context(|| format!("Deployment {name} has no containers"))?
            .clone();
        Ok(PodTemplate {
            deployment: name.to_owned(),
            namespace: deployment["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned(),
            service_account: spec["serviceAccountName"]
                .as_str()
                .unwrap_or("default")
                .to_owned(),
            termination_grace: Duration::from_secs(
                spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30),
            ),
            containers,
            template: deployment["spec"]["template"].clone(),
        })
    }

    /// Creates Pod `name` of this template in the API server, as the ReplicaSet controller
    /// does (nothing schedules it: [`RunningPod::start`] runs its containers).
    pub async fn create_pod_object(&self, client: &kube::Client, name: &str) -> anyhow::Result<()> {
        let object = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": self.template["metadata"]["labels"],
                "annotations": self.template["metadata"]["annotations"],
            },
            "spec": self.template["spec"],
        });
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(client.clone(), &self.namespace);
        pods.create(&Default::default(), &serde_json::from_value(object)?)
            .await
            .with_context(|| format!("creating Pod {name}"))?;
        Ok(())
    }

    /// One container's spec.
    pub fn container(&self, name: &str) -> anyhow::Result<&Value> {
        self.containers
            .iter()
            .find(|c| c["name"] == name)
            .with_context(|| format!("no container {name} in {}", self.deployment))
    }
}

/// Which probe of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    Startup,
    Liveness,
    Readiness,
}

impl Probe {
    /// The container field that holds this probe.
    pub fn field(self) -> &'static str {
        match self {
            Probe::Startup => "startupProbe",
            Probe::Liveness => "livenessProbe",
            Probe::Readiness => "readinessProbe",
        }
    }
}

/// One running container.
pub struct RunningContainer {
    pub name: String,
    pub process: LoggedChild,
    spec: Value,
}

/// A pod whose containers run as local processes.
pub struct RunningPod {
    pub name: String,
    pub containers: Vec<RunningContainer>,
    /// Declared port (as written in the manifest) → the address really bound.
    ports: BTreeMap<u16, SocketAddr>,
    grace: Duration,
}

/// The port of `host:port`, `:port` or a URL's authority, if `value` is one.
fn split_port(value: &str) -> Option<(&str, u16)> {
    let (head, port) = value.rsplit_once(':')?;
    let digits = port.split('/').next().unwrap_or(port);
    let n = digits.parse().ok()?;
    Some((head, n))
}

/// Resolves one `env` entry of the template.
fn env_value(entry: &Value, pod: &str, template: &PodTemplate) -> anyhow::Result<String> {
    if let Some(v) = entry.get("value") {
        let v = v.as_str().context("env value is not a string")?;
        ensure!(!v.contains("$("), "$(VAR) expansion is not supported: {v}");
        return Ok(v.to_owned());
    }
    let field = entry["valueFrom"]["fieldRef"]["fieldPath"]
        .as_str()
        .with_context(|| format!("unsupported env source {entry}"))?;
    Ok(match field {
        "metadata.name" => pod.to_owned(),
        "metadata.namespace" => template.namespace.clone(),
        "spec.serviceAccountName" => template.service_account.clone(),
        "status.podIP" | "status.hostIP" => "127.0.0.1".to_owned(),
        "spec.nodeName" => "localhost".to_owned(),
        other => bail!("unsupported fieldRef {other}"),
    })
}

impl RunningPod {
    /// Starts the pod's containers in order, each after the previous one logged its startup
    /// line, with the service account's `credentials`.
    pub async fn start(
        template: &PodTemplate,
        name: &str,
        credentials: &PodCredentials,
    ) -> anyhow::Result<Self> {
        let mut pod = RunningPod {
            name: name.to_owned(),
            containers: Vec::new(),
            ports: BTreeMap::new(),
            grace: template.termination_grace,
        };
        for spec in &template.containers {
            let container = pod.start_container(template, spec, credentials).await?;
            pod.containers.push(container);
        }
        Ok(pod)
    }

    async fn start_container(
        &mut self,
        template: &PodTemplate,
        spec: &Value,
        credentials: &PodCredentials,
    ) -> anyhow::Result<RunningContainer> {
        let cname = spec["name"]
            .as_str()
            .context("a container without a name")?;
        let image = spec["image"]
            .as_str()
            .context("a container without an image")?;
        let info = binary_of_image(image)?;
        ensure!(
            spec.get("command").is_none(),
            "{cname}: `command` would replace the image's entrypoint; not supported"
        );
        let mut args: Vec<String> = Vec::new();
        let mut listening: Vec<(&'static str, u16)> = Vec::new();
        let raw: Vec<&str> = spec["args"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut i = 0;
        while i < raw.len() {
            let arg = raw[i];
            ensure!(
                !arg.contains("$("),
                "{cname}: $(VAR) expansion is not supported: {arg}"
            );
            let (flag, value, separate) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v), false),
                _ if arg.starts_with("--")
                    && i + 1 < raw.len()
                    && !raw[i + 1].starts_with("--") =>
                {
                    (arg, Some(raw[i + 1]), true)
                }
                _ => (arg, None, false),
            };
            let listener = info
                .listeners
                .iter()
                .find(|(flags, _)| flags.contains(&flag));
            let value = match (value, listener) {
                (Some(v), Some((_, field))) => {
                    let (host, port) = split_port(v)
                        .with_context(|| format!("{cname}: {flag} is not host:port: {v}"))?;
                    listening.push((field, port));
                    Some(format!("{host}:0"))
                }
                (Some(v), None) => Some(self.point_at_bound_ports(v)),
                (None, _) => None,
            };
            match (value, separate) {
                (Some(v), true) => {
                    args.push(flag.to_owned());
                    args.push(v);
                    i += 2;
                }
                (Some(v), false) => {
                    args.push(format!("{flag}={v}"));
                    i += 1;
                }
                (None, _) => {
                    args.push(arg.to_owned());
                    i += 1;
                }
            }
        }
        for (_, field) in info.listeners {
            ensure!(
                listening.iter().any(|(f, _)| f == field),
                "{cname}: the listen address for {field} must be explicit in args (the \
                 kubelet stand-in maps ports only through them)"
            );
        }

        let (program, leading) = info.command()?;
        let mut command = Command::new(program);
        command.env_clear().args(&leading).args(&args);
        for entry in spec["env"].as_array().into_iter().flatten() {
            let key = entry["name"].as_str().context("env entry without a name")?;
            let value = env_value(entry, &self.name, template)
                .with_context(|| format!("{cname}: env {key}"))?;
            command.env(key, self.point_at_bound_ports(&value));
        }
        command.envs(credentials.env());
        let process = LoggedChild::spawn(&format!("{}/{cname}", self.name), command)?;
        let start = process
            .wait_log(info.startup_line, Duration::from_secs(30))
            .await
            .with_context(|| format!("{}/{cname} did not start", self.name))?;
        for (field, declared) in listening {
            let bound: SocketAddr = start["fields"][field]
                .as_str()
                .with_context(|| format!("no {field} in {start}"))?
                .parse()?;
            let addr = if bound.ip().is_unspecified() {
                SocketAddr::from(([127, 0, 0, 1], bound.port()))
            } else {
                bound
            };
            self.ports.insert(declared, addr);
        }
        Ok(RunningContainer {
            name: cname.to_owned(),
            process,
            spec: spec.clone(),
        })
    }

    /// Rewrites `host:port` references to ports already bound in this pod.
    fn point_at_bound_ports(&self, value: &str) -> String {
        match split_port(value) {
            Some((head, port)) => match self.ports.get(&port) {
                Some(addr) => {
                    let rest = &value[head.len() + 1 + port.to_string().len()..];
                    format!("{head}:{}{rest}", addr.port())
                }
                None => value.to_owned(),
            },
            None => value.to_owned(),
        }
    }

    pub fn container(&self, name: &str) -> anyhow::Result<&RunningContainer> {
        self.containers
            .iter()
            .find(|c| c.name == name)
            .with_context(|| format!("no container {name} in pod {}", self.name))
    }

    /// The address a `containerPort` (number, or name of a port of `container`) is really on.
    pub fn port(&self, container: &str, port: &Value) -> anyhow::Result<SocketAddr> {
        let declared = match port {
            Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            Value::String(name) => {
                let spec = &self.container(container)?.spec;
                spec["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| p["name"] == name.as_str())
                    .and_then(|p| p["containerPort"].as_u64())
                    .and_then(|n| u16::try_from(n).ok())
            }
            _ => None,
        }
        .with_context(|| format!("{}/{container}: no port {port}", self.name))?;
        self.ports.get(&declared).copied().with_context(|| {
            format!(
                "{}/{container}: nothing listens on port {declared}",
                self.name
            )
        })
    }

    /// `GET path` on a container's port (name or number).
    pub async fn get(
        &self,
        container: &str,
        port: &Value,
        path: &str,
    ) -> anyhow::Result<web::Reply> {
        web::get(self.port(container, port)?, path).await
    }

    /// Runs one of a container's probes (HTTP GET probes only) once; the status code.
    pub async fn probe(&self, container: &str, which: Probe) -> anyhow::Result<u16> {
        let spec = &self.container(container)?.spec;
        let probe = &spec[which.field()]["httpGet"];
        let path = probe["path"]
            .as_str()
            .with_context(|| format!("{container} has no HTTP {}", which.field()))?;
        Ok(self.get(container, &probe["port"], path).await?.status)
    }

    /// Whether every container with a readiness probe passes it.
    pub async fn is_ready(&self) -> anyhow::Result<bool> {
        for c in &self.containers {
            if c.spec.get(Probe::Readiness.field()).is_some()
                && self.probe(&c.name, Probe::Readiness).await? != 200
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Polls the readiness probes until all pass; fails after `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_ready().await? {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "pod {} not ready within {timeout:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether every container is still running (none exited or crashed).
    pub fn all_running(&mut self) -> anyhow::Result<bool> {
        for c in &mut self.containers {
            if c.process.try_exit()?.is_some() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Stops the pod as the kubelet does: SIGTERM to every container at once, SIGKILL to the
    /// ones still running after `terminationGracePeriodSeconds`. Returns each container's exit
    /// status, `None` for one that had to be killed.
    pub async fn terminate(&mut self) -> anyhow::Result<Vec<(String, Option<ExitStatus>)>> {
        for c in &self.containers {
            if c.process.pid().is_some() {
                c.process.signal(libc::SIGTERM)?;
            }
        }
        let deadline = Instant::now() + self.grace;
        let mut out = Vec::new();
        for c in &mut self.containers {
            let left = deadline.saturating_duration_since(Instant::now());
            match c.process.wait_exit(left).await {
                Ok(status) => out.push((c.name.clone(), Some(status))),
                Err(_) => {
                    let _ = c.process.signal(libc::SIGKILL);
                    out.push((c.name.clone(), None));
                }
            }
        }
        Ok(out)
    }
}

/// The cluster of the current context of `kubeconfig` (as kubeconfig JSON, with a relative
/// `certificate-authority` path made absolute) and the context's namespace.
pub fn current_cluster(kubeconfig: &Path) -> anyhow::Result<(Value, Option<String>)> {
    let admin = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("cannot read {}", kubeconfig.display()))?;
    let context_name = admin
        .current_context
        .clone()
        .context("the kubeconfig has no current context")?;
    let context = admin
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.clone())
        .context("the current context is missing")?;
    let cluster = admin
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.clone())
        .context("the current context's cluster is missing")?;
    let mut cluster_json = serde_json::to_value(&cluster)?;
    if let Some(path) = cluster_json
        .get("certificate-authority")
        .and_then(Value::as_str)
        .map(str::to_owned)
    {
        // Relative CA paths are relative to the original kubeconfig.
        let base = kubeconfig.parent().unwrap_or(Path::new("."));
        cluster_json["certificate-authority"] =
            Value::String(base.join(path).display().to_string());
    }
    Ok((cluster_json, context.namespace))
}

/// Writes a kubeconfig for `token` that reaches the same cluster as the current context of
/// `admin_kubeconfig` (server and CA), for the pods' processes.
pub fn write_token_kubeconfig(
    admin_kubeconfig: &Path,
    token: &str,
    out: &Path,
) -> anyhow::Result<()> {
    let (cluster_json, namespace) = current_cluster(admin_kubeconfig)?;
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "cluster", "cluster": cluster_json }],
        "users": [{ "name": "service-account", "user": { "token": token } }],
        "contexts": [{
            "name": "pod",
            "context": {
                "cluster": "cluster",
                "user": "service-account",
                "namespace": namespace.unwrap_or_else(|| "default".into()),
            },
        }],
        "current-context": "pod",
    });
    std::fs::write(out, serde_yaml::to_string(&config)?)
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

/// A pod's service-account credentials in both forms a container may read them: a kubeconfig
/// (`KUBECONFIG`, for kube-rs) and the server, token file and CA file that a client of the
/// in-cluster volume reads (`KUBE_API_SERVER`, `KUBE_TOKEN_FILE`, `KUBE_CA_FILE`; the Python
/// controller's flags).
#[derive(Clone, Debug)]
pub struct PodCredentials {
    pub kubeconfig: PathBuf,
    pub server: String,
    pub token_file: PathBuf,
    /// `None` when the server is plain HTTP (the in-memory server) or trusted by the system.
    pub ca_file: Option<PathBuf>,
}

impl PodCredentials {
    /// Writes `token` to `<dir>/<name>.token` and `<dir>/<name>.kubeconfig`, for the cluster of
    /// the current context of `admin_kubeconfig` (its CA, if inline, to `<dir>/<name>.ca.crt`).
    pub fn write(
        admin_kubeconfig: &Path,
        token: &str,
        dir: &Path,
        name: &str,
    ) -> anyhow::Result<Self> {
        let (cluster, _) = current_cluster(admin_kubeconfig)?;
        let server = cluster["server"]
            .as_str()
            .context("the kubeconfig's cluster has no server")?
            .to_owned();
        ensure!(
            cluster["insecure-skip-tls-verify"] != true,
            "the kubeconfig skips TLS verification; pods need the cluster's CA"
        );
        let ca_file = if let Some(path) = cluster["certificate-authority"].as_str() {
            Some(PathBuf::from(path))
        } else if let Some(data) = cluster["certificate-authority-data"].as_str() {
            use base64::Engine as _;
            let pem = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .context("certificate-authority-data is not base64")?;
            let path = dir.join(format!("{name}.ca.crt"));
            std::fs::write(&path, pem)?;
            Some(path)
        } else {
            None
        };
        let token_file = dir.join(format!("{name}.token"));
        std::fs::write(&token_file, token)
            .with_context(|| format!("cannot write {}", token_file.display()))?;
        let kubeconfig = dir.join(format!("{name}.kubeconfig"));
        write_token_kubeconfig(admin_kubeconfig, token, &kubeconfig)?;
        Ok(Self {
            kubeconfig,
            server,
            token_file,
            ca_file,
        })
    }

    /// The environment that hands these credentials to a container.
    pub fn env(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        let mut env = vec![
            ("KUBECONFIG", self.kubeconfig.clone().into_os_string()),
            ("KUBE_API_SERVER", self.server.clone().into()),
            ("KUBE_TOKEN_FILE", self.token_file.clone().into_os_string()),
        ];
        if let Some(ca) = &self.ca_file {
            env.push(("KUBE_CA_FILE", ca.clone().into_os_string()));
        }
        env
    }
}
