"""Flags, each with an environment variable, and their validation.

The names, defaults and environment variables are the Rust controller's (`controller/src/
config.rs`), so the Deployment in `deploy/` runs this controller with its args unchanged.

Why validate everything up front and exit with status 2 and one line: a misconfigured
controller must fail at once, visibly (CrashLoopBackOff with the reason as the last log line),
rather than start and misbehave. In particular a wrong ``--leader-url`` must never be taken
for "no sidecar, so act anyway": leader election is on by default, and the sidecar URL is
checked before anything starts. Environment values are validated exactly like flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
import sys
import urllib.parse
from dataclasses import dataclass
from typing import Mapping, NoReturn, Optional, Sequence, Tuple

import kubeconfig
from kubeconfig import ApiAccess

PROGRAM = "newresource-controller (python)"
VERSION = "0.1.0"

#: Where a pod's service account credentials are mounted.
IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
IN_CLUSTER_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"

BindAddress = Optional[Tuple[str, int]]


class UsageError(Exception):
    """A flag or environment value is invalid; the message is the one line shown."""


@dataclass(frozen=True)
class Settings:
    """Validated settings (durations in seconds)."""

    #: ``None``: all namespaces.
    namespace: Optional[str]
    #: ``None`` with ``--leader-elect=false``.
    leader_url: Optional[str]
    leader_poll_interval: float
    max_concurrent_reconciles: int
    #: ``(host, port)``, or ``None`` when disabled with ``0``.
    metrics_bind_address: BindAddress
    health_probe_bind_address: BindAddress
    log_format: str
    #: The API server and credentials (see :func:`api_access` for where they come from).
    api: ApiAccess
    #: Where ``api`` came from, for the startup line: ``kubeconfig <path>``, ``--server``,
    #: ``in-cluster``.
    api_source: str
    api_timeout: float

    @property
    def server(self) -> str:
        """Base URL of the Kubernetes API (scheme, host, port and an optional path prefix)."""
        return self.api.server

    @property
    def token_file(self) -> Optional[str]:
        """``None``: no token file (a literal token from a kubeconfig, or anonymous)."""
        return self.api.token_file

    @property
    def ca_file(self) -> Optional[str]:
        """``None``: CA data from a kubeconfig, or the system trust store (https only)."""
        return self.api.ca_file


# ---------------------------------------------------------------------------------------------
# Value parsers (each raises ValueError with a reason)
# ---------------------------------------------------------------------------------------------

_UNITS = {
    "ns": 1e-9, "nsec": 1e-9, "nanos": 1e-9,
    "us": 1e-6, "µs": 1e-6, "usec": 1e-6, "micros": 1e-6,
    "ms": 1e-3, "msec": 1e-3, "millis": 1e-3,
    "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}
_PART = re.compile(r"\s*(\d+)\s*([a-zµ]+)")


def parse_duration(s: str) -> float:
    """Parses human durations as the Rust controller's humantime does: ``500ms``, ``1s``,
    ``2m``, ``1m30s`` (integers with units, summed). Returns seconds."""
    text = s.strip()
    if not text:
        raise ValueError("empty duration")
    pos, total = 0, 0.0
    while pos < len(text):
        m = _PART.match(text, pos)
        if not m:
            raise ValueError(f"invalid duration {s!r}: expected e.g. 500ms, 1s, 2m, 1m30s")
        number, unit = m.group(1), m.group(2)
        if unit not in _UNITS:
            raise ValueError(f"invalid duration {s!r}: unknown unit {unit!r}")
        total += int(number) * _UNITS[unit]
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return total


def parse_bind_address(s: str) -> BindAddress:
    """Parses controller-runtime style addresses: ``:8080`` (every IPv4 interface, as the Rust
    controller binds it), ``127.0.0.1:8080``, ``[::1]:8080``, ``localhost:8080``, or ``0``
    (disabled). Hosts must be IP literals (or ``localhost``): binding must not depend on DNS."""
    if s == "0":
        return None

    def port_of(p: str) -> int:
        if not p.isdigit() or int(p) > 65535:
            raise ValueError(f"invalid address {s!r}: bad port")
        return int(p)

    if s.startswith(":"):
        return ("0.0.0.0", port_of(s[1:]))
    if s.startswith("localhost:"):
        return ("127.0.0.1", port_of(s[len("localhost:"):]))
    if s.startswith("["):
        end = s.find("]:")
        if end < 0:
            raise ValueError(f"invalid address {s!r}: expected :PORT, HOST:PORT or 0")
        host = s[1:end]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid address {s!r}: expected :PORT, HOST:PORT or 0") from None
        return (host, port_of(s[end + 2:]))
    host, sep, port = s.rpartition(":")
    if not sep:
        raise ValueError(f"invalid address {s!r}: expected :PORT, HOST:PORT or 0")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"invalid address {s!r}: expected :PORT, HOST:PORT or 0") from None
    return (host, port_of(port))


def format_address(addr: Tuple[str, int]) -> str:
    """``host:port``, IPv6 hosts bracketed (how Rust prints a SocketAddr)."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def validate_leader_url(url: str) -> str:
    """Checks that ``url`` is a plain ``http://host[:port]`` base URL and returns it without a
    trailing slash. A path is refused rather than ignored: ``http://x:4040/leader`` would
    otherwise become ``/leader/leader`` and every request would fail, which is safe but a
    confusing way to find the typo."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"invalid --leader-url {url!r}: {e}") from None
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"invalid --leader-url {url!r}: expected http://host:port")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"invalid --leader-url {url!r}: expected http://host:port")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"invalid --leader-url {url!r}: give the base URL without a path")
    host = parts.hostname
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return f"http://{netloc}"


def validate_server(url: str) -> str:
    """Checks ``--server``: ``http(s)://host[:port][/prefix]``; returns it without a trailing
    slash (the prefix serves API servers behind a path-routing proxy)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port
    except ValueError as e:
        raise ValueError(f"invalid --server {url!r}: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid --server {url!r}: expected https://host:port (or http:// for local runs)")
    if parts.query or parts.fragment or parts.username is not None:
        raise ValueError(f"invalid --server {url!r}: expected https://host:port[/path]")
    return url.rstrip("/")


