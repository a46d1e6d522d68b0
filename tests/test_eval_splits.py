"""Splits are deterministic, disjoint, covering, and guard the held-out part."""

from __future__ import annotations

import pytest

from evaluators.datasets import load_humaneval
from evaluators.splits import (
    HeldOutSplitError,
    Split,
    load_split,
    part_of,
    partition_of,
    select,
)
from evaluators.task import Task


def fake_tasks(benchmark: str, count: int) -> list[Task]:
    return [
        Task(f"{benchmark}/{i}", "", "f", "def check(candidate): pass", benchmark)
        for i in range(count)
    ]


def test_deterministic_and_independent_of_order() -> None:
    tasks = fake_tasks("mbpp", 300)
    first = {t.task_id for t in select(tasks, "mbpp:train")}
    again = {t.task_id for t in select(list(reversed(tasks)), "mbpp:train")}
    subset = {t.task_id for t in select(tasks[:100], "mbpp:train")}
    assert first == again
    assert subset == first & {t.task_id for t in tasks[:100]}


def test_disjoint_and_covering_with_expected_fractions() -> None:
    tasks = fake_tasks("mbpp", 4000)
    parts = {p: {t.task_id for t in select(tasks, f"mbpp:{p}")} for p, _ in partition_of("mbpp")}
    assert set.union(*parts.values()) == {t.task_id for t in tasks}
    assert sum(len(s) for s in parts.values()) == len(tasks)
    for part, fraction in partition_of("mbpp"):
        assert abs(len(parts[part]) / len(tasks) - fraction) < 0.03
    assert len(select(tasks, "mbpp:all")) == len(tasks)


def test_humaneval_is_all_held_out() -> None:
    tasks = load_humaneval()
    assert len(select(tasks, "humaneval:test")) == 164
    assert all(part_of("humaneval", t.task_id) == "test" for t in tasks)


def test_held_out_needs_explicit_consent() -> None:
    assert Split.parse("mbpp:test").held_out
    assert Split.parse("mbpp:all").held_out
    assert not Split.parse("mbpp:train").held_out
    with pytest.raises(HeldOutSplitError, match="held out"):
        load_split("humaneval:test")
    assert len(load_split("humaneval:test", include_held_out=True)) == 164


@pytest.mark.parametrize("spec", ["mbpp", "mbpp:bogus", ":train", "humaneval:train"])
def test_bad_split_names(spec: str) -> None:
    with pytest.raises(ValueError):
        Split.parse(spec)
