"""Where a policy replica gets its model: a `TransformersBackendConfig`, or any picklable
zero-argument factory returning a backend with a `.model` ES sets (`TransformersBackend`; tests
use `TinyBackendFactory`), such as `VllmSource` (a vLLM engine and its host copy, `VllmPolicy`).

A factory, not a model, crosses the network: each replica loads its own copy where it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from agent.policy.tiny import TinyModelConfig
    from agent.policy.transformers_backend import TransformersBackend, TransformersBackendConfig
    from agent.policy.vllm_backend import VllmBackendConfig
    from agent.policy.vllm_policy import VllmPolicy

BackendSource = Union["TransformersBackendConfig", Callable[[], "TransformersBackend"]]


@dataclass(frozen=True)
class TinyBackendFactory:
    """The in-process tiny random Llama (`agent.policy.tiny`): same seed, same weights anywhere."""

    config: TinyModelConfig | None = None  # None: TinyModelConfig()

    def __call__(self) -> TransformersBackend:
        from agent.policy.tiny import tiny_model
        from agent.policy.transformers_backend import TransformersBackend

        return TransformersBackend(*tiny_model(self.config))


@dataclass(frozen=True)
class VllmSource:
    """A vLLM engine of `config` with its host-side copy of the model, built where it runs."""

    config: VllmBackendConfig

    def __call__(self) -> VllmPolicy:
        from agent.policy.vllm_policy import VllmPolicy

        return VllmPolicy.from_config(self.config)


def build_backend(source: BackendSource) -> TransformersBackend:
    """Load the model a source describes, here (on whichever machine calls this)."""
    from agent.policy.transformers_backend import TransformersBackend, TransformersBackendConfig

    if isinstance(source, TransformersBackendConfig):
        return TransformersBackend.from_config(source)
    if callable(source):
        backend = source()
        if not (hasattr(backend, "model") and callable(getattr(backend, "generate", None))):
            raise TypeError(
                "a backend factory must return a backend with a .model and generate() (a "
                f"TransformersBackend, a VllmPolicy), got {type(backend).__name__}"
            )
        return backend
    raise TypeError(
        "a policy source must be a TransformersBackendConfig or a factory returning a "
        f"TransformersBackend, got {type(source).__name__}"
    )
