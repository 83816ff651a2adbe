"""Log lines in exactly the shapes the Rust controller's tracing-subscriber writes.

Why mirror the format byte for byte: the end-to-end suites, the demo and operators' log
pipelines parse the Rust controller's lines (`active window started` with `term`, `status
ready`, ...). A drop-in replacement must be readable by the same parsers, so that the proof
of non-overlapping active windows, which is made *from the logs*, works for this controller
unchanged.

JSON (``--log-format json``), one object per line::

    {"timestamp":"2026-11-24T14:54:18.807083Z","level":"INFO","fields":{"message":"active window started","term":4},"target":"newresource_controller_py::workers"}

Text (the default)::

    2026-11-24T14:54:18.807083Z  INFO newresource_controller_py::workers: active window started term=4

A field whose value is ``None`` is left out, as tracing leaves out a ``None`` ``Option``
(``term`` without leader election). Every line is written with one ``write`` call under a
lock and flushed at once: lines from different threads never interleave, and a line logged
before the process is killed is not lost in a buffer (the suites read the logs of killed
processes too).
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import sys
import threading
from typing import Any, Dict, Optional, TextIO

#: The target prefix of every line (the Rust controller's is ``newresource_controller``).
ROOT_TARGET = "newresource_controller_py"

LEVELS = {"TRACE": 0, "DEBUG": 1, "INFO": 2, "WARN": 3, "ERROR": 4}

_lock = threading.Lock()
_settings: Dict[str, Any] = {"format": "text", "stream": None, "min_level": LEVELS["INFO"]}


def configure(fmt: str = "text", stream: Optional[TextIO] = None, level: Optional[str] = None) -> None:
    """Selects the format (``text`` or ``json``), the stream (default: stderr at write time)
    and the lowest level written, for these lines and for the leader_client package's (see
    :class:`StdlibBridge`).

    The level defaults to ``RUST_LOG`` when it is a plain level name (``debug``, ``info``, ...)
    so that both controllers are tuned the same way; anything else means ``info``.
    """
    _bridge_leader_client()
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r}")
    if level is None:
        level = os.environ.get("RUST_LOG", "info")
    with _lock:
        _settings["format"] = fmt
        _settings["stream"] = stream
        _settings["min_level"] = LEVELS.get(level.strip().upper(), LEVELS["INFO"])


def timestamp(now: Optional[datetime.datetime] = None) -> str:
    """UTC RFC 3339 with microseconds and ``Z``, as tracing-subscriber writes it."""
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    else:
        now = now.astimezone(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _value(v: Any) -> Any:
    """A field value as JSON can hold it: numbers, booleans and strings as they are; anything
    else (exceptions, addresses) by its ``str``. Non-finite floats become strings, because
    ``NaN`` is not JSON and one bad value must not make the whole line unparsable."""
    if isinstance(v, bool) or isinstance(v, int) or isinstance(v, str):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    return str(v)


def format_json(ts: str, level: str, target: str, message: str, fields: Dict[str, Any]) -> str:
    """One JSON line: ``timestamp``, ``level``, ``fields`` (``message`` first), ``target``."""
    out: Dict[str, Any] = {"message": str(message)}
    for k, v in fields.items():
        if v is not None and k != "message":
            out[k] = _value(v)
    return json.dumps(
        {"timestamp": ts, "level": level, "fields": out, "target": target},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def format_text(ts: str, level: str, target: str, message: str, fields: Dict[str, Any]) -> str:
    """One text line: ``<ts> <LEVEL right-aligned to 5> <target>: <message> k=v ...``.

    Strings are quoted and escaped (as tracing's ``Debug`` of ``&str`` does), so a value with
    spaces or a newline can never break the line into two or fake another field.
    """
    parts = [f"{ts} {level:>5} {target}: {_one_line(str(message))}"]
    for k, v in fields.items():
        if v is None or k == "message":
            continue
        v = _value(v)
        if isinstance(v, bool):
            rendered = "true" if v else "false"
        elif isinstance(v, (int, float)):
            rendered = repr(v)
        else:
            rendered = json.dumps(v, ensure_ascii=False)
        parts.append(f"{k}={rendered}")
    return " ".join(parts)


def _one_line(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def emit(level: str, target: str, message: str, fields: Dict[str, Any]) -> None:
    """Formats and writes one line (never raises: logging must not take the controller down)."""
    if LEVELS[level] < _settings["min_level"]:
        return
    ts = timestamp()
    try:
        if _settings["format"] == "json":
            line = format_json(ts, level, target, message, fields)
        else:
            line = format_text(ts, level, target, message, fields)
    except Exception as e:  # pragma: no cover - _value makes this unreachable in practice
        line = format_text(ts, "ERROR", ROOT_TARGET, "cannot format a log line", {"error": str(e)})
    with _lock:
        stream = _settings["stream"] or sys.stderr
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):
            # stderr closed or broken: nothing sensible is left to report it on.
            pass


#: The standard-library levels, as tracing names them.
_STDLIB_LEVELS = ((logging.ERROR, "ERROR"), (logging.WARNING, "WARN"), (logging.INFO, "INFO"),
                  (logging.DEBUG, "DEBUG"))


class StdlibBridge(logging.Handler):
    """Writes the ``leader_client`` package's records (standard :mod:`logging`, with their
    fields in ``record.fields``) as lines of this module, under the target
    ``leader_client::<module>``, as the Rust crate of that name logs."""

    def emit(self, record: logging.LogRecord) -> None:
        level = next((name for number, name in _STDLIB_LEVELS if record.levelno >= number), "TRACE")
        fields = getattr(record, "fields", None)
        emit(level, record.name.replace(".", "::"), record.getMessage(), fields if isinstance(fields, dict) else {})


_bridge = StdlibBridge()


def _bridge_leader_client() -> None:
    """Routes the package's logger to :class:`StdlibBridge` (once); the level is this
    module's to decide, so the package's logger passes everything down to DEBUG."""
    package = logging.getLogger("leader_client")
    if _bridge not in package.handlers:
        package.addHandler(_bridge)
    package.setLevel(logging.DEBUG)
    package.propagate = False


class Logger:
    """Logs under one target, e.g. ``newresource_controller_py::workers``."""

    def __init__(self, target: str) -> None:
        self.target = target

    def enabled(self, level: str) -> bool:
        return LEVELS[level] >= _settings["min_level"]

    def debug(self, message: str, /, **fields: Any) -> None:
        emit("DEBUG", self.target, message, fields)

    def info(self, message: str, /, **fields: Any) -> None:
        emit("INFO", self.target, message, fields)

    def warn(self, message: str, /, **fields: Any) -> None:
        emit("WARN", self.target, message, fields)

    def error(self, message: str, /, **fields: Any) -> None:
        emit("ERROR", self.target, message, fields)


def get(module: Optional[str] = None) -> Logger:
    """The logger of ``module`` (``None``: the root target, as the Rust ``main`` logs)."""
    return Logger(ROOT_TARGET if not module else f"{ROOT_TARGET}::{module}")
