"""Active windows against a fake API server (http.server on port 0) that records requests:
list then status PUT carrying the resourceVersion, no write when the status is right, a 409
retried once the watch brings the newer object, writes abandoned when the grant ends or the
window stops, and the window loop's log order."""

import threading
import time
import unittest

import support
from support import LIMIT, FakeApi, capture_logs
import kube
from leader_client.gate import GateView, Grant, LeadershipGate
from metrics import Metrics
from workers import Window, Workers

COLLECTION = "/apis/apps.newresource.com/v1alpha1/namespaces/default/newresources"


class RecordingMetrics(Metrics):
    """Metrics that let a test wait for reconciles."""

    def __init__(self):
        super().__init__()
        self.cond = threading.Condition()
        self.outcomes = []

    def reconciled(self, seconds, outcome, error_type=None):
        super().reconciled(seconds, outcome, error_type)
        with self.cond:
            self.outcomes.append((outcome, error_type))
            self.cond.notify_all()

    def wait(self, predicate, what):
        support.wait_until(self.cond, lambda: predicate(self.outcomes), what)


def granted(term=3, seconds=3600.0):
    gate = LeadershipGate()
    now = time.monotonic()
    gate.publish(GateView(grant=Grant(term=term, sent_at=now, until=now + seconds), reachable=True))
    return gate


