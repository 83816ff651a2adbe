//! A simulation of client-go's leader elector (`k8s.io/client-go/tools/leaderelection` with a
//! `resourcelock.LeaseLock`, as of client-go v0.30), writing the same Lease as our sidecar
//! through kube-rs. The fault suite runs it next to `leader-sidecar` to show that the two never
//! lead at the same time, and records its leading periods as [`ActiveWindow`]s so that they can
//! be compared with our controllers' windows.
//!
//! # What is simulated
//!
//! One [`ClientGoElector`] is one process calling `leaderelection.RunOrDie` in a loop with a
//! fresh `LeaderElector` each time (as a process restarted after losing the lease would):
//!
//! - `Run`: `acquire()`; once it returns true, `OnStartedLeading` (a window opens) and `renew()`;
//!   when `renew()` returns, `release()` if `ReleaseOnCancel`, then `OnStoppedLeading` (the
//!   window closes) and the loop starts over.
//! - `acquire()`: `wait.JitterUntil(tryAcquireOrRenew, RetryPeriod, 1.2, sliding)`: after each
//!   failed attempt it waits `RetryPeriod * (1 + 1.2 * rand[0,1))`.
//! - `renew()`: `wait.Until(…, RetryPeriod)` (sliding: the next poll starts `RetryPeriod` after
//!   the previous one *returned*) around `wait.PollImmediateUntil(RetryPeriod, tryAcquireOrRenew,
//!   timeoutCtx.Done())` with `timeoutCtx` = `RenewDeadline` from the start of the poll. The
//!   attempts run under `timeoutCtx`, so the deadline also cuts a request in flight. A poll that
//!   reaches its deadline ends `renew()`.
//! - `tryAcquireOrRenew`: `now` is read first (before any request); the record is `{holder: id,
//!   leaseDurationSeconds: int(LeaseDuration / time.Second) (truncated), acquireTime: now,
//!   renewTime: now}`, written as `MicroTime`s (microseconds, truncated). Then:
//!   1. *fast path* (new in v0.30, kubernetes/kubernetes#122069): if `IsLeader()` and the
//!      observed record is still valid, `Update` the cached Lease object (resourceVersion of the
//!      last Get/Create/Update) keeping `acquireTime` and `leaseTransitions`; success →
//!      observed, true; failure → go on;
//!   2. `Get`; `NotFound` → `Create`, success → observed, true; other errors → false;
//!   3. if the *raw* record differs from the last raw one seen, it becomes the observed record
//!      and `observedTime` = now (this process's monotonic clock, read when the answer was
//!      processed);
//!   4. a non-empty holder with `observedTime + observed leaseDurationSeconds > now` and
//!      `!IsLeader()` → false;
//!   5. `IsLeader()` keeps `acquireTime` and `leaseTransitions`, anything else writes
//!      `leaseTransitions + 1`; `Update` with the Get's resourceVersion (a 409 is a failure);
//!      success → observed, true.
//! - `release()` (only if `IsLeader()`): `Update` with holder `""`, `leaseDurationSeconds: 1`,
//!   `renewTime = acquireTime = now`, `leaseTransitions` kept, bounded by
//!   `min(RenewDeadline, request timeout)`.
//! - `IsLeader()` is `observedRecord.holderIdentity == id`, which is why a lease still naming
//!   this identity is *renewed*, not re-acquired: `leaseTransitions` stays the same, so two
//!   consecutive windows of one elector can carry the same term.
//! - Every request has a timeout: client-go's `resourcelock.NewFromKubeconfig` (used by
//!   controller-runtime and kube-controller-manager) sets the client's timeout to
//!   `max(RenewDeadline / 2, 1s)`; that is the default here ([`ClientGoConfig::request_timeout`]).
//!
//! # Two details that matter for safety
//!
//! **Changes are noticed at whole seconds.** Step 3 compares `json.Marshal(LeaderElectionRecord)`,
//! whose times are `metav1.Time`: RFC 3339 *without* fractions. Renews by the same holder within
//! one second of its wall clock look identical, so a client-go standby may start counting the
//! lease duration from the first write of the second in which the holder's last renew fell: up
//! to (just under) one second before it, about one renew interval before it in steady state. A
//! holder whose last successful write carried `renewTime` `t0` can be taken over by a client-go
//! standby from about `t0 - 1s + leaseDurationSeconds` on, whereas our sidecar (which counts from
//! each new resourceVersion) waits until at least `t0 + leaseDurationSeconds`. This also applies
//! to our sidecar as the *holder*: the margin `lease_duration - renew_deadline` of its safety
//! argument (`sidecar/src/elector.rs`, step 3) shrinks by up to one second against a client-go
//! standby, to almost nothing with 3 s / 2 s.
//!
//! **When client-go stops leading.** Let `r` be the instant the answer to its last successful
//! write arrived (`r` ≤ send + request timeout). The renew loop waits `RetryPeriod` after that
//! poll returned, and the next poll gives up `RenewDeadline` after it started, cutting whatever
//! request is in flight. So `renew()` returns at the latest at `r + RetryPeriod + RenewDeadline`
//! (not `RenewDeadline` after the start of the last successful attempt, and without an extra
//! request timeout). With `ReleaseOnCancel`, `release()` runs *before* `OnStoppedLeading` even
//! when the renew failed; `IsLeader()` is still true after failed requests, so under a partition
//! it waits for its request timeout: `OnStoppedLeading` at the latest at `r + RetryPeriod +
//! RenewDeadline + min(request timeout, RenewDeadline)`. The window of a simulated elector closes
//! there (plus scheduling latency of this process's tokio runtime, a few milliseconds at worst;
//! measured under a partition with 2 s / 500 ms: 2.507 s after the last `renewTime`).
//!
//! A standby takes over at `c + leaseDuration` at the earliest, `c` being the commit of that last
//! write (before `r`); a client-go standby up to one second earlier. So a partitioned client-go
//! leader is only safe if `leaseDuration - renewDeadline - retryPeriod` exceeds `r - c`, plus the
//! release bound with `ReleaseOnCancel`, plus up to one second against a client-go standby. With
//! the suite's fast timings (3 s / 2 s / 500 ms, request timeout 1 s) a partitioned client-go
//! leader can overlap with a client-go standby, and with `ReleaseOnCancel` also with our sidecar;
//! with client-go's defaults (15 s / 10 s / 2 s, request timeout 5 s) it can overlap with anybody
//! when `ReleaseOnCancel` is set. Those overlaps are client-go's, faithfully reproduced: choose
//! the timings or `release_on_cancel: false` accordingly in partition scenarios. Crash and
//! graceful-stop scenarios are not affected.
//!
//! # Windows
//!
//! A window starts when `OnStartedLeading` would be called (`acquire()` returned true, after the
//! answer to the acquiring write) with the `leaseTransitions` that write carried as its term, and
//! ends:
//!
//! - **renew gave up:** when `OnStoppedLeading` would be called, not earlier. Until then client-go
//!   tells its user nothing: the context handed to `OnStartedLeading` is cancelled only by `Run`'s
//!   deferred `cancel()` just before `OnStoppedLeading`, controller-runtime stops its runnables on
//!   `OnStoppedLeading`, and `IsLeader()` turning false (a Get that saw another holder) is not a
//!   signal anybody waits on; client-go keeps "leading" for the rest of the poll even after it has
//!   *seen* another holder. Real controllers stop at or after that moment, so the window ends no
//!   later than a real client-go user's activity does, and an overlap found with it is one a real
//!   client-go user would have.
//! - **[`ClientGoElector::stop`]:** at the call, which is when the `Run` context is cancelled: that
//!   cancels the `OnStartedLeading` context at once, and `ReleaseOnCancel`'s contract requires the
//!   guarded work to have completed before the cancel. The release (if any) comes after it.
//! - **[`ClientGoElector::crash`]:** when the task is gone (aborted like `kill -9`, no release):
//!   an upper bound, since nothing of it ran after that.
//!
//! Timestamps are this machine's wall clock ([`Timestamp::now`]), like our controllers' logs.
//!
//! # Deviations from client-go
//!
//! - [`ClientGoElector::stop`] lets a request in flight finish (within its timeouts) instead of
//!   aborting it with the context. In client-go v0.30 an aborted renew that the API server still
//!   committed makes the release fail with 409 (kubernetes/kubernetes#131867, fixed in later
//!   versions by re-reading the Lease before releasing), so a graceful handover would sometimes
//!   fall back to expiry; that is a liveness race only, and avoiding it keeps handover tests
//!   deterministic. Crashes abort at once.
//! - After `OnStoppedLeading` the simulation runs again instead of exiting.
//! - Events, metrics, `OnNewLeader`, the healthz watchdog, coordinated leader election and the
//!   client's rate limiter are not simulated.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::controller::ActiveWindow;

