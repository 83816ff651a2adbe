//! The fault suite: the faults that break leader electors, each injected into a world of
//! pods (a real `leader-sidecar` and a real `newresource-controller` per pod, on the in-memory
//! API server with RBAC and fault injection), each judged the same way:
//!
//! - **no overlap**: the active windows of all controllers (and of a foreign client-go elector,
//!   where one runs) never intersect, and a controller still active after another one opened
//!   a window fails the run at once;
//! - **no late write**: every status write the API server accepted was answered while its
//!   writer held the newest window;
//! - **terms grow** with every takeover (the fencing token);
//! - **nothing lost**: every object created before, during and after the fault is ready for its
//!   current generation at the end;
//! - **liveness** ([`World::judge_liveness`], bounds in [`LIVENESS`]): once the fault heals
//!   (or, for a fault without a heal such as kill -9, once it happened) a controller is
//!   active within lease duration + retry period + 1 s; no sidecar leads while its living
//!   controller is not active for longer than a grant + a poll interval; every object created
//!   after a heal is ready within 5 s;
//! - plus what each fault specifically claims (a frozen leader comes back as follower, a
//!   clock-skewed standby never takes over early, ten candidates make exactly one leader, …).
//!
//! Every wait is an upper bound that only a hung or broken run reaches; nothing synchronises
//! on a sleep. Where a scenario sleeps, the sleep *is* the fault (an outage of a given length).
//!
//! Run it with `cargo test -p tests --test fault_suite` (each fault once), or as a soak with
//! the `faults` binary (`cargo run -p tests --bin faults -- --soak 30m`), which repeats the
//! faults in random order until the time is up.

mod api;
mod crash;
mod freeze;
mod interop;
mod lease_data;
mod lease_ops;
mod skew;
mod web_abuse;

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use leader_client::contract::LeaderStatus;
use tokio::time::Instant;

use crate::conformance::ControllerCommand;
use crate::world::{Liveness, Verdict, WAIT, World, WorldSpec, window_labels};

/// The election timings of every scenario (3 s lease, 2 s renew deadline, 500 ms retry), so
/// that expiry-based faults resolve in seconds.
pub use crate::sidecar::FAST_TIMINGS as TIMINGS;
/// [`TIMINGS`]' lease duration.
pub const LEASE: Duration = Duration::from_secs(3);
/// [`TIMINGS`]' retry period: the leader renews this often.
pub const RETRY: Duration = Duration::from_millis(500);
/// [`TIMINGS`]' renew deadline: a leader leads at most this long after sending its last
/// accepted write.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(2);
/// The longest grant a sidecar hands out (`--grant`'s default; the suite does not set it).
pub const GRANT: Duration = Duration::from_secs(2);
/// How often the controllers ask `GET /leader` when they must poll (`--leader-poll-interval`'s
/// default in both controllers; the suite does not set it).
pub const POLL: Duration = Duration::from_secs(1);

/// The liveness bounds every fault run is judged by.
pub const LIVENESS: Liveness = Liveness {
    active_after_heal: Duration::from_millis(
        LEASE.as_millis() as u64 + RETRY.as_millis() as u64 + 1000,
    ),
    idle_leader: Duration::from_millis(GRANT.as_millis() as u64 + POLL.as_millis() as u64),
    renew_deadline: RENEW_DEADLINE,
    ready_after_heal: Duration::from_secs(5),
};

/// One fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    KillLeadingSidecar,
    KillLeadingController,
    FrozenSidecar,
    ApiPartition,
    ApiOutage,
    SlowApi,
    ErrorBursts,
    CandidateStorm,
    ClockAhead,
    ClockBehind,
    MalformedLeases,
    HttpAbuse,
    RollingUpdate,
    ClientGoInterop,
    FrozenController,
    LeaseDeletedDuringPartition,
    HolderClearedDuringPartition,
    StandbyWatchStalled,
    LeaseRecreated,
    WallClockStepBack,
}

impl Fault {
    pub const ALL: [Fault; 20] = [
        Fault::KillLeadingSidecar,
        Fault::KillLeadingController,
        Fault::FrozenSidecar,
        Fault::ApiPartition,
        Fault::ApiOutage,
        Fault::SlowApi,
        Fault::ErrorBursts,
        Fault::CandidateStorm,
        Fault::ClockAhead,
        Fault::ClockBehind,
        Fault::MalformedLeases,
        Fault::HttpAbuse,
        Fault::RollingUpdate,
        Fault::ClientGoInterop,
        Fault::FrozenController,
        Fault::LeaseDeletedDuringPartition,
        Fault::HolderClearedDuringPartition,
        Fault::StandbyWatchStalled,
        Fault::LeaseRecreated,
        Fault::WallClockStepBack,
    ];

