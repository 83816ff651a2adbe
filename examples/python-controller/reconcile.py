"""One reconcile of a NewResource: mark it ready for its current generation, through the
status subresource, only under a grant (port of ``controller/src/reconcile.rs``).

Safety of the write, in the order things happen:

1. The desired status is computed from the cached object; if the object already has it,
   nothing is sent (a status write is the only side effect this controller has).
2. The body is the object as read, with its ``metadata.resourceVersion`` KEPT: the PUT is a
   compare-and-swap, so a write based on an old read (ours, or a deposed leader's that was
   delayed) fails with 409 instead of overwriting a newer state.
3. Before connecting, and again after the connection is up *just before the first byte is
   written*, the window's stop flag and ``gate.current()`` are checked: without a grant of the
   window's term (read against the monotonic clock at that moment) nothing is sent
   (``not_leader``).
4. The write may take at most until ``min(now + api timeout, grant.until)``: the socket
   timeout is the time left, and a timer aborts the connection (shuts its socket down) at
   that instant whatever the server does. An answer that arrives after the grant ended is
   not trusted either (``grant_expired``), as the Rust ``within_grant`` discards it.
5. The window that ends aborts the write in flight the same way, and joins the worker before
   it logs ``active window ended``.
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Any, Callable, Dict, Optional

import kube
import logs
from leader_client.gate import Grant, LeadershipGate
from leader_client.netutil import GRANT_ENDED, TIMED_OUT, WINDOW_ENDED, Aborted, RequestSlot
from metrics import Metrics

log = logs.get("reconcile")

#: The ``resource`` label of status writes in ``controller_api_errors_total``. A 404 (the
#: object is gone: success) and a 409 (a conflict, retried) are expected answers and are not
#: counted there.
STATUS_RESOURCE = "newresources/status"
#: The ``resource`` label of the re-read after a 409 (see ``Reconciler._gone``).
MAIN_RESOURCE = "newresources"

BACKOFF_BASE = 0.2
BACKOFF_MAX = 60.0


class ReconcileError(Exception):
    """Why a reconcile failed; each is retried with backoff."""

    error_type = "api"


class NotLeader(ReconcileError):
    error_type = "not_leader"

    def __init__(self) -> None:
        super().__init__("not leader: the status write was not sent")


class GrantExpired(ReconcileError):
    error_type = "grant_expired"

    def __init__(self) -> None:
        super().__init__("the grant ran out during the status write")


class Conflict(ReconcileError):
    error_type = "conflict"

    def __init__(self, message: str) -> None:
        super().__init__(f"conflict: {message}")


class ApiFailure(ReconcileError):
    """A non-2xx answer other than 404 and 409."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"API error {code}: {message}")
        self.code = code

    @property
    def error_type(self) -> str:  # type: ignore[override]
        if self.code == 403:
            return "forbidden"
        if self.code == 429:
            return "throttled"
        if self.code >= 500:
            return "server"
        return "api"


class RequestFailed(ReconcileError):
    error_type = "transport"

    def __init__(self, message: str) -> None:
        super().__init__(f"request failed: {message}")


class Unaddressable(ReconcileError):
    error_type = "invalid_object"

    def __init__(self) -> None:
        super().__init__("object has no namespace or name")


class Internal(ReconcileError):
    """A bug (an unexpected exception); logged and retried rather than killing a worker."""

    error_type = "internal"


class WindowStopped(Exception):
    """The window ended while this reconcile ran: not an error, nothing is recorded (the Rust
    controller drops the reconcile future the same way)."""


# ---------------------------------------------------------------------------------------------
# Pure decisions
# ---------------------------------------------------------------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def desired_status(obj: Dict[str, Any]) -> Dict[str, Any]:
    """The status a NewResource should have: ready for its current generation
    (``observedGeneration`` is left out when the object has no generation, as serde skips
    ``None``)."""
    meta = obj.get("metadata")
    gen = meta.get("generation") if isinstance(meta, dict) else None
    status: Dict[str, Any] = {"ready": True}
    if _is_int(gen):
        status["observedGeneration"] = gen
    return status


