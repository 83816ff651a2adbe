"""A minimal Kubernetes API client on http.client: exactly the requests this controller needs.

The RBAC in ``deploy/base/rbac.yaml`` grants list and watch on ``newresources`` and update on
``newresources/status``, nothing else; so this client lists, watches and PUTs status, and
never GETs a single object or PATCHes.

Why a fresh connection per request: each request must be abortable on its own (a window that
ends shuts the socket of its status write down; see ``leader_client.netutil.InFlight``), and a request
never meets a pooled connection the server has just closed, which for a write would leave us
unsure whether it was sent. Status writes are rare (one per generation of each object), so
the extra handshake costs nothing that matters.

Credentials: a bearer token read from a file (the projected service account token in a pod)
and re-read when it may have changed (bound tokens rotate): at most every 60 s, and at once
after a 401. The CA bundle is the pod's ``ca.crt`` in-cluster, else the system trust store.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import tempfile
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import logs
from kubeconfig import ApiAccess
from leader_client.netutil import Aborted, InFlight, enable_keepalive, read_bounded

log = logs.get("kube")

GROUP = "apps.newresource.com"
VERSION = "v1alpha1"
PLURAL = "newresources"
USER_AGENT = "newresource-controller-py"
#: Largest answer to a non-watch request (one page of a list, or one object).
MAX_BODY = 64 * 1024 * 1024
#: Longest line of a watch (one event with one object; the API server's limit is ~3 MiB).
MAX_WATCH_LINE = 16 * 1024 * 1024
#: How often the token file is re-read at most.
TOKEN_REFRESH = 60.0


class ApiError(Exception):
    """The API server answered with an error status (``code``), usually with a
    ``meta/v1 Status`` body whose message says why."""

    def __init__(self, code: int, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason

    def __str__(self) -> str:
        reason = f" ({self.reason})" if self.reason else ""
        return f"{self.code}{reason}: {self.message}"


class TransportError(Exception):
    """The request did not get an answer: refused, reset, timed out, unreadable."""

    def __init__(self, message: str, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


class BadLine:
    """A watch line that is not a JSON object (yielded, not raised, so the watch goes on)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"BadLine({self.reason!r})"


class ConfigError(Exception):
    """The client cannot be built (unreadable token or CA file)."""


def error_code(e: BaseException) -> str:
    """The ``code`` label of ``controller_api_errors_total``: the HTTP status of an API error,
    else ``timeout`` or ``transport`` (as the Rust controller's ``api_error_code``)."""
    if isinstance(e, ApiError):
        return str(e.code)
    if isinstance(e, TransportError) and e.timeout:
        return "timeout"
    return "transport"


def api_error_from(status: int, body: bytes) -> ApiError:
    """An :class:`ApiError` from an error answer, with the Status message when there is one."""
    message, reason = "", ""
    try:
        obj = json.loads(body.decode("utf-8"))
        if isinstance(obj, dict):
            message = str(obj.get("message") or "")
            reason = str(obj.get("reason") or "")
    except (ValueError, UnicodeDecodeError):
        pass
    if not message:
        message = body[:256].decode("utf-8", errors="replace").strip() or http.client.responses.get(status, "")
    return ApiError(status, message, reason)


class TokenSource:
    """The bearer token, re-read from its file at most every :data:`TOKEN_REFRESH` seconds
    and after a 401 (kubelet rewrites projected tokens well before they expire). If a re-read
    fails the last good token is kept: the API server decides whether it is still valid."""

    def __init__(self, path: Optional[str], clock: Callable[[], float] = time.monotonic,
                 static: Optional[str] = None) -> None:
        """``static``: a token given literally (a kubeconfig's ``token``), used when there is
        no file."""
        self._static = static
        self._path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._token: Optional[str] = None
        self._read_at: Optional[float] = None
        self._warned = False
        if path is not None:
            self._token = self._read()
            self._read_at = clock()

    def _read(self) -> str:
        assert self._path is not None
        try:
            with open(self._path, "r", encoding="utf-8") as f:
                token = f.read(64 * 1024).strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read the token file {self._path}: {e}") from None
        if not token or any(c in token for c in "\r\n\0"):
            raise ConfigError(f"the token file {self._path} holds no valid token")
        return token

    def get(self) -> Optional[str]:
        if self._path is None:
            return self._static
        with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at >= TOKEN_REFRESH:
                self._read_at = now
                try:
                    self._token = self._read()
                    self._warned = False
                except ConfigError as e:
                    if not self._warned:
                        log.warn("cannot re-read the token; using the previous one", error=str(e))
                        self._warned = True
            return self._token

    def invalidate(self) -> None:
        """After a 401: read the file again before the next request."""
        with self._lock:
            self._read_at = None


