"""Where the loop's work runs: `local` (this machine) or `ray` (a cluster), behind one interface.

    executor = make_executor("ray", address="head:6379", replicas=4)
    with executor.job_runner() as runner:        # JobRunner: evaluators.score(..., runner)
        ...
    policy = executor.policy(TransformersBackendConfig(model="default"))
    policy.set_weights(node_records, checkpoint) # ES records (and where replay may start)
    policy.generate(prompts, config, population, member_of_row)

Both kinds run the same code underneath (`SandboxPool`, `LocalPolicy`), so the same seeds give the
same verdicts and, greedy, the same generations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from agent.es.checkpoint import Checkpoint
from agent.policy.backend import Generation, GenerationConfig
from agent.scale.backend_source import BackendSource
from agent.scale.local_policy import PopulationLike
from sandbox import SandboxConfig
from sandbox.job import JobRunner

ExecutorKind = Literal["local", "ray"]
KINDS: tuple[str, ...] = ("local", "ray")


class ChainPolicy(Protocol):
    """A policy whose weights are set from ES records (both `LocalPolicy` and `RayPolicy`);
    `set_weights` returns how many records were replayed (per replica, for Ray)."""

    def set_weights(
        self, records: Sequence[Any | Mapping[str, Any]], checkpoint: Checkpoint | None = None
    ) -> Any: ...

    def generate(
        self,
        prompts: Sequence[str],
        config: GenerationConfig,
        perturbation: PopulationLike | None = None,
        member_of_row: Sequence[int] | None = None,
        on_done: Callable[[int], None] | None = None,
    ) -> list[Generation]: ...

    def close(self) -> None: ...


class Executor(Protocol):
    kind: str

    def job_runner(self) -> AbstractContextManager[JobRunner]:
        """A runner to use as `with executor.job_runner() as runner:` (started on entry)."""
        ...

    def policy(self, source: BackendSource) -> ChainPolicy: ...


@dataclass(frozen=True)
class LocalExecutor:
    """Everything on this machine: a `SandboxPool` and an in-process `TransformersBackend`."""

    sandbox_config: SandboxConfig = field(default_factory=SandboxConfig)
    image: str | None = None  # sandbox image override (tests pass the one they built)
    kind: str = "local"

    def job_runner(self) -> AbstractContextManager[JobRunner]:
        from sandbox import SandboxPool

        return SandboxPool(self.sandbox_config, image=self.image)

    def policy(self, source: BackendSource) -> ChainPolicy:
        from agent.scale.backend_source import load_source
        from agent.scale.local_policy import LocalPolicy

        return LocalPolicy(load_source(source))


@dataclass(frozen=True)
class RayExecutor:
    """A Ray cluster: one sandbox pool per node, `replicas` model copies for generation."""

    address: str | None = None
    sandbox_config: SandboxConfig = field(default_factory=SandboxConfig)
    workers_per_node: int = 0
    replicas: int = 1
    cpus_per_replica: float = 1.0
    gpus_per_replica: float | None = None
    kind: str = "ray"

    def job_runner(self) -> AbstractContextManager[JobRunner]:
        from agent.scale.job_runner import RayJobRunner

        return RayJobRunner(self.address, self.workers_per_node, self.sandbox_config)

    def policy(self, source: BackendSource) -> ChainPolicy:
        from agent.scale.ray_policy import RayPolicy

        return RayPolicy(
            source,
            replicas=self.replicas,
            address=self.address,
            cpus_per_replica=self.cpus_per_replica,
            gpus_per_replica=self.gpus_per_replica,
        )


def make_executor(
    kind: str,
    address: str | None = None,
    *,
    sandbox_config: SandboxConfig | None = None,
    workers_per_node: int = 0,
    replicas: int = 1,
    cpus_per_replica: float = 1.0,
    gpus_per_replica: float | None = None,
    image: str | None = None,
) -> Executor:
    """The executor of `kind` ("local" or "ray"); the Ray options apply to "ray" only."""
    sandbox_config = sandbox_config or SandboxConfig()
    if kind == "local":
        if address is not None:
            raise ValueError("an address is for executor 'ray'; executor 'local' takes none")
        return LocalExecutor(sandbox_config, image)
    if kind == "ray":
        if image is not None:
            raise ValueError("executor 'ray' uses sandbox_config.image on every node, not image=")
        if replicas < 1 or workers_per_node < 0:
            raise ValueError("executor 'ray' needs replicas >= 1 and workers_per_node >= 0")
        return RayExecutor(
            address, sandbox_config, workers_per_node, replicas, cpus_per_replica, gpus_per_replica
        )
    raise ValueError(f"executor must be one of {', '.join(KINDS)}, got {kind!r}")
