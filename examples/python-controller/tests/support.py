"""Test support: import path, log capture and a fake API server. The fake sidecar and the
fake clock are the leader_client package's (``leader_client.testing``).

Every fake server is an ``http.server.ThreadingHTTPServer`` on ``127.0.0.1:0`` in the test
process. Tests synchronise on conditions signalled by the fakes (a request arrived, a stream
opened, a log line was written), with generous timeouts that are only upper bounds: a test
that waits for the whole bound has failed.
"""

from __future__ import annotations

import copy
import http.server
import json
import os
import sys
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import leaderpath  # noqa: E402

leaderpath.ensure()

import logs  # noqa: E402
from leader_client.testing import (LIMIT, FakeClock, FakeSidecar, QuietHandler, QuietServer,  # noqa: E402,F401
                                   follower, leader, wait_until)


class _Discard:
    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        pass


def quiet_logs() -> None:
    """Tests that do not look at the logs keep them off the test runner's output."""
    logs.configure("text", stream=_Discard(), level="info")


quiet_logs()

class LogCapture:
    """A stream for ``logs.configure`` that keeps JSON lines and lets tests wait for one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._buf = ""
        self.lines: List[Dict[str, Any]] = []
        self.raw: List[str] = []

    def write(self, s: str) -> int:
        with self._cond:
            self._buf += s
            while "\n" in self._buf:
                line, self._buf = self._buf.split("\n", 1)
                self.raw.append(line)
                try:
                    parsed = json.loads(line)
                except ValueError:
                    continue  # not a log line of ours (kept in raw)
                if isinstance(parsed, dict) and isinstance(parsed.get("fields"), dict):
                    self.lines.append(parsed)
            self._cond.notify_all()
        return len(s)

    def flush(self) -> None:
        pass

    def find(self, message: str, **fields: Any) -> List[Dict[str, Any]]:
        with self._cond:
            return [
                line for line in self.lines
                if line["fields"]["message"] == message
                and all(line["fields"].get(k) == v for k, v in fields.items())
            ]

    def wait_for(self, message: str, timeout: float = LIMIT, count: int = 1, **fields: Any) -> List[Dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [
                    line for line in self.lines
                    if line["fields"]["message"] == message
                    and all(line["fields"].get(k) == v for k, v in fields.items())
                ]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no log line {message!r} {fields} within {timeout}s; got {self.raw}")
                self._cond.wait(left)

    def messages(self) -> List[str]:
        with self._cond:
            return [line["fields"]["message"] for line in self.lines]


def capture_logs(test) -> LogCapture:
    """Sends this test's logs (JSON, debug and up) to a capture; restored at cleanup."""
    cap = LogCapture()
    logs.configure("json", stream=cap, level="debug")
    test.addCleanup(quiet_logs)
    return cap


# ---------------------------------------------------------------------------------------------
# The fake Kubernetes API
# ---------------------------------------------------------------------------------------------

PREFIX = "/apis/apps.newresource.com/v1alpha1"


def status_error(code: int, reason: str, message: str) -> Dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": reason, "code": code}


