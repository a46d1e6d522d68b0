"""Parent selection strategies: DGM, ShinkaEvolve, HGM and simple baselines, one seeded RNG.

A strategy is any callable `(pool, rng) -> node id`. Register your own with
`register_strategy("name")` on a factory taking keyword parameters; `Archive.select_parent`
looks it up by name. Formulas follow docs/research.md; `probabilities()` gives the exact
distribution for the analytic ones.
"""

from __future__ import annotations

import math
import random
import statistics
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Protocol

from archive.fenwick import WeightTree
from archive.index import CladeStats, LineageIndex, SplitColumn
from archive.node import Node


@dataclass(frozen=True)
class Gate:
    """Which evaluated nodes may become parents, beyond having a score on the split.

    `min_n` guards against a lucky 1.0 on two tasks; `predicate` sees the full Node (it is
    loaded from the database per candidate, so it is the slow path: prefer min_score/min_n).
    """

    min_score: float | None = None
    min_n: int = 0
    predicate: Callable[[Node], bool] | None = None

    def is_default(self) -> bool:
        return self.min_score is None and self.min_n <= 0 and self.predicate is None

    def admits(self, score_n: tuple[float, int], load: Callable[[], Node]) -> bool:
        score, n = score_n
        if self.min_score is not None and score < self.min_score:
            return False
        if n < self.min_n:
            return False
        return self.predicate is None or self.predicate(load())


class Candidates:
    """The eligible nodes for one selection: ids, scores and children counts, aligned.

    Built on the archive's split column (zero copies) for the default gate, or as a filtered
    copy for a custom gate; the sorted and ranked views come from the column when possible.
    """

    def __init__(
        self,
        ids: Sequence[str],
        scores: Sequence[float],
        children: Sequence[int],
        *,
        seqs: Sequence[int],
        column: SplitColumn | None = None,
        clade: Callable[[str], CladeStats] | None = None,
    ) -> None:
        self.ids, self.scores, self.children, self.seqs = ids, scores, children, seqs
        self._column = column
        self._clade = clade

    @classmethod
    def from_column(cls, column: SplitColumn, clade: Callable[[str], CladeStats]) -> Candidates:
        return cls(
            column.ids,
            column.scores,
            column.children,
            seqs=column.seqs,
            column=column,
            clade=clade,
        )

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def is_default(self) -> bool:
        """True when the pool is the split column itself (default gate)."""
        return self._column is not None

    def position(self, seq: int) -> int:
        return bisect_left(self.seqs, seq)

    def id_of(self, seq: int) -> str:
        return self.ids[self.position(seq)]

    def sorted_scores(self) -> Sequence[float]:
        return self._column.sorted_scores if self._column is not None else sorted(self.scores)

    def rank_order(self) -> list[int] | None:
        """Positions best-first (ties: older first); None when the column's view can be used."""
        if self._column is not None:
            return None
        return sorted(range(len(self.ids)), key=lambda i: (-self.scores[i], self.seqs[i]))

    def weight_tree(self, key: object, weight: Callable[[float, int], float]) -> WeightTree | None:
        """A maintained tree of weight(score, children); None for a gated copy."""
        return self._column.weight_tree(key, weight) if self._column is not None else None

    def existing_tree(self, key: object) -> WeightTree | None:
        return self._column.existing_tree(key) if self._column is not None else None

    def drop_trees(self, family: str) -> None:
        if self._column is not None:
            self._column.drop_trees(family)

    def ranked(self) -> list[tuple[float, int]] | None:
        """(-score, seq) ascending, maintained by the split column; None for a gated copy."""
        return self._column.ranked if self._column is not None else None

    def ranked_id(self, rank: int) -> str:
        """Id of the node at 0-based rank (0 = best)."""
        if self._column is not None:
            return self.id_of(self._column.ranked[rank][1])
        order = self.rank_order()
        assert order is not None
        return self.ids[order[rank]]

    def clade_stats(self, outcome: str) -> CladeStats:
        if self._clade is None:
            raise ValueError("this pool has no lineage attached; HGM needs clade statistics")
        return self._clade(outcome)


def eligible(
    index: LineageIndex, split: str, gate: Gate | None, load: Callable[[str], Node]
) -> Candidates:
    """The nodes a parent may be drawn from: evaluated, scored on `split`, passing `gate`
    (`load` reads a full Node by id, for a gate's predicate only)."""
    column = index.column(split)

    def clade(outcome: str) -> CladeStats:
        return index.clade_stats(split, outcome)

    if gate is None or gate.is_default():
        return Candidates.from_column(column, clade)
    entries = index.entries
    if gate.predicate is None:  # thresholds only: no Node loads, one tight pass
        lo = -math.inf if gate.min_score is None else gate.min_score
        keep = [
            i
            for i, (a, seq) in enumerate(zip(column.scores, column.seqs, strict=True))
            if a >= lo and entries[seq].scores[split][1] >= gate.min_n
        ]
    else:
        keep = [
            i
            for i, seq in enumerate(column.seqs)
            if gate.admits(entries[seq].scores[split], lambda s=seq: load(entries[s].id))
        ]
    return Candidates(
        [column.ids[i] for i in keep],
        [column.scores[i] for i in keep],
        [column.children[i] for i in keep],
        seqs=[column.seqs[i] for i in keep],
        clade=clade,
    )


