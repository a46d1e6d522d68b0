"""One ES step on code tasks: the whole population generates in one batched call, the sandbox scores.

TRL style: `EsTrainerConfig` holds the settings, `EsTrainer` does the work. Each step draws a
minibatch of training tasks (seeded by step), generates every (member, task) pair greedily (all
variation comes from the weights), scores the completions in the sandbox, and hands the
(members x tasks) reward matrix to `EggRoll.tell`, whose z-scoring per task column is the
"fitness per task group" shaping. Correctness is kept apart from the total reward in the result.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from agent.es.eggroll import EggRoll, Population
from agent.es.record import EsRecord
from agent.policy.backend import GenerationConfig, PolicyBackend
from agent.policy.prompts import COMPLETION_STOPS, completion_prompt
from evaluators.rewards import RewardConfig, fitness, reward
from evaluators.scoring import Candidate, score
from evaluators.task import Task
from sandbox.job import JobRunner, Verdict


@dataclass(frozen=True)
class EsTrainerConfig:
    tasks_per_step: int = 8
    generation: GenerationConfig = field(
        default_factory=lambda: GenerationConfig(
            max_new_tokens=256, stop=COMPLETION_STOPS, batch_size=32
        )
    )
    reward: RewardConfig = field(default_factory=RewardConfig)
    seed: int = 0  # minibatch sampling

    def __post_init__(self) -> None:
        if self.tasks_per_step < 1:
            raise ValueError(f"tasks_per_step must be >= 1, got {self.tasks_per_step}")
        if not self.generation.greedy:
            raise ValueError("ES generates greedily: all variation must come from the weights")


@dataclass(frozen=True)
class StepResult:
    record: EsRecord
    tasks: list[str]
    rewards: list[list[float]]  # members x tasks, the ES fitness (total reward; worst on infra)
    correctness: float  # mean correctness over members and tasks (no format component)
    pass_rate: float  # share of (member, task) pairs that fully passed
    tokens: int
    generate_s: float
    score_s: float
    infra_errors: int


@dataclass(frozen=True)
class PopulationVerdicts:
    """A population's verdicts on a minibatch, member-major (all tasks of member 0 first)."""

    verdicts: list[Verdict]
    tokens: int
    generate_s: float  # wall time of generation (and of scoring, where it overlaps generation)
    score_s: float  # time spent in the sandbox: wall time, or container seconds (agent jobs
    # and scoring) where it overlaps generation


class PopulationEvaluator(Protocol):
    """Turns (population, tasks) into verdicts: straight completions from the policy (below), or
    the node's scaffold run in the sandbox against the gateway (the loop's evaluator)."""

    def __call__(self, population: Population, tasks: Sequence[Task]) -> PopulationVerdicts: ...


class CompletionEvaluator:
    """Completion-mode prompts, the whole population in one batched generate, scored in the sandbox."""

    def __init__(
        self,
        es: EggRoll,
        backend: PolicyBackend,
        runner: JobRunner,
        generation: GenerationConfig,
        timeouts: dict[str, float] | None = None,
        on_generated: Callable[[int], None] | None = None,
    ) -> None:
        self.es, self.backend, self.runner = es, backend, runner
        self.generation, self.timeouts, self.on_generated = generation, timeouts, on_generated

    def __call__(self, population: Population, tasks: Sequence[Task]) -> PopulationVerdicts:
        n, t = population.size, len(tasks)
        prompts = [completion_prompt(task.prompt) for _ in range(n) for task in tasks]
        member_of_row = [m for m in range(n) for _ in range(t)]
        started = time.perf_counter()
        if self.es.config.mode == "lowrank":
            generations = self.backend.generate(
                prompts, self.generation, population.perturbation, member_of_row, self.on_generated
            )
        else:  # the full-rank reference: one member at a time, perturbed in place
            generations = []
            for m in range(n):
                with self.es.member(population, m):
                    generations += self.backend.generate(
                        prompts[m * t : (m + 1) * t], self.generation
                    )
            self.es.release_member_copy()
        generate_s = time.perf_counter() - started
        candidates = [
            Candidate.from_completion(task, g.text)
            for g, task in zip(generations, list(tasks) * n, strict=True)
        ]
        started = time.perf_counter()
        verdicts = score(candidates, self.runner, self.timeouts)
        return PopulationVerdicts(
            verdicts,
            sum(g.num_tokens for g in generations),
            generate_s,
            time.perf_counter() - started,
        )


class EsTrainer:
    """One ES step per call: minibatch, ask, evaluate the population, tell.

    `evaluator` decides how a population is judged; by default completions from `backend`,
    scored by `runner` (both are then required)."""

    def __init__(
        self,
        es: EggRoll,
        backend: PolicyBackend | None,
        runner: JobRunner | None,
        tasks: Sequence[Task],
        config: EsTrainerConfig = EsTrainerConfig(),
        timeouts: dict[str, float] | None = None,
        evaluator: PopulationEvaluator | None = None,
    ) -> None:
        if not tasks:
            raise ValueError("ES needs at least one training task")
        if evaluator is None:
            if backend is None or runner is None:
                raise ValueError("without an evaluator, EsTrainer needs a backend and a runner")
            evaluator = CompletionEvaluator(es, backend, runner, config.generation, timeouts)
        self.es = es
        self.evaluator = evaluator
        self.tasks = list(tasks)
        self.config = config

    def minibatch(self, step: int) -> list[Task]:
        rng = random.Random(f"{self.config.seed}:{step}")
        k = min(self.config.tasks_per_step, len(self.tasks))
        return rng.sample(self.tasks, k)

    def step(self, parent: str | None = None) -> StepResult:
        tasks = self.minibatch(self.es.step)
        population = self.es.ask()
        n, t = population.size, len(tasks)
        evaluated = self.evaluator(population, tasks)
        rewards_flat = [reward(v, self.config.reward) for v in evaluated.verdicts]
        infra = sum(r is None for r in rewards_flat)
        scores = [[fitness(rewards_flat[m * t + j]) for j in range(t)] for m in range(n)]
        record = self.es.tell(population, scores, parent=parent)
        known = [r for r in rewards_flat if r is not None]  # infra errors count as 0 below
        return StepResult(
            record=record,
            tasks=[task.task_id for task in tasks],
            rewards=scores,
            correctness=sum(r.correctness for r in known) / max(len(rewards_flat), 1),
            pass_rate=sum(r.passed for r in known) / max(len(rewards_flat), 1),
            tokens=evaluated.tokens,
            generate_s=evaluated.generate_s,
            score_s=evaluated.score_s,
            infra_errors=infra,
        )
