"""Decoding-sized matmuls on a CPU through oneDNN instead of torch's default GEMM.

A decoding step multiplies a few dozen rows by every weight matrix. For that shape torch's fp32
`F.linear` runs far below the machine's speed, and the biggest weights lose the most: measured
here (2 AVX2 cores, fp32, Qwen2.5-0.5B shapes), the 896 x 151936 output projection takes 128 ms
for 24 rows through `F.linear` and 75 ms through oneDNN's linear; the 896 x 4864 MLP weights
2.9 ms against 2.3 ms. Beyond ~64 rows (prefill) `F.linear` is as fast or faster, and on small
weights (key/value projections, 896 x 128) oneDNN's call overhead loses, so only large weights
in small batches switch. The weight is read at each call, so in-place weight updates (ES steps)
are always seen; results differ from `F.linear` only in summation order (~1e-6 relative).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import MethodType

import torch
import torch.nn.functional as F
from torch import nn

# Where oneDNN won in the measurements above; elsewhere `F.linear` stays.
MAX_ROWS = 64
MIN_WEIGHT_ENTRIES = 4_000_000


def available() -> bool:
    """oneDNN's linear is an internal op of torch's CPU build (inductor uses it); without it the
    default path stays."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _forward(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    rows = x.numel() // x.shape[-1]
    if rows > MAX_ROWS or torch.is_grad_enabled():  # the op has no backward
        return F.linear(x, module.weight, module.bias)
    return onednn_linear(x, module.weight, module.bias)


def _switches(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Linear)
        and module.weight.device.type == "cpu"
        and module.weight.dtype == torch.float32
        and module.weight.numel() >= MIN_WEIGHT_ENTRIES
        and "forward" not in vars(module)  # already switched, or someone else's override
    )


@contextmanager
def onednn_linears(model: nn.Module) -> Iterator[int]:
    """Large fp32 CPU Linear layers use oneDNN for small batches within the block; yields how
    many layers switched. Enter it before `lowrank.perturbed`, whose layers then wrap this
    forward (a layer whose forward is already overridden is left as it is)."""
    switched = [m for m in model.modules() if _switches(m)] if available() else []
    for module in switched:
        module.forward = MethodType(_forward, module)
    try:
        yield len(switched)
    finally:
        for module in switched:
            del module.forward
