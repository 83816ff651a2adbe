"""Client of leader-sidecar's leadership contract (``docs/leader-api.md``), standard library
only.

- :class:`Leadership` follows a sidecar and runs work only while it grants (the simple API).
- :class:`LeadershipGate` and :class:`Follower` are the gate and the follower underneath, for
  programs that run their own window loop (:class:`WindowLoop`).
- :class:`GateState` is the pure state machine with the safety argument (``gate.py``).
"""

from ._log import FieldsFormatter
from .follow import (Follower, Heartbeat, LeaderStatus, SidecarClient, SourceError, SseEvent, SseParser,
                     parse_leader_status)
from .gate import Closed, GateState, GateView, Grant, LeadershipGate, Ticket
from .leadership import DEFAULT_URL, Leadership
from .windows import Window, WindowLoop, run_in_thread

__version__ = "0.1.0"

__all__ = [
    "Closed", "DEFAULT_URL", "FieldsFormatter", "Follower", "GateState", "GateView", "Grant", "Heartbeat",
    "LeaderStatus", "Leadership", "LeadershipGate", "SidecarClient", "SourceError", "SseEvent", "SseParser",
    "Ticket", "Window", "WindowLoop", "parse_leader_status", "run_in_thread",
]