class WindowTests(unittest.TestCase):
    def setUp(self):
        self.api = FakeApi()
        self.addCleanup(self.api.close)
        self.client = kube.KubeClient(self.api.url, None, None, timeout=5.0)
        self.metrics = RecordingMetrics()

    def window(self, gate, workers=1, namespace="default"):
        w = Window(self.client, namespace, workers, gate, self.metrics, gate.view().grant.term)
        w.start()
        self.addCleanup(w.stop)
        return w

    def assert_only_allowed_requests(self):
        """The RBAC grants list/watch on newresources and update on their status: nothing else."""
        for method, path, query, _, _, _ in self.api.requests:
            if method == "GET":
                self.assertTrue(path.endswith("/newresources"), path)
            else:
                self.assertEqual(method, "PUT")
                self.assertTrue(path.endswith("/status"), path)

    def test_list_then_a_status_put_carrying_the_resource_version_and_no_write_when_right(self):
        logs = capture_logs(self)
        a = self.api.create("default", "a")
        self.api.create("default", "b", status={"ready": True, "observedGeneration": 1})
        self.api.create("other", "c")  # another namespace: not ours
        self.window(granted(term=3))

        logs.wait_for("status ready", object="default/a", term=3)
        # Both listed objects were reconciled: a with a write, b without one.
        self.metrics.wait(lambda o: len(o) >= 2, "two reconciles")
        puts = self.api.puts()
        self.assertEqual(len(puts), 1, puts)
        method, path, _, body, code, _ = puts[0]
        self.assertEqual(path, f"{COLLECTION}/a/status")
        self.assertEqual(code, 200)
        self.assertEqual(body["metadata"]["resourceVersion"], a["metadata"]["resourceVersion"])
        self.assertNotIn("managedFields", body["metadata"])
        self.assertEqual(body["status"], {"ready": True, "observedGeneration": 1})
        first = self.api.requests[0]
        self.assertEqual((first[0], first[1], first[2].get("limit")), ("GET", COLLECTION, "500"))
        self.assert_only_allowed_requests()

        # A spec change arrives through the watch: written again for the new generation.
        self.api.change_spec("default/b", "new")
        logs.wait_for("status ready", object="default/b", term=3)
        last = self.api.puts()[-1]
        self.assertEqual(last[3]["status"], {"ready": True, "observedGeneration": 2})
        self.assertEqual(self.api.objects["default/b"]["status"]["observedGeneration"], 2)
        watches = [r for r in self.api.requests if r[2].get("watch") == "1"]
        self.assertTrue(watches)
        self.assertEqual(watches[0][2]["allowWatchBookmarks"], "true")
        self.assertTrue(all(p[4] == 200 for p in self.api.puts()))
        self.assert_only_allowed_requests()

    def someone_else_writes_first(self):
        """A PUT hook: while our first PUT is on its way, a user changes the object, and the
        watch is slow (it holds the change back)."""
        fired = []

        def hook(body):
            if not fired:
                fired.append(True)
                self.api.hold_events = True
                self.api.change_spec("default/a", "changed")
            return None

        return hook

    def test_a_conflict_is_retried_once_the_watch_brings_the_newer_object(self):
        logs = capture_logs(self)
        old = self.api.create("default", "a")
        self.api.put_hook = self.someone_else_writes_first()
        self.window(granted())

        # The write based on the old read fails with 409...
        self.api.wait_requests(lambda rs: any(r[0] == "PUT" and r[4] == 409 for r in rs), "a 409")
        failed = logs.wait_for("reconcile failed", object="default/a", error_type="conflict")
        self.assertEqual(failed[0]["fields"]["retry_in_ms"], 200)
        self.assertEqual(failed[0]["level"], "WARN")
        # ...and once the watch delivers the newer object, the retry carries its version.
        self.api.release_events()
        logs.wait_for("status ready", object="default/a")
        puts = self.api.puts()
        new_rv = None
        for method, path, _, body, code, _ in puts:
            if code == 409:
                self.assertEqual(body["metadata"]["resourceVersion"], old["metadata"]["resourceVersion"])
            else:
                self.assertEqual(code, 200)
                new_rv = body["metadata"]["resourceVersion"]
                self.assertEqual(body["status"], {"ready": True, "observedGeneration": 2})
        self.assertIsNotNone(new_rv)
        self.assertNotEqual(new_rv, old["metadata"]["resourceVersion"])
        self.assertIn('controller_reconcile_errors_total{controller="newresource",error_type="conflict"}',
                      self.metrics.encode())
        self.assertNotIn('resource="newresources/status",verb="update",code="409"', self.metrics.encode(),
                         "a conflict is an expected answer, not an API error")

    def test_a_deleted_object_is_gone_not_a_conflict(self):
        """The write for an object deleted since it was read names its UID: a real server
        answers 409, and a re-read by name shows that the object is gone: success."""
        logs = capture_logs(self)
        self.api.create("default", "a")

        def deleted_meanwhile(body):
            # The object is deleted while our PUT is on its way; the watch has not told us.
            if "default/a" in self.api.objects:
                self.api.hold_events = True
                self.api.delete("default/a")
            return None

        self.api.put_hook = deleted_meanwhile
        self.window(granted())
        self.metrics.wait(lambda o: ("not_found", None) in o, "the reconcile ending as not_found")
        codes = [r[4] for r in self.api.puts()]
        self.assertEqual(codes, [409], "one write, answered with the UID precondition's 409")
        reread = [r for r in self.api.requests if r[2].get("fieldSelector") == "metadata.name=a"]
        self.assertEqual(len(reread), 1, self.api.requests)
        self.assertEqual(reread[0][4], 200)
        self.assertNotIn("error", [o for o, _ in self.metrics.outcomes])
        self.assertEqual(logs.find("reconcile failed"), [])
        self.assert_only_allowed_requests()

    def test_a_conflict_on_a_live_object_is_still_a_conflict_after_the_re_read(self):
        self.api.create("default", "a")
        self.api.put_hook = self.someone_else_writes_first()
        self.window(granted())
        self.metrics.wait(lambda o: ("error", "conflict") in o, "a conflict")
        reread = [r for r in self.api.requests if r[2].get("fieldSelector") == "metadata.name=a"]
        self.assertEqual(len(reread), 1)

    def test_a_write_is_abandoned_when_the_grant_ends_and_none_is_sent_without_one(self):
        self.api.create("default", "a")
        self.api.put_hook = lambda body: "hang"
        gate = granted(term=1, seconds=1.0)
        self.window(gate)
        self.metrics.wait(lambda o: ("error", "grant_expired") in o, "the write abandoned at the grant's end")
        # The retry finds no grant: nothing is sent.
        self.metrics.wait(lambda o: ("error", "not_leader") in o, "a retry without a grant")
        self.assertEqual(len(self.api.puts()), 1)

    def test_stopping_a_window_aborts_the_write_in_flight_and_sends_nothing_after(self):
        self.api.create("default", "a")
        self.api.put_hook = lambda body: "hang"
        w = self.window(granted())
        self.api.wait_requests(lambda rs: any(r[0] == "PUT" for r in rs), "the PUT")
        started = time.monotonic()
        w.stop()
        self.assertLess(time.monotonic() - started, LIMIT)
        # stop() returned: every thread of the window has ended, so nothing of it can send.
        self.assertTrue(all(not t.is_alive() for t in w._threads))
        self.api.unhang()
        self.assertNotIn(("success", None), self.metrics.outcomes, "the abandoned write is not a success")
        self.assertEqual(self.metrics.outcomes, [], "a write cut by the window's end is not counted (as Rust)")

    def test_a_watch_answered_410_lists_again_and_reconciles_what_it_missed(self):
        logs = capture_logs(self)
        self.api.create("default", "a")
        self.window(granted())
        logs.wait_for("status ready", object="default/a")
        # b is created, but the watch does not see it before the history is compacted and
        # the watch ends: resuming from the old version gets 410, and only a new list finds b.
        self.api.hold_events = True
        self.api.create("default", "b")
        self.api.compact()
        logs.wait_for("status ready", object="default/b")
        failed = logs.find("watching newresources failed")[0]["fields"]
        self.assertEqual((failed["verb"], failed["code"], failed["resource"]), ("watch", "410", "newresources"))
        lists = [r for r in self.api.requests if r[0] == "GET" and "watch" not in r[2]]
        self.assertEqual(len(lists), 2, "one list per window, one after the 410")
        self.assertIn('resource="newresources",verb="watch",code="410"} 1', self.metrics.encode())

    def test_malformed_watch_lines_are_logged_and_skipped(self):
        logs = capture_logs(self)
        w = self.window(granted())
        w.synced.wait(LIMIT)
        self.assertEqual(w._apply(kube.BadLine("not JSON"), "5"), "5")
        self.assertEqual(w._apply({"type": "ADDED", "object": {"metadata": {}}}, "5"), "5")
        self.assertEqual(w._apply({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}, "5"), "9")
        self.assertEqual(w._apply({"object": {}}, "9"), "9")
        self.assertEqual(len(logs.find("ignoring a malformed watch event")), 2)
        self.assertEqual(len(logs.find("ignoring a newresource without namespace or name")), 1)

    def test_no_write_under_a_grant_of_another_term(self):
        self.api.create("default", "a")
        gate = granted(term=4)
        w = Window(self.client, "default", 1, gate, self.metrics, term=3)
        w.start()
        self.addCleanup(w.stop)
        self.metrics.wait(lambda o: ("error", "not_leader") in o, "a write refused")
        self.assertEqual(self.api.puts(), [])

    def test_malformed_objects_are_skipped(self):
        logs = capture_logs(self)
        self.api.create("default", "a")
        with self.api.cond:
            self.api.objects["default/broken"] = {"metadata": {"namespace": "default"}}
        self.window(granted())
        logs.wait_for("status ready", object="default/a")
        logs.wait_for("ignoring a newresource without namespace or name")


