//! The elector driven through time with tokio's paused clock, against a compare-and-swap
//! Lease store kept in the test (no I/O).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use tokio::time::{Instant, advance};

use super::*;

const SECOND: Duration = Duration::from_secs(1);

fn timings() -> Timings {
    Timings {
        lease_duration: 15 * SECOND,
        renew_deadline: 10 * SECOND,
        retry_period: 2 * SECOND,
        yield_backoff: 15 * SECOND,
        max_jitter: Duration::ZERO,
    }
}

fn elector(id: &str) -> Elector {
    Elector::new(id, "ns", "lease", timings(), 7)
}

/// A wall clock far from the test's monotonic clock, to show decisions never use it.
fn wall() -> Timestamp {
    Timestamp::from_second(1_000_000_000).expect("valid")
}

fn free() -> Local {
    Local::unconstrained()
}

/// The API server's side of the Lease: resourceVersion compare-and-swap, nothing else.
#[derive(Default)]
struct Store {
    lease: Option<Lease>,
    rv: u64,
}

enum Answer {
    Stored(Box<Lease>),
    Conflict,
    Gone,
}

impl Store {
    fn put(&mut self, mut lease: Lease) -> Lease {
        self.rv += 1;
        lease.metadata.resource_version = Some(self.rv.to_string());
        self.lease = Some(lease.clone());
        lease
    }

    fn apply(&mut self, w: &Write) -> Answer {
        match (&self.lease, w.create) {
            (Some(_), true) => Answer::Conflict,
            (None, true) => Answer::Stored(Box::new(self.put(w.lease.clone()))),
            (None, false) => Answer::Gone,
            (Some(cur), false) => {
                if cur.metadata.resource_version != w.lease.metadata.resource_version {
                    Answer::Conflict
                } else {
                    Answer::Stored(Box::new(self.put(w.lease.clone())))
                }
            }
        }
    }

    fn get(&self) -> Option<Lease> {
        self.lease.clone()
    }
}

/// Runs steps until the elector waits; returns what it waits for.
fn settle(e: &mut Elector, store: &mut Store, local: Local) -> Step {
    for _ in 0..20 {
        let now = Instant::now();
        match e.next_step(now, wall(), local) {
            Step::Read => {
                let l = store.get();
                e.on_read(l.as_ref(), Instant::now());
            }
            Step::Write(w) => match store.apply(&w) {
                Answer::Stored(stored) => e.on_written(&w, &stored, now, Instant::now()),
                Answer::Conflict => e.on_conflict(&w),
                Answer::Gone => e.on_gone(&w, Instant::now()),
            },
            other => return other,
        }
    }
    panic!("elector did not settle");
}

/// Lets `d` pass the way the driver does: waking whenever the elector asks, and at least every
/// 100 ms, answering its reads and writes from the store.
async fn run_for(e: &mut Elector, store: &mut Store, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        let step = settle(e, store, free());
        let next = match step {
            Step::Wait(Some(at)) => at.min(Instant::now() + Duration::from_millis(100)),
            _ => Instant::now() + Duration::from_millis(100),
        };
        advance(next.min(end).saturating_duration_since(Instant::now())).await;
    }
    settle(e, store, free());
}

fn spec(l: &Lease) -> LeaseSpec {
    l.spec.clone().expect("spec")
}

fn foreign(holder: &str, duration: i32, renew: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some("lease".into()),
            namespace: Some("ns".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(duration),
            acquire_time: Some(MicroTime(renew)),
            renew_time: Some(MicroTime(renew)),
            lease_transitions: Some(4),
            ..Default::default()
        }),
    }
}

