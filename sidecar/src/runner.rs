//! The elector driver: runs the pure [`Elector`] against the API server, the standby watch,
//! local commands and the clock, and publishes the outcome to [`Leadership`], the logs, the
//! metrics and a Kubernetes Event.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use plumbing::heartbeat::Heartbeat;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::elector::{Change, Command, Elector, Step, WriteKind};
use crate::leadership::Leadership;
use crate::lease_api::{ApiFailure, LeaseApi, ReadOutcome, Watched, WriteOutcome, watch_lease};
use crate::metrics::Metrics;

pub struct Runner {
    pub elector: Elector,
    pub leases: LeaseApi,
    pub leadership: Arc<Leadership>,
    pub metrics: Metrics,
    pub recorder: Option<EventRecorder>,
    pub lease_ref: String,
    pub heartbeat: Arc<Heartbeat>,
    pub watch: StandbyWatch,
    pub commands: mpsc::Receiver<Command>,
}

/// The standby watch task (`watch_lease`) and the channel it reports on. The elector asks for a
/// restart when a read shows the watch went quiet without breaking ([`Change::WatchStale`]).
pub struct StandbyWatch {
    leases: LeaseApi,
    backoff: Duration,
    tx: mpsc::Sender<Watched>,
    rx: mpsc::Receiver<Watched>,
    task: tokio::task::JoinHandle<()>,
}

impl StandbyWatch {
    /// Starts watching; `backoff` paces restarts after errors.
    pub fn start(leases: LeaseApi, backoff: Duration) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(watch_lease(leases.clone(), backoff, tx.clone()));
        Self {
            leases,
            backoff,
            tx,
            rx,
            task,
        }
    }

    /// Abandons the current watch connection and starts a new one (list, then watch). Reports
    /// of the old one still queued are harmless: the elector skips what is older than it knows.
    fn restart(&mut self) {
        self.task.abort();
        self.task = tokio::spawn(watch_lease(
            self.leases.clone(),
            self.backoff,
            self.tx.clone(),
        ));
    }
}

impl Drop for StandbyWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publishes the "became leader" Events on the Lease.
///
/// Each announcement goes through a fresh kube [`Recorder`], so it is always one `create` of an
/// `events.k8s.io/v1` Event. A long-lived `Recorder` would instead turn a second announcement
/// within six minutes (same pod, same Lease: e.g. after a yield) into a `patch` of the first
/// Event's series, keeping that Event's note (the old term), and `patch` is a verb the
/// deployment's Role does not grant. client-go, too, creates a new Event when the message
/// differs.
#[derive(Clone)]
pub struct EventRecorder {
    client: kube::Client,
    reporter: Reporter,
}

/// Builds the Event recorder for "became leader" Events on the Lease.
pub fn recorder(client: kube::Client, identity: &str) -> EventRecorder {
    EventRecorder {
        client,
        reporter: Reporter {
            controller: "leader-sidecar".into(),
            instance: Some(identity.to_owned()),
        },
    }
}

