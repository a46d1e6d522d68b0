"""Paired statistics and the run's answer: a node is 'best' only on a paired significant
difference, never by a lucky dev score."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from agent.loop.frontier import HELDOUT_KEY, RESULTS_KEY, frontier, results
from archive import Archive, Score
from evaluators.stats import binomial_tail, paired_difference, paired_on_shared, wilson_interval


def test_mcnemar_exact_on_the_discordant_tasks():
    a = [True] * 10 + [False] * 10
    b = [True] * 10 + [True] * 6 + [False] * 4  # 6 won, 0 lost
    d = paired_difference(a, b)
    assert (d.n, d.wins, d.losses) == (20, 6, 0)
    assert d.diff == pytest.approx(0.3) and (d.a, d.b) == (0.5, 0.8)
    assert d.p_greater == pytest.approx(1 / 64)  # all 6 discordant tasks went b's way
    assert d.p_two_sided == pytest.approx(2 / 64)
    assert d.low <= d.diff <= d.high and d.low > 0
    assert binomial_tail(6, 7) == pytest.approx(8 / 128)
    assert d.describe().endswith("(6 won, 0 lost, McNemar p=0.0312, one-sided 0.0156)")
    same = paired_difference(a, a)
    assert (same.diff, same.low, same.high, same.p_two_sided) == (0, 0, 0, 1.0)


def test_the_bootstrap_interval_covers_the_truth_about_95_percent_of_the_time():
    rng = random.Random(1)
    covered = 0
    for trial in range(200):
        a = [rng.random() < 0.5 for _ in range(80)]
        b = [rng.random() < 0.6 for _ in range(80)]  # true difference +0.1
        d = paired_difference(a, b, resamples=1000, seed=trial)
        covered += d.low <= 0.1 <= d.high
    assert 0.88 <= covered / 200 <= 0.99


def test_paired_results_must_share_tasks():
    with pytest.raises(ValueError, match="same tasks"):
        paired_difference([True], [True, False])
    d = paired_on_shared({"a": True, "b": False, "c": True}, {"b": True, "c": True, "z": False})
    assert (d.n, d.wins, d.losses) == (2, 1, 0)


def test_wilson_interval_is_sound_at_the_edges():
    assert wilson_interval(0, 10)[0] == 0 and wilson_interval(0, 10)[1] > 0.2
    low, high = wilson_interval(5, 10)
    assert low < 0.5 < high and math.isclose(low + high, 1.0)


def dev_results(passed: int, tasks: int = 40) -> dict[str, bool]:
    return {f"t{i:02d}": i < passed for i in range(tasks)}


def add(archive: Archive, node_id: str, parent: str, passed: int, t: float) -> None:
    archive.add_child(
        parent,
        "es_step",
        node_id=node_id,
        es_record={"seeds": [1]},
        metadata={RESULTS_KEY: {"dev": dev_results(passed)}, "evaluated_at": t},
    )
    archive.record_scores(node_id, {"dev": Score(passed / 40, 40)})


def test_the_frontier_moves_only_on_a_significant_paired_gain(tmp_path: Path):
    with Archive(tmp_path / "run") as archive:
        archive.add_root(
            "m", "h", files={"a.py": "1\n"}, node_id="n0000", metadata={"evaluated_at": 0.0}
        )
        archive.update_metadata("n0000", {RESULTS_KEY: {"dev": dev_results(16)}})
        archive.record_scores("n0000", {"dev": Score(16 / 40, 40)})
        add(archive, "n0001", "n0000", 18, 1.0)  # +2 tasks: p = 1/4, noise
        assert frontier(archive) == ("n0000", [])
        add(archive, "n0002", "n0000", 22, 2.0)  # +6 over the base: p = 1/64
        best, steps = frontier(archive)
        assert best == "n0002" and [(s.node, s.against) for s in steps] == [("n0002", "n0000")]
        add(archive, "n0003", "n0002", 24, 3.0)  # +2 over the frontier: not enough
        assert frontier(archive)[0] == "n0002"
        assert frontier(archive, alpha=0.3)[0] == "n0003"  # a looser claim is the user's choice
        archive.update_metadata("n0003", {HELDOUT_KEY: {"h1": True}})
        assert results(archive.get("n0003"), "heldout") == {"h1": True}
        assert results(archive.get("n0003"), "dev") == dev_results(24)
