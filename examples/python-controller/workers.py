"""Active windows: the workers run only while the gate is open (port of
``controller/src/workers.rs``, with kube-runtime's watcher, store and queue written out).

When a grant arrives a window opens: ``active window started`` (with the term) is logged
before anything else, then a fresh :class:`Window` starts from an empty cache: it lists every
NewResource and queues all of them (the full resync after a pause, which is what makes a
new leader correct whatever happened while it was not leading), then watches for changes.

The window loop is the leader_client package's (``clients/python/leader_client/windows.py``).
When the grant is revoked, runs out or changes term (``gate.closed``), or on shutdown, the
window is stopped: its stop flag is set (every worker checks it and the gate just before a
write), the watch socket and the socket of every write in flight are shut down, and ALL of
the window's threads are joined. Only then is ``active window ended`` logged. So the logged
window contains every write this process sent in it, and the end-to-end suites prove
non-overlap of the pods' windows from the logs alone.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import kube
import logs
from leader_client import windows as leader_windows
from leader_client.gate import LeadershipGate
from leader_client.netutil import WINDOW_ENDED, Aborted, InFlight, RequestSlot
from leader_client.windows import WindowLoop
from metrics import CONTROLLER, Metrics
from reconcile import ReconcileError, Reconciler, WindowStopped, object_key, resource_version

log = logs.get("workers")

#: The ``resource`` label of the watcher's requests.
RESOURCE = "newresources"
#: Page size of the initial list (bounded memory per answer, as client-go's reflector).
LIST_PAGE = 500
#: The server ends each watch after this long; we resume from the last resourceVersion.
WATCH_TIMEOUT_SECONDS = 290
#: A watch silent for longer than its own timeout plus this margin is dead.
WATCH_READ_MARGIN = 30.0
#: Backoff of failed lists and watches (kube-runtime's watcher default is similar).
WATCH_BACKOFF_BASE = 0.8
WATCH_BACKOFF_MAX = 30.0
#: How long ``Window.stop`` waits for a thread before saying so (it keeps waiting).
JOIN_WARN_AFTER = 5.0


class WorkQueue:
    """Keys to reconcile, with the guarantees of client-go's workqueue that make concurrent
    workers safe: a key is handed to at most one worker at a time (a key added while it is
    being processed is handed out again only after ``done``), and a key queued several times
    before a worker takes it is processed once. Delayed adds (backoff) wait in a heap."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: List[str] = []
        self._dirty: Set[str] = set()
        self._processing: Set[str] = set()
        self._delayed: List[Tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._shut = False

    def add(self, key: str) -> None:
        with self._cond:
            self._add(key)

    def _add(self, key: str) -> None:
        if self._shut or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._cond.notify()

    def add_after(self, key: str, delay: float) -> None:
        with self._cond:
            if self._shut:
                return
            heapq.heappush(self._delayed, (self._clock() + delay, next(self._seq), key))
            self._cond.notify_all()

    def get(self) -> Optional[str]:
        """The next key (now marked as processing), or ``None`` once shut down."""
        with self._cond:
            while True:
                if self._shut:
                    return None
                now = self._clock()
                while self._delayed and self._delayed[0][0] <= now:
                    self._add(heapq.heappop(self._delayed)[2])
                if self._queue:
                    key = self._queue.pop(0)
                    self._dirty.discard(key)
                    self._processing.add(key)
                    return key
                wait = self._delayed[0][0] - now if self._delayed else None
                self._cond.wait(wait)

    def done(self, key: str) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty and not self._shut:
                self._queue.append(key)
                self._cond.notify()

    def shutdown(self) -> None:
        with self._cond:
            self._shut = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)