class KubeClient:
    """Requests against one API server (``--server``, ``--token-file``,
    ``--certificate-authority``, ``--api-timeout``)."""

    def __init__(self, server: str, token_file: Optional[str], ca_file: Optional[str],
                 timeout: float, access: Optional[ApiAccess] = None) -> None:
        """``access`` (from a kubeconfig) carries the credentials; without it, the server,
        token file and CA file are the flags'."""
        if access is None:
            access = ApiAccess(server=server, token_file=token_file, ca_file=ca_file)
        parts = urllib.parse.urlsplit(access.server)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.tokens = TokenSource(access.token_file, static=access.token)
        self.ssl_context: Optional[ssl.SSLContext] = None
        if self.scheme == "https":
            self.ssl_context = tls_context(access)

    @classmethod
    def from_access(cls, access: ApiAccess, timeout: float) -> "KubeClient":
        return cls(access.server, access.token_file, access.ca_file, timeout, access)

    # -- paths ---------------------------------------------------------------------------------

    def collection_path(self, namespace: Optional[str]) -> str:
        """``.../newresources`` in one namespace, or across all."""
        base = f"/apis/{GROUP}/{VERSION}"
        if namespace:
            return f"{base}/namespaces/{_q(namespace)}/{PLURAL}"
        return f"{base}/{PLURAL}"

    def status_path(self, namespace: str, name: str) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{_q(namespace)}/{PLURAL}/{_q(name)}/status"

    # -- requests ------------------------------------------------------------------------------

    def new_connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.ssl_context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _headers(self, body: bool) -> Dict[str, str]:
        h = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if body:
            h["Content-Type"] = "application/json"
        token = self.tokens.get()
        if token:
            h["Authorization"] = f"Bearer {token}"
        return h

    def open(self, method: str, path: str, query: Optional[Dict[str, str]] = None,
             body: Optional[bytes] = None, timeout: Optional[float] = None,
             inflight: Optional[InFlight] = None,
             before_send: Optional[Callable[[http.client.HTTPConnection], None]] = None,
             ) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Connects, sends and reads the status line and headers. The caller reads the body
        and must ``inflight.detach(conn)`` (which closes the connection).

        ``before_send(conn)`` runs after the connection is up and just before the first byte
        of the request is written: the status write checks its grant there, at the last
        moment, and may shorten the socket timeout to the time the grant has left.
        Raises :class:`TransportError` (or :class:`leader_client.netutil.Aborted`, or whatever
        ``before_send`` raises)."""
        inflight = inflight or InFlight()
        url = self.prefix + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        conn = self.new_connection(self.timeout if timeout is None else timeout)
        inflight.attach(conn)
        try:
            conn.connect()
            inflight.connected()
            enable_keepalive(conn.sock)
            if before_send is not None:
                before_send(conn)
            conn.request(method, url, body=body, headers=self._headers(body is not None))
            resp = conn.getresponse()
        except (Aborted, TransportError):
            inflight.detach(conn)
            raise
        except (OSError, http.client.HTTPException, ssl.SSLError) as e:
            inflight.detach(conn)
            inflight.check()  # an abort shows as a socket error: report it as the abort
            raise TransportError(_describe(e), timeout=_is_timeout(e)) from None
        except BaseException:
            inflight.detach(conn)
            raise
        if resp.status == 401:
            self.tokens.invalidate()
        return conn, resp

    def request_json(self, method: str, path: str, query: Optional[Dict[str, str]] = None,
                     body: Optional[Any] = None, timeout: Optional[float] = None,
                     inflight: Optional[InFlight] = None,
                     before_send: Optional[Callable[[http.client.HTTPConnection], None]] = None) -> Any:
        """A request with a JSON answer. Returns the decoded 2xx body; raises
        :class:`ApiError` for other statuses and :class:`TransportError` on failure."""
        inflight = inflight or InFlight()
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode("utf-8")
        conn, resp = self.open(method, path, query, data, timeout, inflight, before_send)
        try:
            try:
                raw = read_bounded(resp, MAX_BODY)
            except (OSError, http.client.HTTPException, ValueError, ssl.SSLError) as e:
                inflight.check()
                raise TransportError(f"reading the answer: {_describe(e)}", timeout=_is_timeout(e)) from None
            if not 200 <= resp.status < 300:
                raise api_error_from(resp.status, raw)
            try:
                return json.loads(raw.decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise TransportError(f"the answer is not JSON: {e}") from None
        finally:
            inflight.detach(conn, resp)

    def watch(self, path: str, query: Dict[str, str], read_timeout: float,
              inflight: InFlight) -> Iterator[Any]:
        """Opens a watch and yields its events (decoded JSON lines). Returns when the server
        ends the watch; raises :class:`ApiError` for a non-200 answer and
        :class:`TransportError` when the connection fails or a line is too long. A line that
        is not JSON is yielded as a :class:`BadLine`: the caller logs it and carries on."""
        conn, resp = self.open("GET", path, query, None, self.timeout, inflight)
        try:
            if resp.status != 200:
                raise api_error_from(resp.status, read_bounded(resp, 64 * 1024))
            sock = inflight.sock or conn.sock
            if sock is not None:
                sock.settimeout(read_timeout)
            while True:
                try:
                    line = resp.readline(MAX_WATCH_LINE + 1)
                except (OSError, http.client.HTTPException, ValueError, ssl.SSLError) as e:
                    inflight.check()
                    raise TransportError(f"reading the watch: {_describe(e)}", timeout=_is_timeout(e)) from None
                if not line:
                    return
                if len(line) > MAX_WATCH_LINE and not line.endswith(b"\n"):
                    raise TransportError(f"a watch event is longer than {MAX_WATCH_LINE} bytes")
                if not line.strip():
                    continue
                try:
                    event: Any = json.loads(line.decode("utf-8"))
                except (ValueError, UnicodeDecodeError) as e:
                    event = BadLine(f"not JSON: {e}")
                yield event
        finally:
            inflight.detach(conn, resp)


def tls_context(access: ApiAccess) -> ssl.SSLContext:
    """The TLS settings of ``access``: its CA (file or PEM data; else the system trust store),
    or no verification at all with ``insecure-skip-tls-verify``; and its client certificate.

    ``ssl`` loads a certificate chain only from files, so ``client-*-data`` are written to a
    private temporary folder, loaded, and removed at once."""
    try:
        if access.insecure_skip_tls_verify:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx = ssl.create_default_context(cafile=access.ca_file, cadata=access.ca_data)
    except (OSError, ssl.SSLError, ValueError) as e:
        raise ConfigError(f"cannot load the CA bundle {access.ca_file or 'certificate-authority-data'}: {e}") from None
    cert, key = access.client_cert_file, access.client_key_file
    if access.client_cert_data is None and access.client_key_data is None:
        if cert is not None:
            try:
                ctx.load_cert_chain(cert, key)
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(f"cannot load the client certificate {cert} / {key}: {e}") from None
        return ctx
    try:
        with tempfile.TemporaryDirectory(prefix="kubeconfig-") as tmp:
            if access.client_cert_data is not None:
                cert = _private_file(tmp, "client.crt", access.client_cert_data)
            if access.client_key_data is not None:
                key = _private_file(tmp, "client.key", access.client_key_data)
            ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"cannot load the client certificate of the kubeconfig: {e}") from None
    return ctx


def _private_file(folder: str, name: str, data: bytes) -> str:
    path = os.path.join(folder, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _is_timeout(e: BaseException) -> bool:
    return isinstance(e, (TimeoutError,)) or "timed out" in str(e)


def _describe(e: BaseException) -> str:
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
