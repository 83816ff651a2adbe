"""The gate's state machine driven through time with plain numbers (ported from
``leader-client/src/gate_tests.rs``), and the shared ``LeadershipGate`` view."""

import threading
import time
import unittest

import support  # noqa: F401  (import path)
from leader_client.follow import LeaderStatus
from leader_client.gate import Closed, GateState, GateView, Grant, LeadershipGate
from leader_client.testing import LIMIT, FakeClock

POLL = 1.0


def leader(term, valid_ms):
    return LeaderStatus(is_leader=True, identity="pod-a", holder="pod-a", lease="ns/lease",
                        term=term, valid_for_ms=valid_ms)


def follower(term):
    return LeaderStatus(is_leader=False, identity="pod-a", holder="pod-b", lease="ns/lease",
                        term=term, valid_for_ms=0)


def poll(state, answer, now):
    """Sends a GET at ``now`` and applies ``answer`` to it."""
    ticket = state.poll_sent(now)
    state.on_answer(ticket, answer)
    return ticket


class GateStateTests(unittest.TestCase):
    def test_a_grant_counts_from_before_the_request_and_expires_on_the_monotonic_clock(self):
        s = GateState(POLL)
        sent = 100.0
        ticket = s.poll_sent(sent)
        # The answer takes 300 ms to arrive; the grant still ends 2 s after the send.
        s.on_answer(ticket, leader(4, 2000))
        g = s.grant(sent + 0.3)
        self.assertIsNotNone(g)
        self.assertEqual(g.until, sent + 2.0)
        self.assertEqual(g.term, 4)
        self.assertIsNotNone(s.grant(sent + 1.999))
        self.assertIsNone(s.grant(sent + 2.0), "expired exactly at sent + valid_for")

    def test_a_stream_event_never_grants_it_asks_for_a_get(self):
        s = GateState(POLL)
        now = 10.0
        s.on_stream_event(leader(1, 2000))
        self.assertIsNone(s.grant(now))
        self.assertTrue(s.confirm)
        self.assertEqual(s.poll_due(now), now, "confirm at once")
        poll(s, leader(1, 2000), now)
        self.assertIsNotNone(s.grant(now))
        self.assertFalse(s.confirm)

    def test_revocations_are_immediate_and_discard_answers_sent_before_them(self):
        s = GateState(POLL)
        now = 10.0
        poll(s, leader(1, 2000), now)
        # A renewal is in flight when the stream says we lost leadership.
        epoch = s.epoch
        ticket = s.poll_sent(now)
        s.on_stream_event(follower(2))
        self.assertEqual(s.epoch, epoch + 1)
        self.assertIsNone(s.grant(now))
        # The sidecar may have produced this answer before it lost: it must not re-grant.
        s.on_answer(ticket, leader(1, 2000))
        self.assertIsNone(s.grant(now))

        # Stream loss revokes too.
        poll(s, leader(3, 2000), now)
        self.assertIsNotNone(s.grant(now))
        s.on_stream_lost()
        self.assertIsNone(s.grant(now))
        self.assertFalse(s.stream_up())

    def test_a_new_term_on_the_stream_revokes_and_asks_again(self):
        s = GateState(POLL)
        now = 10.0
        s.on_stream_event(leader(1, 2000))
        poll(s, leader(1, 2000), now)
        s.on_stream_event(leader(1, 2000))
        self.assertIsNotNone(s.grant(now), "same term: renewed on the grant's own schedule")
        s.on_stream_event(leader(2, 2000))
        self.assertIsNone(s.grant(now), "term 1's grant is no evidence for term 2")
        self.assertEqual(s.poll_due(now), now)
        poll(s, leader(2, 2000), now)
        self.assertEqual(s.grant(now).term, 2)

    def test_the_last_answer_wins(self):
        s = GateState(POLL)
        t0 = 10.0
        poll(s, leader(1, 2000), t0)
        # The sidecar is near the end of its tenure: a shorter grant replaces the longer one.
        sent = t0 + 0.5
        poll(s, leader(1, 100), sent)
        self.assertEqual(s.grant(sent).until, sent + 0.1)
        poll(s, follower(1), sent)
        self.assertIsNone(s.grant(sent))
        # A zero-length grant is no grant.
        poll(s, leader(1, 0), sent)
        self.assertIsNone(s.grant(sent))

    def test_unreachable_means_not_leader(self):
        s = GateState(POLL)
        now = 10.0
        poll(s, leader(1, 2000), now)
        self.assertTrue(s.reachable())
        ticket = s.poll_sent(now)
        s.on_poll_failed(ticket)
        self.assertIsNone(s.grant(now))
        self.assertFalse(s.reachable())

    def test_polling_schedule(self):
        s = GateState(POLL)
        t0 = 10.0
        # No stream yet: poll at once, then every poll interval.
        self.assertEqual(s.poll_due(t0), t0)
        ticket = s.poll_sent(t0)
        self.assertIsNone(s.poll_due(t0), "one request at a time")
        s.on_answer(ticket, follower(1))
        self.assertEqual(s.poll_due(t0), t0 + POLL)

        # While a grant runs, renew half-way through it even if that is sooner.
        poll(s, leader(1, 800), t0)
        self.assertAlmostEqual(s.poll_due(t0), t0 + 0.4)

        # A healthy stream covers a standby: no polling.
        s.on_stream_event(follower(1))
        self.assertIsNone(s.grant(t0))
        self.assertIsNone(s.poll_due(t0))

        # Stream lost: back to polling every interval after the last request.
        s.on_stream_lost()
        self.assertEqual(s.poll_due(t0), t0 + POLL)

    def test_a_grant_that_ran_out_while_frozen_is_asked_for_again(self):
        # Hole 1 of issue #15: frozen past the grant while the sidecar keeps the Lease. The
        # healthy stream has nothing new to say; the gate must ask by itself.
        s = GateState(POLL)
        t0 = 10.0
        s.on_stream_event(leader(3, 2000))
        poll(s, leader(3, 2000), t0)
        thawed = t0 + 3.0
        self.assertIsNone(s.grant(thawed), "the grant ran out")
        self.assertEqual(s.poll_due(thawed), thawed, "ask at once after a thaw")
        # Events queued during the freeze (same term, still leader) must not cancel the ask.
        s.on_stream_event(leader(3, 2000))
        self.assertEqual(s.poll_due(thawed), thawed)
        poll(s, leader(3, 2000), thawed)
        self.assertIsNotNone(s.grant(thawed), "working again")

    def test_an_answer_that_arrives_expired_after_a_freeze_is_asked_for_again(self):
        s = GateState(POLL)
        t0 = 10.0
        s.on_stream_event(leader(3, 2000))
        poll(s, leader(3, 2000), t0)
        ticket = s.poll_sent(t0 + 1.0)
        s.on_answer(ticket, leader(3, 2000))  # arrives after a freeze, at t0 + 3.5
        now = t0 + 3.5
        self.assertIsNone(s.grant(now), "the answer's grant is already over")
        self.assertEqual(s.poll_due(now), now)
        # If the sidecar says we lost the Lease meanwhile, the gate stays closed and quiet.
        poll(s, follower(4), now)
        self.assertIsNone(s.grant(now))
        self.assertIsNone(s.poll_due(now), "a healthy stream covers a standby")

    def test_an_unreachable_sidecar_is_polled_even_with_a_stream(self):
        s = GateState(POLL)
        t0 = 10.0
        s.on_stream_event(follower(1))
        ticket = s.poll_sent(t0)
        s.on_poll_failed(ticket)
        self.assertEqual(s.poll_due(t0), t0 + POLL)

    def test_view_publishes_grant_and_reachability(self):
        s = GateState(POLL)
        self.assertEqual(s.view(), GateView(grant=None, reachable=False))
        poll(s, leader(3, 2000), 5.0)
        self.assertEqual(s.view(), GateView(grant=Grant(term=3, sent_at=5.0, until=7.0), reachable=True))