    /// Short name, for the command line.
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillLeadingSidecar => "kill-9-sidecar",
            Fault::KillLeadingController => "kill-9-controller",
            Fault::FrozenSidecar => "sigstop-sidecar",
            Fault::ApiPartition => "api-partition",
            Fault::ApiOutage => "api-outage",
            Fault::SlowApi => "slow-api",
            Fault::ErrorBursts => "error-bursts",
            Fault::CandidateStorm => "candidate-storm",
            Fault::ClockAhead => "clock-ahead",
            Fault::ClockBehind => "clock-behind",
            Fault::MalformedLeases => "malformed-leases",
            Fault::HttpAbuse => "http-abuse",
            Fault::RollingUpdate => "rolling-update",
            Fault::ClientGoInterop => "client-go-interop",
            Fault::FrozenController => "sigstop-controller",
            Fault::LeaseDeletedDuringPartition => "lease-deleted-in-partition",
            Fault::HolderClearedDuringPartition => "holder-cleared-in-partition",
            Fault::StandbyWatchStalled => "standby-watch-stalled",
            Fault::LeaseRecreated => "lease-recreated",
            Fault::WallClockStepBack => "wall-clock-step-back",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Fault::KillLeadingSidecar => "kill -9 of the leading sidecar",
            Fault::KillLeadingController => "kill -9 of the leading controller, left down",
            Fault::FrozenSidecar => "leading sidecar frozen (SIGSTOP) past the lease",
            Fault::ApiPartition => "API partition of the leader only",
            Fault::ApiOutage => "full API outage longer than the lease",
            Fault::SlowApi => "slow API: latency beyond the request timeout",
            Fault::ErrorBursts => "429 and 503 bursts",
            Fault::CandidateStorm => "10 candidates at once (409 storm)",
            Fault::ClockAhead => "one sidecar's wall clock 60 s ahead",
            Fault::ClockBehind => "one sidecar's wall clock 60 s behind",
            Fault::MalformedLeases => "malformed Lease objects from another client",
            Fault::HttpAbuse => "HTTP abuse of the leader API",
            Fault::RollingUpdate => "rolling update, one pod at a time",
            Fault::ClientGoInterop => "a client-go elector on the same Lease",
            Fault::FrozenController => "leading controller frozen (SIGSTOP) past its grant",
            Fault::LeaseDeletedDuringPartition => "Lease deleted while its holder is cut off",
            Fault::HolderClearedDuringPartition => "holder cleared while its holder is cut off",
            Fault::StandbyWatchStalled => "standby's Lease watch silent, then kill -9",
            Fault::LeaseRecreated => "Lease deleted and recreated (fencing token)",
            Fault::WallClockStepBack => "leader's wall clock stepped back, client-go standby",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether the fault needs the in-memory API server (fault injection or its audit log);
    /// the others run against a real cluster too.
    pub fn needs_in_memory(self) -> bool {
        matches!(
            self,
            Fault::ApiPartition
                | Fault::ApiOutage
                | Fault::SlowApi
                | Fault::ErrorBursts
                | Fault::CandidateStorm
                | Fault::LeaseDeletedDuringPartition
                | Fault::HolderClearedDuringPartition
                | Fault::StandbyWatchStalled
        )
    }

