"""Test support: the import path (the package from this checkout, installed or not) and a
capture of the package's log records that tests can wait on."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from leader_client.testing import LIMIT  # noqa: E402


class LogCapture(logging.Handler):
    """Keeps the ``leader_client`` records (message and fields) and lets tests wait for one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._cond = threading.Condition()
        self.lines: List[Dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = dict(getattr(record, "fields", {}))
        with self._cond:
            self.lines.append({"message": record.getMessage(), "level": record.levelname, "fields": fields})
            self._cond.notify_all()

    def _matching(self, message: str, fields: Dict[str, Any]) -> List[Dict[str, Any]]:
        return [line for line in self.lines if line["message"] == message
                and all(line["fields"].get(k) == v for k, v in fields.items())]

    def find(self, message: str, **fields: Any) -> List[Dict[str, Any]]:
        with self._cond:
            return self._matching(message, fields)

    def wait_for(self, message: str, timeout: float = LIMIT, count: int = 1, **fields: Any) -> List[Dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self._matching(message, fields)
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no log line {message!r} {fields} within {timeout}s; got {self.lines}")
                self._cond.wait(left)

    def messages(self) -> List[str]:
        with self._cond:
            return [line["message"] for line in self.lines]


def capture_logs(test) -> LogCapture:
    """Captures the package's records for this test (removed at cleanup)."""
    cap = LogCapture()
    logger = logging.getLogger("leader_client")
    old_level = logger.level
    logger.addHandler(cap)
    logger.setLevel(logging.DEBUG)

    def restore() -> None:
        logger.removeHandler(cap)
        logger.setLevel(old_level)

    test.addCleanup(restore)
    return cap


# Records nobody captures stay off the test runner's output.
logging.getLogger("leader_client").addHandler(logging.NullHandler())
logging.getLogger("leader_client").propagate = False
