"""HTTP/1.1 over a Unix socket (stdlib), bounded against its clients: a thread per connection up to
a cap, deadlines on every wait for a client, and the app shown each request's head before its
body, so a request can be refused before it costs a read.

A request goes through phases, each with its deadline (None: the app's own time):

    head   request line and headers: `header_timeout_s` from connect or the previous answer
    body   `Content-Length` bytes: `body_timeout_s` from the end of the head
    call   the app answers (generation may take minutes): no deadline
    reply  writing the answer: `body_timeout_s`

The server thread checks deadlines every 0.1 s and shuts a late connection's socket, which ends
the blocked read or write of its thread. Deadlines, not socket timeouts: a client sending a byte
a second would reset a per-read timeout forever. At `max_connections`, a new connection evicts
the connection that has waited longest for its head; when every connection is past its head, the
new one is answered 503 `overloaded` from the server thread and closed, without a thread.

Containers connect as arbitrary uids, so the socket is made connectable by anyone (0o666); who
may *use* it is decided by the bearer token, not by file permissions. Shutdown: idle connections
have their read side shut (their threads see EOF and end), busy ones finish the answer they are
writing, and every handler thread is joined.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol

from agent.gateway.config import GatewayConfig

REAP_INTERVAL_S = 0.1
DRAIN_MAX_BYTES = (
    64 * 1024
)  # a refused body up to this is read so that the client reads the refusal
Answer = tuple[int, dict[str, Any]]  # (status, JSON body)


@dataclass(frozen=True)
class Head:
    """What the app sees of a request before its body is read."""

    method: str
    path: str  # without the query
    authorization: str | None
    length: int  # Content-Length, 0 when absent


class Call(Protocol):
    """A request the app accepted from its head. Exactly one of the two is called."""

    def __call__(self, body: bytes) -> Answer:
        """The body arrived: the answer."""
        ...

    def abandon(self, reason: str) -> None:
        """The body never arrived whole (late, cut off, or the server is closing)."""
        ...


App = Callable[[Head], Answer | Call]  # an answer at once, or the call that takes the body


def error_body(message: str, type: str = "invalid_request_error", code: str | None = None):
    return {"error": {"message": message, "type": type, "param": None, "code": code}}


def overloaded(message: str) -> Answer:
    """503 with code `overloaded`: try again shortly (the client retries these)."""
    return 503, error_body(message, "server_error", "overloaded")


class _HeadTooLarge(Exception):
    pass


class _HeadReader:
    """The connection's reader during the head phase: at most `left` bytes in all."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.left = 0

    def readline(self, limit: int = -1) -> bytes:
        limit = self.left + 1 if limit < 0 else min(limit, self.left + 1)
        line = self.raw.readline(limit)
        self.left -= len(line)
        if self.left < 0:
            raise _HeadTooLarge
        return line

    def close(self) -> None:
        self.raw.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: UnixHTTPServer

    def setup(self) -> None:
        super().setup()
        self.body_file = self.rfile
        self.rfile = _HeadReader(self.body_file)  # type: ignore[assignment]

    def handle_one_request(self) -> None:
        limits = self.server.limits
        self.server.watch(self.connection, "head", limits.header_timeout_s)
        self.rfile.left = limits.max_header_bytes  # type: ignore[attr-defined]
        try:
            super().handle_one_request()
        except _HeadTooLarge:
            self.close_connection = True
            self._reply(431, error_body(f"request head over {limits.max_header_bytes} bytes"))
        except OSError:
            self.close_connection = True  # the client went away, or was cut off as late

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        length, problem = self._length()
        if problem is not None:
            self.close_connection = True  # the body's end is unknown: the connection is spent
            self._reply(400, error_body(problem))
            return
        head = Head(method, self.path.split("?", 1)[0], self.headers.get("Authorization"), length)
        started = self.server.app(head)
        if isinstance(started, tuple):
            if 0 < length <= DRAIN_MAX_BYTES:
                self._drain(length)  # a client still sending must read the answer, not a reset
            elif length:
                self.close_connection = True  # its body stays unread
            self._reply(*started)
            return
        self.server.watch(self.connection, "body", self.server.limits.body_timeout_s)
        try:
            body = self.body_file.read(length) if length else b""
        except OSError:
            body = b""  # reset by the client: abandoned like a late body, never leaked
        if len(body) < length or self.server.closing:
            self.close_connection = True
            if self.server.closing:
                started.abandon("the gateway is shutting down")
                self._reply(503, error_body("the gateway is shutting down", "server_error"))
            else:
                started.abandon(
                    f"the body did not arrive: {len(body)} of {length} bytes within "
                    f"{self.server.limits.body_timeout_s:g}s"
                )
            return
        self.server.watch(self.connection, "call", None)
        self._reply(*started(body))

    def _drain(self, length: int) -> None:
        """Read and drop a small refused body (within the body deadline), so the client's send
        completes and it reads the refusal; a body that does not come ends the connection. Only
        small ones: a refused upload must not hold a thread the session's cap does not count."""
        self.server.watch(self.connection, "body", self.server.limits.body_timeout_s)
        try:
            got = len(self.body_file.read(length))
        except OSError:
            got = 0
        if got < length:
            self.close_connection = True

    def _length(self) -> tuple[int, str | None]:
        """The body's length, or why the headers do not tell it."""
        if self.headers.get("Transfer-Encoding"):
            return 0, "send the body with a Content-Length, not Transfer-Encoding"
        values = self.headers.get_all("Content-Length") or ["0"]
        text = values[0].strip()
        if len(set(values)) > 1 or not (text.isascii() and text.isdigit()):
            return 0, f"Content-Length must be one number of bytes, got {', '.join(values)!r}"
        return (int(text) if len(text) <= 18 else 10**18), None  # int() refuses 4301 digits

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        self.server.watch(self.connection, "reply", self.server.limits.body_timeout_s)
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if self.server.closing or self.close_connection:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True  # the client went away, or stopped reading

    def address_string(self) -> str:
        return "unix-socket"  # client_address is empty on a Unix socket

    def log_message(self, format: str, *args: Any) -> None:
        pass  # calls are recorded per session; stderr belongs to the caller


