"""Small networking helpers shared by the sidecar client and the Kubernetes client.

The central one is :class:`InFlight`: a slot holding the connection of one request so that
*another* thread can abort it. Python cannot cancel a thread blocked in ``recv``; the way to
stop such a request promptly is to shut its socket down, which makes the blocked call return
at once. That is how an active window stops its watch and abandons a status write when the
grant ends, and how the follower gives up on a ``GET /leader`` that outlived its timeout.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
from typing import Optional


class Aborted(Exception):
    """The request was aborted by :meth:`InFlight.abort` (the reason is the message)."""


def abort_socket(sock: Optional[socket.socket]) -> None:
    """Makes every blocked and future operation on ``sock`` fail, and drops unsent data.

    ``SO_LINGER`` with a zero timeout makes the final ``close`` (done by the owning thread)
    reset the connection instead of flushing what is still queued, so bytes of an abandoned
    write that the kernel has not sent yet are discarded rather than sent after we gave up.
    ``shutdown`` is what wakes a thread blocked in ``recv`` or ``send`` on the socket.
    """
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (OSError, ValueError):
        pass
    try:
        # For TLS sockets, shut the underlying TCP socket down: SSLSocket.shutdown would try
        # to talk TLS on a socket another thread is reading.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, ValueError, TypeError):
        pass


def enable_keepalive(sock: Optional[socket.socket]) -> None:
    """TCP keepalive, so a long watch on a connection whose peer vanished (node gone, NAT
    entry dropped) fails within about a minute instead of hanging until its read timeout."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except OSError:
        pass


class InFlight:
    """The connection of the request one thread is running, abortable from any thread.

    The owner calls :meth:`attach` before connecting, :meth:`connected` right after, and
    :meth:`check` before sending; an :meth:`abort` at any moment makes the request fail (its
    socket is shut down). An abort before :meth:`attach` makes ``attach`` refuse, and an abort
    during the connect (no socket to shut down yet) is caught by ``connected``, so there is
    no moment at which a request can start unseen by a concurrent abort. ``abort`` is sticky.

    The socket is remembered at connect time because ``http.client`` drops ``conn.sock`` as
    soon as it reads a response that ends with the connection (HTTP/1.0, ``Connection:
    close``), while the response goes on reading from that very socket.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: Optional[http.client.HTTPConnection] = None
        self._sock: Optional[socket.socket] = None
        self._reason: Optional[str] = None

    @property
    def reason(self) -> Optional[str]:
        """Why it was aborted, or ``None``."""
        with self._lock:
            return self._reason

    @property
    def sock(self) -> Optional[socket.socket]:
        """The connected socket (also after ``http.client`` dropped ``conn.sock``)."""
        with self._lock:
            return self._sock

    def attach(self, conn: http.client.HTTPConnection) -> None:
        """Registers ``conn`` as the request in flight; raises :class:`Aborted` if aborted."""
        with self._lock:
            if self._reason is not None:
                raise Aborted(self._reason)
            self._conn = conn

    def connected(self) -> None:
        """Records the connected socket; raises :class:`Aborted` if aborted meanwhile."""
        with self._lock:
            if self._conn is not None:
                self._sock = self._conn.sock
            if self._reason is not None:
                raise Aborted(self._reason)

    def check(self) -> None:
        """Raises :class:`Aborted` if aborted (called before sending, and to tell an abort
        from an ordinary socket error)."""
        with self._lock:
            if self._reason is not None:
                raise Aborted(self._reason)

    def detach(self, conn: http.client.HTTPConnection, resp: Optional[http.client.HTTPResponse] = None) -> None:
        """The request is over; closes the response, the connection and the socket."""
        with self._lock:
            sock = self._sock
            if self._conn is conn:
                self._conn = None
                self._sock = None
        for closable in (resp, conn, sock):
            if closable is not None:
                try:
                    closable.close()
                except Exception:
                    pass

    def abort(self, reason: str) -> bool:
        """Aborts the request in flight (if any) and every later one. Returns whether this
        call was the first abort (so that exactly one reason wins)."""
        with self._lock:
            first = self._reason is None
            if first:
                self._reason = reason
            sock = self._sock
            if sock is None and self._conn is not None:
                sock = self._conn.sock
            abort_socket(sock)
        return first


#: Abort reasons.
WINDOW_ENDED = "window ended"
GRANT_ENDED = "grant ended"
TIMED_OUT = "timed out"


class RequestSlot:
    """One thread's sequence of requests, each abortable from another thread, and all
    refused once the slot is closed.

    A worker runs its status writes through its slot; the window that ends calls
    :meth:`close`, which aborts the write in flight (if any) and makes every later
    :meth:`begin` raise. Each request gets its own :class:`InFlight`, so a per-request abort
    (the grant's deadline) does not poison the next request.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: Optional[InFlight] = None
        self._closed: Optional[str] = None

    def begin(self) -> InFlight:
        with self._lock:
            if self._closed is not None:
                raise Aborted(self._closed)
            self._current = InFlight()
            return self._current

    def end(self, inflight: InFlight) -> None:
        with self._lock:
            if self._current is inflight:
                self._current = None

    def close(self, reason: str) -> None:
        with self._lock:
            if self._closed is None:
                self._closed = reason
            current = self._current
        if current is not None:
            current.abort(reason)


def read_bounded(resp: http.client.HTTPResponse, limit: int) -> bytes:
    """Reads the whole body, refusing bodies over ``limit`` bytes (a broken or hostile peer
    must not make us allocate without bound)."""
    data = resp.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"answer larger than {limit} bytes")
    return data
