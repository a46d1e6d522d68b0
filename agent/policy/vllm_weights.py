"""A node's weights into a live vLLM engine: the targeted Linear weights, swapped without a restart.

The loop replays a node's chain on the fp32 master in host memory (`agent.es.chain_replayer`), as
for the transformers backend; what changed then crosses to vLLM's worker process as bf16 (the
engine's dtype) tensors in a file under /dev/shm (RAM: one copy, no pickling through vLLM's
RPC pipe, which its docs reserve for control messages), named as in the Hugging Face model, and
`WeightLoader.lineage_load_linears` (a worker extension, `LLM(worker_extension_cls=...)`, called
with `collective_rpc`) puts them in place.

vLLM stacks q/k/v into one `qkv_proj` and gate/up into `gate_up_proj` (the model's
`packed_modules_mapping`), so a stacked layer takes all its parts at once: the sender sends every
sibling of a changed part (`with_siblings`). On a CPU, vLLM packs each Linear weight into a oneDNN
matmul handle once loaded and drops the weight itself (`dispatch_cpu_unquantized_gemm`), so
`load_weights` cannot reach it: here a new handle is built from the new weight and its pointer
written into the old handle's tensor, which the layer (and any compiled graph) reads at every
call; the old handle is freed. Elsewhere (GPU, or a CPU layer that kept its weight) the weight is
copied in place. Only one tensor-parallel rank (the whole weight) is supported.

The bits a layer computes with are then those of an engine started from `lineage export` of the
node: the same bf16 values, packed the same way (checked in tests/test_vllm_weights.py).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from agent.policy.backend import EngineDied

# vLLM's stacking of Hugging Face projections (Llama, Qwen2, Mistral and most dense models).
PACKED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
ONEDNN_CACHE = 32  # as `dispatch_cpu_unquantized_gemm` builds its handles


def with_siblings(names: Iterable[str], known: Iterable[str]) -> list[str]:
    """`names` plus every part of a stacked vLLM layer one of them belongs to (among `known`, the
    model's Linear modules), in `known`'s order."""
    wanted = set(names)
    for name in list(wanted):
        parent, _, short = name.rpartition(".")
        for parts in PACKED.values():
            if short in parts:
                wanted.update(f"{parent}.{p}" if parent else p for p in parts)
    return [n for n in known if n in wanted]


def write_weights(tensors: Mapping[str, torch.Tensor], dtype: torch.dtype) -> Path:
    """The tensors, cast to the engine's dtype, in a fresh safetensors file in RAM (/dev/shm where
    it exists); the caller removes it."""
    shm = Path("/dev/shm")
    fd, name = tempfile.mkstemp(
        prefix="lineage-weights-", suffix=".safetensors", dir=shm if shm.is_dir() else None
    )
    os.close(fd)
    save_file({k: v.detach().to("cpu", dtype).contiguous() for k, v in tensors.items()}, name)
    return Path(name)


def push_weights(llm, tensors: Mapping[str, torch.Tensor], dtype: torch.dtype) -> int:
    """Put Linear weights (Hugging Face module names, stacked parts complete) into the engine of
    `llm` (a `vllm.LLM` built with `worker_extension_cls=EXTENSION`); returns the layers set."""
    if not tensors:
        return 0
    path = write_weights(tensors, dtype)
    try:
        return sum(llm.collective_rpc("lineage_load_linears", args=(str(path),)))
    except Exception as exc:  # a dead worker or a half-set model: either way, no engine to use
        raise EngineDied(
            f"the vLLM engine failed while taking new weights ({type(exc).__name__}: {exc}); "
            "a worker the kernel killed for memory ends this way (see `dmesg`)"
        ) from exc
    finally:
        path.unlink(missing_ok=True)


EXTENSION = "agent.policy.vllm_weights.WeightLoader"


class WeightLoader:
    """vLLM worker extension (mixed into vLLM's worker class): `collective_rpc` entry points."""

    def lineage_load_linears(self, path: str) -> int:
        with safe_open(path, framework="pt") as f:
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        return load_linears(self.model_runner.get_model(), tensors)  # type: ignore[attr-defined]

    def lineage_parked(self) -> bool:
        """Whether this worker's queue readers park instead of spinning (`vllm_spin.py`)."""
        from agent.policy.vllm_spin import parked

        return parked()


def stacked(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """vLLM layer name -> its whole new weight: parts of a stacked layer concatenated in order."""
    mapping = {
        k: tuple(v) for k, v in (getattr(model, "packed_modules_mapping", None) or {}).items()
    }
    part_of = {part: (whole, i) for whole, parts in mapping.items() for i, part in enumerate(parts)}
    groups: dict[str, dict[int, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        parent, _, short = name.rpartition(".")
        whole, index = part_of.get(short, (short, 0))
        groups.setdefault(f"{parent}.{whole}" if parent else whole, {})[index] = tensor
    layers = {}
    for layer, parts in groups.items():
        short = layer.rpartition(".")[2]
        expected = len(mapping.get(short, (short,)))
        if sorted(parts) != list(range(expected)):
            names = mapping.get(short, (short,))
            missing = [names[i] for i in range(expected) if i not in parts]
            raise ValueError(f"{layer} is stacked from {list(names)}: {missing} not sent")
        layers[layer] = torch.cat([parts[i] for i in range(expected)]) if expected > 1 else parts[0]
    return layers


def load_linears(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor]) -> int:
    """Set the weights of `model`'s Linear layers (vLLM's module tree) from Hugging Face-named
    tensors; returns how many layers were set. Raises before changing anything when a name, a
    shape or a stacked layer's parts do not fit."""
    plan = []
    for name, weight in stacked(model, tensors).items():
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            raise KeyError(f"the engine's model has no layer {name}") from None
        layer = getattr(layer, "base_layer", layer)  # LoRA wraps the linear it adapts
        shape = (layer.output_size_per_partition, layer.input_size_per_partition)
        if getattr(layer, "tp_size", 1) != 1:
            raise ValueError(f"{name}: weights are set only on one tensor-parallel rank")
        if tuple(weight.shape) != shape:
            raise ValueError(f"{name}: weight of shape {tuple(weight.shape)}, the layer's {shape}")
        plan.append((name, layer, weight))
    for name, layer, weight in plan:
        set_layer_weight(name, layer, weight)
    return len(plan)


def set_layer_weight(name: str, layer: torch.nn.Module, weight: torch.Tensor) -> None:
    """One layer's weight replaced in place, however the platform holds it (module docstring)."""
    current = layer.weight
    weight = weight.to(current.device, current.dtype).contiguous()
    with torch.no_grad():
        if current.numel() == weight.numel():  # the weight itself is what the layer multiplies by
            current.data.copy_(weight.view_as(current))
            return
        kernel = getattr(layer, "cpu_linear", None)
        cells = [c.cell_contents for c in getattr(kernel, "__closure__", None) or ()]
        from vllm import _custom_ops as ops

        for cell in cells:
            if isinstance(cell, ops.CPUDNNLGEMMHandler):
                swap_onednn_handle(cell, weight)
                return
        raise NotImplementedError(
            f"{name}: this platform holds the weight in a form Lineage cannot replace in place "
            f'({kernel!r}); run the loop with [model] backend = "transformers"'
        )


def swap_onednn_handle(handle, weight: torch.Tensor) -> None:
    """Point `handle` (a vLLM `CPUDNNLGEMMHandler`) at a oneDNN matmul of `weight` (out, in)."""
    from vllm import _custom_ops as ops

    fresh = ops.create_onednn_mm(weight.t(), ONEDNN_CACHE)
    if (fresh.k, fresh.n) != (handle.k, handle.n):
        raise ValueError(f"new weight is {fresh.k}x{fresh.n}, the handle {handle.k}x{handle.n}")
    old = int(handle.handler_tensor.item())
    handle.handler_tensor.fill_(int(fresh.handler_tensor.item()))
    fresh.handler_tensor = None  # the handle now owns it; `fresh` must not free it
    handle.dtor(old)
