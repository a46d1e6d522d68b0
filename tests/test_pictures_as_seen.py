"""The pictures `make demo` writes, looked at as a user would: a run where every node ties on dev,
some children failed and siblings crowd one parent (13 nodes). A tie must not invent a scale,
labels must not overlap, nodes show their score, failed nodes why they failed.

The PNG is measured on its matplotlib figure (text extents) and its pixels; the HTML page in a
real headless Chromium (its script draws the tree; a probe script measures the drawn labels).
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image
from test_serve import chromium, find_browser

from archive import Archive, Score, Status
from archive.drawing.png import figure
from archive.drawing.render import render_html, render_png
from archive.drawing.view import lineage_view, score_color

REASONS = {
    "n0003": "empty diff: improve changed nothing",
    "n0006": "self-test failed: tests/test_text.py::test_x: AssertionError",
    "n0009": "agent error: no program for any of 6 tasks (before any LLM call)",
}


def tied_run(run_dir: Path) -> Archive:
    """A root and 12 children, all evaluated ones at dev 0.4; three failed edits; one child
    with agent errors; grandchildren under the first child."""
    archive = Archive(run_dir)
    archive.add_root("m", "h", files={"a.py": "x = 1\n"}, node_id="n0000")
    archive.record_scores("n0000", {"train": Score(5 / 6, 6), "dev": Score(0.4, 10)})
    for i in range(1, 13):
        node_id = f"n{i:04d}"
        parent = "n0001" if i >= 10 else "n0000"
        edit = i % 3 == 0
        archive.add_child(
            parent,
            "scaffold_edit" if edit else "es_step",
            node_id=node_id,
            es_record=None if edit else {"seeds": [i]},
            files={"a.py": f"x = {i}\n"} if edit else None,
            metadata={
                "iteration": i,
                "outcomes": {"train": {"passed": 4, "wrong": 1, "agent_error": 1 if i == 4 else 0}},
            },
        )
        if node_id in REASONS:
            archive.set_status(node_id, Status.FAILED, REASONS[node_id])
        else:
            archive.record_scores(node_id, {"train": Score(4 / 6, 6), "dev": Score(0.4, 10)})
    return archive


@pytest.fixture
def run(tmp_path: Path) -> Path:
    with tied_run(tmp_path / "run"):
        pass
    return tmp_path / "run"


def test_a_tie_is_drawn_at_its_own_score(run: Path) -> None:
    with Archive(run, readonly=True) as archive:
        view = lineage_view(archive, details=False)
    assert len(view["nodes"]) == 13
    assert view["range"] == [0.0, 1.0]  # not 0.4 .. 1.4
    tied = [n for n in view["nodes"] if n["status"] == "evaluated"]
    assert {n["color"] for n in tied} == {score_color(0.4, 0.0, 1.0)}
    labels = {n["id"]: n["label"] for n in view["nodes"]}
    assert labels["n0002"] == ["n0002", "0.40"]
    assert labels["n0004"] == ["n0004", "0.40 (1 err)"]  # agent errors apart from wrong answers
    assert labels["n0003"] == ["n0003", "empty diff"]
    assert labels["n0009"] == ["n0009", "agent error"]


def test_png_labels_do_not_overlap_and_ties_have_their_colour(run: Path, tmp_path: Path) -> None:
    with Archive(run, readonly=True) as archive:
        view = lineage_view(archive, details=False)
        png = render_png(archive, tmp_path / "lineage.png")
    fig = figure(view, title="t")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    ax = fig.axes[0]
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert len(boxes) == 13  # one label per node, none on edges
    overlaps = [
        (ax.texts[i].get_text(), ax.texts[j].get_text())
        for i in range(len(boxes))
        for j in range(i + 1, len(boxes))
        if boxes[i].overlaps(boxes[j])
    ]
    assert not overlaps, overlaps
    texts = [t.get_text() for t in ax.texts]
    assert "n0002\n0.40" in texts and "n0006\nself-test fai\u2026" in texts
    bar = fig.axes[1]  # the colour bar runs over the fixed 0..1 scale
    assert bar.get_ylim() == pytest.approx((0.0, 1.0))

    with Image.open(BytesIO(png.read_bytes())) as img:
        rgb = np.asarray(img.convert("RGB"), dtype=np.int32)
    want = np.array([int(score_color(0.4, 0.0, 1.0)[i : i + 2], 16) for i in (1, 3, 5)])
    wrong = np.array([int(score_color(0.5, 0.0, 1.0)[i : i + 2], 16) for i in (1, 3, 5)])
    assert (np.abs(rgb - want).sum(axis=2) < 6).sum() > 200  # the tied nodes' fill
    # the colour a tie got before (the middle of an invented scale) only in the colour bar
    assert (np.abs(rgb - wrong).sum(axis=2) < 6).sum() < (np.abs(rgb - want).sum(axis=2) < 6).sum()


PROBE = """
<script>
setTimeout(function () {
  var labels = Array.prototype.slice.call(document.querySelectorAll("#tree text"));
  var boxes = labels.map(function (t) { return t.getBoundingClientRect(); });
  var hits = [];
  for (var i = 0; i < boxes.length; i++) for (var j = i + 1; j < boxes.length; j++) {
    var a = boxes[i], b = boxes[j];
    if (a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom)
      hits.push(labels[i].textContent + " / " + labels[j].textContent);
  }
  var out = document.createElement("pre");
  out.id = "probe";
  out.textContent = "labels=" + labels.length + " overlaps=" + hits.length + " " + hits.join("; ");
  document.body.appendChild(out);
}, 1500);
</script>
"""


def test_html_page_in_chromium_shows_scores_and_reasons_without_overlap(
    run: Path, tmp_path: Path
) -> None:
    browser = find_browser()
    if browser is None:
        pytest.skip("chromium is not installed and scripts/ensure-chromium.sh could not install it")
    with Archive(run, readonly=True) as archive:
        page = render_html(archive, tmp_path / "lineage.html")
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium(
        browser, tmp_path / "p1", "--window-size=1400,900", "--dump-dom", probed.as_uri()
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    probe = html.split('<pre id="probe">', 1)[1].split("</pre>", 1)[0]
    assert probe.startswith("labels=26 overlaps=0"), probe  # two lines under each of 13 nodes
    assert html.count(">0.40<") >= 9  # the tied nodes show their score
    assert "edge-label" not in html
    for node_id, reason in REASONS.items():  # on hover: the whole reason
        assert f"failed: {reason}" in html.replace("&gt;", ">"), node_id
    assert ">empty diff<" in html

    shot = tmp_path / "page.png"
    run_shot = chromium(
        browser, tmp_path / "p2", f"--screenshot={shot}", "--window-size=1400,900", page.as_uri()
    )
    assert run_shot.returncode == 0 and shot.exists(), run_shot.stderr[-2000:]
    with Image.open(shot) as img:
        rgb = np.asarray(img.convert("RGB"), dtype=np.int32)
    want = np.array([int(score_color(0.4, 0.0, 1.0)[i : i + 2], 16) for i in (1, 3, 5)])
    assert (np.abs(rgb - want).sum(axis=2) < 6).sum() > 300  # tied nodes drawn in their colour
