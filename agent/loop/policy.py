"""What a run generates with: `[model] backend`, a name registered in agent/policy/backends.py.

- `transformers`: one `TransformersBackend`; ES moves its own model's weights, the gateway drives it.
- `vllm`: a `VllmPolicy` (`agent/policy/vllm_policy.py`): the vLLM engine generates (continuous
  batching, ES members as LoRA adapters), a host-side copy of the model holds the weights ES sets,
  and `Runtime.set_weights` pushes them into the running engine.
- `auto` (the default): vLLM if it imports and its engine starts here, else transformers, with
  one line saying why. Naming a backend (vllm, or any other registered) fails instead of falling
  back.
- With `executor = "ray"` the replicas generate, each building the named backend through the
  same registry (`agent.scale.backend_source.RegisteredSource`: for vllm its own engine and host
  copy, the replayed weights pushed into it); `auto` keeps transformers replicas there (whether
  the nodes can run vLLM cannot be told from here).

The engine is built for the run (`agent.policy.backends.vllm_config`): LoRA slots for a whole
population only when the run makes ES steps, rank as ES's, and the model's own context length.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from agent.loop.config import RunConfig
from agent.policy.backends import (
    BackendSpec,
    BuiltBackend,
    build_backend,
    unusable,
)
from agent.policy.transformers_backend import TransformersBackend, TransformersBackendConfig

log = logging.getLogger(__name__)


@dataclass
class OpenedPolicy:
    """The generator (what the gateway drives locally), the model ES moves, which backend it is,
    and, on Ray, what each replica builds."""

    generator: object  # TransformersBackend or VllmPolicy
    host: TransformersBackend | None  # its `.model` is what ES moves (None: the generator's)
    kind: str  # "vllm" or "transformers"
    fallback: str | None = None  # why `auto` did not get vLLM
    replica_source: object = None  # executor = "ray": a RegisteredSource

    def __post_init__(self) -> None:
        if self.host is None:
            self.host = self.generator  # type: ignore[assignment]


def needs_population(config: RunConfig) -> bool:
    return config.operators.steps_weights


def backend_spec(config: RunConfig) -> BackendSpec:
    """What the run's backend is built for: `[model]`, and ES's population when it steps."""
    m = config.model
    population = config.es.population if needs_population(config) else 0
    return BackendSpec(
        model=m.name,
        device=m.device,
        dtype=m.dtype,
        threads=m.threads,
        seed=config.seed,
        cpu_bind=m.cpu_bind,
        population=population,
        rank=config.es.rank,
        targets=tuple(config.es.target_modules),
    )


def open_policy(config: RunConfig) -> OpenedPolicy:
    """Build the run's policy (see the module docstring)."""
    if config.executor == "ray":
        return ray_policy(config)
    name, spec = config.model.backend, backend_spec(config)
    if name != "auto":
        why = unusable(name, spec)
        if why is not None:
            raise ValueError(f'[model] backend = "{name}": {why}')
        return opened(name, build_backend(name, spec))
    why = unusable("vllm", spec)
    if why is None:
        try:
            return opened("vllm", build_backend("vllm", spec))
        except Exception as exc:
            why = f"its engine did not start: {type(exc).__name__}: {exc}"
    log.warning("generating with the transformers backend: vLLM %s", why)
    return opened("transformers", build_backend("transformers", spec), fallback=why)


def opened(kind: str, built: BuiltBackend, fallback: str | None = None) -> OpenedPolicy:
    return OpenedPolicy(built.generator, built.host, kind, fallback)


def ray_policy(config: RunConfig) -> OpenedPolicy:
    """On Ray the replicas generate, each building the registered backend where it runs
    (`replica_source`); this process keeps a host copy for ES. `auto` means transformers replicas:
    whether the cluster's nodes can run vLLM is not something this machine can tell."""
    from agent.scale.backend_source import RegisteredSource

    name, spec = config.model.backend, backend_spec(config)
    if name == "auto":
        why = 'replicas are built only when asked for ([model] backend = "vllm")'
        log.warning("generating with the transformers backend on Ray: vLLM %s", why)
        name = "transformers"
    elif name != "transformers":
        why = unusable(name, replace(spec, device="auto"))  # the replicas' machines, not this one
        if why is not None:
            raise ValueError(f'[model] backend = "{name}": {why}')
    source = RegisteredSource(name, spec)
    if name == "transformers":  # the host copy is the reference backend itself
        built = build_backend(name, spec)
        return OpenedPolicy(built.generator, built.host, name, replica_source=source)
    m = config.model
    host = TransformersBackend.from_config(
        TransformersBackendConfig(model=m.name, device="cpu", dtype=m.dtype)
    )
    return OpenedPolicy(host, host, name, replica_source=source)
