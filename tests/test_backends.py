"""Backends as plug-ins (agent/policy/backends.py): a name registered once is what `[model]
backend` and `lineage eval --backend` accept, and the run builds it through the registry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import typer

from agent.commands.eval import registered_backend
from agent.loop import policy as loop_policy
from agent.loop.config import ConfigError, from_dict
from agent.policy import backends
from agent.policy.backends import BackendSpec, BuiltBackend, register_backend


class EchoBackend:
    """Stands in for a third engine: records what it was built for."""

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec


@pytest.fixture
def echo() -> Iterator[list[BackendSpec]]:
    built: list[BackendSpec] = []

    def refuse_on_gpu(spec: BackendSpec) -> str | None:
        return "serves CPUs only" if spec.device.startswith("cuda") else None

    @register_backend("echo", unusable=refuse_on_gpu)
    def build(spec: BackendSpec) -> BuiltBackend:
        built.append(spec)
        engine = EchoBackend(spec)
        return BuiltBackend(engine, engine)

    try:
        yield built
    finally:
        del backends._BACKENDS["echo"]


def test_a_registered_backend_is_built_for_the_run(echo) -> None:
    config = from_dict(
        {"seed": 3, "model": {"name": "m", "backend": "echo", "threads": 2}}, "run.toml"
    )
    opened = loop_policy.open_policy(config)
    assert opened.kind == "echo" and isinstance(opened.generator, EchoBackend)
    assert opened.host is opened.generator and opened.fallback is None
    (spec,) = echo
    assert (spec.model, spec.threads, spec.seed, spec.weights) == ("m", 2, 3, True)
    assert spec.population == config.es.population and spec.rank == config.es.rank
    assert spec.targets == tuple(config.es.target_modules)


def test_a_backend_that_cannot_serve_says_why_and_builds_nothing(echo) -> None:
    config = from_dict({"model": {"backend": "echo", "device": "cuda:1"}}, "run.toml")
    with pytest.raises(ValueError, match='backend = "echo": serves CPUs only'):
        loop_policy.open_policy(config)
    assert echo == []


def test_ray_replicas_build_a_registered_backend_through_the_registry(echo, tiny_dir) -> None:
    from agent.policy.transformers_backend import TransformersBackend
    from agent.scale.backend_source import RegisteredSource, load_source

    class EchoWithModel(EchoBackend):  # a replica's backend must show ES its `.model`
        model = None

        def generate(self, prompts, config):  # pragma: no cover - never asked here
            raise AssertionError

    backends._BACKENDS["echo"] = backends.Registered(
        "echo", lambda spec: BuiltBackend(EchoWithModel(spec), None), lambda spec: None
    )
    on_ray = from_dict(
        {"model": {"name": str(tiny_dir), "backend": "echo"}, "executor": "ray"}, "run.toml"
    )
    opened = loop_policy.open_policy(on_ray)  # nothing is built here but the host copy
    assert opened.kind == "echo" and isinstance(opened.host, TransformersBackend)
    assert opened.replica_source == RegisteredSource("echo", loop_policy.backend_spec(on_ray))
    built = load_source(opened.replica_source)  # what each replica runs where it is placed
    assert isinstance(built, EchoWithModel) and built.spec.model == str(tiny_dir)


def test_names_are_checked_where_they_are_read(echo) -> None:
    assert registered_backend("echo") == "echo"
    with pytest.raises(typer.BadParameter, match="'tgi' is not one of transformers, vllm, echo"):
        registered_backend("tgi")
    with pytest.raises(ConfigError, match=r"\[model\] backend.*unknown backend 'tgi'"):
        from_dict({"model": {"backend": "tgi"}}, "run.toml")
    with pytest.raises(ValueError, match="already registered"):
        register_backend("echo")(lambda spec: BuiltBackend(None, None))
    with pytest.raises(ValueError, match="already registered"):
        register_backend("auto")(lambda spec: BuiltBackend(None, None))


def test_a_run_without_es_steps_gets_no_population() -> None:
    config = from_dict({"operators": {"es_step": 0.0, "scaffold_edit": 1.0}}, "run.toml")
    spec = loop_policy.backend_spec(config)
    assert spec.population == 0
    engine = backends.vllm_config(spec)
    assert not engine.enable_lora and engine.max_model_len is None  # a run: the model's own
    assert backends.vllm_config(BackendSpec(weights=False)).max_model_len == 4096  # eval's
