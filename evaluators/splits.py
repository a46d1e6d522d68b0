"""Deterministic named splits, e.g. `mbpp:train`, `mbpp:dev`, `mbpp:test`, `humaneval:test`.

Each task goes to a part by hashing `benchmark:task_id` (sha256 -> a number in [0, 1)), so a task's
split never depends on file order, on which other tasks exist, or on a random seed: adding a task
moves no other task. Fractions (documented and fixed; changing them changes the splits):

    mbpp (397 tasks)        train 0.6, dev 0.2, test 0.2   -> 237 / 81 / 79 (mbpp-example too)
    humaneval (164 tasks)   test 1.0                       -> 164 (HumanEval is reporting-only)
    a user JSONL benchmark  train 0.6, dev 0.2, test 0.2

A variant of a benchmark (`mbpp-example`: MBPP's prompts with a visible example) splits as its
base does, by the base's name, so every task is in the same part under both names.

`BENCH:all` is every task. The `test` part (and therefore `all`) is held out: the loop selects on
train/dev and only reports on test, so loading a held-out split needs `include_held_out=True`,
which only reporting code passes; the agent never sees those tests or per-task scores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from evaluators.task import Task

SPLIT_SALT = "lineage-split-v1"
HELD_OUT_PARTS = frozenset({"test"})

PARTITIONS: dict[str, tuple[tuple[str, float], ...]] = {
    "mbpp": (("train", 0.6), ("dev", 0.2), ("test", 0.2)),
    "humaneval": (("test", 1.0),),
}
DEFAULT_PARTITION: tuple[tuple[str, float], ...] = (("train", 0.6), ("dev", 0.2), ("test", 0.2))
# Variants present the same tasks differently; they split exactly as the benchmark they vary.
VARIANT_OF: dict[str, str] = {"mbpp-example": "mbpp"}


class HeldOutSplitError(PermissionError):
    """Someone asked for held-out tasks without saying they are reporting, not selecting."""


@dataclass(frozen=True)
class Split:
    """A named subset of one benchmark: `benchmark:part`."""

    benchmark: str
    part: str

    @property
    def name(self) -> str:
        return f"{self.benchmark}:{self.part}"

    @property
    def held_out(self) -> bool:
        return self.part == "all" or self.part in HELD_OUT_PARTS

    @classmethod
    def parse(cls, spec: str) -> Split:
        benchmark, sep, part = spec.rpartition(":")
        if not sep or not benchmark:
            raise ValueError(f"split {spec!r} is not of the form BENCHMARK:PART (e.g. mbpp:train)")
        parts = partition_of(benchmark)
        if part != "all" and part not in dict(parts):
            names = ", ".join([p for p, _ in parts] + ["all"])
            raise ValueError(f"split {spec!r}: {benchmark} has parts {names}")
        return cls(benchmark, part)


def base_of(benchmark: str) -> str:
    """The benchmark whose splits `benchmark` shares (itself, unless it is a variant)."""
    return VARIANT_OF.get(benchmark, benchmark)


def partition_of(benchmark: str) -> tuple[tuple[str, float], ...]:
    return PARTITIONS.get(base_of(benchmark), DEFAULT_PARTITION)


def unit_interval(benchmark: str, task_id: str) -> float:
    """A stable pseudo-random number in [0, 1) for a task (a variant's is its base's)."""
    key = f"{SPLIT_SALT}:{base_of(benchmark)}:{task_id}"
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def part_of(benchmark: str, task_id: str) -> str:
    """The part (train/dev/test) a task belongs to."""
    u = unit_interval(benchmark, task_id)
    cumulative = 0.0
    parts = partition_of(benchmark)
    for part, fraction in parts:
        cumulative += fraction
        if u < cumulative:
            return part
    return parts[-1][0]


def select(tasks: Sequence[Task], split: Split | str) -> list[Task]:
    """The tasks of `split`, in the benchmark's order."""
    split = Split.parse(split) if isinstance(split, str) else split
    if split.part == "all":
        return list(tasks)
    return [t for t in tasks if part_of(split.benchmark, t.task_id) == split.part]


def load_split(spec: str, *, include_held_out: bool = False) -> list[Task]:
    """Load the tasks of a named split; held-out splits only for reporting."""
    from evaluators.datasets import load_benchmark

    split = Split.parse(spec)
    if split.held_out and not include_held_out:
        raise HeldOutSplitError(
            f"{split.name} is held out: it is for reporting only and is never given to the agent "
            "(pass include_held_out=True from reporting code)"
        )
    return select(load_benchmark(split.benchmark), split)
