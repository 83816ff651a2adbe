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
//! `newresource-controller`'s flags (`LEADER_URL`, `WATCH_NAMESPACE`, `KUBECONFIG` (a
//! kubeconfig holding the service account's token), `LOG_FORMAT=json`, the probe and
//! metrics addresses: see [`spawn_controller`]); it answers with tracing-shaped JSON logs, probes
//! and a clean exit after SIGTERM. `docs/leader-api.md`, "Conformance", is the one description
//! of that interface. The controller's service account gets only the rules of the
//! `newresource-controller` ClusterRole of `deploy/base/rbac.yaml`, as a Role in the test's
//! namespace.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use kube::api::{Patch, PatchParams};

use crate::controller::{ActiveWindow, WINDOW_STARTED, status_writes};
use crate::sidecar::{FAST_TIMINGS, LONG_LEASE_TIMINGS};
use crate::world::{Verdict, WAIT, World, WorldSpec, window_labels};

/// The environment variable the `conformance` tool and suite read a controller command from.
pub const CONTROLLER_ENV: &str = "CONFORMANCE_CONTROLLER";

/// Pods per scenario, as in the Deployment.
const PODS: usize = 3;

/// A controller under test: a program and its arguments. Everything else reaches it through
/// the environment (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerCommand {
    /// Used in reports: `rust`, `python`, `go`, or the program's file name.
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

    /// `examples/go-controller`, built with `go` from `PATH` (once per process) into
    /// `<target>/<profile>/go-controller/`, with its build cache there too (no network: the
    /// module uses the standard library and `clients/go` through a `replace`). Without `go` on
    /// `PATH` the error is a [`MissingToolchain`], which the suite reports as skipped unless
    /// `REQUIRE_EXAMPLE_TOOLCHAINS=1`.
    pub fn go() -> anyhow::Result<Self> {
        static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
        let program = BUILT
            .get_or_init(|| build_go_controller().map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(|e| match missing_toolchain("the Go controller", &["go"]) {
                Some(missing) => anyhow::Error::new(missing),
                None => anyhow::anyhow!(e),
            })?;
        Ok(Self {
            name: "go".into(),
            program,
            args: Vec::new(),
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

/// An example's toolchain is not on `PATH` and `REQUIRE_EXAMPLE_TOOLCHAINS=1` is not set: the
/// caller reports the test as skipped.
#[derive(Debug)]
pub struct MissingToolchain(pub String);

impl fmt::Display for MissingToolchain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MissingToolchain {}

/// `Some` when one of `tools` is not on `PATH` and `REQUIRE_EXAMPLE_TOOLCHAINS=1` is not set
/// (then a missing tool is an ordinary failure, as in CI).
pub fn missing_toolchain(what: &str, tools: &[&str]) -> Option<MissingToolchain> {
    let missing = crate::process::missing_from_path(tools);
    if missing.is_empty() || crate::process::toolchains_required() {
        return None;
    }
    Some(MissingToolchain(format!(
        "{what} needs {missing:?} on PATH (REQUIRE_EXAMPLE_TOOLCHAINS=1 makes this a failure)"
    )))
}

/// Where the Go examples are built: `<target>/<profile>/go-controller` (next to the workspace
/// binaries, see [`crate::bins`]).
pub fn go_build_dir() -> anyhow::Result<PathBuf> {
    Ok(crate::bins::profile_dir()?.join("go-controller"))
}

/// A `go` command for `dir` (under the repository) that stays off the network and writes only
/// under [`go_build_dir`]: its own build cache and module path, the module proxy off, the local
/// toolchain.
pub fn go_command(dir: &Path, args: &[&str]) -> anyhow::Result<std::process::Command> {
    let build = go_build_dir()?;
    let mut c = std::process::Command::new("go");
    c.args(args)
        .current_dir(dir)
        .env("GOCACHE", build.join("gocache"))
        .env("GOPATH", build.join("gopath"))
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "")
        .env("CGO_ENABLED", "0");
    Ok(c)
}

/// Runs a `go` command; an error carries its output.
pub fn run_go(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = go_command(dir, args)?
        .output()
        .with_context(|| format!("cannot run go {}", args.join(" ")))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(
        out.status.success(),
        "go {} in {} failed ({}):\n{text}",
        args.join(" "),
        dir.display(),
        out.status
    );
    Ok(text)
}

fn build_go_controller() -> anyhow::Result<PathBuf> {
    let bin = go_build_dir()?.join("newresource-controller-go");
    let bin_arg = bin.display().to_string();
    run_go(
        &repo_root().join("examples/go-controller"),
        &["build", "-trimpath", "-o", &bin_arg, "."],
    )?;
    Ok(bin)
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
        write!(
            f,
            "ok   windows [{}] no overlap, {} objects ready",
            window_labels(&self.windows),
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
/// of every process's log.
pub async fn run(controller: &ControllerCommand, scenario: Scenario) -> anyhow::Result<Summary> {
    let sidecar_args: &[&str] = match scenario {
        Scenario::SigtermHandover => &LONG_LEASE_TIMINGS,
        _ => &FAST_TIMINGS,
    };
    let spec = WorldSpec {
        lease: "conformance".into(),
        ..WorldSpec::new(controller.clone(), PODS, sidecar_args)
    };
    let mut world = World::start(&spec).await?;
    let result = match scenario {
        Scenario::SteadyState => steady_state(&mut world).await,
        Scenario::KillLeadingSidecar => kill_leading_sidecar(&mut world).await,
        Scenario::SigtermHandover => sigterm_handover(&mut world).await,
        Scenario::FrozenSidecar => frozen_sidecar(&mut world).await,
        Scenario::ApiPartition => api_partition(&mut world).await,
    };
    let summary = |verdict: Option<Verdict>, skipped: Option<String>| {
        let verdict = verdict.unwrap_or(Verdict {
            windows: Vec::new(),
            status_writes: None,
            handover: None,
            objects: 0,
        });
        Summary {
            controller: controller.name.clone(),
            scenario,
            windows: verdict.windows,
            status_writes: verdict.status_writes,
            handover: verdict.handover,
            objects: verdict.objects,
            skipped,
        }
    };
    let result = match result {
        Ok(Some(skipped)) => Ok(summary(None, Some(skipped))),
        Ok(None) => world.judge().await.map(|v| summary(Some(v), None)),
        Err(e) => Err(e),
    };
    world.thaw_all();
    result.map_err(|e| anyhow::anyhow!("{e:#}\n{}", world.log_tails()))
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
pub(crate) async fn kill_leading_sidecar(w: &mut World) -> anyhow::Result<Option<String>> {
    let leader = w.window_opens(&[]).await?;
    w.create("before", 10).await?;
    w.all_ready().await?;
    w.pods[leader].sidecar.signal(libc::SIGKILL)?;
    w.mark_heal("kill -9 of the leading sidecar");
    let next = w.window_opens(&[leader]).await?;
    w.closed_before_takeover(leader, next).await?;
    w.create("after", 10).await?;
    w.all_ready().await?;
    // The kubelet restarts the container on the same port.
    w.restart_sidecar(leader).await?;
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
pub(crate) async fn frozen_sidecar(w: &mut World) -> anyhow::Result<Option<String>> {
    let leader = w.window_opens(&[]).await?;
    w.create("before", 10).await?;
    w.all_ready().await?;
    w.pods[leader].sidecar.signal(libc::SIGSTOP)?;
    w.mark_fault("SIGSTOP of the leading sidecar");
    // A takeover needs the Lease unrenewed for its whole duration: the freeze outlasts it.
    let next = w.window_opens(&[leader]).await?;
    w.closed_before_takeover(leader, next).await?;
    w.create("frozen", 10).await?;
    w.all_ready().await?;
    w.pods[leader].sidecar.signal(libc::SIGCONT)?;
    w.mark_heal("SIGCONT of the old leader's sidecar");
    w.follows(leader, next).await?;
    w.probe(leader, "/readyz", 200).await?;
    w.create("thawed", 10).await?;
    w.all_ready().await?;
    Ok(None)
}

/// The leading sidecar's API requests hang while its controller still reaches the API: the
/// controller must stop writing because its grants stop, not because its writes fail.
pub(crate) async fn api_partition(w: &mut World) -> anyhow::Result<Option<String>> {
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
    w.mark_fault("API partition of the leading sidecar");
    let next = w.window_opens(&[leader]).await?;
    w.closed_before_takeover(leader, next).await?;
    w.create("partitioned", 10).await?;
    w.all_ready().await?;
    if let (Some(server), Some(rule)) = (w.cluster.in_memory(), rule) {
        server.faults().remove(rule);
    }
    w.mark_heal("partition healed");
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
}
