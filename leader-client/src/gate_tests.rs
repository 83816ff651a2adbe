//! The gate's state machine driven through time with tokio's paused clock.

use std::time::Duration;

use crate::contract::LeaderStatus;
use tokio::time::{Instant, advance};

use super::*;

const POLL: Duration = Duration::from_secs(1);

fn leader(term: i32, valid_ms: u64) -> LeaderStatus {
    LeaderStatus {
        is_leader: true,
        identity: "pod-a".into(),
        holder: Some("pod-a".into()),
        lease: "ns/lease".into(),
        term: Some(term),
        valid_for_ms: valid_ms,
        observed_at: None,
        renewed_at: None,
    }
}

fn follower(term: i32) -> LeaderStatus {
    LeaderStatus {
        is_leader: false,
        holder: Some("pod-b".into()),
        valid_for_ms: 0,
        ..leader(term, 0)
    }
}

/// Sends a GET at `now` and applies `answer` to it.
fn poll(state: &mut GateState, answer: &LeaderStatus) -> Ticket {
    let ticket = state.poll_sent(Instant::now());
    state.on_answer(ticket, answer);
    ticket
}

#[tokio::test(start_paused = true)]
async fn a_grant_counts_from_before_the_request_and_expires_on_the_monotonic_clock() {
    let mut s = GateState::new(POLL);
    let sent = Instant::now();
    let ticket = s.poll_sent(sent);
    // The answer takes 300 ms to arrive; the grant still ends 2 s after the send.
    advance(Duration::from_millis(300)).await;
    s.on_answer(ticket, &leader(4, 2000));
    let g = s.grant(Instant::now()).expect("granted");
    assert_eq!(g.until, sent + Duration::from_millis(2000));
    assert_eq!(g.term, Some(4));
    advance(Duration::from_millis(1699)).await;
    assert!(s.grant(Instant::now()).is_some());
    advance(Duration::from_millis(1)).await;
    assert_eq!(
        s.grant(Instant::now()),
        None,
        "expired exactly at sent + valid_for"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_event_never_grants_it_asks_for_a_get() {
    let mut s = GateState::new(POLL);
    s.on_stream_event(&leader(1, 2000));
    assert_eq!(s.grant(Instant::now()), None);
    assert_eq!(
        s.poll_due(Instant::now()),
        Some(Instant::now()),
        "confirm at once"
    );
    poll(&mut s, &leader(1, 2000));
    assert!(s.grant(Instant::now()).is_some());
}

#[tokio::test(start_paused = true)]
async fn revocations_are_immediate_and_discard_answers_sent_before_them() {
    let mut s = GateState::new(POLL);
    poll(&mut s, &leader(1, 2000));
    // A renewal is in flight when the stream says we lost leadership.
    let ticket = s.poll_sent(Instant::now());
    s.on_stream_event(&follower(2));
    assert_eq!(s.grant(Instant::now()), None);
    // The sidecar may have produced this answer before it lost: it must not re-grant.
    s.on_answer(ticket, &leader(1, 2000));
    assert_eq!(s.grant(Instant::now()), None);

    // Stream loss revokes too.
    poll(&mut s, &leader(3, 2000));
    assert!(s.grant(Instant::now()).is_some());
    s.on_stream_lost();
    assert_eq!(s.grant(Instant::now()), None);
}

#[tokio::test(start_paused = true)]
async fn a_new_term_on_the_stream_revokes_and_asks_again() {
    let mut s = GateState::new(POLL);
    s.on_stream_event(&leader(1, 2000));
    poll(&mut s, &leader(1, 2000));
    s.on_stream_event(&leader(2, 2000));
    assert_eq!(
        s.grant(Instant::now()),
        None,
        "term 1's grant is no evidence for term 2"
    );
    assert_eq!(s.poll_due(Instant::now()), Some(Instant::now()));
    poll(&mut s, &leader(2, 2000));
    assert_eq!(s.grant(Instant::now()).map(|g| g.term), Some(Some(2)));
}

#[tokio::test(start_paused = true)]
async fn the_last_answer_wins() {
    let mut s = GateState::new(POLL);
    poll(&mut s, &leader(1, 2000));
    // The sidecar is near the end of its tenure: a shorter grant replaces the longer one.
    advance(Duration::from_millis(500)).await;
    let sent = Instant::now();
    poll(&mut s, &leader(1, 100));
    assert_eq!(
        s.grant(Instant::now()).map(|g| g.until),
        Some(sent + Duration::from_millis(100))
    );
    poll(&mut s, &follower(1));
    assert_eq!(s.grant(Instant::now()), None);
    // A zero-length grant is no grant.
    poll(&mut s, &leader(1, 0));
    assert_eq!(s.grant(Instant::now()), None);
}

#[tokio::test(start_paused = true)]
async fn unreachable_means_not_leader() {
    let mut s = GateState::new(POLL);
    poll(&mut s, &leader(1, 2000));
    assert!(s.reachable());
    let ticket = s.poll_sent(Instant::now());
    s.on_poll_failed(ticket);
    assert_eq!(s.grant(Instant::now()), None);
    assert!(!s.reachable());
}

#[tokio::test(start_paused = true)]
async fn polling_schedule() {
    let mut s = GateState::new(POLL);
    let t0 = Instant::now();
    // No stream yet: poll at once, then every poll interval.
    assert_eq!(s.poll_due(t0), Some(t0));
    let ticket = s.poll_sent(t0);
    assert_eq!(s.poll_due(t0), None, "one request at a time");
    s.on_answer(ticket, &follower(1));
    assert_eq!(s.poll_due(t0), Some(t0 + POLL));

    // While a grant runs, renew half-way through it even if that is sooner.
    poll(&mut s, &leader(1, 800));
    assert_eq!(s.poll_due(t0), Some(t0 + Duration::from_millis(400)));

    // A healthy stream covers a standby: no polling.
    s.on_stream_event(&follower(1));
    assert_eq!(s.grant(t0), None);
    assert_eq!(s.poll_due(t0), None);

    // Stream lost: back to polling every interval after the last request.
    s.on_stream_lost();
    assert_eq!(s.poll_due(t0), Some(t0 + POLL));
}

#[tokio::test(start_paused = true)]
async fn the_gate_handle_sees_grants_and_their_end() {
    let (publisher, mut gate) = LeadershipGate::new();
    assert_eq!(gate.current(), None);
    let mut s = GateState::new(POLL);
    poll(&mut s, &leader(7, 2000));
    publisher.publish(s.view());
    let g = gate.opened().await;
    assert_eq!(g.term, Some(7));
    assert!(gate.reachable());

    // Nobody renews: the window closes when the grant runs out, on the paused clock.
    let start = Instant::now();
    assert_eq!(gate.closed(Some(7)).await, Closed::Expired);
    assert_eq!(Instant::now() - start, Duration::from_millis(2000));
    assert_eq!(gate.current(), None);

    // A revocation closes it at once.
    poll(&mut s, &leader(7, 2000));
    publisher.publish(s.view());
    gate.opened().await;
    let closer = {
        let mut gate = gate.clone();
        tokio::spawn(async move { gate.closed(Some(7)).await })
    };
    tokio::task::yield_now().await;
    s.on_stream_event(&follower(8));
    publisher.publish(s.view());
    assert_eq!(closer.await.unwrap(), Closed::Revoked);

    // A grant in another term closes the window of the old term.
    poll(&mut s, &leader(9, 2000));
    publisher.publish(s.view());
    assert_eq!(gate.closed(Some(7)).await, Closed::NewTerm);
}

#[tokio::test(start_paused = true)]
async fn always_open_never_closes() {
    let mut gate = LeadershipGate::always_open();
    assert_eq!(gate.opened().await.term, None);
    advance(Duration::from_secs(365 * 24 * 3600)).await;
    assert!(gate.current().is_some());
}

/// Hole 1 of issue #15: the controller process is frozen (SIGSTOP, a GC pause, CPU throttling)
/// past its grant while the sidecar keeps the Lease. Nothing changes at the sidecar, so the
/// healthy stream has nothing to say; the gate must ask by itself, or the leader sits idle for
/// good while its sidecar renews.
#[tokio::test(start_paused = true)]
async fn a_grant_that_ran_out_while_frozen_is_asked_for_again() {
    let mut s = GateState::new(POLL);
    s.on_stream_event(&leader(3, 2000));
    poll(&mut s, &leader(3, 2000));
    assert!(s.grant(Instant::now()).is_some());
    // Frozen for 3 s: the renewal half-way through the grant never went out.
    advance(Duration::from_secs(3)).await;
    let now = Instant::now();
    assert_eq!(s.grant(now), None, "the grant ran out");
    assert_eq!(s.poll_due(now), Some(now), "ask at once after a thaw");
    // Events queued during the freeze (same term, still leader) must not cancel the ask.
    s.on_stream_event(&leader(3, 2000));
    assert_eq!(s.poll_due(now), Some(now));
    poll(&mut s, &leader(3, 2000));
    assert!(s.grant(Instant::now()).is_some(), "working again");
}

/// The same freeze while a `GET /leader` is in flight: its answer arrives after the thaw with a
/// grant that has already run out (counted from before the request). The gate asks again.
#[tokio::test(start_paused = true)]
async fn an_answer_that_arrives_expired_after_a_freeze_is_asked_for_again() {
    let mut s = GateState::new(POLL);
    s.on_stream_event(&leader(3, 2000));
    poll(&mut s, &leader(3, 2000));
    advance(Duration::from_millis(1000)).await;
    let ticket = s.poll_sent(Instant::now());
    advance(Duration::from_millis(2500)).await;
    s.on_answer(ticket, &leader(3, 2000));
    let now = Instant::now();
    assert_eq!(s.grant(now), None, "the answer's grant is already over");
    assert_eq!(s.poll_due(now), Some(now));
    // And if the sidecar now says we lost the Lease meanwhile, the gate stays closed and quiet.
    poll(&mut s, &follower(4));
    assert_eq!(s.grant(now), None);
    assert_eq!(s.poll_due(now), None, "a healthy stream covers a standby");
}
