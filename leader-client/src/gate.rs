//! The leadership gate: whether this controller may act right now.
//!
//! # Safety argument
//!
//! The invariant is that this controller acts (starts a reconcile, sends a status write) only
//! inside a *grant* from its sidecar, and a grant never extends past the sidecar's own tenure.
//! Everything else (the sidecar's Lease handling, its margin of `lease duration − renew
//! deadline`) is argued in the sidecar's `elector.rs`; this module keeps our end of the contract
//! in `docs/leader-api.md`:
//!
//! 1. **Only a `GET /leader` answer grants.** An answer `is_leader: true, valid_for_ms: v` to a
//!    request whose send instant was `s` on our monotonic clock grants `[s, s + v)`. The sidecar
//!    computed `v` when it produced the answer, which was after `s`, and never past its own
//!    tenure; so `s + v` is no later than the sidecar's own deadline. Counting from `s` (taken
//!    *before* the request) rather than from the answer's arrival makes every delay in between
//!    shorten our grant instead of lengthening it.
//! 2. **Stream events never grant.** A `/leader/watch` event is read at an unknown delay after
//!    the sidecar wrote it (our process may have been stopped, buffers hold old events), so an
//!    `is_leader: true` event only asks for a confirming `GET`. Events can only take leadership
//!    away: `is_leader: false`, a new term, or the stream closing revoke at once.
//! 3. **The last answer wins, and late answers lose.** Every revocation starts a new epoch; an
//!    answer to a request sent in an earlier epoch is discarded, because the sidecar may have
//!    produced it before the event that revoked. At most one request is in flight, so answers
//!    are applied in the order their requests were sent.
//! 4. **Unreachable means not leader.** A failed or timed-out request revokes.
//! 5. **Work checks the gate at the last moment.** [`LeadershipGate::current`] compares the grant
//!    with the monotonic clock each time it is asked; workers ask just before every write, and
//!    the write is polled only while the grant lasts and abandoned when it ends
//!    (in `newresource-controller`, `reconcile.rs`); [`LeadershipGate::run_while_granted`] cancels
//!    all work when the grant ends.
//!
//! # Liveness: a leader never sits idle while its sidecar holds the Lease
//!
//! 6. **A grant that ran out is asked for again at once.** The sidecar's stream speaks only of
//!    changes (and repeats its state every half grant); a grant that ran out without a
//!    revocation changed nothing at the sidecar. That happens whenever this process is frozen
//!    past its grant (SIGSTOP, a long pause, CPU throttling: its monotonic clock keeps running)
//!    or a renewal's answer arrives after the grant it carries has ended. So
//!    [`GateState::poll_due`] sends a `GET /leader` at once whenever the stored grant has run
//!    out, and stream events that say "leader, same term" never cancel that. Without it a thawed
//!    controller would wait for a change that never comes while its sidecar keeps renewing:
//!    an outage that no probe shows.
//!
//! What remains is a request the HTTP client had already handed to its connection when the
//! process froze, which may reach the API server after the grant (no client can prevent that
//! without fencing on the server). Status writes carry the object's `resourceVersion`, so such a
//! late write fails with 409 if another controller has written the object since; and the
//! sidecar's margin (5 s by default) covers ordinary delivery delays.
//!
//! [`GateState`] is the pure state machine (no I/O; every input carries its instant, so the tests
//! drive it with tokio's paused clock); [`follow`](crate::follow()) feeds it from the sidecar and publishes its
//! view through [`GatePublisher`] to the [`LeadershipGate`] handles the workers hold.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::contract::LeaderStatus;
use tokio::time::Instant;

/// Leadership granted by the sidecar: act until `until` (exclusive) on this process's monotonic
/// clock, in tenure `term`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The sidecar's term (`None` when leader election is off).
    pub term: Option<i32>,
    /// When the request that produced the grant was sent.
    pub sent_at: Instant,
    pub until: Instant,
}

impl Grant {
    fn valid_for(&self) -> Duration {
        self.until.saturating_duration_since(self.sent_at)
    }
}

/// Identifies one `GET /leader`: when it was sent and in which epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    epoch: u64,
    sent_at: Instant,
}

