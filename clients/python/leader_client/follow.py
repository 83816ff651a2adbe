"""Keeps the :class:`~leader_client.gate.LeadershipGate` in step with the sidecar (port of
``leader-client/src/follow.rs`` and ``leader-client/src/client.rs``).

Three threads cooperate, and only one of them touches the state machine:

* the **stream thread** holds ``GET /leader/watch`` open (server-sent events) for prompt
  revocations and promotions, and reconnects every poll interval after a failure;
* a short-lived **request thread** per ``GET /leader`` (at most one at a time);
* the **follower loop** owns the :class:`~gate.GateState`. Stream events and GET answers are
  put on ONE queue that it consumes, so they are applied in the order they arrived, as the
  Rust ``select!`` loop applies them. After every input it publishes the gate's view.

The safety-relevant details (see ``gate.py``):

* the instant passed to ``poll_sent`` is read *before* the request thread even exists, so it
  precedes the send and the grant counts from before the request;
* a GET has ``poll interval`` to complete; after that the follower applies the failure itself
  (revoking), aborts the request's socket, and ignores whatever that request still produces;
* every answer body and every stream event is bounded (64 KiB) and strictly parsed: a body we
  cannot read is "not leader".
"""

from __future__ import annotations

import http.client
import itertools
import json
import queue
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Tuple

from ._log import get_logger
from .gate import GateState, LeadershipGate, Ticket
from .netutil import Aborted, InFlight, read_bounded

log = get_logger("follow")

#: Answers and events larger than this are refused (ours are a few hundred bytes).
MAX_ANSWER = 64 * 1024
#: The follower loop wakes at least this often, so that its heartbeat shows it is alive.
MAX_IDLE = 1.0
#: A stream silent for this long is taken as lost. The sidecar writes at least every 15 s
#: (every grant/2 while leader), so only a dead connection is this quiet; treating it as lost
#: only revokes and falls back to polling, which is always safe.
STREAM_IDLE_TIMEOUT = 60.0
#: The SSE event name of leadership events.
EVENT = "leader"
#: Sent with every request unless the client is given another.
USER_AGENT = "leader-client-py"


class SourceError(Exception):
    """Talking to the sidecar failed; the message says how (as the Rust ``SourceError``)."""


@dataclass(frozen=True)
class LeaderStatus:
    """Body of ``GET /leader`` and data of every ``/leader/watch`` event
    (``leader-client/src/contract.rs``)."""

    is_leader: bool
    identity: str
    holder: Optional[str]
    lease: str
    term: Optional[int]
    valid_for_ms: int
    observed_at: Optional[str] = None
    renewed_at: Optional[str] = None


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_leader_status(body) -> LeaderStatus:
    """Parses and type-checks a body as the Rust client's serde does; anything else raises
    :class:`SourceError`. Strictness is the safe side here: a body we do not fully understand
    (``"is_leader": "true"``, a negative or fractional ``valid_for_ms``) is not a grant."""
    try:
        if isinstance(body, (bytes, bytearray)):
            body = bytes(body).decode("utf-8")
        obj = json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise SourceError(f"unexpected answer from the sidecar: {e}") from None
    if not isinstance(obj, dict):
        raise SourceError("unexpected answer from the sidecar: not a JSON object")

    def bad(field: str) -> SourceError:
        return SourceError(f"unexpected answer from the sidecar: invalid or missing {field!r}")

    is_leader = obj.get("is_leader")
    if not isinstance(is_leader, bool):
        raise bad("is_leader")
    valid = obj.get("valid_for_ms")
    if not _is_int(valid) or valid < 0 or valid >= 2 ** 64:
        raise bad("valid_for_ms")
    term = obj.get("term")
    if term is not None and (not _is_int(term) or not -(2 ** 31) <= term < 2 ** 31):
        raise bad("term")
    identity, lease = obj.get("identity"), obj.get("lease")
    if not isinstance(identity, str):
        raise bad("identity")
    if not isinstance(lease, str):
        raise bad("lease")
    optional = {}
    for name in ("holder", "observed_at", "renewed_at"):
        v = obj.get(name)
        if v is not None and not isinstance(v, str):
            raise bad(name)
        optional[name] = v
    return LeaderStatus(is_leader=is_leader, identity=identity, lease=lease, term=term,
                        valid_for_ms=valid, **optional)


