"""Scale-out on Ray: sandbox jobs on every node, generation on model replicas (issue 9).

Nothing here imports `ray` until a Ray object is made, so `local` users need no Ray.
Public API: `make_executor`, `Executor`, `RayJobRunner`, `RayPolicy`, `LocalPolicy`,
`TinyBackendFactory`, `LocalRayCluster` (a real multi-node cluster on one machine).
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "Executor": "agent.scale.executor",
    "LocalExecutor": "agent.scale.executor",
    "RayExecutor": "agent.scale.executor",
    "make_executor": "agent.scale.executor",
    "RayJobRunner": "agent.scale.job_runner",
    "RayPolicy": "agent.scale.ray_policy",
    "LocalPolicy": "agent.scale.local_policy",
    "ChainReplayer": "agent.es.chain_replayer",
    "TinyBackendFactory": "agent.scale.backend_source",
    "LocalRayCluster": "agent.scale.local_cluster",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