/// client-go's `leaderelection.JitterFactor`.
pub const JITTER_FACTOR: f64 = 1.2;

/// client-go's `LeaseDuration`, `RenewDeadline` and `RetryPeriod`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientGoTimings {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl ClientGoTimings {
    /// The suite's short timings (3 s / 2 s / 500 ms), like `testkit::sidecar::FAST_TIMINGS`.
    pub const FAST: Self = Self {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(500),
    };

    /// The defaults of Kubernetes' core components (15 s / 10 s / 2 s).
    pub const CORE_DEFAULTS: Self = Self {
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
    };

    /// `NewLeaderElector`'s checks: `LeaseDuration > RenewDeadline > 1.2 * RetryPeriod > 0`.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.lease_duration > self.renew_deadline,
            "leaseDuration must be greater than renewDeadline"
        );
        anyhow::ensure!(
            self.renew_deadline > self.retry_period.mul_f64(JITTER_FACTOR),
            "renewDeadline must be greater than retryPeriod*JitterFactor"
        );
        anyhow::ensure!(
            !self.retry_period.is_zero(),
            "retryPeriod must be greater than zero"
        );
        Ok(())
    }

    /// `leaseDurationSeconds` client-go writes: `int(LeaseDuration / time.Second)`, truncated
    /// (3.9 s is written as 3).
    pub fn lease_duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// The request timeout `resourcelock.NewFromKubeconfig` gives the lock's client:
    /// `max(RenewDeadline / 2, 1s)`.
    pub fn default_request_timeout(&self) -> Duration {
        (self.renew_deadline / 2).max(Duration::from_secs(1))
    }
}

