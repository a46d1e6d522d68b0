"""`LocalPolicy`: a `TransformersBackend` whose weights are set from ES record chains, and whose
population may be given as its seeds (`Population`) instead of its tensors.

It is the `local` executor's policy and, inside each Ray replica, the thing that generates; both
executors therefore run the same code on the same weights, which is why their outputs agree.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

from agent.es.chain_replayer import ChainReplayer
from agent.policy.backend import Generation, GenerationConfig

if TYPE_CHECKING:
    from agent.es.checkpoint import Checkpoint
    from agent.es.eggroll import Population
    from agent.es.record import EsRecord
    from agent.policy.lowrank import PopulationPerturbation
    from agent.policy.transformers_backend import TransformersBackend

# A population as tensors, or as the seeds that define them (a few hundred bytes).
PopulationLike = Union["PopulationPerturbation", "Population"]


def population_key(population: Population) -> str:
    """What defines a population's noise: step, ES config (seed, sigma, rank, ...), shapes."""
    return json.dumps(
        [population.step, population.config.to_dict(), sorted(population.shapes.items())]
    )


class LocalPolicy:
    """Generation with weights = base + a record chain, on this machine."""

    def __init__(self, backend: TransformersBackend) -> None:
        self.backend = backend
        self.weights = ChainReplayer(backend.model)
        self._population: tuple[str, PopulationPerturbation] | None = None

    def set_weights(
        self, records: Sequence[EsRecord | Mapping[str, Any]], checkpoint: Checkpoint | None = None
    ) -> int:
        """Weights become base + `records`, replayed here from their seeds, from `checkpoint`
        on where it can be read (else from the base); returns how many records were replayed.
        A backend whose engine holds its own copy (`VllmPolicy`) gets the result pushed."""
        replayed = self.weights.set(records, checkpoint)
        sync = getattr(self.backend, "sync", None)
        if sync is not None:
            sync(self.weights.loaded, list(self.weights.base))
        return replayed

    def generate(
        self,
        prompts: Sequence[str],
        config: GenerationConfig,
        perturbation: PopulationLike | None = None,
        member_of_row: Sequence[int] | None = None,
        on_done: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        """`PolicyBackend.generate`, where `perturbation` may also be a `Population`."""
        return self.backend.generate(
            prompts, config, self.tensors(perturbation), member_of_row, on_done
        )

    def tensors(self, perturbation: PopulationLike | None) -> PopulationPerturbation | None:
        """The perturbation's factors, rebuilt from seeds once per population (cached)."""
        from agent.es.eggroll import Population

        if not isinstance(perturbation, Population):
            return perturbation
        key = population_key(perturbation)
        if self._population is None or self._population[0] != key:
            self._population = (key, perturbation.perturbation)
        return self._population[1]

    def close(self) -> None:
        """Stop the backend's engine, if it has one (the `Executor` interface closes every
        policy)."""
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()
