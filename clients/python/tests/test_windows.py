"""Active windows: work runs only between a grant opening and its end, each window is logged
with its term, and ``active window ended`` comes only after the window's work returned."""

import threading
import time
import unittest

import support
from support import capture_logs
from leader_client import Leadership, SourceError
from leader_client.gate import GateView, Grant, LeadershipGate
from leader_client.netutil import Aborted
from leader_client.testing import LIMIT, FakeSidecar, follower, leader
from leader_client.windows import WindowLoop, run_in_thread


def granted(term, seconds=3600.0):
    now = time.monotonic()
    return GateView(grant=Grant(term=term, sent_at=now, until=now + seconds), reachable=True)


class Recorder:
    """Work that records what it saw and waits for its window to end."""

    def __init__(self):
        self.cond = threading.Condition()
        self.started = []
        self.returned = []

    def __call__(self, window):
        with self.cond:
            self.started.append(window)
            self.cond.notify_all()
        while not window.wait(LIMIT):
            pass
        with self.cond:
            self.returned.append((window, time.monotonic()))
            self.cond.notify_all()

    def wait_started(self, n):
        support_wait(self.cond, lambda: len(self.started) >= n, f"{n} windows started")
        return self.started[n - 1]


def support_wait(cond, predicate, what):
    with cond:
        if not cond.wait_for(predicate, LIMIT):
            raise AssertionError(f"timed out waiting for {what}")


class WindowLoopTests(unittest.TestCase):
    def start_loop(self, gate, work, restart_delay=1.0):
        loop = WindowLoop(gate, restart_delay)
        thread = threading.Thread(target=loop.run, args=(run_in_thread(work),), daemon=True)
        thread.start()

        def stop():
            loop.stop()
            thread.join(LIMIT)
            self.assertFalse(thread.is_alive(), "the window loop did not return after stop()")

        self.addCleanup(stop)
        return loop, thread

    def test_a_new_term_ends_the_window_and_opens_one_in_the_new_term(self):
        logs = capture_logs(self)
        gate = LeadershipGate()
        work = Recorder()
        self.start_loop(gate, work)
        self.assertEqual(work.started, [])
        gate.publish(granted(3))
        first = work.wait_started(1)
        self.assertEqual(first.term, 3)
        self.assertIsNotNone(first.grant())
        self.assertTrue(first.active())

        gate.publish(granted(4))
        second = work.wait_started(2)
        self.assertEqual(second.term, 4)
        self.assertTrue(first.ended())
        self.assertEqual(first.reason, "new term")
        self.assertIsNone(first.grant(), "an ended window grants nothing, whatever the gate says")
        with self.assertRaises(Aborted):
            first.requests.begin()
        ended = logs.wait_for("active window ended", term=3)
        self.assertEqual(ended[0]["fields"]["reason"], "new term")
        self.assertEqual(logs.messages()[:3], ["active window started", "active window ended", "active window started"])

    def test_a_grant_that_runs_out_ends_the_window_without_any_publication(self):
        logs = capture_logs(self)
        gate = LeadershipGate()
        work = Recorder()
        self.start_loop(gate, work)
        gate.publish(granted(5, seconds=0.3))
        window = work.wait_started(1)
        logs.wait_for("active window ended", term=5, reason="expired")
        self.assertTrue(window.ended())
        with work.cond:
            self.assertEqual([w for w, _ in work.returned], [window])

    def test_work_that_fails_ends_its_window_and_runs_again_in_the_next(self):
        logs = capture_logs(self)
        gate = LeadershipGate()
        calls = []

        def work(window):
            calls.append(window)
            raise RuntimeError("boom")

        self.start_loop(gate, work, restart_delay=0.05)
        gate.publish(granted(2))
        logs.wait_for("active window ended", term=2, reason="work failed", count=2)
        failed = logs.find("window work failed", term=2)
        self.assertEqual(failed[0]["fields"]["error"], "RuntimeError: boom")
        self.assertGreaterEqual(len(calls), 2)

    def test_stop_ends_the_open_window_with_reason_shutdown_after_its_work_returned(self):
        logs = capture_logs(self)
        gate = LeadershipGate()
        work = Recorder()
        loop, thread = self.start_loop(gate, work)
        gate.publish(granted(9))
        window = work.wait_started(1)
        loop.stop()
        thread.join(LIMIT)
        self.assertFalse(thread.is_alive())
        self.assertEqual(window.reason, "shutdown")
        ended = logs.find("active window ended", term=9, reason="shutdown")
        self.assertEqual(len(ended), 1)
        self.assertEqual(len(work.returned), 1, "the work returned before run() did")

    def test_stop_before_any_grant_returns_at_once(self):
        gate = LeadershipGate()
        loop, thread = self.start_loop(gate, Recorder())
        self.assertTrue(gate.wait_for_waiters(1, LIMIT))
        loop.stop()
        thread.join(LIMIT)
        self.assertFalse(thread.is_alive())


class LeadershipTests(unittest.TestCase):
    def test_work_runs_while_the_sidecar_grants_and_stops_when_it_revokes(self):
        logs = capture_logs(self)
        fake = FakeSidecar(leader(7, 60_000))
        self.addCleanup(fake.close)
        lead = Leadership(fake.url, poll_interval=0.2)
        self.addCleanup(lead.close)
        work = Recorder()
        runner = threading.Thread(target=lead.run, args=(work,), daemon=True)
        runner.start()

        window = work.wait_started(1)
        self.assertEqual(window.term, 7)
        grant = window.grant()
        self.assertIsNotNone(grant)
        self.assertLessEqual(grant.until - grant.sent_at, 60.0)

        # The sidecar loses leadership: the stream says so, the window ends at once.
        fake.wait_streams(1)
        fake.set_answer(follower(8))
        fake.push(follower(8))
        ended = logs.wait_for("active window ended", term=7)
        self.assertEqual(ended[0]["fields"]["reason"], "revoked")
        with work.cond:
            self.assertEqual(len(work.returned), 1, "the window's work returned before it was logged ended")
        self.assertIsNone(lead.current_window)

        lead.stop()
        runner.join(LIMIT)
        self.assertFalse(runner.is_alive())
        self.assertEqual(lead.yield_leadership(2.0), (True, 15000))
        self.assertEqual(fake.yields, 1)

    def test_an_unreachable_sidecar_grants_nothing(self):
        lead = Leadership("http://127.0.0.1:9", poll_interval=0.1)
        self.addCleanup(lead.close)
        lead.start()
        self.assertIsNone(lead.gate.opened(timeout=0.5))
        with self.assertRaises(SourceError):
            lead.yield_leadership(0.5)

    def test_bad_arguments_are_refused(self):
        with self.assertRaises(ValueError):
            Leadership("https://127.0.0.1:4040")
        with self.assertRaises(ValueError):
            Leadership(poll_interval=0)


if __name__ == "__main__":
    unittest.main()
