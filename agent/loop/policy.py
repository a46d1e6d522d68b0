"""What a run generates with: `[model] backend`, vLLM where it is installed and starts.

- `transformers`: one `TransformersBackend`; ES moves its own model's weights, the gateway drives it.
- `vllm`: a `VllmPolicy` (`agent/policy/vllm_policy.py`): the vLLM engine generates (continuous
  batching, ES members as LoRA adapters), a host-side copy of the model holds the weights ES sets,
  and `Runtime.set_weights` pushes them into the running engine.
- `auto` (the default): vLLM if it imports and its engine starts here, else transformers, with
  one line saying why. Asking for `vllm` explicitly fails instead of falling back.

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
    """The generator (what the gateway drives), the model ES moves, and which backend it is."""

    generator: object  # TransformersBackend or VllmPolicy
    host: TransformersBackend  # its `.model` is what ES moves; its tokenizer renders chats
    kind: str  # "vllm" or "transformers"
    fallback: str | None = None  # why `auto` did not get vLLM


def needs_population(config: RunConfig) -> bool:
    o = config.operators
    return o.es_step > 0 or o.both > 0


def lora_rank(rank: int) -> int:
    """The smallest rank vLLM's LoRA accepts that holds an ES rank (adapters are padded to it)."""
    from agent.policy.vllm_backend import VLLM_LORA_RANKS

    fits = [r for r in VLLM_LORA_RANKS if r >= rank]
    if not fits:
        raise ValueError(
            f"[es] rank {rank} is above vLLM's largest LoRA rank {VLLM_LORA_RANKS[-1]}"
        )
    return fits[0]


def open_vllm(config: RunConfig):
    """The engine and its host copy (the engine first: the copy takes its dtype)."""
    from agent.policy.vllm_backend import VllmBackend, VllmBackendConfig
    from agent.policy.vllm_policy import VllmPolicy

    m = config.model
    population = needs_population(config)
    engine = VllmBackend.from_config(
        VllmBackendConfig(
            model=m.name,
            dtype=m.dtype,
            max_model_len=None,
            enable_lora=population,
            max_loras=config.es.population,
            max_lora_rank=lora_rank(config.es.rank) if population else 1,
            seed=config.seed,
            cpu_bind=m.cpu_bind,
        )
    )
    dtype = str(engine.dtype).removeprefix("torch.")
    host = TransformersBackend.from_config(
        TransformersBackendConfig(model=m.name, device="cpu", dtype=dtype)
    )
    return VllmPolicy(engine, host)


def open_policy(config: RunConfig) -> OpenedPolicy:
    """Build the run's policy (see the module docstring)."""
    m = config.model
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
    backend = TransformersBackend.from_config(
        TransformersBackendConfig(model=m.name, device=m.device, dtype=m.dtype, threads=m.threads)
    )
    return OpenedPolicy(
        backend, backend, "transformers", None if m.backend == "transformers" else why
    )


def vllm_unusable(config: RunConfig) -> str | None:
    """Why vLLM cannot serve this run (None: try it)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "is not installed (pip install -e .[vllm])"
    if config.executor == "ray":
        return 'does not run the Ray replicas yet (executor = "ray")'
    from agent.policy.vllm_backend import LORA_TARGETS

    odd = [t for t in config.es.target_modules if t.rsplit(".", 1)[-1] not in LORA_TARGETS]
    if needs_population(config) and odd:
        return f"runs ES members as LoRA adapters, which cannot perturb {odd[:3]}"
    import torch

    on_gpu, device = torch.cuda.is_available(), config.model.device
    if device != "auto" and device not in (("cuda", "cuda:0") if on_gpu else ("cpu",)):
        return f"runs on the {'first GPU' if on_gpu else 'CPU'} here, not [model] device {device!r}"
    return None