# ---------------------------------------------------------------------------------------------
# Server-sent events
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SseEvent:
    event: str
    data: str


class SseParser:
    """Incremental ``text/event-stream`` parser (the WHATWG rules the Rust client's
    eventsource-stream follows): lines end with CRLF, LF or CR (also split across chunks);
    ``:`` starts a comment; ``data`` lines accumulate with newlines; a blank line dispatches;
    an event without ``event:`` is a ``message``; one space after the colon is dropped.

    Lines and events are bounded by ``limit`` bytes: a peer that never ends a line cannot make
    us buffer without bound.
    """

    def __init__(self, limit: int = MAX_ANSWER) -> None:
        self._limit = limit
        self._buf = bytearray()
        self._skip_lf = False
        self._first = True
        self._event = ""
        self._data: List[str] = []
        self._size = 0

    def feed(self, chunk: bytes) -> List[SseEvent]:
        """Feeds bytes; returns the events they complete. Raises :class:`SourceError` when a
        line or an event exceeds the limit."""
        out: List[SseEvent] = []
        for b in chunk:
            if self._skip_lf:
                self._skip_lf = False
                if b == 0x0A:
                    continue
            if b in (0x0A, 0x0D):
                self._skip_lf = b == 0x0D
                line = bytes(self._buf)
                self._buf.clear()
                ev = self._line(line)
                if ev is not None:
                    out.append(ev)
                continue
            self._buf.append(b)
            if len(self._buf) > self._limit:
                raise SourceError(f"an event stream line is longer than {self._limit} bytes")
        return out

    def _line(self, raw: bytes) -> Optional[SseEvent]:
        if self._first:
            self._first = False
            if raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
        line = raw.decode("utf-8", errors="replace")
        if line == "":
            if not self._data:
                self._event = ""
                return None
            ev = SseEvent(event=self._event or "message", data="\n".join(self._data))
            self._event, self._data, self._size = "", [], 0
            return ev
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._size += len(value) + 1
            if self._size > self._limit:
                raise SourceError(f"an event is longer than {self._limit} bytes")
            self._data.append(value)
        # "id", "retry" and unknown fields are ignored.
        return None


# ---------------------------------------------------------------------------------------------
# The sidecar client
# ---------------------------------------------------------------------------------------------

