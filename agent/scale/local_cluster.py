"""A real multi-node Ray cluster on one machine: `ray start` processes, not Ray's local mode.

Each node is its own `ray start --block` process group (raylet, object store, agents), so killing
a node is what happens when a machine dies. Teardown signals only the processes this object
started (never `ray stop`, which would end every Ray process on the machine, other users'
included). Tests and `benchmarks/ray_bench.py` use it; a user can use it to try `--executor ray`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.scale.connect import leave


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_cli() -> str:
    """The `ray` script of this interpreter's environment (its nodes must run our Python)."""
    beside = Path(sys.executable).with_name("ray")
    found = str(beside) if beside.exists() else shutil.which("ray")
    if not found:
        raise RuntimeError("the `ray` command is missing: pip install 'lineage[ray]'")
    return found


@dataclass
class RayNodeProcess:
    """One node: the `ray start --block` process leading its own process group."""

    process: subprocess.Popen
    log: Path
    head: bool
    stopped: bool = False  # stopped on purpose (not a failure to report)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, wait_s: float = 30.0) -> None:
        """Graceful with SIGTERM (`ray start --block` stops its children); SIGKILL kills the group."""
        self.stopped = True
        if not self.alive:
            return
        try:
            if sig == signal.SIGKILL:
                os.killpg(self.process.pid, signal.SIGKILL)
            else:
                self.process.send_signal(sig)
            self.process.wait(wait_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        except ProcessLookupError:
            pass


@dataclass
class LocalRayCluster:
    """`nodes` Ray nodes on this machine, each with `cpus_per_node` CPUs and a small object store."""

    nodes: int = 2
    cpus_per_node: int = 1
    object_store_mb: int = 100
    start_timeout_s: float = 90.0
    # Faster failure detection than Ray's production defaults, so a killed node is noticed in
    # seconds rather than half a minute.
    system_env: dict[str, str] = field(
        default_factory=lambda: {
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
        }
    )
    address: str = ""
    processes: list[RayNodeProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.cpus_per_node < 0 or self.object_store_mb < 75:
            raise ValueError(
                "LocalRayCluster needs nodes >= 1, cpus_per_node >= 0 and object_store_mb >= 75 "
                "(Ray's minimum object store)"
            )
        # Short: Ray puts Unix sockets under it, and socket paths are limited to 107 bytes.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="lnray-", dir="/tmp"))

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalRayCluster:
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        try:
            self._launch(
                [
                    "--head",
                    f"--port={port}",
                    "--include-dashboard=false",
                    f"--dashboard-port={free_port()}",
                    f"--ray-client-server-port={free_port()}",
                ],
                head=True,
            )
            for _ in range(self.nodes - 1):
                self.add_node()
            self.wait_for_nodes(self.nodes)
        except BaseException:
            self.stop()
            raise
        return self

    def add_node(self, cpus: int | None = None) -> RayNodeProcess:
        """Start one more worker node and wait until the cluster sees it."""
        expected = len(self.live_nodes()) + 1
        node = self._launch([f"--address={self.address}"], head=False, cpus=cpus)
        self.wait_for_nodes(expected)
        return node

    def _launch(self, args: list[str], head: bool, cpus: int | None = None) -> RayNodeProcess:
        log = self.temp_dir / f"node-{len(self.processes)}.log"
        command = [
            ray_cli(),
            "start",
            "--block",
            *args,
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={self.cpus_per_node if cpus is None else cpus}",
            "--num-gpus=0",
            f"--object-store-memory={self.object_store_mb * 1024 * 1024}",
            f"--temp-dir={self.temp_dir}",
            f"--dashboard-agent-listen-port={free_port()}",
            "--disable-usage-stats",
        ]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **self.system_env}
        with open(log, "wb") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        node = RayNodeProcess(process, log, head)
        self.processes.append(node)
        if head:
            self._wait_for_head(node)
        return node

    def _wait_for_head(self, node: RayNodeProcess) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if not node.alive:
                raise RuntimeError(f"ray head exited early; see {node.log}:\n{self._tail(node)}")
            if b"Ray runtime started" in node.log.read_bytes():
                return
            time.sleep(0.25)
        raise TimeoutError(f"ray head did not start in {self.start_timeout_s}s; see {node.log}")

    def live_nodes(self) -> list[str]:
        """Ids of the alive nodes, asked of the GCS directly (no driver, no dashboard needed)."""
        # Ray's own client for the GCS (what `ray start` uses); the public state API would need
        # the dashboard, which we do not start to save memory.
        from ray._raylet import GcsClient
        from ray.core.generated.gcs_pb2 import GcsNodeInfo

        infos = GcsClient(address=self.address).get_all_node_info(
            timeout=10, state_filter=GcsNodeInfo.GcsNodeState.ALIVE
        )
        return [info.node_id.hex() for info in infos.values()]

    def wait_for_nodes(self, count: int) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            dead = [n for n in self.processes if not n.alive and not n.stopped]
            if dead:
                raise RuntimeError(f"a ray node exited; see {dead[0].log}:\n{self._tail(dead[0])}")
            try:
                if len(self.live_nodes()) >= count:
                    return
            except Exception:  # the GCS is still coming up
                pass
            time.sleep(0.5)
        raise TimeoutError(f"the cluster did not reach {count} nodes in {self.start_timeout_s}s")

    def kill_node(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Kill one worker node (its raylet, object store and workers), as a machine crash would."""
        node = self.processes[index]
        if node.head:
            raise ValueError("kill a worker node, not the head (the head holds the cluster)")
        node.stop(sig)

    def stop(self) -> None:
        """Stop our nodes, workers first, then the head; then remove the temp dir."""
        if self.address:
            leave(self.address)
        for node in sorted(self.processes, key=lambda n: n.head):
            node.stop()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    @staticmethod
    def _tail(node: RayNodeProcess) -> str:
        return node.log.read_bytes()[-2000:].decode("utf-8", "replace")
