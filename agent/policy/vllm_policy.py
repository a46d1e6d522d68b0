"""A run's policy on vLLM: the engine generates, a host-side copy of the model holds the weights.

ES moves weights on the fp32 master in host memory (`agent.es.chain_replayer.ChainReplayer`, the
same code as on the transformers backend), which writes each moved module, rounded to the
model's dtype, into a host-side transformers copy of the model (`host`). `sync` then hands the
engine the host copy's targeted Linear weights (`VllmBackend.set_weights`) whenever the loaded
chain differs from the one the engine holds: the engine is never restarted, and what it computes
with is bit for bit what `lineage export` of that node would load.

The host copy costs the model's size in host memory once more (1 GB for the default model in
bf16); generation never runs on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from agent.policy.vllm_weights import with_siblings

if TYPE_CHECKING:
    from agent.policy.transformers_backend import TransformersBackend
    from agent.policy.vllm_backend import VllmBackend, VllmBackendConfig


class VllmPolicy:
    """`engine` generates (`generate`, `open_stream`); `model` and `tokenizer` are the host copy's
    (what ES and the chat template use). See the module docstring."""

    def __init__(self, engine: VllmBackend, host: TransformersBackend) -> None:
        self.engine = engine
        self.host = host
        self.model = host.model
        self.tokenizer = host.tokenizer
        self._linears = [n for n, m in self.model.named_modules() if isinstance(m, torch.nn.Linear)]
        self._in_engine: list[str] | None = []  # the chain the engine holds: the base
        self.pushes = 0
        self.push_s = 0.0
        # Generation is the engine's: `PolicyBackend.generate`, and the gateway's stream.
        self.generate = engine.generate
        self.open_stream = engine.open_stream

    @classmethod
    def from_config(cls, config: VllmBackendConfig) -> VllmPolicy:
        """The engine, then its host copy in the engine's dtype, on the CPU (call under
        `if __name__ == "__main__":`, as for `VllmBackend`)."""
        from agent.policy.transformers_backend import TransformersBackend, TransformersBackendConfig
        from agent.policy.vllm_backend import VllmBackend

        engine = VllmBackend.from_config(config)
        try:
            dtype = str(engine.dtype).removeprefix("torch.")
            host = TransformersBackend.from_config(
                TransformersBackendConfig(model=config.model, device="cpu", dtype=dtype)
            )
        except BaseException:
            engine.close()
            raise
        return cls(engine, host)

    def close(self) -> None:
        self.engine.close()

    def sync(
        self,
        loaded: Sequence[str] | None,
        modules: Iterable[str],
        run: Callable[[Callable[[], Any]], Any] = lambda fn: fn(),
    ) -> bool:
        """Give the engine the host copy's weights of `modules` (and their stacked siblings) if
        `loaded` (the host's chain, as `ChainReplayer.loaded`; None = unknown) is not the chain the
        engine holds. `run` executes the push where the engine may be touched (the gateway's
        worker: `Gateway.run_exclusive`). Returns whether it pushed."""
        if loaded is not None and list(loaded) == self._in_engine:
            return False
        names = with_siblings(modules, self._linears)
        tensors = {n: self.model.get_submodule(n).weight.detach() for n in names}
        started = time.perf_counter()
        self._in_engine = None  # unknown until the push is done
        run(lambda: self.engine.set_weights(tensors))
        self._in_engine = None if loaded is None else list(loaded)
        self.pushes += 1
        self.push_s += time.perf_counter() - started
        return True
