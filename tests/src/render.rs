//! Manifests as users render them: the real `kubectl kustomize` and `helm template`, their
//! output parsed into JSON values (in output order) for the suites to check and apply.
//!
//! kustomize is the one bundled with kubectl: the first binary in `KUBECTL` (see
//! [`crate::kubectl::binaries`]), then `kubectl` on PATH, whose kustomize is v4 or newer —
//! Debian's kubectl 1.20 bundles kustomize v2, which cannot read our kustomizations. helm is
//! `$HELM`, else `helm` on PATH. `.ci/run` installs pinned builds of both.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use anyhow::{Context, ensure};
use serde::Deserialize;
use serde_json::Value;

/// The objects `kubectl kustomize <dir>` renders.
pub fn kustomize(dir: &Path) -> anyhow::Result<Vec<Value>> {
    let mut cmd = Command::new(kustomize_kubectl()?);
    cmd.arg("kustomize").arg(dir);
    documents(&run(cmd)?)
}

/// The kubectl [`kustomize`] runs: found once, as the module docs say.
pub fn kustomize_kubectl() -> anyhow::Result<&'static Path> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let mut candidates = crate::kubectl::binaries();
            candidates.push(PathBuf::from("kubectl"));
            candidates.into_iter().find(|k| has_kustomize_v4(k))
        })
        .as_deref()
        .context("no kubectl with kustomize v4+ in KUBECTL or on PATH; .ci/run installs one")
}

/// Whether `kubectl version --client` reports kustomize v4 or newer. kubectl before 1.24
/// reports no kustomize version, so 1.21–1.23 (v4) are passed over with 1.20 (v2).
pub fn has_kustomize_v4(kubectl: &Path) -> bool {
    let Ok(out) = Command::new(kubectl).args(["version", "--client"]).output() else {
        return false;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let major = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Kustomize Version:"))
        .and_then(|v| {
            v.trim()
                .trim_start_matches('v')
                .split('.')
                .next()?
                .parse()
                .ok()
        });
    major.is_some_and(|m: u64| m >= 4)
}

/// The objects `helm template <release> <chart> --namespace <namespace> <args…>` renders.
pub fn helm_template(
    chart: &Path,
    release: &str,
    namespace: &str,
    args: &[&str],
) -> anyhow::Result<Vec<Value>> {
    let mut cmd = helm_command();
    cmd.arg("template")
        .arg(release)
        .arg(chart)
        .args(["--namespace", namespace])
        .args(args);
    documents(&run(cmd)?)
}

/// Runs helm with `args` (`lint`, …) to completion; an error only if it cannot be started.
pub fn helm(args: &[&str]) -> anyhow::Result<Output> {
    let mut cmd = helm_command();
    cmd.args(args);
    output_within(&mut cmd, TOOL_TIMEOUT).with_context(|| {
        format!("cannot run {cmd:?}; set HELM or put helm on PATH (.ci/run installs one)")
    })
}

/// Longest a tool may run: a helm or kubectl waiting on a server that does not answer must
/// fail the test, not hang the suite.
const TOOL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// `cmd.output()`, killing the tool if it runs longer than `timeout`.
fn output_within(cmd: &mut Command, timeout: std::time::Duration) -> anyhow::Result<Output> {
    use std::process::Stdio;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => Ok(out?),
        Err(_) => {
            // SAFETY: plain FFI. `pid` is our child; its waiter has not reported, so it has not
            // been reaped and the pid is still its own.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            anyhow::bail!("{cmd:?} ran longer than {timeout:?}; killed")
        }
    }
}

fn helm_command() -> Command {
    Command::new(std::env::var_os("HELM").unwrap_or_else(|| "helm".into()))
}

/// Runs `cmd`: its stdout, or an error carrying its stderr.
fn run(mut cmd: Command) -> anyhow::Result<String> {
    let out =
        output_within(&mut cmd, TOOL_TIMEOUT).with_context(|| format!("cannot run {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).with_context(|| format!("{cmd:?}: output is not UTF-8"))
}

/// The documents of a multi-document YAML stream, empty ones left out.
fn documents(yaml: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(document).context("parsing rendered YAML")?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// Multi-document YAML (`---` between documents) of `objects`, as
/// [`crate::manifests::create_all`] reads it.
pub fn to_yaml(objects: &[Value]) -> anyhow::Result<String> {
    let mut out = String::new();
    for (i, object) in objects.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_yaml::to_string(object).context("serializing an object")?);
    }
    Ok(out)
}
