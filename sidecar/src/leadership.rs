//! What the elector shares with the HTTP side: the current tenure, the grants handed out under
//! it, and the local consumer's activity.
//!
//! # Invariants enforced here
//!
//! - **A grant never outlives the tenure.** `valid_for = min(valid_until - now, max_grant)`,
//!   computed from the monotonic clock at the moment the answer is produced, so a wedged elector
//!   loop cannot keep an expired tenure alive: once `valid_until` passes, answers say
//!   `is_leader: false` by themselves.
//! - **Revocation is atomic with issuance.** Grants are issued and revoked under one lock, and
//!   revocation returns the latest instant ever granted. Whoever revokes (yield, SIGTERM, losing
//!   the consumer) knows that no grant issued before or after runs past that instant, and waits
//!   for it before releasing the Lease.
//! - **Losing the consumer revokes in the same breath as it is noticed.** [`Leadership::local`]
//!   stops granting under the lock in which it finds the consumer gone, and reports the latest
//!   grant from that same moment. Had it only reported, a `GET /leader` between the report and
//!   the elector's step-down would get a grant that runs past the release.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::elector::{Elector, LeaseRecord, Local, Tenure};

/// Non-grant facts about the Lease, published by the elector driver.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseView {
    /// Whether the elector has read the Lease at least once (readiness).
    pub observed: bool,
    pub holder: Option<String>,
    /// `leaseTransitions` as last observed.
    pub observed_term: Option<i32>,
    pub observed_at: Option<String>,
    pub renewed_at: Option<String>,
    /// Bumped on every change of tenure or revocation, so that watchers re-send at once.
    pub epoch: u64,
}

/// A grant handed to a local client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub term: i32,
    pub valid_for: Duration,
}

#[derive(Debug)]
struct GrantState {
    tenure: Option<Tenure>,
    /// The term of the last tenure published (kept while none is).
    last_term: Option<i32>,
    /// No grants under the current tenure (yield, consumer gone); cleared by a new tenure.
    revoked: bool,
    /// No grants ever again (SIGTERM).
    shutting_down: bool,
    granted_until: Option<Instant>,
    last_read: Option<Instant>,
    watchers: usize,
}

/// Shared leadership state. See the module documentation for its invariants.
#[derive(Debug)]
pub struct Leadership {
    identity: String,
    lease: String,
    max_grant: Duration,
    consumer_timeout: Option<Duration>,
    state: Mutex<GrantState>,
    view: watch::Sender<LeaseView>,
    consumer_arrived: Notify,
}

