"""`RayPolicy`: `PolicyBackend.generate` sharded across model replicas on a Ray cluster.

Nothing heavy crosses the network. Each replica loads the model itself (from a
`TransformersBackendConfig` or an injected factory); `set_weights(records, checkpoint)` sends the
ES records (seeds and shaped fitness) and the chain's checkpoint path, and every replica replays
them into its own copy, from the checkpoint where its node can read the file (one machine, or a
shared filesystem), else from the base; a population given as a `Population` travels as its
seeds (step, ES config, shapes) and each replica rebuilds the low-rank factors (a
`PopulationPerturbation` given as tensors still works: it is put in the object store once, not
once per replica). Rows are dealt round-robin over the replicas in order of prompt length, so
every replica gets a similar mix of short and long prompts; results come back in the caller's
order. Greedy outputs equal the local backend's on the same weights; sampled rows are
seeded per replica batch, so they differ from a single-process run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from agent.es.chain_replayer import record_dicts
from agent.policy.backend import Generation, GenerationConfig, check_member_of_row
from agent.scale.backend_source import BackendSource
from agent.scale.connect import actor_lost, alive_nodes, connect
from agent.scale.local_policy import PopulationLike

if TYPE_CHECKING:
    from agent.es.checkpoint import Checkpoint
    from agent.es.record import EsRecord


def members_in(perturbation: PopulationLike) -> int:
    from agent.es.eggroll import Population

    return perturbation.size if isinstance(perturbation, Population) else perturbation.members


def deal_rows(prompts: Sequence[str], shards: int) -> list[list[int]]:
    """Row indices per shard: sorted by prompt length, then dealt round-robin."""
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    return [order[k::shards] for k in range(shards) if order[k::shards]]


class RayPolicy:
    """Generation on `replicas` model copies (see the module docstring).

    - `gpus_per_replica`: None = 1 when the cluster has GPUs, else 0 (CPU replicas).
    - `cpus_per_replica`: CPU slots each replica reserves (also its torch thread count in Ray).
    """

    def __init__(
        self,
        source: BackendSource,
        replicas: int = 1,
        address: str | None = None,
        cpus_per_replica: float = 1.0,
        gpus_per_replica: float | None = None,
        start_timeout_s: float = 600.0,
    ) -> None:
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas}")
        if cpus_per_replica < 0 or (gpus_per_replica is not None and gpus_per_replica < 0):
            raise ValueError("cpus_per_replica and gpus_per_replica must be >= 0")
        self.address = address
        ray = connect(address)
        from agent.scale.policy_replica import PolicyReplica

        if gpus_per_replica is None:
            gpus_per_replica = 1.0 if any(n.gpus for n in alive_nodes()) else 0.0
        remote = ray.remote(PolicyReplica).options(
            num_cpus=cpus_per_replica, num_gpus=gpus_per_replica, scheduling_strategy="SPREAD"
        )
        self.replicas = [remote.remote(source) for _ in range(replicas)]
        ready = [r.ready.remote() for r in self.replicas]
        placed, waiting = ray.wait(ready, num_returns=len(ready), timeout=start_timeout_s)
        try:
            if waiting:
                raise RuntimeError(
                    f"only {len(placed)} of {replicas} policy replicas started in "
                    f"{start_timeout_s}s; each needs {cpus_per_replica} CPU and "
                    f"{gpus_per_replica} GPU, and the cluster has "
                    f"{[(n.cpus, n.gpus) for n in alive_nodes()]} (CPU, GPU) per node"
                )
            self.replica_nodes: list[str] = ray.get(ready)
        except BaseException:
            self.close()
            raise

    def set_weights(
        self, records: Sequence[EsRecord | Mapping[str, Any]], checkpoint: Checkpoint | None = None
    ) -> list[int]:
        """Weights become base + `records` on every replica (each replays them itself, from
        `checkpoint` where its node can read the file, else from the base); returns how many
        records each replica replayed."""
        ray = connect(self.address)
        dicts = record_dicts(records)
        return ray.get([r.set_weights.remote(dicts, checkpoint) for r in self.replicas])

    def generate(
        self,
        prompts: Sequence[str],
        config: GenerationConfig,
        perturbation: PopulationLike | None = None,
        member_of_row: Sequence[int] | None = None,
        on_done: Callable[[int], None] | None = None,
    ) -> list[Generation]:
        """One generation per prompt, in order; rows sharded over the replicas."""
        from agent.es.eggroll import Population

        if perturbation is not None:
            check_member_of_row(
                len(prompts), SimpleNamespace(members=members_in(perturbation)), member_of_row
            )
        if not prompts:
            return []
        if not self.replicas:
            raise RuntimeError("this RayPolicy has no replicas left (closed, or all died)")
        ray = connect(self.address)
        shipped = perturbation
        if perturbation is not None and not isinstance(perturbation, Population):
            shipped = ray.put(perturbation)  # tensors: one copy in the object store

        def submit(replica: Any, shard: list[int]) -> None:
            rows = [member_of_row[i] for i in shard] if perturbation is not None else None  # type: ignore[index]
            ref = replica.generate.remote([prompts[i] for i in shard], config, shipped, rows)
            calls[ref] = (replica, shard)

        results: list[Generation | None] = [None] * len(prompts)
        calls: dict[Any, tuple[Any, list[int]]] = {}
        for replica, shard in zip(
            self.replicas, deal_rows(prompts, len(self.replicas)), strict=False
        ):
            submit(replica, shard)
        turn = 0
        while calls:
            (ref,), _ = ray.wait(list(calls), num_returns=1)
            replica, shard = calls.pop(ref)
            try:
                generations = ray.get(ref)
            except Exception as exc:
                if not actor_lost(exc):
                    raise
                self._drop(replica)
                if not self.replicas:
                    raise RuntimeError("every policy replica died during generation") from exc
                submit(self.replicas[turn % len(self.replicas)], shard)
                turn += 1
                continue
            for i, generation in zip(shard, generations, strict=True):
                results[i] = generation
            if on_done:
                on_done(len(shard))
        return results  # type: ignore[return-value]

    def _drop(self, replica: Any) -> None:
        for index, held in enumerate(self.replicas):
            if held is replica:
                del self.replicas[index]
                del self.replica_nodes[index]
                return

    def close(self) -> None:
        """End the replicas (their models are freed with their processes)."""
        if not self.replicas:
            return
        ray = connect(self.address)
        for replica in self.replicas:
            ray.kill(replica)
        self.replicas = []
        self.replica_nodes = []

    def __enter__(self) -> RayPolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
