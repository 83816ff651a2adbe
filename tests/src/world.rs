//! A Deployment's worth of pods on one machine, for the suites that judge the whole system:
//! each pod is one real `leader-sidecar` process and one controller process pointed at it,
//! on the in-memory API server with RBAC on (or a real cluster, see `testkit::cluster`).
//!
//! The world records what is needed to judge a run afterwards: every controller's log (its
//! active windows), the API server's audit log (every status write, in memory), and the
//! objects created. [`World::judge`] applies the checks both the conformance suite and the
//! fault suite end with:
//!
//! - the active windows of all controllers (and of any foreign elector added with
//!   [`World::foreign_windows`]) never overlap;
//! - in memory, every status write was answered while its writer held the newest window, so no
//!   write of a deposed controller landed after a takeover;
//! - a window opened by a takeover carries a higher term than the one before it;
//! - every object created is ready for its current generation (nothing lost).
//!
//! [`World::judge_liveness`] adds what the fault suite also demands, from the instants a
//! scenario records with [`World::mark_fault`] and [`World::mark_heal`]: once a fault heals,
//! a controller is active again soon; no sidecar leads while its controller idles; and work
//! created after the heal is done promptly (see [`Liveness`]).
//!
//! Pods are only ever added, never forgotten: a pod whose processes were killed or replaced
//! keeps its logs, so its windows are still judged.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};
use newresource_controller::crd::NewResource;
use serde_json::Value;
use tokio::process::Command;
use tokio::time::Instant;

use crate::apiserver::audit::AuditRecord;
use crate::apiserver::{ApiServer, Config};
use crate::cluster::{TempDir, TestCluster};
use crate::conformance::ControllerCommand;
use crate::controller::{
    ActiveWindow, WINDOW_ENDED, WINDOW_STARTED, active_windows, check_no_overlap,
    check_writes_inside_windows,
};
use crate::kubelet::PodCredentials;
use crate::process::{LoggedChild, message, timestamp};
use crate::sidecar::{Sidecar, SidecarSpec};
use crate::{newresources, tokens, web};

/// Upper bound of every wait: only a hung run ever reaches it.
pub const WAIT: Duration = Duration::from_secs(60);
/// Upper bound for a logged line to reach the test through a child's stderr pipe.
pub const PIPE_DELIVERY: Duration = Duration::from_secs(10);
/// The rules the controllers' service accounts get, from the Deployment's RBAC.
const RBAC_YAML: &str = include_str!("../../deploy/base/rbac.yaml");
const CONTROLLER_CLUSTER_ROLE: &str = "newresource-controller";

/// The name of the `i`th pod: `pod-a`, `pod-b`, …, then `pod-26`, `pod-27`, ….
pub fn pod_name(i: usize) -> String {
    match u8::try_from(i).ok().filter(|i| *i < 26) {
        Some(i) => format!("pod-{}", char::from(b'a' + i)),
        None => format!("pod-{i}"),
    }
}

/// How to build a world.
#[derive(Clone, Debug)]
pub struct WorldSpec {
    pub controller: ControllerCommand,
    /// Pods started at once, named by [`pod_name`].
    pub pods: usize,
    /// Flags of every sidecar (timings, `--consumer-timeout`, …).
    pub sidecar_args: Vec<String>,
    /// The Lease the sidecars compete for.
    pub lease: String,
}

impl WorldSpec {
    pub fn new(controller: ControllerCommand, pods: usize, sidecar_args: &[&str]) -> Self {
        Self {
            controller,
            pods,
            sidecar_args: sidecar_args.iter().map(|s| (*s).to_owned()).collect(),
            lease: "newresource-controller".into(),
        }
    }
}

/// How one pod differs from the others.
#[derive(Clone, Debug, Default)]
pub struct PodOptions {
    /// Environment of the sidecar (e.g. libfaketime's).
    pub sidecar_env: Vec<(String, String)>,
}

/// A sidecar and a controller, as the two containers of one pod.
pub struct WorldPod {
    pub name: String,
    pub sidecar: Sidecar,
    pub sidecar_spec: SidecarSpec,
    /// The sidecar's own API token (in memory), so faults can single it out.
    pub sidecar_token: Option<String>,
    pub controller: LoggedChild,
    /// The controller's service-account token.
    pub controller_token: String,
    /// The controller's probe address.
    pub health: SocketAddr,
    /// The controller's API user, as the audit log names it.
    pub controller_user: String,
    /// When the test killed the controller: an upper bound of the end of a window it had open.
    pub controller_killed_at: Option<Timestamp>,
}

