"""HTTP/1.1 over a Unix socket (stdlib): one thread per connection, every request handed to an
`App` that returns (status, JSON body). The server knows nothing of sessions or models.

Containers connect as arbitrary uids, so the socket is made connectable by anyone (0o666); who
may *use* it is decided by the bearer token, not by file permissions. Shutdown is immediate and
clean: idle keep-alive connections have their read side shut (their threads see EOF and end),
busy ones finish the response they are writing, and every handler thread is joined.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

MAX_BODY_BYTES = 32 * 1024 * 1024
# (method, path, Authorization header or None, body) -> (status, JSON body)
App = Callable[[str, str, str | None, bytes], tuple[int, dict[str, Any]]]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: UnixHTTPServer

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        status, body = self._answer(method)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.server.closing:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, method: str) -> tuple[int, dict[str, Any]]:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return 400, _error("send the body with a Content-Length, not Transfer-Encoding")
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit():
            self.close_connection = True
            return 400, _error(f"Content-Length must be a number of bytes, got {length!r}")
        if int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            return 413, _error(f"body over {MAX_BODY_BYTES} bytes")
        body = self.rfile.read(int(length))
        if self.server.closing:
            return 503, _error("the gateway is shutting down", "server_error")
        path = self.path.split("?", 1)[0]
        return self.server.app(method, path, self.headers.get("Authorization"), body)

    def address_string(self) -> str:
        return "unix-socket"  # client_address is empty on a Unix socket

    def log_message(self, format: str, *args: Any) -> None:
        pass  # calls are recorded per session; stderr belongs to the caller


def _error(message: str, type: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": None, "code": None}}


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Serve `app` on the Unix socket at `path` (mode 0o666) in a background thread."""

    daemon_threads = False
    block_on_close = True  # server_close() joins every handler thread
    # socketserver's default backlog is 5: a population's containers connect dozens at once, and
    # a connect to a full Unix-socket backlog fails at once (EAGAIN) instead of waiting.
    request_queue_size = 1024

    def __init__(self, path: str, app: App) -> None:
        self.app = app
        self.closing = False
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(path, _Handler)
        os.chmod(path, 0o666)
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.1}, name="lineage-gateway-http"
        )
        self._thread.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def begin_close(self) -> None:
        """Stop accepting; answers sent from now on close their connection."""
        self.closing = True
        self.shutdown()
        self._thread.join()

    def finish_close(self) -> None:
        """End idle connections and join every handler thread (call once no answer is pending)."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RD)
            except OSError:
                pass  # already closed by its thread
        self.server_close()
