"""The whole controller as a process (``controller.py`` in a subprocess) against the fake
sidecar and the fake API: startup line with the bound ports, probes and metrics, a window per
grant, revocation, SIGTERM -> window closed -> yield -> stopped -> exit 0; a second signal
exits at once; an essential thread that dies ends the process."""

import http.client
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import unittest

import support
from support import LIMIT, FakeApi, FakeSidecar, LogCapture, follower, leader

CONTROLLER = os.path.join(support.ROOT, "controller.py")


def minimal_env():
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ in the source tree
    return env


class Process:
    """The controller process with its JSON log lines captured as they come."""

    def __init__(self, args):
        self.logs = LogCapture()
        self.proc = subprocess.Popen([sys.executable, CONTROLLER] + args, env=minimal_env(),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.logs.write(line)

    def wait(self):
        rc = self.proc.wait(LIMIT)
        self._reader.join(LIMIT)
        return rc

    def kill(self):
        """Cleanup: ends the process if a test left it running, and closes the pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(LIMIT)
        self._reader.join(LIMIT)
        self.proc.stderr.close()


def get(address, path):
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=LIMIT)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


class ControllerProcessTests(unittest.TestCase):
    def setUp(self):
        self.api = FakeApi()
        self.addCleanup(self.api.close)
        self.sidecar = FakeSidecar(leader(7, 2000))
        self.addCleanup(self.sidecar.close)

    def start(self, *extra):
        p = Process(["--server", self.api.url, "--leader-url", self.sidecar.url, "--leader-poll-interval", "200ms",
                     "--metrics-bind-address", "127.0.0.1:0", "--health-probe-bind-address", "127.0.0.1:0",
                     "--log-format", "json", "--namespace", "default", *extra])
        self.addCleanup(p.kill)
        return p

    def test_windows_follow_the_sidecar_and_sigterm_closes_then_yields(self):
        self.api.create("default", "a")
        p = self.start()
        start = p.logs.wait_for("newresource-controller starting")[0]["fields"]
        self.assertEqual(start["leader_url"], self.sidecar.url)
        self.assertEqual(start["namespace"], "default")
        self.assertNotEqual(start["metrics"].rsplit(":", 1)[1], "0", "the bound port, not 0")

        p.logs.wait_for("status ready", object="default/a", term=7)
        p.logs.wait_for("connected to the Kubernetes API")
        self.assertEqual(get(start["health"], "/healthz"), (200, b"ok\n"))
        self.assertEqual(get(start["health"], "/readyz"), (200, b"ok\n"))
        status, body = get(start["metrics"], "/metrics")
        self.assertEqual(status, 200)
        self.assertIn(b'controller_leader{controller="newresource"} 1', body)
        put = self.api.puts()[0]
        self.assertEqual(put[1], "/apis/apps.newresource.com/v1alpha1/namespaces/default/newresources/a/status")

        # The sidecar says we are no longer leader: the window ends (next poll, 200 ms).
        self.sidecar.set_answer(follower(8))
        p.logs.wait_for("active window ended", term=7, reason="revoked")
        self.sidecar.set_answer(leader(9, 2000))
        p.logs.wait_for("active window started", term=9)

        p.proc.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(), 0)
        order = [line["fields"] for line in p.logs.lines]
        messages = [f["message"] for f in order]
        self.assertEqual(messages[-1], "newresource-controller stopped")
        i_end = max(i for i, f in enumerate(order) if f["message"] == "active window ended")
        self.assertEqual((order[i_end]["term"], order[i_end]["reason"]), (9, "shutdown"))
        i_yield = messages.index("yielded leadership")
        self.assertLess(i_end, i_yield, "workers stopped before the yield")
        self.assertEqual((order[i_yield]["was_leader"], order[i_yield]["backoff_ms"]), (True, 15000))
        self.assertEqual(self.sidecar.yields, 1)
        starts = [f for f in order if f["message"] == "active window started"]
        ends = [f for f in order if f["message"] == "active window ended"]
        self.assertEqual([f["term"] for f in starts], [7, 9])
        self.assertEqual([(f["term"], f["reason"]) for f in ends], [(7, "revoked"), (9, "shutdown")])

    def test_a_second_signal_during_shutdown_exits_at_once(self):
        self.sidecar.yield_hangs = True
        p = self.start()
        p.logs.wait_for("active window started", term=7)
        p.proc.send_signal(signal.SIGTERM)
        support.wait_until(self.sidecar.cond, lambda: self.sidecar.yields >= 1, "the yield")
        p.proc.send_signal(signal.SIGINT)
        self.assertEqual(p.wait(), 1)
        p.logs.wait_for("second signal during shutdown; exiting at once")
        self.assertNotIn("newresource-controller stopped", p.logs.messages())

    def test_without_leader_election_the_gate_is_always_open(self):
        self.api.create("default", "a")
        p = Process(["--server", self.api.url, "--leader-elect=false", "--metrics-bind-address", "0",
                     "--health-probe-bind-address", "0", "--log-format", "json"])
        self.addCleanup(p.kill)
        start = p.logs.wait_for("newresource-controller starting")[0]["fields"]
        self.assertEqual((start["leader_url"], start["namespace"], start["metrics"], start["health"]),
                         ("none (--leader-elect=false)", "all", "disabled", "disabled"))
        window = p.logs.wait_for("active window started")[0]["fields"]
        self.assertNotIn("term", window, "no term without leader election")
        p.logs.wait_for("status ready", object="default/a")
        p.proc.send_signal(signal.SIGINT)
        self.assertEqual(p.wait(), 0)
        self.assertNotIn("yielded leadership", p.logs.messages())
        self.assertEqual(p.logs.messages()[-1], "newresource-controller stopped")
        self.assertEqual(self.api.requests[0][1], "/apis/apps.newresource.com/v1alpha1/newresources")

    def test_a_busy_port_fails_startup(self):
        p = self.start()
        start = p.logs.wait_for("newresource-controller starting")[0]["fields"]
        busy = start["health"]
        q = Process(["--server", self.api.url, "--leader-url", self.sidecar.url, "--metrics-bind-address", "0",
                     "--health-probe-bind-address", busy, "--log-format", "json"])
        self.addCleanup(q.kill)
        self.assertEqual(q.wait(), 1)
        self.assertIn("cannot listen on", q.logs.raw[-1])


class EssentialThreadTests(unittest.TestCase):
    def test_an_essential_thread_that_dies_ends_the_process(self):
        code = textwrap.dedent(f"""
            import sys, threading, signal
            sys.path.insert(0, {support.ROOT!r})
            import controller, logs
            logs.configure("json")
            threading.excepthook = controller._excepthook
            def boom():
                raise RuntimeError("bug")
            threading.Thread(target=boom, name="window-loop").start()
            signal.pause()
        """)
        r = subprocess.run([sys.executable, "-c", code], env=minimal_env(), capture_output=True, text=True,
                           timeout=LIMIT)
        self.assertEqual(r.returncode, 1)
        lines = [json.loads(line) for line in r.stderr.splitlines()]
        self.assertEqual(lines[0]["fields"]["message"], "unhandled exception in a thread")
        self.assertEqual(lines[0]["fields"]["error"], "RuntimeError: bug")
        self.assertEqual(lines[1]["fields"]["message"], "an essential thread died; exiting")

    def test_other_threads_are_only_logged(self):
        code = textwrap.dedent(f"""
            import sys, threading
            sys.path.insert(0, {support.ROOT!r})
            import controller, logs
            logs.configure("json")
            threading.excepthook = controller._excepthook
            t = threading.Thread(target=lambda: 1 / 0, name="helper")
            t.start()
            t.join()
            print("still running")
        """)
        r = subprocess.run([sys.executable, "-c", code], env=minimal_env(), capture_output=True, text=True,
                           timeout=LIMIT)
        self.assertEqual(r.returncode, 0)
        self.assertEqual(r.stdout.strip(), "still running")
        self.assertIn("ZeroDivisionError", json.loads(r.stderr.splitlines()[0])["fields"]["error"])


if __name__ == "__main__":
    unittest.main()
