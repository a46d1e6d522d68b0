"""Which backend a run generates with (`[model] backend`, agent/loop/policy.py), and how a vLLM
engine is kept at the loaded chain's weights (`VllmPolicy.sync`), with a fake engine: no vLLM
engine starts here (tests/test_vllm_loop.py starts a real one)."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging

import pytest
import torch

from agent.es.chain_replayer import ChainReplayer
from agent.es.config import DEFAULT_TARGETS, EsConfig
from agent.loop import policy as loop_policy
from agent.loop.config import ConfigError, from_dict
from agent.policy import backends
from agent.policy.backends import lora_rank
from agent.policy.cpu_bind import cpu_binding
from agent.policy.tiny import tiny_model
from agent.policy.transformers_backend import TransformersBackend
from agent.policy.vllm_policy import VllmPolicy


def config(tiny_dir, **model):
    return from_dict({"model": {"name": str(tiny_dir), **model}}, "test.toml")


def test_auto_without_vllm_falls_back_saying_why(tiny_dir, monkeypatch, caplog) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a)
    )
    with caplog.at_level(logging.WARNING):
        opened = loop_policy.open_policy(config(tiny_dir))
    assert opened.kind == "transformers"
    assert isinstance(opened.generator, TransformersBackend)
    assert opened.host is opened.generator
    assert opened.fallback == "is not installed (pip install -e .[vllm])"
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.loop.policy"]
    assert lines == [
        "generating with the transformers backend: vLLM is not installed (pip install -e .[vllm])"
    ]


def test_auto_falls_back_when_the_engine_does_not_start(tiny_dir, monkeypatch, caplog) -> None:
    def broken(spec):
        raise RuntimeError("no AVX-512 here")

    monkeypatch.setitem(
        backends._BACKENDS, "vllm", backends.Registered("vllm", broken, lambda s: None)
    )
    with caplog.at_level(logging.WARNING):
        opened = loop_policy.open_policy(config(tiny_dir))
    assert opened.kind == "transformers"
    assert opened.fallback == "its engine did not start: RuntimeError: no AVX-512 here"
    with pytest.raises(RuntimeError, match="no AVX-512"):
        loop_policy.open_policy(config(tiny_dir, backend="vllm"))  # asked for: no fallback


def test_on_ray_the_replicas_build_the_engine(tiny_dir, caplog) -> None:
    from agent.scale.backend_source import RegisteredSource

    def on_ray(backend: str):
        cfg = {"model": {"name": str(tiny_dir), "backend": backend}, "executor": "ray"}
        return loop_policy.open_policy(from_dict(cfg, "test.toml"))

    with caplog.at_level(logging.WARNING):
        auto = on_ray("auto")
    assert auto.kind == "transformers"
    spec = loop_policy.backend_spec(config(tiny_dir))
    assert auto.replica_source == RegisteredSource("transformers", spec)
    assert "vLLM replicas are built only when asked for" in caplog.text
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ValueError, match='backend = "vllm": is not installed'):
            on_ray("vllm")
        return
    asked = on_ray("vllm")  # nothing starts here: each replica builds its engine
    assert asked.kind == "vllm"
    assert asked.replica_source == RegisteredSource("vllm", spec)
    assert asked.host is asked.generator and isinstance(asked.host, TransformersBackend)


def test_vllm_asked_for_where_lora_cannot_perturb_is_an_error(tiny_dir) -> None:
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e .[vllm])")
    odd = from_dict(
        {
            "model": {"name": str(tiny_dir), "backend": "vllm"},
            "es": {"target_modules": ["lm_head"]},
        },
        "test.toml",
    )
    with pytest.raises(ValueError, match="LoRA adapters, which cannot perturb"):
        loop_policy.open_policy(odd)


def test_transformers_asked_for_is_the_reference_backend(tiny_dir) -> None:
    opened = loop_policy.open_policy(config(tiny_dir, backend="transformers"))
    assert (opened.kind, opened.fallback) == ("transformers", None)


def test_model_section_is_validated(tiny_dir) -> None:
    with pytest.raises(ConfigError, match=r"\[model\] backend"):
        config(tiny_dir, backend="tensorrt")
    with pytest.raises(ConfigError, match=r"\[model\] cpu_bind: .*must be auto, all, nobind"):
        config(tiny_dir, cpu_bind="both")
    assert config(tiny_dir, cpu_bind="0-1").model.cpu_bind == "0-1"


def test_cpu_binding_environment() -> None:
    import os

    assert cpu_binding("auto") == {}
    cores = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    assert cpu_binding("all") == {
        "VLLM_CPU_OMP_THREADS_BIND": cores,
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    }
    assert cpu_binding("1")["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    assert cpu_binding("nobind")["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    with pytest.raises(ValueError):
        cpu_binding("0-")


def test_lora_rank_holds_the_es_rank() -> None:
    assert [lora_rank(r) for r in (1, 2, 8, 9)] == [1, 8, 8, 16]
    with pytest.raises(ValueError, match="largest LoRA rank"):
        lora_rank(1000)


class FakeEngine:
    """Records what `VllmPolicy.sync` pushes (names and values)."""

    def __init__(self) -> None:
        self.pushed: list[dict[str, torch.Tensor]] = []

    def set_weights(self, tensors):
        self.pushed.append({k: v.clone() for k, v in tensors.items()})
        return len(tensors)

    def generate(self, *args):
        raise AssertionError("not generating here")

    open_stream = generate


def test_sync_pushes_the_host_weights_only_when_the_chain_changes() -> None:
    model, tokenizer = tiny_model()
    host = TransformersBackend(model, tokenizer)
    engine = FakeEngine()
    policy = VllmPolicy(engine, host)  # type: ignore[arg-type]
    chain = ChainReplayer(model, ["q_proj", "down_proj"])  # k/v travel with q: vLLM stacks them
    ran: list[str] = []

    def run(fn):
        ran.append("exclusive")
        return fn()

    def sync() -> bool:
        return policy.sync(chain.loaded, list(chain.base), run)

    chain.set([])
    assert not sync()  # the engine starts at the base
    targets = ("q_proj", "down_proj")
    es = chain.strategy(
        EsConfig(population=4, sigma=0.01, alpha=0.01, seed=1, target_modules=targets), step=1
    )
    population = es.ask()
    record = es.tell(population, [1.0, 0.0, 0.3, 0.2])
    assert sync() and ran == ["exclusive"]
    (pushed,) = engine.pushed
    assert set(pushed) == {
        f"model.layers.{i}.{m}"
        for i in range(2)
        for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.down_proj")
    }
    for name, tensor in pushed.items():
        assert torch.equal(tensor, model.get_submodule(name).weight)
    assert not sync()  # the engine holds this chain now
    chain.set([])  # back to the base: pushed again, the base's values
    assert sync()
    base_model, _ = tiny_model()
    for name, tensor in engine.pushed[-1].items():
        assert torch.equal(tensor, base_model.get_submodule(name).weight)
    chain.set([dataclasses.asdict(record)])  # the node again, replayed
    assert sync()
    for name, tensor in engine.pushed[-1].items():
        assert torch.equal(tensor, pushed[name])
    assert policy.pushes == 3


def test_default_targets_are_what_vllm_lora_perturbs() -> None:
    from agent.policy.vllm_backend import LORA_TARGETS

    assert set(DEFAULT_TARGETS) <= set(LORA_TARGETS)
