//! Running the real `kubectl` against a server: which binaries to use and a small runner.
//!
//! `KUBECTL` names the binaries, separated by `:` (default `kubectl` on PATH); suites run
//! their scenarios once per binary, so CI checks an old (1.20, Debian's) and a current client.

use std::path::{Path, PathBuf};
use std::process::Output;

use tokio::process::{Child, Command};

/// The kubectl binaries to test with, from `KUBECTL`.
pub fn binaries() -> Vec<PathBuf> {
    let configured = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_string());
    configured
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// One kubectl binary bound to one kubeconfig.
#[derive(Clone, Debug)]
pub struct Kubectl {
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Kubectl {
    pub fn new(bin: &Path, kubeconfig: &Path) -> Self {
        Kubectl {
            bin: bin.to_path_buf(),
            kubeconfig: kubeconfig.to_path_buf(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            // Keep kubectl's cache out of the user's home and away from other tests.
            .env(
                "KUBECACHEDIR",
                std::env::temp_dir()
                    .join(format!("kubectl-cache-{}", uuid::Uuid::new_v4().simple())),
            )
            .kill_on_drop(true);
        cmd
    }

    /// Runs kubectl to completion. Errors only if it could not be started.
    pub async fn run(&self, args: &[&str]) -> std::io::Result<Output> {
        self.command(args).output().await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot run {} ({e}); install kubectl (Debian: kubernetes-client) or set KUBECTL",
                    self.bin.display()
                ),
            )
        })
    }

    /// Runs kubectl with `stdin` as its standard input (for `-f -`).
    pub async fn run_with_stdin(&self, args: &[&str], stdin: &str) -> std::io::Result<Output> {
        use tokio::io::AsyncWriteExt;
        let mut child = self
            .command(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.as_bytes()).await?;
        }
        child.wait_with_output().await
    }

    /// Starts a long-running kubectl (e.g. `get -w`) with piped stdout.
    pub fn spawn(&self, args: &[&str]) -> std::io::Result<Child> {
        self.command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
    }
}

/// stdout + stderr of a finished command, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
