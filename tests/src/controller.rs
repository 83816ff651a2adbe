//! `newresource-controller` as a child process, and the active windows it logs.

use std::net::SocketAddr;
use std::path::PathBuf;

use jiff::Timestamp;
use tokio::process::Command;

use crate::apiserver::audit::AuditRecord;
use crate::process::{LoggedChild, message, timestamp};
use crate::web;

/// Log messages that open and close an active window (the contract every controller of this
/// project logs, whatever its language).
pub const WINDOW_STARTED: &str = "active window started";
pub const WINDOW_ENDED: &str = "active window ended";

/// How to start one controller.
#[derive(Clone, Debug)]
pub struct ControllerSpec {
    /// Used in messages, e.g. `pod-a/controller`.
    pub name: String,
    pub kubeconfig: PathBuf,
    /// The sidecar's leader API; `None` runs with `--leader-elect=false`.
    pub leader: Option<SocketAddr>,
    /// Further flags.
    pub args: Vec<String>,
}

impl ControllerSpec {
    pub fn new(name: &str, kubeconfig: &std::path::Path, leader: Option<SocketAddr>) -> Self {
        Self {
            name: name.to_owned(),
            kubeconfig: kubeconfig.to_owned(),
            leader,
            args: Vec::new(),
        }
    }

    /// Appends flags.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// A running controller; killed on drop. Process methods come from [`LoggedChild`].
pub struct ControllerProcess {
    process: LoggedChild,
    pub metrics: SocketAddr,
    pub health: SocketAddr,
}

impl std::ops::Deref for ControllerProcess {
    type Target = LoggedChild;
    fn deref(&self) -> &LoggedChild {
        &self.process
    }
}

impl std::ops::DerefMut for ControllerProcess {
    fn deref_mut(&mut self) -> &mut LoggedChild {
        &mut self.process
    }
}

impl ControllerProcess {
    /// Starts the binary and waits for its startup line (which names the bound ports).
    pub async fn spawn(spec: ControllerSpec) -> anyhow::Result<Self> {
        let bin = crate::bins::binary("newresource-controller");
        let mut command = Command::new(&bin);
        command.arg("--kubeconfig").arg(&spec.kubeconfig).args([
            "--metrics-bind-address",
            "127.0.0.1:0",
            "--health-probe-bind-address",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ]);
        match spec.leader {
            Some(addr) => command.args(["--leader-url", &format!("http://{addr}")]),
            None => command.arg("--leader-elect=false"),
        };
        command.args(&spec.args);
        let process = LoggedChild::spawn(&spec.name, command)?;
        let [metrics, health] = process
            .wait_addresses("newresource-controller starting", ["metrics", "health"])
            .await?;
        Ok(Self {
            metrics,
            health,
            process,
        })
    }

    /// `/metrics` text.
    pub async fn metrics_text(&self) -> anyhow::Result<String> {
        let reply = web::get(self.metrics, "/metrics").await?;
        Ok(String::from_utf8(reply.body)?)
    }

    /// The status code of a probe (`/healthz`, `/readyz`).
    pub async fn probe(&self, path: &str) -> anyhow::Result<u16> {
        Ok(web::get(self.health, path).await?.status)
    }

    /// The active windows logged so far.
    pub fn windows(&self) -> anyhow::Result<Vec<ActiveWindow>> {
        active_windows(&self.logs())
    }
}

/// One logged active window: from the line that opened it to the line that closed it (`None`
/// while open, or if the process died inside it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveWindow {
    pub term: Option<i64>,
    pub start: Timestamp,
    pub end: Option<Timestamp>,
}

/// Pairs `active window started` / `active window ended` lines; fails on a malformed sequence
/// (a start inside an open window, an end without a start, a term mismatch).
pub fn active_windows(logs: &[serde_json::Value]) -> anyhow::Result<Vec<ActiveWindow>> {
    let mut out: Vec<ActiveWindow> = Vec::new();
    for line in logs {
        let msg = message(line);
        let is_start = msg == WINDOW_STARTED;
        if !is_start && msg != WINDOW_ENDED {
            continue;
        }
        let at = timestamp(line).ok_or_else(|| anyhow::anyhow!("no timestamp in {line}"))?;
        let term = line["fields"]["term"].as_i64();
        let open = out.last().is_some_and(|w| w.end.is_none());
        if is_start {
            anyhow::ensure!(!open, "window started inside an open window: {line}");
            out.push(ActiveWindow {
                term,
                start: at,
                end: None,
            });
        } else {
            let last = out
                .last_mut()
                .filter(|w| w.end.is_none())
                .ok_or_else(|| anyhow::anyhow!("window ended without a start: {line}"))?;
            anyhow::ensure!(last.term == term, "window ended with another term: {line}");
            last.end = Some(at);
        }
    }
    Ok(out)
}

