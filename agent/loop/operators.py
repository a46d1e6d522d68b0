"""The mutation operators: an ES step on the parent's weights (with its scaffold), a scaffold
edit (with its weights), or both. Each returns a `Child` to store; none raises for a failed try."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.es import EsConfig
from agent.es.eggroll import Population
from agent.es.trainer import EsTrainer, EsTrainerConfig, Evaluated
from agent.loop.evaluation import attempts_from_notes, run_tasks, scaffold_files, solve_config
from agent.loop.runtime import Runtime
from agent.scaffold.edit import EditConfig, propose
from agent.scaffold.solving import Scoring, solve
from archive import Cost, WeightsChain
from evaluators.task import Task

OPERATORS = ("es_step", "scaffold_edit", "both")
log = logging.getLogger(__name__)


@dataclass
class Child:
    operator: str
    es_record: dict[str, Any] | None = None
    changes: dict[str, str | None] | None = None  # None: the parent's scaffold
    checkpoint: Path | None = None  # the child's weights, materialized (`[es] checkpoint_every`)
    failure: str | None = None
    cost: Cost = Cost()
    metadata: dict[str, Any] = field(default_factory=dict)


class ScaffoldEvaluator:
    """ES fitness for the pair: every member runs the parent's scaffold, its calls routed by the
    gateway to that member's perturbation, all members batched in one backend."""

    def __init__(self, rt: Runtime, files: dict[str, str], label: str) -> None:
        self.rt, self.files, self.label = rt, files, label

    def __call__(self, population: Population, tasks: Sequence[Task]) -> Evaluated:
        rt = self.rt
        started = time.perf_counter()
        # Replicas rebuild the factors from the seeds; the local backend takes the tensors.
        rt.gateway.set_population(population if rt.replicas else population.perturbation)
        try:
            judged = solve(
                self.files,
                tasks,
                rt.agent_pool,
                rt.gateway,
                solve_config(rt),
                members=range(population.size),
                label=self.label,
                meter=rt.meter,
                scoring=Scoring(rt.scoring_pool, rt.timeouts),
            )
        finally:
            rt.gateway.set_population(None)
        verdicts = [a.verdict for a in judged.attempts]
        return Evaluated(
            verdicts,
            judged.tokens,
            time.perf_counter() - started,  # scoring ran alongside, inside this time
            judged.agent_s + sum(v.duration_s for v in verdicts if v is not None),
        )


def es_config(rt: Runtime) -> EsConfig:
    e = rt.config.es
    return EsConfig(
        population=e.population,
        sigma=e.sigma,
        alpha=e.alpha,
        rank=e.rank,
        seed=rt.config.seed,
        target_modules=tuple(e.target_modules),
        shaping=e.shaping,
        optimizer=e.optimizer,
    )


def checkpoint_if_due(rt: Runtime, depth: int) -> Path | None:
    """The loaded weights materialized, every `[es] checkpoint_every` steps of depth. Only a
    shortcut for later replays: one that cannot be written is logged, and the child kept."""
    every = rt.config.es.checkpoint_every
    if not every or depth % every:
        return None
    try:
        return rt.write_checkpoint()
    except OSError as exc:
        log.warning("ES checkpoint not written (the child is kept without one): %s", exc)
        return None


def es_step(rt: Runtime, parent_id: str, iteration: int) -> Child:
    """One EGGROLL step from the parent's weights; the step index is the iteration, so no two
    children of a run share noise. Leaves the model at the child's weights."""
    started = time.time()
    chain = rt.archive.weights_chain(parent_id)
    rt.set_weights(chain)
    files = scaffold_files(rt.archive, parent_id)
    es = rt.weights.strategy(es_config(rt), step=iteration)  # moves the chain's own master
    trainer = EsTrainer(
        es,
        None,
        None,
        rt.tasks.train,
        EsTrainerConfig(tasks_per_step=rt.config.es.tasks_per_step, seed=rt.config.seed),
        evaluator=ScaffoldEvaluator(rt, files, f"es{iteration}"),
    )
    result = trainer.step(parent=parent_id)
    record = asdict(result.record)
    child = WeightsChain(chain.base_model, chain.base_hash, [*chain.records, record])
    rt.set_weights(child)  # loaded here already: this reaches the Ray replicas
    return Child(
        "es_step",
        es_record=record,
        checkpoint=checkpoint_if_due(rt, len(child.records)),
        cost=Cost(result.tokens, result.score_s, time.time() - started),
        metadata={
            "es": {
                "minibatch": result.tasks,
                "population_pass_rate": result.pass_rate,
                "population_correctness": result.correctness,
                "infra_errors": result.infra_errors,
                **result.record.metrics,
            }
        },
    )