class LeadershipGateTests(unittest.TestCase):
    def test_current_compares_the_grant_with_the_clock_at_the_moment_of_asking(self):
        clock = FakeClock(100.0)
        gate = LeadershipGate(clock)
        self.assertIsNone(gate.current())
        self.assertFalse(gate.reachable())
        s = GateState(POLL)
        poll(s, leader(7, 2000), clock())
        gate.publish(s.view())
        self.assertEqual(gate.current().term, 7)
        self.assertTrue(gate.reachable())
        self.assertEqual(gate.opened(timeout=0).term, 7)
        clock.advance(1.999)
        self.assertIsNotNone(gate.current())
        clock.advance(0.001)
        self.assertIsNone(gate.current(), "nobody renewed: expired at sent + valid_for")
        self.assertEqual(gate.closed(7, timeout=LIMIT), Closed.EXPIRED)

    def test_closed_wakes_at_the_grant_expiry_by_itself(self):
        gate = LeadershipGate()
        s = GateState(POLL)
        poll(s, leader(7, 300), time.monotonic())
        gate.publish(s.view())
        grant = gate.opened(timeout=LIMIT)
        self.assertEqual(grant.term, 7)
        # Nobody renews and nobody publishes: closed() must return on its own at the end.
        self.assertEqual(gate.closed(7, timeout=LIMIT), Closed.EXPIRED)
        self.assertGreaterEqual(time.monotonic(), grant.until)
        self.assertIsNone(gate.current())

    def test_a_revocation_wakes_a_waiting_closed_at_once(self):
        gate = LeadershipGate()
        s = GateState(POLL)
        poll(s, leader(7, 60_000), time.monotonic())
        gate.publish(s.view())
        result = []
        t = threading.Thread(target=lambda: result.append(gate.closed(7, timeout=LIMIT)))
        t.start()
        self.assertTrue(gate.wait_for_waiters(1, LIMIT), "closed() is waiting")
        s.on_stream_event(follower(8))
        gate.publish(s.view())
        t.join(LIMIT)
        self.assertEqual(result, [Closed.REVOKED])

    def test_a_grant_in_another_term_closes_the_window_of_the_old_term(self):
        gate = LeadershipGate()
        s = GateState(POLL)
        poll(s, leader(9, 60_000), time.monotonic())
        gate.publish(s.view())
        self.assertEqual(gate.closed(7, timeout=LIMIT), Closed.NEW_TERM)

    def test_opened_waits_for_a_publication(self):
        gate = LeadershipGate()
        result = []
        t = threading.Thread(target=lambda: result.append(gate.opened(timeout=LIMIT)))
        t.start()
        self.assertTrue(gate.wait_for_waiters(1, LIMIT))
        s = GateState(POLL)
        poll(s, leader(2, 60_000), time.monotonic())
        gate.publish(s.view())
        t.join(LIMIT)
        self.assertEqual(result[0].term, 2)

    def test_waits_end_when_cancelled(self):
        gate = LeadershipGate()
        cancel = threading.Event()
        result = []
        t = threading.Thread(target=lambda: result.append(gate.opened(cancel=cancel)))
        t.start()
        self.assertTrue(gate.wait_for_waiters(1, LIMIT))
        cancel.set()
        gate.wake()
        t.join(LIMIT)
        self.assertEqual(result, [None])

        s = GateState(POLL)
        poll(s, leader(2, 60_000), time.monotonic())
        gate.publish(s.view())
        cancel2 = threading.Event()
        t = threading.Thread(target=lambda: result.append(gate.closed(2, cancel=cancel2)))
        t.start()
        self.assertTrue(gate.wait_for_waiters(1, LIMIT))
        cancel2.set()
        gate.wake()
        t.join(LIMIT)
        self.assertEqual(result, [None, None])

    def test_always_open_never_closes(self):
        clock = FakeClock()
        gate = LeadershipGate.always_open(clock)
        self.assertIsNone(gate.opened(timeout=0).term)
        clock.advance(365 * 24 * 3600)
        self.assertIsNotNone(gate.current())
        self.assertTrue(gate.reachable())


if __name__ == "__main__":
    unittest.main()