impl Runner {
    /// Runs until shutdown has finished (the Lease released, or not ours to release).
    pub async fn run(mut self) {
        let timings = self.elector.timings().clone();
        let mut shutdown_by: Option<Instant> = None;
        tracing::info!("attempting to acquire leader lease {}...", self.lease_ref);
        loop {
            let now = Instant::now();
            self.heartbeat.beat(now);
            if shutdown_by.is_some_and(|by| now >= by) {
                tracing::warn!(
                    "could not release the lease before the shutdown deadline; exiting anyway"
                );
                return;
            }
            let local = self.leadership.local(now);
            let step = self.elector.next_step(now, Timestamp::now(), local);
            self.publish(now);

            match step {
                Step::Done => return,
                Step::Read => {
                    let outcome = self.leases.get().await;
                    let now = Instant::now();
                    match outcome {
                        ReadOutcome::Found(lease) => {
                            self.observed_now();
                            self.elector.on_read(Some(&lease), now);
                        }
                        ReadOutcome::NotFound => {
                            self.observed_now();
                            self.elector.on_read(None, now);
                        }
                        ReadOutcome::Failed(f) => {
                            tracing::warn!(
                                lease = %self.lease_ref,
                                verb = "get",
                                code = f.label(),
                                error = %f,
                                "reading the lease failed"
                            );
                            self.elector.on_read_failed(now);
                        }
                    }
                }
                Step::Write(write) => {
                    let deadline = match write.kind {
                        WriteKind::Renew => self.elector.tenure(now).map(|t| t.valid_until),
                        _ => None,
                    };
                    let sent = Instant::now();
                    let outcome = self
                        .leases
                        .write(&write.lease, write.create, deadline)
                        .await;
                    let now = Instant::now();
                    if write.kind == WriteKind::Renew {
                        self.metrics.renew_duration((now - sent).as_secs_f64());
                    }
                    match outcome {
                        WriteOutcome::Stored(stored) => {
                            self.observed_now();
                            self.elector.on_written(&write, &stored, sent, now);
                        }
                        WriteOutcome::Conflict => {
                            tracing::debug!(
                                kind = write.kind.as_str(),
                                "lease changed since we read it (409)"
                            );
                            self.elector.on_conflict(&write);
                        }
                        WriteOutcome::Gone => {
                            tracing::warn!(
                                lease = %self.lease_ref,
                                kind = write.kind.as_str(),
                                verb = "update",
                                code = "404",
                                "the lease was deleted (404 on update)"
                            );
                            self.elector.on_gone(&write, now);
                        }
                        WriteOutcome::Failed(f) => {
                            tracing::warn!(
                                lease = %self.lease_ref,
                                kind = write.kind.as_str(),
                                verb = if write.create { "create" } else { "update" },
                                code = f.label(),
                                error = %f,
                                "lease write failed"
                            );
                            self.elector.on_write_failed(&write, sent, now);
                        }
                    }
                }
                Step::Wait(until) => {
                    // Wake at least every retry period so that /healthz sees the loop turning.
                    let cap = now + timings.retry_period;
                    let until = until.map_or(cap, |u| u.min(cap));
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => {}
                        Some(w) = self.watch.rx.recv() => {
                            let now = Instant::now();
                            self.observed_now();
                            match w {
                                Watched::Applied(lease) => self.elector.on_watched(&lease, now),
                                Watched::Listed(lease) => self.elector.on_listed(&lease, now),
                                Watched::Absent { resource_version } => {
                                    self.elector.on_watched_absent(resource_version.as_deref(), now);
                                }
                            }
                        }
                        Some(cmd) = self.commands.recv() => {
                            let now = Instant::now();
                            match cmd {
                                Command::Yield => self.elector.on_yield(now),
                                Command::Shutdown => {
                                    let granted = self.leadership.granted_until(now);
                                    self.elector.on_shutdown(granted);
                                    let from = granted.unwrap_or(now).max(now);
                                    shutdown_by = Some(from + timings.renew_deadline);
                                }
                            }
                        }
                        _ = self.leadership.consumer_arrived() => {}
                    }
                }
            }
        }
    }

    fn observed_now(&self) {
        let at = Timestamp::now().to_string();
        self.leadership.set_view(|v| v.observed_at = Some(at));
    }

    /// Publishes the elector's state: tenure to the grant book, Lease facts to watchers,
    /// changes to logs, metrics and Events.
    fn publish(&mut self, now: Instant) {
        self.leadership.publish(&self.elector, now);
        for change in self.elector.take_changes() {
            match change {
                Change::Acquired { term } => {
                    tracing::info!(term, "successfully acquired lease {}", self.lease_ref);
                    self.metrics.transition("acquired", "");
                    self.metrics.set_leader(true);
                    self.announce(term);
                }
                Change::Lost { reason } => {
                    tracing::info!(reason = reason.as_str(), "lost lease {}", self.lease_ref);
                    self.metrics.transition("lost", reason.as_str());
                    self.metrics.set_leader(false);
                    if !self.elector.is_shutting_down() {
                        tracing::info!("attempting to acquire leader lease {}...", self.lease_ref);
                    }
                }
                Change::Released => tracing::info!("released lease {}", self.lease_ref),
                Change::NewLeader { holder } => {
                    tracing::info!(
                        "new leader observed: {}",
                        holder.as_deref().unwrap_or("<none>")
                    );
                }
                Change::WatchStale => {
                    tracing::warn!(
                        lease = %self.lease_ref,
                        verb = "watch",
                        code = "stale",
                        "a read showed a lease change the watch never delivered; restarting the \
                         watch and polling every retry period until it delivers again"
                    );
                    self.metrics.api_error("leases", "watch", "stale");
                    self.watch.restart();
                }
            }
        }
    }

    /// Records "<identity> became leader" on the Lease, as client-go does, without delaying
    /// the elector. Counted as `events` `create` in the API metrics; a failure is logged once
    /// and not retried (the Event is informational).
    fn announce(&self, term: i32) {
        let (Some(events), Some(lease)) = (self.recorder.clone(), self.elector.observed()) else {
            return;
        };
        let reference = lease_reference(lease);
        let note = format!("{} became leader (term {term})", self.elector.identity());
        let metrics = self.metrics.clone();
        let timeout = self.leases.timeout();
        let lease_ref = self.lease_ref.clone();
        tokio::spawn(async move {
            let event = Event {
                type_: EventType::Normal,
                reason: "LeaderElection".into(),
                note: Some(note),
                action: "Acquire".into(),
                secondary: None,
            };
            // Fresh, so that it creates and never patches (see `EventRecorder`).
            let recorder = Recorder::new(events.client, events.reporter);
            let failure =
                match tokio::time::timeout(timeout, recorder.publish(&event, &reference)).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(ApiFailure::from(e)),
                    Err(_) => Some(ApiFailure::timeout(timeout)),
                };
            let code = failure
                .as_ref()
                .map_or_else(|| "201".to_owned(), ApiFailure::label);
            metrics.api_request("events", "create", &code);
            if let Some(f) = failure {
                tracing::warn!(
                    lease = %lease_ref,
                    verb = "create",
                    code,
                    error = %f,
                    "could not record the LeaderElection event"
                );
            }
        });
    }
}

fn lease_reference(lease: &Lease) -> ObjectReference {
    ObjectReference {
        api_version: Some("coordination.k8s.io/v1".into()),
        kind: Some("Lease".into()),
        name: lease.metadata.name.clone(),
        namespace: lease.metadata.namespace.clone(),
        uid: lease.metadata.uid.clone(),
        resource_version: lease.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}
