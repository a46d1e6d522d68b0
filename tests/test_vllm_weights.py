"""Setting Linear weights in a live vLLM model (`agent/policy/vllm_weights.py`) without an engine:
stacked layers take their parts complete and in order, a misfit changes nothing, a layer holding
its weight gets it copied, and a CPU layer packed into a oneDNN handle computes with the new
weight, bit for bit what a handle built from it computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from agent.policy.transformers_backend import cpu_has_native_bf16
from agent.policy.vllm_weights import load_linears, set_layer_weight, stacked, with_siblings


class Linear(nn.Module):
    """The attributes of a vLLM linear layer that `load_linears` reads."""

    def __init__(self, out_features: int, in_features: int) -> None:
        super().__init__()
        self.output_size_per_partition = out_features
        self.input_size_per_partition = in_features
        self.weight = nn.Parameter(torch.zeros(out_features, in_features), requires_grad=False)


class Block(nn.Module):
    packed_modules_mapping = {"qkv_proj": ["q_proj", "k_proj", "v_proj"]}

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.Module()
        self.attn.qkv_proj = Linear(8, 4)  # q 4 rows, k 2, v 2
        self.attn.o_proj = Linear(4, 4)


def parts() -> dict[str, torch.Tensor]:
    return {
        "attn.q_proj": torch.full((4, 4), 1.0),
        "attn.k_proj": torch.full((2, 4), 2.0),
        "attn.v_proj": torch.full((2, 4), 3.0),
    }


def test_siblings_of_a_stacked_part_are_sent_with_it() -> None:
    known = [
        "l.0.attn.q_proj",
        "l.0.attn.k_proj",
        "l.0.attn.v_proj",
        "l.0.attn.o_proj",
        "l.0.mlp.gate_proj",
        "l.0.mlp.up_proj",
        "l.0.mlp.down_proj",
        "l.1.attn.k_proj",
    ]
    assert with_siblings(["l.0.attn.k_proj", "l.0.mlp.down_proj"], known) == [
        "l.0.attn.q_proj",
        "l.0.attn.k_proj",
        "l.0.attn.v_proj",
        "l.0.mlp.down_proj",
    ]
    assert with_siblings(["l.0.mlp.up_proj"], known) == ["l.0.mlp.gate_proj", "l.0.mlp.up_proj"]


def test_stacked_parts_are_concatenated_in_order() -> None:
    layers = stacked(Block(), parts() | {"attn.o_proj": torch.ones(4, 4)})
    assert set(layers) == {"attn.qkv_proj", "attn.o_proj"}
    assert layers["attn.qkv_proj"][:, 0].tolist() == [1, 1, 1, 1, 2, 2, 3, 3]


def test_a_stacked_layer_missing_a_part_is_refused() -> None:
    incomplete = {k: v for k, v in parts().items() if k != "attn.v_proj"}
    with pytest.raises(ValueError, match=r"attn.qkv_proj is stacked .*\['v_proj'\] not sent"):
        stacked(Block(), incomplete)


def test_weights_are_copied_into_layers_that_hold_them() -> None:
    block = Block()
    assert load_linears(block, parts() | {"attn.o_proj": torch.eye(4)}) == 2
    assert block.attn.qkv_proj.weight[:, 0].tolist() == [1, 1, 1, 1, 2, 2, 3, 3]
    assert torch.equal(block.attn.o_proj.weight, torch.eye(4))


def test_a_misfit_changes_nothing() -> None:
    block = Block()
    with pytest.raises(ValueError, match=r"attn.o_proj: weight of shape \(4, 3\)"):
        load_linears(block, parts() | {"attn.o_proj": torch.ones(4, 3)})
    assert not block.attn.qkv_proj.weight.any()  # checked before anything was set
    with pytest.raises(KeyError, match="no layer attn.x_proj"):
        load_linears(block, {"attn.x_proj": torch.ones(4, 4)})


def test_a_onednn_packed_layer_computes_with_the_new_weight() -> None:
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e .[vllm])")
    from vllm import _custom_ops as ops

    if not ops._supports_onednn:
        pytest.skip("this vLLM build has no oneDNN matmul (not a CPU build)")
    # the dtype the engine computes in here: oneDNN has no bf16 matmul without native bf16
    dtype = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    gen = torch.Generator().manual_seed(0)
    old, new = (torch.randn(48, 32, generator=gen).to(dtype) for _ in range(2))
    x = torch.randn(5, 32, generator=gen).to(dtype)
    layer = Linear(48, 32)
    handle = ops.create_onednn_mm(old.t(), 32)  # as vLLM's CPU dispatch packs a loaded weight
    layer.cpu_linear = lambda x, weight, bias: ops.onednn_mm(handle, x, bias)
    layer.weight = nn.Parameter(torch.empty(0, dtype=dtype), requires_grad=False)
    before = layer.cpu_linear(x, None, None)

    set_layer_weight("layer", layer, new)
    after = layer.cpu_linear(x, None, None)
    reference = ops.onednn_mm(ops.create_onednn_mm(new.t(), 32), x, None)
    assert torch.equal(after, reference)
    assert not torch.equal(after, before)
    assert torch.allclose(after.float(), x.float() @ new.float().t(), atol=0.5, rtol=0.05)


def test_a_layer_whose_kernel_cannot_be_reached_is_refused() -> None:
    layer = Linear(4, 4)
    layer.weight = nn.Parameter(torch.empty(0), requires_grad=False)
    layer.cpu_linear = torch.nn.functional.linear  # no handle to swap
    with pytest.raises(NotImplementedError, match='backend = "transformers"'):
        set_layer_weight("layer", layer, torch.ones(4, 4))


def test_a_failed_weight_push_stops_the_run_as_a_dead_engine(monkeypatch) -> None:
    """A worker the kernel killed mid-run made `collective_rpc` fail with vLLM's "cancelled";
    the run must stop saying what happened (EngineDied, which `lineage run` reports with a
    resume hint), not with a traceback, and the temporary weights file must not stay behind."""
    from agent.policy import vllm_weights
    from agent.policy.backend import EngineDied
    from agent.policy.vllm_weights import push_weights

    written = []
    real_write = vllm_weights.write_weights
    monkeypatch.setattr(
        vllm_weights, "write_weights", lambda *a: written.append(real_write(*a)) or written[-1]
    )

    class DeadEngine:
        def collective_rpc(self, method, args=()):
            raise Exception("Call to collective_rpc method failed: cancelled")

    with pytest.raises(EngineDied, match="cancelled.*killed for memory"):
        push_weights(DeadEngine(), {"layer.weight": torch.zeros(2, 2)}, torch.float32)
    assert written and not written[0].exists()
