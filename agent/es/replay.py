"""Rebuilding a node's weights from the base model by replaying its chain of ES records.

`replay` runs the same `apply_record` the step ran, on the same fp32 tensors in the same order,
so the result is bit-identical to the weights the steps produced. A materialized checkpoint
(`agent.es.checkpoint`: the targeted fp32 weights and optimizer state after some record) bounds
the replay cost at depth: start from it and replay only the records after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from agent.es.eggroll import OptimizerState, apply_record, select_targets
from agent.es.record import EsRecord
from agent.es.weight_store import host_fp32


def base_weights(model: torch.nn.Module, target_modules: Sequence[str]) -> dict[str, torch.Tensor]:
    """fp32 copies of the targeted weights in host memory, the starting point of every chain (a
    dict for replaying small models; `ChainReplayer` spills its base instead)."""
    return {n: host_fp32(m.weight) for n, m in select_targets(model, target_modules).items()}


def replay(
    start: Mapping[str, torch.Tensor],
    records: Sequence[EsRecord],
    state: OptimizerState | None = None,
) -> tuple[dict[str, torch.Tensor], OptimizerState]:
    """Weights (and optimizer state) after applying `records`, in order, to a copy of `start`."""
    weights = {n: w.clone() for n, w in start.items()}
    state = (
        OptimizerState(state.steps, _copy(state.first), _copy(state.second))
        if state
        else OptimizerState()
    )
    for record in records:
        missing = set(record.modules) - set(weights)
        if missing:
            raise KeyError(
                f"record of step {record.step} targets modules the weights lack: {sorted(missing)[:5]}"
            )
        apply_record(weights, record, state)
    return weights, state


def _copy(d: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    return None if d is None else {k: v.clone() for k, v in d.items()}
