"""Setting a model's weights from a chain of ES records, in place, any number of times.

This is how weights travel in Lineage: whoever generates (the loop's own backend, a Ray replica)
gets the records (seeds and shaped fitness, a few KB each) and rebuilds the weights itself with
`apply_record`, bit-identical to the weights the ES steps produced. The pristine fp32 values of
every module a chain touches are kept, so a later chain (a sibling, or the parent again) starts
from the base model; a chain that extends the one loaded (a child just made) applies only its new
records.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import torch

from agent.es.config import EsConfig
from agent.es.eggroll import EggRoll, OptimizerState, apply_record, host_fp32
from agent.es.record import EsRecord
from agent.es.replay import base_weights, load_into


def as_record(record: EsRecord | Mapping[str, Any]) -> EsRecord:
    """An `EsRecord` from itself or its dict form (`dataclasses.asdict`, or parsed `to_json`)."""
    if isinstance(record, EsRecord):
        return record
    if not isinstance(record, Mapping):
        raise TypeError(f"an ES record must be an EsRecord or a dict, got {type(record).__name__}")
    try:
        return EsRecord.from_json(json.dumps(dict(record)))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not an ES record: {exc}") from exc


def record_dicts(records: Sequence[EsRecord | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The plain-dict form that crosses the network (validated first, so errors show up early)."""
    return [asdict(as_record(r)) for r in records]


class ChainWeights:
    """The weights of one model, set from record chains (see the module docstring).

    `target_modules` are captured as the base at once; pass them when something else (an ES
    step's `tell`) may move those weights before the first `set`. Other modules are captured the
    first time a chain touches them."""

    def __init__(self, model: torch.nn.Module, target_modules: Sequence[str] = ()) -> None:
        self.model = model
        self.base: dict[str, torch.Tensor] = (
            base_weights(model, target_modules) if target_modules else {}
        )
        self.master: dict[str, torch.Tensor] = {}  # base + the loaded chain, fp32, on the host
        self.state = OptimizerState()
        self.loaded: list[str] = []  # the loaded chain, one canonical JSON per record

    def set(self, records: Sequence[EsRecord | Mapping[str, Any]]) -> None:
        """Make the model's weights those of base + `records`, in order ([] = the base model)."""
        chain = [as_record(r) for r in records]
        keys = [r.to_json() for r in chain]
        if keys == self.loaded and self.master:
            load_into(self.model, self.master)  # cheap, and undoes any in-place change since
            return
        modules = list(dict.fromkeys(m for r in chain for m in r.modules))
        new = [m for m in modules if m not in self.base]
        by_name = dict(self.model.named_modules())
        unknown = [m for m in new if not isinstance(by_name.get(m), torch.nn.Linear)]
        if unknown:
            raise KeyError(f"the ES records target Linear modules the model lacks: {unknown[:5]}")
        for name in new:  # never touched before, so still pristine: keep them now
            self.base[name] = host_fp32(by_name[name].weight)
        extends = keys[: len(self.loaded)] == self.loaded and not new and self.master
        if not extends:
            self.master = {n: w.clone() for n, w in self.base.items()}
            self.state = OptimizerState()
            self.loaded = []
        for key, record in zip(keys[len(self.loaded) :], chain[len(self.loaded) :], strict=True):
            apply_record(self.master, record, self.state)
            self.loaded.append(key)
        load_into(self.model, self.master)

    def strategy(self, config: EsConfig, step: int) -> EggRoll:
        """An ES strategy for the next step of the loaded chain. It moves this chain's own
        master weights and optimizer state (no copy of the weights, and Adam's moments are the
        chain's, as replay has them), and its `tell` extends the loaded chain by its record."""
        if not self.master:
            raise RuntimeError(
                "no chain is loaded: set one (the base model is []) before an ES step, with the "
                "targeted modules captured (ChainWeights(model, target_modules))"
            )
        return EggRoll(config, self.model, step, chain=self)

    def applied(self, record: EsRecord | None) -> None:
        """A strategy from `strategy` applied `record` to the master: it is now loaded. None (it
        broke off part way): the next `set` rebuilds from the base."""
        if record is None:
            self.master, self.state, self.loaded = {}, OptimizerState(), []
        else:
            self.loaded.append(record.to_json())
