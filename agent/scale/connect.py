"""Joining a Ray cluster, imported lazily: only `--executor ray` users need the `ray` package."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from types import ModuleType


def require_ray() -> ModuleType:
    """The `ray` module, or a clear error saying how to get it."""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError(
            "the 'ray' executor needs the ray package: pip install 'lineage[ray]'"
        ) from exc
    return ray


def connect(address: str | None) -> ModuleType:
    """Join the cluster at `address` ("host:port", "auto", or None: RAY_ADDRESS or a new local
    instance) once per process; later calls reuse the connection and must not name another one."""
    ray = require_ray()
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if address not in (None, "auto") and _port(address) != _port(current):
            raise ValueError(
                f"this process is already connected to the Ray cluster at {current}, "
                f"not {address}; one process joins one cluster"
            )
        return ray
    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    return ray


def leave(address: str) -> None:
    """Disconnect this process from the cluster at `address` if it joined it. A driver left
    connected to a stopped cluster's GCS calls `_exit(1)` a minute later, silently, wherever the
    process then is (it ended a pytest run mid-suite with no summary)."""
    ray = sys.modules.get("ray")  # never imported: never joined
    if ray is None or not ray.is_initialized():
        return
    if _port(ray.get_runtime_context().gcs_address) == _port(address):
        ray.shutdown()


def _port(address: str) -> str:
    # Hosts are not compared: Ray reports the node's own IP where the caller may have used
    # 127.0.0.1 or a DNS name for the same head.
    return address.rpartition(":")[2]


@dataclass(frozen=True)
class RayNode:
    """An alive node and the resources it offers."""

    node_id: str
    cpus: float
    gpus: float


def alive_nodes() -> list[RayNode]:
    """Alive nodes of the connected cluster, in a stable order (by id)."""
    ray = require_ray()
    nodes = [
        RayNode(n["NodeID"], n["Resources"].get("CPU", 0.0), n["Resources"].get("GPU", 0.0))
        for n in ray.nodes()
        if n.get("Alive")
    ]
    return sorted(nodes, key=lambda n: n.node_id)


def on_node(node_id: str):
    """A scheduling strategy that pins an actor to one node (no fallback elsewhere)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)


def actor_lost(exc: BaseException) -> bool:
    """Whether a failed call means its actor (or node) is gone, rather than a bug in our code."""
    from ray.exceptions import (
        ActorUnschedulableError,
        NodeDiedError,
        ObjectLostError,
        RayActorError,
        WorkerCrashedError,
    )

    return isinstance(
        exc,
        (
            RayActorError,
            ActorUnschedulableError,
            NodeDiedError,
            ObjectLostError,
            WorkerCrashedError,
        ),
    )