class WorkersTests(unittest.TestCase):
    def test_the_window_opens_and_closes_with_the_gate_in_log_order(self):
        logs = capture_logs(self)
        api = FakeApi()
        self.addCleanup(api.close)
        api.create("default", "a")
        client = kube.KubeClient(api.url, None, None, timeout=5.0)
        gate = LeadershipGate()
        workers = Workers(client, "default", 2, gate, Metrics())
        t = threading.Thread(target=workers.run)
        t.start()
        self.addCleanup(lambda: (workers.shutdown(), t.join(LIMIT)))

        now = time.monotonic()
        gate.publish(GateView(grant=Grant(term=4, sent_at=now, until=now + 3600), reachable=True))
        logs.wait_for("status ready", object="default/a", term=4)
        gate.publish(GateView(grant=None, reachable=True))  # revoked
        logs.wait_for("active window ended", term=4, reason="revoked")
        self.assertEqual(workers.metrics.encode().count('controller_leader{controller="newresource"} 0'), 1)

        gate.publish(GateView(grant=Grant(term=5, sent_at=now, until=now + 3600), reachable=True))
        logs.wait_for("active window started", term=5)
        workers.shutdown()
        t.join(LIMIT)
        self.assertFalse(t.is_alive())
        logs.wait_for("active window ended", term=5, reason="shutdown")

        window_lines = [m for m in logs.messages() if m in (
            "active window started", "Starting workers", "status ready", "Stopping workers", "active window ended")]
        self.assertEqual(window_lines[:5], ["active window started", "Starting workers", "status ready",
                                            "Stopping workers", "active window ended"])
        self.assertEqual(window_lines[5:], ["active window started", "Starting workers", "Stopping workers",
                                            "active window ended"])
        started = logs.find("Starting workers")[0]["fields"]
        self.assertEqual((started["controller"], started["worker_count"]), ("newresource", 2))
        self.assertIn('controller_active_windows_total{controller="newresource"} 2', workers.metrics.encode())


if __name__ == "__main__":
    unittest.main()