def parse_bool(s: str) -> bool:
    if s == "true":
        return True
    if s == "false":
        return False
    raise ValueError("expected true or false")


def parse_positive_int(s: str) -> int:
    if not s.strip().isdigit():
        raise ValueError("expected a whole number")
    n = int(s)
    if n < 1 or n > 65535:
        raise ValueError(f"{n} is not in 1..=65535")
    return n


# ---------------------------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit status 2 (no usage dump), like
    the Rust binaries: the reason is what an operator needs in `kubectl logs`."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        raise UsageError(message)


# (flag, env, default shown in --help, help)
_FLAGS = [
    ("--namespace", "WATCH_NAMESPACE", "all namespaces", "Reconcile only this namespace"),
    ("--leader-url", "LEADER_URL", "http://127.0.0.1:4040", "Base URL of the sidecar's leader API"),
    ("--leader-poll-interval", "LEADER_POLL_INTERVAL", "1s",
     "How often to poll GET /leader while the /leader/watch stream is unavailable (e.g. 500ms, 1s, 1m30s)"),
    ("--max-concurrent-reconciles", "MAX_CONCURRENT_RECONCILES", "1",
     "Objects reconciled at the same time (worker threads; one object is never reconciled by two at once)"),
    ("--metrics-bind-address", "METRICS_BIND_ADDRESS", ":8080",
     "Address of /metrics (`:8080` means every interface; `0` disables)"),
    ("--health-probe-bind-address", "HEALTH_PROBE_BIND_ADDRESS", ":8081",
     "Address of /healthz and /readyz (`:8081` means every interface; `0` disables)"),
    ("--log-format", "LOG_FORMAT", "text", "Log format: text or json"),
    ("--kubeconfig", "KUBECONFIG", "~/.kube/config if it exists, else in-cluster",
     "Kubeconfig file(s), `:`-separated: the current context's server and credentials"),
    ("--server", "KUBE_API_SERVER", "in-cluster https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT",
     "Kubernetes API server URL"),
    ("--token-file", "KUBE_TOKEN_FILE", f"{IN_CLUSTER_TOKEN} in-cluster; none with --server",
     "Bearer token file, re-read when it changes (at most every 60 s, and after a 401)"),
    ("--certificate-authority", "KUBE_CA_FILE", f"{IN_CLUSTER_CA} in-cluster; the system trust store with --server",
     "CA bundle that signs the API server's certificate"),
    ("--api-timeout", "API_TIMEOUT", "10s", "Timeout of each Kubernetes API request other than watches"),
]


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="controller.py",
        description="Reconciles NewResource objects (apps.newresource.com/v1alpha1) while the leader "
        "sidecar in the same pod grants leadership. Python port of newresource-controller.",
        allow_abbrev=False,
    )
    for flag, env, default, help_text in _FLAGS:
        p.add_argument(flag, metavar=flag[2:].upper().replace("-", "_"),
                       help=f"{help_text} [env: {env}] [default: {default}]")
        if flag == "--namespace":
            p.add_argument(
                "--leader-elect", nargs="?", const="true", metavar="true|false",
                help="Follow the sidecar's leadership; --leader-elect=false reconciles always "
                "(one replica, development) [env: LEADER_ELECT] [default: true]",
            )
    p.add_argument("--version", action="version", version=f"newresource-controller (python) {VERSION}")
    return p


