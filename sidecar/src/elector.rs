//! The Lease elector as a pure state machine: no I/O, no clock of its own. The driver
//! ([`crate::runner`]) feeds it observations of the Lease and the outcomes of its own requests,
//! each stamped with the monotonic instant at which it happened, and asks it for the next step.
//!
//! # Safety argument: no two pods are ever leader at the same time
//!
//! A pod may grant leadership only inside a *tenure*, and a tenure is bounded by an instant
//! computed on this process's monotonic clock:
//!
//! 1. **A tenure starts only with a write of ours that the API server accepted.** Every write is
//!    a compare-and-swap on `resourceVersion` (create when the Lease is absent, replace with the
//!    resourceVersion we last observed otherwise), so a write succeeds only if nobody else wrote
//!    the Lease since we looked at it. A holder recorded in the Lease by an earlier process with
//!    our identity (a restarted container) does not count: leadership is never inherited.
//! 2. **A tenure ends at `sent + renew_deadline`**, where `sent` is the instant *before* we sent
//!    the last write that succeeded. Each successful renew moves that instant forward. Past it we
//!    are not leader, whatever the Lease says and whether or not the driver is running: the grant
//!    book ([`crate::leadership`]) checks it on every answer.
//! 3. **Another elector takes the Lease only after it has seen the record unchanged for the
//!    holder's `leaseDurationSeconds` on its own monotonic clock**, counted from when *it
//!    observed* the change, never from the `renewTime` written in the record (wall clocks of
//!    different nodes disagree). It observes our write after the API server committed it, which
//!    is after we sent it; so the earliest moment it can take over is `sent + lease_duration`,
//!    while our tenure ended at `sent + renew_deadline`. The difference (`lease_duration -
//!    renew_deadline`, validated to be positive at startup) absorbs clock-rate differences and
//!    the delivery of grants to the local controller.
//! 4. Stale knowledge is harmless: a decision taken on an old observation ends in a write whose
//!    resourceVersion precondition fails (409), after which we read the Lease again.
//! 5. **A Lease deleted, or its holder cleared, by somebody other than the holder is waited out
//!    like a live one.** Step 3 relies on the holder's record standing until it expires; an
//!    operator's `kubectl delete lease`, or a patch that clears `holderIdentity`, removes it
//!    while the holder may be cut off from the API server and still within its tenure. So only
//!    a *release* (client-go's format: holder `""`, `leaseDurationSeconds: 1`, written by the
//!    holder, which has stopped granting before it writes it) frees the Lease at once. A free
//!    record in any other form expires like a held one: the record's `leaseDurationSeconds`
//!    (or, wiped, ours), and at least the last holder's we saw, from when we saw it. A deletion
//!    of a Lease whose holder we saw gives that holder's duration from when we saw the
//!    deletion. Repeated reports of one deletion do not extend the wait. The holder itself,
//!    when its own Lease is deleted or cleared under it *while its tenure is still valid*, steps
//!    down and may take it again at once: nobody else can have held the Lease since its last
//!    write (step 3), only its own controller can still act, and a new term revokes that
//!    controller's grants. A holder whose tenure lapsed (it was frozen or cut off) may have
//!    missed a takeover: it waits like everybody else, its own lease duration when it knows of
//!    no other holder.
//!    **What this cannot cover:** a candidate that does not know the holder when the Lease is
//!    deleted (it started, or restarted, after the deletion, or the holder acquired moments
//!    before the deletion, between two of its observations) finds nothing to wait out and may
//!    create the Lease at once while the holder still leads: a create has no resourceVersion
//!    to fail on. Deleting a held Lease is therefore an operator error we document
//!    (docs/operations.md); clearing it is safe.
//!
//! The argument needs only the monotonic clocks of the two nodes to run at nearly the same
//! rate (the margin absorbs a drift far larger than real clocks show), and to keep running
//! while a process is stopped: SIGSTOP, a debugger, CPU throttling or a long pause stop the
//! process, not its clock, so a frozen leader finds its tenure over when it resumes, and a
//! frozen controller its grant. A *suspended virtual machine* is different: Linux's
//! `CLOCK_MONOTONIC` does not count a suspend, so a leader resumed after a suspend longer than
//! the margin believes its tenure still runs. Nothing a process can do locally detects that
//! (`CLOCK_BOOTTIME` would, but tokio's timers use the monotonic clock); run the sidecar on
//! nodes that are not live-suspended, or fence the work on the server with the term.
//!
//! Liveness: a standby learns of renewals from its watch. A watch can go quiet without
//! breaking (a half-open connection, a stuck server); a standby that then counts the holder's
//! expiry from an old observation tries too early, reads a renewal it never heard of, and
//! waits a whole lease duration again. So a standby also reads the Lease when the holder has
//! been silent for one and a half retry periods, and a read that shows a change the watch never
//! delivered marks the watch stale: the driver restarts it, and the elector reads every half
//! retry period until the watch delivers news again. A crash of the holder is then taken over
//! within the lease duration plus a retry period of the kill.
//!
//! Step 3 is also what client-go's elector does, so ours and client-go's interoperate on one
//! Lease: we write the same fields in the same format (`holderIdentity`, `leaseDurationSeconds`,
//! `acquireTime`, `renewTime` with microseconds, `leaseTransitions`), and release it the way
//! client-go does (holder `""`, `leaseDurationSeconds: 1`). One difference costs margin: client-go
//! compares records with their times cut to whole seconds, so it may not notice a renew made
//! in the same second as the one before, and counts its wait from an observation up to a
//! second older than ours would be. Against client-go standbys the margin of step 3 is
//! therefore `lease_duration - renew_deadline - 1 s`; the default timings leave 4 s. For the
//! same reason every renew changes `renewTime` at whole-second resolution (see `renew_time`),
//! so that a renew in the same second as the one before, or after our wall clock stepped
//! back, is still a change to a client-go standby.
//!
//! Every new tenure increments `leaseTransitions`; its new value is the tenure's *term*, a
//! fencing token that grows with every tenure of any elector that follows this rule. A writer
//! that does not (a Lease recreated, or overwritten without `leaseTransitions`) cannot make it
//! go back for us either: a new tenure's term is one more than the highest term this process
//! has seen, not only than the one in the Lease it replaces.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use tokio::time::Instant;