def has_status(obj: Dict[str, Any], desired: Dict[str, Any]) -> bool:
    """Whether the object's status already equals ``desired`` as the Rust controller compares
    it: ``ready`` and ``observedGeneration`` only (other status fields are not ours), with
    JSON types respected (``"ready": 1`` is not ``true``)."""
    status = obj.get("status")
    if not isinstance(status, dict):
        return False
    ready = status.get("ready", False)
    if ready is not True and ready is not False:
        return False
    observed = status.get("observedGeneration")
    if observed is not None and not _is_int(observed):
        return False
    return ready == desired["ready"] and observed == desired.get("observedGeneration")


def object_key(obj: Any) -> Optional[str]:
    """``namespace/name``, or ``None`` for an object we cannot address."""
    if not isinstance(obj, dict):
        return None
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return None
    ns, name = meta.get("namespace"), meta.get("name")
    if not isinstance(ns, str) or not isinstance(name, str) or not ns or not name:
        return None
    return f"{ns}/{name}"


def resource_version(obj: Any) -> Optional[str]:
    if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
        rv = obj["metadata"].get("resourceVersion")
        return rv if isinstance(rv, str) and rv else None
    return None


def build_update(obj: Dict[str, Any], desired: Dict[str, Any]) -> Dict[str, Any]:
    """The PUT body: the object as read with ``status`` replaced, ``managedFields`` removed
    (the server keeps its own), and ``resourceVersion`` KEPT as the write's precondition."""
    body = copy.deepcopy(obj)
    body["status"] = dict(desired)
    meta = body.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return body


def classify(e: BaseException) -> ReconcileError:
    """Maps a failed status write to its error (``error_type`` label)."""
    if isinstance(e, kube.ApiError):
        if e.code == 409:
            return Conflict(e.message)
        return ApiFailure(e.code, e.message)
    if isinstance(e, kube.TransportError):
        return RequestFailed(str(e))
    if isinstance(e, ReconcileError):
        return e
    return Internal(f"{type(e).__name__}: {e}")


