//! Child processes of a test: the `inmem-apiserver` binary, started and stopped for real.

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `inmem-apiserver` process; killed on drop.
pub struct ApiServerProcess {
    pub child: Child,
    pub url: String,
}

impl ApiServerProcess {
    /// Starts `bin` with `args` (port 0 by default) and waits for its `listening on URL` line.
    pub async fn spawn(bin: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout from {}", bin.display()))?;
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            match lines.next_line().await? {
                Some(line) => {
                    if let Some(url) = line.strip_prefix("listening on ") {
                        break url.trim().to_string();
                    }
                }
                None => anyhow::bail!("{} exited before listening", bin.display()),
            }
        };
        Ok(ApiServerProcess { child, url })
    }
}
