"""Lineage pictures from real archives: the layout, the offline HTML page, the PNG, the CLI."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from lineage_builder import EDIT_DIFF_LINE, SCRIPT_BREAKER, build_lineage, grow
from PIL import Image
from typer.testing import CliRunner

from agent.cli import app
from archive import Archive, Status
from archive.drawing.layout import Position, tree_layout
from archive.drawing.render import render_html, render_png
from archive.drawing.view import (
    FAILED_COLOR,
    SCORE_STOPS,
    UNSCORED_COLOR,
    best_over_time,
    lineage_view,
    score_color,
)

DATA_RE = re.compile(r'<script type="application/json" id="lineage-data">(.*?)</script>', re.S)


def embedded_view(page: str) -> dict:
    match = DATA_RE.search(page)
    assert match, "the page has no inline data block"
    return json.loads(match.group(1))


@pytest.fixture
def lineage(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    build_lineage(run).close()
    return run


# ---- layout and colours --------------------------------------------------------------------
def test_layout_generations_and_columns() -> None:
    pos = tree_layout(
        {"r": (), "a": ("r",), "b": ("r",), "a1": ("a",), "a2": ("a",), "m": ("b", "a1")}
    )
    assert [pos[i].depth for i in ("r", "a", "b", "a1", "a2", "m")] == [0, 1, 1, 2, 2, 3]
    leaves = [pos[i].x for i in ("m", "a2")]  # m hangs under b (its primary parent)
    assert len(set(leaves)) == 2
    assert pos["a"].x == (pos["a1"].x + pos["a2"].x) / 2
    assert pos["r"].x == (pos["a"].x + pos["b"].x) / 2
    assert min(p.x for p in pos.values()) == 0


def test_layout_deep_chain_and_bad_order() -> None:
    chain = {"n0": ()} | {f"n{i}": (f"n{i - 1}",) for i in range(1, 5000)}
    pos = tree_layout(chain)
    assert pos["n4999"] == Position(0.0, 4999)
    with pytest.raises(ValueError, match="before its parents"):
        tree_layout({"c": ("p",), "p": ()})


def test_score_colours() -> None:
    assert score_color(0.0, 0.0, 1.0) == SCORE_STOPS[0]
    assert score_color(1.0, 0.0, 1.0) == SCORE_STOPS[-1]
    assert score_color(0.5, 0.0, 1.0) == SCORE_STOPS[len(SCORE_STOPS) // 2]
    assert score_color(None, 0.0, 1.0) == UNSCORED_COLOR
    assert score_color(3.0, 3.0, 3.0) == SCORE_STOPS[len(SCORE_STOPS) // 2]


def test_view_of_a_lineage(lineage: Path) -> None:
    with Archive(lineage, readonly=True) as archive:
        view = lineage_view(archive)
        nodes = {n["id"]: n for n in view["nodes"]}
        # one fixed scale for pass rates: a colour means the same score in every run
        assert view["split"] == "dev" and view["range"] == [0.0, 1.0]
        assert nodes["edit1"]["color"] == score_color(0.40, 0.0, 1.0)  # best dev score
        assert nodes["both1"]["color"] == score_color(0.15, 0.0, 1.0)  # worst
        assert nodes["edit1"]["label"] == ["edit1", "0.40"]
        assert nodes["bad1"]["label"] == ["bad1", "syntax error \u2026"]
        assert nodes["pending1"]["label"] == ["pending1", "pending"]
        assert nodes["pending1"]["color"] == UNSCORED_COLOR
        assert nodes["merge1"]["depth"] == 2 and nodes["merge1"]["parents"] == ["es1", "edit1"]
        assert nodes["es1"]["diff"] == ""  # an ES step keeps its parent's commit
        assert "+++ b/tools/grep.py" in nodes["both1"]["diff"]  # vs edit1, not vs root
        assert "agent.py" not in nodes["both1"]["diff"]
        assert nodes["root"]["diff_base"] is None and "+seed" in nodes["root"]["diff"]
        progress = best_over_time(archive.nodes())
    assert [p[2] for p in progress["dev"]] == ["root", "es1", "edit1"]
    assert [p[1] for p in progress["train"]] == [0.30, 0.36, 0.44]
    assert view["counts"] == {"pending": 2, "evaluating": 0, "evaluated": 4, "failed": 1}


# ---- HTML ------------------------------------------------------------------------------------
def test_html_is_offline_and_holds_every_detail(lineage: Path, tmp_path: Path) -> None:
    with Archive(lineage, readonly=True) as archive:
        ids = archive.ids()
        path = render_html(archive, tmp_path / "lineage.html")
    page = path.read_text()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)  # nothing fetched
    assert "https://" not in page and "http://" not in page.replace(
        "http://www.w3.org/2000/svg", ""
    )
    assert page.count("</script>") == 3  # the diff holding </script> did not close a block
    assert SCRIPT_BREAKER not in page
    nodes = {n["id"]: n for n in embedded_view(page)["nodes"]}
    assert set(nodes) == set(ids)
    edit = nodes["edit1"]
    assert EDIT_DIFF_LINE in edit["diff"].splitlines()
    assert SCRIPT_BREAKER in edit["diff"]  # intact after the round trip through the page
    assert edit["diagnosis"] == "solutions time out on long inputs"
    assert edit["problem_statement"].startswith("Make run() retry")
    assert edit["flags"] == ["touches_entrypoint", "new_file"] and edit["iteration"] == 2
    assert nodes["es1"]["es_record"] == {
        "seeds": [11, 12, 13, 14],
        "sigma": 0.02,
        "lr": 0.5,
        "rank": 4,
    }
    assert nodes["bad1"]["status"] == "failed"
    assert nodes["bad1"]["failure_reason"] == "syntax error in agent.py"
    assert nodes["root"]["scores"]["train"] == {"score": 0.30, "n": 50}
    assert nodes["root"]["cost"] == {"generated_tokens": 100, "sandbox_s": 2.0, "wall_s": 5.0}
    assert nodes["merge1"]["operator"] == "crossover" and nodes["merge1"]["shape"] == "hexagon"


def test_html_of_one_node_and_of_none(tmp_path: Path) -> None:
    with Archive(tmp_path / "empty") as archive:
        view = embedded_view(render_html(archive, tmp_path / "empty.html").read_text())
        assert view["nodes"] == [] and view["split"] is None
        archive.add_root("m", "sha256:m", node_id="only", files={"a.py": "1\n"})
        view = embedded_view(render_html(archive, tmp_path / "one.html").read_text())
    (only,) = view["nodes"]
    assert only["id"] == "only" and only["color"] == UNSCORED_COLOR and view["progress"] == {}


# ---- PNG -------------------------------------------------------------------------------------
def _png_stats(path: Path) -> tuple[tuple[int, int], float, int, int]:
    """Size, grey-level spread, distinct colours and failed-red pixels of a PNG."""
    with Image.open(path) as img:
        assert img.format == "PNG"
        rgb = np.asarray(img.convert("RGB"), dtype=np.int32)
    h, w, _ = rgb.shape
    std = float(rgb.mean(axis=2).std())
    colours = len(np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]))
    red = np.array([int(FAILED_COLOR[i : i + 2], 16) for i in (1, 3, 5)])
    reds = int((np.abs(rgb - red).sum(axis=2) < 40).sum())
    return (w, h), std, colours, reds


def test_png_is_a_real_picture(lineage: Path, tmp_path: Path) -> None:
    with Archive(lineage, readonly=True) as archive:
        path = render_png(archive, tmp_path / "lineage.png")
    (w, h), std, colours, reds = _png_stats(path)
    assert 600 <= w <= 5000 and 400 <= h <= 5000
    assert std > 10 and colours > 100  # drawn on, not a blank canvas
    assert reds > 20  # the failed node's red marking


def test_png_of_one_node(tmp_path: Path) -> None:
    with Archive(tmp_path / "run") as archive:
        archive.add_root("m", "sha256:m", node_id="only", files={"a.py": "1\n"})
        path = render_png(archive, tmp_path / "one.png")
    (w, h), std, colours, reds = _png_stats(path)
    assert w >= 600 and h >= 400 and std > 5 and reds == 0


def test_pictures_of_250_nodes_are_fast(tmp_path: Path) -> None:
    with build_lineage(tmp_path / "run") as archive:
        grow(archive, 250)
        archive.set_status("e0003", Status.FAILED, "sandbox timeout")
        t0 = time.perf_counter()
        page = render_html(archive, tmp_path / "big.html").read_text()
        t1 = time.perf_counter()
        png = render_png(archive, tmp_path / "big.png")
        t2 = time.perf_counter()
        ids = archive.ids()
    assert len(ids) == 257
    assert {n["id"] for n in embedded_view(page)["nodes"]} == set(ids)
    assert t1 - t0 < 5.0, f"HTML of 257 nodes took {t1 - t0:.2f} s"
    assert t2 - t1 < 5.0, f"PNG of 257 nodes took {t2 - t1:.2f} s"
    (w, h), std, colours, reds = _png_stats(png)
    assert w > 1500 and std > 10 and reds > 50


# ---- CLI -------------------------------------------------------------------------------------
def test_cli_graph_beside_a_running_writer(tmp_path: Path) -> None:
    run = tmp_path / "run"
    html, png = tmp_path / "out.html", tmp_path / "out.png"
    with build_lineage(run):  # the writer holds the run's lock throughout
        result = CliRunner().invoke(
            app, ["graph", str(run), "--html", str(html), "--png", str(png)]
        )
    assert result.exit_code == 0, result.output
    assert "bad1" in {n["id"] for n in embedded_view(html.read_text())["nodes"]}
    assert _png_stats(png)[1] > 10


def test_cli_graph_errors(tmp_path: Path, lineage: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["graph", str(tmp_path / "nope"), "--html", "x.html"])
    assert result.exit_code == 2 and "not a readable run directory" in result.output
    (tmp_path / "plain").mkdir()
    result = runner.invoke(app, ["graph", str(tmp_path / "plain"), "--png", "x.png"])
    assert result.exit_code == 2 and "no archive database" in result.output
    result = runner.invoke(app, ["graph", str(lineage)])
    assert result.exit_code == 2 and "--html FILE and/or --png FILE" in result.output
    assert not Path("x.html").exists() and not Path("x.png").exists()
