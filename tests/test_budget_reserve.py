"""`[budget] wall_clock_s` pays for the final held-out report: a child is not started when the
budget left cannot cover it and the report (estimated from what this run's nodes cost).

Unit tests of the logic over a real archive. No integration test sets a wall clock (a run long
enough to be cut by one takes minutes); `make demo`, whose config has one, is where the reserve
was seen to stop a real run (docs/efficacy.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.loop.config import from_dict
from agent.loop.loop import ROOT_ID, Loop
from archive import Archive, Cost, Score


@pytest.fixture
def run(tmp_path: Path):
    """A loop whose base took 90 s for 9 tasks (10 s a task) and whose held-out split has 6."""
    archive = Archive(tmp_path / "run")
    archive.add_root("m", "h", files={"a.py": "x = 1\n"}, node_id=ROOT_ID)
    archive.record_scores(
        ROOT_ID,
        {"train": Score(0.5, 4), "dev": Score(0.5, 5)},
        cost=Cost(100, 0.0, 90.0),
    )

    def make(budget: dict) -> Loop:
        rt = SimpleNamespace(
            config=from_dict({"budget": budget}, "t"),
            run_dir=tmp_path / "run",
            archive=archive,
            gateway=SimpleNamespace(usage=lambda: {"tokens": 0}),
            tasks=SimpleNamespace(heldout=[object()] * 6),
        )
        return Loop(rt)

    yield make, archive
    archive.close()


def test_before_any_child_the_base_prices_a_child_and_two_reports(run):
    make, _ = run
    lp = make({"wall_clock_s": 1000})
    # a child as long as the base (90 s), then base and best on 6 held-out tasks at 10 s each
    assert lp._still_needed_s() == pytest.approx(90 + 2 * 6 * 10)
    lp.spent.wall_s = 1000 - 210 - 1
    assert lp._exhausted(0) is None
    lp.spent.wall_s = 1000 - 210 + 1
    assert lp._exhausted(0) == "wall_clock_s"


def test_children_price_the_next_one_and_a_stored_base_report_is_not_paid_twice(run):
    make, archive = run
    archive.add_child(ROOT_ID, "es_step", node_id="n0001", es_record={"seeds": [1]})
    archive.record_scores("n0001", {"train": Score(0.5, 4)}, cost=Cost(10, 0.0, 30.0))
    archive.add_child(ROOT_ID, "scaffold_edit", node_id="n0002", cost=Cost(5, 0.0, 10.0))
    archive.record_scores(ROOT_ID, {"heldout": Score(0.5, 6)}, status=None)
    lp = make({"wall_clock_s": 1000})
    assert lp._still_needed_s() == pytest.approx((30 + 10) / 2 + 6 * 10)


def test_the_reserve_can_be_turned_off(run):
    make, _ = run
    lp = make({"wall_clock_s": 1000, "reserve_report": False})
    assert lp._still_needed_s() == 0.0
    lp.spent.wall_s = 999
    assert lp._exhausted(0) is None
    lp.spent.wall_s = 1000
    assert lp._exhausted(0) == "wall_clock_s"


def test_a_stop_for_the_reserve_says_so(run):
    make, archive = run
    lp = make({"wall_clock_s": 1000})
    lp.spent.wall_s = 900
    lp._say_why_stopped("wall_clock_s")
    lp.spent.wall_s = 1000  # the clock itself ran out: nothing was held back
    lp._say_why_stopped("wall_clock_s")
    lp.events.close()
    lines = (archive.run_dir / "events.jsonl").read_text().splitlines()
    said = [e for e in map(json.loads, lines) if e["event"] == "budget_reserved"]
    assert [(e["wall_s"], e["needed_s"]) for e in said] == [(900, 210.0)]
