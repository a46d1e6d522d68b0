"""An ES step: one EGGROLL step on the parent's weights, its members running the parent's
scaffold; the child is the parent's scaffold with the stepped weights."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from agent.es.eggroll import Population
from agent.es.trainer import EsTrainer, EsTrainerConfig, PopulationVerdicts
from agent.loop.operators.registry import Child, register_operator
from agent.loop.runtime import Runtime
from agent.scaffold.solving import Scoring, solve
from archive import Cost, WeightsChain
from archive.drawing.view import OperatorStyle
from evaluators.task import Task

log = logging.getLogger(__name__)
NO_UPDATE = "no update: every member of the population tied on every task of the minibatch"


class ScaffoldEvaluator:
    """ES fitness for the pair: every member runs the parent's scaffold, its calls routed by the
    gateway to that member's perturbation, all members batched in one backend."""

    def __init__(self, rt: Runtime, files: dict[str, str], label: str) -> None:
        self.rt, self.files, self.label = rt, files, label

    def __call__(self, population: Population, tasks: Sequence[Task]) -> PopulationVerdicts:
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
                rt.config.solve,
                members=range(population.size),
                label=self.label,
                meter=rt.meter,
                scoring=Scoring(rt.scoring_pool, rt.timeouts),
            )
        finally:
            rt.gateway.set_population(None)
        verdicts = [a.verdict for a in judged.attempts]
        return PopulationVerdicts(
            verdicts,
            judged.tokens,
            time.perf_counter() - started,  # scoring ran alongside, inside this time
            judged.agent_s + sum(v.duration_s for v in verdicts if v is not None),
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


@register_operator(
    "es_step",
    style=OperatorStyle("circle", "#1f77b4", "ES step"),
    weight=0.5,
    rank=0,
    steps_weights=True,
)
def es_step(rt: Runtime, parent_id: str, iteration: int, rng: random.Random | None = None) -> Child:
    """One EGGROLL step from the parent's weights; the step index is the iteration, so no two
    children of a run share noise. Leaves the model at the child's weights (a failed step: at
    weights equal to the parent's)."""
    started = time.time()
    chain = rt.archive.weights_chain(parent_id)
    rt.set_weights(chain)
    files = rt.archive.scaffold_files(parent_id)
    es_config = rt.config.es.es_config(rt.config.seed)
    es = rt.weights.strategy(es_config, step=iteration)  # moves the chain's own master
    trainer = EsTrainer(
        es,
        None,
        None,
        rt.tasks.train,
        EsTrainerConfig(
            tasks_per_step=rt.config.es.tasks_per_step,
            seed=rt.config.seed,
            reward=rt.config.reward,
        ),
        evaluator=ScaffoldEvaluator(rt, files, f"es{iteration}"),
    )
    rt.weights_name.moving()  # `tell` moves the loaded weights in place
    result = trainer.step(parent=parent_id)
    cost = Cost(result.tokens, result.score_s, time.time() - started)
    metadata = {
        "es": {
            "minibatch": result.tasks,
            "population_pass_rate": result.pass_rate,
            "population_correctness": result.correctness,
            "infra_errors": result.infra_errors,
            **result.record.metrics,
        }
    }
    if rt.config.es.skip_tied and result.record.metrics.get("update_norm") == 0.0:
        # The parent's weights again: judging it would spend stage 1 and dev on a known answer.
        return Child("es_step", failure=NO_UPDATE, cost=cost, metadata=metadata)
    record = asdict(result.record)
    child = WeightsChain(chain.base_model, chain.base_hash, [*chain.records, record])
    rt.set_weights(child)  # loaded here already: this reaches the Ray replicas
    return Child(
        "es_step",
        es_record=record,
        checkpoint=checkpoint_if_due(rt, len(child.records)),
        cost=cost,
        metadata=metadata,
    )
