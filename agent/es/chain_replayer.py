"""Setting a model's weights from a chain of ES records, in place, any number of times.

This is how weights travel in Lineage: whoever generates (the loop's own backend, a Ray replica)
gets the records (seeds and shaped fitness, a few KB each) and rebuilds the weights itself with
`update_module`, the step's own update, bit-identical to the weights the ES steps produced. The
pristine fp32 values of every module a chain touches are kept (spilled to disk), so a later chain
(a sibling, or the parent again) starts from the base model; a chain that extends the one loaded
(a child just made) applies only its new records.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import torch

from agent.es.checkpoint import Checkpoint, CheckpointWeights, load_checkpoint
from agent.es.config import EsConfig
from agent.es.eggroll import EggRoll, OptimizerState, select_targets, update_module
from agent.es.record import EsRecord
from agent.es.weight_store import ModelWeights, SpilledWeights, Weights, all_fp32

log = logging.getLogger(__name__)


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


class ChainReplayer:
    """The weights of one model, set from record chains (see the module docstring).

    `target_modules` are captured as the base at once; pass them when something else (an ES
    step's `tell`) may move those weights before the first `set`. Other modules are captured the
    first time a chain touches them. The base, and the master of a non-fp32 model, are spilled
    stores (`agent.es.weight_store`); an fp32 model's own weights are its master."""

    def __init__(self, model: torch.nn.Module, target_modules: Sequence[str] = ()) -> None:
        self.model = model
        self._linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        targets = select_targets(model, target_modules) if target_modules else {}
        self.base = SpilledWeights.of((n, layer.weight) for n, layer in targets.items())
        self._model_is_master = all_fp32(self._linears)
        self.master: Weights = self._model_master() if self._model_is_master else SpilledWeights()
        self.state = OptimizerState(spilled=True)
        self.loaded: list[str] | None = None  # the loaded chain, one canonical JSON per record
        self.generation = 0  # bumped whenever the master moves other than by a strategy's tell

    def set(
        self,
        records: Sequence[EsRecord | Mapping[str, Any]],
        checkpoint: Checkpoint | None = None,
    ) -> int:
        """Make the model's weights those of base + `records`, in order ([] = the base model);
        returns how many records it applied (0: that chain was loaded already).

        One module at a time: read its fp32 value (the base's; the master's when the chain
        extends the loaded one; `checkpoint`'s, which holds the chain's first records applied),
        apply the remaining records that touch it, store it. Memory beyond the model is one
        module-sized buffer, whatever the chain's length. A checkpoint that cannot be used
        (missing, damaged, not matching the chain or the model) is logged, and the chain is
        replayed from the base instead."""
        chain = [as_record(r) for r in records]
        keys = [r.to_json() for r in chain]
        if keys == self.loaded:
            return 0
        modules = list(dict.fromkeys(m for r in chain for m in r.modules))
        new = [m for m in modules if m not in self.base]
        unknown = [m for m in new if m not in self._linears]
        if unknown:
            raise KeyError(f"the ES records target Linear modules the model lacks: {unknown[:5]}")
        done = len(self.loaded) if self.loaded is not None else -1
        extends = done >= 0 and keys[:done] == self.loaded and not new
        for name in new:  # never touched before, so still pristine: keep them now
            self.base[name] = self._linears[name].weight
        if new and self._model_is_master:
            self.master = self._model_master()
        start = None
        if checkpoint is not None and not (extends and done >= checkpoint.records):
            start = self._open(checkpoint, chain)
        self.loaded, self.generation = None, self.generation + 1  # unknown until done
        try:
            if start is not None:
                saved, self.state = start
                todo, names = chain[checkpoint.records :], list(self.base)

                def source(name: str) -> torch.Tensor:
                    return saved[name] if name in saved else self.base[name]

            elif extends:
                source, todo = self.master.__getitem__, chain[done:]
                names = list(dict.fromkeys(m for r in todo for m in r.modules))
            else:  # from the base: every captured module, so ones this chain leaves are reset
                source, todo, names = self.base.__getitem__, chain, list(self.base)
                self.state = OptimizerState(spilled=True)
            first = self.state.steps + 1
            for name in names:
                w = source(name)
                for t, record in enumerate(todo, start=first):
                    if name in record.modules:
                        update_module(w, record, name, self.state, t)
                self._store(name, w)
            self.state.steps += len(todo)
        finally:
            if start is not None:
                start[0].close()
        self.loaded = keys
        return len(todo)

    def _open(
        self, checkpoint: Checkpoint, chain: Sequence[EsRecord]
    ) -> tuple[CheckpointWeights, OptimizerState] | None:
        """The checkpoint's weights and optimizer state, if they can stand for `chain`'s first
        `checkpoint.records` records; else None, and why is logged."""
        try:
            if not 0 < checkpoint.records <= len(chain):
                raise ValueError(
                    f"it holds {checkpoint.records} records of a chain of {len(chain)}"
                )
            saved, state = load_checkpoint(checkpoint.path, spilled=True)
        except (OSError, ValueError) as exc:
            log.warning(
                "checkpoint %s not used (replaying from the base): %s", checkpoint.path, exc
            )
            return None
        needed = {m for r in chain[: checkpoint.records] for m in r.modules}
        missing = sorted(needed - set(saved))
        misshapen = sorted(
            m
            for m in set(saved) & set(self.base)
            if saved.shape(m) != tuple(self._linears[m].weight.shape)
        )
        if missing or misshapen or state.steps != checkpoint.records:
            saved.close()
            why = (
                f"lacks {missing[:3]}"
                if missing
                else f"has other shapes for {misshapen[:3]}"
                if misshapen
                else f"holds {state.steps} optimizer steps"
            )
            log.warning(
                "checkpoint %s not used (replaying from the base): it %s", checkpoint.path, why
            )
            return None
        return saved, state

    def _model_master(self) -> ModelWeights:
        """base + the loaded chain, fp32: an fp32 model's own weights of the captured modules."""
        return ModelWeights({n: self._linears[n] for n in self.base})

    def _store(self, name: str, w: torch.Tensor) -> None:
        """`w` is module `name`'s fp32 master value: keep it, and put it in the model."""
        self.master[name] = w
        if not self._model_is_master:
            with torch.no_grad():
                weight = self._linears[name].weight
                weight.data.copy_(w.to(weight.dtype))

    def strategy(self, config: EsConfig, step: int) -> EggRoll:
        """An ES strategy for the next step of the loaded chain. It moves this chain's own
        master weights and optimizer state (no copy of the weights, and Adam's moments are the
        chain's, as replay has them), and its `tell` extends the loaded chain by its record."""
        if self.loaded is None:
            raise RuntimeError(
                "no chain is loaded: set one (the base model is []) before an ES step, with the "
                "targeted modules captured (ChainReplayer(model, target_modules))"
            )
        return EggRoll(config, self.model, step, chain=self)

    def applied(self, record: EsRecord | None) -> None:
        """A strategy from `strategy` applied `record` to the master: it is now loaded. None (it
        broke off part way): the next `set` rebuilds from the base."""
        self.generation += 1
        if record is None or self.loaded is None:
            self.loaded, self.state = None, OptimizerState(spilled=True)
        else:
            self.loaded.append(record.to_json())