def _pick(cli: Optional[str], flag: str, env: str, environ: Mapping[str, str]) -> Tuple[Optional[str], str]:
    """The raw value and where it came from, for the error message. An empty environment
    variable counts as unset (as clap treats it), so ``WATCH_NAMESPACE=""`` means all
    namespaces rather than a namespace named ``""``."""
    if cli is not None:
        return cli, flag
    value = environ.get(env)
    if value:
        return value, f"{env} (env of {flag})"
    return None, flag


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> Settings:
    """Parses and validates; raises :class:`UsageError` with a one-line reason."""
    args = build_parser().parse_args(list(argv))

    def value(attr: str, flag: str, env: str, default: Optional[str], parser):
        raw, source = _pick(getattr(args, attr), flag, env, environ)
        if raw is None:
            raw = default
        if raw is None:
            return None
        try:
            return parser(raw)
        except ValueError as e:
            raise UsageError(f"invalid value {raw!r} for {source}: {e}") from None

    namespace = value("namespace", "--namespace", "WATCH_NAMESPACE", None, str) or None
    leader_elect = value("leader_elect", "--leader-elect", "LEADER_ELECT", "true", parse_bool)
    poll = value("leader_poll_interval", "--leader-poll-interval", "LEADER_POLL_INTERVAL", "1s", parse_duration)
    if poll <= 0:
        raise UsageError("--leader-poll-interval must be positive")
    leader_url_raw, source = _pick(args.leader_url, "--leader-url", "LEADER_URL", environ)
    leader_url: Optional[str] = None
    if leader_elect:
        try:
            leader_url = validate_leader_url(leader_url_raw or "http://127.0.0.1:4040")
        except ValueError as e:
            raise UsageError(str(e) if source == "--leader-url" else f"{e} (from {source})") from None
    workers = value("max_concurrent_reconciles", "--max-concurrent-reconciles",
                    "MAX_CONCURRENT_RECONCILES", "1", parse_positive_int)
    metrics = value("metrics_bind_address", "--metrics-bind-address", "METRICS_BIND_ADDRESS", ":8080",
                    parse_bind_address)
    health = value("health_probe_bind_address", "--health-probe-bind-address", "HEALTH_PROBE_BIND_ADDRESS",
                   ":8081", parse_bind_address)
    if metrics is not None and health is not None and metrics == health and metrics[1] != 0:
        raise UsageError(
            f"--metrics-bind-address and --health-probe-bind-address are both {format_address(metrics)}")

    def log_format(s: str) -> str:
        if s not in ("text", "json"):
            raise ValueError("expected text or json")
        return s

    fmt = value("log_format", "--log-format", "LOG_FORMAT", "text", log_format)
    api_timeout = value("api_timeout", "--api-timeout", "API_TIMEOUT", "10s", parse_duration)
    if api_timeout <= 0:
        raise UsageError("--api-timeout must be positive")

    api, api_source = api_access(args, environ, value)
    return Settings(
        namespace=namespace,
        leader_url=leader_url,
        leader_poll_interval=poll,
        max_concurrent_reconciles=workers,
        metrics_bind_address=metrics,
        health_probe_bind_address=health,
        log_format=fmt,
        api=api,
        api_source=api_source,
        api_timeout=api_timeout,
    )