/// Fails if windows of two different controllers overlap. A window still open counts as open
/// until now.
pub fn check_no_overlap(controllers: &[(&str, Vec<ActiveWindow>)]) -> anyhow::Result<()> {
    let now = Timestamp::now();
    for (i, (a_name, a_windows)) in controllers.iter().enumerate() {
        for (b_name, b_windows) in &controllers[i + 1..] {
            for a in a_windows {
                for b in b_windows {
                    let a_end = a.end.unwrap_or(now);
                    let b_end = b.end.unwrap_or(now);
                    anyhow::ensure!(
                        a_end <= b.start || b_end <= a.start,
                        "active windows overlap: {a_name} {a:?} and {b_name} {b:?}"
                    );
                }
            }
        }
    }
    Ok(())
}

/// Successful status writes to NewResources (`update` or `patch` of `newresources/status`
/// answered below 300), in the order the API server answered them.
pub fn status_writes(records: &[AuditRecord]) -> Vec<&AuditRecord> {
    records
        .iter()
        .filter(|r| {
            r.resource == "newresources"
                && r.subresource.as_deref() == Some("status")
                && matches!(r.verb.as_str(), "update" | "patch")
                && r.code < 300
        })
        .collect()
}

/// Fails unless every successful status write was answered while its writer (the API user
/// named with its windows) was the controller whose window had started most recently: so no
/// write of a deposed controller landed after another one took over. Returns how many writes
/// were checked.
pub fn check_writes_inside_windows(
    records: &[AuditRecord],
    controllers: &[(&str, Vec<ActiveWindow>)],
) -> anyhow::Result<usize> {
    let mut starts: Vec<(i64, &str)> = controllers
        .iter()
        .flat_map(|(who, ws)| ws.iter().map(move |w| (w.start.as_millisecond(), *who)))
        .collect();
    starts.sort();
    let writes = status_writes(records);
    for w in &writes {
        let active = starts
            .iter()
            .rev()
            .find(|(at, _)| *at <= w.at_ms)
            .map(|(_, who)| *who);
        anyhow::ensure!(
            active == Some(w.user.as_str()),
            "status write by {} at {} ms while the active controller was {active:?}: {w:?}",
            w.user,
            w.at_ms
        );
    }
    Ok(writes.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(msg: &str, at: &str, term: Option<i64>) -> serde_json::Value {
        json!({"timestamp": at, "fields": {"message": msg, "term": term}})
    }

    #[test]
    fn windows_pair_up_and_overlaps_are_caught() {
        let a = active_windows(&[
            line(WINDOW_STARTED, "2026-01-01T00:00:00Z", Some(1)),
            line("Starting workers", "2026-01-01T00:00:00.1Z", None),
            line(WINDOW_ENDED, "2026-01-01T00:00:05Z", Some(1)),
        ])
        .unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].term, Some(1));
        let b = active_windows(&[line(WINDOW_STARTED, "2026-01-01T00:00:05Z", Some(2))]).unwrap();
        assert!(check_no_overlap(&[("a", a.clone()), ("b", b)]).is_ok());
        let early = active_windows(&[
            line(WINDOW_STARTED, "2026-01-01T00:00:04Z", Some(2)),
            line(WINDOW_ENDED, "2026-01-01T00:00:06Z", Some(2)),
        ])
        .unwrap();
        assert!(check_no_overlap(&[("a", a), ("b", early)]).is_err());
    }

    #[test]
    fn malformed_sequences_are_errors() {
        let t = "2026-01-01T00:00:00Z";
        assert!(active_windows(&[line(WINDOW_ENDED, t, Some(1))]).is_err());
        assert!(
            active_windows(&[
                line(WINDOW_STARTED, t, Some(1)),
                line(WINDOW_STARTED, t, Some(2))
            ])
            .is_err()
        );
        assert!(
            active_windows(&[
                line(WINDOW_STARTED, t, Some(1)),
                line(WINDOW_ENDED, t, Some(2))
            ])
            .is_err()
        );
    }
}
