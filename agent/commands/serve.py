"""`lineage serve RUN_DIR`: a live dashboard of a run (best score per split over time, the
lineage tree, node details, recent events), refreshed while the run goes on.

The page is `archive.drawing.render.page_html` in live mode, so it draws exactly what `lineage graph
--html` draws. Its script polls GET /api/lineage?version=V every few seconds; the server re-reads
the archive (read-only: no lock, no recovery, the loop is not disturbed) only when the files of
the run directory changed, and answers {"unchanged": true} when the client already has it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import typer
from rich.console import Console

from agent.commands.errors import fail
from agent.commands.paths import absolute

EVENTS_NAME = "events.jsonl"
RECENT_EVENTS = 40
_TAIL_BYTES = 256 * 1024  # enough for the last RECENT_EVENTS lines of any sane event log


class LineageFeed:
    """The latest view of one run directory, rebuilt when its files change.

    Diffs are cached across rebuilds (commits never change), so a refresh costs one read of
    the archive plus the diffs of new nodes.
    """

    def __init__(self, run_dir: Path, *, max_age_s: float = 30.0) -> None:
        self.run_dir = Path(run_dir)
        self.max_age_s = max_age_s  # rebuild anyway, in case a file system's mtimes are coarse
        self._lock = threading.Lock()
        self._diffs: dict[tuple[str | None, str], str] = {}
        self._key: tuple[Any, ...] | None = None
        self._built = 0.0
        self._payload: dict[str, Any] = {}

    def current(self) -> dict[str, Any]:
        """The view with its version (a content hash) and recent events; raises ArchiveError."""
        with self._lock:
            key = self._files_key()
            if key != self._key or time.monotonic() - self._built > self.max_age_s:
                self._payload = self._build()
                self._key, self._built = key, time.monotonic()
            return self._payload

    def _build(self) -> dict[str, Any]:
        from archive import Archive
        from archive.drawing.view import lineage_view

        with Archive(self.run_dir, readonly=True) as archive:
            view = lineage_view(archive, diff_cache=self._diffs)
        view["events"] = recent_events(self.run_dir / EVENTS_NAME)
        text = json.dumps(view, sort_keys=True, separators=(",", ":"))
        view["version"] = hashlib.sha1(text.encode()).hexdigest()[:16]
        return view

    def _files_key(self) -> tuple[Any, ...]:
        """Size and mtime of what a writer touches: the database, its WAL, the event log."""
        from archive.store import DB_NAME

        key = []
        for name in (DB_NAME, DB_NAME + "-wal", EVENTS_NAME):
            try:
                st = (self.run_dir / name).stat()
                key.append((st.st_mtime_ns, st.st_size))
            except FileNotFoundError:
                key.append(None)
        return tuple(key)


def recent_events(path: Path, limit: int = RECENT_EVENTS) -> list[dict[str, Any]] | None:
    """The last `limit` well-formed events ({"t": number, "event": str, ...}) of the log.

    None when there is no log yet; a line being written or a malformed one is skipped.
    """
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TAIL_BYTES))
            chunk = f.read()
    except FileNotFoundError:
        return None
    lines = chunk.split(b"\n")
    if size > _TAIL_BYTES:
        lines = lines[1:]  # the first line of the chunk is probably cut
    events: list[dict[str, Any]] = []
    for line in reversed(lines):
        if len(events) == limit:
            break
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if (
            isinstance(event, dict)
            and isinstance(event.get("t"), int | float)
            and isinstance(event.get("event"), str)
        ):
            events.append(event)
    return events[::-1]


class DashboardServer(ThreadingHTTPServer):
    """Serves the page and its JSON feed for one run directory."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], feed: LineageFeed, page: str) -> None:
        super().__init__(address, _Handler)
        self.feed = feed
        self.page = page.encode()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        from archive import ArchiveError

        parts = urlsplit(self.path)
        if parts.path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", self.server.page)
        elif parts.path == "/api/lineage":
            try:
                payload = self.server.feed.current()
            except (ArchiveError, OSError) as exc:  # e.g. the run directory went away
                self._json(503, {"error": str(exc)})
                return
            known = parse_qs(parts.query).get("version", [""])[0]
            if known and known == payload["version"]:
                self._json(200, {"unchanged": True, "version": known, "now": time.time()})
            else:
                self._json(200, {**payload, "now": time.time()})
        else:
            self._json(404, {"error": f"no such page: {parts.path}"})

    def _json(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        self._send(code, "application/json", data)

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Quiet: the page polls every few seconds and each poll would print a line."""


def make_server(
    run_dir: str | Path, host: str = "127.0.0.1", port: int = 8765, *, interval_s: float = 3.0
) -> DashboardServer:
    """Bind the dashboard (port 0: any free port); the run directory is read once up front so a
    wrong path fails here, not in the browser. Raises ArchiveError or OSError."""
    import agent.loop.operators  # noqa: F401  (each registers how its nodes are drawn)
    from archive.drawing.render import page_html

    if interval_s <= 0:
        raise ValueError(f"refresh interval must be > 0 seconds, got {interval_s}")
    feed = LineageFeed(Path(run_dir))
    feed.current()
    title = f"Lineage: {Path(run_dir).resolve().name} (live)"
    page = page_html(None, title=title, live=True, interval_ms=round(interval_s * 1000))
    return DashboardServer((host, port), feed, page)


def serve(
    run_dir: Annotated[
        Path, typer.Argument(help="Run directory (holds archive.sqlite).", callback=absolute)
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8765,
    interval: Annotated[float, typer.Option(help="Seconds between page refreshes.")] = 3.0,
) -> None:
    """Serve a live dashboard of a run until Ctrl-C (reads the archive read-only)."""
    from archive import ArchiveError

    console = Console(stderr=True, soft_wrap=True)  # paths stay whole
    try:
        server = make_server(run_dir, host, port, interval_s=interval)
    except ArchiveError as exc:
        raise fail(f"{run_dir} is not a readable run directory: {exc}") from exc
    except ValueError as exc:
        raise fail(exc) from exc
    except OSError as exc:  # port taken, unknown address
        raise fail(f"cannot serve on {host}:{port}: {exc}") from exc
    console.print(f"serving {run_dir} at {server.url} (Ctrl-C to stop)", highlight=False)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