def api_access(args: argparse.Namespace, environ: Mapping[str, str], value) -> Tuple[ApiAccess, str]:
    """The API server and credentials, chosen as the Rust controller (kube-rs) chooses them,
    with this controller's ``--server`` as an explicit alternative to a kubeconfig:

    1. the flags: ``--kubeconfig`` or ``--server`` (both together is a usage error);
    2. the environment: ``KUBECONFIG``, else ``KUBE_API_SERVER``. ``KUBECONFIG`` wins, as it
       does for the Rust controller, which reads only that one;
    3. ``$HOME/.kube/config`` if the file exists (kube-rs's ``Config::infer``; unlike kube-rs,
       a broken one is an error here rather than a silent fall back to another cluster);
    4. in a pod: ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`` with the service
       account's token and CA.

    ``--token-file`` and ``--certificate-authority`` (``KUBE_TOKEN_FILE``, ``KUBE_CA_FILE``) go
    with ``--server`` and the in-cluster server; given as flags next to a kubeconfig they are a
    usage error, and their variables are then ignored (a kubeconfig carries its own).
    """
    def from_kubeconfig(paths: str, source: str) -> Tuple[ApiAccess, str]:
        for flag, attr in (("--token-file", "token_file"), ("--certificate-authority", "certificate_authority")):
            if getattr(args, attr) is not None:
                raise UsageError(f"{flag} goes with --server, not with a kubeconfig ({source})")
        try:
            access = kubeconfig.load(paths)
            access = dataclasses.replace(access, server=validate_server(access.server))
        except (kubeconfig.KubeconfigError, ValueError) as e:
            raise UsageError(str(e)) from None
        return access, f"kubeconfig {paths}"

    def explicit(server: str) -> Tuple[ApiAccess, str]:
        token_file = value("token_file", "--token-file", "KUBE_TOKEN_FILE", None, str) or None
        ca_file = value("certificate_authority", "--certificate-authority", "KUBE_CA_FILE", None, str) or None
        return ApiAccess(server=server, token_file=token_file, ca_file=ca_file), "--server"

    if args.kubeconfig is not None and args.server is not None:
        raise UsageError("give --kubeconfig or --server, not both")
    if args.kubeconfig is not None:
        if not args.kubeconfig:
            raise UsageError("--kubeconfig is empty")
        return from_kubeconfig(args.kubeconfig, "--kubeconfig")
    if args.server is not None:
        return explicit(value("server", "--server", "KUBE_API_SERVER", None, validate_server))
    if environ.get("KUBECONFIG"):
        return from_kubeconfig(environ["KUBECONFIG"], "KUBECONFIG")
    if environ.get("KUBE_API_SERVER"):
        return explicit(value("server", "--server", "KUBE_API_SERVER", None, validate_server))
    home = environ.get("HOME")
    if home and os.path.isfile(os.path.join(home, ".kube", "config")):
        return from_kubeconfig(os.path.join(home, ".kube", "config"), "$HOME/.kube/config")

    host = environ.get("KUBERNETES_SERVICE_HOST", "")
    port = environ.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise UsageError(
            "no Kubernetes API server: give --kubeconfig (KUBECONFIG) or --server (and --token-file, "
            "--certificate-authority as needed), or run in a pod (KUBERNETES_SERVICE_HOST and "
            "KUBERNETES_SERVICE_PORT)")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    try:
        server = validate_server(f"https://{host}:{port}")
    except ValueError as e:
        raise UsageError(f"invalid in-cluster API address: {e}") from None
    # The pod's own credentials are used only for the in-cluster server: sending the service
    # account token to a server named by --server is the operator's explicit choice
    # (--token-file), never a default.
    token_file = value("token_file", "--token-file", "KUBE_TOKEN_FILE", None, str) or IN_CLUSTER_TOKEN
    ca_file = value("certificate_authority", "--certificate-authority", "KUBE_CA_FILE", None, str) or IN_CLUSTER_CA
    return ApiAccess(server=server, token_file=token_file, ca_file=ca_file), "in-cluster"


def parse_or_exit(argv: Sequence[str], environ: Mapping[str, str]) -> Settings:
    """Parses; on a usage error prints ``newresource-controller (python): error: <reason>`` on
    stderr and exits with status 2. ``--help`` and ``--version`` print and exit 0."""
    try:
        return parse(argv, environ)
    except UsageError as e:
        reason = " ".join(str(e).split())
        sys.stderr.write(f"{PROGRAM}: error: {reason}\n")
        sys.stderr.flush()
        sys.exit(2)
