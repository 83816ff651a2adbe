"""Active windows: run work only while the sidecar grants leadership.

An *active window* is the time this process acts as leader in one ``term``: it opens when the
gate grants (:meth:`LeadershipGate.opened`) and ends when the grant is revoked, runs out or
belongs to another term (:meth:`LeadershipGate.closed`), or on shutdown. Every window is logged
as ``active window started`` (``term``) and ``active window ended`` (``term``, ``reason``),
the lines the conformance suite and ``docs/leader-api.md`` rule 4 ask for.

The order at the end of a window is what makes the log an honest record: the window is marked
ended (so :meth:`Window.grant` answers ``None`` and :meth:`Window.wait` returns at once), its
request slot is closed (aborting a request in flight through it), the window's own ``close``
step runs and waits for all of its work, and only then is ``active window ended`` logged. So
every write of a window happened between its two lines, provided the work sends nothing after
its ``close`` step returned.

Python cannot stop a thread from outside: work must look at :meth:`Window.grant` (or
:meth:`Window.active`) before every step, end each step before the grant's ``until``, and
return promptly once the window has ended. Requests sent through :attr:`Window.requests`
(see :class:`~leader_client.netutil.RequestSlot`) are aborted by the window's end.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

from ._log import get_logger
from .gate import Grant, LeadershipGate
from .netutil import WINDOW_ENDED, RequestSlot

log = get_logger("windows")

#: Reasons a window ends besides :class:`~leader_client.gate.Closed`'s values.
SHUTDOWN = "shutdown"
WORK_RETURNED = "work returned"
WORK_FAILED = "work failed"

#: What a window's opener returns: called once with the reason when the window ends, it stops
#: the window's work and returns only once nothing of it can still be sent.
CloseWindow = Callable[[str], None]


class Window:
    """One active window, in one term. Handed to the work that runs in it."""

    def __init__(self, gate: LeadershipGate, grant: Grant) -> None:
        self.term: Optional[int] = grant.term
        #: The grant that opened the window.
        self.opening_grant = grant
        #: Requests of this window; closed (the one in flight aborted) when the window ends.
        self.requests = RequestSlot()
        self._gate = gate
        self._lock = threading.Lock()
        self._ended = threading.Event()
        #: Set to make the window loop stop waiting for the gate (shutdown, work finished).
        self._interrupt = threading.Event()
        self._finished: Optional[str] = None
        self._reason: Optional[str] = None

    def grant(self) -> Optional[Grant]:
        """The grant in force right now, if it belongs to this window's term and the window
        has not ended; checked against the monotonic clock at the moment of asking. Ask just
        before each step of work, and end the step before the grant's ``until``."""
        if self._ended.is_set():
            return None
        g = self._gate.current()
        return g if g is not None and g.term == self.term else None

    def active(self) -> bool:
        """Whether work may act right now (:meth:`grant` is not ``None``)."""
        return self.grant() is not None

    def ended(self) -> bool:
        """Whether the window loop has ended this window."""
        return self._ended.is_set()

    @property
    def reason(self) -> Optional[str]:
        """Why the window ended (``revoked``, ``expired``, ``new term``, ``shutdown``,
        ``work returned``, ``work failed``); ``None`` while it is open."""
        with self._lock:
            return self._reason

    def wait(self, timeout: float) -> bool:
        """Sleeps up to ``timeout`` seconds, waking at once when the window ends or its grant
        is revoked, runs out or changes term. Returns whether work must stop (the grant is
        gone or the window ended)."""
        if self._ended.is_set():
            return True
        closed = self._gate.closed(self.term, cancel=self._ended, timeout=timeout)
        return closed is not None or self._ended.is_set()

    def finish(self, reason: str = WORK_RETURNED) -> None:
        """Ends the window from inside (the work is done or failed): the window loop closes
        it as soon as it sees this, with ``reason``."""
        with self._lock:
            if self._finished is None:
                self._finished = reason
        self._interrupt.set()
        self._gate.wake()

    def _end(self, reason: str) -> None:
        with self._lock:
            self._reason = reason
        self._ended.set()
        self.requests.close(WINDOW_ENDED)
        self._gate.wake()


class WindowLoop:
    """Opens a window whenever the gate grants and closes it when the grant ends.

    ``run(open_window)`` calls ``open_window(window)`` right after ``active window started``;
    it starts the window's work and returns its :data:`CloseWindow` step. ``run`` returns after
    :meth:`stop`, once the window open at that moment has been closed and logged.
    """

    def __init__(self, gate: LeadershipGate, restart_delay: float = 1.0) -> None:
        self.gate = gate
        #: Pause after a window whose work returned or failed, before the next one opens.
        self.restart_delay = restart_delay
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._current: Optional[Window] = None

    @property
    def current(self) -> Optional[Window]:
        """The window open right now, if any."""
        with self._lock:
            return self._current

    def stop(self) -> None:
        """Asks :meth:`run` to close the open window (reason ``shutdown``) and return."""
        with self._lock:
            self._stop.set()
            window = self._current
        if window is not None:
            window._interrupt.set()
        self.gate.wake()

    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, open_window: Callable[[Window], CloseWindow]) -> None:
        while not self._stop.is_set():
            grant = self.gate.opened(cancel=self._stop)
            if grant is None:
                return
            window = Window(self.gate, grant)
            with self._lock:
                self._current = window
                if self._stop.is_set():
                    window._interrupt.set()
            log.info("active window started", term=window.term)
            close: Optional[CloseWindow] = None
            try:
                close = open_window(window)
            except Exception as e:
                log.error("cannot start the window's work", term=window.term, error=_describe(e))
                window.finish(WORK_FAILED)
            closed = self.gate.closed(window.term, cancel=window._interrupt)
            if self._stop.is_set():
                reason = SHUTDOWN
            elif closed is not None:
                reason = closed.value
            else:
                # The work finished. If it did because the grant ended, say why the grant did.
                closed = self.gate.closed(window.term, timeout=0)
                reason = closed.value if closed is not None else (window._finished or WORK_RETURNED)
            window._end(reason)
            if close is not None:
                close(reason)
            with self._lock:
                self._current = None
            log.info("active window ended", term=window.term, reason=reason)
            if reason in (WORK_RETURNED, WORK_FAILED):
                self._stop.wait(self.restart_delay)


def run_in_thread(work: Callable[[Window], None], join_warning: float = 5.0) -> Callable[[Window], CloseWindow]:
    """An opener for :meth:`WindowLoop.run` that runs ``work(window)`` in its own thread. When
    ``work`` returns the window ends (``work returned``); when it raises, the exception is
    logged and the window ends (``work failed``). Closing the window waits for the thread
    however long it takes (a warning every ``join_warning`` seconds): the window is logged as
    ended only once its work has returned."""

    def open_window(window: Window) -> CloseWindow:
        def body() -> None:
            try:
                work(window)
            except Exception as e:
                log.error("window work failed", term=window.term, error=_describe(e))
                window.finish(WORK_FAILED)
                return
            window.finish(WORK_RETURNED)

        thread = threading.Thread(target=body, name=f"window-{window.term}", daemon=True)
        thread.start()

        def close(reason: str) -> None:
            del reason
            while True:
                thread.join(join_warning)
                if not thread.is_alive():
                    return
                log.warn("the window's work has not returned yet", term=window.term)

        return close

    return open_window


def _describe(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
