"""Run a scaffold on tasks in the sandbox, for one policy or a whole ES population, then score.

Fitness is always measured for the pair (weights, scaffold): each member's calls go through the
gateway under a session bound to that member's perturbation, so a population step runs the
parent's own scaffold against one batched backend. The agent's answers are then scored by the
evaluators in a separate pool that has no gateway and that the agent's code never saw.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from agent.gateway import Budget, Gateway, SessionRecord
from agent.scaffold.jobs import solve_job, task_view
from evaluators.scoring import Candidate, score
from evaluators.task import Task
from sandbox.job import JobRunner, Limits, Status, Verdict

TASK_PROCESSES = 8  # threads + processes one task of an agent job may start


class Meter(Protocol):
    """Where long work reports progress (the loop's rich progress bars): `begin` a phase with its
    total, then `step` once per finished item."""

    def begin(self, what: str, total: int) -> None: ...

    def step(self, what: str) -> None: ...


class SolveConfig(BaseModel):
    """How agent jobs are cut and bounded: the run's `[solve]` section, as it is.

    - `tasks_per_job`: tasks one container solves (in `threads` threads, so their LLM calls reach
      the gateway together and are batched).
    - `wall_s`: a job's wall clock; the scaffold's whole work on its tasks must fit.
    - `tokens_per_task`, `calls_per_task`: the session budget is these times the job's tasks.
    - `memory_mb`: an agent container's memory.
    - `max_tokens_per_call`: the gateway's per-row cap on any one call of the agent.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    tasks_per_job: int = Field(8, ge=1)
    threads: int = Field(8, ge=1)
    wall_s: float = Field(900.0, gt=0)
    tokens_per_task: int = Field(4096, ge=1)
    calls_per_task: int = Field(16, ge=1)
    memory_mb: int = Field(1024, ge=64)
    # 768 lets the seed's instruct replies through uncut (EvalPlus's budget; on HumanEval the
    # default model's longest greedy reply is 768 and 4 of 164 exceed 512), so the base node
    # scores what `lineage eval --protocol instruct` does.
    max_tokens_per_call: int = Field(768, ge=1)

    def limits(self) -> Limits:
        """The job's limits. Each task in flight may run threads and processes of its own (parallel
        LLM calls, a child process for its tests): `TASK_PROCESSES` each, on top of the job's own."""
        return Limits(
            wall_s=self.wall_s,
            cpu_s=int(self.wall_s) + 1,
            memory_mb=self.memory_mb,
            processes=24 + self.threads * (1 + TASK_PROCESSES),
        )


DEFAULT_SOLVE = SolveConfig()


@dataclass(frozen=True)
class Attempt:
    """One task as the agent answered it (program may be empty) and how it was judged."""

    task: Task
    member: int
    program: str
    error: str | None  # why the agent gave no program (its exception, a timeout, a dead job)
    verdict: Verdict | None = None  # None until scored
    infra: bool = False  # the agent's container died twice: no fault of the agent, no reward

    @property
    def passed(self) -> bool:
        return self.verdict is not None and self.verdict.passed


@dataclass
class SolveResult:
    attempts: list[Attempt]  # member-major: all tasks of the first member, then the next
    sessions: list[SessionRecord] = field(default_factory=list)
    agent_s: float = 0.0  # container seconds of the agent jobs (scoring's are in the verdicts)

    @property
    def tokens(self) -> int:
        return sum(s.tokens_used for s in self.sessions)

    def transcript_for(self, task: Task) -> list:
        """The gateway calls whose prompt carried this task's prompt (for diagnosis)."""
        return [
            call
            for s in self.sessions
            for call in s.calls
            if any(task.prompt[:200] in prompt for prompt in call.prompts)
        ]


def solve(
    files: Mapping[str, str],
    tasks: Sequence[Task],
    agent_pool: JobRunner,
    gateway: Gateway,
    config: SolveConfig = DEFAULT_SOLVE,
    members: Sequence[int] = (-1,),
    label: str = "solve",
    meter: Meter | None = None,
    scoring: Scoring | None = None,
) -> SolveResult:
    """Every (member, task) answered by the scaffold in the sandbox.

    Without `scoring` the attempts come back unscored. With it, each agent job's
    answers are scored as soon as the job returns, while the other jobs are still generating, so
    judging overlaps generation instead of waiting for the slowest job.
    """
    jobs, slots, tokens = [], [], []
    for member in members:
        for start in range(0, len(tasks), config.tasks_per_job):
            chunk = list(tasks[start : start + config.tasks_per_job])
            budget = Budget(
                tokens=config.tokens_per_task * len(chunk),
                seconds=config.wall_s,
                calls=config.calls_per_task * len(chunk),
                max_tokens_per_call=config.max_tokens_per_call,
            )
            token = gateway.open_session(f"{label}:m{member}:{start}", budget, member=member)
            tokens.append(token)
            jobs.append(
                solve_job(
                    files,
                    [task_view(t) for t in chunk],
                    token,
                    config.limits(),
                    threads=config.threads,
                    tag=f"m{member}:{start}",
                )
            )
            slots.append((member, chunk))
    answers: dict[int, list[Attempt]] = {}
    agent_s = 0.0
    if meter:
        meter.begin("agent jobs", len(jobs))
    judging = _BackgroundJudge(scoring, meter, len(members) * len(tasks)) if scoring else None
    closed: dict[int, SessionRecord] = {}
    try:
        for index, verdict in agent_pool.run_iter(jobs):
            # The job is over (a killed container's calls included): its calls still generating
            # are dropped now, not when the slowest job ends.
            closed[index] = gateway.close_session(tokens[index])
            member, chunk = slots[index]
            answers[index] = _attempts(member, chunk, verdict)
            agent_s += verdict.duration_s if verdict is not None else 0.0
            if judging:
                judging.submit(index, answers[index])
            if meter:
                meter.step("agent jobs")
    finally:
        sessions = [closed.get(i) or gateway.close_session(t) for i, t in enumerate(tokens)]
        if judging:
            judging.close()  # it finishes what it has, then its thread ends, even on an error
    judged = judging.results() if judging else {}
    attempts = []
    for index, (member, chunk) in enumerate(slots):
        attempts.extend(judged.get(index) or answers.get(index) or _attempts(member, chunk, None))
    return SolveResult(attempts, sessions, agent_s)


@dataclass(frozen=True)
class Scoring:
    """Where and how answers are scored: the pool the agent's code never saw, and per-task wall
    limits from `evaluators.timeouts.calibrate`."""

    pool: JobRunner
    timeouts: Mapping[str, float] | None = None


class _BackgroundJudge:
    """Scores each finished job's attempts on its own thread, one job at a time, in arrival order
    (a runner need not take calls from two threads at once)."""

    def __init__(self, scoring: Scoring, meter: Meter | None, total: int) -> None:
        self.scoring = scoring
        self.meter = meter
        self.results_by_job: dict[int, list[Attempt]] = {}
        self.error: BaseException | None = None
        self.queue: queue.Queue[tuple[int, list[Attempt]] | None] = queue.Queue()
        if meter:
            meter.begin("scoring", total)
        self.thread = threading.Thread(target=self._work, name="lineage-judge", daemon=True)
        self.thread.start()

    def submit(self, index: int, attempts: list[Attempt]) -> None:
        self.queue.put((index, attempts))

    def _work(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is not None:
                continue  # drain: the caller raises the first error
            index, attempts = item
            try:
                self.results_by_job[index] = _score_attempts(
                    attempts, self.scoring.pool, self.scoring.timeouts, self.meter
                )
            except BaseException as exc:  # re-raised by results() on the caller's thread
                self.error = exc

    def close(self) -> None:
        self.queue.put(None)

    def results(self) -> dict[int, list[Attempt]]:
        """Every submitted job's scored attempts (after `close`), or the first scoring error."""
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.results_by_job


def _attempts(member: int, chunk: list[Task], verdict: Verdict | None) -> list[Attempt]:
    """Unpack a job's kept answers; a job that died or timed out fails each of its tasks."""
    kept = verdict.kept[0] if verdict is not None and verdict.kept else None
    if verdict is None or verdict.status is not Status.PASSED or not isinstance(kept, list):
        why = "no verdict" if verdict is None else f"{verdict.status.value}: {verdict.detail}"
        infra = verdict is None or verdict.status is Status.INFRA_ERROR
        return [Attempt(t, member, "", f"agent job {why}"[:2000], infra=infra) for t in chunk]
    out = []
    for task, answer in zip(chunk, kept + [None] * (len(chunk) - len(kept)), strict=False):
        if not isinstance(answer, dict) or not isinstance(answer.get("program"), str):
            out.append(Attempt(task, member, "", "malformed answer from the agent job"))
        else:
            error = answer.get("error")
            out.append(Attempt(task, member, answer["program"], str(error) if error else None))
    return out


def _score_attempts(
    attempts: Sequence[Attempt],
    scoring_pool: JobRunner,
    timeouts: Mapping[str, float] | None,
    meter: Meter | None,
) -> list[Attempt]:
    runnable = [i for i, a in enumerate(attempts) if a.program.strip()]
    verdicts = score(
        [Candidate(attempts[i].task, attempts[i].program) for i in runnable],
        scoring_pool,
        timeouts,
        on_verdict=(lambda _i, _v: meter.step("scoring")) if meter else None,
    )
    by_index = dict(zip(runnable, verdicts, strict=True))
    if meter:
        for _ in range(len(attempts) - len(runnable)):
            meter.step("scoring")  # empty programs are judged without a job
    return [
        replace(
            a,
            verdict=by_index.get(i)
            or Verdict(
                Status.INFRA_ERROR if a.infra else Status.ERROR,
                detail=a.error or "empty program",
            ),
        )
        for i, a in enumerate(attempts)
    ]