/// Everything one simulated elector needs besides the client.
#[derive(Clone, Debug)]
pub struct ClientGoConfig {
    pub namespace: String,
    pub lease: String,
    /// `ResourceLockConfig.Identity`, written as `holderIdentity`.
    pub identity: String,
    pub timings: ClientGoTimings,
    /// `LeaderElectionConfig.ReleaseOnCancel`.
    pub release_on_cancel: bool,
    /// Timeout of every Lease request (client-go: `rest.Config.Timeout`). Renew requests are
    /// also cut at the renew deadline, the release at `RenewDeadline`.
    pub request_timeout: Duration,
}

impl ClientGoConfig {
    /// No release on cancel, [`ClientGoTimings::default_request_timeout`].
    pub fn new(namespace: &str, lease: &str, identity: &str, timings: ClientGoTimings) -> Self {
        Self {
            namespace: namespace.to_owned(),
            lease: lease.to_owned(),
            identity: identity.to_owned(),
            timings,
            release_on_cancel: false,
            request_timeout: timings.default_request_timeout(),
        }
    }

    pub fn release_on_cancel(mut self, release: bool) -> Self {
        self.release_on_cancel = release;
        self
    }

    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The timings' checks, a non-empty identity and a non-zero request timeout.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.timings.validate()?;
        anyhow::ensure!(!self.identity.is_empty(), "Lock identity is empty");
        anyhow::ensure!(
            !self.request_timeout.is_zero(),
            "the request timeout must be greater than zero"
        );
        Ok(())
    }
}

/// What the elector task and its observers share.
struct Shared {
    identity: String,
    state: Mutex<State>,
    /// Whether a window is open, for waiters.
    leading: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    windows: Vec<ActiveWindow>,
    /// Stopped or crashed: no window opens any more.
    halted: bool,
    /// `GetLeader()` of the current `LeaderElector` (`None`: none observed, or `""`).
    leader: Option<String>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `OnStartedLeading`. False once halted.
    fn start_window(&self, term: i32) -> bool {
        let mut state = self.state();
        if state.halted {
            return false;
        }
        state.windows.push(ActiveWindow {
            term: Some(i64::from(term)),
            start: Timestamp::now(),
            end: None,
        });
        self.leading.send_replace(true);
        true
    }

    /// `OnStoppedLeading` (no-op without an open window).
    fn end_window(&self) {
        let mut state = self.state();
        if let Some(w) = state.windows.last_mut()
            && w.end.is_none()
        {
            w.end = Some(Timestamp::now());
        }
        self.leading.send_replace(false);
    }

    /// Stop or crash: the open window ends now and none opens any more.
    fn halt(&self) {
        self.state().halted = true;
        self.end_window();
    }
}

