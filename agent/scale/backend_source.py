"""Where a policy replica gets its model: a `TransformersBackendConfig`, or any picklable
zero-argument factory returning a `TransformersBackend` (tests use `TinyBackendFactory`).

A factory, not a model, crosses the network: each replica loads its own copy where it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from agent.policy.tiny import TinyModelConfig
    from agent.policy.transformers_backend import TransformersBackend, TransformersBackendConfig

BackendSource = Union["TransformersBackendConfig", Callable[[], "TransformersBackend"]]


@dataclass(frozen=True)
class TinyBackendFactory:
    """The in-process tiny random Llama (`agent.policy.tiny`): same seed, same weights anywhere."""

    config: TinyModelConfig | None = None  # None: TinyModelConfig()

    def __call__(self) -> TransformersBackend:
        from agent.policy.tiny import tiny_model
        from agent.policy.transformers_backend import TransformersBackend

        return TransformersBackend(*tiny_model(self.config))


def build_backend(source: BackendSource) -> TransformersBackend:
    """Load the model a source describes, here (on whichever machine calls this)."""
    from agent.policy.transformers_backend import TransformersBackend, TransformersBackendConfig

    if isinstance(source, TransformersBackendConfig):
        return TransformersBackend.from_config(source)
    if callable(source):
        backend = source()
        if not isinstance(backend, TransformersBackend):
            raise TypeError(
                f"a backend factory must return a TransformersBackend, got {type(backend).__name__}"
            )
        return backend
    raise TypeError(
        "a policy source must be a TransformersBackendConfig or a factory returning a "
        f"TransformersBackend, got {type(source).__name__}"
    )