class Backoff:
    """Per-object exponential backoff: 200 ms, doubling, at most a minute; reset on success."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: Dict[str, int] = {}

    def next(self, key: str) -> float:
        with self._lock:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
        return BACKOFF_MAX if n >= 20 else min(BACKOFF_BASE * (2 ** n), BACKOFF_MAX)

    def reset(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


# ---------------------------------------------------------------------------------------------
# The reconcile
# ---------------------------------------------------------------------------------------------

UNCHANGED, UPDATED, GONE = "unchanged", "updated", "gone"


class Reconciler:
    """Reconciles the objects of one active window (one per window, like the Rust ``Context``:
    the backoff starts afresh with every window)."""

    def __init__(self, client: kube.KubeClient, gate: LeadershipGate, metrics: Metrics,
                 stop: threading.Event, term: Optional[int] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.gate = gate
        self.metrics = metrics
        #: The window's term: its writes are sent only under grants of this term (a grant of
        #: another term means the window is about to close with "new term").
        self.term = term
        #: Set when the window ends: nothing more may be sent.
        self.stop = stop
        self.clock = clock
        self.backoff = Backoff()

    def reconcile(self, key: str, obj: Dict[str, Any], slot: RequestSlot) -> Optional[Dict[str, Any]]:
        """Reconciles ``obj`` (cached under ``key``) and records metrics. Returns the object
        the server answered a successful write with (else ``None``). Raises
        :class:`ReconcileError` (already counted) or :class:`WindowStopped` (not counted)."""
        started = self.clock()
        try:
            written, answer = self.apply_status(obj, slot)
        except WindowStopped:
            raise
        except Exception as e:
            err = classify(e)
            self.metrics.reconciled(self.clock() - started, "error", err.error_type)
            raise err from None
        self.backoff.reset(key)
        self.metrics.reconciled(self.clock() - started, "not_found" if written == GONE else "success")
        return answer

    def _grant(self) -> Grant:
        """The grant in force for this window's term, or :class:`NotLeader`;
        :class:`WindowStopped` once the window is ending (checked first: a closing window is
        not an error)."""
        if self.stop.is_set():
            raise WindowStopped()
        grant = self.gate.current()
        if grant is None or grant.term != self.term:
            raise NotLeader()
        return grant

    def _gone(self, namespace: str, name: str, obj: Dict[str, Any], slot: RequestSlot) -> bool:
        """After a 409: whether the object we wrote for is gone. The PUT body carries the
        object's UID, which the API server checks as a precondition before it looks for the
        object, so a write to a deleted object (or to a new one that took its name) is a 409,
        not a 404. A re-read by name (a list, so no RBAC verb beyond ``list``) tells: no object
        with our UID means there is nothing left to do. If the re-read fails, the conflict
        stands (retried with backoff)."""
        uid = obj.get("metadata", {}).get("uid") if isinstance(obj.get("metadata"), dict) else None
        try:
            inflight = slot.begin()
        except Aborted:
            raise WindowStopped() from None
        try:
            page = self.client.request_json(
                "GET", self.client.collection_path(namespace),
                query={"fieldSelector": f"metadata.name={name}"}, inflight=inflight)
        except Aborted:
            raise WindowStopped() from None
        except kube.ApiError as e:
            self.metrics.api_error(MAIN_RESOURCE, "list", str(e.code))
            return False
        except kube.TransportError as e:
            if self.stop.is_set():
                raise WindowStopped() from None
            self.metrics.api_error(MAIN_RESOURCE, "list", kube.error_code(e))
            return False
        finally:
            slot.end(inflight)
        items = page.get("items") if isinstance(page, dict) else None
        if not isinstance(items, list):
            return False
        return not any(isinstance(i, dict) and isinstance(i.get("metadata"), dict)
                       and i["metadata"].get("uid") == uid for i in items)

    def apply_status(self, obj: Dict[str, Any], slot: RequestSlot):
        """Writes the desired status if needed; returns ``(UNCHANGED|UPDATED|GONE, answer)``."""
        desired = desired_status(obj)
        if has_status(obj, desired):
            return UNCHANGED, None
        key = object_key(obj)
        if key is None:
            raise Unaddressable()
        namespace, name = key.split("/", 1)
        body = build_update(obj, desired)

        # The grant this write runs under: no connection is even opened without one, and the
        # write ends with it (or with the API timeout, if that comes first).
        grant = self._grant()
        now = self.clock()
        grant_first = grant.until <= now + self.client.timeout
        deadline = min(grant.until, now + self.client.timeout)
        try:
            inflight = slot.begin()
        except Aborted:
            raise WindowStopped() from None

        def last_check(conn) -> None:
            # The last check before the first byte leaves this process: the window still runs,
            # its tenure still grants, and the socket may wait only as long as the write may.
            self._grant()
            left = deadline - self.clock()
            if left <= 0:
                raise GrantExpired() if grant_first else kube.TransportError("timed out", timeout=True)
            if conn.sock is not None:
                conn.sock.settimeout(left)

        # The timer aborts the connection at the deadline whatever the server does (the socket
        # timeout alone bounds each read, not the whole exchange).
        conflict: Optional[kube.ApiError] = None
        timer = threading.Timer(max(0.0, deadline - now), inflight.abort,
                                args=(GRANT_ENDED if grant_first else TIMED_OUT,))
        timer.daemon = True
        timer.start()
        try:
            answer = self.client.request_json(
                "PUT", self.client.status_path(namespace, name), body=body,
                timeout=max(0.001, deadline - self.clock()), inflight=inflight, before_send=last_check)
        except Aborted as e:
            if self.stop.is_set() or str(e) == WINDOW_ENDED:
                raise WindowStopped() from None
            if str(e) == GRANT_ENDED:
                raise GrantExpired() from None
            self.metrics.api_error(STATUS_RESOURCE, "update", "timeout")
            raise kube.TransportError("the request timed out", timeout=True) from None
        except kube.ApiError as e:
            if e.code == 404:
                return GONE, None
            if e.code != 409:
                self.metrics.api_error(STATUS_RESOURCE, "update", str(e.code))
                raise
            conflict = e
        except kube.TransportError as e:
            if self.stop.is_set():
                raise WindowStopped() from None
            if self.clock() >= grant.until:
                raise GrantExpired() from None
            self.metrics.api_error(STATUS_RESOURCE, "update", kube.error_code(e))
            raise
        finally:
            timer.cancel()
            slot.end(inflight)
        if conflict is not None:
            if self._gone(namespace, name, obj, slot):
                return GONE, None
            raise conflict
        # An answer that arrives after the grant ended is not trusted (as within_grant).
        if self.clock() >= grant.until:
            raise GrantExpired()
        log.info("status ready", object=key, term=grant.term)
        return UPDATED, answer if isinstance(answer, dict) else None