/// Local requests to the elector, sent by the leader API and the signal handler to the
/// runner, which turns them into [`Elector::on_yield`] and [`Elector::on_shutdown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// The local controller stopped (`POST /leader/yield`).
    Yield,
    /// SIGTERM or SIGINT.
    Shutdown,
}

/// The election timings, validated by `crate::config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timings {
    /// How long others wait after the last change they saw before taking the Lease. Written as
    /// `leaseDurationSeconds` (rounded up to whole seconds).
    pub lease_duration: Duration,
    /// How long after the instant it sent its last successful renew the leader stays leader.
    pub renew_deadline: Duration,
    /// Interval between renews, and the base of the retry backoff.
    pub retry_period: Duration,
    /// After a yield, no acquire for this long (unless the Lease is still free by then).
    pub yield_backoff: Duration,
    /// Upper bound of the random delay standbys add before acquiring a Lease that became free,
    /// so that many standbys do not all write at the same instant.
    pub max_jitter: Duration,
}

impl Timings {
    /// `leaseDurationSeconds` we write: the lease duration rounded up to whole seconds, so that
    /// others never wait less than we intend.
    pub fn lease_duration_seconds(&self) -> i32 {
        let secs =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }
}

/// The fields of a Lease that electors read and write (client-go's `LeaderElectionRecord`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRecord {
    pub holder_identity: Option<String>,
    pub lease_duration_seconds: Option<i32>,
    pub acquire_time: Option<Timestamp>,
    pub renew_time: Option<Timestamp>,
    pub lease_transitions: Option<i32>,
}

impl LeaseRecord {
    /// Reads the record from any Lease, however incomplete: a missing spec is an empty record.
    pub fn of(lease: &Lease) -> Self {
        let Some(spec) = lease.spec.as_ref() else {
            return Self::default();
        };
        Self {
            holder_identity: spec.holder_identity.clone(),
            lease_duration_seconds: spec.lease_duration_seconds,
            acquire_time: spec.acquire_time.as_ref().map(|t| t.0),
            renew_time: spec.renew_time.as_ref().map(|t| t.0),
            lease_transitions: spec.lease_transitions,
        }
    }

    /// The holder, or `None` when the Lease is free (holder absent or `""`).
    pub fn holder(&self) -> Option<&str> {
        self.holder_identity.as_deref().filter(|h| !h.is_empty())
    }

    fn write_into(&self, spec: &mut LeaseSpec) {
        spec.holder_identity = self.holder_identity.clone();
        spec.lease_duration_seconds = self.lease_duration_seconds;
        spec.acquire_time = self.acquire_time.map(MicroTime);
        spec.renew_time = self.renew_time.map(MicroTime);
        spec.lease_transitions = self.lease_transitions;
    }
}

/// What we know about the Lease.
#[derive(Clone, Debug)]
enum Knowledge {
    /// Not read yet, or a write of ours failed in a way that leaves its effect unknown.
    Unknown,
    /// The API server said the Lease does not exist.
    Absent,
    Present(Box<Observed>),
}

#[derive(Clone, Debug)]
struct Observed {
    /// The whole object as last read, so that a write keeps labels, annotations and spec fields
    /// we do not manage, and carries its resourceVersion as the precondition.
    lease: Lease,
    record: LeaseRecord,
    /// Monotonic instant at which we first saw this version of the Lease (any write, by
    /// anybody, is a new version). Expiry is judged from here.
    changed_at: Instant,
    /// How long after `changed_at` this record expires for us (jitter aside): the holder's
    /// duration; for a free record, zero if it is a release, else the duration of the holder
    /// it was taken from (safety argument, step 5).
    wait: Duration,
    /// Random delay added to this record's expiry (see [`Timings::max_jitter`]).
    jitter: Duration,
}

