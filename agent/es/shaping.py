"""Fitness shaping: turn raw rewards into the coefficients f_i of the ES update.

- zscore: rewards are a (members x tasks) matrix; each task's column is z-scored across members
  (so easy and hard tasks weigh the same), then averaged over tasks (EGGROLL, Qiu et al.).
  A column where every member scored the same carries no signal and contributes zero.
- centered_rank: ranks of the members' mean reward mapped to [-0.5, 0.5] (Salimans et al.):
  robust to outliers, invariant to any monotone change of the reward.
"""

from __future__ import annotations

from collections.abc import Sequence


def _as_matrix(rewards: Sequence[float] | Sequence[Sequence[float]]) -> list[list[float]]:
    rows = [list(r) if isinstance(r, (list, tuple)) else [float(r)] for r in rewards]
    if not rows or len({len(r) for r in rows}) != 1:
        raise ValueError(
            "rewards must be one number per member, or one equal-length row per member"
        )
    return [[float(x) for x in r] for r in rows]


def zscore(rewards: Sequence[float] | Sequence[Sequence[float]]) -> list[float]:
    matrix = _as_matrix(rewards)
    n, tasks = len(matrix), len(matrix[0])
    coefficients = [0.0] * n
    for t in range(tasks):
        column = [row[t] for row in matrix]
        mean = sum(column) / n
        var = sum((x - mean) ** 2 for x in column) / n
        if var <= 1e-24:
            continue
        std = var**0.5
        for i, x in enumerate(column):
            coefficients[i] += (x - mean) / std / tasks
    return coefficients


def centered_rank(rewards: Sequence[float] | Sequence[Sequence[float]]) -> list[float]:
    matrix = _as_matrix(rewards)
    means = [sum(r) / len(r) for r in matrix]
    n = len(means)
    if n == 1:
        return [0.0]
    order = sorted(range(n), key=lambda i: means[i])
    ranks = [0.0] * n
    i = 0
    while i < n:  # ties share their average rank
        j = i
        while j + 1 < n and means[order[j + 1]] == means[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return [r / (n - 1) - 0.5 for r in ranks]


SHAPERS = {"zscore": zscore, "centered_rank": centered_rank}