/// The cluster, the pods and the objects of one run.
pub struct World {
    pub cluster: TestCluster,
    files: TempDir,
    controller: ControllerCommand,
    sidecar_args: Vec<String>,
    lease: String,
    pub pods: Vec<WorldPod>,
    pub api: Api<NewResource>,
    /// Every object created so far.
    pub objects: Vec<String>,
    /// Windows of electors that are not pods of this world (a client-go elector on the same
    /// Lease), by name.
    foreign: Vec<(String, Vec<ActiveWindow>)>,
    /// Every object created, with the instant just before its create request.
    created: Vec<(String, Timestamp)>,
    /// When faults began and healed, as the scenario recorded them.
    pub marks: Vec<FaultMark>,
}

/// An instant a scenario recorded: a fault began, or it healed (a fault without a heal, such
/// as kill -9, records its own instant as both).
#[derive(Clone, Debug)]
pub struct FaultMark {
    pub at: Timestamp,
    pub heal: bool,
    pub what: String,
}

/// The bounds [`World::judge_liveness`] holds a run to.
#[derive(Clone, Copy, Debug)]
pub struct Liveness {
    /// After a heal, some controller (or foreign elector) is active within this long: lease
    /// duration + retry period + 1 s.
    pub active_after_heal: Duration,
    /// A sidecar leads while its (living) controller is not active for at most this long: one
    /// grant + one poll interval of the controller.
    pub idle_leader: Duration,
    /// The sidecars' renew deadline: a tenure ends at the latest this long after the last Lease
    /// write of its sidecar that the API server accepted.
    pub renew_deadline: Duration,
    /// An object created after a heal (and before the next fault) is ready within this long.
    pub ready_after_heal: Duration,
}

/// What [`World::judge`] found.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// Every controller's windows, by pod (foreign electors last).
    pub windows: Vec<(String, Vec<ActiveWindow>)>,
    /// Successful status writes checked (in memory only; `None` on a real cluster).
    pub status_writes: Option<usize>,
    /// From the end of the first window to the start of the next (informational).
    pub handover: Option<Duration>,
    /// Objects found ready.
    pub objects: usize,
}

impl World {
    pub async fn start(spec: &WorldSpec) -> anyhow::Result<Self> {
        let cluster = TestCluster::start_with(Config {
            rbac: true,
            ..Config::default()
        })
        .await?;
        newresources::install_crd(&cluster.client()).await?;
        create_controller_role(&cluster).await?;
        let api = Api::namespaced(cluster.client(), cluster.namespace());
        let mut world = Self {
            cluster,
            files: TempDir::new("world")?,
            controller: spec.controller.clone(),
            sidecar_args: spec.sidecar_args.clone(),
            lease: spec.lease.clone(),
            pods: Vec::new(),
            api,
            objects: Vec::new(),
            foreign: Vec::new(),
            created: Vec::new(),
            marks: Vec::new(),
        };
        for i in 0..spec.pods {
            world.add_pod(&pod_name(i), PodOptions::default()).await?;
        }
        Ok(world)
    }

    /// Starts one more pod (its own sidecar identity, controller service account and token);
    /// returns its index.
    pub async fn add_pod(&mut self, name: &str, options: PodOptions) -> anyhow::Result<usize> {
        let account = format!("{name}-controller");
        bind_controller_account(&self.cluster, &account).await?;
        let (sidecar_kubeconfig, sidecar_token) =
            self.cluster.client_kubeconfig(&format!("{name}-sidecar"))?;
        let mut sidecar_spec = SidecarSpec::new(
            &sidecar_kubeconfig,
            self.cluster.namespace(),
            &self.lease,
            name,
        )
        .args(self.sidecar_args.iter().cloned());
        sidecar_spec.env = options.sidecar_env;
        let sidecar = Sidecar::spawn(sidecar_spec.clone()).await?;
        let token = tokens::request_token(
            &self.cluster.client(),
            self.cluster.namespace(),
            &account,
            Duration::from_secs(3600),
        )
        .await?;
        let credentials = PodCredentials::write(
            self.cluster.kubeconfig(),
            &token,
            self.files.path(),
            &account,
        )?;
        let (controller, health) = spawn_controller(
            &self.controller,
            name,
            &credentials,
            &sidecar,
            self.cluster.namespace(),
        )
        .await?;
        self.pods.push(WorldPod {
            name: name.to_owned(),
            sidecar,
            sidecar_spec,
            sidecar_token,
            controller,
            controller_token: token,
            health,
            controller_user: format!(
                "system:serviceaccount:{}:{account}",
                self.cluster.namespace()
            ),
            controller_killed_at: None,
        });
        Ok(self.pods.len() - 1)
    }

