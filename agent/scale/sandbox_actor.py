"""The Ray actor that owns one node's sandbox pool.

One actor per node, pinned there, so the node's Docker engine and cores serve that node's share of
the jobs. It is threaded (`max_concurrency`): several batches can be in the pool's queue at once,
which keeps its containers busy while the driver collects the previous batch. When the actor's
process dies, even by SIGKILL, the pool's containers remove themselves (see `sandbox`).
"""

from __future__ import annotations

from sandbox import Job, SandboxConfig, Verdict

# A batch is [(index into the caller's jobs, job)]; the verdicts come back with the same indices.
Batch = list[tuple[int, Job]]


class SandboxActor:
    """Runs batches of jobs in a warm `SandboxPool` on the node it was placed on."""

    def __init__(self, config: SandboxConfig) -> None:
        import ray

        from sandbox import SandboxPool

        self.node_id = ray.get_runtime_context().get_node_id()
        self.pool = SandboxPool(config).start()

    def ready(self) -> tuple[str, int]:
        """(node id, containers): answered once the pool is warm."""
        return self.node_id, len(self.pool.container_ids)

    def run(self, batch: Batch) -> list[tuple[int, Verdict]]:
        jobs = [job for _, job in batch]
        return [(batch[i][0], verdict) for i, verdict in self.pool.run_iter(jobs)]

    def close(self) -> None:
        self.pool.close()
