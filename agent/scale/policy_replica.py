"""The Ray actor holding one model replica: it loads the model where it runs, rebuilds weights
from ES records and populations from their seeds, and generates its share of the rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.es.checkpoint import Checkpoint
from agent.policy.backend import Generation, GenerationConfig
from agent.scale.backend_source import BackendSource, load_source
from agent.scale.local_policy import LocalPolicy, PopulationLike


class PolicyReplica:
    """One model copy (one GPU, or one node's CPUs) behind a `LocalPolicy`."""

    def __init__(self, source: BackendSource) -> None:
        import ray

        self.node_id = ray.get_runtime_context().get_node_id()
        self.policy = LocalPolicy(load_source(source))

    def ready(self) -> str:
        return self.node_id

    def set_weights(
        self, records: list[dict[str, Any]], checkpoint: Checkpoint | None = None
    ) -> int:
        return self.policy.set_weights(records, checkpoint)

    def generate(
        self,
        prompts: Sequence[str],
        config: GenerationConfig,
        perturbation: PopulationLike | None,
        member_of_row: Sequence[int] | None,
    ) -> list[Generation]:
        return self.policy.generate(prompts, config, perturbation, member_of_row)
