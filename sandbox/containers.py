"""Starting one hardened, warm container and its supervisor; finding and removing ours.

Every container carries our label and its owner (host, pid, process start time). It is created with
StdinOnce, so when the owning process dies for any reason its attach stream closes, the supervisor
reads EOF and exits, and `auto_remove` deletes the container: a kill -9 of the host process leaves
nothing behind. `remove_leftovers` sweeps whatever is left anyway (ours only, by label).
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass

from docker.errors import APIError, NotFound
from docker.types import LogConfig

from sandbox.channel import AttachedChannel, ChannelClosed
from sandbox.config import DEFAULT_IMAGE, GATEWAY_MOUNT, LABEL, SandboxConfig
from sandbox.engine import docker_client
from sandbox.errors import SandboxError

OWNER_LABEL = "lineage.owner"
# What the supervisor needs and nothing more: switch to the job users, signal them, and wipe
# scratch files they own.
CAPABILITIES = ["SETUID", "SETGID", "KILL", "CHOWN", "DAC_OVERRIDE", "FOWNER"]
START_TIMEOUT_S = 60.0
SCRATCH_OPTIONS = "rw,nosuid,nodev,noexec,mode=1777"


def _process_start_ticks(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def owner_id(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_process_start_ticks(pid)}"


def owner_is_alive(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text, _, ticks = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return True  # another machine's container on a shared engine: not ours to judge
    pid = int(pid_text)
    return os.path.exists(f"/proc/{pid}") and _process_start_ticks(pid) == ticks


@dataclass
class WarmContainer:
    id: str
    channel: AttachedChannel
    python: str

    def stop(self) -> None:
        self.channel.close()
        try:
            docker_client().api.remove_container(self.id, force=True)
        except (NotFound, APIError):
            pass  # already gone (auto_remove) or being removed


def start_container(image: str, config: SandboxConfig) -> WarmContainer:
    """Create, attach, start; wait for the supervisor's ready line."""
    api = docker_client().api
    # Job users get random uids so rlimits on process counts (kept per uid by the kernel) never
    # mix with another container's jobs or with a host user.
    candidate_uid = 200_000 + 2 * secrets.randbelow(500_000_000)
    host_config = api.create_host_config(
        network_mode="none",
        init=True,
        read_only=True,
        tmpfs={  # a mount at /dev/shm takes the place of the engine's own (shm_size)
            "/tmp": f"{SCRATCH_OPTIONS},size={config.tmpfs_mb}m,nr_inodes={config.scratch_inodes}",
            "/dev/shm": f"{SCRATCH_OPTIONS},size={config.shm_mb}m,nr_inodes={config.scratch_inodes}",
        },
        mem_limit=f"{config.memory_mb}m",
        memswap_limit=f"{config.memory_mb}m",
        pids_limit=config.pids,
        nano_cpus=int(config.cpus * 1e9),
        cap_drop=["ALL"],
        cap_add=CAPABILITIES,
        security_opt=["no-new-privileges"],
        log_config=LogConfig(type=LogConfig.types.NONE),
        auto_remove=True,
        binds=(
            {config.gateway_dir: {"bind": GATEWAY_MOUNT, "mode": "ro"}}
            if config.gateway_dir
            else None
        ),
    )
    # Our image has no site-packages, so candidates skip `site` (-S); a user's image may need it.
    python = "python3 -I -S" if image.startswith(f"{DEFAULT_IMAGE}:") else "python3 -I"
    created = api.create_container(
        image,
        command=[
            "python3",
            "-I",
            "/opt/lineage/supervisor.py",
            "--candidate-uid",
            str(candidate_uid),
            "--referee-uid",
            str(candidate_uid + 1),
            "--python",
            python,
            "--start",
            config.candidate_start,
        ],  # fmt: skip
        stdin_open=True,
        detach=False,  # makes the engine set StdinOnce: our stream closing stops the container
        user="0",
        working_dir="/tmp",
        network_disabled=True,
        labels={LABEL: "1", OWNER_LABEL: owner_id()},
        host_config=host_config,
    )
    cid = created["Id"]
    try:
        sock = api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        channel = AttachedChannel(sock)
        api.start(cid)
        ready = channel.receive(START_TIMEOUT_S)
    except (ChannelClosed, APIError) as exc:
        try:
            api.remove_container(cid, force=True)
        except (NotFound, APIError):
            pass
        raise SandboxError(f"sandbox container did not start: {exc}") from None
    if not ready.get("ready"):
        raise SandboxError(f"sandbox supervisor sent {ready!r} instead of ready")
    return WarmContainer(cid, channel, str(ready.get("python", "?")))


def remove_leftovers(everything: bool = False) -> int:
    """Remove our containers whose owner process is dead (or all of ours). Returns the count."""
    client = docker_client()
    removed = 0
    for c in client.api.containers(all=True, filters={"label": LABEL}):
        owner = (c.get("Labels") or {}).get(OWNER_LABEL, "")
        if everything or not owner_is_alive(owner):
            try:
                client.api.remove_container(c["Id"], force=True)
                removed += 1
            except (NotFound, APIError):
                pass
    return removed


def job_processes(container_id: str) -> int:
    """Processes of the job users beyond the one candidate prespawned for the next job."""
    api = docker_client().api
    args = api.inspect_container(container_id)["Args"]
    candidate_uid = int(args[args.index("--candidate-uid") + 1])
    referee_uid = int(args[args.index("--referee-uid") + 1])
    rows = api.top(container_id, ps_args="-eo pid,uid,args").get("Processes") or []
    uids = [int(row[1]) for row in rows]
    return uids.count(referee_uid) + max(0, uids.count(candidate_uid) - 1)
