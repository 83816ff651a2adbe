//! The minimal correct loops of `docs/leader-api.md`, run as written against a real sidecar.
//!
//! The code blocks under "A minimal correct loop (shell)" and "... (Go)" are the only copy of
//! these programs: each test extracts its block, writes it to a temporary directory and runs it
//! with `LEADER_URL` pointing at a `leader-sidecar` on the in-memory API server. Two scenarios:
//!
//! - the sidecar is killed: the loop, which acted in the sidecar's term, stops acting
//!   (unreachable means not leader);
//! - the loop gets SIGTERM: it stops acting, yields, says so and exits 0, and the sidecar
//!   releases the Lease.
//!
//! The shell loop needs `sh`, `curl` and `jq`; the Go loop needs `go`. A missing tool skips the
//! test with a `skipped:` line, unless `REQUIRE_EXAMPLE_TOOLCHAINS=1` (CI) makes it a failure.
//! Waits are conditions with generous upper bounds, never fixed sleeps.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use testkit::cluster::{TempDir, TestCluster};
use testkit::sidecar::{FAST_TIMINGS, Sidecar, SidecarSpec};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const WAIT: Duration = Duration::from_secs(30);
/// Upper bound for each line we wait for from a loop.
const LINE_WAIT: Duration = Duration::from_secs(60);
/// Upper bound for `go vet` and `go build` (a cold build cache included).
const BUILD_WAIT: Duration = Duration::from_secs(300);

/// The body of the first ```` ```lang ```` block in the `## heading` section of
/// `docs/leader-api.md`.
fn doc_block(heading: &str, lang: &str) -> anyhow::Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/leader-api.md");
    let doc = std::fs::read_to_string(&path)?;
    let mut lines = doc
        .lines()
        .skip_while(|l| *l != format!("## {heading}"))
        .skip(1)
        .take_while(|l| !l.starts_with("## "));
    let fence = format!("```{lang}");
    lines
        .by_ref()
        .find(|l| *l == fence)
        .ok_or_else(|| anyhow::anyhow!("no {fence} block under \"## {heading}\" in {path:?}"))?;
    let mut code = String::new();
    for line in lines.by_ref() {
        if line == "```" {
            return Ok(code);
        }
        code.push_str(line);
        code.push('\n');
    }
    anyhow::bail!("the {fence} block under \"## {heading}\" is not closed")
}

/// Runs a build step to completion; its output goes into the error when it fails.
async fn run_step(mut command: Command, what: &str) -> anyhow::Result<()> {
    command.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(BUILD_WAIT, command.output())
        .await
        .map_err(|_| anyhow::anyhow!("{what}: not done within {BUILD_WAIT:?}"))??;
    anyhow::ensure!(
        out.status.success(),
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// How to start one example loop.
struct Example {
    name: &'static str,
    program: PathBuf,
    args: Vec<PathBuf>,
    dir: PathBuf,
}

/// A running loop: its stdout read line by line, stderr kept in a file for error messages;
/// killed on drop.
struct Loop {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Every line printed so far.
    seen: Vec<String>,
    stderr: PathBuf,
    name: &'static str,
}

impl Loop {
    fn spawn(example: &Example, sidecar: &Sidecar, run: &str) -> anyhow::Result<Self> {
        let stderr = example.dir.join(format!("{run}.stderr"));
        let mut child = Command::new(&example.program)
            .args(&example.args)
            .current_dir(&example.dir)
            .env("LEADER_URL", format!("http://{}", sidecar.api))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr)?)
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        Ok(Self {
            child,
            lines: BufReader::new(stdout).lines(),
            seen: Vec::new(),
            stderr,
            name: example.name,
        })
    }

    fn context(&self) -> String {
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        format!("{}: printed {:?}; stderr: {stderr:?}", self.name, self.seen)
    }

    /// The next line, `None` at the end of the output.
    async fn next_line(&mut self) -> anyhow::Result<Option<String>> {
        let line = tokio::time::timeout(LINE_WAIT, self.lines.next_line())
            .await
            .map_err(|_| anyhow::anyhow!("no line within {LINE_WAIT:?}; {}", self.context()))??;
        if let Some(l) = &line {
            anyhow::ensure!(
                l == "follower"
                    || l == "yielded"
                    || l.strip_prefix("leader term=")
                        .is_some_and(|t| t.parse::<i32>().is_ok()),
                "unexpected line {l:?}; {}",
                self.context()
            );
            self.seen.push(l.clone());
        }
        Ok(line)
    }

    /// Reads lines until one equals `want`.
    async fn expect(&mut self, want: &str) -> anyhow::Result<()> {
        loop {
            match self.next_line().await? {
                Some(line) if line == want => return Ok(()),
                Some(_) => {}
                None => anyhow::bail!("ended without printing {want:?}; {}", self.context()),
            }
        }
    }

    fn signal(&self, signal: i32) -> anyhow::Result<()> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow::anyhow!("{} already exited", self.name))?;
        // SAFETY: kill(2) has no memory effects; the pid is our own child's.
        let rc = unsafe { libc::kill(i32::try_from(pid)?, signal) };
        anyhow::ensure!(rc == 0, "kill: {}", std::io::Error::last_os_error());
        Ok(())
    }

    /// Reads the rest of the output and waits for the exit.
    async fn finish(&mut self) -> anyhow::Result<ExitStatus> {
        while self.next_line().await?.is_some() {}
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .map_err(|_| anyhow::anyhow!("still running; {}", self.context()))??;
        Ok(status)
    }
}