def edit_config(rt: Runtime) -> EditConfig:
    e = rt.config.edit
    return EditConfig(
        proposer=rt.proposer,
        improve_wall_s=e.improve_wall_s,
        improve_tokens=e.improve_tokens,
        improve_calls=e.improve_calls,
        failures_shown=e.failures_shown,
    )


def scaffold_edit(rt: Runtime, parent_id: str, iteration: int, rng: random.Random) -> Child:
    """Diagnose one of the parent's recorded train failures; the parent's own `improve` edits a
    copy of its repository (with the parent's weights, unless an external proposer is set)."""
    started = time.time()
    parent = rt.archive.get(parent_id)
    rt.set_weights(rt.archive.weights_chain(parent_id))
    files = scaffold_files(rt.archive, parent_id)
    by_id = {t.task_id: t for t in rt.tasks.train}
    attempts = attempts_from_notes(parent.metadata.get("failures", []), by_id)
    if not attempts:  # nothing recorded: look for failures now, on a train minibatch
        sample = rng.sample(rt.tasks.train, min(rt.config.es.tasks_per_step, len(rt.tasks.train)))
        attempts = run_tasks(rt, parent_id, files, sample, f"look{iteration}").attempts
    proposal = propose(
        files, attempts, rt.agent_pool, rt.gateway, edit_config(rt), rng, f"edit{iteration}"
    )
    metadata = {
        "diagnosis": proposal.diagnosis,
        "problem_statement": proposal.problem_statement,
        "flags": proposal.flags,
    }
    return Child(
        "scaffold_edit",
        changes=proposal.changes if proposal.ok else None,
        failure=proposal.failure,
        cost=Cost(proposal.tokens, proposal.sandbox_s, time.time() - started),
        metadata=metadata,
    )


def both(rt: Runtime, parent_id: str, iteration: int, rng: random.Random) -> Child:
    """An edit proposed with the parent's weights, and an ES step on the parent's pair: the child
    takes the new weights and the new scaffold together."""
    edit = scaffold_edit(rt, parent_id, iteration, rng)
    if edit.failure:
        edit.operator = "both"
        return edit
    step = es_step(rt, parent_id, iteration)
    return Child(
        "both",
        es_record=step.es_record,
        checkpoint=step.checkpoint,
        changes=edit.changes,
        cost=edit.cost + step.cost,
        metadata=edit.metadata | step.metadata,
    )


def choose_operator(
    rt: Runtime, rng: random.Random, gains: dict[str, list[float]], iteration: int = 1
) -> str:
    """A configured mix (drawn, or in turn), or UCB1 on observed gains (child minus parent)."""
    o = rt.config.operators
    weights = {"es_step": o.es_step, "scaffold_edit": o.scaffold_edit, "both": o.both}
    allowed = [k for k in OPERATORS if weights[k] > 0]
    if o.bandit:
        untried = [k for k in allowed if not gains.get(k)]
        if untried:
            return untried[0]
        total = sum(len(gains[k]) for k in allowed)

        def ucb(k: str) -> float:
            g = gains[k]
            return sum(g) / len(g) + math.sqrt(2 * math.log(total) / len(g))

        return max(allowed, key=ucb)
    if o.order == "cycle":
        return allowed[(iteration - 1) % len(allowed)]
    return rng.choices(allowed, weights=[weights[k] for k in allowed])[0]