/// The leader's current tenure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tenure {
    /// `leaseTransitions` written when this tenure began.
    pub term: i32,
    /// The tenure ends here: the instant before the last successful write, plus the renew
    /// deadline (safety argument, step 2).
    pub valid_until: Instant,
    /// Instant before the last successful write; the next renew is due a retry period later.
    pub last_write_sent: Instant,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Role {
    Following,
    Leading(Tenure),
}

/// Why a tenure ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReason {
    /// No renew succeeded within the renew deadline (API errors, timeouts, partition).
    RenewDeadline,
    /// Another identity holds the Lease (it was written over, or a renew found it changed).
    TakenOver,
    /// The Lease object was deleted.
    Deleted,
    /// The local controller yielded.
    Yielded,
    /// No local consumer read the leadership for `--consumer-timeout`.
    ConsumerGone,
    /// The sidecar is shutting down.
    ShuttingDown,
}

impl LossReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RenewDeadline => "renew deadline exceeded",
            Self::TakenOver => "lease taken over by another holder",
            Self::Deleted => "lease deleted",
            Self::Yielded => "controller yielded",
            Self::ConsumerGone => "no consumer",
            Self::ShuttingDown => "shutting down",
        }
    }
}

/// Something the driver should log, count or announce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A write of ours started a tenure.
    Acquired { term: i32 },
    /// Our tenure ended.
    Lost { reason: LossReason },
    /// We wrote the release record.
    Released,
    /// The holder recorded in the Lease changed (`None`: the Lease is free or absent).
    NewLeader { holder: Option<String> },
    /// A read showed a change the standby watch never delivered: restart the watch (the
    /// elector polls every retry period until it delivers again).
    WatchStale,
}

/// The three writes an elector makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    Acquire,
    Renew,
    Release,
}

impl WriteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acquire => "acquire",
            Self::Renew => "renew",
            Self::Release => "release",
        }
    }
}

/// A compare-and-swap write for the driver to send.
#[derive(Clone, Debug)]
pub struct Write {
    pub kind: WriteKind,
    /// The object to send; `metadata.resourceVersion` is the precondition (absent on create).
    pub lease: Lease,
    /// `true`: POST (the Lease was absent); `false`: PUT.
    pub create: bool,
}

/// What the driver should do next.
#[derive(Clone, Debug)]
pub enum Step {
    /// Read the Lease and report it with [`Elector::on_read`] / [`Elector::on_read_failed`].
    Read,
    /// Send this write and report the outcome with [`Elector::on_written`] and friends.
    Write(Box<Write>),
    /// Nothing to do until this instant (`None`: until an observation or a local event).
    Wait(Option<Instant>),
    /// Shutdown finished: the Lease is released or was not ours.
    Done,
}

/// Local facts the elector cannot see itself, supplied by the driver at each step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Local {
    /// Whether a local consumer is present (always `true` when `--consumer-timeout` is off).
    pub consumer_present: bool,
    /// When the consumer will count as gone if nothing else happens (`None`: not foreseeable,
    /// e.g. a watcher is connected).
    pub consumer_absent_at: Option<Instant>,
    /// The latest instant up to which a grant handed out to a local client runs.
    pub granted_until: Option<Instant>,
}

impl Local {
    /// A consumer is always present and nothing has been granted.
    pub fn unconstrained() -> Self {
        Self {
            consumer_present: true,
            consumer_absent_at: None,
            granted_until: None,
        }
    }
}

/// An acquire or renew whose outcome is unknown (the request timed out or the connection
/// broke). If we later read back exactly the record we sent, the write did commit, and the
/// tenure can start from the instant before it was sent.
#[derive(Clone, Debug)]
struct Unconfirmed {
    kind: WriteKind,
    sent: Instant,
    record: LeaseRecord,
    /// The record the write was based on: if the write would not have changed it, reading it
    /// back proves nothing.
    before: LeaseRecord,
}

/// The elector. See the module documentation for the safety argument.
#[derive(Debug)]
pub struct Elector {
    identity: String,
    namespace: String,
    name: String,
    timings: Timings,
    knowledge: Knowledge,
    role: Role,
    /// No API request before this instant (backoff after failures).
    retry_at: Option<Instant>,
    failures: u32,
    /// No acquire before this instant (yield backoff).
    acquire_not_before: Option<Instant>,
    /// Release the Lease once it is ours and `release_not_before` has passed.
    release_wanted: bool,
    release_not_before: Option<Instant>,
    shutting_down: bool,
    unconfirmed: Option<Unconfirmed>,
    changes: Vec<Change>,
    rng: u64,
    /// The highest `leaseTransitions` seen in any record (ours or observed).
    highest_term: i32,
    /// The lease duration of the last holder we observed that may still be acting (not us
    /// while leading, and not one that released). A deletion or a clear that we observe
    /// turns it into a grace period (safety argument, step 5).
    last_holder: Option<Duration>,
    /// No acquire before this instant: a holder may still act after its Lease was deleted.
    grace_until: Option<Instant>,
    /// A read showed a change the standby watch never delivered: poll every retry period
    /// until the watch delivers news again.
    watch_stale: bool,
    /// When the last read was answered; paces the standby's probe reads.
    last_read_at: Option<Instant>,
    /// What we knew before a failed write made it `Unknown`. A read that returns the very same
    /// version restores it, so that the version keeps the instant we first saw it: nobody
    /// wrote since, and re-counting the wait from the read would only delay a takeover (after an
    /// API outage, by a whole lease duration).
    forgotten: Option<Box<Observed>>,
    /// Whether we have ever seen the Lease exist. A Lease we saw is never created again at
    /// term 0, even if the highest term we saw was 0.
    seen_lease: bool,
    /// When we last learned that the Lease is absent (cleared when we see it exist).
    absent_seen_at: Option<Instant>,
}