    /// A directory that lives as long as the world (for files its processes read).
    pub fn scratch_dir(&self) -> &std::path::Path {
        self.files.path()
    }

    /// The Lease the sidecars compete for.
    pub fn lease_name(&self) -> String {
        self.lease.clone()
    }

    /// The in-memory API server, or an error naming what needs it.
    pub fn server(&self, needed_for: &str) -> anyhow::Result<&ApiServer> {
        self.cluster
            .in_memory()
            .with_context(|| format!("{needed_for} needs the in-memory API server"))
    }

    /// Creates `n` more objects named `<prefix>-NN`.
    pub async fn create(&mut self, prefix: &str, n: usize) -> anyhow::Result<()> {
        for name in newresources::names(prefix, 0..n) {
            let at = Timestamp::now();
            newresources::create(&self.api, std::slice::from_ref(&name)).await?;
            self.created.push((name.clone(), at));
            self.objects.push(name);
        }
        Ok(())
    }

    /// Records that a fault begins now.
    pub fn mark_fault(&mut self, what: &str) {
        self.marks.push(FaultMark {
            at: Timestamp::now(),
            heal: false,
            what: what.to_owned(),
        });
    }

    /// Records that a fault heals now (or, for a fault that does not heal, such as kill -9,
    /// that it happened now). Liveness is judged from these instants.
    pub fn mark_heal(&mut self, what: &str) {
        self.marks.push(FaultMark {
            at: Timestamp::now(),
            heal: true,
            what: what.to_owned(),
        });
    }

    /// Waits until every object created so far is ready for its current generation.
    pub async fn all_ready(&self) -> anyhow::Result<()> {
        newresources::wait_ready(&self.api, &self.objects, WAIT)
            .await
            .map(drop)
    }

    /// How many windows the controller of pod `i` has opened so far.
    pub fn windows_opened(&self, i: usize) -> usize {
        self.pods[i].controller.logs_with(WINDOW_STARTED).len()
    }

    /// Waits until a controller other than those in `except` has opened a window; returns its
    /// index. `except` names pods whose windows do not count (the old leader).
    pub async fn window_opens(&self, except: &[usize]) -> anyhow::Result<usize> {
        let counts: Vec<usize> = vec![0; self.pods.len()];
        self.window_opens_after(&counts, except).await
    }