@dataclass
class _Watch:
    phase: str
    since: float
    deadline: float | None


_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
)


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Serve `app` on the Unix socket at `path` (mode 0o666) in a background thread, within the
    bounds of `limits` (see the module docstring and `GatewayConfig`)."""

    daemon_threads = False
    block_on_close = True  # server_close() joins every handler thread
    # socketserver's default backlog is 5: a population's containers connect dozens at once, and
    # a connect to a full Unix-socket backlog fails at once (EAGAIN) instead of waiting.
    request_queue_size = 1024

    def __init__(self, path: str, app: App, limits: GatewayConfig) -> None:
        self.app = app
        self.limits = limits
        self.closing = False
        self.evicted = 0  # connections cut off at the cap while waiting for their head
        self.refused = 0  # connections answered 503 at the cap
        self._watches: dict[socket.socket, _Watch] = {}
        self._lock = threading.Lock()
        super().__init__(path, _Handler)
        os.chmod(path, 0o666)
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": REAP_INTERVAL_S},
            name="lineage-gateway-http",
        )
        self._thread.start()

    def connections(self) -> int:
        with self._lock:
            return len(self._watches)

    def watch(self, connection: socket.socket, phase: str, seconds: float | None) -> None:
        """Enter `phase`; the connection is shut if still in it after `seconds`."""
        now = time.monotonic()
        with self._lock:
            if connection in self._watches:
                self._watches[connection] = _Watch(
                    phase, now, None if seconds is None else now + seconds
                )

    def process_request(self, request: Any, client_address: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._watches) >= self.limits.max_connections and not self._evict_one():
                full = True
            else:
                full = False
                self._watches[request] = _Watch("head", now, now + self.limits.header_timeout_s)
        if full:
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except RuntimeError:  # no thread could be started: the host's own limit
            self.shutdown_request(request)

    def _evict_one(self) -> bool:
        """Cut off the connection waiting longest for its head (lock held)."""
        waiting = [(w.since, id(c), c) for c, w in self._watches.items() if w.phase == "head"]
        if not waiting:
            return False
        _, _, connection = min(waiting)
        del self._watches[connection]  # its thread ends on EOF; the slot is the newcomer's
        _shut(connection)
        self.evicted += 1
        return True

    def _refuse(self, request: socket.socket) -> None:
        """503 from the server thread: a fresh socket's send buffer takes it without blocking."""
        self.refused += 1
        body = json.dumps(overloaded("the gateway is at its connection limit; retry")[1]).encode()
        try:
            request.setblocking(False)
            request.send(_BUSY % (len(body), body))
        except OSError:
            pass
        self.shutdown_request(request)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._watches.pop(request, None)
        super().shutdown_request(request)

    def service_actions(self) -> None:
        """Every poll of the server thread: shut connections past their deadline."""
        self._reap()

    def _reap(self) -> None:
        now = time.monotonic()
        with self._lock:
            late = [
                c for c, w in self._watches.items() if w.deadline is not None and now > w.deadline
            ]
            for connection in late:
                self._watches[connection].deadline = None  # shut once
        for connection in late:
            _shut(connection)

    def begin_close(self) -> None:
        """Stop accepting; answers sent from now on close their connection."""
        self.closing = True
        self.shutdown()
        self._thread.join()

    def finish_close(self) -> None:
        """End idle connections and join every handler thread (call once no answer is pending);
        deadlines are kept, so a client that stops reading cannot hold the close."""
        with self._lock:
            connections = list(self._watches)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RD)
            except OSError:
                pass  # already closed by its thread
        while self.connections():
            self._reap()
            time.sleep(REAP_INTERVAL_S / 4)
        self.server_close()


def _shut(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by its thread
