//! Child processes of a test, started and signalled for real: [`LoggedChild`] (a binary with
//! JSON logs on stderr, which the sidecar and controller wrappers build on) and the
//! `inmem-apiserver` binary.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// A child process whose stderr carries JSON log lines (`--log-format json`), captured as they
/// arrive; killed on drop. Set `E2E_SHOW_LOGS=1` to echo them.
pub struct LoggedChild {
    child: Child,
    /// Who this is in messages (`pod-a/sidecar`).
    pub name: String,
    logs: Arc<Mutex<Vec<serde_json::Value>>>,
    log_count: watch::Receiver<usize>,
}

impl LoggedChild {
    /// Starts `command` with `RUST_LOG=info`, stdin and stdout closed, stderr captured.
    ///
    /// The child is killed when this value is dropped, and also when the thread that started it
    /// dies (`PR_SET_PDEATHSIG`). So a test or demo that aborts, or is killed itself, leaves no
    /// pods running. Start children from a thread that lives as long as they should: a test's
    /// thread or a runtime worker, not a short-lived blocking thread.
    pub fn spawn(name: &str, mut command: Command) -> anyhow::Result<Self> {
        die_with_parent(&mut command);
        let mut child = command
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
        let who = name.to_owned();
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
        Ok(Self {
            child,
            name: name.to_owned(),
            logs,
            log_count,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends a signal (`libc::SIGTERM`, `SIGKILL`, `SIGSTOP`, `SIGCONT`).
    pub fn signal(&self, signal: i32) -> anyhow::Result<()> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow::anyhow!("{} already exited", self.name))?;
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

    /// The exit status if the process has exited, without waiting.
    pub fn try_exit(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
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
        self.wait_logs(needle, 1, timeout)
            .await
            .map(|mut l| l.swap_remove(0))
    }

    /// Waits for the startup line `needle` and parses the socket addresses in its `fields`
    /// (binaries log the addresses they bound, so tests can use port 0).
    pub async fn wait_addresses<const N: usize>(
        &self,
        needle: &str,
        fields: [&str; N],
    ) -> anyhow::Result<[std::net::SocketAddr; N]> {
        let start = self.wait_log(needle, Duration::from_secs(30)).await?;
        let mut out = [std::net::SocketAddr::from(([0, 0, 0, 0], 0)); N];
        for (slot, name) in out.iter_mut().zip(fields) {
            let v = start["fields"][name]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("no {name} in {start}"))?;
            *slot = v.parse()?;
        }
        Ok(out)
    }

    /// Waits until `n` log lines contain `needle` and returns them all.
    pub async fn wait_logs(
        &self,
        needle: &str,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut count = self.log_count.clone();
        let wait = async {
            loop {
                let found = self.logs_with(needle);
                if found.len() >= n {
                    return Ok(found);
                }
                if count.changed().await.is_err() {
                    anyhow::bail!("{} exited without logging {needle:?} {n} times", self.name);
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| {
            anyhow::anyhow!("{}: no log {needle:?} ({n}x) within {timeout:?}", self.name)
        })?
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

/// Makes the child started by `command` get SIGKILL when the thread that starts it dies
/// (`PR_SET_PDEATHSIG`), so that an aborted or killed test, demo or bench leaves no process
/// behind.
pub fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which
    // is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

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

/// What a bounded run of a tool printed, and how it ended.
pub struct Finished {
    /// `None`: it did not finish in time (and was stopped).
    pub status: Option<ExitStatus>,
    /// Its stdout and stderr, for assertions and failure messages.
    pub shown: String,
    pub stdout: String,
}

/// Runs a tool (the demo, the bench) to its end with stdout and stderr captured, for at most
/// `timeout`: then it gets SIGTERM (so that it can drop its own children, which a SIGKILL
/// would leave running), and SIGKILL if that is not enough within 15 s.
pub async fn run_bounded(mut command: Command, timeout: Duration) -> std::io::Result<Finished> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = collect_pipe(child.stdout.take());
    let stderr = collect_pipe(child.stderr.take());
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => Some(status?),
        Err(_) => {
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill(2) has no memory effects; the pid is our own child's.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            if tokio::time::timeout(Duration::from_secs(15), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
            None
        }
    };
    let stdout = stdout.await.unwrap_or_default();
    let stderr = stderr.await.unwrap_or_default();
    Ok(Finished {
        status,
        shown: format!("--- stdout\n{stdout}--- stderr\n{stderr}"),
        stdout,
    })
}

/// Reads a child's pipe to its end in the background, so that a chatty child never blocks on
/// it; the task returns what was read.
fn collect_pipe(
    pipe: Option<impl tokio::io::AsyncRead + Unpin + Send + 'static>,
) -> tokio::task::JoinHandle<String> {
    use tokio::io::AsyncReadExt;
    tokio::spawn(async move {
        let mut text = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut text).await;
        }
        String::from_utf8_lossy(&text).into_owned()
    })
}

/// The tools of `tools` that are not an executable file in any directory of `PATH`.
pub fn missing_from_path<'a>(tools: &[&'a str]) -> Vec<&'a str> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    tools
        .iter()
        .copied()
        .filter(|tool| {
            !std::env::split_paths(&path).any(|dir| {
                dir.join(tool)
                    .metadata()
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
        })
        .collect()
}

/// Whether a missing tool fails a test instead of skipping it (`REQUIRE_EXAMPLE_TOOLCHAINS=1`,
/// as in CI).
pub fn toolchains_required() -> bool {
    std::env::var("REQUIRE_EXAMPLE_TOOLCHAINS").as_deref() == Ok("1")
}

/// Whether every one of `tools` is on `PATH`. When one is missing: an error under
/// [`toolchains_required`], else a `skipped:` line (naming `what` needs them, and where they
/// come from: `hint`) and `false`.
pub fn tools_present(what: &str, tools: &[&str], hint: &str) -> anyhow::Result<bool> {
    let missing = missing_from_path(tools);
    if missing.is_empty() {
        return Ok(true);
    }
    anyhow::ensure!(
        !toolchains_required(),
        "{what}: {missing:?} not on PATH, and REQUIRE_EXAMPLE_TOOLCHAINS=1{hint}"
    );
    println!("skipped: {what} needs {missing:?} on PATH{hint}");
    Ok(false)
}
