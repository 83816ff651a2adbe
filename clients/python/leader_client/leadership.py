"""The small public API: follow one sidecar and run work only while it grants.

::

    lead = Leadership("http://127.0.0.1:4040")
    lead.run(work)               # in a thread; returns after lead.stop()
    lead.yield_leadership()      # after run returned: every window has ended

``work(window)`` runs in its own thread for every active window (see :mod:`.windows`).
"""

from __future__ import annotations

import threading
from typing import Callable, Optional, Tuple

from .follow import USER_AGENT, Follower, Heartbeat, SidecarClient
from .gate import LeadershipGate
from .windows import Window, WindowLoop, run_in_thread

#: Where the sidecar listens by default (``leader-sidecar --listen``).
DEFAULT_URL = "http://127.0.0.1:4040"


class Leadership:
    """A sidecar client, the follower threads that keep a :class:`LeadershipGate` in step
    with it, and the window loop that runs work while the gate grants."""

    def __init__(self, leader_url: str = DEFAULT_URL, poll_interval: float = 1.0,
                 user_agent: str = USER_AGENT, restart_delay: float = 1.0) -> None:
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.client = SidecarClient(leader_url, user_agent)
        self.gate = LeadershipGate()
        self.heartbeat = Heartbeat()
        self.follower = Follower(self.client, poll_interval, self.gate, self.heartbeat)
        self.windows = WindowLoop(self.gate, restart_delay)
        self._lock = threading.Lock()
        self._started = False

    def start(self) -> None:
        """Starts following the sidecar (once; :meth:`run` calls it)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        self.follower.start()

    def run(self, work: Callable[[Window], None]) -> None:
        """Runs ``work(window)`` in a thread during every active window, until :meth:`stop`.
        Returns once the last window has ended and its work has returned."""
        self.start()
        self.windows.run(run_in_thread(work))

    def stop(self) -> None:
        """Ends the open window (reason ``shutdown``) and makes :meth:`run` return. Call it
        from a thread, not from a signal handler (it takes locks that the interrupted code may
        hold): block the signals and ``signal.sigwait`` for them in the main thread."""
        self.windows.stop()

    def yield_leadership(self, timeout: float = 2.0) -> Tuple[bool, int]:
        """``POST /leader/yield`` (rule 3): call it only once no window is open and its work
        has stopped, i.e. after :meth:`run` returned. Returns ``(was_leader, backoff_ms)``;
        raises :class:`~leader_client.follow.SourceError` if the sidecar does not answer."""
        return self.client.yield_leadership(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stops the follower threads."""
        self.follower.stop(timeout)

    @property
    def current_window(self) -> Optional[Window]:
        return self.windows.current
