"""Reconcile decisions (pure): desired status, when not to write, the PUT body, the error
types, the backoff, and the work queue's one-worker-per-key guarantee."""

import threading
import unittest

import support
from support import FakeClock
import kube
from reconcile import (Backoff, Conflict, GrantExpired, NotLeader, Unaddressable, build_update, classify,
                       desired_status, has_status, object_key)
from workers import WorkQueue


def obj(generation=4, status=None, rv="17"):
    o = {"apiVersion": "apps.newresource.com/v1alpha1", "kind": "NewResource",
         "metadata": {"name": "x", "namespace": "ns", "generation": generation, "resourceVersion": rv,
                      "managedFields": [{"manager": "kubectl"}]},
         "spec": {"foo": "bar"}}
    if status is not None:
        o["status"] = status
    return o


class DecisionTests(unittest.TestCase):
    def test_desired_status_follows_the_generation(self):
        self.assertEqual(desired_status(obj(4)), {"ready": True, "observedGeneration": 4})
        no_gen = obj()
        del no_gen["metadata"]["generation"]
        self.assertEqual(desired_status(no_gen), {"ready": True})
        self.assertEqual(desired_status({}), {"ready": True})

    def test_no_write_when_the_status_is_already_right(self):
        self.assertTrue(has_status(obj(4, {"ready": True, "observedGeneration": 4}), desired_status(obj(4))))
        # Fields that are not ours do not matter.
        self.assertTrue(has_status(obj(4, {"ready": True, "observedGeneration": 4, "note": "x"}),
                                   desired_status(obj(4))))

    def test_a_write_when_the_status_differs(self):
        for status in [None, {}, {"ready": False, "observedGeneration": 4}, {"ready": True, "observedGeneration": 3},
                       {"ready": True}, {"ready": 1, "observedGeneration": 4},
                       {"ready": True, "observedGeneration": 4.0}, {"ready": True, "observedGeneration": True},
                       "ready"]:
            with self.subTest(status=status):
                o = obj(4, status) if status is not None else obj(4)
                self.assertFalse(has_status(o, desired_status(o)))

    def test_the_put_body_keeps_the_resource_version_and_drops_managed_fields(self):
        o = obj(4, {"ready": False, "other": 1}, rv="42")
        body = build_update(o, desired_status(o))
        self.assertEqual(body["metadata"]["resourceVersion"], "42", "compare-and-swap")
        self.assertNotIn("managedFields", body["metadata"])
        self.assertEqual(body["status"], {"ready": True, "observedGeneration": 4})
        self.assertEqual(body["spec"], {"foo": "bar"})
        self.assertIn("managedFields", o["metadata"], "the cached object is not modified")
        self.assertEqual(o["status"], {"ready": False, "other": 1})

    def test_object_keys(self):
        self.assertEqual(object_key(obj()), "ns/x")
        for bad in [None, [], {}, {"metadata": None}, {"metadata": {"name": "x"}},
                    {"metadata": {"namespace": "ns"}}, {"metadata": {"name": "", "namespace": "ns"}},
                    {"metadata": {"name": 3, "namespace": "ns"}}]:
            with self.subTest(obj=bad):
                self.assertIsNone(object_key(bad))

    def test_error_types(self):
        cases = [
            (kube.ApiError(409, "changed"), "conflict"),
            (kube.ApiError(403, 'cannot update resource "newresources/status"'), "forbidden"),
            (kube.ApiError(429, "slow down"), "throttled"),
            (kube.ApiError(500, "oops"), "server"),
            (kube.ApiError(503, "unavailable"), "server"),
            (kube.ApiError(422, "invalid"), "api"),
            (kube.ApiError(401, "unauthorized"), "api"),
            (kube.TransportError("reset"), "transport"),
            (kube.TransportError("timed out", timeout=True), "transport"),
            (NotLeader(), "not_leader"),
            (GrantExpired(), "grant_expired"),
            (Unaddressable(), "invalid_object"),
            (KeyError("x"), "internal"),
        ]
        for e, error_type in cases:
            with self.subTest(e=e):
                self.assertEqual(classify(e).error_type, error_type)
        self.assertEqual(str(classify(kube.ApiError(403, "no"))), "API error 403: no")
        self.assertEqual(str(classify(kube.ApiError(409, "changed"))), "conflict: changed")
        self.assertIsInstance(classify(kube.ApiError(409, "changed")), Conflict)

    def test_api_error_codes(self):
        self.assertEqual(kube.error_code(kube.ApiError(403, "x")), "403")
        self.assertEqual(kube.error_code(kube.TransportError("x", timeout=True)), "timeout")
        self.assertEqual(kube.error_code(kube.TransportError("x")), "transport")
        e = kube.api_error_from(403, b'{"kind":"Status","message":"forbidden!","reason":"Forbidden","code":403}')
        self.assertEqual((e.code, e.message, e.reason), (403, "forbidden!", "Forbidden"))
        self.assertEqual(kube.api_error_from(502, b"bad gateway").message, "bad gateway")


class BackoffTests(unittest.TestCase):
    def test_backoff_doubles_to_a_cap_and_resets(self):
        b = Backoff()
        delays = [round(b.next("ns/a") * 1000) for _ in range(12)]
        self.assertEqual(delays, [200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 60000, 60000, 60000])
        self.assertEqual(b.next("ns/b"), 0.2, "backoff is per object")
        b.reset("ns/a")
        self.assertEqual(b.next("ns/a"), 0.2)
        for _ in range(10_000):
            b.next("ns/a")
        self.assertEqual(b.next("ns/a"), 60.0, "no overflow after many failures")


class WorkQueueTests(unittest.TestCase):
    def test_a_key_queued_twice_is_handed_out_once(self):
        q = WorkQueue()
        q.add("a")
        q.add("b")
        q.add("a")
        self.assertEqual(len(q), 2)
        self.assertEqual(q.get(), "a")
        self.assertEqual(q.get(), "b")

    def test_a_key_is_never_handed_to_two_workers_at_once(self):
        q = WorkQueue()
        q.add("a")
        self.assertEqual(q.get(), "a")
        q.add("a")  # changed while a worker reconciles it
        self.assertEqual(len(q), 0, "held back until the first worker is done")
        q.add("b")
        self.assertEqual(q.get(), "b")
        q.done("a")
        self.assertEqual(q.get(), "a", "handed out again after done")

    def test_delayed_adds_wait_for_their_time(self):
        clock = FakeClock()
        q = WorkQueue(clock)
        q.add_after("late", 5.0)
        q.add_after("early", 1.0)
        q.add("now")
        self.assertEqual(q.get(), "now")
        clock.advance(1.0)
        self.assertEqual(q.get(), "early")
        clock.advance(4.0)
        self.assertEqual(q.get(), "late")

    def test_shutdown_wakes_waiting_workers(self):
        q = WorkQueue()
        got = []
        threads = [threading.Thread(target=lambda: got.append(q.get())) for _ in range(3)]
        for t in threads:
            t.start()
        q.shutdown()
        for t in threads:
            t.join(support.LIMIT)
        self.assertEqual(got, [None, None, None])
        q.add("a")
        self.assertIsNone(q.get(), "nothing is handed out after shutdown")


if __name__ == "__main__":
    unittest.main()
