"""The vLLM backend's pure parts, no engine needed: an ES member written as a PEFT LoRA adapter
is exactly its perturbation (lora_B @ lora_A * alpha / r == sigma * E_m), finish reasons map
like the transformers backend's, and bad configs are refused."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from agent.policy.lowrank import PopulationPerturbation
from agent.policy.vllm_backend import VllmBackendConfig, finish_reason, write_adapter


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
