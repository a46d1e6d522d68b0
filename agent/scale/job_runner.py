"""`RayJobRunner`: the `JobRunner` protocol (`run_iter(jobs)` yields `(index, Verdict)`) across a
Ray cluster, one sandbox pool per node.

Dispatch keeps each node's pool fed: every actor holds up to two batches of `batch_size` jobs
(default: its container count, at least 4), and a finished batch is replaced at once. Faults: a call that
fails because its actor or node died puts that batch's jobs back in the queue for the surviving
actors; a verdict is yielded only when its batch comes back, and each index at most once, so every
job yields exactly one verdict. When no actor is left, the runner looks for alive nodes once more
(a node may have joined) before giving up with `SandboxError`.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from agent.scale.connect import actor_lost, alive_nodes, connect, on_node
from sandbox import Job, SandboxConfig, SandboxError, Verdict

IN_FLIGHT_BATCHES = 2  # per actor: one running, one queued behind it in the pool
MIN_BATCH = 4


@dataclass
class _Member:
    """One node's actor and the work it holds."""

    node_id: str
    actor: object
    workers: int
    in_flight: int = 0  # jobs sent and not yet back


class RayJobRunner:
    """Run sandbox jobs on every node of a Ray cluster (see the module docstring).

    - `address`: the cluster ("host:port", "auto"); None joins RAY_ADDRESS or starts Ray locally.
    - `workers_per_node`: containers per node; 0 = the node's CPU count in Ray (a node started
      with `--num-cpus 0`, such as a head kept free of work, then gets no sandbox).
    - `batch_size`: jobs per call to an actor; 0 = the actor's container count, at least
      `MIN_BATCH` (Ray costs about 1-2 ms per call; see benchmarks/ray_bench.py).
    - `node_ids`: only these nodes get pools (None: every alive node).
    """

    def __init__(
        self,
        address: str | None = None,
        workers_per_node: int = 0,
        sandbox_config: SandboxConfig | None = None,
        batch_size: int = 0,
        actor_start_timeout_s: float = 600.0,
        node_ids: Sequence[str] | None = None,
    ) -> None:
        if workers_per_node < 0 or batch_size < 0:
            raise ValueError("workers_per_node and batch_size must be >= 0 (0 = automatic)")
        self.address = address
        self.workers_per_node = workers_per_node
        self.sandbox_config = sandbox_config or SandboxConfig()
        self.batch_size = batch_size
        self.actor_start_timeout_s = actor_start_timeout_s
        self.node_ids = None if node_ids is None else set(node_ids)
        self.members: dict[str, _Member] = {}
        self.failed_nodes: dict[str, str] = {}  # node id -> why its actor could not start
        self.jobs_per_node: Counter[str] = Counter()  # verdicts delivered, by node
        self.resubmitted = 0  # jobs sent again after their actor died
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> RayJobRunner:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> RayJobRunner:
        """Join the cluster and warm one sandbox pool on every alive node that has none."""
        if self._closed:
            raise SandboxError("this RayJobRunner is closed")
        ray = connect(self.address)
        from agent.scale.sandbox_actor import SandboxActor

        remote = ray.remote(SandboxActor)
        starting = {}
        for node in alive_nodes():
            if node.node_id in self.members or (
                self.node_ids is not None and node.node_id not in self.node_ids
            ):
                continue
            workers = self.workers_per_node or int(node.cpus)
            if workers < 1:
                continue
            actor = remote.options(
                num_cpus=0,  # the containers do the work; Docker, not Ray, limits their CPU
                max_concurrency=IN_FLIGHT_BATCHES + 1,
                scheduling_strategy=on_node(node.node_id),
            ).remote(replace(self.sandbox_config, workers=workers))
            starting[actor.ready.remote()] = (node.node_id, actor, workers)
        if not starting:
            return self
        ready, late = ray.wait(
            list(starting), num_returns=len(starting), timeout=self.actor_start_timeout_s
        )
        for ref in ready:
            node_id, actor, workers = starting[ref]
            try:
                ray.get(ref)
            except Exception as exc:  # Docker missing on that node, node died while starting...
                self.failed_nodes[node_id] = str(exc).strip().splitlines()[-1][:500]
                ray.kill(actor)
                continue
            self.members[node_id] = _Member(node_id, actor, workers)
            self.failed_nodes.pop(node_id, None)
        for ref in late:
            node_id, actor, _ = starting[ref]
            self.failed_nodes[node_id] = f"sandbox pool not ready in {self.actor_start_timeout_s}s"
            ray.kill(actor)
        return self

    def close(self) -> None:
        """Close every node's pool (its containers go away), then end the actors."""
        if self._closed:
            return
        self._closed = True
        if not self.members:
            return
        ray = connect(self.address)
        closing = [m.actor.close.remote() for m in self.members.values()]
        ray.wait(closing, num_returns=len(closing), timeout=60)
        for member in self.members.values():
            ray.kill(member.actor)
        self.members.clear()

    @property
    def nodes(self) -> list[str]:
        """Ids of the nodes whose pools take jobs."""
        return list(self.members)

    def actor_on(self, node_id: str) -> object:
        """The actor handle serving a node (for tests and diagnostics)."""
        return self.members[node_id].actor

    # -- running jobs --------------------------------------------------------------------------
    def run_iter(self, jobs: Sequence[Job]) -> Iterator[tuple[int, Verdict]]:
        """Yield (index into jobs, verdict) as batches finish, each index exactly once."""
        jobs = list(jobs)
        if not jobs:
            return
        self.start()  # picks up nodes that joined since the last call
        ray = connect(self.address)
        pending: deque[int] = deque(range(len(jobs)))
        calls: dict[object, tuple[_Member, list[int]]] = {}
        done: set[int] = set()
        while len(done) < len(jobs):
            self._dispatch(jobs, pending, calls)
            if not calls:
                raise SandboxError(self._no_nodes_message(len(jobs) - len(done)))
            finished, _ = ray.wait(list(calls), num_returns=1)
            for ref in finished:
                member, indices = calls.pop(ref)
                member.in_flight -= len(indices)
                try:
                    results = ray.get(ref)
                except Exception as exc:
                    if not actor_lost(exc):
                        raise
                    self._drop(member, indices, pending, done)
                    continue
                for index, verdict in results:
                    if index not in done:
                        done.add(index)
                        self.jobs_per_node[member.node_id] += 1
                        yield index, verdict

    def run(self, jobs: Sequence[Job]) -> list[Verdict]:
        """All verdicts, in job order."""
        verdicts: list[Verdict | None] = [None] * len(jobs)
        for index, verdict in self.run_iter(jobs):
            verdicts[index] = verdict
        return verdicts  # type: ignore[return-value]

    def _dispatch(
        self, jobs: list[Job], pending: deque[int], calls: dict[object, tuple[_Member, list[int]]]
    ) -> None:
        """Top every live actor up to its in-flight share; if none is left, look for nodes again."""
        if pending and not self.members:
            self.start()
        for member in list(self.members.values()):
            size = self.batch_size or max(member.workers, MIN_BATCH)
            room = IN_FLIGHT_BATCHES * size - member.in_flight
            while pending and room > 0:
                take = min(size, room, len(pending))
                indices = [pending.popleft() for _ in range(take)]
                batch = [(i, jobs[i]) for i in indices]
                calls[member.actor.run.remote(batch)] = (member, indices)
                member.in_flight += take
                room -= take

    def _drop(
        self, member: _Member, indices: list[int], pending: deque[int], done: set[int]
    ) -> None:
        """Its actor is gone: forget it and queue its unfinished jobs for the others."""
        if self.members.get(member.node_id) is member:
            del self.members[member.node_id]
            self.failed_nodes[member.node_id] = "actor or node died during a run"
        again = [i for i in indices if i not in done]
        self.resubmitted += len(again)
        pending.extendleft(reversed(again))

    def _no_nodes_message(self, unfinished: int) -> str:
        why = "; ".join(f"{n[:12]}: {r}" for n, r in self.failed_nodes.items()) or "none found"
        return f"no Ray node can run sandbox jobs ({unfinished} unfinished); nodes: {why}"