    /// Waits until some controller not in `except` has opened more windows than `counts` says
    /// (indexes past its end count as 0); returns its index.
    pub async fn window_opens_after(
        &self,
        counts: &[usize],
        except: &[usize],
    ) -> anyhow::Result<usize> {
        let deadline = Instant::now() + WAIT;
        loop {
            for i in 0..self.pods.len() {
                let before = counts.get(i).copied().unwrap_or(0);
                if !except.contains(&i) && self.windows_opened(i) > before {
                    return Ok(i);
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no controller opened an active window within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The number of windows every controller has opened so far.
    pub fn window_counts(&self) -> Vec<usize> {
        (0..self.pods.len())
            .map(|i| self.windows_opened(i))
            .collect()
    }

    /// Called once `next` opened a window after taking over from `i`: the controller of pod
    /// `i` must have closed every window it opened (or be dead). A correct controller logged
    /// `active window ended` before the takeover could happen, so the wait only covers the
    /// line's way through the stderr pipe; a controller still active is an overlap.
    pub async fn closed_before_takeover(&self, i: usize, next: usize) -> anyhow::Result<()> {
        let pod = &self.pods[i];
        if pod.controller_killed_at.is_some() {
            return Ok(());
        }
        let c = &pod.controller;
        let deadline = Instant::now() + PIPE_DELIVERY;
        while c.logs_with(WINDOW_ENDED).len() < c.logs_with(WINDOW_STARTED).len() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "active windows overlap: {} is still active after {} opened a window",
                c.name,
                self.pods[next].controller.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Waits until the sidecar of pod `i` follows `leader`'s sidecar.
    pub async fn follows(&self, i: usize, leader: usize) -> anyhow::Result<()> {
        let leader = self.pods[leader].name.as_str();
        let status = self.pods[i]
            .sidecar
            .wait_status(WAIT, |s| {
                !s.is_leader && s.holder.as_deref() == Some(leader)
            })
            .await?;
        anyhow::ensure!(!status.is_leader);
        Ok(())
    }

    /// Waits until a probe of pod `i`'s controller answers `code`.
    pub async fn probe(&self, i: usize, path: &str, code: u16) -> anyhow::Result<()> {
        let pod = &self.pods[i];
        let deadline = Instant::now() + WAIT;
        loop {
            let got = web::get(pod.health, path).await.map(|r| r.status);
            if matches!(got, Ok(c) if c == code) {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} {path}: {got:?}, expected {code}",
                pod.controller.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs the controller of pod `i` and waits for it to die. A window it had open ends,
    /// at the latest, now.
    pub async fn kill_controller(&mut self, i: usize) -> anyhow::Result<()> {
        let pod = &mut self.pods[i];
        pod.controller.signal(libc::SIGKILL)?;
        pod.controller.wait_exit(WAIT).await?;
        pod.controller_killed_at = Some(Timestamp::now());
        Ok(())
    }

    /// Restarts the sidecar of pod `i` (killed or exited) on the same leader API port, as the
    /// kubelet restarts a container.
    pub async fn restart_sidecar(&mut self, i: usize) -> anyhow::Result<()> {
        let pod = &mut self.pods[i];
        let _ = pod.sidecar.wait_exit(WAIT).await?;
        let mut spec = pod.sidecar_spec.clone();
        spec.listen = Some(pod.sidecar.api);
        pod.sidecar = Sidecar::spawn(spec).await?;
        Ok(())
    }

    /// Adds the windows of an elector that is not a pod of this world, for [`World::judge`].
    pub fn foreign_windows(&mut self, name: &str, windows: Vec<ActiveWindow>) {
        self.foreign.push((name.to_owned(), windows));
    }

    /// Every controller's windows, by pod. The last window of a killed controller ends when it
    /// was killed, if it had not ended before.
    pub fn windows(&self) -> anyhow::Result<Vec<(String, Vec<ActiveWindow>)>> {
        self.pods
            .iter()
            .map(|p| {
                let mut ws = active_windows(&p.controller.logs())?;
                if let (Some(killed), Some(last)) = (p.controller_killed_at, ws.last_mut()) {
                    last.end = last.end.or(Some(killed));
                }
                Ok((p.name.clone(), ws))
            })
            .collect()
    }

    /// The checks every run ends with (see the module docs).
    pub async fn judge(&self) -> anyhow::Result<Verdict> {
        self.all_ready().await?;
        let mut windows = self.windows()?;
        let mut by_user: Vec<(&str, Vec<ActiveWindow>)> = self
            .pods
            .iter()
            .zip(&windows)
            .map(|(p, (_, ws))| (p.controller_user.as_str(), ws.clone()))
            .collect();
        for (name, ws) in &self.foreign {
            by_user.push((name.as_str(), ws.clone()));
        }
        check_no_overlap(&by_user)?;
        windows.extend(self.foreign.iter().cloned());
        check_terms_grow(&windows)?;
        let status_writes = match self.cluster.in_memory() {
            Some(server) => Some(check_writes_inside_windows(&server.audit(), &by_user)?),
            None => None,
        };
        Ok(Verdict {
            handover: handover_gap(&windows),
            windows,
            status_writes,
            objects: self.objects.len(),
        })
    }

    /// Liveness, from the instants the scenario recorded (at least one heal is required):
    ///
    /// 1. after every heal, some controller (or foreign elector) is active within
    ///    [`Liveness::active_after_heal`];
    /// 2. no sidecar leads while its controller is alive and not active for longer than
    ///    [`Liveness::idle_leader`] (see [`World::leading_intervals`] for how "leads" is read);
    /// 3. in memory, every object created after a heal and before the next fault began was
    ///    ready within [`Liveness::ready_after_heal`] of its creation, as the API server's audit
    ///    log shows (its first accepted status write).
    pub async fn judge_liveness(&self, bounds: &Liveness) -> anyhow::Result<()> {
        let heals: Vec<&FaultMark> = self.marks.iter().filter(|m| m.heal).collect();
        anyhow::ensure!(
            !heals.is_empty(),
            "liveness: the scenario recorded no instant at which its fault healed"
        );
        for heal in heals {
            self.active_after(heal, bounds.active_after_heal).await?;
        }
        let audit = self.cluster.in_memory().map(ApiServer::audit);
        let windows = self.windows()?;
        for (i, pod) in self.pods.iter().enumerate() {
            let own = &windows[i].1;
            for (from, to) in self.leading_intervals(i, audit.as_deref(), bounds.renew_deadline) {
                let to = match pod.controller_killed_at {
                    Some(killed) => to.min(killed),
                    None => to,
                };
                if let Some((idle_from, idle)) = longest_gap(from, to, own)
                    && idle > bounds.idle_leader
                {
                    bail!(
                        "liveness: {}'s sidecar led from {from} to {to}, but its controller was \
                         not active for {:.2} s from {idle_from} (allowed: {:?}, a grant and a \
                         poll interval); windows {own:?}",
                        pod.name,
                        idle.as_secs_f64(),
                        bounds.idle_leader
                    );
                }
            }
        }
        if let Some(audit) = &audit {
            self.ready_after_heals(audit, bounds.ready_after_heal)?;
        }
        Ok(())
    }

    /// Waits until some window (of a controller or a foreign elector) covers an instant in
    /// `[heal, heal + within]`, and fails once that interval has passed without one.
    async fn active_after(&self, heal: &FaultMark, within: Duration) -> anyhow::Result<()> {
        let until = heal.at + within;
        loop {
            let mut all = self.windows()?;
            all.extend(self.foreign.iter().cloned());
            let active = all
                .iter()
                .flat_map(|(_, ws)| ws)
                .any(|w| w.start <= until && w.end.is_none_or(|end| end >= heal.at));
            if active {
                return Ok(());
            }
            anyhow::ensure!(
                Timestamp::now() <= until,
                "liveness: no controller active within {within:?} of \"{}\" at {} (windows {})",
                heal.what,
                heal.at,
                window_labels(&all)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// When pod `i`'s sidecar led, as closed intervals. From its log: from each "successfully
    /// acquired lease" line to the next "lost lease" or "released lease" line (or now). In
    /// memory each end is capped at the last Lease write of that sidecar the API server
    /// accepted before it plus the renew deadline: a frozen or killed sidecar logs its loss
    /// late or never, but its tenure provably ended there. The audit log alone cannot tell an
    /// acquire or a renew from a release, nor a write the sidecar gave up on (a timeout) from
    /// one it leads on, so the log is the primary source.
    ///
    /// A sidecar under libfaketime logs in its faked clock, so its log cannot be compared with
    /// the others: its intervals are read from the audit log alone, each run of accepted Lease
    /// writes no further apart than the renew deadline counting as one tenure, from its first
    /// write to its last plus the renew deadline. Lines of an earlier process of a restarted
    /// sidecar are gone with it; its tenure ended when it was killed.
    pub fn leading_intervals(
        &self,
        i: usize,
        audit: Option<&[AuditRecord]>,
        renew_deadline: Duration,
    ) -> Vec<(Timestamp, Timestamp)> {
        let pod = &self.pods[i];
        let user = format!("{}-sidecar", pod.name);
        let writes: Vec<Timestamp> = audit
            .unwrap_or_default()
            .iter()
            .filter(|r| {
                r.user == user
                    && r.resource == "leases"
                    && r.name.as_deref().is_none_or(|n| n == self.lease)
                    && matches!(r.verb.as_str(), "create" | "update" | "patch")
                    && r.code < 300
            })
            .filter_map(|r| Timestamp::from_millisecond(r.at_ms).ok())
            .collect();
        let faked = pod
            .sidecar_spec
            .env
            .iter()
            .any(|(k, _)| k.starts_with("FAKETIME"));
        if faked {
            let mut out: Vec<(Timestamp, Timestamp)> = Vec::new();
            for at in writes {
                match out.last_mut() {
                    Some((_, end)) if at <= *end => *end = at + renew_deadline,
                    _ => out.push((at, at + renew_deadline)),
                }
            }
            return out;
        }
        let now = Timestamp::now();
        let mut out = Vec::new();
        let mut open: Option<Timestamp> = None;
        for line in pod.sidecar.logs() {
            let msg = message(&line);
            let Some(at) = timestamp(&line) else { continue };
            if msg.starts_with("successfully acquired lease") {
                open = open.or(Some(at));
            } else if (msg.starts_with("lost lease") || msg.starts_with("released lease"))
                && let Some(from) = open.take()
            {
                out.push((from, at));
            }
        }
        if let Some(from) = open {
            out.push((from, now));
        }
        if audit.is_none() {
            return out;
        }
        out.into_iter()
            .map(|(from, to)| {
                // The acquire itself was answered a moment before its line was logged.
                let last = writes
                    .iter()
                    .filter(|w| **w <= to && **w + Duration::from_secs(1) >= from)
                    .max();
                match last {
                    Some(w) => (from, to.min(*w + renew_deadline).max(from)),
                    None => (from, to),
                }
            })
            .collect()
    }

    /// Rule 3 of [`World::judge_liveness`].
    fn ready_after_heals(&self, audit: &[AuditRecord], within: Duration) -> anyhow::Result<()> {
        let mut marks = self.marks.clone();
        marks.sort_by_key(|m| m.at);
        for (name, created) in &self.created {
            // The latest mark before the creation must be a heal: objects created while a
            // fault is in force are judged by the safety checks only.
            let Some(last) = marks.iter().rev().find(|m| m.at <= *created) else {
                continue;
            };
            if !last.heal {
                continue;
            }
            let ready = audit
                .iter()
                .filter(|r| {
                    r.resource == "newresources"
                        && r.subresource.as_deref() == Some("status")
                        && r.name.as_deref() == Some(name.as_str())
                        && r.code < 300
                        && r.at_ms >= created.as_millisecond()
                })
                .map(|r| r.at_ms)
                .min();
            let took = ready.map(|at| {
                Duration::from_millis(
                    u64::try_from(at - created.as_millisecond()).unwrap_or_default(),
                )
            });
            anyhow::ensure!(
                took.is_some_and(|t| t <= within),
                "liveness: {name}, created {created} after \"{}\", was {} (allowed: {within:?})",
                last.what,
                match took {
                    Some(t) => format!("ready only after {:.2} s", t.as_secs_f64()),
                    None => "never written ready".to_owned(),
                }
            );
        }
        Ok(())
    }

    /// Thaws every sidecar and controller (a failed run may leave one stopped), so that drop
    /// can kill it.
    pub fn thaw_all(&self) {
        for pod in &self.pods {
            let _ = pod.sidecar.signal(libc::SIGCONT);
            let _ = pod.controller.signal(libc::SIGCONT);
        }
    }

    /// The last lines of every process's log, for failure messages.
    pub fn log_tails(&self) -> String {
        let mut out = String::from("logs (last 15 lines of each process):");
        for pod in &self.pods {
            for process in [&*pod.sidecar, &pod.controller] {
                let logs = process.logs();
                out.push_str(&format!("\n--- {} ---", process.name));
                for line in &logs[logs.len().saturating_sub(15)..] {
                    out.push_str(&format!("\n{line}"));
                }
            }
        }
        out
    }
}

/// `pod-a@0 pod-b@1`: every window as pod and term, for one-line summaries.
pub fn window_labels(windows: &[(String, Vec<ActiveWindow>)]) -> String {
    let labels: Vec<String> = windows
        .iter()
        .flat_map(|(pod, ws)| {
            ws.iter().map(move |w| {
                let term = w.term.map_or_else(|| "-".to_owned(), |t| t.to_string());
                format!("{pod}@{term}")
            })
        })
        .collect();
    labels.join(" ")
}

/// Fails if a window opened by a takeover does not carry a higher term than the window
/// before it: `term` is the fencing token of the contract.
pub fn check_terms_grow(windows: &[(String, Vec<ActiveWindow>)]) -> anyhow::Result<()> {
    let mut all: Vec<(&str, &ActiveWindow)> = windows
        .iter()
        .flat_map(|(pod, ws)| ws.iter().map(move |w| (pod.as_str(), w)))
        .collect();
    all.sort_by_key(|(_, w)| w.start);
    for pair in all.windows(2) {
        let ((a_pod, a), (b_pod, b)) = (pair[0], pair[1]);
        anyhow::ensure!(
            a.term.is_some() && b.term.is_some(),
            "windows without a term: {a_pod} {a:?}, {b_pod} {b:?}"
        );
        if a_pod != b_pod {
            anyhow::ensure!(
                b.term > a.term,
                "{b_pod} took over in term {:?}, not after {a_pod}'s term {:?}",
                b.term,
                a.term
            );
        } else {
            anyhow::ensure!(
                b.term >= a.term,
                "{a_pod}'s term went back: {a:?} then {b:?}"
            );
        }
    }
    Ok(())
}

/// The longest part of `[from, to]` that no window of `windows` covers (an open window lasts
/// until now), with where it starts.
fn longest_gap(
    from: Timestamp,
    to: Timestamp,
    windows: &[ActiveWindow],
) -> Option<(Timestamp, Duration)> {
    if to <= from {
        return None;
    }
    let now = Timestamp::now();
    let mut covered: Vec<(Timestamp, Timestamp)> = windows
        .iter()
        .map(|w| (w.start, w.end.unwrap_or(now)))
        .filter(|(s, e)| *e > from && *s < to)
        .collect();
    covered.sort();
    let mut best: Option<(Timestamp, Duration)> = None;
    let mut cursor = from;
    let mut consider = |a: Timestamp, b: Timestamp| {
        if let Ok(d) = Duration::try_from(b.duration_since(a))
            && best.is_none_or(|(_, x)| d > x)
        {
            best = Some((a, d));
        }
    };
    for (s, e) in covered {
        if s > cursor {
            consider(cursor, s.min(to));
        }
        cursor = cursor.max(e);
    }
    if cursor < to {
        consider(cursor, to);
    }
    best
}

/// From the end of the earliest window to the start of the next one, when both are logged.
pub fn handover_gap(windows: &[(String, Vec<ActiveWindow>)]) -> Option<Duration> {
    let mut all: Vec<&ActiveWindow> = windows.iter().flat_map(|(_, ws)| ws).collect();
    all.sort_by_key(|w| w.start);
    let (first, next) = (all.first()?, all.get(1)?);
    let gap = next.start.duration_since(first.end?);
    Duration::try_from(gap).ok()
}

/// Creates the Role the controllers' service accounts get: the `newresource-controller`
/// ClusterRole's rules, in the test's namespace.
async fn create_controller_role(cluster: &TestCluster) -> anyhow::Result<()> {
    let ns = cluster.namespace();
    let rules = cluster_role_rules(RBAC_YAML, CONTROLLER_CLUSTER_ROLE)?;
    Api::<Role>::namespaced(cluster.client(), ns)
        .create(
            &PostParams::default(),
            &Role {
                metadata: meta(CONTROLLER_CLUSTER_ROLE, ns),
                rules: Some(rules),
            },
        )
        .await
        .context("cannot create the controllers' Role")?;
    Ok(())
}

/// Creates the service account `account` and binds it to the controllers' Role.
async fn bind_controller_account(cluster: &TestCluster, account: &str) -> anyhow::Result<()> {
    let ns = cluster.namespace();
    let client = cluster.client();
    let pp = PostParams::default();
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(
            &pp,
            &ServiceAccount {
                metadata: meta(account, ns),
                ..ServiceAccount::default()
            },
        )
        .await
        .with_context(|| format!("cannot create serviceaccount {account}"))?;
    Api::<RoleBinding>::namespaced(client, ns)
        .create(
            &pp,
            &RoleBinding {
                metadata: meta(&format!("{CONTROLLER_CLUSTER_ROLE}-{account}"), ns),
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name: CONTROLLER_CLUSTER_ROLE.into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: account.to_owned(),
                    namespace: Some(ns.to_owned()),
                    ..Subject::default()
                }]),
            },
        )
        .await
        .with_context(|| format!("cannot bind serviceaccount {account}"))?;
    Ok(())
}

fn meta(name: &str, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        ..ObjectMeta::default()
    }
}

/// The rules of ClusterRole `name` in a multi-document YAML.
fn cluster_role_rules(yaml: &str, name: &str) -> anyhow::Result<Vec<PolicyRule>> {
    use serde::Deserialize;
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(doc)?;
        if value["kind"] == "ClusterRole" && value["metadata"]["name"] == name {
            return serde_json::from_value(value["rules"].clone())
                .with_context(|| format!("bad rules in ClusterRole {name}"));
        }
    }
    bail!("no ClusterRole {name} in deploy/base/rbac.yaml")
}

/// Variables of the interface that must not leak in from the test's own environment.
const INHERITED: [&str; 10] = [
    "LEADER_ELECT",
    "LEADER_POLL_INTERVAL",
    "MAX_CONCURRENT_RECONCILES",
    "API_TIMEOUT",
    "KUBE_API_SERVER",
    "KUBE_TOKEN_FILE",
    "KUBE_CA_FILE",
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    "RUST_LOG",
];

/// Starts the controller for pod `pod`, pointed at `sidecar`; returns it with its health
/// address.
async fn spawn_controller(
    controller: &ControllerCommand,
    pod: &str,
    credentials: &PodCredentials,
    sidecar: &Sidecar,
    namespace: &str,
) -> anyhow::Result<(LoggedChild, SocketAddr)> {
    let mut command = Command::new(&controller.program);
    command.args(&controller.args);
    for var in INHERITED {
        command.env_remove(var);
    }
    command
        .env("LEADER_URL", format!("http://{}", sidecar.api))
        .env("WATCH_NAMESPACE", namespace)
        // Only the kubeconfig, so that every controller is shown to read it (the in-cluster
        // variables of `PodCredentials::env` are the kubelet's business).
        .env("KUBECONFIG", &credentials.kubeconfig)
        .env("LOG_FORMAT", "json")
        // A Python controller would otherwise leave __pycache__ in the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("HEALTH_PROBE_BIND_ADDRESS", "127.0.0.1:0")
        .env("METRICS_BIND_ADDRESS", "127.0.0.1:0");
    let process = LoggedChild::spawn(&format!("{pod}/controller"), command)
        .with_context(|| format!("cannot start {controller}"))?;
    let [health] = process
        .wait_addresses("newresource-controller starting", ["health"])
        .await
        .with_context(|| format!("{controller} did not log its startup line"))?;
    Ok((process, health))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_named_in_order() {
        assert_eq!(pod_name(0), "pod-a");
        assert_eq!(pod_name(25), "pod-z");
        assert_eq!(pod_name(26), "pod-26");
    }

    #[test]
    fn the_controller_rules_come_from_the_deployment() {
        let rules = cluster_role_rules(RBAC_YAML, CONTROLLER_CLUSTER_ROLE).unwrap();
        let verbs: Vec<(String, Vec<String>)> = rules
            .iter()
            .flat_map(|r| {
                r.resources
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |res| (res, r.verbs.clone()))
            })
            .collect();
        assert!(verbs.contains(&("newresources".into(), vec!["list".into(), "watch".into()])));
        assert!(verbs.contains(&("newresources/status".into(), vec!["update".into()])));
        assert!(cluster_role_rules(RBAC_YAML, "nope").is_err());
    }

    fn window(term: i64, start_s: i64, end_s: Option<i64>) -> ActiveWindow {
        let at = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        ActiveWindow {
            term: Some(term),
            start: at(start_s),
            end: end_s.map(at),
        }
    }

    #[test]
    fn the_longest_uncovered_stretch_is_found() {
        let at = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        let ws = vec![window(1, 1, Some(3)), window(1, 7, Some(8))];
        assert_eq!(
            longest_gap(at(0), at(10), &ws),
            Some((at(3), Duration::from_secs(4)))
        );
        assert_eq!(longest_gap(at(1), at(3), &ws), None);
        assert_eq!(
            longest_gap(at(2), at(8), &ws),
            Some((at(3), Duration::from_secs(4)))
        );
    }

    #[test]
    fn a_takeover_must_raise_the_term() {
        let good = vec![
            ("a".to_owned(), vec![window(1, 0, Some(5))]),
            ("b".to_owned(), vec![window(2, 6, None)]),
        ];
        assert!(check_terms_grow(&good).is_ok());
        assert_eq!(handover_gap(&good), Some(Duration::from_secs(1)));
        let stale = vec![
            ("a".to_owned(), vec![window(2, 0, Some(5))]),
            ("b".to_owned(), vec![window(2, 6, None)]),
        ];
        assert!(check_terms_grow(&stale).is_err());
    }
}
