"""The leadership gate: whether this controller may act right now.

A faithful port of ``leader-client/src/gate.rs``; its safety argument, restated:

The invariant is that this controller acts (starts a reconcile, sends a status write) only
inside a *grant* from its sidecar, and a grant never extends past the sidecar's own tenure.
The sidecar's side (its Lease handling, its margin of ``lease duration - renew deadline``) is
argued in ``sidecar/src/elector.rs``; this module keeps our end of ``docs/leader-api.md``:

1. **Only a GET /leader answer grants.** An answer ``is_leader: true, valid_for_ms: v`` to a
   request whose send instant was ``s`` on our monotonic clock grants ``[s, s + v)``. The
   sidecar computed ``v`` when it produced the answer, which was after ``s``, and never past
   its own tenure; so ``s + v`` is no later than the sidecar's own deadline. Counting from
   ``s`` (read *before* the request) rather than from the answer's arrival makes every delay
   in between shorten our grant instead of lengthening it.
2. **Stream events never grant.** A ``/leader/watch`` event is read at an unknown delay after
   the sidecar wrote it (our process may have been stopped, buffers hold old events), so an
   ``is_leader: true`` event only asks for a confirming GET. Events can only take leadership
   away: ``is_leader: false``, a new term, or the stream closing revoke at once.
3. **The last answer wins, and late answers lose.** Every revocation starts a new epoch; an
   answer to a request sent in an earlier epoch is discarded, because the sidecar may have
   produced it before the event that revoked. At most one request is in flight, so answers
   are applied in the order their requests were sent.
4. **Unreachable means not leader.** A failed or timed-out request revokes.
5. **Work checks the gate at the last moment.** :meth:`LeadershipGate.current` compares the
   grant with the monotonic clock each time it is asked; workers ask just before every write,
   and a write is abandoned when the grant ends (``examples/python-controller/reconcile.py``);
   the window loop (``windows.py``) stops all work of a window when the grant ends.

What remains is a request already handed to the kernel when the process froze, which may
reach the API server after the grant (no client can prevent that without fencing on the
server). Status writes carry the object's ``resourceVersion``, so such a late write fails with
409 if another controller has written the object since; and the sidecar's margin (5 s by
default) covers ordinary delivery delays.

:class:`GateState` is the pure state machine: no I/O and no clock of its own. Every input
carries its instant (``time.monotonic()`` in production), so the unit tests drive it with
plain numbers. ``follow.py`` feeds it from the sidecar and publishes its view to the
:class:`LeadershipGate` that the workers hold.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, Protocol


class LeaderAnswer(Protocol):
    """What the state machine reads from a ``/leader`` body (:class:`.follow.LeaderStatus`)."""

    is_leader: bool
    term: Optional[int]
    valid_for_ms: int


@dataclass(frozen=True)
class Grant:
    """Leadership granted by the sidecar: act until ``until`` (exclusive) on this process's
    monotonic clock, in tenure ``term`` (``None`` when leader election is off)."""

    term: Optional[int]
    #: When the request that produced the grant was sent.
    sent_at: float
    until: float

    def valid_for(self) -> float:
        return max(0.0, self.until - self.sent_at)


@dataclass(frozen=True)
class Ticket:
    """Identifies one GET /leader: when it was sent and in which epoch."""

    epoch: int
    sent_at: float


@dataclass(frozen=True)
class GateView:
    """What workers see: the latest grant (possibly expired by now) and whether the sidecar
    answered the last request or event."""

    grant: Optional[Grant] = None
    reachable: bool = False


class GateState:
    """The pure state machine behind the gate (see the module's safety argument)."""

    def __init__(self, poll_interval: float) -> None:
        self._grant: Optional[Grant] = None
        #: Bumped by every revocation; answers to requests from older epochs are discarded.
        self._epoch = 0
        #: An event has been read from the currently open stream.
        self._stream_up = False
        #: The last request or event reached the sidecar.
        self._reachable = False
        #: A stream event said we lead; a GET must confirm it.
        self._confirm = False
        self._in_flight = False
        self._last_sent: Optional[float] = None
        self._poll_interval = poll_interval

    def grant(self, now: float) -> Optional[Grant]:
        """The grant in force at ``now``, if any."""
        g = self._grant
        return g if g is not None and now < g.until else None

    def reachable(self) -> bool:
        """Whether the sidecar answered the last request or sent the last event."""
        return self._reachable

    def stream_up(self) -> bool:
        return self._stream_up

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def confirm(self) -> bool:
        return self._confirm

    def poll_due(self, now: float) -> Optional[float]:
        """When the next GET /leader is due: at once to confirm a stream event, or when the
        last grant ran out without a fresh one; half-way through the current grant to renew
        it; every poll interval while the stream is down or the sidecar unreachable. ``None``
        while a request is in flight, or while a healthy stream covers a standby.

        A grant that ran out was never revoked: as far as the gate knows the sidecar still
        leads, and only a GET can tell. A healthy stream has nothing to say (the sidecar sends
        events on changes, and nothing changed while this process was frozen past its grant),
        so without asking the controller would sit idle while its sidecar keeps the Lease."""
        if self._in_flight:
            return None
        if self._confirm or self._grant_ran_out(now):
            return now
        g = self.grant(now)
        renew = g.sent_at + g.valid_for() / 2 if g is not None else None
        fallback = None
        if not self._stream_up or not self._reachable:
            fallback = now if self._last_sent is None else self._last_sent + self._poll_interval
        if renew is not None and fallback is not None:
            return min(renew, fallback)
        return renew if renew is not None else fallback

    def poll_sent(self, now: float) -> Ticket:
        """Records that a GET /leader is about to be sent; ``now`` must be read *before*
        sending (that is what makes the grant count from before the request)."""
        self._in_flight = True
        self._confirm = False
        self._last_sent = now
        return Ticket(epoch=self._epoch, sent_at=now)

    def on_answer(self, ticket: Ticket, status: LeaderAnswer) -> None:
        """Applies the answer to the request ``ticket``."""
        self._in_flight = False
        self._reachable = True
        if ticket.epoch != self._epoch:
            # Sent before a revocation: the sidecar may have answered before revoking.
            return
        if status.is_leader and status.valid_for_ms > 0:
            self._grant = Grant(
                term=status.term,
                sent_at=ticket.sent_at,
                until=ticket.sent_at + status.valid_for_ms / 1000.0,
            )
        else:
            self._revoke()

    def on_poll_failed(self, ticket: Ticket) -> None:
        """The request ``ticket`` failed (refused, timed out, non-200, unparsable)."""
        del ticket
        self._in_flight = False
        self._reachable = False
        self._revoke()

    def on_stream_event(self, status: LeaderAnswer) -> None:
        """An event arrived on the stream."""
        self._stream_up = True
        self._reachable = True
        if not status.is_leader:
            self._revoke()
            return
        g = self._grant
        if g is None:
            self._confirm = True
        elif g.term != status.term:
            # A new tenure we have not confirmed: the old grant is no evidence for it.
            self._revoke()
            self._confirm = True
        # else in force: renewed on the grant's own schedule; run out (this process was
        # frozen, or the last answer came late): poll_due asks at once.

    def _grant_ran_out(self, now: float) -> bool:
        """The stored grant has run out and nothing has replaced or revoked it yet."""
        return self._grant is not None and now >= self._grant.until

    def on_stream_lost(self) -> None:
        """The stream closed or failed."""
        self._stream_up = False
        self._revoke()

    def _revoke(self) -> None:
        self._grant = None
        self._epoch += 1

    def view(self) -> GateView:
        """What the gate publishes."""
        return GateView(grant=self._grant, reachable=self._reachable)


class Closed(enum.Enum):
    """Why an active window ended."""

    #: The sidecar said we are not leader, the stream closed, or it became unreachable.
    REVOKED = "revoked"
    #: The grant ran out without a fresh one.
    EXPIRED = "expired"
    #: The sidecar leads in a different term than the window's.
    NEW_TERM = "new term"


#: How long an always-open gate (``--leader-elect=false``) grants: effectively forever.
FOREVER = 100 * 365 * 24 * 3600.0


class LeadershipGate:
    """The view of the gate that workers hold, shared between threads.

    The follower publishes :class:`GateView` values; everyone else asks :meth:`current` (the
    grant in force *at the moment of asking*, on the monotonic clock) or waits with
    :meth:`opened` / :meth:`closed`. Waits are on one :class:`threading.Condition`: a
    publication wakes them, and :meth:`closed` also wakes at the grant's end by itself, so a
    window closes when its grant runs out even if the follower is stuck and publishes nothing.

    Waits take an optional ``cancel`` event (shutdown); whoever sets it calls :meth:`wake`.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        lock = threading.Lock()
        self._cond = threading.Condition(lock)
        #: Signalled when a thread starts waiting (same lock), for wait_for_waiters() only: a
        #: separate condition, so that a new waiter never wakes the other waiters.
        self._waiters_changed = threading.Condition(lock)
        self._view = GateView()
        #: Threads currently blocked in opened()/closed(); lets tests wait until one is.
        self._waiting = 0

    @classmethod
    def always_open(cls, clock: Callable[[], float] = time.monotonic) -> "LeadershipGate":
        """A gate that is always open, for ``--leader-elect=false`` (one replica, development)."""
        gate = cls(clock)
        now = clock()
        gate._view = GateView(grant=Grant(term=None, sent_at=now, until=now + FOREVER), reachable=True)
        return gate

    # -- the follower's side ------------------------------------------------------------------

    def publish(self, view: GateView) -> None:
        """Publishes the follower's view; wakes waiters only when it changed."""
        with self._cond:
            if view != self._view:
                self._view = view
                self._cond.notify_all()

    def wake(self) -> None:
        """Wakes every waiter so that it re-checks its ``cancel`` event."""
        with self._cond:
            self._cond.notify_all()

    # -- the workers' side --------------------------------------------------------------------

    def view(self) -> GateView:
        with self._cond:
            return self._view

    def current(self) -> Optional[Grant]:
        """The grant in force now, checked against the monotonic clock at the moment of asking."""
        with self._cond:
            g = self._view.grant
        return g if g is not None and self._clock() < g.until else None

    def reachable(self) -> bool:
        """Whether the sidecar answered the follower's last request or event."""
        with self._cond:
            return self._view.reachable

    def opened(self, cancel: Optional[threading.Event] = None, timeout: Optional[float] = None) -> Optional[Grant]:
        """Waits until a grant is in force and returns it; ``None`` if ``cancel`` is set or
        ``timeout`` (seconds) passes first."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                if cancel is not None and cancel.is_set():
                    return None
                g = self._view.grant
                now = self._clock()
                if g is not None and now < g.until:
                    return g
                wait = None if deadline is None else deadline - now
                if wait is not None and wait <= 0:
                    return None
                self._wait(wait)

    def closed(self, term: Optional[int], cancel: Optional[threading.Event] = None,
               timeout: Optional[float] = None) -> Optional[Closed]:
        """Waits until the window of ``term`` ends: the grant is revoked, runs out, or belongs
        to another term. ``None`` if ``cancel`` is set or ``timeout`` passes first."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                if cancel is not None and cancel.is_set():
                    return None
                g = self._view.grant
                if g is None:
                    return Closed.REVOKED
                if g.term != term:
                    return Closed.NEW_TERM
                now = self._clock()
                if now >= g.until:
                    return Closed.EXPIRED
                wait = g.until - now
                if deadline is not None:
                    if deadline - now <= 0:
                        return None
                    wait = min(wait, deadline - now)
                self._wait(wait)

    def _wait(self, timeout: Optional[float]) -> None:
        # Called with the lock held. Registering as a waiter is signalled, so that a test can
        # wait (without sleeping) until a thread is really blocked here before it publishes.
        self._waiting += 1
        self._waiters_changed.notify_all()
        try:
            self._cond.wait(timeout)
        finally:
            self._waiting -= 1

    def wait_for_waiters(self, n: int, timeout: float) -> bool:
        """Test helper: blocks until at least ``n`` threads wait in :meth:`opened` or
        :meth:`closed` (or ``timeout`` passes); returns whether they do."""
        with self._waiters_changed:
            return self._waiters_changed.wait_for(lambda: self._waiting >= n, timeout)