class FakeApi:
    """Just enough of an API server for NewResources: list (one page), watch from a
    resourceVersion (events kept in a history; a list may select ``metadata.name``), PUT of
    ``/status`` with the UID and resourceVersion preconditions (409 on a stale one, and on a
    deleted object's UID, as a real server). Records every request.

    ``hold_events`` makes changes invisible to watches until ``release_events`` (a slow
    watch), and ``put_hook`` lets a test act when a PUT arrives (change the object first,
    or hang)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.rv = 10
        self.objects: Dict[str, Dict[str, Any]] = {}
        self.history: List[Tuple[int, str, Dict[str, Any]]] = []
        self.held: List[Tuple[int, str, Dict[str, Any]]] = []
        self.hold_events = False
        #: (method, path, query, body, answered status or None)
        self.requests: List[List[Any]] = []
        self.put_hook: Optional[Callable[[Dict[str, Any]], Optional[str]]] = None
        self.closing = False
        self.release_hang = False
        #: Watches from a resourceVersion below this get an ERROR event with code 410.
        self.compacted = 0
        #: Bumped to end every open watch (as the server does at its timeout).
        self.watch_generation = 0
        fake = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):
                fake._handle(self, "GET")

            def do_PUT(self):
                fake._handle(self, "PUT")

            def do_PATCH(self):
                fake._handle(self, "PATCH")

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    # -- state ----------------------------------------------------------------------------------

    def _bump(self) -> int:
        self.rv += 1
        return self.rv

    def _event(self, kind: str, obj: Dict[str, Any]) -> None:
        ev = (int(obj["metadata"]["resourceVersion"]), kind, copy.deepcopy(obj))
        (self.held if self.hold_events else self.history).append(ev)
        self.cond.notify_all()

    def create(self, ns: str, name: str, spec: Optional[Dict[str, Any]] = None,
               status: Optional[Dict[str, Any]] = None, generation: int = 1) -> Dict[str, Any]:
        with self.cond:
            obj = {"apiVersion": "apps.newresource.com/v1alpha1", "kind": "NewResource",
                   "metadata": {"name": name, "namespace": ns, "generation": generation,
                                "resourceVersion": str(self._bump()), "uid": f"uid-{name}",
                                "managedFields": [{"manager": "kubectl"}]},
                   "spec": spec or {"foo": "bar"}}
            if status is not None:
                obj["status"] = status
            self.objects[f"{ns}/{name}"] = obj
            self._event("ADDED", obj)
            return copy.deepcopy(obj)

    def change_spec(self, key: str, foo: str) -> Dict[str, Any]:
        """A user edits the spec: new generation, new resourceVersion."""
        with self.cond:
            obj = self.objects[key]
            obj["spec"] = {"foo": foo}
            obj["metadata"]["generation"] += 1
            obj["metadata"]["resourceVersion"] = str(self._bump())
            self._event("MODIFIED", obj)
            return copy.deepcopy(obj)

    def delete(self, key: str) -> None:
        """A user deletes the object."""
        with self.cond:
            obj = self.objects.pop(key)
            obj["metadata"]["resourceVersion"] = str(self._bump())
            self._event("DELETED", obj)

    def release_events(self) -> None:
        with self.cond:
            self.hold_events = False
            self.history.extend(self.held)
            self.held = []
            self.cond.notify_all()

    def puts(self) -> List[List[Any]]:
        with self.cond:
            return [r for r in self.requests if r[0] == "PUT"]

    def wait_requests(self, predicate: Callable[[List[List[Any]]], bool], what: str) -> None:
        wait_until(self.cond, lambda: predicate(self.requests), what)

    def unhang(self) -> None:
        with self.cond:
            self.release_hang = True
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()

    # -- HTTP -----------------------------------------------------------------------------------

    def _reply(self, h, code: int, body: Dict[str, Any], record: List[Any]) -> None:
        data = json.dumps(body).encode()
        with self.cond:
            record[4] = code  # before the answer leaves: the client may act on it at once
            self.cond.notify_all()
        try:
            h.send_response(code)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except OSError:
            pass

    def _handle(self, h, method: str) -> None:
        url = urllib.parse.urlsplit(h.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        body = None
        if method in ("PUT", "PATCH"):
            length = int(h.headers.get("Content-Length") or 0)
            body = json.loads(h.rfile.read(length))
        record = [method, url.path, query, body, None, h.headers.get("Authorization")]
        with self.cond:
            self.requests.append(record)
            self.cond.notify_all()
        parts = url.path[len(PREFIX):].strip("/").split("/") if url.path.startswith(PREFIX) else []
        if method == "GET" and parts in (["newresources"],) or (
                method == "GET" and len(parts) == 3 and parts[0] == "namespaces" and parts[2] == "newresources"):
            ns = parts[1] if len(parts) == 3 else None
            if query.get("watch") in ("1", "true"):
                self._watch(h, ns, int(query.get("resourceVersion", "0")))
            else:
                self._list(h, ns, record)
            return
        if method == "PUT" and len(parts) == 5 and parts[0] == "namespaces" and parts[2] == "newresources" \
                and parts[4] == "status":
            self._put_status(h, f"{parts[1]}/{parts[3]}", body, record)
            return
        self._reply(h, 405 if method == "PATCH" else 404, status_error(404, "NotFound", "not served"), record)

    def _list(self, h, ns: Optional[str], record: List[Any]) -> None:
        by_name = None
        selector = record[2].get("fieldSelector", "")
        if selector.startswith("metadata.name="):
            by_name = selector[len("metadata.name="):]
        with self.cond:
            items = [copy.deepcopy(o) for k, o in sorted(self.objects.items())
                     if (ns is None or o["metadata"]["namespace"] == ns)
                     and (by_name is None or o["metadata"]["name"] == by_name)]
            rv = self.rv
        self._reply(h, 200, {"apiVersion": "apps.newresource.com/v1alpha1", "kind": "NewResourceList",
                             "metadata": {"resourceVersion": str(rv)}, "items": items}, record)

    def compact(self) -> None:
        """Forgets the history before the current resourceVersion and ends the open watches:
        their clients come back from an older version and get 410."""
        with self.cond:
            self.compacted = self.rv
            self.watch_generation += 1
            self.cond.notify_all()

    def _watch(self, h, ns: Optional[str], since: int) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.end_headers()
        sent = since
        with self.cond:
            generation, too_old = self.watch_generation, since < self.compacted
        if too_old:
            error = status_error(410, "Expired", f"too old resource version: {since} ({self.compacted})")
            try:
                h.wfile.write(json.dumps({"type": "ERROR", "object": error}).encode() + b"\n")
            except OSError:
                pass
            return
        try:
            while True:
                with self.cond:
                    self.cond.wait_for(lambda: self.closing or self.watch_generation != generation
                                       or any(rv > sent for rv, _, _ in self.history))
                    if self.closing or self.watch_generation != generation:
                        return
                    batch = [(rv, k, o) for rv, k, o in self.history if rv > sent]
                for rv, kind, obj in batch:
                    sent = max(sent, rv)
                    if ns is not None and obj["metadata"]["namespace"] != ns:
                        continue
                    h.wfile.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
                h.wfile.flush()
        except OSError:
            pass

    def _put_status(self, h, key: str, body: Dict[str, Any], record: List[Any]) -> None:
        if self.put_hook is not None:
            action = self.put_hook(body)
            if action == "hang":
                with self.cond:
                    self.cond.wait_for(lambda: self.closing or self.release_hang)
                # Answer anyway: the client must not use it (it gave up).
        with self.cond:
            obj = self.objects.get(key)
            # As a real server: the UID in the body is a precondition checked before the object
            # is looked up, so a write naming a deleted object's UID is a 409, not a 404.
            uid = body.get("metadata", {}).get("uid")
            if uid and uid != (obj or {}).get("metadata", {}).get("uid", ""):
                return self._reply(h, 409, status_error(
                    409, "Conflict", f"Precondition failed: UID in precondition: {uid}, UID in object meta: "),
                    record)
            if obj is None:
                return self._reply(h, 404, status_error(404, "NotFound", f'newresources "{key}" not found'), record)
            if body.get("metadata", {}).get("resourceVersion") != obj["metadata"]["resourceVersion"]:
                return self._reply(h, 409, status_error(
                    409, "Conflict", "the object has been modified; please apply your changes to the latest "
                    "version and try again"), record)
            obj["status"] = body.get("status")
            obj["metadata"]["resourceVersion"] = str(self._bump())
            self._event("MODIFIED", obj)
            answer = copy.deepcopy(obj)
        self._reply(h, 200, answer, record)
