"""JSON lines to and from a container's supervisor over Docker's attach stream.

Docker multiplexes a non-tty container's stdout and stderr on one socket in frames of
(8-byte header: stream id, 3 zero bytes, big-endian length) + payload. stdout carries the
supervisor's answers; stderr carries its tracebacks, kept (bounded) for diagnostics.
"""

from __future__ import annotations

import json
import socket
import struct
import time

STDOUT, STDERR = 1, 2
MAX_LINE = 64 * 1024 * 1024


class ChannelClosed(ConnectionError):
    """The supervisor's stream ended or stalled: the container is gone or unusable."""


class AttachedChannel:
    def __init__(self, attach_socket: object) -> None:
        self._io = attach_socket
        self._sock: socket.socket = getattr(attach_socket, "_sock", attach_socket)
        self._buffer = b""  # raw frame bytes not yet parsed
        self._lines = b""  # stdout payload not yet split into lines
        self.stderr_tail = b""

    def send(self, message: dict) -> None:
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise ChannelClosed(f"cannot write to the supervisor: {exc}") from None

    def receive(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._lines:
            if len(self._lines) > MAX_LINE:
                raise ChannelClosed("supervisor answer too large")
            self._read_frame(deadline)
        line, self._lines = self._lines.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            raise ChannelClosed(f"supervisor sent a malformed line: {line[:200]!r}") from None

    def _read_frame(self, deadline: float) -> None:
        header = self._read_exactly(8, deadline)
        stream, size = header[0], struct.unpack(">I", header[4:8])[0]
        payload = self._read_exactly(size, deadline)
        if stream == STDOUT:
            self._lines += payload
        elif stream == STDERR:
            self.stderr_tail = (self.stderr_tail + payload)[-8192:]

    def _read_exactly(self, n: int, deadline: float) -> bytes:
        while len(self._buffer) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChannelClosed("supervisor did not answer in time")
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(max(65536, n - len(self._buffer)))
            except TimeoutError:
                raise ChannelClosed("supervisor did not answer in time") from None
            except OSError as exc:
                raise ChannelClosed(f"supervisor stream failed: {exc}") from None
            if not chunk:
                raise ChannelClosed("supervisor stream ended (container exited)")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def close(self) -> None:
        for closer in (getattr(self._io, "close", None), self._sock.close):
            try:
                if closer:
                    closer()
            except OSError:
                pass
