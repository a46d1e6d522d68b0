"""Rewards for ES from verdicts: a configurable mix of dense (fraction of checks) and full pass.

Correctness is always reported on its own; an optional format component (e.g. "the answer parsed
as code") is added to the total but never mixed into correctness, so a report can't mistake a
well-formatted wrong answer for progress.
"""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.job import Status, Verdict


@dataclass(frozen=True)
class RewardConfig:
    """Weights: correctness = (pass_weight * passed + fraction_weight * fraction) / (sum of both);
    total = correctness + format_weight * format_score."""

    pass_weight: float = 0.5
    fraction_weight: float = 0.5
    format_weight: float = 0.0

    def __post_init__(self) -> None:
        if min(self.pass_weight, self.fraction_weight, self.format_weight) < 0:
            raise ValueError("RewardConfig weights must be >= 0")
        if self.pass_weight + self.fraction_weight <= 0:
            raise ValueError("RewardConfig needs pass_weight + fraction_weight > 0")


@dataclass(frozen=True)
class Reward:
    correctness: float  # in [0, 1]: the mix of fraction and full pass
    format: float  # the caller's format score, weighted; 0 when format_weight is 0
    total: float  # what ES maximizes
    passed: bool
    fraction: float  # share of checks passed


def reward(
    verdict: Verdict, config: RewardConfig = RewardConfig(), format_score: float = 0.0
) -> Reward | None:
    """The reward for one verdict; None for an infra error, which has no correctness to report
    (ES fitness gives it `WORST_FITNESS`, see `fitness`)."""
    if verdict.status is Status.INFRA_ERROR:
        return None
    if not 0.0 <= format_score <= 1.0:
        raise ValueError(f"format_score must be in [0, 1], got {format_score}")
    fraction = verdict.fraction_passed
    passed = verdict.passed
    weights = config.pass_weight + config.fraction_weight
    correctness = (config.pass_weight * passed + config.fraction_weight * fraction) / weights
    fmt = config.format_weight * format_score
    return Reward(
        correctness=correctness,
        format=fmt,
        total=correctness + fmt,
        passed=passed,
        fraction=fraction,
    )


# The lowest total `reward` can give (correctness and format are both >= 0).
WORST_FITNESS = 0.0


def fitness(known: Reward | None) -> float:
    """What ES maximizes for one (member, task): the reward's total, and the worst there is for an
    infra error. Anything better (a task's mean, say) would pay a candidate for breaking its
    sandbox instead of solving the task, whenever its task-mates do worse than it."""
    return WORST_FITNESS if known is None else known.total