class Strategy(Protocol):
    """Draw one eligible node id; all randomness from `rng` so a seed replays the run."""

    def __call__(self, pool: Candidates, rng: random.Random) -> str: ...


STRATEGIES: dict[str, Callable[..., Strategy]] = {}


def register_strategy(name: str) -> Callable[[Callable[..., Strategy]], Callable[..., Strategy]]:
    """Decorator: make a strategy factory available to `Archive.select_parent(name, ...)`."""

    def add(factory: Callable[..., Strategy]) -> Callable[..., Strategy]:
        STRATEGIES[name] = factory
        return factory

    return add


def make_strategy(name: str, **params: float | str) -> Strategy:
    try:
        factory = STRATEGIES[name]
    except KeyError:
        raise ValueError(
            f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}"
        ) from None
    return factory(**params)


# ---- shared math ---------------------------------------------------------------------------
def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


def _sigmoid_weights(pool: Candidates, gain: float, center: float) -> list[float]:
    """sigmoid(gain (a - center)) / (1 + children) per node: the hot loop at 100k nodes."""
    exp = math.exp
    try:  # one inlined expression: ~20% faster than calling _sigmoid per node
        return [
            1.0 / ((1.0 + exp(gain * (center - a))) * (1 + c))
            for a, c in zip(pool.scores, pool.children, strict=True)
        ]
    except OverflowError:  # a score so far below center that exp() overflows: weight ~ 0
        return [
            _sigmoid(gain * (a - center)) / (1 + c)
            for a, c in zip(pool.scores, pool.children, strict=True)
        ]


def draw_weighted(weights: Sequence[float], rng: random.Random) -> int:
    """Index drawn with probability weights[i] / sum(weights); uniform if all are zero."""
    cum = list(accumulate(weights))
    total = cum[-1]
    if not total > 0:
        return rng.randrange(len(weights))
    i = bisect_right(cum, rng.random() * total)
    return min(i, len(cum) - 1)


def median_sorted(xs: Sequence[float]) -> float:
    n = len(xs)
    mid = n // 2
    return xs[mid] if n % 2 else (xs[mid - 1] + xs[mid]) / 2.0


def _kth_of_two(
    a: Callable[[int], float], na: int, b: Callable[[int], float], nb: int, k: int
) -> float:
    """k-th smallest (0-based) of two ascending sequences given by accessors, O(log n)."""
    lo, hi = max(0, k + 1 - nb), min(k + 1, na)
    while lo < hi:  # i = how many of the k+1 smallest come from a
        i = (lo + hi) // 2
        j = k + 1 - i
        if j > 0 and i < na and b(j - 1) > a(i):
            lo = i + 1
        else:
            hi = i
    i, j = lo, k + 1 - lo
    return max(a(i - 1) if i > 0 else -math.inf, b(j - 1) if j > 0 else -math.inf)


def median_absolute_deviation(xs: Sequence[float], med: float) -> float:
    """MAD of ascending `xs` in O(log n): the deviations are two ascending runs around med."""
    n = len(xs)
    p = bisect_left(xs, med)

    def left(i: int) -> float:  # ascending deviations of xs[p-1], xs[p-2], ...
        return med - xs[p - 1 - i]

    def right(i: int) -> float:
        return xs[p + i] - med

    mid = n // 2
    if n % 2:
        return _kth_of_two(left, p, right, n - p, mid)
    return (
        _kth_of_two(left, p, right, n - p, mid - 1) + _kth_of_two(left, p, right, n - p, mid)
    ) / 2


# ---- strategies ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoreChildProp:
    """DGM: p_i ~ sigmoid(k (a_i - midpoint)) / (1 + children_i), k = 10, midpoint = 0.5."""

    k: float = 10.0
    midpoint: float = 0.5

    def weights(self, pool: Candidates) -> list[float]:
        return _sigmoid_weights(pool, self.k, self.midpoint)

    def probabilities(self, pool: Candidates) -> list[float]:
        return _normalize(self.weights(pool))

    def node_weight(self, score: float, children: int) -> float:
        return _sigmoid(self.k * (score - self.midpoint)) / (1 + children)

    def __call__(self, pool: Candidates, rng: random.Random) -> str:
        tree = pool.weight_tree(("score_child_prop", self.k, self.midpoint), self.node_weight)
        if tree is not None:  # default gate: O(log n) on the tree the archive keeps current
            return pool.id_of(tree.sample(rng, lambda: pool.seqs[rng.randrange(len(pool))]))
        return pool.ids[draw_weighted(self.weights(pool), rng)]