    /// Pods at the start, and extra sidecar flags.
    fn world(self) -> (usize, Vec<&'static str>) {
        match self {
            Fault::KillLeadingController => (3, vec!["--consumer-timeout", "2s"]),
            Fault::CandidateStorm
            | Fault::ClockAhead
            | Fault::ClockBehind
            | Fault::WallClockStepBack => (0, vec![]),
            Fault::ClientGoInterop | Fault::StandbyWatchStalled => (2, vec![]),
            _ => (3, vec![]),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a passed fault run observed.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub fault: Fault,
    pub verdict: Verdict,
    /// What the scenario itself measured or checked, in a few words.
    pub notes: Vec<String>,
    pub took: Duration,
    /// Why the fault did not run (it needs the in-memory API server).
    pub skipped: Option<String>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(why) = &self.skipped {
            return write!(f, "{:<52} skipped: {why}", self.fault.describe());
        }
        write!(
            f,
            "{:<52} ok  {:>5.1} s  windows [{}] no overlap, {} objects ready",
            self.fault.describe(),
            self.took.as_secs_f64(),
            window_labels(&self.verdict.windows),
            self.verdict.objects
        )?;
        if let Some(n) = self.verdict.status_writes {
            write!(f, ", {n} status writes inside their writer's window")?;
        }
        for note in &self.notes {
            write!(f, "; {note}")?;
        }
        Ok(())
    }
}

/// Runs one fault with the Rust controller of this build. An error says what went wrong and
/// carries the tail of every process's log.
pub async fn run(fault: Fault) -> anyhow::Result<Outcome> {
    run_with(fault, ControllerCommand::rust()?).await
}

/// Runs one fault with the given controller (the Python one, say).
pub async fn run_with(fault: Fault, controller: ControllerCommand) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    if fault.needs_in_memory() && crate::cluster::use_real_cluster() {
        return Ok(Outcome {
            fault,
            verdict: Verdict {
                windows: Vec::new(),
                status_writes: None,
                handover: None,
                objects: 0,
            },
            notes: Vec::new(),
            took: started.elapsed(),
            skipped: Some("needs the in-memory API server's fault injection".into()),
        });
    }
    let (pods, extra) = fault.world();
    let mut args: Vec<&str> = match fault {
        Fault::WallClockStepBack => skew::STEP_TIMINGS.to_vec(),
        _ => TIMINGS.to_vec(),
    };
    args.extend(extra);
    let spec = WorldSpec::new(controller, pods, &args);
    let mut world = World::start(&spec).await?;
    let result = match fault {
        Fault::KillLeadingSidecar => crash::kill_leading_sidecar(&mut world).await,
        Fault::KillLeadingController => crash::kill_leading_controller(&mut world).await,
        Fault::FrozenSidecar => crash::frozen_sidecar(&mut world).await,
        Fault::RollingUpdate => crash::rolling_update(&mut world).await,
        Fault::CandidateStorm => crash::candidate_storm(&mut world).await,
        Fault::ApiPartition => api::partition(&mut world).await,
        Fault::ApiOutage => api::outage(&mut world).await,
        Fault::SlowApi => api::slow(&mut world).await,
        Fault::ErrorBursts => api::error_bursts(&mut world).await,
        Fault::ClockAhead => skew::one_clock_off(&mut world, "+60s").await,
        Fault::ClockBehind => skew::one_clock_off(&mut world, "-60s").await,
        Fault::MalformedLeases => lease_data::malformed_leases(&mut world).await,
        Fault::HttpAbuse => web_abuse::http_abuse(&mut world).await,
        Fault::ClientGoInterop => interop::client_go(&mut world).await,
        Fault::FrozenController => freeze::frozen_controller(&mut world).await,
        Fault::LeaseDeletedDuringPartition => lease_ops::deleted_in_partition(&mut world).await,
        Fault::HolderClearedDuringPartition => lease_ops::cleared_in_partition(&mut world).await,
        Fault::StandbyWatchStalled => lease_ops::standby_watch_stalled(&mut world).await,
        Fault::LeaseRecreated => lease_ops::recreated(&mut world).await,
        Fault::WallClockStepBack => skew::wall_clock_step_back(&mut world).await,
    };
    let result = match result {
        Ok(notes) => match no_process_crashed(&mut world) {
            Ok(()) => match world.judge().await {
                Ok(verdict) => world.judge_liveness(&LIVENESS).await.map(|()| Outcome {
                    fault,
                    verdict,
                    notes,
                    took: started.elapsed(),
                    skipped: None,
                }),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    world.thaw_all();
    result.map_err(|e| anyhow::anyhow!("{fault}: {e:#}\n{}", world.log_tails()))
}

/// Fails if a process the scenario did not stop has exited (a panic, a crash).
fn no_process_crashed(world: &mut World) -> anyhow::Result<()> {
    for pod in &mut world.pods {
        let killed = pod.controller_killed_at.is_some();
        for (process, expected_alive) in [(&mut *pod.sidecar, true), (&mut pod.controller, !killed)]
        {
            if !expected_alive {
                continue;
            }
            if let Some(status) = process.try_exit()?
                && !status.success()
            {
                anyhow::bail!("{} exited with {status}", process.name);
            }
        }
    }
    Ok(())
}

/// The sidecar user of pod `i` as the in-memory audit log and fault rules name it.
fn sidecar_user(world: &World, i: usize) -> String {
    format!("{}-sidecar", world.pods[i].name)
}

/// Waits until the Lease has been written `n` times while naming pod `i` as holder (its
/// renews): the way to let time pass "for several lease durations" without sleeping. Reads the
/// Lease itself, so it works against a real cluster too.
async fn wait_renews(world: &World, i: usize, n: usize) -> anyhow::Result<()> {
    use k8s_openapi::api::coordination::v1::Lease;
    let leases: kube::Api<Lease> =
        kube::Api::namespaced(world.cluster.client(), world.cluster.namespace());
    let holder = world.pods[i].name.as_str();
    let mut last: Option<String> = None;
    let mut seen = 0;
    let deadline = Instant::now() + WAIT;
    while seen < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{holder} renewed only {seen} of {n} times within {WAIT:?}"
        );
        let lease = leases.get(&world.lease_name()).await?;
        let rv = lease.metadata.resource_version.clone();
        let held = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(holder);
        if held && last.is_some() && rv != last {
            seen += 1;
        }
        last = rv;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The `/leader` answers of every pod whose sidecar is running.
async fn statuses(world: &mut World) -> Vec<(usize, LeaderStatus)> {
    let mut out = Vec::new();
    for (i, pod) in world.pods.iter_mut().enumerate() {
        if matches!(pod.sidecar.try_exit(), Ok(None))
            && let Ok(s) = pod.sidecar.status().await
        {
            out.push((i, s));
        }
    }
    out
}

/// Waits until exactly one running sidecar says it leads and every other one names it as
/// holder; returns its index.
async fn one_leader_all_agree(world: &mut World) -> anyhow::Result<usize> {
    let deadline = Instant::now() + WAIT;
    loop {
        let all = statuses(world).await;
        let leaders: Vec<usize> = all
            .iter()
            .filter(|(_, s)| s.is_leader)
            .map(|(i, _)| *i)
            .collect();
        if let [leader] = leaders[..] {
            let name = world.pods[leader].name.clone();
            if all
                .iter()
                .all(|(i, s)| *i == leader || s.holder.as_deref() == Some(name.as_str()))
            {
                return Ok(leader);
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no single leader that all agree on within {WAIT:?}: {:?}",
            all.iter()
                .map(|(i, s)| (world.pods[*i].name.as_str(), s.is_leader, s.holder.clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the controller of pod `i` has closed every window it opened.
async fn window_closed(world: &World, i: usize, why: &str) -> anyhow::Result<()> {
    use crate::controller::{WINDOW_ENDED, WINDOW_STARTED};
    let c = &world.pods[i].controller;
    let deadline = Instant::now() + WAIT;
    while c.logs_with(WINDOW_ENDED).len() < c.logs_with(WINDOW_STARTED).len() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} still active {why} after {WAIT:?}",
            c.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Sends SIGTERM to both containers of pod `i` (as the kubelet does) and waits for both to
/// exit 0.
async fn terminate_pod(world: &mut World, i: usize) -> anyhow::Result<()> {
    let pod = &mut world.pods[i];
    pod.controller.signal(libc::SIGTERM)?;
    pod.sidecar.signal(libc::SIGTERM)?;
    let controller = pod.controller.wait_exit(WAIT).await?;
    let sidecar = pod.sidecar.wait_exit(WAIT).await?;
    anyhow::ensure!(
        controller.success() && sidecar.success(),
        "{} after SIGTERM: controller {controller}, sidecar {sidecar}",
        pod.name
    );
    Ok(())
}

/// Window counts with their pod names, for messages.
fn named_counts(world: &World, counts: &[usize]) -> String {
    world
        .pods
        .iter()
        .zip(counts)
        .map(|(p, n)| format!("{}:{n}", p.name))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The in-memory server's token of the sidecar of pod `i`.
fn sidecar_token(world: &World, i: usize) -> anyhow::Result<String> {
    world.pods[i]
        .sidecar_token
        .clone()
        .context("in memory every sidecar has a token of its own")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_have_unique_names() {
        for f in Fault::ALL {
            assert_eq!(Fault::from_name(f.name()), Some(f));
        }
        assert_eq!(Fault::from_name("nope"), None);
    }
}
