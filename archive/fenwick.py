"""A Fenwick (binary indexed) tree of weights: O(log n) update and weighted draw.

Used when a node's selection weight depends only on the node itself (DGM: its score and
children count), so one write changes one weight and a draw needs no pass over the archive.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

_REBUILD_EVERY = 1 << 16  # re-sum from scratch now and then so float drift cannot build up


class WeightTree:
    """Weights at positions 1..capacity (position = node seq); zero means not drawable."""

    def __init__(self, items: Iterable[tuple[int, float]] = ()) -> None:
        self.weights: list[float] = [0.0, 0.0]
        for pos, w in items:
            self._grow(pos)
            self.weights[pos] = w
        self._rebuild()

    def _grow(self, pos: int) -> None:
        if pos >= len(self.weights):
            size = len(self.weights)
            while size <= pos:
                size *= 2
            self.weights.extend([0.0] * (size - len(self.weights)))
            self._tree: list[float] = []

    def _rebuild(self) -> None:
        """Linear-time construction from the weights."""
        tree = list(self.weights)
        n = len(tree) - 1
        for i in range(1, n + 1):
            j = i + (i & -i)
            if j <= n:
                tree[j] += tree[i]
        self._tree = tree
        self._updates = 0
        self._top = 1 << (n.bit_length() - 1)

    def set(self, pos: int, weight: float) -> None:
        if pos >= len(self.weights):
            self._grow(pos)
            self.weights[pos] = weight
            self._rebuild()
            return
        delta = weight - self.weights[pos]
        self.weights[pos] = weight
        if delta == 0:
            return
        tree, n = self._tree, len(self._tree) - 1
        while pos <= n:
            tree[pos] += delta
            pos += pos & -pos
        self._updates += 1
        if self._updates >= _REBUILD_EVERY:
            self._rebuild()

    def total(self) -> float:
        tree, i, s = self._tree, len(self._tree) - 1, 0.0
        while i > 0:
            s += tree[i]
            i -= i & -i
        return s

    def sample(self, rng: random.Random, fallback: Callable[[], int]) -> int:
        """A position drawn with probability weight / total (fallback() if all are zero)."""
        total = self.total()
        if not total > 0:
            return fallback()
        r = rng.random() * total
        tree, n = self._tree, len(self._tree) - 1
        pos, step = 0, self._top
        while step:
            nxt = pos + step
            if nxt <= n and tree[nxt] <= r:
                pos = nxt
                r -= tree[nxt]
            step >>= 1
        pos += 1
        if pos > n or self.weights[pos] <= 0:  # float rounding at a boundary: rare, exact retry
            candidates = [(i, w) for i, w in enumerate(self.weights) if w > 0]
            if not candidates:
                return fallback()
            r = rng.random() * sum(w for _, w in candidates)
            for i, w in candidates:
                r -= w
                if r < 0:
                    return i
            return candidates[-1][0]
        return pos