@dataclass(frozen=True)
class Weighted:
    """ShinkaEvolve: p_i ~ sigmoid(lam (a_i - median) / MAD) / (1 + children_i).

    MAD = 0 (more than half the scores tie) falls back to the mean absolute deviation, and to
    1 when every score is equal (then all sigmoids are 0.5 and only children counts matter).
    """

    lam: float = 10.0
    _last_scale: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    def scale(self, pool: Candidates) -> tuple[float, float]:
        xs = pool.sorted_scores()
        med = median_sorted(xs)
        mad = median_absolute_deviation(xs, med)
        if mad <= 0:
            mad = statistics.fmean(abs(x - med) for x in xs) or 1.0
        return med, mad

    def weights(self, pool: Candidates) -> list[float]:
        med, mad = self.scale(pool)
        return _sigmoid_weights(pool, self.lam / mad, med)

    def __call__(self, pool: Candidates, rng: random.Random) -> str:
        """While median and MAD stay put (the usual case with scores k/n), the weights change
        only where a node changed, so a maintained tree serves draws in O(log n); when the
        scale moves, one O(n) pass. Both paths turn one rng.random() into the same pick."""
        if pool.is_default:
            med, mad = self.scale(pool)
            gain = self.lam / mad
            key = ("weighted", gain, med)
            tree = pool.existing_tree(key)
            if tree is None and self._last_scale.get("key") == key:  # stable: worth a tree
                pool.drop_trees("weighted")
                tree = pool.weight_tree(key, lambda a, c: _sigmoid(gain * (a - med)) / (1 + c))
            if tree is not None:
                return pool.id_of(tree.sample(rng, lambda: pool.seqs[rng.randrange(len(pool))]))
            pool.drop_trees("weighted")
            self._last_scale["key"] = key
        return pool.ids[draw_weighted(self.weights(pool), rng)]

    def probabilities(self, pool: Candidates) -> list[float]:
        return _normalize(self.weights(pool))


@dataclass(frozen=True)
class PowerLaw:
    """ShinkaEvolve power-law rank selection: p ~ rank^-alpha, rank 1 = best (ties: older first)."""

    alpha: float = 1.0
    # Prefix sums of r^-alpha. They do not depend on the pool size, so they only ever grow;
    # the archive keeps this strategy object, making a draw O(log n) instead of O(n).
    _cumulative: list[float] = field(default_factory=list, compare=False, repr=False)

    def _prefix(self, n: int) -> list[float]:
        cum = self._cumulative
        total = cum[-1] if cum else 0.0
        for r in range(len(cum) + 1, n + 1):
            total += r**-self.alpha
            cum.append(total)
        return cum

    def probabilities(self, pool: Candidates) -> list[float]:
        ranked = pool.ranked()
        order = pool.rank_order() if ranked is None else [pool.position(q) for _, q in ranked]
        assert order is not None
        p = [0.0] * len(pool)
        for rank, i in enumerate(order, start=1):
            p[i] = rank**-self.alpha
        return _normalize(p)

    def __call__(self, pool: Candidates, rng: random.Random) -> str:
        n = len(pool)
        cum = self._prefix(n)
        rank = min(bisect_right(cum, rng.random() * cum[n - 1], 0, n), n - 1)
        return pool.ranked_id(rank)


@dataclass(frozen=True)
class Best:
    """Greedy: the top score; ties broken uniformly with the RNG."""

    def __call__(self, pool: Candidates, rng: random.Random) -> str:
        ranked = pool.ranked()
        if ranked is not None:  # (-score, seq) ascending: the ties at the top are a prefix
            n_tied = bisect_right(ranked, (ranked[0][0], math.inf))
            return pool.id_of(ranked[rng.randrange(n_tied) if n_tied > 1 else 0][1])
        top = max(pool.scores)
        tied = [i for i, a in enumerate(pool.scores) if a == top]
        return pool.ids[tied[rng.randrange(len(tied))] if len(tied) > 1 else tied[0]]


@dataclass(frozen=True)
class Uniform:
    """Every eligible node equally likely: the baseline every other strategy must beat."""

    def __call__(self, pool: Candidates, rng: random.Random) -> str:
        return pool.ids[rng.randrange(len(pool))]


