"""What each operator's children came to, counted on a real archive (SQLite + git)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.loop.frontier import RESULTS_KEY
from agent.loop.outcomes import operator_outcomes, reason_kind
from archive import Archive, Score, Status

ROOT = Path(__file__).resolve().parents[1]


def dev(passed: int, n: int = 40) -> dict[str, bool]:
    return {f"t{i}": i < passed for i in range(n)}


def judged(archive: Archive, node: str, parent: str, operator: str, passed: int) -> None:
    archive.add_child(parent, operator, node_id=node, files={"a.py": f"{node}\n"})
    archive.update_metadata(node, {RESULTS_KEY: {"dev": dev(passed)}})
    archive.record_scores(node, {"train": Score(0.5, 8), "dev": Score(passed / 40, 40)})


def lineage(run_dir: Path) -> Archive:
    archive = Archive(run_dir)
    archive.add_root("m", "h", files={"a.py": "0\n"}, node_id="n0000")
    archive.update_metadata("n0000", {RESULTS_KEY: {"dev": dev(16)}})
    archive.record_scores("n0000", {"train": Score(0.5, 8), "dev": Score(16 / 40, 40)})
    judged(archive, "n0001", "n0000", "scaffold_edit", 22)  # +6 tasks, 6-0: p = 1/64
    judged(archive, "n0002", "n0001", "scaffold_edit", 23)  # +1 over its parent: noise
    archive.add_child(
        "n0000",
        "scaffold_edit",
        node_id="n0003",
        status=Status.FAILED,
        failure_reason="empty diff: improve changed nothing",
    )
    archive.add_child(
        "n0001",
        "scaffold_edit",
        node_id="n0004",
        status=Status.FAILED,
        failure_reason="empty diff: improve changed nothing (note: kept today's)",
    )
    judged(archive, "n0005", "n0001", "es_step", 20)  # below its parent (22), above the base
    archive.add_child("n0001", "es_step", node_id="n0006")  # stage 1 only
    archive.update_metadata("n0006", {"stopped_at_stage1": True})
    archive.record_scores("n0006", {"train": Score(0.25, 8)})
    archive.add_child("n0001", "es_step", node_id="n0007")  # not judged yet
    return archive


def test_each_operator_is_counted_against_the_parent_it_was_made_from(tmp_path: Path):
    with lineage(tmp_path / "run") as archive:
        table = operator_outcomes(list(archive.nodes()), alpha=0.05)
    assert list(table) == ["scaffold_edit", "es_step"]  # the root is no operator's child
    edit, es = table["scaffold_edit"], table["es_step"]
    assert (edit.made, edit.failed, edit.judged_on_dev) == (4, 2, 2)
    assert dict(edit.reasons) == {"empty diff": 2}
    assert edit.above_parent == 2 and edit.significant == 1  # n0002's +1 is not a claim
    assert edit.mean_dev_change == pytest.approx((6 / 40 + 1 / 40) / 2)
    assert (es.made, es.failed, es.pending, es.stopped_at_stage1, es.judged_on_dev) == (
        3,
        0,
        1,
        1,
        1,
    )
    # n0005 is above the base but below n0001, the node it was made from
    assert (
        es.above_parent == 0
        and es.significant == 0
        and es.mean_dev_change == pytest.approx(-2 / 40)
    )
    assert es.to_json()["failure_reasons"] == {}


def test_a_looser_alpha_counts_more_children_as_gains(tmp_path: Path):
    with lineage(tmp_path / "run") as archive:
        nodes = list(archive.nodes())
    assert operator_outcomes(nodes, alpha=0.6)["scaffold_edit"].significant == 2


def test_failure_reasons_are_classed_by_their_first_words():
    assert reason_kind("agent error: Traceback ...") == "agent error"
    assert (
        reason_kind("infrastructure error (no score): docker") == "infrastructure error (no score)"
    )
    assert reason_kind(None) == reason_kind("  ") == "no reason given"
    assert len(reason_kind("x" * 500)) == 60


def test_lineage_status_shows_the_table(tmp_path: Path):
    run_dir = tmp_path / "run"
    lineage(run_dir).close()
    (run_dir / "config.json").write_text("{}")  # the defaults, as `lineage run` would save them
    status = subprocess.run(
        [sys.executable, "-m", "agent.cli", "status", str(run_dir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert status.returncode == 0, status.stderr[-2000:]
    assert "children by operator" in status.stdout
    table = status.stdout.split("children by operator", 1)[1]
    row = next(line for line in table.splitlines() if "scaffold_edit" in line)
    assert "empty diff x2" in row