/// A cheap, cloneable view of a [`ClientGoElector`] that outlives it (e.g. for a monitor task
/// while the elector itself is moved into `crash`/`stop`).
#[derive(Clone)]
pub struct ClientGoHandle {
    shared: Arc<Shared>,
}

impl ClientGoHandle {
    pub fn identity(&self) -> &str {
        &self.shared.identity
    }

    /// The leading windows so far (the last one open while leading).
    pub fn windows(&self) -> Vec<ActiveWindow> {
        self.shared.state().windows.clone()
    }

    /// Whether a window is open right now.
    pub fn is_leading(&self) -> bool {
        *self.shared.leading.borrow()
    }

    /// `GetLeader()`: the holder the elector last observed (including itself), `None` before it
    /// observed one or while the Lease is released.
    pub fn leader(&self) -> Option<String> {
        self.shared.state().leader.clone()
    }

    /// Waits until a window is open; `timeout` is an upper bound for a hung test.
    pub async fn wait_leading(&self, timeout: Duration) -> anyhow::Result<()> {
        self.wait_leading_is(true, timeout).await
    }

    /// Waits until no window is open; `timeout` is an upper bound for a hung test.
    pub async fn wait_not_leading(&self, timeout: Duration) -> anyhow::Result<()> {
        self.wait_leading_is(false, timeout).await
    }

    async fn wait_leading_is(&self, leading: bool, timeout: Duration) -> anyhow::Result<()> {
        let mut rx = self.shared.leading.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(|l| *l == leading)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => anyhow::bail!("{}: elector state gone", self.identity()),
            Err(_) => anyhow::bail!(
                "{}: leading is not {leading} after {timeout:?}",
                self.identity()
            ),
        }
    }
}

