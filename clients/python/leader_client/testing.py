"""Test doubles for programs that use this package: a fake sidecar and a hand-moved clock.

:class:`FakeSidecar` is an ``http.server`` on ``127.0.0.1:0`` in the test process that serves
``GET /leader`` (a scripted answer, optionally slow, refused or hung), ``/leader/watch``
(events the test pushes) and ``POST /leader/yield``. Tests synchronise on its condition (a
request arrived, a stream opened) with generous timeouts that are only upper bounds.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from typing import Any, Callable, Dict, List, Optional

#: Upper bound of every wait that is expected to end because of an event.
LIMIT = 10.0


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class QuietServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that ignores clients hanging up (they do, on purpose)."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # Clients under test hang up on purpose (timeouts, aborted writes).
        pass


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A request handler that logs nothing."""

    def log_message(self, format, *args):  # noqa: A002
        pass


def wait_until(cond: threading.Condition, predicate: Callable[[], bool], what: str, timeout: float = LIMIT) -> None:
    with cond:
        if not cond.wait_for(predicate, timeout):
            raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------------------------------------
# The fake sidecar
# ---------------------------------------------------------------------------------------------

def leader(term: int, valid_ms: int = 2000) -> Dict[str, Any]:
    """A ``/leader`` body that grants ``valid_ms`` in ``term``."""
    return {"is_leader": True, "identity": "pod-a", "holder": "pod-a", "lease": "ns/lease",
            "term": term, "valid_for_ms": valid_ms, "observed_at": None, "renewed_at": None}


def follower(term: int) -> Dict[str, Any]:
    """A ``/leader`` body of a follower that sees ``term``."""
    return {"is_leader": False, "identity": "pod-a", "holder": "pod-b", "lease": "ns/lease",
            "term": term, "valid_for_ms": 0, "observed_at": None, "renewed_at": None}


class FakeSidecar:
    """``GET /leader`` answers the scripted answer (a body dict, ``"refuse"`` for a 503, or
    ``"hang"``), after an optional delay; ``/leader/watch`` streams what the test pushes."""

    def __init__(self, answer: Any, stream_available: bool = True, delay: float = 0.0) -> None:
        self.cond = threading.Condition()
        self.answer = answer
        self.delay = delay
        self.stream_available = stream_available
        #: (arrived_at, answering_at or None) of every GET /leader, monotonic.
        self.gets: List[List[Optional[float]]] = []
        self.streams_opened = 0
        self._streams: List[List[Optional[Dict[str, Any]]]] = []
        self.yields = 0
        self.yield_hangs = False
        self.closing = False
        fake = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):
                if self.path == "/leader":
                    fake._get(self)
                elif self.path == "/leader/watch":
                    fake._watch(self)
                else:
                    self.send_error(404)

            def do_POST(self):
                if self.path == "/leader/yield":
                    with fake.cond:
                        fake.yields += 1
                        fake.cond.notify_all()
                        if fake.yield_hangs:
                            fake.cond.wait_for(lambda: fake.closing)
                            return
                    body = json.dumps({"was_leader": True, "backoff_ms": 15000}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_error(404)

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def _get(self, h) -> None:
        arrived = time.monotonic()
        with self.cond:
            record: List[Optional[float]] = [arrived, None]
            self.gets.append(record)
            answer, delay = self.answer, self.delay
            self.cond.notify_all()
        if answer == "hang":
            with self.cond:
                self.cond.wait_for(lambda: self.closing or self.answer != "hang")
            return
        if delay:
            # The sidecar is slow: behaviour under test, not synchronisation.
            time.sleep(delay)
        # Recorded before the answer leaves: the client may act on it at once.
        with self.cond:
            record[1] = time.monotonic()
            self.cond.notify_all()
        try:
            if answer == "refuse":
                h.send_response(503)
                h.end_headers()
                return
            body = json.dumps(answer).encode()
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            h.wfile.flush()
        except OSError:
            return  # the client gave up

    def _watch(self, h) -> None:
        with self.cond:
            if not self.stream_available:
                h.send_response(503)
                h.end_headers()
                return
            queue: List[Optional[Dict[str, Any]]] = []
            self._streams.append(queue)
            self.streams_opened += 1
            self.cond.notify_all()
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.end_headers()
        h.wfile.flush()
        try:
            while True:
                with self.cond:
                    self.cond.wait_for(lambda: queue or self.closing)
                    if self.closing:
                        return
                    item = queue.pop(0)
                if item is None:
                    return  # closed by the test
                h.wfile.write(f"event: leader\ndata: {json.dumps(item)}\n\n".encode())
                h.wfile.flush()
        except OSError:
            pass
        finally:
            with self.cond:
                if queue in self._streams:
                    self._streams.remove(queue)

    # -- scripting --------------------------------------------------------------------------------

    def set_answer(self, answer: Any, delay: float = 0.0) -> None:
        with self.cond:
            self.answer, self.delay = answer, delay
            self.cond.notify_all()

    def push(self, status: Dict[str, Any]) -> None:
        with self.cond:
            assert self._streams, "no stream is open"
            for q in self._streams:
                q.append(status)
            self.cond.notify_all()

    def close_streams(self, reopen: bool) -> None:
        with self.cond:
            self.stream_available = reopen
            for q in self._streams:
                q.append(None)
            self.cond.notify_all()

    def wait_streams(self, n: int) -> None:
        wait_until(self.cond, lambda: self.streams_opened >= n and len(self._streams) >= 1, f"{n} streams")

    def wait_answered(self, n: int) -> None:
        """Until ``n`` GETs have been answered (their answers are on their way back)."""
        wait_until(self.cond, lambda: sum(1 for g in self.gets if g[1] is not None) >= n, f"{n} answers")

    def wait_gets(self, n: int) -> None:
        wait_until(self.cond, lambda: len(self.gets) >= n, f"{n} GETs")

    def close(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()