/// The pure state machine behind the gate (see the module's safety argument).
#[derive(Debug)]
pub struct GateState {
    grant: Option<Grant>,
    /// Bumped by every revocation; answers to requests from older epochs are discarded.
    epoch: u64,
    /// An event has been read from the currently open stream.
    stream_up: bool,
    /// The last request or event reached the sidecar.
    reachable: bool,
    /// A stream event said we lead; a `GET` must confirm it.
    confirm: bool,
    in_flight: bool,
    last_sent: Option<Instant>,
    poll_interval: Duration,
}

impl GateState {
    pub fn new(poll_interval: Duration) -> Self {
        Self {
            grant: None,
            epoch: 0,
            stream_up: false,
            reachable: false,
            confirm: false,
            in_flight: false,
            last_sent: None,
            poll_interval,
        }
    }

    /// The grant in force at `now`, if any.
    pub fn grant(&self, now: Instant) -> Option<Grant> {
        self.grant.filter(|g| now < g.until)
    }

    /// Whether the sidecar answered the last request or sent the last event.
    pub fn reachable(&self) -> bool {
        self.reachable
    }

    pub fn stream_up(&self) -> bool {
        self.stream_up
    }

    /// When the next `GET /leader` is due: at once to confirm a stream event, or when the last
    /// grant ran out without a fresh one; half-way through the current grant to renew it; every
    /// poll interval while the stream is down or the sidecar unreachable. `None` while a
    /// request is in flight, or while a healthy stream covers a standby.
    ///
    /// A grant that ran out was never revoked: as far as the gate knows the sidecar still
    /// leads, and only a `GET` can tell. Without asking, a healthy stream has nothing to say
    /// (the sidecar sends events on changes, and nothing changed while this process was frozen
    /// past its grant), so the controller would sit idle while its sidecar keeps the Lease.
    pub fn poll_due(&self, now: Instant) -> Option<Instant> {
        if self.in_flight {
            return None;
        }
        if self.confirm || self.grant_ran_out(now) {
            return Some(now);
        }
        let renew = self.grant(now).map(|g| g.sent_at + g.valid_for() / 2);
        let fallback = (!self.stream_up || !self.reachable)
            .then(|| self.last_sent.map_or(now, |t| t + self.poll_interval));
        match (renew, fallback) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Records that a `GET /leader` is about to be sent; `now` must be read before sending.
    pub fn poll_sent(&mut self, now: Instant) -> Ticket {
        self.in_flight = true;
        self.confirm = false;
        self.last_sent = Some(now);
        Ticket {
            epoch: self.epoch,
            sent_at: now,
        }
    }

    /// Applies the answer to the request `ticket`.
    pub fn on_answer(&mut self, ticket: Ticket, status: &LeaderStatus) {
        self.in_flight = false;
        self.reachable = true;
        if ticket.epoch != self.epoch {
            // Sent before a revocation: the sidecar may have answered before revoking.
            return;
        }
        if status.is_leader && status.valid_for_ms > 0 {
            self.grant = Some(Grant {
                term: status.term,
                sent_at: ticket.sent_at,
                until: ticket.sent_at + Duration::from_millis(status.valid_for_ms),
            });
        } else {
            self.revoke();
        }
    }

    /// The request `ticket` failed (refused, timed out, non-200, unparsable).
    pub fn on_poll_failed(&mut self, _ticket: Ticket) {
        self.in_flight = false;
        self.reachable = false;
        self.revoke();
    }

    /// An event arrived on the stream.
    pub fn on_stream_event(&mut self, status: &LeaderStatus) {
        self.stream_up = true;
        self.reachable = true;
        if !status.is_leader {
            self.revoke();
            return;
        }
        match self.grant {
            Some(g) if g.term != status.term => {
                // A new tenure we have not confirmed: the old grant is not evidence for it.
                self.revoke();
                self.confirm = true;
            }
            // In force: renewed on the grant's own schedule. Run out (this process was
            // frozen, or the last answer came late): `poll_due` asks at once.
            Some(_) => {}
            None => self.confirm = true,
        }
    }

    /// The stored grant has run out and nothing has replaced or revoked it yet.
    fn grant_ran_out(&self, now: Instant) -> bool {
        self.grant.is_some_and(|g| now >= g.until)
    }

    /// The stream closed or failed.
    pub fn on_stream_lost(&mut self) {
        self.stream_up = false;
        self.revoke();
    }

    fn revoke(&mut self) {
        self.grant = None;
        self.epoch += 1;
    }

    /// What the gate publishes.
    pub fn view(&self) -> GateView {
        GateView {
            grant: self.grant,
            reachable: self.reachable,
        }
    }
}

/// What workers see: the latest grant (possibly expired by now) and whether the sidecar is
/// reachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GateView {
    pub grant: Option<Grant>,
    pub reachable: bool,
}

