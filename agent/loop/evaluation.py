"""Judging a node (its weights and scaffold together): a fixed train sample first, then dev only
for a child that is not clearly worse than its parent (DGM's staged evaluation)."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.loop.runtime import Runtime
from agent.scaffold.repo import Files, read_files
from agent.scaffold.solving import Attempt, Scoring, SolveConfig, solve
from archive import Archive, Cost, Score
from evaluators.task import Task

FAILURES_KEPT = 8  # failed attempts kept in a node's metadata, for later self-edits


def scaffold_files(archive: Archive, node_id: str) -> Files:
    with tempfile.TemporaryDirectory(prefix="lineage-scaffold-") as tmp:
        archive.checkout(node_id, tmp)
        return read_files(Path(tmp))


def solve_config(rt: Runtime) -> SolveConfig:
    s = rt.config.solve
    return SolveConfig(
        tasks_per_job=s.tasks_per_job,
        threads=s.threads,
        wall_s=s.wall_s,
        tokens_per_task=s.tokens_per_task,
        max_tokens_per_call=s.max_tokens_per_call,
    )


@dataclass
class Judged:
    score: Score
    attempts: list[Attempt]
    tokens: int
    sandbox_s: float


def run_tasks(rt: Runtime, node_id: str, files: Files, tasks: list[Task], label: str) -> Judged:
    """The node's scaffold on `tasks` with the node's weights, scored in the scoring pool."""
    rt.set_weights(rt.archive.weights_chain(node_id))
    result = solve(
        files,
        tasks,
        rt.agent_pool,
        rt.gateway,
        solve_config(rt),
        label=f"{node_id}:{label}",
        meter=rt.meter,
        scoring=Scoring(rt.scoring_pool, rt.timeouts),
    )
    passed = sum(a.passed for a in result.attempts)
    sandbox_s = sum(a.verdict.duration_s for a in result.attempts if a.verdict)
    return Judged(
        Score(passed / max(len(tasks), 1), len(tasks)), result.attempts, result.tokens, sandbox_s
    )


@dataclass
class Evaluation:
    scores: dict[str, Score]
    cost: Cost
    metadata: dict[str, Any] = field(default_factory=dict)


def evaluate(rt: Runtime, node_id: str, parent_train: float | None) -> Evaluation:
    started = time.time()
    files = scaffold_files(rt.archive, node_id)
    stage1 = run_tasks(rt, node_id, files, rt.tasks.stage1, "train")
    scores = {"train": stage1.score}
    tokens, sandbox_s = stage1.tokens, stage1.sandbox_s
    metadata: dict[str, Any] = {"failures": failure_notes(stage1.attempts)}
    margin = rt.config.tasks.stage1_margin
    if parent_train is None or stage1.score.score >= parent_train - margin:
        dev = run_tasks(rt, node_id, files, rt.tasks.dev, "dev")
        scores["dev"] = dev.score
        tokens += dev.tokens
        sandbox_s += dev.sandbox_s
    else:
        metadata["stopped_at_stage1"] = True
    metadata["evaluated_at"] = time.time()
    return Evaluation(scores, Cost(tokens, sandbox_s, time.time() - started), metadata)


def failure_notes(attempts: list[Attempt]) -> list[dict[str, str]]:
    notes = []
    for a in attempts:
        if a.passed:
            continue
        notes.append(
            {
                "task_id": a.task.task_id,
                "program": a.program[:4000],
                "detail": (a.verdict.detail if a.verdict else a.error or "")[:500],
            }
        )
    return notes[:FAILURES_KEPT]


def attempts_from_notes(notes: list[dict[str, str]], tasks: dict[str, Task]) -> list[Attempt]:
    """Failed attempts rebuilt from a node's metadata (the input of a self-edit)."""
    from sandbox.job import Status, Verdict

    out = []
    for n in notes:
        task = tasks.get(n.get("task_id", ""))
        if task is not None:
            verdict = Verdict(Status.FAILED, detail=n.get("detail", ""))
            out.append(Attempt(task, -1, n.get("program", ""), None, verdict))
    return out
