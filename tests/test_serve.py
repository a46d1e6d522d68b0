"""`lineage serve`: the live dashboard over a real archive that a writer keeps changing, read by
urllib and by a real headless Chromium (which must run the page's script to show node ids)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from lineage_builder import EDIT_DIFF_LINE, build_lineage
from PIL import Image
from typer.testing import CliRunner

from agent.cli import app
from agent.commands.serve import DashboardServer, make_server, recent_events
from archive import Archive, Score

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


def feed(server: DashboardServer, version: str = "") -> dict:
    status, kind, body = get(
        server.url + "api/lineage" + (f"?version={version}" if version else "")
    )
    assert status == 200 and kind == "application/json", body[:300]
    return json.loads(body)


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Archive]:
    """The run's writer stays open (holding the lock) for the whole test, as a loop would."""
    with build_lineage(tmp_path / "run") as archive:
        yield archive


@pytest.fixture
def server(writer: Archive) -> Iterator[DashboardServer]:
    srv = make_server(writer.run_dir, "127.0.0.1", 0, interval_s=0.5)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def test_feed_follows_the_running_writer(writer: Archive, server: DashboardServer) -> None:
    first = feed(server)
    assert {n["id"] for n in first["nodes"]} == set(writer.ids())
    assert first["events"] is None  # no events.jsonl yet
    assert feed(server, first["version"]) == {
        "unchanged": True,
        "version": first["version"],
        "now": pytest.approx(time.time(), abs=30),
    }
    writer.add_child("edit1", node_id="fresh1", es_record={"seeds": [7]})
    second = feed(server, first["version"])
    assert second["version"] != first["version"]
    assert "fresh1" in {n["id"] for n in second["nodes"]}
    writer.record_scores("fresh1", {"dev": Score(0.9, 20)})  # a new best on dev
    third = feed(server, second["version"])
    assert third["progress"]["dev"][-1][1:] == [0.9, "fresh1"]
    fresh = next(n for n in third["nodes"] if n["id"] == "fresh1")
    assert fresh["status"] == "evaluated" and fresh["es_record"] == {"seeds": [7]}


def test_events_are_tailed(writer: Archive, server: DashboardServer) -> None:
    log = writer.run_dir / "events.jsonl"
    lines = [json.dumps({"t": time.time() + i, "event": "iteration", "i": i}) for i in range(60)]
    log.write_text("\n".join([*lines[:59], "not json", '{"t": "x", "event": 1}', lines[59], ""]))
    with open(log, "a") as f:
        f.write('{"t": 1, "ev')  # a line the loop is still writing
    events = feed(server)["events"]
    assert [e["i"] for e in events] == list(range(20, 60))
    assert recent_events(writer.run_dir / "absent.jsonl") is None


def test_page_and_errors(server: DashboardServer) -> None:
    status, kind, body = get(server.url)
    page = body.decode()
    assert status == 200 and kind.startswith("text/html")
    assert '"live":true' in page and '"interval_ms":500' in page
    assert get(server.url + "nope")[0] == 404


def test_feed_reports_a_vanished_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    build_lineage(run).close()
    srv = make_server(run, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        shutil.rmtree(run)
        status, _, body = get(srv.url + "api/lineage")
        assert status == 503 and "no such run directory" in json.loads(body)["error"]
    finally:
        srv.shutdown()
        srv.server_close()


def test_cli_serve_refuses_bad_input(tmp_path: Path, writer: Archive) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["serve", str(tmp_path / "nope"), "--port", "0"])
    assert result.exit_code == 2 and "not a readable run directory" in result.output
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["serve", str(writer.run_dir), "--port", str(port)])
    assert result.exit_code == 2 and "cannot serve on" in result.output
    result = runner.invoke(app, ["serve", str(writer.run_dir), "--interval", "0"])
    assert result.exit_code == 2 and "interval" in result.output


def test_cli_serve_in_a_subprocess(writer: Archive) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "serve", str(writer.run_dir), "--port", str(port)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/api/lineage"
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _, body = get(url)
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "lineage serve did not answer in 30 s"
                time.sleep(0.2)
        assert status == 200 and len(json.loads(body)["nodes"]) == len(writer)
    finally:
        proc.terminate()
        proc.wait(10)


# ---- a real browser --------------------------------------------------------------------------
def find_browser() -> str | None:
    """Chromium on PATH, installing it (scripts/ensure-chromium.sh: root + apt only) if absent."""
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found is None:
        subprocess.run(["bash", str(ROOT / "scripts" / "ensure-chromium.sh")], check=False)
        found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    return found


def chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",  # root in a container: Chromium's own sandbox cannot start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=8000",
        *args,
    ]
    env = {**os.environ, "HOME": str(profile)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_dashboard_renders_in_chromium(
    writer: Archive, server: DashboardServer, tmp_path: Path
) -> None:
    browser = find_browser()
    if browser is None:
        pytest.skip("chromium is not installed and scripts/ensure-chromium.sh could not install it")
    writer.add_child("es1", node_id="late1", scores={"dev": Score(0.35, 20)})
    url = server.url + "#node=edit1"  # preselects a node: the details panel must draw too
    dom = chromium(browser, tmp_path / "p1", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    for node_id in writer.ids():  # drawn by the script from the polled feed, late1 included
        assert f'data-id="{node_id}"' in html, f"{node_id} missing from the rendered tree"
    assert 'data-node="edit1"' in html
    assert EDIT_DIFF_LINE.replace(">", "&gt;") in html  # the diff in the details panel
    assert "solutions time out on long inputs" in html
    assert "live · updated" in html

    shot = tmp_path / "dashboard.png"
    run = chromium(browser, tmp_path / "p2", f"--screenshot={shot}", "--window-size=1400,900", url)
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    with Image.open(BytesIO(shot.read_bytes())) as img:
        assert img.size == (1400, 900)
        rgb = np.asarray(img.convert("RGB"), dtype=np.int32)
    assert rgb.mean(axis=2).std() > 15  # not a blank page
    tree = rgb[350:850, 50:900]  # where the lineage panel is: filled nodes, not background
    assert len(np.unique((tree[..., 0] << 16) | (tree[..., 1] << 8) | tree[..., 2])) > 50