impl Leadership {
    /// `consumer_timeout`: `None` when `--consumer-timeout` is 0 (a consumer is always assumed).
    pub fn new(
        identity: impl Into<String>,
        lease: impl Into<String>,
        max_grant: Duration,
        consumer_timeout: Option<Duration>,
    ) -> Self {
        Self {
            identity: identity.into(),
            lease: lease.into(),
            max_grant,
            consumer_timeout,
            state: Mutex::new(GrantState {
                tenure: None,
                last_term: None,
                revoked: false,
                shutting_down: false,
                granted_until: None,
                last_read: None,
                watchers: 0,
            }),
            view: watch::Sender::new(LeaseView::default()),
            consumer_arrived: Notify::new(),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn lease(&self) -> &str {
        &self.lease
    }

    pub fn max_grant(&self) -> Duration {
        self.max_grant
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GrantState> {
        // The lock only guards plain data with no invariant a panic could break half-way.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Issues a grant if we are leader at `now`, records it, and counts the call as consumer
    /// activity (followers' consumers are consumers too).
    pub fn grant(&self, now: Instant) -> Option<Grant> {
        let mut s = self.lock();
        let arrived =
            self.consumer_timeout.is_some() && !Self::present(&s, self.consumer_timeout, now);
        s.last_read = Some(now);
        let grant = Self::grantable(&s, now).map(|tenure| Grant {
            term: tenure.term,
            valid_for: (tenure.valid_until - now).min(self.max_grant),
        });
        if let Some(g) = grant {
            let until = now + g.valid_for;
            s.granted_until = Some(s.granted_until.map_or(until, |u| u.max(until)));
        }
        drop(s);
        if arrived {
            self.consumer_arrived.notify_one();
        }
        grant
    }

    /// Whether a grant would be issued at `now`, without issuing one (metrics, logs).
    pub fn is_granting(&self, now: Instant) -> bool {
        Self::grantable(&self.lock(), now).is_some()
    }

    /// When granting stops by the clock alone (the tenure's end), if we grant at `now`.
    pub fn grant_ends(&self, now: Instant) -> Option<Instant> {
        Self::grantable(&self.lock(), now).map(|t| t.valid_until)
    }

    fn grantable(s: &GrantState, now: Instant) -> Option<Tenure> {
        s.tenure
            .filter(|t| !s.revoked && !s.shutting_down && now < t.valid_until)
    }

    /// Stops granting under the current tenure (`shutdown`: for good) and returns the latest
    /// instant up to which a grant was handed out, if it is still in the future.
    pub fn revoke(&self, shutdown: bool, now: Instant) -> Option<Instant> {
        let mut s = self.lock();
        s.revoked = true;
        s.shutting_down |= shutdown;
        let until = s.granted_until.filter(|u| *u > now);
        drop(s);
        self.view.send_modify(|v| v.epoch += 1);
        until
    }

    /// Latest instant up to which a grant was handed out, if still in the future.
    pub fn granted_until(&self, now: Instant) -> Option<Instant> {
        self.lock().granted_until.filter(|u| *u > now)
    }

    /// The elector driver publishes its tenure after every step. A new term lifts a revocation.
    /// Watchers are woken by a new term, and by a tenure that had run out at `now` and is valid
    /// again (a renew whose answer came after the tenure's end, sent while it ran): the stream
    /// has told them "not leader" meanwhile, and would otherwise say nothing until its next
    /// keep-alive, leaving the controller idle while we lead.
    pub fn set_tenure(&self, tenure: Option<Tenure>, now: Instant) {
        let mut s = self.lock();
        let changed = s.tenure.map(|t| t.term) != tenure.map(|t| t.term);
        let revived = s.tenure.is_some_and(|t| now >= t.valid_until)
            && tenure.is_some_and(|t| now < t.valid_until);
        // Only a new term lifts a revocation: the same term coming back after a gap in which
        // nothing was published (a lapse and a late renew) is the revoked tenure still.
        if let Some(t) = tenure
            && s.last_term != Some(t.term)
        {
            s.revoked = false;
            s.last_term = Some(t.term);
        }
        s.tenure = tenure;
        drop(s);
        if changed || revived {
            self.view.send_modify(|v| v.epoch += 1);
        }
    }

    /// Publishes what the elector knows after a step: its tenure to the grant book
    /// ([`Self::set_tenure`]) and the Lease facts to watchers ([`Self::set_view`]). The one
    /// place that maps the elector's state to what `/leader` says, for the runner and the
    /// simulator alike.
    pub fn publish(&self, elector: &Elector, now: Instant) {
        self.set_tenure(elector.tenure(now), now);
        let observed = elector.observed().map(LeaseRecord::of);
        let has_observed = elector.has_observed();
        self.set_view(|v| {
            v.observed = has_observed;
            v.holder = observed
                .as_ref()
                .and_then(|r| r.holder().map(str::to_owned));
            v.observed_term = observed.as_ref().and_then(|r| r.lease_transitions);
            v.renewed_at = observed
                .as_ref()
                .and_then(|r| r.renew_time)
                .map(|t| t.to_string());
        });
    }

    /// Publishes the Lease facts. Watchers are woken when the holder, the term or readiness
    /// changed; timestamps alone ride along with the next event.
    pub fn set_view(&self, update: impl FnOnce(&mut LeaseView)) {
        self.view.send_if_modified(|v| {
            let before = (v.observed, v.holder.clone(), v.observed_term);
            update(v);
            (v.observed, v.holder.clone(), v.observed_term) != before
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<LeaseView> {
        self.view.subscribe()
    }

    pub fn view(&self) -> LeaseView {
        self.view.borrow().clone()
    }

    /// The current view without copying it; hold it only briefly (it blocks publishing).
    pub fn view_ref(&self) -> watch::Ref<'_, LeaseView> {
        self.view.borrow()
    }

    /// Registers a `/leader/watch` stream; the consumer counts as present while it is held.
    pub fn watcher(self: &std::sync::Arc<Self>, now: Instant) -> WatcherGuard {
        let mut s = self.lock();
        let arrived =
            self.consumer_timeout.is_some() && !Self::present(&s, self.consumer_timeout, now);
        s.watchers += 1;
        drop(s);
        if arrived {
            self.consumer_arrived.notify_one();
        }
        WatcherGuard {
            leadership: self.clone(),
        }
    }

    pub fn watchers(&self) -> usize {
        self.lock().watchers
    }

    /// Resolves when a consumer shows up after having been absent.
    pub async fn consumer_arrived(&self) {
        self.consumer_arrived.notified().await;
    }

    fn present(s: &GrantState, timeout: Option<Duration>, now: Instant) -> bool {
        match timeout {
            None => true,
            Some(t) => s.watchers > 0 || s.last_read.is_some_and(|r| now < r + t),
        }
    }

    /// The local facts the elector needs for its next step. When the consumer is gone while we
    /// grant, granting stops here, atomically with the check, so that `granted_until` is final:
    /// the elector releases no earlier than that.
    pub fn local(&self, now: Instant) -> Local {
        let mut s = self.lock();
        let consumer_present = Self::present(&s, self.consumer_timeout, now);
        let revoked = !consumer_present && Self::grantable(&s, now).is_some();
        if revoked {
            s.revoked = true;
        }
        let consumer_absent_at = match self.consumer_timeout {
            Some(t) if s.watchers == 0 => s.last_read.map(|r| r + t),
            _ => None,
        };
        let local = Local {
            consumer_present,
            consumer_absent_at,
            granted_until: s.granted_until.filter(|u| *u > now),
        };
        drop(s);
        if revoked {
            self.view.send_modify(|v| v.epoch += 1);
        }
        local
    }
}

/// Held by a `/leader/watch` response body; dropping it ends the watcher's presence.
#[derive(Debug)]
pub struct WatcherGuard {
    leadership: std::sync::Arc<Leadership>,
}

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        let mut s = self.leadership.lock();
        s.watchers = s.watchers.saturating_sub(1);
        // Leaving counts as a read, so that the consumer timeout starts now.
        s.last_read = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::time::advance;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn tenure(term: i32, valid_for: Duration) -> Tenure {
        let now = Instant::now();
        Tenure {
            term,
            valid_until: now + valid_for,
            last_write_sent: now,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_grant_is_the_smaller_of_the_tenure_left_and_the_maximum() {
        let l = Leadership::new("a", "ns/l", 2000 * MS, None);
        assert_eq!(l.grant(Instant::now()), None, "no tenure, no grant");
        l.set_tenure(Some(tenure(3, 10_000 * MS)), Instant::now());
        assert_eq!(
            l.grant(Instant::now()),
            Some(Grant {
                term: 3,
                valid_for: 2000 * MS
            })
        );
        advance(9_500 * MS).await;
        assert_eq!(
            l.grant(Instant::now()),
            Some(Grant {
                term: 3,
                valid_for: 500 * MS
            })
        );
        advance(500 * MS).await;
        assert_eq!(l.grant(Instant::now()), None, "the tenure ended by itself");
    }

    #[tokio::test(start_paused = true)]
    async fn revocation_returns_the_latest_grant_and_stops_granting() {
        let l = Leadership::new("a", "ns/l", 2000 * MS, None);
        l.set_tenure(Some(tenure(1, 10_000 * MS)), Instant::now());
        let first = Instant::now();
        l.grant(first);
        advance(700 * MS).await;
        l.grant(Instant::now());
        let until = l.revoke(false, Instant::now());
        assert_eq!(until, Some(first + 2700 * MS));
        assert_eq!(l.grant(Instant::now()), None);
        // Re-publishing the same tenure does not lift the revocation; a new term does.
        l.set_tenure(Some(tenure(1, 10_000 * MS)), Instant::now());
        assert_eq!(l.grant(Instant::now()), None);
        l.set_tenure(Some(tenure(2, 10_000 * MS)), Instant::now());
        assert!(l.grant(Instant::now()).is_some());
        // Shutdown is for good.
        l.revoke(true, Instant::now());
        l.set_tenure(Some(tenure(3, 10_000 * MS)), Instant::now());
        assert_eq!(l.grant(Instant::now()), None);
        advance(2000 * MS).await;
        assert_eq!(
            l.revoke(true, Instant::now()),
            None,
            "every grant has run out"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tenure_changes_and_revocations_wake_watchers() {
        let l = Leadership::new("a", "ns/l", 2000 * MS, None);
        let mut rx = l.subscribe();
        rx.borrow_and_update();
        l.set_tenure(Some(tenure(1, 10_000 * MS)), Instant::now());
        assert!(rx.has_changed().expect("open"));
        rx.borrow_and_update();
        l.set_tenure(Some(tenure(1, 12_000 * MS)), Instant::now());
        assert!(!rx.has_changed().expect("open"), "a renew is not news");
        l.set_view(|v| v.observed_at = Some("t".into()));
        assert!(
            !rx.has_changed().expect("open"),
            "timestamps alone are not news"
        );
        l.set_view(|v| v.holder = Some("a".into()));
        assert!(rx.has_changed().expect("open"));
        rx.borrow_and_update();
        l.revoke(false, Instant::now());
        assert!(rx.has_changed().expect("open"));
    }

    #[tokio::test(start_paused = true)]
    async fn consumer_presence_follows_reads_and_watchers() {
        let l = Arc::new(Leadership::new("a", "ns/l", 2000 * MS, Some(5000 * MS)));
        assert!(
            !l.local(Instant::now()).consumer_present,
            "nobody has read yet"
        );
        l.grant(Instant::now());
        let local = l.local(Instant::now());
        assert!(local.consumer_present);
        assert_eq!(local.consumer_absent_at, Some(Instant::now() + 5000 * MS));
        advance(5000 * MS).await;
        assert!(!l.local(Instant::now()).consumer_present);
        let guard = l.watcher(Instant::now());
        advance(60_000 * MS).await;
        let local = l.local(Instant::now());
        assert!(
            local.consumer_present && local.consumer_absent_at.is_none(),
            "a watcher is present"
        );
        drop(guard);
        assert!(
            l.local(Instant::now()).consumer_present,
            "leaving starts the timeout"
        );
        advance(5000 * MS).await;
        assert!(!l.local(Instant::now()).consumer_present);
        // Off: always present.
        let off = Leadership::new("a", "ns/l", 2000 * MS, None);
        assert!(off.local(Instant::now()).consumer_present);
    }

    /// Issue #15, hole 3: the elector learns that the consumer is gone from `local()`, and
    /// steps down and releases at the `granted_until` it reported. A `GET /leader` arriving in
    /// between must not get a grant that runs past that instant.
    #[tokio::test(start_paused = true)]
    async fn noticing_the_consumer_gone_stops_granting_at_once() {
        let l = Leadership::new("a", "ns/l", 2000 * MS, Some(5000 * MS));
        l.set_tenure(Some(tenure(1, 60_000 * MS)), Instant::now());
        let first = Instant::now();
        assert!(l.grant(first).is_some());
        advance(5000 * MS).await;
        let local = l.local(Instant::now());
        assert!(!local.consumer_present);
        assert_eq!(local.granted_until, None, "the last grant has run out");
        // The HTTP side answers a request before the elector has stepped down.
        assert_eq!(
            l.grant(Instant::now()),
            None,
            "no grant after the consumer was found gone"
        );
        assert!(!l.is_granting(Instant::now()));
        // A new tenure (the consumer came back, the elector acquired again) grants again.
        l.set_tenure(Some(tenure(2, 60_000 * MS)), Instant::now());
        assert!(l.grant(Instant::now()).is_some());
    }

    /// Found by the simulator (seed 14353): the sidecar resumes from a freeze just past its
    /// tenure's end, so its stream says "not leader"; then the answer to a renew it sent before
    /// the freeze extends the same term. Watchers must hear of it at once, or a controller whose
    /// gate was revoked by that event sits idle until the stream's keep-alive.
    #[tokio::test(start_paused = true)]
    async fn a_tenure_valid_again_after_running_out_wakes_watchers() {
        let l = Leadership::new("a", "ns/l", 2000 * MS, None);
        let mut rx = l.subscribe();
        let start = Instant::now();
        let tenure = |valid_until| Tenure {
            term: 1,
            valid_until,
            last_write_sent: start,
        };
        l.set_tenure(Some(tenure(start + 1000 * MS)), start);
        rx.borrow_and_update();
        advance(1500 * MS).await;
        assert!(l.grant(Instant::now()).is_none(), "ran out");
        l.set_tenure(Some(tenure(start + 3000 * MS)), Instant::now());
        assert!(rx.has_changed().expect("open"), "revival is news");
        assert!(l.grant(Instant::now()).is_some());
        // A revocation is not lifted by the same term coming back.
        l.revoke(false, Instant::now());
        l.set_tenure(None, Instant::now());
        l.set_tenure(Some(tenure(start + 4000 * MS)), Instant::now());
        assert!(l.grant(Instant::now()).is_none(), "still revoked");
    }
}