impl Elector {
    /// `jitter_seed` drives the standby jitter; tests pass a fixed seed.
    pub fn new(
        identity: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
        timings: Timings,
        jitter_seed: u64,
    ) -> Self {
        Self {
            identity: identity.into(),
            namespace: namespace.into(),
            name: name.into(),
            timings,
            knowledge: Knowledge::Unknown,
            role: Role::Following,
            retry_at: None,
            failures: 0,
            acquire_not_before: None,
            release_wanted: false,
            release_not_before: None,
            shutting_down: false,
            unconfirmed: None,
            changes: Vec::new(),
            rng: jitter_seed | 1,
            highest_term: 0,
            last_holder: None,
            grace_until: None,
            watch_stale: false,
            last_read_at: None,
            forgotten: None,
            seen_lease: false,
            absent_seen_at: None,
        }
    }

    /// Whether the standby watch is considered stale (a read showed a change it never
    /// delivered); the elector then polls every retry period.
    pub fn watch_stale(&self) -> bool {
        self.watch_stale
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// The current tenure, if it has not ended by `now`.
    pub fn tenure(&self, now: Instant) -> Option<Tenure> {
        match self.role {
            Role::Leading(t) if now < t.valid_until => Some(t),
            _ => None,
        }
    }

    /// The Lease as last observed (`None`: unknown or absent).
    pub fn observed(&self) -> Option<&Lease> {
        match &self.knowledge {
            Knowledge::Present(o) => Some(&o.lease),
            _ => None,
        }
    }

    /// Whether the elector has read the Lease state at least once.
    pub fn has_observed(&self) -> bool {
        !matches!(self.knowledge, Knowledge::Unknown) || self.unconfirmed.is_some()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Changes since the last call, oldest first.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// Decides the next step. `wall` is the wall-clock time written into the Lease if the step
    /// is a write; it is never used for a decision.
    pub fn next_step(&mut self, now: Instant, wall: Timestamp, local: Local) -> Step {
        self.expire_tenure(now);
        if let Role::Leading(_) = self.role
            && !local.consumer_present
        {
            self.step_down(LossReason::ConsumerGone);
            self.want_release(local.granted_until);
        }

        let deadline = match self.role {
            Role::Leading(t) => Some(t.valid_until),
            Role::Following => None,
        };
        if let Some(retry_at) = self.retry_at {
            if now < retry_at {
                return Step::Wait(Some(earliest(retry_at, deadline)));
            }
            self.retry_at = None;
        }

        if let Role::Leading(tenure) = self.role {
            let due = tenure.last_write_sent + self.timings.retry_period;
            if now < due {
                let wake = earliest(due, local.consumer_absent_at);
                return Step::Wait(Some(earliest(wake, deadline)));
            }
            return match &self.knowledge {
                Knowledge::Present(o) => Step::Write(Box::new(self.renew(&o.lease, wall))),
                _ => Step::Read,
            };
        }

        if self.release_wanted {
            if let Some(at) = self.release_not_before.filter(|at| now < *at) {
                return Step::Wait(Some(at));
            }
            match &self.knowledge {
                Knowledge::Unknown => return Step::Read,
                Knowledge::Present(o) if o.record.holder() == Some(self.identity.as_str()) => {
                    return Step::Write(Box::new(self.release(&o.lease, wall)));
                }
                _ => self.release_wanted = false,
            }
        }
        if self.shutting_down {
            return Step::Done;
        }

        let Some(acquire_at) = self.takeover_at(now) else {
            return Step::Read;
        };
        if !local.consumer_present {
            return Step::Wait(None);
        }
        if matches!(self.knowledge, Knowledge::Absent)
            && self
                .absent_seen_at
                .is_some_and(|t| now.saturating_duration_since(t) > self.timings.retry_period * 2)
        {
            // Our knowledge of the absence is old (we were frozen, or our reads failed): look
            // again before a create, which has no resourceVersion to fail on.
            return Step::Read;
        }
        if now < acquire_at {
            if let Some(probe_at) = self.probe_at(now).filter(|p| *p < acquire_at) {
                if now >= probe_at {
                    return Step::Read;
                }
                return Step::Wait(Some(probe_at));
            }
            return Step::Wait(Some(acquire_at));
        }
        match &self.knowledge {
            Knowledge::Present(o) => Step::Write(Box::new(self.acquire(Some(&o.lease), wall))),
            _ => Step::Write(Box::new(self.acquire(None, wall))),
        }
    }

    /// When this elector, following, may try to acquire the Lease by what it knows at `now`
    /// (`None`: it must read the Lease first). Not before the record it saw has expired on our
    /// clock (safety argument, steps 3 and 5), a yield's backoff, or a deletion's grace.
    pub fn takeover_at(&self, now: Instant) -> Option<Instant> {
        let expires = match &self.knowledge {
            Knowledge::Unknown => return None,
            Knowledge::Absent => now,
            Knowledge::Present(o) => o.changed_at + o.wait + o.jitter,
        };
        Some(
            [self.acquire_not_before, self.grace_until]
                .into_iter()
                .flatten()
                .fold(expires, Instant::max),
        )
    }

    /// A read returned the Lease (`None`: 404).
    ///
    /// A standby learns of changes from its watch; a read that shows one the watch never
    /// delivered means the watch has gone quiet without breaking (a half-open connection, a
    /// stuck server). The elector then polls every retry period and asks the driver, through
    /// [`Change::WatchStale`], to restart the watch.
    pub fn on_read(&mut self, lease: Option<&Lease>, now: Instant) {
        self.succeeded();
        self.last_read_at = Some(now);
        if matches!(self.role, Role::Following)
            && let Knowledge::Present(o) = &self.knowledge
        {
            let missed = match lease {
                None => true,
                Some(l) => match (rv_number(&o.lease), rv_number(l)) {
                    (Some(known), Some(read)) => read > known,
                    _ => o.lease.metadata.resource_version != l.metadata.resource_version,
                },
            };
            if missed && !self.watch_stale {
                self.watch_stale = true;
                self.changes.push(Change::WatchStale);
            }
        }
        match lease {
            Some(lease) => self.observe(lease, now),
            None => self.observe_absent(now),
        }
    }

    /// A read failed; retry after a backoff. A standby's probe read (it knows the Lease, and
    /// reads only to check on its watch) is simply tried again on the probe's schedule: backing
    /// off would postpone the takeover that the probe is there to keep on time.
    pub fn on_read_failed(&mut self, now: Instant) {
        if matches!(self.role, Role::Following) && matches!(self.knowledge, Knowledge::Present(_)) {
            self.last_read_at = Some(now);
            return;
        }
        self.failed(now, now);
    }

    /// The API server accepted `write` (sent at `sent`) and returned `stored`.
    pub fn on_written(&mut self, write: &Write, stored: &Lease, sent: Instant, now: Instant) {
        self.succeeded();
        self.unconfirmed = None;
        match write.kind {
            WriteKind::Acquire | WriteKind::Renew => {
                let term = LeaseRecord::of(&write.lease).lease_transitions.unwrap_or(0);
                self.confirm(write.kind, sent, now, term);
            }
            WriteKind::Release => {
                self.release_wanted = false;
                self.release_not_before = None;
                self.changes.push(Change::Released);
            }
        }
        self.observe(stored, now);
    }

    /// The write's precondition failed (409): somebody wrote the Lease since we read it, or it
    /// was created by somebody else first. Read it again before deciding anything.
    pub fn on_conflict(&mut self, _write: &Write) {
        self.succeeded();
        self.forget();
    }

    /// Our knowledge may be out of date: read before deciding anything, but keep what we knew
    /// in case the read shows nothing changed.
    fn forget(&mut self) {
        if let Knowledge::Present(o) = std::mem::replace(&mut self.knowledge, Knowledge::Unknown) {
            self.forgotten = Some(o);
        }
    }

    /// The Lease was deleted under a renew or release (404 on PUT).
    pub fn on_gone(&mut self, _write: &Write, now: Instant) {
        self.succeeded();
        self.observe_absent(now);
    }

    /// The write failed without a definite answer (timeout, connection error, 5xx, 429) or was
    /// refused for another reason. For acquires and renews the effect is unknown, so the record
    /// is remembered and adopted if a later read shows it committed.
    pub fn on_write_failed(&mut self, write: &Write, sent: Instant, now: Instant) {
        if matches!(write.kind, WriteKind::Acquire | WriteKind::Renew) {
            let before = match &self.knowledge {
                Knowledge::Present(o) => o.record.clone(),
                _ => LeaseRecord::default(),
            };
            self.unconfirmed = Some(Unconfirmed {
                kind: write.kind,
                sent,
                record: LeaseRecord::of(&write.lease),
                before,
            });
        }
        if write.kind != WriteKind::Renew {
            // A renew keeps its knowledge: the next renew reuses the resourceVersion, and a
            // 409 then tells us the first one committed.
            self.forget();
        }
        self.failed(sent, now);
    }

    /// The list that (re)starts the watch returned the Lease. Unlike a watch event it does not
    /// show that the watch delivers (a restarted watch may be as quiet as the old one).
    pub fn on_listed(&mut self, lease: &Lease, now: Instant) {
        self.observe(lease, now);
    }

    /// A watch event delivered the Lease. Anything newer than what we knew shows that the
    /// watch delivers again, which ends polling.
    pub fn on_watched(&mut self, lease: &Lease, now: Instant) {
        if self.watch_stale
            && let Knowledge::Present(o) = &self.knowledge
            && let (Some(known), Some(new)) = (rv_number(&o.lease), rv_number(lease))
            && new > known
        {
            self.watch_stale = false;
        }
        self.observe(lease, now);
    }

    /// A watch (or the list that starts it) says the Lease does not exist, as of
    /// `resource_version`. Ignored when it is older than what we know, or, while leading, when
    /// that cannot be told: a renew finds out for sure.
    pub fn on_watched_absent(&mut self, resource_version: Option<&str>, now: Instant) {
        let rv = resource_version.and_then(|v| v.parse::<u64>().ok());
        let known = match &self.knowledge {
            Knowledge::Present(o) => rv_number(&o.lease),
            _ => None,
        };
        match (rv, known) {
            (Some(rv), Some(known)) if rv < known => {}
            (None, _) | (_, None) if matches!(self.role, Role::Leading(_)) => {}
            _ => self.observe_absent(now),
        }
    }

    /// The local controller says it has stopped: end the tenure, release at once, and stay
    /// away for the yield backoff.
    pub fn on_yield(&mut self, now: Instant) {
        self.acquire_not_before = Some(now + self.timings.yield_backoff);
        if matches!(self.role, Role::Leading(_)) {
            self.step_down(LossReason::Yielded);
        }
        self.release_wanted = true;
        self.release_not_before = None;
    }

    /// SIGTERM: end the tenure, release once every grant has run out (or the controller
    /// yields), and then finish.
    pub fn on_shutdown(&mut self, granted_until: Option<Instant>) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        if matches!(self.role, Role::Leading(_)) {
            self.step_down(LossReason::ShuttingDown);
        }
        self.want_release(granted_until);
    }

    fn want_release(&mut self, granted_until: Option<Instant>) {
        self.release_wanted = true;
        self.release_not_before = granted_until;
    }

    fn expire_tenure(&mut self, now: Instant) {
        if let Role::Leading(t) = self.role
            && now >= t.valid_until
        {
            self.step_down(LossReason::RenewDeadline);
        }
    }

    fn step_down(&mut self, reason: LossReason) {
        if matches!(self.role, Role::Leading(_)) {
            self.role = Role::Following;
            self.changes.push(Change::Lost { reason });
            // From here on our own record proves nothing about who holds the Lease: we may miss
            // a takeover. Should it be deleted or cleared, wait at least our lease duration.
            let ours = self.timings.lease_duration;
            self.last_holder = Some(self.last_holder.map_or(ours, |d| d.max(ours)));
        }
    }

    /// Starts or extends a tenure from a write sent at `sent` that committed.
    fn confirm(&mut self, kind: WriteKind, sent: Instant, now: Instant, term: i32) {
        let valid_until = sent + self.timings.renew_deadline;
        if now >= valid_until {
            // The write took longer than the renew deadline: too late to lead on it. The Lease
            // now names us and expires for everybody, us included, by the usual rule.
            self.step_down(LossReason::RenewDeadline);
            return;
        }
        match (&mut self.role, kind) {
            (Role::Leading(t), WriteKind::Renew) => {
                t.valid_until = valid_until;
                t.last_write_sent = sent;
            }
            (Role::Following, WriteKind::Acquire) => {
                self.role = Role::Leading(Tenure {
                    term,
                    valid_until,
                    last_write_sent: sent,
                });
                self.changes.push(Change::Acquired { term });
            }
            // A renew that committed after the tenure ended, or an acquire while leading: not a
            // basis for leadership; the record expires by the usual rule.
            _ => {}
        }
    }

    /// The Lease does not exist (any more). If a holder we observed may still be acting, no
    /// acquire for its lease duration from now (safety argument, step 5); repeated reports of
    /// the same absence do not extend that. Only a tenure of ours still valid now shows that
    /// nobody else held the Lease since our last write; a lapsed one (we were frozen or cut off)
    /// does not, so then we wait our own lease duration.
    fn observe_absent(&mut self, now: Instant) {
        let holding = self.tenure(now).is_some();
        let was_leading = matches!(self.role, Role::Leading(_));
        if was_leading {
            self.step_down(LossReason::Deleted);
        }
        // A create has no resourceVersion to fail on: knowing the Lease absent is safe only if
        // we kept knowing it. After a gap (we were frozen, or our requests failed) it may have
        // been created, held and deleted again behind our back, by a holder that may still act.
        let gap = self
            .absent_seen_at
            .is_some_and(|t| now.saturating_duration_since(t) > self.timings.retry_period * 2);
        self.absent_seen_at = Some(now);
        let wait = match self.last_holder.take() {
            _ if holding => None,
            Some(d) => Some(d),
            None if was_leading || gap => Some(self.timings.lease_duration),
            None => None,
        };
        if let Some(wait) = wait {
            let until = now + wait;
            self.grace_until = Some(self.grace_until.map_or(until, |g| g.max(until)));
        }
        if let Knowledge::Present(o) = &self.knowledge
            && o.record.holder().is_some()
        {
            self.changes.push(Change::NewLeader { holder: None });
        }
        self.knowledge = Knowledge::Absent;
        self.forgotten = None;
    }

    fn observe(&mut self, lease: &Lease, now: Instant) {
        let record = LeaseRecord::of(lease);
        self.absent_seen_at = None;
        self.highest_term = self.highest_term.max(record.lease_transitions.unwrap_or(0));
        self.seen_lease = true;
        // Only a tenure still valid now proves that nobody took the Lease since our last write:
        // a record we last saw as ours proves nothing once we may have missed writes since.
        let was_ours = self.tenure(now).is_some();
        if let Some(f) = self.forgotten.take()
            && matches!(self.knowledge, Knowledge::Unknown)
            && f.record == record
            && f.lease.metadata.resource_version == lease.metadata.resource_version
        {
            self.knowledge = Knowledge::Present(f);
        }
        let previous = match &self.knowledge {
            Knowledge::Present(o) => {
                // Watch events may arrive after a read that returned something newer. Where
                // resourceVersions are integers (etcd, the in-memory server) skip older ones.
                // This only saves requests: acting on stale knowledge is safe (argument, step 4).
                match (rv_number(&o.lease), rv_number(lease)) {
                    (Some(seen), Some(new)) if new < seen => return,
                    // Not comparable: while leading, only our own record is news; a renew
                    // finds out for sure whether somebody else wrote.
                    (None, _) | (_, None)
                        if matches!(self.role, Role::Leading(_))
                            && record.holder() != Some(self.identity.as_str()) =>
                    {
                        return;
                    }
                    _ => {}
                }
                // Any write counts as a change, not only a different record: a holder whose wall
                // clock stands still writes the same renewTime, and is still alive.
                let same = o.record == record
                    && o.lease.metadata.resource_version == lease.metadata.resource_version;
                Some((
                    same,
                    o.record.holder().map(str::to_owned),
                    o.changed_at,
                    o.jitter,
                    o.wait,
                ))
            }
            _ => None,
        };
        let (changed_at, jitter, wait) = match &previous {
            Some((true, _, changed_at, jitter, wait)) => (*changed_at, *jitter, *wait),
            _ => (now, self.next_jitter(), self.expiry_wait(&record, was_ours)),
        };
        let new_holder = record.holder().map(str::to_owned);
        let holder_changed = match &previous {
            Some((_, old, _, _, _)) => *old != new_holder,
            None => new_holder.is_some(),
        };
        if holder_changed {
            self.changes.push(Change::NewLeader { holder: new_holder });
        }

        // A write whose answer we never got, read back unchanged: it committed.
        if let Some(u) = self.unconfirmed.take()
            && u.record == record
            && u.record != u.before
        {
            self.confirm(u.kind, u.sent, now, record.lease_transitions.unwrap_or(0));
        }

        if matches!(self.role, Role::Leading(_)) && record.holder() != Some(self.identity.as_str())
        {
            self.step_down(LossReason::TakenOver);
        }

        self.last_holder = match record.holder() {
            Some(h) if h == self.identity && self.tenure(now).is_some() => None,
            Some(_) => Some(self.holder_duration(&record)),
            // Free: a release ends the holder's claim; a clear was turned into `wait` above.
            None if wait.is_zero() => None,
            None => self.last_holder,
        };
        self.knowledge = Knowledge::Present(Box::new(Observed {
            lease: lease.clone(),
            record,
            changed_at,
            wait,
            jitter,
        }));
    }

    /// How long after we first see `record` it expires for us (jitter aside). A holder's
    /// record: its lease duration. A free record written as a release (client-go's format:
    /// holder `""`, `leaseDurationSeconds: 1`): at once, since only a holder that has stopped
    /// writes it. A free record in any other form (an operator cleared the holder, or wiped
    /// the spec): the holder may not know and still act, so its lease duration (the record's,
    /// the last holder's we saw, or ours, whichever is longest). Except for the holder itself
    /// (`was_ours`): only its own controller can still act, and a new term revokes that one's
    /// grants, so it may take the Lease back at once.
    fn expiry_wait(&self, record: &LeaseRecord, was_ours: bool) -> Duration {
        if record.holder().is_some() {
            return self.holder_duration(record);
        }
        if record.lease_duration_seconds == Some(1) || was_ours {
            return Duration::ZERO;
        }
        self.holder_duration(record)
            .max(self.last_holder.unwrap_or_default())
    }

    /// When a standby should read the Lease itself, although its watch should tell it of every
    /// change: every half retry period while the watch is stale, and otherwise once a holder has
    /// been silent for one and a half retry periods (it renews every retry period), to find out
    /// whether the holder stopped or the watch did. Either way a standby learns of the holder's
    /// last renew at most half a retry period late, so that a crash is taken over within the
    /// lease duration plus a retry period, jitter and request latency included. `None`: no
    /// reason to read.
    ///
    /// While a deleted Lease is waited out, it reads every retry period too, so that it keeps
    /// knowing the Lease absent without a gap (see `observe_absent`).
    fn probe_at(&self, now: Instant) -> Option<Instant> {
        if let (Knowledge::Absent, Some(seen)) = (&self.knowledge, self.absent_seen_at) {
            return Some(seen + self.timings.retry_period);
        }
        let Knowledge::Present(o) = &self.knowledge else {
            return None;
        };
        o.record.holder()?;
        let half = self.timings.retry_period / 2;
        let after_read = self.last_read_at.map_or(now, |t| t + half);
        if self.watch_stale {
            return Some(after_read);
        }
        Some(after_read.max(o.changed_at + 3 * half))
    }

    /// The holder's lease duration; when missing or not positive (a malformed record), ours.
    fn holder_duration(&self, record: &LeaseRecord) -> Duration {
        record
            .lease_duration_seconds
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(u64::from(s.unsigned_abs())))
            .unwrap_or(self.timings.lease_duration)
    }

