"""Operators as plug-ins: each makes a child from a parent, and registers its name, its default
weight in `[operators]`, its place in `order = "cycle"` and how the pictures draw it.

An operator is a function `(rt, parent_id, iteration, rng) -> Child` in a module of this package,
decorated with `register_operator`; nothing else needs to know it exists.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archive import Cost
from archive.drawing.view import OperatorStyle, register_operator_style

if TYPE_CHECKING:
    from agent.loop.runtime import Runtime


@dataclass
class Child:
    """What an operator made, for the loop to store; a failed try sets `failure` (no raise)."""

    operator: str
    es_record: dict[str, Any] | None = None
    changes: dict[str, str | None] | None = None  # None: the parent's scaffold
    checkpoint: Path | None = None  # the child's weights, materialized (`[es] checkpoint_every`)
    failure: str | None = None
    cost: Cost = Cost()
    metadata: dict[str, Any] = field(default_factory=dict)


Make = Callable[["Runtime", str, int, random.Random], Child]


@dataclass(frozen=True)
class OperatorSpec:
    name: str
    make: Make
    style: OperatorStyle
    weight: float  # its default weight in `[operators]`
    rank: int  # its place in `order = "cycle"` (lowest first)
    steps_weights: bool  # it runs ES populations: the policy engine must be able to hold them
    edits: bool  # it asks a proposer for scaffold edits: the run opens one


_REGISTRY: dict[str, OperatorSpec] = {}


def register_operator(
    name: str,
    *,
    style: OperatorStyle,
    weight: float = 0.0,
    rank: int = 100,
    steps_weights: bool = False,
    edits: bool = False,
) -> Callable[[Make], Make]:
    """Decorator: make `name` an operator a config may weigh and a run may choose."""

    def add(make: Make) -> Make:
        if name in _REGISTRY and _REGISTRY[name].make is not make:
            raise ValueError(f"operator {name!r} is registered already")
        _REGISTRY[name] = OperatorSpec(name, make, style, weight, rank, steps_weights, edits)
        register_operator_style(name, style)
        return make

    return add


def registered() -> dict[str, OperatorSpec]:
    """The operators by name, in cycle order."""
    return dict(sorted(_REGISTRY.items(), key=lambda item: (item[1].rank, item[0])))


def get_operator(name: str) -> OperatorSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown operator {name!r}; registered: {sorted(_REGISTRY)}") from None


def choose_operator(
    rt: Runtime, rng: random.Random, gains: dict[str, list[float]], iteration: int = 1
) -> str:
    """A configured mix (drawn, or in turn), or UCB1 on observed gains (child minus parent)."""
    o = rt.config.operators
    weights = o.weights
    allowed = [name for name, w in weights.items() if w > 0]
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
        start = allowed.index(o.first) if o.first else 0
        return allowed[(start + iteration - 1) % len(allowed)]
    return rng.choices(allowed, weights=[weights[k] for k in allowed])[0]
