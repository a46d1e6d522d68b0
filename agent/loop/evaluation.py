"""Judging a node (its weights and scaffold together): a fixed train sample first, then dev only
for a child that is not clearly worse than its parent (DGM's staged evaluation)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from agent.gateway import Budget
from agent.loop.frontier import RESULTS_KEY
from agent.loop.runtime import Runtime
from agent.scaffold.failures import notes_of
from agent.scaffold.llm_client import LLM, LLMError
from agent.scaffold.repo import Files
from agent.scaffold.solving import Attempt, Scoring, solve
from archive import Cost, Score
from evaluators.task import Task
from sandbox.job import Status

FAILURES_KEPT = 8  # failed attempts kept in a node's metadata, for later self-edits


class InfraError(RuntimeError):
    """The sandbox or the gateway failed, not the agent: no node is charged a score for it."""


class GatewayDown(InfraError):
    """The host's own gateway stopped answering: nothing the run does next can be judged."""


class NoProgram(RuntimeError):
    """The node's agent produced no program for any task, every one an error of the agent's own
    code (an exception, a dead or timed-out job): a broken agent, not a bad one. For the base
    node that is our fault (the seed scaffold is ours); for a child, the child's."""

    def __init__(self, error: str, tasks: int, llm_calls: int) -> None:
        self.error, self.tasks, self.llm_calls = error, tasks, llm_calls
        calls = "before any LLM call" if not llm_calls else f"after {llm_calls} LLM calls"
        super().__init__(f"no program for any of {tasks} tasks ({calls}); first error: {error}")


@dataclass(frozen=True)
class Outcomes:
    """How a node's attempts ended, kept apart so a broken agent never reads as a bad one."""

    passed: int = 0
    wrong: int = 0  # a program that failed the tests
    agent_error: int = 0  # no program: the agent's own code raised, timed out or died
    infra: int = 0  # the sandbox failed the job twice: nobody's answer

    @classmethod
    def of(cls, attempts: list[Attempt]) -> Outcomes:
        return cls(**Counter(outcome(a) for a in attempts))

    def to_json(self) -> dict[str, int]:
        return asdict(self)


def outcome(a: Attempt) -> str:
    if a.infra or (a.verdict is not None and a.verdict.status is Status.INFRA_ERROR):
        return "infra"
    if a.passed:
        return "passed"
    return "wrong" if a.program.strip() else "agent_error"


@dataclass
class SplitResult:
    score: Score
    attempts: list[Attempt]
    tokens: int
    sandbox_s: float
    outcomes: Outcomes
    llm_calls: int = 0

    @property
    def per_task(self) -> dict[str, bool]:
        """task id -> passed: what paired comparisons between nodes are made of."""
        return {a.task.task_id: a.passed for a in self.attempts}


def run_tasks(
    rt: Runtime, node_id: str, files: Files, tasks: list[Task], label: str
) -> SplitResult:
    """The node's scaffold on `tasks` with the node's weights, scored in the scoring pool.

    Raises InfraError when the sandbox failed any job twice or the gateway stopped answering,
    and NoProgram when the agent's code produced nothing at all: neither is a score."""
    rt.set_weights(rt.archive.weights_chain(node_id))
    result = solve(
        files,
        tasks,
        rt.agent_pool,
        rt.gateway,
        rt.config.solve,
        label=f"{node_id}:{label}",
        meter=rt.meter,
        scoring=Scoring(rt.scoring_pool, rt.timeouts),
    )
    outcomes = Outcomes.of(result.attempts)
    calls = sum(s.calls_used for s in result.sessions)
    sandbox_s = result.agent_s + sum(a.verdict.duration_s for a in result.attempts if a.verdict)
    broken = outcomes.infra or outcomes.agent_error == len(tasks) > 0
    if broken and not gateway_answers(rt):
        raise GatewayDown("the LLM gateway no longer answers the agents' calls")
    if outcomes.infra:
        first = next(a for a in result.attempts if outcome(a) == "infra")
        detail = first.error or (first.verdict.detail if first.verdict else "")
        raise InfraError(
            f"{outcomes.infra} of {len(tasks)} {label} tasks of {node_id} hit sandbox "
            f"infrastructure errors (a container died twice): {detail[:300]}"
        )
    if outcomes.agent_error == len(tasks) > 0:
        raise NoProgram((result.attempts[0].error or "no error given")[:500], len(tasks), calls)
    return SplitResult(
        Score(outcomes.passed / max(len(tasks), 1), len(tasks)),
        result.attempts,
        result.tokens,
        sandbox_s,
        outcomes,
        calls,
    )


def gateway_answers(rt: Runtime) -> bool:
    """Whether the host can still reach its own gateway (a call the agent cannot fake)."""
    token = rt.gateway.open_session("health", Budget(tokens=1, seconds=10.0, calls=2))
    try:
        LLM(rt.gateway.socket_path, token, timeout_s=10.0).models()
        return True
    except (LLMError, OSError):
        return False
    finally:
        rt.gateway.close_session(token)


@dataclass
class Evaluation:
    scores: dict[str, Score]
    cost: Cost
    metadata: dict[str, Any] = field(default_factory=dict)
    reused_tokens: int = 0  # the agents got these too, from replies kept for an earlier node


def evaluate(rt: Runtime, node_id: str, parent_train: float | None) -> Evaluation:
    started = time.time()
    files = rt.archive.scaffold_files(node_id)
    reused = rt.reused_since()
    stage1 = run_tasks(rt, node_id, files, rt.tasks.stage1, "train")
    scores = {"train": stage1.score}
    tokens, sandbox_s = stage1.tokens, stage1.sandbox_s
    metadata: dict[str, Any] = {"failures": notes_of(stage1.attempts, FAILURES_KEPT)}
    outcomes = {"train": stage1.outcomes.to_json()}
    per_task = {"train": stage1.per_task}
    margin = rt.config.tasks.stage1_margin
    if parent_train is None or stage1.score.score >= parent_train - margin:
        dev = run_tasks(rt, node_id, files, rt.tasks.dev, "dev")
        scores["dev"] = dev.score
        outcomes["dev"] = dev.outcomes.to_json()
        per_task["dev"] = dev.per_task
        tokens += dev.tokens
        sandbox_s += dev.sandbox_s
    else:
        metadata["stopped_at_stage1"] = True
    metadata["outcomes"] = outcomes
    metadata[RESULTS_KEY] = per_task
    metadata["evaluated_at"] = time.time()
    reused_tokens = reused()  # of the `tokens` the agents got
    cost = Cost(tokens - reused_tokens, sandbox_s, time.time() - started)
    return Evaluation(scores, cost, metadata, reused_tokens)
