"""The package's log lines, on the standard :mod:`logging` module.

Every line is logged on a logger under ``leader_client`` (``leader_client.follow``,
``leader_client.windows``) with a fixed message, such as ``active window started``, and its
structured fields (``term``, ``reason``, ``error``) in the record's ``fields`` attribute, a dict.
Applications that want the fields in their output render ``record.fields``
(:class:`leader_client.FieldsFormatter` appends them as ``key=value``); nothing is printed
unless the application configures logging.
"""

from __future__ import annotations

import json
import logging
from typing import Any

ROOT = "leader_client"


class Logger:
    """Logs fixed messages with fields on ``leader_client.<module>``."""

    def __init__(self, module: str) -> None:
        self._logger = logging.getLogger(f"{ROOT}.{module}")

    def _log(self, level: int, message: str, fields: Any) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, message, extra={"fields": {k: v for k, v in fields.items() if v is not None}})

    def debug(self, message: str, /, **fields: Any) -> None:
        self._log(logging.DEBUG, message, fields)

    def info(self, message: str, /, **fields: Any) -> None:
        self._log(logging.INFO, message, fields)

    def warn(self, message: str, /, **fields: Any) -> None:
        self._log(logging.WARNING, message, fields)

    def error(self, message: str, /, **fields: Any) -> None:
        self._log(logging.ERROR, message, fields)


def get_logger(module: str) -> Logger:
    return Logger(module)


class FieldsFormatter(logging.Formatter):
    """A :class:`logging.Formatter` that appends a record's ``fields`` as ``key=value``
    (strings JSON-quoted, so a value can never fake another field or a line break)."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if not isinstance(fields, dict) or not fields:
            return line
        rendered = []
        for k, v in fields.items():
            if isinstance(v, bool):
                text = "true" if v else "false"
            elif isinstance(v, (int, float)):
                text = repr(v)
            else:
                text = json.dumps(str(v), ensure_ascii=False)
            rendered.append(f"{k}={text}")
        return f"{line} {' '.join(rendered)}"
