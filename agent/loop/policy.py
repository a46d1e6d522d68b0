"""What a run generates with: `[model] backend`, vLLM where it is installed and starts.

- `transformers`: one `TransformersBackend`; ES moves its own model's weights, the gateway drives it.
- `vllm`: a `VllmPolicy` (`agent/policy/vllm_policy.py`): the vLLM engine generates (continuous
  batching, ES members as LoRA adapters), a host-side copy of the model holds the weights ES sets,
  and `Runtime.set_weights` pushes them into the running engine.
- `auto` (the default): vLLM if it imports and its engine starts here, else transformers, with
  one line saying why. Asking for `vllm` explicitly fails instead of falling back.
- With `executor = "ray"` the replicas generate, each building its own engine and host copy
  (`agent.scale.backend_source.VllmSource`) and pushing the replayed weights into it; `auto`
  keeps transformers replicas there (whether the nodes can run vLLM cannot be told from here).

The engine is built for the run: LoRA slots for a whole population (only when the run makes ES
steps: LoRA-wrapped layers cost plain decoding too, and on a CPU vLLM then skips torch.compile),
rank as ES's, and the model's own context length (an agent's prompt may be long).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from agent.loop.config import RunConfig
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
    replica_source: object = None  # executor = "ray": a BackendSource

    def __post_init__(self) -> None:
        if self.host is None:
            self.host = self.generator  # type: ignore[assignment]


def needs_population(config: RunConfig) -> bool:
    return config.operators.steps_weights


def lora_rank(rank: int) -> int:
    """The smallest rank vLLM's LoRA accepts that holds an ES rank (adapters are padded to it)."""
    from agent.policy.vllm_backend import VLLM_LORA_RANKS

    fits = [r for r in VLLM_LORA_RANKS if r >= rank]
    if not fits:
        raise ValueError(
            f"[es] rank {rank} is above vLLM's largest LoRA rank {VLLM_LORA_RANKS[-1]}"
        )
    return fits[0]


def engine_config(config: RunConfig):
    """The vLLM engine a run needs (see the module docstring)."""
    from agent.policy.vllm_backend import VllmBackendConfig

    m = config.model
    population = needs_population(config)
    return VllmBackendConfig(
        model=m.name,
        dtype=m.dtype,
        max_model_len=None,
        enable_lora=population,
        max_loras=config.es.population,
        max_lora_rank=lora_rank(config.es.rank) if population else 1,
        seed=config.seed,
        cpu_bind=m.cpu_bind,
    )


def open_vllm(config: RunConfig):
    """The run's engine and its host copy."""
    from agent.policy.vllm_policy import VllmPolicy

    return VllmPolicy.from_config(engine_config(config))


def open_policy(config: RunConfig) -> OpenedPolicy:
    """Build the run's policy (see the module docstring)."""
    m = config.model
    if config.executor == "ray":
        return ray_policy(config)
    if m.backend != "transformers":
        why = vllm_unusable(config)
        if why is None:
            try:
                policy = open_vllm(config)
                return OpenedPolicy(policy, policy.host, "vllm")
            except Exception as exc:
                if m.backend == "vllm":
                    raise
                why = f"its engine did not start: {type(exc).__name__}: {exc}"
        elif m.backend == "vllm":
            raise ValueError(f'[model] backend = "vllm": {why}')
        log.warning("generating with the transformers backend: vLLM %s", why)
    backend = TransformersBackend.from_config(transformers_config(config))
    return OpenedPolicy(
        backend, backend, "transformers", None if m.backend == "transformers" else why
    )


def ray_policy(config: RunConfig) -> OpenedPolicy:
    """On Ray the replicas generate (`replica_source` is what each one builds); this process
    keeps a host copy for ES. vLLM replicas only when asked for: whether the cluster's nodes can
    run vLLM is not something this machine can tell."""
    from agent.scale.backend_source import VllmSource

    m = config.model
    if m.backend == "vllm":
        why = vllm_unusable(config)
        if why is not None:
            raise ValueError(f'[model] backend = "vllm": {why}')
        host = TransformersBackend.from_config(
            TransformersBackendConfig(model=m.name, device="cpu", dtype=m.dtype)
        )
        return OpenedPolicy(host, host, "vllm", replica_source=VllmSource(engine_config(config)))
    source = transformers_config(config)
    if m.backend == "auto":
        why = 'replicas are built only when asked for ([model] backend = "vllm")'
        log.warning("generating with the transformers backend on Ray: vLLM %s", why)
    return OpenedPolicy(
        TransformersBackend.from_config(source), None, "transformers", replica_source=source
    )


def transformers_config(config: RunConfig) -> TransformersBackendConfig:
    m = config.model
    return TransformersBackendConfig(
        model=m.name, device=m.device, dtype=m.dtype, threads=m.threads
    )


def vllm_unusable(config: RunConfig) -> str | None:
    """Why vLLM cannot serve this run (None: try it)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "is not installed (pip install -e .[vllm])"
    from agent.policy.vllm_backend import LORA_TARGETS

    odd = [t for t in config.es.target_modules if t.rsplit(".", 1)[-1] not in LORA_TARGETS]
    if needs_population(config) and odd:
        return f"runs ES members as LoRA adapters, which cannot perturb {odd[:3]}"
    if config.executor == "ray":
        return None  # the replicas run where Ray places them
    import torch

    on_gpu, device = torch.cuda.is_available(), config.model.device
    if device != "auto" and device not in (("cuda", "cuda:0") if on_gpu else ("cpu",)):
        return f"runs on the {'first GPU' if on_gpu else 'CPU'} here, not [model] device {device!r}"
    return None
