"""Policy backends by name: what `[model] backend` and `lineage eval --backend` choose.

A backend is a builder `(BackendSpec) -> BuiltBackend` registered under a name with
`register_backend`, with a check saying why it cannot serve a spec on this machine. The run
(`agent/loop/policy.py`) and `lineage eval` build through `build_backend`; a config naming a
backend that is not registered is refused when it loads. Adding a backend is one module that
registers its builder, imported at the end of this one (so its name exists before any config is
read). The two built in are registered here; their engines are imported only when built:

- `transformers`: the reference backend; it generates with the very model ES moves.
- `vllm`: the vLLM engine generates (continuous batching; ES members as LoRA adapters). When ES
  moves the weights (`spec.weights`), a host-side transformers copy holds them (`VllmPolicy`)
  and is pushed into the running engine whenever they change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BackendSpec:
    """What a backend is built for.

    - `model`, `device`, `dtype`, `threads`, `seed`, `cpu_bind`: as `[model]` (and `seed`) say.
    - `population`, `rank`, `targets`: ES decodes `population` members in one batch, each a
      rank-`rank` perturbation of `targets` (population 0: no members, plain decoding only).
    - `weights`: ES moves the weights (a run); False: generation only (`lineage eval`).
    """

    model: str = "default"
    device: str = "auto"
    dtype: str = "auto"
    threads: int = 0
    seed: int = 0
    cpu_bind: str = "auto"
    population: int = 0
    rank: int = 1
    targets: tuple[str, ...] = ()
    weights: bool = True


@dataclass
class BuiltBackend:
    """`generator` generates (a `PolicyBackend`); `host` is the transformers model ES moves and
    whose tokenizer holds the chat template (the generator itself for transformers)."""

    generator: Any
    host: Any

    def close(self) -> None:
        getattr(self.generator, "close", lambda: None)()


Builder = Callable[[BackendSpec], BuiltBackend]
Check = Callable[[BackendSpec], str | None]


@dataclass(frozen=True)
class Registered:
    name: str
    build: Builder
    unusable: Check  # why it cannot serve a spec here (None: try it)


_BACKENDS: dict[str, Registered] = {}


def register_backend(
    name: str, *, unusable: Check = lambda spec: None
) -> Callable[[Builder], Builder]:
    """Register a builder under `name` (a name registered twice is a mistake, not an override)."""

    def add(build: Builder) -> Builder:
        if name in _BACKENDS or name == "auto":
            raise ValueError(f"backend {name!r} is already registered")
        _BACKENDS[name] = Registered(name, build, unusable)
        return build

    return add


def backend_names() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def registered(name: str) -> Registered:
    try:
        return _BACKENDS[name]
    except KeyError:
        known = ", ".join(backend_names())
        raise ValueError(f"unknown backend {name!r} (registered: {known})") from None


def unusable(name: str, spec: BackendSpec) -> str | None:
    """Why backend `name` cannot serve `spec` here (None: build it)."""
    return registered(name).unusable(spec)


def build_backend(name: str, spec: BackendSpec) -> BuiltBackend:
    return registered(name).build(spec)


# ---- the built-in backends ---------------------------------------------------------------------
@register_backend("transformers")
def _transformers(spec: BackendSpec) -> BuiltBackend:
    from agent.policy.transformers_backend import TransformersBackend, TransformersBackendConfig

    backend = TransformersBackend.from_config(
        TransformersBackendConfig(
            model=spec.model, device=spec.device, dtype=spec.dtype, threads=spec.threads
        )
    )
    return BuiltBackend(backend, backend)


def vllm_unusable(spec: BackendSpec) -> str | None:
    """Why vLLM cannot serve `spec` in this process (None: try it)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "is not installed (pip install -e .[vllm])"
    from agent.policy.vllm_backend import LORA_TARGETS

    odd = [t for t in spec.targets if t.rsplit(".", 1)[-1] not in LORA_TARGETS]
    if spec.population and odd:
        return f"runs ES members as LoRA adapters, which cannot perturb {odd[:3]}"
    import torch

    on_gpu, device = torch.cuda.is_available(), spec.device
    if device != "auto" and device not in (("cuda", "cuda:0") if on_gpu else ("cpu",)):
        return f"runs on the {'first GPU' if on_gpu else 'CPU'} here, not [model] device {device!r}"
    return None


def lora_rank(rank: int) -> int:
    """The smallest rank vLLM's LoRA accepts that holds an ES rank (adapters are padded to it)."""
    from agent.policy.vllm_backend import VLLM_LORA_RANKS

    fits = [r for r in VLLM_LORA_RANKS if r >= rank]
    if not fits:
        raise ValueError(
            f"[es] rank {rank} is above vLLM's largest LoRA rank {VLLM_LORA_RANKS[-1]}"
        )
    return fits[0]


def vllm_config(spec: BackendSpec):
    """The engine a spec needs: LoRA slots only for a population (LoRA-wrapped layers cost plain
    decoding too, and on a CPU vLLM then skips torch.compile); for a run (`weights`) the model's
    own context length (an agent's prompt may be long)."""
    from agent.policy.vllm_backend import VllmBackendConfig

    if not spec.weights:  # generation only: the engine's defaults
        return VllmBackendConfig(model=spec.model, dtype=spec.dtype)
    return VllmBackendConfig(
        model=spec.model,
        dtype=spec.dtype,
        max_model_len=None,
        enable_lora=spec.population > 0,
        max_loras=max(spec.population, 1),
        max_lora_rank=lora_rank(spec.rank) if spec.population else 1,
        seed=spec.seed,
        cpu_bind=spec.cpu_bind,
    )


@register_backend("vllm", unusable=vllm_unusable)
def _vllm(spec: BackendSpec) -> BuiltBackend:
    if not spec.weights:
        from agent.policy.vllm_backend import VllmBackend

        engine = VllmBackend.from_config(vllm_config(spec))
        return BuiltBackend(engine, engine)
    from agent.policy.vllm_policy import VllmPolicy

    policy = VllmPolicy.from_config(vllm_config(spec))
    return BuiltBackend(policy, policy.host)