@dataclass(frozen=True)
class CladeThompson:
    """HGM: theta_i ~ Beta(1 + S_i, 1 + F_i) over node i's clade, pick argmax theta.

    Nodes with equal (S, F) are exchangeable, so each group draws the max of its k samples
    directly (F_max = F^k) and the winner inside the group is uniform: the same distribution
    as one Beta draw per node, at a cost per distinct (S, F) pair. Large groups that need a
    numeric inverse go last and are skipped without inverting when U <= F(best)^k, i.e.
    when their max cannot beat the best theta so far (exact, just cheaper).
    """

    outcome: str = "improvement"

    def __call__(self, pool: Candidates, rng: random.Random) -> str:
        stats = pool.clade_stats(self.outcome)
        groups = stats.groups if pool.is_default else _group_by_counts(pool, stats)
        best_theta, best_group = -1.0, None
        deferred = []
        for (s, f), members in sorted(groups.items()):
            k = len(members)
            if k > _DIRECT_MAX and s > 0 and f > 0:
                deferred.append((1 + s, 1 + f, members))
                continue
            theta = sample_beta_max(1 + s, 1 + f, k, rng)
            if theta > best_theta:
                best_theta, best_group = theta, members
        for a, b, members in deferred:
            k = len(members)
            u = rng.random()
            if best_theta >= 0 and u <= beta_cdf(best_theta, a, b) ** k:
                continue  # this group's max is <= best_theta
            theta = _beta_quantile(u ** (1.0 / k), a, b)
            if theta > best_theta:
                best_theta, best_group = theta, members
        assert best_group is not None
        seq = best_group[rng.randrange(len(best_group))] if len(best_group) > 1 else best_group[0]
        return pool.id_of(seq)


def _group_by_counts(pool: Candidates, stats: CladeStats) -> dict[tuple[int, int], list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for seq in pool.seqs:  # already in seq order, so each group is sorted
        groups.setdefault(stats.counts(seq), []).append(seq)
    return groups


_DIRECT_MAX = 16  # up to this many samples, drawing them beats a numeric inverse CDF


def sample_beta(a: float, b: float, rng: random.Random) -> float:
    """Beta(a, b); small integer a, b (the usual clade counts) via sums of exponentials."""
    if a <= 12 and b <= 12 and a == int(a) and b == int(b):
        r = rng.random
        pa = pb = 1.0
        for _ in range(int(a)):
            pa *= 1.0 - r()  # in (0, 1]: -log(prod U) ~ Gamma(a, 1)
        for _ in range(int(b)):
            pb *= 1.0 - r()
        ga, gb = -math.log(pa), -math.log(pb)
        return ga / (ga + gb) if ga + gb > 0 else 0.5
    return rng.betavariate(a, b)


def sample_beta_max(a: float, b: float, k: int, rng: random.Random) -> float:
    """One draw of max(X_1..X_k), X_j iid Beta(a, b)."""
    if a == 1 or b == 1:  # closed-form inverse CDF; F_max(x) = F(x)^k = U
        v = rng.random() ** (1.0 / k)
        if b == 1:
            return v ** (1.0 / a)
        return 1.0 - (1.0 - v) ** (1.0 / b)
    if k <= _DIRECT_MAX:
        return max(sample_beta(a, b, rng) for _ in range(k))
    v = rng.random() ** (1.0 / k)
    return _beta_quantile(v, a, b)


def _beta_quantile(v: float, a: float, b: float) -> float:
    """x with I_x(a, b) = v: Newton steps on the Beta pdf, falling back to bisection."""
    ln_b = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    lo, hi = 0.0, 1.0
    x = a / (a + b)
    for _ in range(100):
        f = beta_cdf(x, a, b) - v
        if f < 0:
            lo = x
        else:
            hi = x
        pdf = math.exp((a - 1) * math.log(x) + (b - 1) * math.log1p(-x) - ln_b)
        step = f / pdf if pdf > 0 else math.inf
        nxt = x - step
        if not lo < nxt < hi:
            nxt = (lo + hi) / 2
        if abs(nxt - x) < 1e-13 or hi - lo < 1e-13:
            return nxt
        x = nxt
    return x


def beta_cdf(x: float, a: float, b: float) -> float:
    """Regularized incomplete beta I_x(a, b) by Lentz's continued fraction."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    ln_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x > (a + 1) / (a + b + 2):
        return 1.0 - beta_cdf(1.0 - x, b, a)
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        num = m * (b - m) * x / ((a + m2 - 1) * (a + m2))
        for _ in range(2):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
            num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))
        if abs(d * c - 1.0) < eps:
            break
    return math.exp(ln_front) * h / a


def _normalize(weights: Sequence[float]) -> list[float]:
    total = sum(weights)
    if not total > 0:
        return [1.0 / len(weights)] * len(weights)
    return [w / total for w in weights]


register_strategy("score_child_prop")(ScoreChildProp)
register_strategy("weighted")(Weighted)
register_strategy("power_law")(PowerLaw)
register_strategy("hgm")(CladeThompson)
register_strategy("best")(Best)
register_strategy("uniform")(Uniform)
