"""The lineage record of one ES step: a few KB, no weights. Replaying it from the parent's weights
(see agent.es.replay) rebuilds the child's weights bit for bit."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

RECORD_VERSION = 1


@dataclass(frozen=True)
class EsRecord:
    step: int  # this step's index in the run (part of the noise coordinates)
    config: dict[str, Any]  # EsConfig.to_dict(): seed, sigma, alpha, rank, population, targets, ...
    modules: list[str]  # the module names actually perturbed, in update order
    coefficients: list[float]  # shaped fitness f_i per member (exact floats: they drive replay)
    fitness_mean: float  # mean raw reward of the population (for reports, not for replay)
    parent: str | None = None  # archive id of the parent node, when stored in an archive
    metrics: dict[str, float] = field(
        default_factory=dict
    )  # cosine realized/intended, changed share
    version: int = RECORD_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EsRecord:
        data = json.loads(text)
        if data.get("version") != RECORD_VERSION:
            raise ValueError(f"ES record version {data.get('version')!r} is not {RECORD_VERSION}")
        return cls(**data)