/// A running simulated client-go elector (a tokio task); aborted on drop like [`Self::crash`].
/// Needs a tokio runtime.
pub struct ClientGoElector {
    handle: ClientGoHandle,
    cancel: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl ClientGoElector {
    /// Starts electing on `namespace/lease` as `identity` with the default request timeout.
    ///
    /// # Panics
    ///
    /// On invalid timings or an empty identity, like client-go's `RunOrDie`.
    pub fn spawn(
        client: kube::Client,
        namespace: &str,
        lease: &str,
        identity: &str,
        timings: ClientGoTimings,
        release_on_cancel: bool,
    ) -> Self {
        let config = ClientGoConfig::new(namespace, lease, identity, timings)
            .release_on_cancel(release_on_cancel);
        match Self::spawn_with(client, config) {
            Ok(elector) => elector,
            Err(e) => panic!("invalid client-go elector configuration: {e}"),
        }
    }

    /// Starts electing with a full configuration; fails on an invalid one.
    pub fn spawn_with(client: kube::Client, config: ClientGoConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let shared = Arc::new(Shared {
            identity: config.identity.clone(),
            state: Mutex::new(State::default()),
            leading: watch::channel(false).0,
        });
        let (cancel, cancelled) = watch::channel(false);
        let api: Api<Lease> = Api::namespaced(client, &config.namespace);
        let task = tokio::spawn(run(api, config, shared.clone(), cancelled));
        Ok(Self {
            handle: ClientGoHandle { shared },
            cancel,
            task: Some(task),
        })
    }

    /// A view that stays usable after `crash`/`stop`.
    pub fn handle(&self) -> ClientGoHandle {
        self.handle.clone()
    }

    pub fn identity(&self) -> &str {
        self.handle.identity()
    }

    /// Its leading windows so far: start = when `OnStartedLeading` would be called (`acquire`
    /// returned true), end = when `OnStoppedLeading` would be called (renew gave up) or when it
    /// was stopped or crashed; term = the `leaseTransitions` it wrote when acquiring.
    pub fn windows(&self) -> Vec<ActiveWindow> {
        self.handle.windows()
    }

    pub fn is_leading(&self) -> bool {
        self.handle.is_leading()
    }

    /// See [`ClientGoHandle::leader`].
    pub fn leader(&self) -> Option<String> {
        self.handle.leader()
    }

    pub async fn wait_leading(&self, timeout: Duration) -> anyhow::Result<()> {
        self.handle.wait_leading(timeout).await
    }

    pub async fn wait_not_leading(&self, timeout: Duration) -> anyhow::Result<()> {
        self.handle.wait_not_leading(timeout).await
    }

    /// Crash: stops the task at once without releasing (like `kill -9`); a request in flight
    /// is abandoned. An open window ends once the task is gone.
    pub async fn crash(mut self) -> Vec<ActiveWindow> {
        if let Some(task) = self.task.take() {
            task.abort();
            join(task).await;
        }
        self.handle.shared.halt();
        self.windows()
    }

    /// Graceful stop: cancels `Run`'s context (an open window ends now), then waits for the task,
    /// which releases the Lease first if `release_on_cancel` and it still believes it holds it.
    pub async fn stop(mut self) -> Vec<ActiveWindow> {
        self.handle.shared.halt();
        self.cancel.send_replace(true);
        if let Some(task) = self.task.take() {
            join(task).await;
        }
        self.windows()
    }
}

impl Drop for ClientGoElector {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Awaits the task, passing a panic of it on to the caller.
async fn join(task: JoinHandle<()>) {
    if let Err(e) = task.await
        && e.is_panic()
    {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// `RunOrDie` in a loop, until cancelled.
async fn run(
    api: Api<Lease>,
    config: ClientGoConfig,
    shared: Arc<Shared>,
    cancelled: watch::Receiver<bool>,
) {
    loop {
        let mut le = LeaderElector::new(api.clone(), &config, shared.clone(), cancelled.clone());
        let Some(term) = le.acquire().await else {
            return;
        };
        let outcome = if shared.start_window(term) {
            le.renew().await
        } else {
            // Cancelled as the acquire succeeded: client-go's renew returns at once.
            Renew::Cancelled
        };
        if config.release_on_cancel {
            le.release().await;
        }
        match outcome {
            // `stop` ended the window when it cancelled.
            Renew::Cancelled => return,
            Renew::Lost => {
                tracing::info!(identity = %config.identity, "clientgo: stopped leading");
                shared.end_window();
            }
        }
    }
}

/// How `renew()` returned.
enum Renew {
    /// A poll reached the renew deadline.
    Lost,
    Cancelled,
}

/// client-go's `LeaderElectionRecord`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Record {
    holder_identity: String,
    lease_duration_seconds: i32,
    acquire_time: Option<Timestamp>,
    renew_time: Option<Timestamp>,
    leader_transitions: i32,
}

/// What client-go compares to notice a change: the record as JSON, with times as
/// `metav1.Time` (RFC 3339, whole seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
struct RawRecord {
    holder_identity: String,
    lease_duration_seconds: i32,
    acquire_second: Option<i64>,
    renew_second: Option<i64>,
    leader_transitions: i32,
}

impl Record {
    /// `LeaseSpecToLeaderElectionRecord`: absent fields are zero values.
    fn of(lease: &Lease) -> Self {
        let Some(spec) = lease.spec.as_ref() else {
            return Self::default();
        };
        Self {
            holder_identity: spec.holder_identity.clone().unwrap_or_default(),
            lease_duration_seconds: spec.lease_duration_seconds.unwrap_or_default(),
            acquire_time: spec.acquire_time.as_ref().map(|t| t.0),
            renew_time: spec.renew_time.as_ref().map(|t| t.0),
            leader_transitions: spec.lease_transitions.unwrap_or_default(),
        }
    }

    /// `LeaderElectionRecordToLeaseSpec`: every field written, the whole spec replaced.
    fn to_spec(&self) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.holder_identity.clone()),
            lease_duration_seconds: Some(self.lease_duration_seconds),
            acquire_time: self.acquire_time.map(MicroTime),
            renew_time: self.renew_time.map(MicroTime),
            lease_transitions: Some(self.leader_transitions),
            ..LeaseSpec::default()
        }
    }

    fn raw(&self) -> RawRecord {
        RawRecord {
            holder_identity: self.holder_identity.clone(),
            lease_duration_seconds: self.lease_duration_seconds,
            acquire_second: self.acquire_time.map(|t| t.as_second()),
            renew_second: self.renew_time.map(|t| t.as_second()),
            leader_transitions: self.leader_transitions,
        }
    }
}

/// The wall clock truncated to microseconds, as a `MicroTime` carries it.
fn micro_now() -> Timestamp {
    let now = Timestamp::now();
    Timestamp::from_microsecond(now.as_microsecond()).unwrap_or(now)
}

/// `wait.Jitter(d, JITTER_FACTOR)`.
fn jitter(d: Duration) -> Duration {
    d + d.mul_f64(JITTER_FACTOR * rand::random::<f64>())
}

