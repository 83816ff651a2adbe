//! `leader-sidecar` as a child process: started with its own kubeconfig, ports chosen by the
//! OS, JSON logs captured, and signals sent for real.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leader_sidecar::contract::LeaderStatus;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

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

/// How to start one sidecar.
#[derive(Clone, Debug)]
pub struct SidecarSpec {
    pub kubeconfig: PathBuf,
    pub namespace: String,
    pub lease: String,
    pub identity: String,
    /// Further flags, e.g. timings.
    pub args: Vec<String>,
}

impl SidecarSpec {
    pub fn new(kubeconfig: &Path, namespace: &str, lease: &str, identity: &str) -> Self {
        Self {
            kubeconfig: kubeconfig.to_owned(),
            namespace: namespace.to_owned(),
            lease: lease.to_owned(),
            identity: identity.to_owned(),
            args: Vec::new(),
        }
    }

    /// Appends flags.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// A running sidecar; killed on drop.
pub struct Sidecar {
    child: Child,
    pub identity: String,
    /// The leader API address.
    pub api: SocketAddr,
    /// The admin (probes, metrics) address.
    pub admin: SocketAddr,
    logs: Arc<Mutex<Vec<serde_json::Value>>>,
    log_count: watch::Receiver<usize>,
}

impl Sidecar {
    /// Starts the binary and waits for its startup line (which names the bound ports).
    pub async fn spawn(spec: SidecarSpec) -> anyhow::Result<Self> {
        let bin = crate::bins::binary("leader-sidecar");
        let mut child = Command::new(&bin)
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
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .args(&spec.args)
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (count_tx, log_count) = watch::channel(0usize);
        let sink = logs.clone();
        let who = spec.identity.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "raw": line }));
                if std::env::var_os("E2E_SHOW_LOGS").is_some() {
                    eprintln!("[{who}] {line}");
                }
                let n = {
                    let mut l = sink.lock().unwrap_or_else(|p| p.into_inner());
                    l.push(value);
                    l.len()
                };
                let _ = count_tx.send(n);
            }
        });
        let mut sidecar = Self {
            child,
            identity: spec.identity,
            api: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            logs,
            log_count,
        };
        let start = sidecar
            .wait_log("leader-sidecar starting", Duration::from_secs(30))
            .await?;
        let field = |name: &str| -> anyhow::Result<SocketAddr> {
            let v = start["fields"][name]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("no {name} in {start}"))?;
            Ok(v.parse()?)
        };
        sidecar.api = field("listen")?;
        sidecar.admin = field("admin")?;
        Ok(sidecar)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
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

    /// Sends a signal (`libc::SIGTERM`, `SIGKILL`, `SIGSTOP`, `SIGCONT`).
    pub fn signal(&self, signal: i32) -> anyhow::Result<()> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow::anyhow!("{} already exited", self.identity))?;
        let pid = i32::try_from(pid)?;
        // SAFETY: kill(2) has no memory effects; the pid is our own child's.
        let rc = unsafe { libc::kill(pid, signal) };
        anyhow::ensure!(
            rc == 0,
            "kill({pid}, {signal}) failed: {}",
            std::io::Error::last_os_error()
        );
        Ok(())
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        Ok(tokio::time::timeout(timeout, self.child.wait()).await??)
    }

    /// Every log line so far, parsed.
    pub fn logs(&self) -> Vec<serde_json::Value> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Log lines whose message contains `needle`.
    pub fn logs_with(&self, needle: &str) -> Vec<serde_json::Value> {
        self.logs()
            .into_iter()
            .filter(|l| message(l).contains(needle))
            .collect()
    }

    /// Waits for a log line whose message contains `needle` and returns it.
    pub async fn wait_log(
        &self,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<serde_json::Value> {
        let mut count = self.log_count.clone();
        let wait = async {
            loop {
                if let Some(l) = self.logs_with(needle).into_iter().next() {
                    return Ok(l);
                }
                if count.changed().await.is_err() {
                    anyhow::bail!("{} exited without logging {needle:?}", self.identity);
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| {
            anyhow::anyhow!("{}: no log {needle:?} within {timeout:?}", self.identity)
        })?
    }

    /// `/metrics` text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let reply = web::get(self.admin, "/metrics").await?;
        Ok(String::from_utf8(reply.body)?)
    }
}

/// The `message` of a JSON log line.
pub fn message(line: &serde_json::Value) -> &str {
    line["fields"]["message"]
        .as_str()
        .or_else(|| line["raw"].as_str())
        .unwrap_or_default()
}

/// The timestamp of a JSON log line (this host's wall clock, shared by all local processes).
pub fn timestamp(line: &serde_json::Value) -> Option<jiff::Timestamp> {
    line["timestamp"].as_str()?.parse().ok()
}
