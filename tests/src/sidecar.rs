//! `leader-sidecar` as a child process: started with its own kubeconfig, ports chosen by the
//! OS, JSON logs captured, and signals sent for real.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use leader_client::contract::LeaderStatus;
use tokio::process::Command;

pub use crate::process::{LoggedChild, message, timestamp};
use crate::web;

/// Short election timings (3 s lease, 2 s renew deadline, 500 ms retry period) for suites and
/// quick benches, so that expiry-based scenarios finish in seconds.
pub const FAST_TIMINGS: [&str; 6] = [
    "--lease-duration",
    "3s",
    "--renew-deadline",
    "2s",
    "--retry-period",
    "500ms",
];

/// Election timings with a 60 s lease (40 s renew deadline, 500 ms retry period), for
/// handover scenarios: a takeover within a suite's waits can then only come from a release.
pub const LONG_LEASE_TIMINGS: [&str; 6] = [
    "--lease-duration",
    "60s",
    "--renew-deadline",
    "40s",
    "--retry-period",
    "500ms",
];

/// How to start one sidecar.
#[derive(Clone, Debug)]
pub struct SidecarSpec {
    pub kubeconfig: PathBuf,
    pub namespace: String,
    pub lease: String,
    pub identity: String,
    /// Further flags, e.g. timings.
    pub args: Vec<String>,
    /// The leader API address [default: `127.0.0.1:0`]; a restarted sidecar reuses its port.
    pub listen: Option<SocketAddr>,
    /// Extra environment of the process (e.g. libfaketime's `LD_PRELOAD`).
    pub env: Vec<(String, String)>,
}

impl SidecarSpec {
    pub fn new(kubeconfig: &Path, namespace: &str, lease: &str, identity: &str) -> Self {
        Self {
            kubeconfig: kubeconfig.to_owned(),
            namespace: namespace.to_owned(),
            lease: lease.to_owned(),
            identity: identity.to_owned(),
            args: Vec::new(),
            listen: None,
            env: Vec::new(),
        }
    }

    /// Appends flags.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// A running sidecar; killed on drop. The process methods (`signal`, `logs`, `wait_log`, ...)
/// come from [`LoggedChild`].
pub struct Sidecar {
    process: LoggedChild,
    pub identity: String,
    /// The leader API address.
    pub api: SocketAddr,
    /// The admin (probes, metrics) address.
    pub admin: SocketAddr,
}

impl std::ops::Deref for Sidecar {
    type Target = LoggedChild;
    fn deref(&self) -> &LoggedChild {
        &self.process
    }
}

impl std::ops::DerefMut for Sidecar {
    fn deref_mut(&mut self) -> &mut LoggedChild {
        &mut self.process
    }
}

impl Sidecar {
    /// Starts the binary and waits for its startup line (which names the bound ports).
    pub async fn spawn(spec: SidecarSpec) -> anyhow::Result<Self> {
        let bin = crate::bins::binary("leader-sidecar");
        let listen = spec
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
            .to_string();
        let mut command = Command::new(&bin);
        command
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .arg("--kubeconfig")
            .arg(&spec.kubeconfig)
            .args([
                "--lease-namespace",
                &spec.namespace,
                "--lease-name",
                &spec.lease,
            ])
            .args(["--identity", &spec.identity])
            .args([
                "--listen",
                &listen,
                "--admin-listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .args(&spec.args)
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE");
        let process = LoggedChild::spawn(&spec.identity, command)?;
        let [api, admin] = process
            .wait_addresses("leader-sidecar starting", ["listen", "admin"])
            .await?;
        Ok(Self {
            api,
            admin,
            identity: spec.identity,
            process,
        })
    }

    /// `GET /leader`.
    pub async fn status(&self) -> anyhow::Result<LeaderStatus> {
        let reply = web::get(self.api, "/leader").await?;
        anyhow::ensure!(reply.status == 200, "GET /leader: {}", reply.status);
        reply.json()
    }

    /// Polls `/leader` until `pred` holds (or `timeout`, an upper bound for a hung test, passes).
    pub async fn wait_status(
        &self,
        timeout: Duration,
        pred: impl Fn(&LeaderStatus) -> bool,
    ) -> anyhow::Result<LeaderStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(s) = self.status().await
                && pred(&s)
            {
                return Ok(s);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{}: condition not met in {timeout:?}",
                self.identity
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `/metrics` text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let reply = web::get(self.admin, "/metrics").await?;
        Ok(String::from_utf8(reply.body)?)
    }
}