class Window:
    """One active window: a cache filled by list + watch, a work queue, N workers.

    Every thread of the window is created by :meth:`start` and joined by :meth:`stop`.
    """

    def __init__(self, client: kube.KubeClient, namespace: Optional[str], workers: int,
                 gate: LeadershipGate, metrics: Metrics, term: Optional[int]) -> None:
        self.client = client
        self.namespace = namespace
        self.gate = gate
        self.metrics = metrics
        self.term = term
        self.stop_event = threading.Event()
        self.queue = WorkQueue()
        self.reconciler = Reconciler(client, gate, metrics, self.stop_event, term)
        self._cache: Dict[str, Dict[str, Any]] = {}
        self._cache_lock = threading.Lock()
        self._watch_slot = RequestSlot()
        self._slots = [RequestSlot() for _ in range(workers)]
        self._threads: List[threading.Thread] = []
        #: Set once the initial list has filled the cache (tests wait on it).
        self.synced = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._threads.append(threading.Thread(target=self._watch_loop, name="window-watch", daemon=True))
        for i, slot in enumerate(self._slots):
            self._threads.append(threading.Thread(target=self._worker, args=(slot,),
                                                  name=f"window-worker-{i}", daemon=True))
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stops the window and returns only when none of its threads runs any more, so
        nothing from this window can be sent afterwards."""
        self.stop_event.set()
        self.queue.shutdown()
        self._watch_slot.close(WINDOW_ENDED)
        for slot in self._slots:
            slot.close(WINDOW_ENDED)
        for t in self._threads:
            t.join(JOIN_WARN_AFTER)
            while t.is_alive():
                log.warn("waiting for a window thread to stop", thread=t.name)
                t.join(JOIN_WARN_AFTER)

    # -- the cache ------------------------------------------------------------------------------

    def cached(self, key: str) -> Optional[Dict[str, Any]]:
        with self._cache_lock:
            return self._cache.get(key)

    def _store_answer(self, key: str, based_on: Dict[str, Any], answer: Optional[Dict[str, Any]]) -> None:
        """Caches the object a successful write returned, but only if the cache still holds
        the object the write was based on: if the watch has delivered a newer version since,
        replacing it with our (older) answer would hide that change from the next reconcile.
        Keeping the answer avoids a needless second write (409) if the key is retried before
        the watch brings our own write back."""
        if answer is None or object_key(answer) != key:
            return
        with self._cache_lock:
            if self._cache.get(key) is based_on:
                self._cache[key] = answer

    # -- workers --------------------------------------------------------------------------------

    def _worker(self, slot: RequestSlot) -> None:
        while True:
            key = self.queue.get()
            if key is None:
                return
            try:
                self._process(key, slot)
            except Exception as e:  # a bug must not take a worker away for the window
                log.error("unexpected error in a worker", object=key, error=f"{type(e).__name__}: {e}")
                if not self.stop_event.is_set():
                    self.queue.add_after(key, self.reconciler.backoff.next(key))
            finally:
                self.queue.done(key)

    def _process(self, key: str, slot: RequestSlot) -> None:
        if self.stop_event.is_set():
            return
        obj = self.cached(key)
        if obj is None:
            return  # deleted since it was queued: nothing to do
        try:
            answer = self.reconciler.reconcile(key, obj, slot)
        except WindowStopped:
            return
        except ReconcileError as e:
            delay = self.reconciler.backoff.next(key)
            log.warn("reconcile failed", object=key, error_type=e.error_type, error=str(e),
                     retry_in_ms=int(round(delay * 1000)))
            self.queue.add_after(key, delay)
            return
        self._store_answer(key, obj, answer)

    # -- list and watch -------------------------------------------------------------------------

    def _watch_loop(self) -> None:
        """List, then watch from the list's resourceVersion; relist on 410; retry other
        failures with backoff. Runs until the window stops; never dies of an exception."""
        backoff = WATCH_BACKOFF_BASE
        rv: Optional[str] = None
        verb = "list"
        listed_at = time.monotonic()
        while not self.stop_event.is_set():
            try:
                if rv is None:
                    verb = "list"
                    rv = self._list()
                    listed_at = time.monotonic()
                    self.synced.set()
                verb = "watch"
                started = time.monotonic()
                rv = self._watch(rv)
                if time.monotonic() - started >= 1.0:
                    backoff = WATCH_BACKOFF_BASE
                    continue
                # A watch the server ended at once: resume, but not in a hot loop.
            except (Aborted, WindowStopped):
                return
            except _Relist as e:
                if self.stop_event.is_set():
                    return
                # The history no longer holds our resourceVersion: list again (and so
                # reconcile everything again) at once, unless the watch failed right after a
                # list, where listing again at once could only spin.
                self._failed("watch", "410", e.message)
                rv = None
                if time.monotonic() - listed_at >= 1.0:
                    continue
            except (kube.ApiError, kube.TransportError) as e:
                if self.stop_event.is_set():
                    return
                self._failed(verb, kube.error_code(e), str(e))
                if isinstance(e, kube.ApiError) and e.code == 410:
                    rv = None
                    if verb == "watch" and time.monotonic() - listed_at >= 1.0:
                        continue
            except Exception as e:
                if self.stop_event.is_set():
                    return
                log.error("unexpected error in the watch", error=f"{type(e).__name__}: {e}")
            if self.stop_event.wait(backoff):
                return
            backoff = min(backoff * 2, WATCH_BACKOFF_MAX)

    def _failed(self, verb: str, code: str, error: str) -> None:
        """Watch failures (403, API outages) are what an operator must see."""
        self.metrics.api_error(RESOURCE, verb, code)
        log.warn("watching newresources failed", resource=RESOURCE, verb=verb, code=code, error=error)

    def _list(self) -> str:
        """Lists every NewResource (in pages), replaces the cache with them and queues every
        key. Returns the list's resourceVersion."""
        items: Dict[str, Dict[str, Any]] = {}
        cont: Optional[str] = None
        rv: Optional[str] = None
        while True:
            query = {"limit": str(LIST_PAGE)}
            if cont:
                query["continue"] = cont
            inflight = self._begin()
            try:
                page = self.client.request_json("GET", self.client.collection_path(self.namespace),
                                                 query=query, inflight=inflight)
            finally:
                self._watch_slot.end(inflight)
            if not isinstance(page, dict):
                raise kube.TransportError("the list answer is not an object")
            meta = page.get("metadata") if isinstance(page.get("metadata"), dict) else {}
            for obj in page.get("items") or []:
                key = object_key(obj)
                if key is None:
                    log.warn("ignoring a newresource without namespace or name")
                    continue
                items[key] = obj
            rv = meta.get("resourceVersion") if isinstance(meta.get("resourceVersion"), str) else None
            cont = meta.get("continue") if isinstance(meta.get("continue"), str) else None
            if not cont:
                break
        if not rv:
            raise kube.TransportError("the list answer has no resourceVersion")
        with self._cache_lock:
            self._cache = items
        for key in items:
            self.queue.add(key)
        return rv

    def _begin(self) -> InFlight:
        try:
            return self._watch_slot.begin()
        except Aborted:
            raise WindowStopped() from None

    def _watch(self, rv: str) -> str:
        """One watch from ``rv`` until the server ends it; returns the last resourceVersion
        seen. Raises :class:`_Relist` when the history no longer holds ``rv`` (410)."""
        query = {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true",
                 "timeoutSeconds": str(WATCH_TIMEOUT_SECONDS)}
        inflight = self._begin()
        try:
            for event in self.client.watch(self.client.collection_path(self.namespace), query,
                                           WATCH_TIMEOUT_SECONDS + WATCH_READ_MARGIN, inflight):
                if self.stop_event.is_set():
                    break
                rv = self._apply(event, rv)
        finally:
            self._watch_slot.end(inflight)
        return rv

    def _apply(self, event: Any, rv: str) -> str:
        """Applies one watch event to the cache and queue; returns the resume point."""
        if isinstance(event, kube.BadLine):
            log.warn("ignoring a malformed watch event", reason=event.reason)
            return rv
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            log.warn("ignoring a malformed watch event", reason="not an object with a type")
            return rv
        kind, obj = event["type"], event.get("object")
        if kind == "ERROR":
            code = obj.get("code") if isinstance(obj, dict) else None
            message = obj.get("message") if isinstance(obj, dict) else None
            if code == 410:
                raise _Relist(str(message or "too old resource version"))
            raise kube.ApiError(code if isinstance(code, int) else 500, str(message or "watch error"))
        new_rv = resource_version(obj) or rv
        if kind == "BOOKMARK":
            return new_rv
        key = object_key(obj)
        if key is None:
            log.warn("ignoring a newresource without namespace or name", event=kind)
            return new_rv
        if kind in ("ADDED", "MODIFIED"):
            with self._cache_lock:
                self._cache[key] = obj
            self.queue.add(key)
        elif kind == "DELETED":
            with self._cache_lock:
                self._cache.pop(key, None)
        else:
            log.warn("ignoring a malformed watch event", reason=f"unknown type {kind!r}")
            return rv
        return new_rv


