"""Solved train tasks shown to `improve` ([edit] solved_shown): what the problem statement
carries, which tasks are drawn, and the mark the seed's improve splits the statement at."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest

from agent.loop.config import ConfigError, from_dict
from agent.loop.frontier import RESULTS_KEY
from agent.loop.operators.scaffold_edit import solved_tasks
from agent.scaffold.edit import SOLVED_HEADING, problem_statement
from agent.scaffold.failures import TaskFailure
from archive import Archive, Score
from evaluators.task import Task

SEED_IMPROVE = Path(__file__).parents[1] / "agent/scaffold/seed/scaffold/improve.py"


def task(i: int) -> Task:
    return Task(
        f"train/{i}", f"def f{i}(x):\n    '''>>> f{i}(1)\n    1\n    '''\n", f"f{i}", "", "mbpp"
    )


def failed(t: Task) -> TaskFailure:
    return TaskFailure(t, "def f(x):\n    return 0\n", "no")


def test_the_statement_lists_solved_tasks_last_under_the_heading():
    failures = [failed(task(0)), failed(task(1))]
    plain = problem_statement(failures, "It returns 0.")
    assert SOLVED_HEADING not in plain and plain.count("Task prompt:") == 2
    shown = problem_statement(failures, "It returns 0.", [task(2), task(3)])
    assert shown.startswith(plain)  # the failures as before, the solved tasks after them
    tail = shown[len(plain) :]
    assert tail.startswith(f"\n{SOLVED_HEADING}\n")
    assert tail.count("Task prompt:") == 2 and "Entry point: f3\n" in tail


def test_the_seed_splits_the_statement_where_the_host_starts_the_solved_tasks():
    tree = ast.parse(SEED_IMPROVE.read_text())
    mark = next(
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "SOLVED_MARK"
    )
    assert SOLVED_HEADING.startswith(mark)


def test_solved_tasks_are_train_tasks_the_parent_passed(tmp_path: Path):
    train = {t.task_id: t for t in map(task, range(6))}
    with Archive(tmp_path / "run") as archive:
        archive.add_root("m", "h", files={"a.py": "0\n"}, node_id="n0000")
        passed = {f"train/{i}": i % 2 == 0 for i in range(6)} | {"dev/9": True}
        archive.update_metadata("n0000", {RESULTS_KEY: {"train": passed, "dev": {"dev/1": True}}})
        archive.record_scores("n0000", {"train": Score(0.5, 6)})
        parent = archive.get("n0000")
    rng = random.Random(0)
    state = rng.getstate()
    assert solved_tasks(parent, train, 0, rng) == [] and rng.getstate() == state  # off: no draw
    drawn = solved_tasks(parent, train, 2, rng)
    assert len(drawn) == 2 and {t.task_id for t in drawn} <= {"train/0", "train/2", "train/4"}
    everything = solved_tasks(parent, train, 10, random.Random(1))
    assert sorted(t.task_id for t in everything) == ["train/0", "train/2", "train/4"]


def test_solved_shown_is_a_config_key_checked_at_load():
    assert from_dict({"edit": {"solved_shown": 2}}, "run.toml").edit.solved_shown == 2
    assert from_dict({}, "run.toml").edit.solved_shown == 0
    with pytest.raises(ConfigError, match="solved_shown"):
        from_dict({"edit": {"solved_shown": -1}}, "run.toml")
