"""Probes and metrics (port of ``controller/src/admin.rs`` and ``plumbing/src/probes.rs``): ``/metrics`` on
``--metrics-bind-address``, ``/healthz`` and ``/readyz`` on ``--health-probe-bind-address``.

What the probes mean, and why:

* ``/healthz`` (liveness) fails only when the leadership follower has stopped turning (for
  ``max(10 x poll interval, 10 s)``): a controller that can no longer follow its sidecar must
  be restarted. It never fails because of leadership or an API outage - restarting would not
  fix those, and would only churn the standbys.
* ``/readyz`` is 200 when the sidecar answers (with leader election) and the last API check
  succeeded. A standby is ready too: readiness says "could take over", not "is leader".

The servers run in daemon threads (``http.server.ThreadingHTTPServer``), serve GET and HEAD
only (405 with ``Allow`` otherwise), answer unknown paths with 404, all errors as JSON
``{"error": ...}`` like the sidecar; connections are bounded and idle ones time out, so a
misbehaving scraper cannot pile up threads. Request logs are silenced (one line per scrape
would drown the controller's own lines).
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from typing import Callable, Optional, Tuple

import kube
import logs
from leader_client.gate import LeadershipGate
from metrics import CONTENT_TYPE, Metrics

#: The API check logs under the root target, as the Rust ``main`` does.
log = logs.get()

#: Connections served at once on each admin port.
MAX_CONNECTIONS = 64


class Probes:
    """What the probes report on."""

    def __init__(self, gate: LeadershipGate, needs_sidecar: bool, api_ok: Callable[[], bool],
                 heartbeat_age: Optional[Callable[[], float]], wedged_after: float) -> None:
        self.gate = gate
        self.needs_sidecar = needs_sidecar
        self.api_ok = api_ok
        #: Age of the follower's heartbeat; ``None`` without leader election.
        self.heartbeat_age = heartbeat_age
        self.wedged_after = wedged_after

    def healthy(self) -> Optional[str]:
        """``None`` when live, else the reason."""
        if self.heartbeat_age is not None:
            age = self.heartbeat_age()
            if age >= self.wedged_after:
                return f"the leadership follower has not run for {int(age * 1000)}ms"
        return None

    def ready(self) -> Optional[str]:
        """``None`` when connected to the sidecar and the API (a standby is ready too)."""
        if self.needs_sidecar and not self.gate.reachable():
            return "the leader sidecar is not reachable"
        if not self.api_ok():
            return "the Kubernetes API is not reachable (or newresources cannot be listed)"
        return None


Route = Callable[[], Tuple[int, str, bytes]]


def _error(status: int, message: str) -> Tuple[int, str, bytes]:
    return status, "application/json", json.dumps({"error": message}, separators=(",", ":")).encode()


def health_routes(probes: Probes):
    def healthz():
        why = probes.healthy()
        return (200, "text/plain; charset=utf-8", b"ok\n") if why is None else _error(503, why)

    def readyz():
        why = probes.ready()
        return (200, "text/plain; charset=utf-8", b"ok\n") if why is None else _error(503, why)

    return {"/healthz": healthz, "/readyz": readyz}


def metrics_routes(metrics: Metrics):
    return {"/metrics": lambda: (200, CONTENT_TYPE, metrics.encode().encode("utf-8"))}


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict = {}
    protocol_version = "HTTP/1.1"
    #: Idle connections are closed after this long.
    timeout = 10
    server_version = "newresource-controller-py"
    sys_version = ""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - silence request logs
        pass

    def _send(self, status: int, content_type: str, body: bytes, head: bool = False, allow: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if allow:
            self.send_header("Allow", "GET, HEAD")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        route = self.routes.get(path)
        if route is None:
            self._send(*_error(404, f"no such path: {path}"), head=head)
            return
        try:
            status, ctype, body = route()
        except Exception as e:  # a probe must answer, not hang up
            status, ctype, body = _error(500, f"internal error: {type(e).__name__}")
        self._send(status, ctype, body, head=head)

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _not_allowed(self) -> None:
        # Drain a small body so the connection stays usable; refuse to read a large one.
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if 0 < length <= 64 * 1024:
            self.rfile.read(length)
        elif length > 64 * 1024:
            self.close_connection = True
        self._send(*_error(405, "only GET and HEAD are served here"), allow=True)

    def __getattr__(self, name: str):
        # BaseHTTPRequestHandler dispatches to do_<METHOD>: every other method is a 405.
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: Tuple[str, int], handler) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        # More than MAX_CONNECTIONS at once: close the new one at once (as the Rust servers).
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        # A client that hangs up mid-answer is not worth a traceback on stderr.
        pass


class AdminServer:
    """One admin port: bind at construction (so the bound address can be logged, and a busy
    port fails startup), serve from :meth:`start` on a daemon thread."""

    def __init__(self, address: Tuple[str, int], routes: dict) -> None:
        handler = type("Handler", (_Handler,), {"routes": dict(routes)})
        self.server = _Server(address, handler)
        host, port = self.server.server_address[:2]
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def set_routes(self, routes: dict) -> None:
        """Sets what is served (before :meth:`start`): the port is bound before the probes
        exist, so that the startup line can name the bound address."""
        self.server.RequestHandlerClass.routes = dict(routes)

    def start(self, name: str) -> None:
        threading.Thread(target=self.server.serve_forever, name=name, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ApiCheck:
    """Keeps ``ok`` current for ``/readyz``: a one-item list of NewResources every 10 s (first
    at once), which needs the same permission the workers need first. Every failure counts in
    ``controller_api_errors_total{resource="newresources",verb="list"}``; the log says when
    the outcome changes (connected, or a failure with a different code), not at every check."""

    EVERY = 10.0

    def __init__(self, client, namespace: Optional[str], metrics: Metrics) -> None:
        self.client = client
        self.namespace = namespace
        self.metrics = metrics
        self.ok = False
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self.run, name="api-check", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def check_once(self, was: Optional[str]) -> str:
        """One check; returns the new state (``ok`` or the failure code)."""
        try:
            self.client.request_json("GET", self.client.collection_path(self.namespace), query={"limit": "1"})
            code, error = None, None
        except (kube.ApiError, kube.TransportError) as e:
            code, error = kube.error_code(e), str(e)
        except Exception as e:
            code, error = "transport", f"{type(e).__name__}: {e}"
        self.ok = code is None
        if code is not None:
            self.metrics.api_error("newresources", "list", code)
        state = code or "ok"
        if state != was:
            if code is None:
                log.info("connected to the Kubernetes API")
            elif code == "timeout":
                log.error("the Kubernetes API did not answer a list of newresources",
                          resource="newresources", verb="list", code=code, error=error)
            else:
                log.error("cannot list newresources", resource="newresources", verb="list", code=code, error=error)
        return state

    def run(self) -> None:
        was: Optional[str] = None
        while not self._stop.is_set():
            started = time.monotonic()
            was = self.check_once(was)
            if self._stop.wait(max(0.0, self.EVERY - (time.monotonic() - started))):
                return
