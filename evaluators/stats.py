"""How sure a score difference is: two agents judged on the same tasks, task by task.

A gain is a claim only with its sample size and a paired interval. Both agents answer the same
tasks, so the difference is measured per task (pass/fail against pass/fail): the paired
bootstrap interval of the mean difference, and McNemar's exact test on the discordant tasks
(those one agent passed and the other failed), which is a binomial test with p = 1/2.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class PairedDifference:
    """b minus a on n shared tasks: the mean difference with its interval and McNemar's p."""

    n: int
    a: float  # pass rate of a on the shared tasks
    b: float
    diff: float  # b - a
    low: float  # the paired bootstrap interval of diff
    high: float
    wins: int  # tasks b passed and a failed
    losses: int  # tasks a passed and b failed
    p_greater: float  # one-sided exact McNemar: P(wins this high | no difference)
    p_two_sided: float
    confidence: float = 0.95

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)

    def describe(self) -> str:
        """`+0.062 [+0.012, +0.111] on 81 tasks (6 won, 1 lost, McNemar p=0.125, one-sided
        0.0625)`: the one-sided p is the one the frontier tests."""
        return (
            f"{self.diff:+.3f} [{self.low:+.3f}, {self.high:+.3f}] on {self.n} tasks "
            f"({self.wins} won, {self.losses} lost, McNemar p={self.p_two_sided:.3g}, "
            f"one-sided {self.p_greater:.3g})"
        )


def binomial_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2), exactly."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n


def paired_difference(
    a: Sequence[bool],
    b: Sequence[bool],
    *,
    confidence: float = 0.95,
    resamples: int = 4000,
    seed: int = 0,
) -> PairedDifference:
    """b against a, task by task (a[i] and b[i] are the same task). Seeded: the same results
    always give the same interval."""
    if len(a) != len(b):
        raise ValueError(f"paired results need the same tasks: {len(a)} vs {len(b)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = len(a)
    if n == 0:
        return PairedDifference(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 1.0, 1.0, confidence)
    d = [int(bool(y)) - int(bool(x)) for x, y in zip(a, b, strict=True)]
    wins, losses = d.count(1), d.count(-1)
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(d, k=n)) / n for _ in range(resamples))
    tail = (1 - confidence) / 2
    low = means[int(math.floor(tail * (resamples - 1)))]
    high = means[int(math.ceil((1 - tail) * (resamples - 1)))]
    discordant = wins + losses
    p_greater = binomial_tail(wins, discordant)
    p_two = min(1.0, 2 * binomial_tail(max(wins, losses), discordant)) if discordant else 1.0
    return PairedDifference(
        n,
        sum(map(bool, a)) / n,
        sum(map(bool, b)) / n,
        sum(d) / n,
        low,
        high,
        wins,
        losses,
        p_greater,
        p_two,
        confidence,
    )


def paired_on_shared(
    a: Mapping[str, bool], b: Mapping[str, bool], **kwargs: float
) -> PairedDifference:
    """`paired_difference` over the task ids both result maps hold (in a stable order)."""
    shared = sorted(set(a) & set(b))
    return paired_difference([a[t] for t in shared], [b[t] for t in shared], **kwargs)


def wilson_interval(passed: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a pass rate (sound at 0 and n, unlike the normal one)."""
    if n == 0:
        return 0.0, 1.0
    p = passed / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