async fn start_sidecar(
    cluster: &TestCluster,
    lease: &str,
    id: &str,
    extra: &[&str],
) -> anyhow::Result<Sidecar> {
    let (kubeconfig, _) = cluster.client_kubeconfig(id)?;
    let spec = SidecarSpec::new(&kubeconfig, cluster.namespace(), lease, id)
        .args(FAST_TIMINGS)
        .args(extra.iter().copied());
    Sidecar::spawn(spec).await
}

/// Both scenarios against one example.
async fn exercise(example: &Example) -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;

    // The sidecar dies: the loop acted in the sidecar's term, and stops once it cannot ask.
    let sidecar = start_sidecar(&cluster, "crash", "pod-a", &[]).await?;
    let term = sidecar.wait_status(WAIT, |s| s.is_leader).await?.term;
    let term = term.ok_or_else(|| anyhow::anyhow!("a leader without a term"))?;
    let mut lp = Loop::spawn(example, &sidecar, "crash")?;
    lp.expect("follower").await?;
    lp.expect(&format!("leader term={term}")).await?;
    sidecar.signal(libc::SIGKILL)?;
    lp.expect("follower").await?;
    // Nobody to yield to: it still exits cleanly, without claiming a yield.
    lp.signal(libc::SIGTERM)?;
    let status = lp.finish().await?;
    anyhow::ensure!(status.success(), "exit {status}; {}", lp.context());
    anyhow::ensure!(
        !lp.seen.iter().any(|l| l == "yielded"),
        "a yield to a dead sidecar; {}",
        lp.context()
    );

    // SIGTERM while acting: stop acting, then yield; the sidecar releases the Lease at once.
    // A long yield backoff keeps it from taking the free Lease again during the checks.
    let sidecar = start_sidecar(&cluster, "shutdown", "pod-b", &["--yield-backoff", "1h"]).await?;
    let term = sidecar.wait_status(WAIT, |s| s.is_leader).await?.term;
    let term = term.ok_or_else(|| anyhow::anyhow!("a leader without a term"))?;
    let mut lp = Loop::spawn(example, &sidecar, "shutdown")?;
    lp.expect(&format!("leader term={term}")).await?;
    lp.signal(libc::SIGTERM)?;
    let status = lp.finish().await?;
    anyhow::ensure!(status.success(), "exit {status}; {}", lp.context());
    anyhow::ensure!(
        lp.seen
            .ends_with(&["follower".to_owned(), "yielded".to_owned()]),
        "expected to stop acting, then yield, then exit; {}",
        lp.context()
    );
    let yielded = sidecar.wait_log("local controller yielded", WAIT).await?;
    anyhow::ensure!(
        yielded["fields"]["was_leader"] == serde_json::json!(true),
        "{yielded}"
    );
    sidecar.wait_log("released lease", WAIT).await?;
    let status = sidecar.status().await?;
    anyhow::ensure!(!status.is_leader && status.holder.is_none(), "{status:?}");
    Ok(())
}

#[tokio::test]
async fn the_shell_loop_in_the_docs_follows_the_rules() -> anyhow::Result<()> {
    let name = "shell loop";
    if !testkit::process::tools_present(&format!("the {name}"), &["sh", "curl", "jq"], "")? {
        return Ok(());
    }
    let dir = TempDir::new("leader-api-sh")?;
    let script = dir.path().join("loop.sh");
    std::fs::write(&script, doc_block("A minimal correct loop (shell)", "sh")?)?;
    let example = Example {
        name,
        program: "sh".into(),
        args: vec![script],
        dir: dir.path().to_owned(),
    };
    exercise(&example).await
}

#[tokio::test]
async fn the_go_loop_in_the_docs_follows_the_rules() -> anyhow::Result<()> {
    let name = "Go loop";
    if !testkit::process::tools_present(&format!("the {name}"), &["go"], "")? {
        return Ok(());
    }
    let dir = TempDir::new("leader-api-go")?;
    std::fs::write(
        dir.path().join("main.go"),
        doc_block("A minimal correct loop (Go)", "go")?,
    )?;
    // Standard library only, so no module and no network: a private build cache and module
    // path in the temporary directory, and the module proxy off.
    let go = |args: &[&str]| {
        let mut c = Command::new("go");
        c.args(args)
            .current_dir(dir.path())
            .env("GOCACHE", dir.path().join("gocache"))
            .env("GOPATH", dir.path().join("gopath"))
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "");
        c
    };
    run_step(go(&["vet", "main.go"]), "go vet").await?;
    // A binary of its own rather than `go run`, so that our signals reach the loop itself.
    run_step(go(&["build", "-o", "loop", "main.go"]), "go build").await?;
    let example = Example {
        name,
        program: dir.path().join("loop"),
        args: Vec::new(),
        dir: dir.path().to_owned(),
    };
    exercise(&example).await
}
