"""Rebuilding a node's weights from the base model by replaying its chain of ES records.

`replay` runs the same `apply_record` the step ran, on the same fp32 tensors in the same order,
so the result is bit-identical to the weights the steps produced. A materialized checkpoint (the
targeted fp32 weights and optimizer state after some record) bounds the replay cost at depth:
start from the deepest checkpoint on the chain and replay only the records after it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from agent.es.eggroll import OptimizerState, apply_record, select_targets
from agent.es.record import EsRecord
from agent.es.weight_store import host_fp32


def base_weights(model: torch.nn.Module, target_modules: Sequence[str]) -> dict[str, torch.Tensor]:
    """fp32 copies of the targeted weights in host memory, the starting point of every chain (a
    dict for replaying small models; `ChainWeights` spills its base instead)."""
    return {n: host_fp32(m.weight) for n, m in select_targets(model, target_modules).items()}


def replay(
    start: dict[str, torch.Tensor], records: Sequence[EsRecord], state: OptimizerState | None = None
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


def save_checkpoint(path: Path, weights: dict[str, torch.Tensor], state: OptimizerState) -> None:
    """Atomic: a temp file in the same folder, fsync, rename. A kill leaves the old file or none."""
    from safetensors.torch import save_file

    tensors = {f"w/{k}": v.contiguous() for k, v in weights.items()}
    for prefix, moments in (("m1", state.first), ("m2", state.second)):
        tensors.update({f"{prefix}/{k}": v.contiguous() for k, v in (moments or {}).items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"optimizer_steps": json.dumps(state.steps)})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], OptimizerState]:
    from safetensors import safe_open

    weights: dict[str, torch.Tensor] = {}
    first: dict[str, torch.Tensor] = {}
    second: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as f:
        steps = json.loads((f.metadata() or {}).get("optimizer_steps", "0"))
        for key in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
            prefix, name = key.split("/", 1)
            {"w": weights, "m1": first, "m2": second}[prefix][name] = f.get_tensor(key)
    return weights, OptimizerState(steps, first or None, second or None)