class SidecarClient:
    """Talks to one sidecar, e.g. ``http://127.0.0.1:4040`` (the base URL, without a path).

    Every request uses a fresh connection: it costs nothing on loopback, and it means a
    request can never race the sidecar closing an idle pooled connection (10 s)."""

    def __init__(self, base_url: str, user_agent: str = USER_AGENT) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"invalid leader URL {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.user_agent = user_agent

    def _request(self, method: str, path: str, timeout: float, inflight: InFlight
                 ) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        inflight.attach(conn)
        try:
            conn.connect()
            inflight.connected()
            conn.request(method, path, headers={"User-Agent": self.user_agent, "Accept": "application/json"})
            return conn, conn.getresponse()
        except Exception:
            inflight.detach(conn)
            raise

    def _json(self, method: str, path: str, timeout: float, inflight: Optional[InFlight]) -> object:
        inflight = inflight or InFlight()
        try:
            conn, resp = self._request(method, path, timeout, inflight)
        except (OSError, http.client.HTTPException, Aborted) as e:
            raise SourceError(f"cannot reach the sidecar: {_describe(e)}") from None
        try:
            try:
                body = read_bounded(resp, MAX_ANSWER)
            except (OSError, http.client.HTTPException, ValueError, Aborted) as e:
                raise SourceError(f"unexpected answer from the sidecar: {_describe(e)}") from None
            if resp.status != 200:
                raise SourceError(f"the sidecar answered {resp.status}")
            return body
        finally:
            inflight.detach(conn, resp)

    def get(self, timeout: float, inflight: Optional[InFlight] = None) -> LeaderStatus:
        """``GET /leader``."""
        return parse_leader_status(self._json("GET", "/leader", timeout, inflight))

    def yield_leadership(self, timeout: float) -> Tuple[bool, int]:
        """``POST /leader/yield``: tells the sidecar our workers have stopped. Returns
        ``(was_leader, backoff_ms)``."""
        # A hard bound on the whole exchange (the socket timeout bounds each read only): the
        # yield is a courtesy, and shutdown must not hang on it.
        slot = InFlight()
        timer = threading.Timer(timeout, slot.abort, args=("timed out",))
        timer.daemon = True
        timer.start()
        try:
            body = self._json("POST", "/leader/yield", timeout, slot)
        finally:
            timer.cancel()
        try:
            obj = json.loads(bytes(body).decode("utf-8"))
            was, backoff = obj["was_leader"], obj["backoff_ms"]
            if not isinstance(was, bool) or not _is_int(backoff):
                raise ValueError("wrong types")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise SourceError(f"unexpected answer from the sidecar: {e}") from None
        return was, backoff

    def watch(self, connect_timeout: float, inflight: InFlight,
              idle_timeout: float = STREAM_IDLE_TIMEOUT) -> Iterator[LeaderStatus]:
        """Opens ``GET /leader/watch`` and yields its leadership events. Ends (``return``)
        when the sidecar closes the stream; raises :class:`SourceError` on any failure,
        including an event that cannot be parsed (the stream is then taken as lost, exactly
        like the Rust client, and reopened)."""
        try:
            conn, resp = self._request("GET", "/leader/watch", connect_timeout, inflight)
        except (OSError, http.client.HTTPException, Aborted) as e:
            raise SourceError(f"cannot reach the sidecar: {_describe(e)}") from None
        try:
            if resp.status != 200:
                raise SourceError(f"the sidecar answered {resp.status}")
            sock = inflight.sock or conn.sock
            if sock is not None:
                sock.settimeout(idle_timeout)
            parser = SseParser()
            while True:
                try:
                    chunk = resp.read1(16 * 1024)
                except (OSError, http.client.HTTPException, ValueError, Aborted) as e:
                    raise SourceError(f"cannot reach the sidecar: {_describe(e)}") from None
                if not chunk:
                    return
                for ev in parser.feed(chunk):
                    if ev.event != EVENT:
                        continue  # other event types are reserved for future use
                    yield parse_leader_status(ev.data)
        finally:
            inflight.detach(conn, resp)