/// Why a request failed.
#[derive(Debug)]
enum CallError {
    NotFound,
    /// Any other failure (status, transport, timeout, uninitialised lock): client-go treats
    /// them alike.
    Failed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound => f.write_str("not found"),
            Self::Failed(m) => f.write_str(m),
        }
    }
}

/// One `LeaderElector` with its `LeaseLock`.
struct LeaderElector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    timings: ClientGoTimings,
    request_timeout: Duration,
    shared: Arc<Shared>,
    cancelled: watch::Receiver<bool>,
    /// `LeaseLock.lease`: the object of the last successful Get/Create/Update (`None` after a
    /// failed Get or Create, as client-go's typed client returns nil then).
    lease: Option<Lease>,
    observed_record: Record,
    observed_raw: Option<RawRecord>,
    /// `None`: the zero time (never observed; the lease counts as expired).
    observed_time: Option<Instant>,
}

impl LeaderElector {
    fn new(
        api: Api<Lease>,
        config: &ClientGoConfig,
        shared: Arc<Shared>,
        cancelled: watch::Receiver<bool>,
    ) -> Self {
        Self {
            api,
            namespace: config.namespace.clone(),
            name: config.lease.clone(),
            identity: config.identity.clone(),
            timings: config.timings,
            request_timeout: config.request_timeout,
            shared,
            cancelled,
            lease: None,
            observed_record: Record::default(),
            observed_raw: None,
            observed_time: None,
        }
    }

    fn is_cancelled(&self) -> bool {
        *self.cancelled.borrow()
    }

    /// Sleeps `d`; true if cancelled meanwhile (or already).
    async fn sleep_or_cancelled(&mut self, d: Duration) -> bool {
        self.sleep_until_or_cancelled(Instant::now() + d).await
    }

    async fn sleep_until_or_cancelled(&mut self, at: Instant) -> bool {
        tokio::select! {
            biased;
            _ = self.cancelled.wait_for(|c| *c) => true,
            () = tokio::time::sleep_until(at) => false,
        }
    }

    fn is_leader(&self) -> bool {
        self.observed_record.holder_identity == self.identity
    }

    /// `observedTime + observedRecord.LeaseDurationSeconds > now`.
    fn is_lease_valid(&self, now: Instant) -> bool {
        let Some(observed) = self.observed_time else {
            return false;
        };
        let secs = self.observed_record.lease_duration_seconds;
        let until = if secs >= 0 {
            observed.checked_add(Duration::from_secs(secs.unsigned_abs().into()))
        } else {
            observed.checked_sub(Duration::from_secs(secs.unsigned_abs().into()))
        };
        until.is_some_and(|u| u > now)
    }

    fn set_observed(&mut self, record: Record) {
        self.observed_record = record;
        self.observed_time = Some(Instant::now());
    }

    /// `maybeReportTransition`, reduced to publishing `GetLeader()`.
    fn report_transition(&self) {
        let holder = Some(self.observed_record.holder_identity.clone()).filter(|h| !h.is_empty());
        self.shared.state().leader = holder;
    }

