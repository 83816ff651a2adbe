"""Prometheus metrics with the Rust controller's names, labels and exposition format
(OpenMetrics text, as prometheus-client writes it), so dashboards and alerts built for
``newresource-controller`` work unchanged.

Why the series the Rust controller exports at zero from the start (reconciles by result, the
duration histogram, ``controller_leader``, ``controller_active_windows_total``) are exported
at zero here too: an alert on ``increase(controller_reconcile_total{result="error"}[5m])``
must see a series before the first error, else it never fires on the first burst.
"""

from __future__ import annotations

import threading
from typing import Dict, List, Optional, Tuple

CONTROLLER = "newresource"
CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
#: exponential_buckets(0.0005, 2.0, 16), as the Rust controller.
BUCKETS = [0.0005 * 2 ** i for i in range(16)]

Labels = Tuple[Tuple[str, str], ...]


def _labels(pairs: Labels) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    if v == int(v) and abs(v) < 1e15:
        return f"{v:.1f}"
    return repr(v)


class Metrics:
    """Thread-safe counters, gauge and histogram; :meth:`encode` renders them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reconciles: Dict[str, int] = {"success": 0, "not_found": 0, "error": 0}
        self._errors: Dict[str, int] = {}
        self._buckets = [0] * len(BUCKETS)
        self._sum = 0.0
        self._count = 0
        self._leader = 0
        self._windows = 0
        self._api_errors: Dict[Tuple[str, str, str], int] = {}

    def reconciled(self, seconds: float, outcome: str, error_type: Optional[str] = None) -> None:
        """Records one reconcile that took ``seconds`` and ended with ``outcome``
        (``success``, ``error``, ``not_found``)."""
        with self._lock:
            self._sum += seconds
            self._count += 1
            for i, le in enumerate(BUCKETS):
                if seconds <= le:
                    self._buckets[i] += 1
            self._reconciles[outcome] = self._reconciles.get(outcome, 0) + 1
            if error_type is not None:
                self._errors[error_type] = self._errors.get(error_type, 0) + 1

    def api_error(self, resource: str, verb: str, code: str) -> None:
        """Counts one failed Kubernetes request; ``code`` as from ``kube.error_code``."""
        with self._lock:
            key = (resource, verb, code)
            self._api_errors[key] = self._api_errors.get(key, 0) + 1

    def set_leader(self, active: bool) -> None:
        """``controller_leader`` follows the active window; entering one counts a window."""
        with self._lock:
            self._leader = 1 if active else 0
            if active:
                self._windows += 1

    def encode(self) -> str:
        """The OpenMetrics text exposition (families without series are left out, as
        prometheus-client does)."""
        c: Labels = (("controller", CONTROLLER),)
        out: List[str] = []
        with self._lock:
            out += ["# HELP controller_reconcile Reconciles by result (success, error, not_found).",
                    "# TYPE controller_reconcile counter"]
            for result, n in self._reconciles.items():
                out.append(f"controller_reconcile_total{{{_labels(c + (('result', result),))}}} {n}")
            if self._errors:
                out += ["# HELP controller_reconcile_errors Failed reconciles by error type.",
                        "# TYPE controller_reconcile_errors counter"]
                for error_type, n in self._errors.items():
                    out.append(f"controller_reconcile_errors_total{{{_labels(c + (('error_type', error_type),))}}} {n}")
            out += ["# HELP controller_reconcile_duration_seconds Duration of reconciles, successful or not.",
                    "# TYPE controller_reconcile_duration_seconds histogram",
                    f"controller_reconcile_duration_seconds_sum{{{_labels(c)}}} {_num(self._sum)}",
                    f"controller_reconcile_duration_seconds_count{{{_labels(c)}}} {self._count}"]
            for le, n in zip(BUCKETS, self._buckets):
                out.append(f'controller_reconcile_duration_seconds_bucket{{le="{le!r}",{_labels(c)}}} {n}')
            out.append(f'controller_reconcile_duration_seconds_bucket{{le="+Inf",{_labels(c)}}} {self._count}')
            out += ["# HELP controller_leader 1 while this controller's workers run under a grant from the "
                    "sidecar, else 0.",
                    "# TYPE controller_leader gauge",
                    f"controller_leader{{{_labels(c)}}} {self._leader}",
                    "# HELP controller_active_windows Active windows started (times this controller became "
                    "the active one).",
                    "# TYPE controller_active_windows counter",
                    f"controller_active_windows_total{{{_labels(c)}}} {self._windows}"]
            if self._api_errors:
                out += ["# HELP controller_api_errors Failed Kubernetes API requests by resource, verb and code "
                        "(HTTP status, timeout or transport).",
                        "# TYPE controller_api_errors counter"]
                for (resource, verb, code), n in self._api_errors.items():
                    labels = c + (("resource", resource), ("verb", verb), ("code", code))
                    out.append(f"controller_api_errors_total{{{_labels(labels)}}} {n}")
        out.append("# EOF")
        return "\n".join(out) + "\n"
