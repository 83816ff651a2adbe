"""Probes and metrics: the contracted names, GET/HEAD only, JSON errors, readiness rules."""

import http.client
import json
import time
import unittest

import support  # noqa: F401
from support import LIMIT
import admin
from leader_client.gate import GateView, LeadershipGate
from metrics import Metrics


class MetricsTests(unittest.TestCase):
    def test_exposes_the_contracted_names(self):
        m = Metrics()
        m.reconciled(0.001, "error", "conflict")
        m.set_leader(True)
        text = m.encode()
        for needle in [
            'controller_reconcile_total{controller="newresource",result="error"} 1',
            'controller_reconcile_total{controller="newresource",result="success"} 0',
            'controller_reconcile_total{controller="newresource",result="not_found"} 0',
            'controller_reconcile_errors_total{controller="newresource",error_type="conflict"} 1',
            'controller_reconcile_duration_seconds_count{controller="newresource"} 1',
            'controller_reconcile_duration_seconds_bucket{le="0.0005",controller="newresource"} 0',
            'controller_reconcile_duration_seconds_bucket{le="0.002",controller="newresource"} 1',
            'controller_reconcile_duration_seconds_bucket{le="16.384",controller="newresource"} 1',
            'controller_reconcile_duration_seconds_bucket{le="+Inf",controller="newresource"} 1',
            'controller_leader{controller="newresource"} 1',
            'controller_active_windows_total{controller="newresource"} 1',
            "# TYPE controller_reconcile_duration_seconds histogram",
            "# HELP controller_leader ",
        ]:
            self.assertIn(needle, text)
        self.assertTrue(text.endswith("# EOF\n"))

    def test_series_exported_at_zero_from_the_start(self):
        text = Metrics().encode()
        self.assertIn('controller_leader{controller="newresource"} 0', text)
        self.assertIn('controller_active_windows_total{controller="newresource"} 0', text)
        self.assertIn('controller_reconcile_duration_seconds_sum{controller="newresource"} 0.0', text)
        self.assertNotIn("controller_api_errors_total{", text, "no series before a failure")

    def test_counts_failed_api_requests_by_resource_verb_and_code(self):
        m = Metrics()
        m.api_error("newresources", "list", "403")
        m.api_error("newresources", "list", "403")
        m.api_error("newresources", "watch", "transport")
        m.api_error("newresources/status", "update", "timeout")
        text = m.encode()
        for needle in [
            "# TYPE controller_api_errors counter",
            'controller_api_errors_total{controller="newresource",resource="newresources",verb="list",code="403"} 2',
            'controller_api_errors_total{controller="newresource",resource="newresources",verb="watch",'
            'code="transport"} 1',
            'controller_api_errors_total{controller="newresource",resource="newresources/status",verb="update",'
            'code="timeout"} 1',
        ]:
            self.assertIn(needle, text)


class ProbeServerTests(unittest.TestCase):
    def serve(self, routes):
        server = admin.AdminServer(("127.0.0.1", 0), {})
        server.set_routes(routes)
        server.start("test-admin")
        self.addCleanup(server.close)
        host, port = server.address.rsplit(":", 1)
        return host, int(port)

    def request(self, addr, method, path):
        conn = http.client.HTTPConnection(*addr, timeout=LIMIT)
        try:
            conn.request(method, path)
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()

    def test_probes(self):
        gate = LeadershipGate()
        api_ok = [False]
        age = [0.0]
        probes = admin.Probes(gate, True, lambda: api_ok[0], lambda: age[0], 10.0)
        addr = self.serve(admin.health_routes(probes))

        self.assertEqual(self.request(addr, "GET", "/healthz")[::2], (200, b"ok\n"))
        status, _, body = self.request(addr, "GET", "/readyz")
        self.assertEqual(status, 503)
        self.assertEqual(json.loads(body), {"error": "the leader sidecar is not reachable"})

        gate.publish(GateView(grant=None, reachable=True))  # a reachable standby
        status, _, body = self.request(addr, "GET", "/readyz")
        self.assertEqual(status, 503)
        self.assertIn("Kubernetes API", json.loads(body)["error"])
        api_ok[0] = True
        self.assertEqual(self.request(addr, "GET", "/readyz")[::2], (200, b"ok\n"), "a standby is ready")

        age[0] = 12.5
        status, _, body = self.request(addr, "GET", "/healthz")
        self.assertEqual(status, 503)
        self.assertEqual(json.loads(body), {"error": "the leadership follower has not run for 12500ms"})

    def test_only_get_and_head_and_json_errors(self):
        addr = self.serve(admin.metrics_routes(Metrics()))
        status, headers, body = self.request(addr, "GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "application/openmetrics-text; version=1.0.0; charset=utf-8")
        self.assertIn(b"controller_leader", body)
        status, headers, body = self.request(addr, "HEAD", "/metrics")
        self.assertEqual((status, body), (200, b""))
        for method in ("POST", "PUT", "DELETE", "PATCH", "BREW"):
            status, headers, body = self.request(addr, method, "/metrics")
            self.assertEqual(status, 405, method)
            self.assertEqual(headers["Allow"], "GET, HEAD")
            self.assertEqual(json.loads(body), {"error": "only GET and HEAD are served here"})
        status, _, body = self.request(addr, "GET", "/nope")
        self.assertEqual((status, json.loads(body)), (404, {"error": "no such path: /nope"}))

    def test_without_leader_election_readiness_needs_only_the_api(self):
        probes = admin.Probes(LeadershipGate.always_open(), False, lambda: True, None, 10.0)
        self.assertIsNone(probes.ready())
        self.assertIsNone(probes.healthy())


class ApiCheckTests(unittest.TestCase):
    def test_outcome_changes_are_logged_and_failures_counted(self):
        import kube
        logs = support.capture_logs(self)
        api = support.FakeApi()
        self.addCleanup(api.close)
        metrics = Metrics()
        check = admin.ApiCheck(kube.KubeClient(api.url, None, None, 5.0), "default", metrics)
        state = check.check_once(None)
        self.assertEqual(state, "ok")
        self.assertTrue(check.ok)
        self.assertEqual(check.check_once(state), "ok")
        self.assertEqual(len(logs.find("connected to the Kubernetes API")), 1, "logged once, on the change")
        self.assertEqual(api.requests[0][2], {"limit": "1"})

        api.close()
        state = check.check_once(state)
        self.assertEqual(state, "transport")
        self.assertFalse(check.ok)
        line = logs.wait_for("cannot list newresources")[0]
        self.assertEqual((line["level"], line["fields"]["code"], line["fields"]["verb"]), ("ERROR", "transport", "list"))
        self.assertIn('resource="newresources",verb="list",code="transport"} 1', metrics.encode())


if __name__ == "__main__":
    unittest.main()