    /// One request, bounded by the request timeout and `deadline` (the poll's context).
    async fn call<T>(
        &self,
        deadline: Option<Instant>,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, CallError> {
        let mut until = Instant::now() + self.request_timeout;
        if let Some(d) = deadline {
            until = until.min(d);
        }
        if Instant::now() >= until {
            return Err(CallError::Failed("context deadline exceeded".into()));
        }
        match tokio::time::timeout_at(until, request).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(kube::Error::Api(s))) if s.code == 404 => Err(CallError::NotFound),
            Ok(Err(e)) => Err(CallError::Failed(e.to_string())),
            Err(_) => Err(CallError::Failed("request timed out".into())),
        }
    }

    /// `LeaseLock.Get`.
    async fn get(&mut self, deadline: Option<Instant>) -> Result<(Record, RawRecord), CallError> {
        let got = self.call(deadline, self.api.get(&self.name)).await;
        let lease = got.inspect_err(|_| self.lease = None)?;
        let record = Record::of(&lease);
        let raw = record.raw();
        self.lease = Some(lease);
        Ok((record, raw))
    }

    /// `LeaseLock.Create`.
    async fn create(
        &mut self,
        record: &Record,
        deadline: Option<Instant>,
    ) -> Result<(), CallError> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(record.to_spec()),
        };
        let created = self
            .call(deadline, self.api.create(&PostParams::default(), &lease))
            .await;
        self.lease = created.as_ref().ok().cloned();
        created.map(|_| ())
    }

    /// `LeaseLock.Update`: the cached object with the record as its spec, so the write carries
    /// the cached resourceVersion as its precondition.
    async fn update(
        &mut self,
        record: &Record,
        deadline: Option<Instant>,
    ) -> Result<(), CallError> {
        let Some(lease) = self.lease.as_mut() else {
            return Err(CallError::Failed(
                "lease not initialized, call get or create first".into(),
            ));
        };
        lease.spec = Some(record.to_spec());
        let lease = lease.clone();
        let updated = self
            .call(
                deadline,
                self.api.replace(&self.name, &PostParams::default(), &lease),
            )
            .await?;
        self.lease = Some(updated);
        Ok(())
    }

    /// `tryAcquireOrRenew`; `deadline` is the renew poll's (`None` while acquiring).
    async fn try_acquire_or_renew(&mut self, deadline: Option<Instant>) -> bool {
        let now = Instant::now();
        let wall = micro_now();
        let mut record = Record {
            holder_identity: self.identity.clone(),
            lease_duration_seconds: self.timings.lease_duration_seconds(),
            acquire_time: Some(wall),
            renew_time: Some(wall),
            leader_transitions: 0,
        };

        // 1. Fast path: the leader updates optimistically with the object it last saw.
        if self.is_leader() && self.is_lease_valid(now) {
            let mut fast = record.clone();
            fast.acquire_time = self.observed_record.acquire_time;
            fast.leader_transitions = self.observed_record.leader_transitions;
            match self.update(&fast, deadline).await {
                Ok(()) => {
                    self.set_observed(fast);
                    return true;
                }
                Err(e) => tracing::debug!(
                    identity = %self.identity,
                    "clientgo: failed to update lock optimistically: {e}, falling back to slow path"
                ),
            }
        }

        // 2. Obtain or create the record.
        let (old, raw) = match self.get(deadline).await {
            Ok(got) => got,
            Err(CallError::NotFound) => {
                return match self.create(&record, deadline).await {
                    Ok(()) => {
                        self.set_observed(record);
                        true
                    }
                    Err(e) => {
                        tracing::debug!(identity = %self.identity, "clientgo: create failed: {e}");
                        false
                    }
                };
            }
            Err(e) => {
                tracing::debug!(identity = %self.identity, "clientgo: get failed: {e}");
                return false;
            }
        };

        // 3. Record obtained: note a change, check the holder and the time.
        if self.observed_raw.as_ref() != Some(&raw) {
            self.set_observed(old.clone());
            self.observed_raw = Some(raw);
        }
        if !old.holder_identity.is_empty() && self.is_lease_valid(now) && !self.is_leader() {
            return false;
        }

        // 4. Update.
        if self.is_leader() {
            record.acquire_time = old.acquire_time;
            record.leader_transitions = old.leader_transitions;
        } else {
            record.leader_transitions = old.leader_transitions.wrapping_add(1);
        }
        match self.update(&record, deadline).await {
            Ok(()) => {
                self.set_observed(record);
                true
            }
            Err(e) => {
                tracing::debug!(identity = %self.identity, "clientgo: failed to update lock: {e}");
                false
            }
        }
    }

    /// `acquire()`: the term written, or `None` if cancelled.
    async fn acquire(&mut self) -> Option<i32> {
        tracing::info!(
            identity = %self.identity,
            "clientgo: attempting to acquire leader lease {}/{}...",
            self.namespace,
            self.name
        );
        loop {
            if self.is_cancelled() {
                return None;
            }
            let succeeded = self.try_acquire_or_renew(None).await;
            self.report_transition();
            if succeeded {
                let term = self.observed_record.leader_transitions;
                tracing::info!(
                    identity = %self.identity,
                    term,
                    "clientgo: successfully acquired lease {}/{}",
                    self.namespace,
                    self.name
                );
                return Some(term);
            }
            let wait = jitter(self.timings.retry_period);
            if self.sleep_or_cancelled(wait).await {
                return None;
            }
        }
    }

    /// `renew()`.
    async fn renew(&mut self) -> Renew {
        loop {
            if self.is_cancelled() {
                return Renew::Cancelled;
            }
            let deadline = Instant::now() + self.timings.renew_deadline;
            match self.poll(deadline).await {
                Poll::Renewed => self.report_transition(),
                Poll::DeadlineExceeded => {
                    self.report_transition();
                    tracing::info!(
                        identity = %self.identity,
                        "clientgo: failed to renew lease {}/{}: renew deadline exceeded",
                        self.namespace,
                        self.name
                    );
                    return Renew::Lost;
                }
                Poll::Cancelled => return Renew::Cancelled,
            }
            if self.sleep_or_cancelled(self.timings.retry_period).await {
                return Renew::Cancelled;
            }
        }
    }

    /// `wait.PollImmediateUntil(RetryPeriod, tryAcquireOrRenew, timeoutCtx.Done())`: attempts
    /// at once and on a `RetryPeriod` ticker (missed ticks dropped) until one succeeds or the
    /// deadline passes.
    async fn poll(&mut self, deadline: Instant) -> Poll {
        let period = self.timings.retry_period;
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            if self.try_acquire_or_renew(Some(deadline)).await {
                return Poll::Renewed;
            }
            tokio::select! {
                biased;
                _ = self.cancelled.wait_for(|c| *c) => return Poll::Cancelled,
                () = tokio::time::sleep_until(deadline) => return Poll::DeadlineExceeded,
                _ = ticker.tick() => {}
            }
        }
    }

    /// `release()`.
    async fn release(&mut self) -> bool {
        if !self.is_leader() {
            return true;
        }
        let now = micro_now();
        let record = Record {
            holder_identity: String::new(),
            lease_duration_seconds: 1,
            acquire_time: Some(now),
            renew_time: Some(now),
            leader_transitions: self.observed_record.leader_transitions,
        };
        let deadline = Instant::now() + self.timings.renew_deadline;
        match self.update(&record, Some(deadline)).await {
            Ok(()) => {
                tracing::info!(identity = %self.identity, "clientgo: released lease");
                self.set_observed(record);
                self.report_transition();
                true
            }
            Err(e) => {
                tracing::info!(identity = %self.identity, "clientgo: failed to release lock: {e}");
                false
            }
        }
    }
}