class _Relist(Exception):
    """A watch ERROR event with code 410: the resourceVersion is too old."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Workers:
    """Opens and closes active windows as the gate says (the ``window-loop`` thread), on the
    leader_client package's :class:`~leader_client.windows.WindowLoop`, which logs ``active
    window started`` / ``active window ended`` (with ``term`` and ``reason``) around each."""

    def __init__(self, client: kube.KubeClient, namespace: Optional[str], concurrency: int,
                 gate: LeadershipGate, metrics: Metrics) -> None:
        self.client = client
        self.namespace = namespace
        self.concurrency = concurrency
        self.gate = gate
        self.metrics = metrics
        self.loop = WindowLoop(gate)
        #: The window open right now (tests look at it).
        self.window: Optional[Window] = None

    def shutdown(self) -> None:
        """Asks :meth:`run` to close the window (if any) and return."""
        self.loop.stop()

    def run(self) -> None:
        """Runs until :meth:`shutdown`; a window open at shutdown is closed (workers stopped,
        ``active window ended`` logged) before this returns."""
        self.loop.run(self._open)

    def _open(self, opened: leader_windows.Window) -> leader_windows.CloseWindow:
        self.metrics.set_leader(True)
        log.info("Starting Controller", controller=CONTROLLER)
        log.info("Starting workers", controller=CONTROLLER, worker_count=self.concurrency)
        window = Window(self.client, self.namespace, self.concurrency, self.gate, self.metrics, opened.term)
        self.window = window
        window.start()

        def close(reason: str) -> None:
            log.info("Stopping workers", controller=CONTROLLER, reason=reason)
            window.stop()
            self.window = None
            # Every thread of the window has stopped: no write of it is in flight any more.
            self.metrics.set_leader(False)

        return close
