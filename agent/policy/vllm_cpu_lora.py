"""vLLM's multi-LoRA on a CPU, as a few large matmuls: the ES population's fast path there.

vLLM's CPU punica ops gather every token's adapter matrices (a tokens x out x rank copy per layer
and slice, cast to fp32) and run them as batched vector products; and a token without an adapter
indexes slot -1, so once every slot holds an adapter it gets the last slot's. Measured with
`benchmarks/vllm_bench.py --reference-lora` (32 rank-1 members x 4 HumanEval prompts, 64 new
tokens, default model, 2 cores): vLLM's ops ran the population at 63.6 tok/s, these at 72.5, and
the same rows on an engine without LoRA at 85.6 (0.74x and 0.85x of it). With `max_lora_rank = 8`
(vLLM pads every adapter to it) vLLM's ops ran at 0.31x of plain rows (32 new tokens).

Here every slot's adapter is used at once, as in EGGROLL's shared-base batching:

    z = x @ A_all^T               (tokens x slots*rank: one matmul for all members and slices)
    y += (onehot * z) @ B_all     (tokens x slots*rank times slots*rank x out: one matmul per slice)

where `onehot` keeps each token's own slot (zero for tokens without an adapter). The extra work is
slots*rank / out of the base matmul per layer, a few percent for 32 rank-1 members, and no
per-token copy of any adapter.

vLLM loads it as a general plugin (entry point `vllm.general_plugins` in pyproject.toml), in every
process it starts, and it replaces only the CPU platform's punica wrapper; `VLLM_PLUGINS=` (empty)
turns it off, which is how `benchmarks/vllm_bench.py --reference-lora` measures vLLM's own ops.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

WRAPPER = "agent.policy.vllm_cpu_lora.SlotMatmulPunicaWrapper"


def register() -> None:
    """vLLM's plugin hook (in each of its processes): on the CPU platform, use
    `SlotMatmulPunicaWrapper` for LoRA layers and let waiting processes park instead of spinning
    (`agent/policy/vllm_spin.py`); in processes vLLM starts for Lineage, die with the parent
    (`agent/policy/vllm_process.py`)."""
    from vllm.platforms import cpu, current_platform

    from agent.policy.vllm_process import die_with_parent
    from agent.policy.vllm_spin import park_waiting_readers

    die_with_parent()

    cpu.CpuPlatform.get_punica_wrapper = classmethod(lambda cls: WRAPPER)  # type: ignore[method-assign]
    if current_platform.is_cpu():
        park_waiting_readers()


def slot_lora_linear(
    y: torch.Tensor,
    x: torch.Tensor,
    lora_a: tuple[torch.Tensor, ...],
    lora_b: tuple[torch.Tensor, ...],
    onehot: torch.Tensor,
    scale: float,
    output_slices: tuple[int, ...],
) -> None:
    """y[:, slice i] += scale * (x @ A_i[slot]^T) @ B_i[slot]^T for each token's slot, in place.

    Shapes as vLLM stacks them: x (T, in), y (T, sum(output_slices)), lora_a[i] (L, 1, R, in),
    lora_b[i] (L, 1, out_i, R); onehot (T, L) in y's dtype: token t's slot, or all zero."""
    tokens, slots = onehot.shape
    rank = lora_a[0].shape[-2]
    a_all = torch.cat([a.reshape(slots * rank, -1) for a in lora_a])  # one matmul for all slices
    z = torch.mm(x, a_all.t().to(x.dtype)).view(tokens, len(lora_a), slots, rank)
    keep = (onehot if scale == 1.0 else onehot * scale).to(z.dtype).unsqueeze(-1)  # (T, L, 1)
    offset = 0
    for index, (b, size) in enumerate(zip(lora_b, output_slices, strict=True)):
        b_all = b.reshape(slots, size, rank).transpose(1, 2).reshape(slots * rank, size)
        h = (z[:, index] * keep).reshape(tokens, slots * rank).to(y.dtype)
        y[:, offset : offset + size].addmm_(h, b_all.to(y.dtype))
        offset += size


class SlotMatmulPunicaWrapper(PunicaWrapperCPU):
    """vLLM's CPU punica wrapper with `add_lora_linear` as slot-wide matmuls (see the module);
    embeddings and logits keep vLLM's own ops (ES perturbs neither)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._any_adapter = False  # until the first step's mapping says otherwise
        self._onehot: dict[tuple[int, torch.dtype], torch.Tensor] = {}

    def update_metadata(self, mapping, lora_index_to_id, max_loras, vocab_size, **kwargs):
        super().update_metadata(mapping, lora_index_to_id, max_loras, vocab_size, **kwargs)
        self._any_adapter = bool((self.token_lora_indices >= 0).any())  # once per step
        self._onehot = {}

    def onehot(self, slots: int, dtype: torch.dtype) -> torch.Tensor:
        """(tokens, slots): row t marks token t's slot, all zero where it has no adapter."""
        cached = self._onehot.get((slots, dtype))
        if cached is None:
            indices = self.token_lora_indices
            padded = torch.zeros(indices.shape[0], slots + 1, dtype=dtype, device=indices.device)
            padded[torch.arange(indices.shape[0]), torch.where(indices >= 0, indices, slots)] = 1
            cached = self._onehot[(slots, dtype)] = padded[:, :slots]
        return cached

    def add_lora_linear(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        lora_a_stacked: tuple[torch.Tensor, ...],
        lora_b_stacked: tuple[torch.Tensor, ...],
        scale: float,
        output_slices: tuple[int, ...],
        *,
        buffer: tuple[torch.Tensor, ...] | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        flat_y = y.view(-1, y.shape[-1])
        flat_x = x.view(-1, x.shape[-1])
        if flat_x.shape[0] != self.token_lora_indices.shape[0]:  # not this step's tokens
            super().add_lora_linear(
                y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, buffer=buffer, **kwargs
            )
            return y
        if not kwargs.get("add_inputs", True):
            flat_y.zero_()
        if self._any_adapter:
            onehot = self.onehot(lora_a_stacked[0].shape[0], flat_y.dtype)
            slot_lora_linear(
                flat_y, flat_x, lora_a_stacked, lora_b_stacked, onehot, scale, output_slices
            )
        return y