def _describe(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# ---------------------------------------------------------------------------------------------
# The follower
# ---------------------------------------------------------------------------------------------

class Heartbeat:
    """When the follower loop last went round (monotonic); ``/healthz`` fails when it is old."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last = clock()

    def beat(self, now: float) -> None:
        self._last = now

    def age(self, now: Optional[float] = None) -> float:
        return max(0.0, (self._clock() if now is None else now) - self._last)


class Follower:
    """Runs the follower loop and the stream thread (see the module docstring)."""

    def __init__(self, client: SidecarClient, poll_interval: float, gate: LeadershipGate,
                 heartbeat: Optional[Heartbeat] = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.poll_interval = poll_interval
        self.gate = gate
        self.heartbeat = heartbeat or Heartbeat(clock)
        self.clock = clock
        self._news: "queue.Queue[tuple]" = queue.Queue()
        self._stop = threading.Event()
        self._stream_slot = InFlight()
        self._ids = itertools.count(1)
        self._request: Optional[Tuple[Ticket, int, float, InFlight]] = None
        self._threads: List[threading.Thread] = []

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the follower loop (thread ``leader-follower``, essential: the process exits
        if it dies) and the stream thread."""
        for name, target in (("leader-stream", self._hold_stream), ("leader-follower", self.run)):
            t = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stops both threads (tests; the process itself just exits)."""
        self._stop.set()
        self._news.put(("stop",))
        self._stream_slot.abort("stopping")
        if self._request is not None:
            self._request[3].abort("stopping")
        for t in self._threads:
            t.join(timeout)

    # -- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        state = GateState(self.poll_interval)
        was_reachable = True
        while not self._stop.is_set():
            now = self.clock()
            self.heartbeat.beat(now)
            self.gate.publish(state.view())
            if state.reachable() != was_reachable:
                was_reachable = state.reachable()
                if was_reachable:
                    log.info("sidecar reachable")

            # A request that outlived its time is a failure: applied here, not by the request
            # thread, so that a hung sidecar revokes on time whatever that thread is doing.
            if self._request is not None and now >= self._request[2]:
                ticket, _, _, slot = self._request
                self._request = None
                slot.abort("timed out")
                error = f"the sidecar did not answer within {self.poll_interval * 1000:.0f}ms"
                if state.reachable():
                    log.warn("leadership request failed: not leader", error=error)
                was_reachable = False
                state.on_poll_failed(ticket)
                continue

            due = state.poll_due(now)
            if due is not None and now >= due and self._news.empty():
                self._send(state)
                continue

            wake = now + MAX_IDLE
            g = state.grant(now)
            for t in (due, g.until if g is not None else None,
                      self._request[2] if self._request is not None else None):
                if t is not None:
                    wake = min(wake, t)
            try:
                item = self._news.get(timeout=max(0.0, wake - now))
            except queue.Empty:
                continue
            was_reachable = self._apply(state, item, was_reachable)

    def _apply(self, state: GateState, item: tuple, was_reachable: bool) -> bool:
        kind = item[0]
        if kind == "event":
            state.on_stream_event(item[1])
        elif kind == "lost":
            if state.stream_up():
                log.warn("leader stream lost; polling until it is back", reason=item[1])
            state.on_stream_lost()
        elif kind in ("answer", "failed"):
            req_id = item[1]
            if self._request is None or self._request[1] != req_id:
                return was_reachable  # a request we already gave up on
            ticket = self._request[0]
            self._request = None
            if kind == "answer":
                state.on_answer(ticket, item[2])
            else:
                if state.reachable():
                    log.warn("leadership request failed: not leader", error=item[2])
                was_reachable = False
                state.on_poll_failed(ticket)
        return was_reachable

    def _send(self, state: GateState) -> None:
        # The send instant is read before the request exists, so it precedes the send.
        ticket = state.poll_sent(self.clock())
        req_id = next(self._ids)
        slot = InFlight()
        self._request = (ticket, req_id, ticket.sent_at + self.poll_interval, slot)

        def request() -> None:
            try:
                status = self.client.get(self.poll_interval, slot)
                self._news.put(("answer", req_id, status))
            except SourceError as e:
                self._news.put(("failed", req_id, str(e)))
            except Exception as e:  # never leave the follower waiting for an answer
                self._news.put(("failed", req_id, f"unexpected error: {_describe(e)}"))

        threading.Thread(target=request, name="leader-get", daemon=True).start()

    # -- the stream thread ----------------------------------------------------------------------

    def _hold_stream(self) -> None:
        """Holds ``/leader/watch`` open, reconnecting every poll interval after a failure."""
        while not self._stop.is_set():
            slot = InFlight()
            self._stream_slot = slot
            if self._stop.is_set():
                return
            try:
                for status in self.client.watch(max(self.poll_interval, 1.0), slot):
                    self._news.put(("event", status))
                why = "the sidecar closed the stream"
            except SourceError as e:
                why = str(e)
            except Exception as e:  # the stream thread must outlive any surprise
                why = f"unexpected error: {_describe(e)}"
            if self._stop.is_set():
                return
            self._news.put(("lost", why))
            self._stop.wait(self.poll_interval)
