"""The CPU multi-LoRA plugin computes what vLLM's own CPU ops compute: each token's adapter, on
prefill and decode steps, over merged slices (q/k/v), with tokens without an adapter left
untouched; and it is what vLLM picks on a CPU once the plugin is registered."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e .[vllm])")

from vllm.lora.layers.utils import LoRAMapping  # noqa: E402
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU  # noqa: E402

from agent.policy.vllm_cpu_lora import (  # noqa: E402
    WRAPPER,
    SlotMatmulPunicaWrapper,
    register,
    slot_lora_linear,
)

SLOTS, IN_FEATURES, SLICES = 4, 24, (16, 8, 8)  # a merged q/k/v projection


def stacked(rank: int, dtype: torch.dtype, empty_last_slot: bool):
    """Adapters as vLLM stacks them, (L, 1, R, in) and (L, 1, out, R) per slice."""
    gen = torch.Generator().manual_seed(0)
    a = tuple(torch.randn(SLOTS, 1, rank, IN_FEATURES, generator=gen) for _ in SLICES)
    b = tuple(torch.randn(SLOTS, 1, size, rank, generator=gen) for size in SLICES)
    if empty_last_slot:
        for t in (*a, *b):
            t[-1] = 0
    return tuple(t.to(dtype) for t in a), tuple(t.to(dtype) for t in b)


def dense_reference(y, x, a, b, slot_of_token, scale):
    """Token by token, in float64: y + scale * (x A^T) B^T with the token's own slot."""
    out = y.double().clone()
    offset = 0
    for i, size in enumerate(SLICES):
        for t, slot in enumerate(slot_of_token):
            if slot >= 0:
                delta = (x[t].double() @ a[i][slot, 0].double().T) @ b[i][slot, 0].double().T
                out[t, offset : offset + size] += scale * delta
        offset += size
    return out


@pytest.mark.parametrize("rank", [1, 2])
def test_slot_matmul_equals_each_tokens_own_adapter(rank: int) -> None:
    a, b = stacked(rank, torch.float32, empty_last_slot=False)  # every slot holds an adapter
    slot_of_token = [0, 2, -1, 1, 1, -1, 0, 3, 3]
    x = torch.randn(len(slot_of_token), IN_FEATURES, generator=torch.Generator().manual_seed(1))
    y = torch.randn(len(slot_of_token), sum(SLICES), generator=torch.Generator().manual_seed(2))
    onehot = torch.zeros(len(slot_of_token), SLOTS)
    for t, slot in enumerate(slot_of_token):
        if slot >= 0:
            onehot[t, slot] = 1
    got = y.clone()
    slot_lora_linear(got, x, a, b, onehot, 0.5, SLICES)
    expected = dense_reference(y, x, a, b, slot_of_token, 0.5)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)
    no_adapter = [t for t, slot in enumerate(slot_of_token) if slot < 0]
    assert torch.equal(got[no_adapter], y[no_adapter])  # untouched, bit for bit


def wrappers(index_mapping: list[int], is_prefill: bool):
    """vLLM's CPU wrapper and ours, given the same step: slot s holds LoRA id s + 1."""
    mapping = LoRAMapping(tuple(index_mapping), tuple(index_mapping), is_prefill=is_prefill)
    lora_index_to_id = [s + 1 for s in range(SLOTS - 1)] + [None]
    made = []
    for cls in (PunicaWrapperCPU, SlotMatmulPunicaWrapper):
        wrapper = cls(max_num_batched_tokens=64, max_batches=16, device="cpu")
        wrapper.update_metadata(mapping, lora_index_to_id, SLOTS, vocab_size=100)
        made.append(wrapper)
    return made


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "index_mapping, is_prefill",
    [
        ([1, 1, 1, 2, 2, 0, 0, 3, 3, 3], True),  # three prompts with adapters, one without
        ([2, 0, 1, 3, 1], False),  # one token per sequence
        ([0, 0, 0], False),  # no adapter at all: nothing added
    ],
)
def test_same_as_vllms_cpu_ops(index_mapping, is_prefill, dtype) -> None:
    theirs, ours = wrappers(index_mapping, is_prefill)
    assert torch.equal(theirs.token_lora_indices, ours.token_lora_indices)
    # vLLM's torch ops index slot -1 for tokens without an adapter, i.e. the last slot: keep it
    # empty here (ours masks those tokens instead; the test above fills every slot).
    a, b = stacked(1, dtype, empty_last_slot=True)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(len(index_mapping), IN_FEATURES, generator=gen).to(dtype)
    y = torch.randn(len(index_mapping), sum(SLICES), generator=gen).to(dtype)
    expected, got = y.clone(), y.clone()
    theirs.add_lora_linear(expected, x, a, b, 1.0, SLICES)
    ours.add_lora_linear(got, x, a, b, 1.0, SLICES)
    tolerance = (
        {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 0.1, "rtol": 0.02}
    )
    torch.testing.assert_close(got, expected, **tolerance)
    no_adapter = [t for t, lora_id in enumerate(index_mapping) if lora_id == 0]
    assert torch.equal(got[no_adapter], y[no_adapter])
    if any(index_mapping):
        assert not torch.equal(got, y)  # the comparison means something only if LoRA added


def test_registered_on_the_cpu_platform() -> None:
    from vllm.platforms import cpu

    before = cpu.CpuPlatform.get_punica_wrapper
    try:
        register()
        assert cpu.CpuPlatform.get_punica_wrapper() == WRAPPER
    finally:
        cpu.CpuPlatform.get_punica_wrapper = before
