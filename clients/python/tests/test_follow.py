"""The follower against a fake sidecar served by http.server on port 0: grants come only
from GET answers and count from before the request; stream events revoke; stream loss falls
back to polling; an unreachable or hung sidecar closes the gate in time."""

import socket
import time
import unittest

import support  # noqa: F401  (import path)
from support import capture_logs
from leader_client.follow import Follower, SidecarClient, SourceError, parse_leader_status
from leader_client.gate import Closed, LeadershipGate
from leader_client.testing import LIMIT, FakeSidecar, follower, leader


class FollowerTests(unittest.TestCase):
    def start(self, fake, poll=1.0):
        gate = LeadershipGate()
        f = Follower(SidecarClient(fake.url), poll, gate)
        f.start()
        self.addCleanup(f.stop)
        return gate, f

    def fake(self, *args, **kwargs):
        fake = FakeSidecar(*args, **kwargs)
        self.addCleanup(fake.close)
        return fake

    def test_a_grant_comes_only_from_a_get_counted_from_before_the_request(self):
        logs = capture_logs(self)
        fake = self.fake(follower(4), stream_available=True)
        # A long poll interval: after the first GET, only the stream event can cause another.
        gate, _ = self.start(fake, poll=30.0)
        fake.wait_streams(1)
        fake.push(follower(4))
        logs.wait_for("sidecar reachable")
        # The first GET (sent at startup, before any stream event) has its follower answer,
        # so that every later GET is one the test scripts below.
        fake.wait_answered(1)

        # The sidecar becomes leader and says so on the stream. The event grants nothing by
        # itself: a GET (answered slowly, 300 ms) must confirm, and the grant counts from
        # before that GET was sent.
        gets_before = len(fake.gets)
        fake.set_answer(leader(5, 60_000), delay=0.3)
        pushed_at = time.monotonic()
        fake.push(leader(5, 60_000))
        grant = gate.opened(timeout=LIMIT)
        opened_at = time.monotonic()
        self.assertIsNotNone(grant)
        self.assertEqual(grant.term, 5)

        confirm = fake.gets[gets_before]
        arrived_at, answered_at = confirm
        self.assertGreaterEqual(grant.sent_at, pushed_at, "the GET was sent because of the event")
        self.assertLessEqual(grant.sent_at, arrived_at, "counted from before the request")
        self.assertIsNotNone(answered_at)
        self.assertGreaterEqual(opened_at, answered_at, "the gate opened only once the GET was answered")
        self.assertGreaterEqual(answered_at - arrived_at, 0.3, "the slow answer")
        self.assertAlmostEqual(grant.until, grant.sent_at + 60.0, places=6)

        # A stream event is_leader:false revokes at once, long before the grant would end.
        before = time.monotonic()
        fake.push(follower(6))
        self.assertEqual(gate.closed(5, timeout=LIMIT), Closed.REVOKED)
        self.assertLess(time.monotonic() - before, LIMIT)
        self.assertIsNone(gate.current())
        self.assertTrue(gate.reachable())

    def test_a_new_term_on_the_stream_closes_the_window_and_is_confirmed(self):
        fake = self.fake(leader(1, 60_000), stream_available=True)
        gate, _ = self.start(fake)
        self.assertEqual(gate.opened(timeout=LIMIT).term, 1)
        fake.wait_streams(1)
        fake.set_answer(leader(2, 60_000))
        fake.push(leader(2, 60_000))
        # The window of term 1 ends at once: the event revokes (published first, so a waiting
        # window sees REVOKED) and asks for a GET, whose grant is of term 2 (NEW_TERM if the
        # window only looks after that).
        self.assertIn(gate.closed(1, timeout=LIMIT), (Closed.REVOKED, Closed.NEW_TERM))
        self.assertEqual(gate.opened(timeout=LIMIT).term, 2)

    def test_stream_loss_revokes_at_once_then_polling_takes_over(self):
        logs = capture_logs(self)
        fake = self.fake(leader(5, 60_000), stream_available=True)
        gate, _ = self.start(fake, poll=0.2)
        fake.wait_streams(1)
        fake.push(leader(5, 60_000))
        self.assertEqual(gate.opened(timeout=LIMIT).term, 5)

        fake.close_streams(reopen=False)
        # Revoked at once (the stream closing), not when the 60 s grant would end; the
        # close is either seen directly or the stream is reported lost.
        reason = gate.closed(5, timeout=LIMIT)
        self.assertEqual(reason, Closed.REVOKED)
        logs.wait_for("leader stream lost; polling until it is back")
        self.assertTrue(logs.find("leader stream lost; polling until it is back")[0]["fields"]["reason"])

        # No stream: the poll fallback grants again.
        self.assertEqual(gate.opened(timeout=LIMIT).term, 5)

    def test_an_unreachable_sidecar_closes_the_gate_and_marks_it_unreachable(self):
        logs = capture_logs(self)
        # The stream opens but stays silent: it is not "up" (no event read), so the sidecar
        # is polled every interval. (A stream that fails to open would revoke at every
        # reconnect attempt by itself, as in the Rust follower.)
        fake = self.fake(leader(1, 60_000), stream_available=True)
        gate, _ = self.start(fake, poll=0.2)
        self.assertEqual(gate.opened(timeout=LIMIT).term, 1)
        self.assertTrue(gate.reachable())
        fake.set_answer("refuse")  # 503 from now on
        # The renewal half-way through the grant is 30 s away; but the sidecar is polled
        # every interval, and the first failed poll revokes.
        self.assertEqual(gate.closed(1, timeout=LIMIT), Closed.REVOKED)
        self.assertFalse(gate.reachable())
        logs.wait_for("leadership request failed: not leader")
        fake.set_answer(leader(1, 60_000))
        gate.opened(timeout=LIMIT)
        logs.wait_for("sidecar reachable", count=2)

    def test_a_hung_sidecar_never_extends_the_grant(self):
        fake = self.fake(leader(1, 1000), stream_available=True)  # open but silent
        gate, _ = self.start(fake, poll=0.2)
        gate.opened(timeout=LIMIT)
        fake.set_answer("hang")
        # The renewal at half the grant hangs and times out after one poll interval:
        # revoked (0.7 s after its send) before the grant (1 s) runs out.
        self.assertEqual(gate.closed(1, timeout=LIMIT), Closed.REVOKED)
        self.assertIsNone(gate.current())
        self.assertFalse(gate.reachable())

    def test_nothing_listening_means_never_leader(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        gate = LeadershipGate()
        f = Follower(SidecarClient(f"http://127.0.0.1:{port}"), 0.1, gate)
        f.start()
        self.addCleanup(f.stop)
        self.assertIsNone(gate.opened(timeout=0.5))
        self.assertFalse(gate.reachable())


class SidecarClientTests(unittest.TestCase):
    def test_get_and_yield(self):
        fake = FakeSidecar(leader(3, 2000))
        self.addCleanup(fake.close)
        client = SidecarClient(fake.url)
        status = client.get(2.0)
        self.assertTrue(status.is_leader)
        self.assertEqual((status.term, status.valid_for_ms), (3, 2000))
        self.assertEqual(client.yield_leadership(2.0), (True, 15000))
        fake.set_answer("refuse")
        with self.assertRaisesRegex(SourceError, "answered 503"):
            client.get(2.0)

    def test_bodies_are_strictly_parsed(self):
        ok = parse_leader_status(b'{"is_leader":true,"identity":"a","holder":null,"lease":"n/l",'
                                 b'"term":null,"valid_for_ms":5}')
        self.assertEqual((ok.is_leader, ok.term, ok.valid_for_ms), (True, None, 5))
        for body in [
            b"", b"null", b"[]", b"not json", b"\xff",
            b'{"is_leader":"true","identity":"a","lease":"l","valid_for_ms":5}',
            b'{"is_leader":true,"identity":"a","lease":"l","valid_for_ms":-1}',
            b'{"is_leader":true,"identity":"a","lease":"l","valid_for_ms":1.5}',
            b'{"is_leader":true,"identity":"a","lease":"l","valid_for_ms":true}',
            b'{"is_leader":true,"identity":"a","lease":"l"}',
            b'{"is_leader":true,"identity":"a","lease":"l","valid_for_ms":5,"term":"4"}',
            b'{"is_leader":true,"lease":"l","valid_for_ms":5}',
        ]:
            with self.subTest(body=body), self.assertRaises(SourceError):
                parse_leader_status(body)


if __name__ == "__main__":
    unittest.main()
