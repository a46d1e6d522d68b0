"""Where a policy replica gets its model: a `TransformersBackendConfig`, or any picklable
zero-argument factory returning a backend with a `.model` ES sets, such as `RegisteredSource` (a
backend registered in agent/policy/backends.py, built through the same `build_backend` as a local
run: `TransformersBackend`, or a vLLM engine with its host copy, `VllmPolicy`) or, in tests,
`TinyBackendFactory`.

A factory, not a model, crosses the network: each replica loads its own copy where it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from agent.policy.backends import BackendSpec
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


@dataclass(frozen=True)
class RegisteredSource:
    """Backend `name` of the registry built for `spec` where it runs (the replica's process
    imports the registry, so a plug-in must register on import, as the built-in ones do)."""

    name: str
    spec: BackendSpec

    def __call__(self):
        from agent.policy.backends import build_backend

        return build_backend(self.name, self.spec).generator


def load_source(source: BackendSource) -> TransformersBackend:
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
