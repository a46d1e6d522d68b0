"""On a CPU, vLLM's processes wait for each other without spinning.

vLLM's shared-memory queues (engine core <-> worker) busy-wait, yielding the core in a loop, for
a second after each read before they park on their ZMQ notification socket. During decoding a
read comes every step, so the waiting side never parks: while a CPU worker computes a step, the
engine core spins on the reply: nearly a core of its own, on a 2-core machine the one the agents'
and the scoring sandboxes need. With the busy window at 0 a reader parks at once; waking it
costs microseconds, a CPU decode step tens of milliseconds. `benchmarks/loop_bench.py` measures
a run both ways (`--spin`; figures in the README's "cores" note).

Applied in every vLLM process by this project's plugin (`agent/policy/vllm_cpu_lora.py`), on the
CPU platform only (a GPU's host core spinning costs the accelerator nothing and saves latency);
`LINEAGE_VLLM_SPIN=1` keeps vLLM's spinning.
"""

from __future__ import annotations

import os
from pathlib import Path

KEEP_SPINNING = "LINEAGE_VLLM_SPIN"


def park_waiting_readers() -> None:
    """Make every shared-memory queue reader created from now on park instead of spinning."""
    if os.environ.get(KEEP_SPINNING) == "1":
        return
    from vllm.distributed.device_communicators import shm_broadcast

    condition = shm_broadcast.SpinCondition
    if getattr(condition, "parked_by_lineage", False):
        return
    spinning_init = condition.__init__

    def parked_init(self, is_reader, context, notify_address, busy_loop_s=1.0):
        spinning_init(self, is_reader, context, notify_address, busy_loop_s=0.0)

    condition.__init__ = parked_init
    condition.parked_by_lineage = True


def parked() -> bool:
    """Whether this process's queue readers park (`collective_rpc("lineage_parked")` asks
    vLLM's workers, through the worker extension in `agent/policy/vllm_weights.py`)."""
    from vllm.distributed.device_communicators import shm_broadcast

    return bool(getattr(shm_broadcast.SpinCondition, "parked_by_lineage", False))


def vllm_cpu_seconds(root: int | None = None) -> dict[str, float]:
    """CPU seconds (user + system) so far of the vLLM processes below `root` (default: this
    process), by role (`engine_core`, `worker`): where the cores went besides decoding."""
    tick = os.sysconf("SC_CLK_TCK")
    procs: dict[int, tuple[str, int, int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]  # the kernel keeps 15 characters
        fields = text[text.rindex(")") + 2 :].split()
        procs[int(stat.parent.name)] = (name, int(fields[1]), int(fields[11]) + int(fields[12]))
    below, frontier = set(), {os.getpid() if root is None else root}
    while frontier:
        frontier = {pid for pid, (_, ppid, _) in procs.items() if ppid in frontier} - below
        below |= frontier
    out: dict[str, float] = {}
    for pid in below:
        name, _, ticks = procs[pid]
        if name.startswith("VLLM::"):
            role = "engine_core" if name.startswith("VLLM::Engine") else "worker"
            out[role] = out.get(role, 0.0) + ticks / tick
    return out