    fn acquire(&self, current: Option<&Lease>, wall: Timestamp) -> Write {
        let wall = micros(wall);
        let (mut lease, create, transitions) = match current {
            Some(l) => {
                let old = LeaseRecord::of(l).lease_transitions.unwrap_or(0);
                let term = old.max(self.highest_term).saturating_add(1).max(1);
                (l.clone(), false, term)
            }
            // A Lease that never existed starts at 0, as client-go's does; one that was deleted
            // after we saw it continues from what we saw.
            None if self.seen_lease => {
                (self.new_lease(), true, self.highest_term.saturating_add(1))
            }
            None => (self.new_lease(), true, 0),
        };
        let record = LeaseRecord {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timings.lease_duration_seconds()),
            acquire_time: Some(wall),
            renew_time: Some(wall),
            lease_transitions: Some(transitions),
        };
        record.write_into(lease.spec.get_or_insert_with(Default::default));
        Write {
            kind: WriteKind::Acquire,
            lease,
            create,
        }
    }

    fn renew(&self, current: &Lease, wall: Timestamp) -> Write {
        let mut lease = current.clone();
        let mut record = LeaseRecord::of(current);
        record.holder_identity = Some(self.identity.clone());
        record.lease_duration_seconds = Some(self.timings.lease_duration_seconds());
        record.renew_time = Some(renew_time(micros(wall), record.renew_time));
        record.write_into(lease.spec.get_or_insert_with(Default::default));
        Write {
            kind: WriteKind::Renew,
            lease,
            create: false,
        }
    }

    fn release(&self, current: &Lease, wall: Timestamp) -> Write {
        let wall = micros(wall);
        let mut lease = current.clone();
        let record = LeaseRecord {
            holder_identity: Some(String::new()),
            lease_duration_seconds: Some(1),
            acquire_time: Some(wall),
            renew_time: Some(wall),
            lease_transitions: LeaseRecord::of(current).lease_transitions,
        };
        record.write_into(lease.spec.get_or_insert_with(Default::default));
        Write {
            kind: WriteKind::Release,
            lease,
            create: false,
        }
    }

    fn new_lease(&self) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec::default()),
        }
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }

    /// Backoff: a retry period after the failed request was sent, doubling up to four retry
    /// periods for consecutive failures while following. A leader retries every retry period
    /// so that it gets as many attempts as possible before its renew deadline.
    fn failed(&mut self, sent: Instant, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        let factor = match self.role {
            Role::Leading(_) => 1,
            Role::Following => 1u32 << self.failures.saturating_sub(1).min(2),
        };
        let jitter = self.next_jitter();
        self.retry_at = Some((sent + self.timings.retry_period * factor + jitter).max(now));
    }

    /// xorshift64: deterministic for a given seed, which keeps the state machine pure.
    fn next_jitter(&mut self) -> Duration {
        let max = self.timings.max_jitter.as_micros() as u64;
        if max == 0 {
            return Duration::ZERO;
        }
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        Duration::from_micros(x % (max + 1))
    }
}

fn earliest(a: Instant, b: Option<Instant>) -> Instant {
    b.map_or(a, |b| a.min(b))
}

/// The `renewTime` of a renew at wall time `wall` replacing `previous`. client-go compares
/// records with their times cut to whole seconds, so a renew that writes the same second again
/// (a sub-second retry period, or our wall clock stepped back) is no change to a client-go
/// standby, which would then count its wait from an older observation and could take over
/// while we lead. Such a renew writes the next second instead: every renew changes
/// `renewTime` at whole-second resolution, and the value stays within a second of our clock.
fn renew_time(wall: Timestamp, previous: Option<Timestamp>) -> Timestamp {
    match previous {
        Some(p) if wall.as_second() == p.as_second() => wall
            .checked_add(jiff::SignedDuration::from_secs(1))
            .unwrap_or(wall),
        _ => wall,
    }
}

fn micros(t: Timestamp) -> Timestamp {
    Timestamp::from_microsecond(t.as_microsecond()).unwrap_or(t)
}

fn rv_number(lease: &Lease) -> Option<u64> {
    lease.metadata.resource_version.as_deref()?.parse().ok()
}

#[cfg(test)]
#[path = "elector_tests.rs"]
mod tests;
