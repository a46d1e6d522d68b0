"""Keeps the policy model at one node's weights, switching by replaying ES chains from the base.

A node's weights are the base model plus its chain of ES records; `replay` rebuilds them bit for
bit. Switching to a descendant of the node already loaded (the common case: a child just made)
applies only the new records; anything else replays from the fp32 copy of the base weights.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch

from agent.es.eggroll import OptimizerState, apply_record
from agent.es.record import EsRecord
from agent.es.replay import base_weights, load_into


class PolicyWeights:
    def __init__(self, model: torch.nn.Module, target_modules: Sequence[str]) -> None:
        self.model = model
        self.base = base_weights(model, target_modules)
        self.master = {n: w.clone() for n, w in self.base.items()}
        self.state = OptimizerState()
        self.loaded: list[str] = []  # the loaded chain, as canonical JSON of each record

    def load(self, records: Sequence[dict[str, Any]]) -> None:
        """Put the model at base + `records` (in chain order)."""
        keys = [json.dumps(r, sort_keys=True) for r in records]
        if keys == self.loaded:
            return
        if keys[: len(self.loaded)] != self.loaded:
            self.master = {n: w.clone() for n, w in self.base.items()}
            self.state = OptimizerState()
            self.loaded = []
        for key, record in zip(keys[len(self.loaded) :], records[len(self.loaded) :], strict=True):
            apply_record(self.master, EsRecord(**record), self.state)
            self.loaded.append(key)
        load_into(self.model, self.master)