#[tokio::test(start_paused = true)]
async fn acquires_an_absent_lease_by_creating_it() {
    let mut store = Store::default();
    let mut e = elector("a");
    let step = settle(&mut e, &mut store, free());
    let t = e.tenure(Instant::now()).expect("leader");
    assert_eq!(t.term, 0);
    assert_eq!(t.valid_until, Instant::now() + 10 * SECOND);
    assert!(matches!(step, Step::Wait(Some(at)) if at == Instant::now() + 2 * SECOND));
    let s = spec(&store.get().expect("created"));
    assert_eq!(s.holder_identity.as_deref(), Some("a"));
    assert_eq!(s.lease_duration_seconds, Some(15));
    assert_eq!(s.lease_transitions, Some(0));
    assert_eq!(s.acquire_time, s.renew_time);
    assert_eq!(
        e.take_changes(),
        vec![
            Change::Acquired { term: 0 },
            Change::NewLeader {
                holder: Some("a".into())
            }
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn acquires_a_released_lease_at_once_and_counts_a_transition() {
    for holder in [Some(""), None] {
        let mut store = Store::default();
        let mut l = foreign("x", 1, wall());
        l.spec.as_mut().expect("spec").holder_identity = holder.map(str::to_owned);
        store.put(l);
        let mut e = elector("a");
        settle(&mut e, &mut store, free());
        assert_eq!(
            e.tenure(Instant::now()).map(|t| t.term),
            Some(5),
            "holder {holder:?}"
        );
        assert_eq!(
            spec(&store.get().expect("lease")).lease_transitions,
            Some(5)
        );
    }
}

/// Issue #15, hole 2: an operator clears `holderIdentity` (or deletes the Lease) while the
/// holder is cut off from the API server and still leads. Only a release written by the
/// holder itself (`leaseDurationSeconds: 1`) says it stopped; anything else makes a candidate
/// wait the holder's lease duration from when it saw the change.
#[tokio::test(start_paused = true)]
async fn a_cleared_holder_is_waited_out_like_a_live_one() {
    for holder in [Some(""), None] {
        let mut store = Store::default();
        store.put(foreign("x", 20, wall()));
        let mut e = elector("a");
        settle(&mut e, &mut store, free());
        advance(5 * SECOND).await;
        let mut cleared = store.get().expect("lease");
        cleared.spec.as_mut().expect("spec").holder_identity = holder.map(str::to_owned);
        let cleared = store.put(cleared);
        let seen = Instant::now();
        e.on_watched(&cleared, seen);
        settle(&mut e, &mut store, free());
        assert_eq!(e.takeover_at(seen), Some(seen + 20 * SECOND));
        advance(20 * SECOND - Duration::from_millis(1)).await;
        settle(&mut e, &mut store, free());
        assert!(
            e.tenure(Instant::now()).is_none(),
            "took a cleared lease early"
        );
        advance(Duration::from_millis(1)).await;
        settle(&mut e, &mut store, free());
        assert_eq!(e.tenure(Instant::now()).map(|t| t.term), Some(5));
    }
    // The holder itself, finding its own record cleared, takes it back at once (a new term).
    let mut store = Store::default();
    let mut e = elector("a");
    settle(&mut e, &mut store, free());
    let term = e.tenure(Instant::now()).expect("leader").term;
    let mut cleared = store.get().expect("lease");
    cleared.spec.as_mut().expect("spec").holder_identity = None;
    let cleared = store.put(cleared);
    e.on_watched(&cleared, Instant::now());
    assert!(e.tenure(Instant::now()).is_none(), "stepped down");
    settle(&mut e, &mut store, free());
    assert_eq!(e.tenure(Instant::now()).map(|t| t.term), Some(term + 1));
    // A candidate that never saw the holder, finding the record cleared, waits all the same
    // (the record's duration, or ours when the clear wiped it too).
    for duration in [Some(20), None] {
        let mut store = Store::default();
        let mut l = foreign("", 20, wall());
        l.spec.as_mut().expect("spec").lease_duration_seconds = duration;
        store.put(l);
        let mut e = elector("a");
        let seen = Instant::now();
        settle(&mut e, &mut store, free());
        assert!(e.tenure(seen).is_none());
        let wait = duration.map_or(15 * SECOND, |_| 20 * SECOND);
        assert_eq!(e.takeover_at(seen), Some(seen + wait));
    }
}

#[tokio::test(start_paused = true)]
async fn a_deleted_lease_is_taken_only_after_the_last_holders_duration() {
    let mut store = Store::default();
    store.put(foreign("x", 20, wall()));
    let mut e = elector("a");
    settle(&mut e, &mut store, free());
    advance(3 * SECOND).await;
    store.lease = None;
    let seen = Instant::now();
    e.on_watched_absent(Some("2"), seen);
    settle(&mut e, &mut store, free());
    assert!(
        e.tenure(Instant::now()).is_none(),
        "took a deleted lease at once"
    );
    assert_eq!(e.takeover_at(seen), Some(seen + 20 * SECOND));
    // Hearing of the same absence again (its own reads every retry period, a re-list) does
    // not extend the wait.
    run_for(&mut e, &mut store, 10 * SECOND).await;
    e.on_watched_absent(Some("2"), Instant::now());
    assert_eq!(e.takeover_at(Instant::now()), Some(seen + 20 * SECOND));
    run_for(&mut e, &mut store, 10 * SECOND).await;
    let t = e.tenure(Instant::now()).expect("leader after the grace");
    assert_eq!(t.term, 5, "the replacement continues from the term it saw");
    assert_eq!(
        spec(&store.get().expect("created")).lease_transitions,
        Some(5)
    );
    // The holder itself, when its Lease is deleted under it, steps down and takes it again at
    // once: only its own controller can still be acting.
    store.lease = None;
    e.on_watched_absent(Some("99"), Instant::now());
    assert!(e.tenure(Instant::now()).is_none());
    settle(&mut e, &mut store, free());
    assert_eq!(e.tenure(Instant::now()).map(|t| t.term), Some(6));
}

#[tokio::test(start_paused = true)]
async fn waits_the_holders_duration_from_when_it_saw_the_record_whatever_renew_time_says() {
    // renewTime an hour in the past (a skewed clock, or a long-dead holder) and an hour in the
    // future: neither changes when we may take over.
    for renew in [
        wall() - jiff::SignedDuration::from_hours(1),
        wall() + jiff::SignedDuration::from_hours(1),
    ] {
        let mut store = Store::default();
        store.put(foreign("x", 20, renew));
        let mut e = elector("a");
        let seen = Instant::now();
        settle(&mut e, &mut store, free());
        assert_eq!(e.takeover_at(seen), Some(seen + 20 * SECOND));
        advance(20 * SECOND - Duration::from_millis(1)).await;
        settle(&mut e, &mut store, free());
        assert!(
            e.tenure(Instant::now()).is_none(),
            "took a live lease early"
        );
        advance(Duration::from_millis(1)).await;
        settle(&mut e, &mut store, free());
        assert!(e.tenure(Instant::now()).is_some());
    }
}

#[tokio::test(start_paused = true)]
async fn every_change_of_the_record_restarts_the_wait() {
    let mut store = Store::default();
    store.put(foreign("x", 15, wall()));
    let mut e = elector("a");
    settle(&mut e, &mut store, free());
    for i in 1..=5 {
        advance(10 * SECOND).await;
        let renewed = store.put(foreign(
            "x",
            15,
            wall() + jiff::SignedDuration::from_secs(i),
        ));
        e.on_watched(&renewed, Instant::now());
        settle(&mut e, &mut store, free());
        assert!(e.tenure(Instant::now()).is_none());
    }
    advance(15 * SECOND).await;
    settle(&mut e, &mut store, free());
    assert!(e.tenure(Instant::now()).is_some());
}

#[tokio::test(start_paused = true)]
async fn a_malformed_duration_falls_back_to_ours() {
    let mut store = Store::default();
    let mut l = foreign("x", 0, wall());
    l.spec.as_mut().expect("spec").lease_duration_seconds = None;
    store.put(l);
    let mut e = elector("a");
    let seen = Instant::now();
    settle(&mut e, &mut store, free());
    assert_eq!(e.takeover_at(seen), Some(seen + 15 * SECOND));
}

#[tokio::test(start_paused = true)]
async fn malformed_leases_never_panic_and_never_shorten_the_wait() {
    let huge = "h".repeat(1 << 20);
    let no_spec = Lease {
        metadata: foreign("x", 1, wall()).metadata,
        spec: None,
    };
    let mut no_renew = foreign("x", 15, wall());
    no_renew.spec.as_mut().expect("spec").renew_time = None;
    let negative = foreign("x", -5, wall());
    let mut bad_transitions = foreign("x", 15, wall());
    bad_transitions
        .spec
        .as_mut()
        .expect("spec")
        .lease_transitions = Some(i32::MAX);
    let cases = [
        // Free, but not in the release format: it could be a holder's record wiped by
        // somebody else, so it is waited out with our duration.
        (no_spec, 15 * SECOND),
        (no_renew, 15 * SECOND),
        (negative, 15 * SECOND),
        (foreign(&huge, 15, wall()), 15 * SECOND),
        (bad_transitions, 15 * SECOND),
    ];
    for (lease, wait) in cases {
        let mut store = Store::default();
        store.put(lease);
        let mut e = elector("a");
        settle(&mut e, &mut store, free());
        assert_eq!(e.tenure(Instant::now()).is_some(), wait.is_zero());
        advance(wait).await;
        settle(&mut e, &mut store, free());
        assert!(e.tenure(Instant::now()).is_some());
    }
}

#[tokio::test(start_paused = true)]
async fn our_identity_left_by_an_earlier_process_is_not_inherited() {
    let mut store = Store::default();
    store.put(foreign("a", 15, wall()));
    let mut e = elector("a");
    settle(&mut e, &mut store, free());
    assert!(e.tenure(Instant::now()).is_none());
    advance(15 * SECOND).await;
    settle(&mut e, &mut store, free());
    assert_eq!(e.tenure(Instant::now()).map(|t| t.term), Some(5));
}

#[tokio::test(start_paused = true)]
async fn renews_every_retry_period_and_counts_validity_from_before_the_send() {
    let mut store = Store::default();
    let mut e = elector("a");
    settle(&mut e, &mut store, free());
    for _ in 0..5 {
        advance(2 * SECOND).await;
        let now = Instant::now();
        let Step::Write(w) = e.next_step(now, wall(), free()) else {
            panic!("renew due")
        };
        assert_eq!(w.kind, WriteKind::Renew);
        // The answer takes 3 s: validity still counts from the send.
        advance(3 * SECOND).await;
        let Answer::Stored(stored) = store.apply(&w) else {
            panic!("stored")
        };
        e.on_written(&w, &stored, now, Instant::now());
        assert_eq!(
            e.tenure(Instant::now()).map(|t| t.valid_until),
            Some(now + 10 * SECOND)
        );
        advance(Duration::ZERO).await;
        // next renew due 2 s after the send, i.e. right now again minus 1 s
        let step = e.next_step(Instant::now(), wall(), free());
        assert!(matches!(step, Step::Write(_)), "{step:?}");
        let Step::Write(w) = step else { unreachable!() };
        let sent = Instant::now();
        let Answer::Stored(stored) = store.apply(&w) else {
            panic!("stored")
        };
        e.on_written(&w, &stored, sent, sent);
    }
    let s = spec(&store.get().expect("lease"));
    assert_eq!(s.lease_transitions, Some(0), "renews keep the term");
}

#[tokio::test(start_paused = true)]
async fn steps_down_at_the_renew_deadline_when_renews_fail_and_keeps_campaigning() {
    let mut store = Store::default();
    let mut e = elector("a");
    settle(&mut e, &mut store, free());
    let start = Instant::now();
    e.take_changes();
    loop {
        let now = Instant::now();
        match e.next_step(now, wall(), free()) {
            Step::Write(w) => {
                if now >= start + 10 * SECOND {
                    assert_eq!(
                        w.kind,
                        WriteKind::Acquire,
                        "renewing after the renew deadline"
                    );
                    assert!(
                        now >= start + 15 * SECOND,
                        "acquiring before our own record expired"
                    );
                }
                e.on_write_failed(&w, now, now + SECOND);
            }
            Step::Wait(Some(at)) => {
                let until = at.min(start + 30 * SECOND);
                tokio::time::sleep_until(until).await;
                if Instant::now() >= start + 30 * SECOND {
                    break;
                }
            }
            Step::Read => e.on_read_failed(now),
            other => panic!("{other:?}"),
        }
        if Instant::now() >= start + 10 * SECOND {
            assert!(
                e.tenure(Instant::now()).is_none(),
                "leader past the renew deadline"
            );
        }
    }
    let changes = e.take_changes();
    assert!(
        changes.contains(&Change::Lost {
            reason: LossReason::RenewDeadline
        }),
        "{changes:?}"
    );
    // The API comes back. The record still names us, but leadership is never inherited: it
    // expires by the usual rule (counted from when we read it again) and we take a new term.
    let back = Instant::now();
    while e.tenure(Instant::now()).is_none() {
        match settle(&mut e, &mut store, free()) {
            Step::Wait(Some(at)) => tokio::time::sleep_until(at).await,
            other => panic!("{other:?}"),
        }
    }
    assert!(
        Instant::now() <= back + 8 * SECOND + 15 * SECOND,
        "backoff plus one lease duration"
    );
    assert_eq!(e.tenure(Instant::now()).map(|t| t.term), Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_conflicting_renew_rereads_and_steps_down_if_someone_else_holds_it() {
    let mut store = Store::default();
    let mut e = elector("a");
    settle(&mut e, &mut store, free());
    e.take_changes();
    // Somebody forcibly writes the Lease (an administrator, a misconfigured elector).
    let mut l = store.get().expect("lease");
    l.spec.as_mut().expect("spec").holder_identity = Some("b".into());
    store.put(l);
    advance(2 * SECOND).await;
    settle(&mut e, &mut store, free());
    assert!(e.tenure(Instant::now()).is_none());
    assert_eq!(
        e.take_changes(),
        vec![
            Change::NewLeader {
                holder: Some("b".into())
            },
            Change::Lost {
                reason: LossReason::TakenOver
            }
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_conflict_from_a_foreign_write_that_keeps_us_as_holder_is_survived() {
    let mut store = Store::default();
    let mut e = elector("a");
    settle(&mut e, &mut store, free());
    let mut l = store.get().expect("lease");
    l.metadata.labels = Some([("team".to_owned(), "x".to_owned())].into());
    store.put(l);
    advance(2 * SECOND).await;
    settle(&mut e, &mut store, free());
    assert!(e.tenure(Instant::now()).is_some());
    let stored = store.get().expect("lease");
    assert_eq!(stored.metadata.labels.expect("labels kept")["team"], "x");
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_write_that_committed_is_adopted_from_its_send_instant() {
    let mut store = Store::default();
    let mut e = elector("a");
    let now = Instant::now();
    let Step::Read = e.next_step(now, wall(), free()) else {
        panic!("read first")
    };
    e.on_read(None, now);
    let Step::Write(w) = e.next_step(now, wall(), free()) else {
        panic!("acquire")
    };
    let Answer::Stored(_) = store.apply(&w) else {
        panic!("stored")
    };
    advance(SECOND).await;
    e.on_write_failed(&w, now, Instant::now()); // the answer was lost
    assert!(e.tenure(Instant::now()).is_none());
    advance(2 * SECOND).await;
    let Step::Read = e.next_step(Instant::now(), wall(), free()) else {
        panic!("read back")
    };
    e.on_read(store.get().as_ref(), Instant::now());
    assert_eq!(
        e.tenure(Instant::now()).map(|t| t.valid_until),
        Some(now + 10 * SECOND)
    );
}

#[tokio::test(start_paused = true)]
async fn yield_releases_in_client_go_format_and_backs_off() {
    let mut store = Store::default();
    let mut e = elector("a");
    settle(&mut e, &mut store, free());
    let before = spec(&store.get().expect("lease"));
    advance(SECOND).await;
    e.on_yield(Instant::now());
    assert!(e.tenure(Instant::now()).is_none());
    // A yield is the controller's word that every grant it holds has ended (docs/leader-api.md):
    // the release does not wait for the grants handed out before it.
    let granted = Local {
        granted_until: Some(Instant::now() + 2 * SECOND),
        ..free()
    };
    let step = settle(&mut e, &mut store, granted);
    let s = spec(&store.get().expect("lease"));
    assert_eq!(s.holder_identity.as_deref(), Some(""));
    assert_eq!(s.lease_duration_seconds, Some(1));
    assert_eq!(s.lease_transitions, before.lease_transitions);
    assert!(s.acquire_time.is_some() && s.renew_time.is_some());
    assert!(e.take_changes().contains(&Change::Released));
    // Free, but ours to skip for the yield backoff.
    assert!(
        matches!(step, Step::Wait(Some(at)) if at == Instant::now() + 15 * SECOND),
        "{step:?}"
    );
    advance(15 * SECOND).await;
    settle(&mut e, &mut store, free());
    assert_eq!(
        e.tenure(Instant::now()).map(|t| t.term),
        Some(1),
        "nobody took it: acquire again"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_releases_only_after_outstanding_grants_and_then_finishes() {
    let mut store = Store::default();
    let mut e = elector("a");
    settle(&mut e, &mut store, free());
    let granted_until = Instant::now() + 2 * SECOND;
    e.on_shutdown(Some(granted_until));
    let step = settle(&mut e, &mut store, free());
    assert!(
        matches!(step, Step::Wait(Some(at)) if at == granted_until),
        "{step:?}"
    );
    assert_eq!(
        spec(&store.get().expect("lease"))
            .holder_identity
            .as_deref(),
        Some("a")
    );
    advance(2 * SECOND).await;
    let step = settle(&mut e, &mut store, free());
    assert!(matches!(step, Step::Done), "{step:?}");
    assert_eq!(
        spec(&store.get().expect("lease"))
            .holder_identity
            .as_deref(),
        Some("")
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_of_a_follower_finishes_without_writing() {
    let mut store = Store::default();
    store.put(foreign("x", 15, wall()));
    let mut e = elector("a");
    settle(&mut e, &mut store, free());
    let rv = store.rv;
    e.on_shutdown(None);
    assert!(matches!(settle(&mut e, &mut store, free()), Step::Done));
    assert_eq!(store.rv, rv);
}

#[tokio::test(start_paused = true)]
async fn a_yield_during_shutdown_releases_without_waiting_for_grants() {
    let mut store = Store::default();
    let mut e = elector("a");
    settle(&mut e, &mut store, free());
    e.on_shutdown(Some(Instant::now() + 2 * SECOND));
    e.on_yield(Instant::now());
    assert!(matches!(settle(&mut e, &mut store, free()), Step::Done));
}

#[tokio::test(start_paused = true)]
async fn without_a_consumer_the_leader_steps_down_and_nobody_campaigns() {
    let mut store = Store::default();
    let mut e = elector("a");
    settle(&mut e, &mut store, free());
    let gone = Local {
        consumer_present: false,
        consumer_absent_at: None,
        granted_until: None,
    };
    let step = settle(&mut e, &mut store, gone);
    assert!(matches!(step, Step::Wait(None)), "{step:?}");
    assert!(e.take_changes().contains(&Change::Lost {
        reason: LossReason::ConsumerGone
    }));
    assert_eq!(
        spec(&store.get().expect("lease"))
            .holder_identity
            .as_deref(),
        Some("")
    );
    advance(60 * SECOND).await;
    assert!(matches!(settle(&mut e, &mut store, gone), Step::Wait(None)));
    settle(&mut e, &mut store, free());
    assert!(
        e.tenure(Instant::now()).is_some(),
        "campaigns again once a consumer is back"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stale_absent_report_from_the_watch_is_ignored() {
    let mut store = Store {
        rv: 10,
        ..Store::default()
    };
    let mut e = elector("a");
    settle(&mut e, &mut store, free());
    e.on_watched_absent(Some("5"), Instant::now());
    assert!(e.tenure(Instant::now()).is_some());
    e.on_watched_absent(None, Instant::now());
    assert!(
        e.tenure(Instant::now()).is_some(),
        "incomparable: a renew will tell"
    );
    e.on_watched_absent(Some("99"), Instant::now());
    assert!(e.tenure(Instant::now()).is_none());
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_while_following() {
    let mut e = elector("a");
    let mut gaps = Vec::new();
    let mut last = Instant::now();
    for _ in 0..5 {
        loop {
            match e.next_step(Instant::now(), wall(), free()) {
                Step::Read => break,
                Step::Wait(Some(at)) => tokio::time::sleep_until(at).await,
                other => panic!("{other:?}"),
            }
        }
        gaps.push(Instant::now() - last);
        last = Instant::now();
        e.on_read_failed(Instant::now());
    }
    assert_eq!(
        gaps,
        vec![
            Duration::ZERO,
            2 * SECOND,
            4 * SECOND,
            8 * SECOND,
            8 * SECOND
        ]
    );
}

/// Several electors on one store, with every message delayed and reordered by a seeded
/// schedule, requests failing at random, and one elector frozen for a while. On the single
/// monotonic clock of the test, no two tenures ever overlap.
#[tokio::test(start_paused = true)]
async fn tenures_never_overlap_under_random_delays_failures_and_freezes() {
    let mut handovers = 0;
    for seed in 1..=40u64 {
        let mut rng = seed;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut store = Store::default();
        let mut electors: Vec<Elector> = (0..3)
            .map(|i| {
                Elector::new(
                    format!("e{i}"),
                    "ns",
                    "lease",
                    Timings {
                        max_jitter: Duration::from_millis(100),
                        ..timings()
                    },
                    seed * 10 + i,
                )
            })
            .collect();
        let mut frozen_until = [Instant::now(); 3];
        let mut windows: Vec<(usize, Instant, Instant)> = Vec::new();
        let start = Instant::now();
        while Instant::now() < start + 120 * SECOND {
            advance(Duration::from_millis(50 + next(200))).await;
            let now = Instant::now();
            // Freezes are what move leadership around (a handover needs one longer than the
            // lease); about one every 15 s.
            if next(100) == 0 {
                frozen_until[next(3) as usize] = now + Duration::from_millis(next(30_000));
            }
            for i in 0..3 {
                if now < frozen_until[i] {
                    continue;
                }
                let e = &mut electors[i];
                if let Some(t) = e.tenure(now) {
                    windows.push((i, now, t.valid_until.min(now + Duration::from_millis(250))));
                }
                match e.next_step(now, wall(), free()) {
                    Step::Read => {
                        if next(5) == 0 {
                            e.on_read_failed(now);
                        } else {
                            let l = store.get();
                            e.on_read(l.as_ref(), now);
                        }
                    }
                    Step::Write(w) => {
                        // the request may reach the server, and its answer may be lost
                        let reaches = next(4) != 0;
                        let answer = if reaches { Some(store.apply(&w)) } else { None };
                        let lost = next(5) == 0;
                        match (answer, lost) {
                            (Some(Answer::Stored(l)), false) => e.on_written(&w, &l, now, now),
                            (Some(Answer::Conflict), false) => e.on_conflict(&w),
                            (Some(Answer::Gone), false) => e.on_gone(&w, now),
                            _ => e.on_write_failed(&w, now, now),
                        }
                    }
                    _ => {}
                }
                // watch events for the others, sometimes
                if next(2) == 0
                    && let Some(l) = store.get()
                {
                    let j = next(3) as usize;
                    if Instant::now() >= frozen_until[j] {
                        electors[j].on_watched(&l, now);
                    }
                }
            }
        }
        // A tenure is a claim from the instant it is checked to its valid_until; grants are
        // bounded by both. Check that claims of different electors never intersect.
        for a in &windows {
            for b in &windows {
                if a.0 != b.0 {
                    assert!(a.2 <= b.1 || b.2 <= a.1, "seed {seed}: overlap {a:?} {b:?}");
                }
            }
        }
        assert!(!windows.is_empty(), "seed {seed}: somebody led");
        handovers += windows.windows(2).filter(|w| w[0].0 != w[1].0).count();
    }
    // The schedule is meant to move leadership around; make sure it did.
    assert!(handovers >= 40, "only {handovers} handovers in 40 runs");
}

#[tokio::test(start_paused = true)]
async fn a_writer_that_wipes_lease_transitions_cannot_make_the_term_go_back() {
    let mut store = Store::default();
    let mut e = elector("a");
    // We have seen term 4 (a foreign holder's record).
    store.put(foreign("x", 15, wall()));
    settle(&mut e, &mut store, free());
    assert!(e.tenure(Instant::now()).is_none());
    // Another client overwrites it without leaseTransitions…
    let mut wiped = foreign("y", 15, wall());
    wiped.spec.as_mut().expect("spec").lease_transitions = None;
    store.put(wiped);
    e.on_read(store.get().as_ref(), Instant::now());
    advance(15 * SECOND).await;
    settle(&mut e, &mut store, free());
    // …yet our tenure comes after the term we saw.
    assert_eq!(e.tenure(Instant::now()).map(|t| t.term), Some(5));
    // A Lease deleted and created again continues from there too.
    let mut e = elector("b");
    store.put(foreign("x", 15, wall()));
    settle(&mut e, &mut store, free());
    store.lease = None;
    e.on_read(None, Instant::now());
    settle(&mut e, &mut store, free());
    assert!(
        e.tenure(Instant::now()).is_none(),
        "the deleted holder is waited out"
    );
    run_for(&mut e, &mut store, 15 * SECOND).await;
    assert_eq!(e.tenure(Instant::now()).map(|t| t.term), Some(5));
    assert_eq!(
        spec(&store.get().expect("created")).lease_transitions,
        Some(5)
    );
}

/// Drives a standby whose watch delivers nothing: only its own reads tell it of changes.
/// Returns the instant it acquired.
async fn standby_without_watch(
    e: &mut Elector,
    store: &mut Store,
    renew_until: Instant,
    holder: &str,
) -> Instant {
    let mut renews = 0;
    let mut next_renew = Instant::now() + 2 * SECOND;
    loop {
        let now = Instant::now();
        if now >= next_renew && now < renew_until {
            renews += 1;
            store.put(foreign(
                holder,
                15,
                wall() + jiff::SignedDuration::from_secs(renews),
            ));
            next_renew = now + 2 * SECOND;
        }
        let step = settle(e, store, free());
        if e.tenure(Instant::now()).is_some() {
            return Instant::now();
        }
        let Step::Wait(Some(at)) = step else {
            panic!("standby stuck: {step:?}");
        };
        let at = if now < renew_until {
            at.min(next_renew)
        } else {
            at
        };
        advance(
            at.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        )
        .await;
    }
}

/// Issue #15, hole 4: the standby's watch goes quiet without breaking. Its reads while the
/// holder looks silent find renewals the watch never delivered: it asks for a new watch and
/// polls every half retry period, so that a crash of the holder is taken over within the lease
/// duration plus half a retry period of the holder's last renew, not a second lease duration
/// later.
#[tokio::test(start_paused = true)]
async fn a_standby_whose_watch_went_quiet_polls_and_takes_over_in_time() {
    let mut store = Store::default();
    store.put(foreign("x", 15, wall()));
    let mut e = elector("a");
    settle(&mut e, &mut store, free());
    assert!(!e.watch_stale());
    // The holder renews every 2 s for 20 s, then dies; the watch delivers none of it.
    let crash = Instant::now() + 20 * SECOND;
    let acquired = standby_without_watch(&mut e, &mut store, crash, "x").await;
    assert!(e.watch_stale(), "the quiet watch was noticed");
    assert!(
        e.take_changes().contains(&Change::WatchStale),
        "the driver is asked to restart the watch"
    );
    let last_renew = crash - 2 * SECOND;
    let took = acquired - last_renew;
    assert!(
        took >= 15 * SECOND && took <= 16 * SECOND,
        "took over {took:?} after the last renew"
    );
    // The list that restarts the watch is no proof that the watch delivers; news from the
    // watch itself ends the polling.
    let listed = store.put(foreign("a", 15, wall()));
    e.on_listed(&listed, Instant::now());
    assert!(e.watch_stale());
    let newer = store.put(foreign("a", 15, wall()));
    e.on_watched(&newer, Instant::now());
    assert!(!e.watch_stale());
}

/// Issue #15, 5b: client-go compares records at whole-second resolution. A renew in the same
/// second as the one before (a sub-second retry period, or our wall clock stepped back) writes
/// the next second, so that a client-go standby always sees a change; the value never runs more
/// than a second ahead of our clock.
#[tokio::test(start_paused = true)]
async fn every_renew_changes_renew_time_at_whole_second_resolution() {
    let mut store = Store::default();
    let mut e = elector("a");
    let t0 = Timestamp::from_second(1_000_000_000).expect("valid");
    let mut written = Vec::new();
    // Renews at wall times 0.2 s apart, then the wall clock steps back by one renew period.
    let walls = [0, 200, 400, 1_300, 1_100, 900, 2_500].map(|ms| {
        t0.checked_add(jiff::SignedDuration::from_millis(ms))
            .expect("in range")
    });
    for wall in walls {
        loop {
            match e.next_step(Instant::now(), wall, free()) {
                Step::Read => e.on_read(store.get().as_ref(), Instant::now()),
                Step::Write(w) => match store.apply(&w) {
                    Answer::Stored(l) => {
                        e.on_written(&w, &l, Instant::now(), Instant::now());
                        written.push((wall, spec(&l).renew_time.expect("renewTime").0));
                        break;
                    }
                    _ => panic!("no conflict expected"),
                },
                Step::Wait(Some(at)) => advance(at - Instant::now()).await,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    for pair in written.windows(2) {
        let ((_, a), (wall, b)) = (pair[0], pair[1]);
        assert_ne!(
            a.as_second(),
            b.as_second(),
            "no change at whole seconds: {written:?}"
        );
        assert!(
            b.duration_since(wall) <= jiff::SignedDuration::from_secs(1),
            "renewTime ran ahead of the clock: {written:?}"
        );
    }
}

/// Issue #15, 5a (found by the fault suite): a Lease at term 0, deleted, must not be created
/// again at term 0: the term is a fencing token and must grow with every tenure.
#[tokio::test(start_paused = true)]
async fn a_deleted_lease_at_term_0_is_recreated_at_term_1() {
    let mut store = Store::default();
    let mut e = elector("a");
    settle(&mut e, &mut store, free());
    assert_eq!(e.tenure(Instant::now()).map(|t| t.term), Some(0));
    store.lease = None;
    e.on_watched_absent(Some("99"), Instant::now());
    settle(&mut e, &mut store, free());
    assert_eq!(e.tenure(Instant::now()).map(|t| t.term), Some(1));
    assert_eq!(
        spec(&store.get().expect("created")).lease_transitions,
        Some(1)
    );
}

/// Found by the fault suite's liveness judgement: after an API outage, during which the
/// standby's acquire failed, a read that shows the very version it saw before the outage must
/// not restart the holder's wait; the holder has been silent all along.
#[tokio::test(start_paused = true)]
async fn a_failed_write_does_not_restart_the_wait_for_an_unchanged_record() {
    let mut store = Store::default();
    store.put(foreign("x", 15, wall()));
    let mut e = elector("a");
    let seen = Instant::now();
    settle(&mut e, &mut store, free());
    // The outage: at expiry the acquire fails without an answer, and so do the reads after it.
    advance(15 * SECOND).await;
    let Step::Write(w) = e.next_step(Instant::now(), wall(), free()) else {
        panic!("expected the acquire");
    };
    e.on_write_failed(&w, Instant::now(), Instant::now());
    for _ in 0..3 {
        advance(4 * SECOND).await;
        if let Step::Read = e.next_step(Instant::now(), wall(), free()) {
            e.on_read_failed(Instant::now());
        }
    }
    // The outage ends: the read shows the same record, which expired long ago.
    advance(4 * SECOND).await;
    assert_eq!(e.takeover_at(Instant::now()), None, "must read first");
    settle(&mut e, &mut store, free());
    assert!(
        e.tenure(Instant::now()).is_some(),
        "took over at once, not {:?} after the read",
        e.takeover_at(Instant::now()).map(|t| t - seen)
    );
}

/// Found by the simulator (seeds 1653, 4392): a holder frozen past its tenure last saw its own
/// record and missed a takeover; the Lease was then cleared or deleted. Its record proves
/// nothing once its tenure lapsed: it must wait like any other candidate, not take the Lease
/// back at once while the holder it never saw still leads.
#[tokio::test(start_paused = true)]
async fn a_holder_whose_tenure_lapsed_waits_out_a_clear_or_a_deletion() {
    for delete in [false, true] {
        let mut store = Store::default();
        let mut e = elector("a");
        settle(&mut e, &mut store, free());
        assert!(e.tenure(Instant::now()).is_some());
        // Frozen for longer than the lease: somebody else took over meanwhile, unseen.
        advance(20 * SECOND).await;
        store.put(foreign("x", 15, wall()));
        if delete {
            store.lease = None;
        } else {
            let mut cleared = store.get().expect("lease");
            cleared.spec.as_mut().expect("spec").holder_identity = None;
            store.put(cleared);
        }
        let seen = Instant::now();
        settle(&mut e, &mut store, free());
        assert!(
            e.tenure(Instant::now()).is_none(),
            "delete {delete}: took the Lease back at once"
        );
        assert_eq!(
            e.takeover_at(seen),
            Some(seen + 15 * SECOND),
            "delete {delete}"
        );
    }
}

/// Found by the simulator (seed 9459): a candidate saw the Lease deleted, then was frozen while
/// the Lease was created, held and deleted again. A create has no resourceVersion to fail on,
/// so on resuming it must look again, and, having a gap in its knowledge, wait a lease duration
/// for a holder it may have missed.
#[tokio::test(start_paused = true)]
async fn a_candidate_with_a_gap_in_its_knowledge_of_an_absent_lease_waits_before_creating() {
    let mut store = Store::default();
    store.put(foreign("x", 15, wall()));
    let mut e = elector("a");
    settle(&mut e, &mut store, free());
    store.lease = None;
    e.on_watched_absent(Some("2"), Instant::now());
    settle(&mut e, &mut store, free());
    // Frozen for 20 s: the grace ran out meanwhile, and so did our knowledge.
    advance(20 * SECOND).await;
    let resumed = Instant::now();
    assert!(
        matches!(e.next_step(resumed, wall(), free()), Step::Read),
        "reads before a create"
    );
    settle(&mut e, &mut store, free());
    assert!(
        e.tenure(Instant::now()).is_none(),
        "created at once after a gap"
    );
    assert_eq!(e.takeover_at(resumed), Some(resumed + 15 * SECOND));
    run_for(&mut e, &mut store, 15 * SECOND).await;
    assert!(e.tenure(Instant::now()).is_some(), "then creates it");
}