enum Poll {
    Renewed,
    DeadlineExceeded,
    Cancelled,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn timings_are_validated_like_new_leader_elector() {
        assert!(ClientGoTimings::FAST.validate().is_ok());
        assert!(ClientGoTimings::CORE_DEFAULTS.validate().is_ok());
        let mut t = ClientGoTimings::FAST;
        t.renew_deadline = t.lease_duration;
        assert!(t.validate().is_err());
        let mut t = ClientGoTimings::FAST;
        t.renew_deadline = Duration::from_millis(600); // = 1.2 * 500 ms
        assert!(t.validate().is_err());
        assert!(
            ClientGoConfig::new("ns", "l", "", ClientGoTimings::FAST)
                .validate()
                .is_err()
        );
    }

    #[test]
    fn written_fields_follow_client_go() {
        let t = ClientGoTimings {
            lease_duration: Duration::from_millis(3900),
            ..ClientGoTimings::FAST
        };
        assert_eq!(t.lease_duration_seconds(), 3, "truncated, not rounded");
        assert_eq!(
            ClientGoTimings::FAST.default_request_timeout(),
            Duration::from_secs(1)
        );
        assert_eq!(
            ClientGoTimings::CORE_DEFAULTS.default_request_timeout(),
            Duration::from_secs(5)
        );
        let now = micro_now();
        assert_eq!(now.subsec_nanosecond() % 1000, 0);
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(500));
            assert!(j >= Duration::from_millis(500) && j < Duration::from_millis(1100));
        }
    }

    #[test]
    fn changes_within_one_second_are_not_noticed() {
        let a = Record {
            holder_identity: "x".into(),
            lease_duration_seconds: 3,
            acquire_time: Some(ts("2026-01-01T00:00:00.100000Z")),
            renew_time: Some(ts("2026-01-01T00:00:05.100000Z")),
            leader_transitions: 2,
        };
        let same_second = Record {
            renew_time: Some(ts("2026-01-01T00:00:05.900000Z")),
            ..a.clone()
        };
        let next_second = Record {
            renew_time: Some(ts("2026-01-01T00:00:06.000001Z")),
            ..a.clone()
        };
        assert_eq!(a.raw(), same_second.raw());
        assert_ne!(a.raw(), next_second.raw());
        // A spec round trip keeps every field; an absent spec is the zero record.
        let lease = Lease {
            spec: Some(a.to_spec()),
            ..Lease::default()
        };
        assert_eq!(Record::of(&lease), a);
        assert_eq!(Record::of(&Lease::default()), Record::default());
    }
}
