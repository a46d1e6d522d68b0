"""The vLLM backend's pure parts, no engine needed: an ES member written as a PEFT LoRA adapter
is exactly its perturbation (lora_B @ lora_A * alpha / r == sigma * E_m), finish reasons map
like the transformers backend's, and bad configs are refused."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from agent.policy import assets
from agent.policy.lowrank import PopulationPerturbation
from agent.policy.vllm_backend import (
    VllmBackendConfig,
    available_memory,
    cpu_kv_cache_bytes,
    engine_args,
    finish_reason,
    write_adapter,
)


def perturbation(rank: int) -> PopulationPerturbation:
    gen = torch.Generator().manual_seed(0)
    shapes = {"model.layers.0.self_attn.q_proj": (6, 4), "model.layers.1.mlp.down_proj": (4, 10)}
    factors = {
        name: (torch.randn(3, out, rank, generator=gen), torch.randn(3, inp, rank, generator=gen))
        for name, (out, inp) in shapes.items()
    }
    return PopulationPerturbation(sigma=0.02, factors=factors)


@pytest.mark.parametrize("rank", [1, 4])
def test_adapter_equals_the_members_perturbation(tmp_path, rank: int) -> None:
    pert = perturbation(rank)
    write_adapter(pert, 2, tmp_path / "m2")
    config = json.loads((tmp_path / "m2" / "adapter_config.json").read_text())
    assert config["r"] == rank and config["lora_alpha"] == rank
    assert config["target_modules"] == ["down_proj", "q_proj"]
    tensors = load_file(tmp_path / "m2" / "adapter_model.safetensors")
    for name in pert.factors:
        lora_a = tensors[f"base_model.model.{name}.lora_A.weight"]  # (r, in)
        lora_b = tensors[f"base_model.model.{name}.lora_B.weight"]  # (out, r)
        scaling = config["lora_alpha"] / config["r"]
        torch.testing.assert_close(lora_b @ lora_a * scaling, pert.dense_delta(name, 2))


def test_modules_without_a_lora_form_are_refused(tmp_path) -> None:
    pert = PopulationPerturbation(
        sigma=0.1, factors={"lm_head": (torch.zeros(1, 4, 1), torch.zeros(1, 3, 1))}
    )
    with pytest.raises(ValueError, match="perturbs only"):
        write_adapter(pert, 0, tmp_path / "m0")


def test_finish_reasons() -> None:
    assert finish_reason("length", None) == "length"
    assert finish_reason("stop", "\ndef") == "stop"
    assert finish_reason("stop", None) == "eos"
    assert finish_reason("stop", 2) == "eos"  # a stop token id is an end-of-sequence token


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="max_lora_rank"):
        VllmBackendConfig(max_lora_rank=4)
    with pytest.raises(ValueError, match="dtype"):
        VllmBackendConfig(dtype="int8")
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        VllmBackendConfig(gpu_memory_utilization=1.5)
    with pytest.raises(ValueError, match="kv_cache_gib"):
        VllmBackendConfig(kv_cache_gib=0)


def test_a_cpu_engine_gets_a_kv_cache_that_fits_the_machine(monkeypatch) -> None:
    """vLLM's CPU default (a share of the memory node minus what the worker holds) is negative
    on a 14 GiB node and the engine refuses to start; the KV cache is sized explicitly instead."""
    gib = 2**30
    assert cpu_kv_cache_bytes(None, available=8 * gib) == int(0.3 * 8 * gib)
    assert cpu_kv_cache_bytes(None, available=1 * gib) == gib  # at least 1 GiB
    assert cpu_kv_cache_bytes(None, available=64 * gib) == 4 * gib  # at most 4 GiB
    assert cpu_kv_cache_bytes(2.5) == int(2.5 * gib)  # as asked
    assert available_memory() > 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(assets, "locate", lambda name: "/models/x")
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    args = engine_args(VllmBackendConfig(model="/models/x", dtype="float32", kv_cache_gib=1.5))
    assert args["kv_cache_memory_bytes"] == int(1.5 * gib)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")  # vLLM's own setting wins
    args = engine_args(VllmBackendConfig(model="/models/x", dtype="float32"))
    assert "kv_cache_memory_bytes" not in args
