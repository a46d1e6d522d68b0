"""The node of the lineage: one agent variant = weights (base + ES records) + scaffold commit."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from archive.errors import InvalidNodeError

# Ids become git ref names (refs/nodes/<id>) and file names under blobs/, so keep them plain.
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class Status(StrEnum):
    """Where a node is in its evaluation; `evaluating` never survives a reopen."""

    PENDING = "pending"
    EVALUATING = "evaluating"
    EVALUATED = "evaluated"
    FAILED = "failed"


# How a node was made is a plain string: the archive knows only the root's; the loop's operators
# (agent/loop/operators) name themselves, and any other string is a user's operator.
ROOT_OPERATOR = "root"
DEFAULT_OPERATOR = "es_step"  # an `add_child` that names none: an ES step, the archive's oldest


@dataclass(frozen=True, slots=True)
class Score:
    """A score on one split with the number of tasks behind it (a mean without n hides noise)."""

    score: float
    n: int

    def __post_init__(self) -> None:
        if not math.isfinite(self.score) or self.n < 0:
            raise InvalidNodeError(f"score must be finite and n >= 0, got {self.score}, {self.n}")

    def to_json(self) -> dict[str, float | int]:
        return {"score": self.score, "n": self.n}

    @classmethod
    def coerce(cls, value: Score | dict[str, Any] | tuple[float, int]) -> Score:
        if isinstance(value, Score):
            return value
        if isinstance(value, dict):
            return cls(float(value["score"]), int(value.get("n", 0)))
        score, n = value
        return cls(float(score), int(n))


@dataclass(frozen=True, slots=True)
class Cost:
    """What a node cost to make and evaluate; summed over the run for budgets."""

    generated_tokens: int = 0
    sandbox_s: float = 0.0
    wall_s: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.generated_tokens + other.generated_tokens,
            self.sandbox_s + other.sandbox_s,
            self.wall_s + other.wall_s,
        )


@dataclass(frozen=True, slots=True)
class WeightsChain:
    """Everything needed to rebuild a node's weights: the base model and the ES records in order."""

    base_model: str
    base_hash: str
    records: list[dict[str, Any]]
    # The deepest node on the chain with a weight checkpoint, and how many of `records` it holds
    # applied: replay may start there (None: from the base).
    checkpoint: Path | None = None
    checkpoint_records: int = 0


@dataclass(frozen=True, slots=True)
class Node:
    """A stored agent variant. Weights are a base (root only) or one ES record (per step)."""

    id: str
    parent_ids: tuple[str, ...]
    operator: str
    scaffold: str
    status: Status
    created_at: float
    base_model: str | None = None
    base_hash: str | None = None
    es_record: dict[str, Any] | None = None
    scores: dict[str, Score] = field(default_factory=dict)
    failure_reason: str | None = None
    cost: Cost = Cost()
    metadata: dict[str, Any] = field(default_factory=dict)
    children: int = 0
    checkpoint: str | None = None

    @property
    def is_root(self) -> bool:
        return not self.parent_ids


@dataclass(slots=True)
class NewNode:
    """A node to insert in bulk (`Archive.add_many`): no new git commit, the scaffold must exist.

    `scaffold=None` inherits the primary parent's commit, which is what an ES step does.
    """

    id: str
    parent_ids: tuple[str, ...] | list[str]
    operator: str = DEFAULT_OPERATOR
    es_record: dict[str, Any] | None = None
    scaffold: str | None = None
    base_model: str | None = None
    base_hash: str | None = None
    status: Status = Status.PENDING
    failure_reason: str | None = None
    scores: dict[str, Score] | None = None
    cost: Cost | None = None
    metadata: dict[str, Any] | None = None
    created_at: float | None = None


def check_node_id(node_id: str) -> str:
    """Reject ids that would not be a safe git ref component or file name."""
    if (
        not isinstance(node_id, str)
        or not _ID_RE.match(node_id)
        or ".." in node_id
        or node_id.endswith((".lock", "."))
    ):
        raise InvalidNodeError(
            f"invalid node id {node_id!r}: use letters, digits, '_', '-', '.' (max 128)"
        )
    return node_id


def check_status(status: Status | str, reason: str | None) -> Status:
    """A failed node must say why; other states carry no reason."""
    try:
        status = Status(status)
    except ValueError as exc:
        raise InvalidNodeError(f"unknown status {status!r}") from exc
    if status is Status.FAILED and not reason:
        raise InvalidNodeError("status 'failed' needs a reason")
    return status