/// Why an active window ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The sidecar said we are not leader, the stream closed, or it became unreachable.
    Revoked,
    /// The grant ran out without a fresh one.
    Expired,
    /// The sidecar leads in a different term than the window's.
    NewTerm,
}

impl Closed {
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::Revoked => "revoked",
            Closed::Expired => "expired",
            Closed::NewTerm => "new term",
        }
    }
}

/// The write side of the gate, owned by the follower.
pub struct GatePublisher {
    tx: watch::Sender<GateView>,
    pulse: Arc<Mutex<Instant>>,
}

impl GatePublisher {
    /// Records that the follower loop went round at `now`, for [`LeadershipGate::follower_idle`].
    pub fn beat(&self, now: Instant) {
        *self.pulse.lock().unwrap_or_else(PoisonError::into_inner) = now;
    }

    pub fn publish(&self, view: GateView) {
        self.tx.send_if_modified(|v| {
            let changed = *v != view;
            *v = view;
            changed
        });
    }
}

/// The read side: cheap to clone; every worker holds one.
#[derive(Clone, Debug)]
pub struct LeadershipGate {
    rx: watch::Receiver<GateView>,
    /// When the follower last went round; `None` for a gate without a follower.
    pulse: Option<Arc<Mutex<Instant>>>,
}

/// How long an always-open gate (`--leader-elect=false`) grants: effectively forever.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl LeadershipGate {
    /// A closed gate and the publisher that opens it.
    pub fn new() -> (GatePublisher, LeadershipGate) {
        let (tx, rx) = watch::channel(GateView::default());
        let pulse = Arc::new(Mutex::new(Instant::now()));
        (
            GatePublisher {
                tx,
                pulse: pulse.clone(),
            },
            LeadershipGate {
                rx,
                pulse: Some(pulse),
            },
        )
    }

    /// A gate that is always open, for `--leader-elect=false` (one replica, development).
    pub fn always_open() -> LeadershipGate {
        let now = Instant::now();
        let (tx, rx) = watch::channel(GateView {
            grant: Some(Grant {
                term: None,
                sent_at: now,
                until: now + FOREVER,
            }),
            reachable: true,
        });
        // The receiver keeps the last value after the sender is gone.
        drop(tx);
        LeadershipGate { rx, pulse: None }
    }

    /// The grant in force now, checked against the monotonic clock at the moment of asking.
    pub fn current(&self) -> Option<Grant> {
        let now = Instant::now();
        self.rx.borrow().grant.filter(|g| now < g.until)
    }

    /// How long ago the follower loop last went round (it does at least every second), for a
    /// liveness probe; `None` for a gate without a follower ([`LeadershipGate::always_open`]).
    pub fn follower_idle(&self, now: Instant) -> Option<Duration> {
        let pulse = self.pulse.as_ref()?;
        let last = *pulse.lock().unwrap_or_else(PoisonError::into_inner);
        Some(now.saturating_duration_since(last))
    }

    /// Whether the sidecar answered the follower's last request or event.
    pub fn reachable(&self) -> bool {
        self.rx.borrow().reachable
    }

    /// Waits until a grant is in force and returns it.
    pub async fn opened(&mut self) -> Grant {
        loop {
            if let Some(g) = self.current() {
                return g;
            }
            if self.rx.changed().await.is_err() {
                // The follower is gone: the gate can never open again.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Waits until the window of `term` ends: the grant is revoked, runs out, or belongs to
    /// another term.
    pub async fn closed(&mut self, term: Option<i32>) -> Closed {
        loop {
            let view = *self.rx.borrow_and_update();
            let Some(grant) = view.grant else {
                return Closed::Revoked;
            };
            if grant.term != term {
                return Closed::NewTerm;
            }
            if Instant::now() >= grant.until {
                return Closed::Expired;
            }
            tokio::select! {
                changed = self.rx.changed() => {
                    if changed.is_err() {
                        // No follower any more: nobody can renew; wait out the grant.
                        tokio::time::sleep_until(grant.until).await;
                        return Closed::Expired;
                    }
                }
                () = tokio::time::sleep_until(grant.until) => return Closed::Expired,
            }
        }
    }
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
