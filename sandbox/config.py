"""Container settings for the pool: one frozen dataclass, validated once."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

GATEWAY_MOUNT = "/run/lineage"  # where a pool's gateway_dir appears inside its containers
LABEL = "lineage.sandbox"  # every container and image we create carries this label
DEFAULT_IMAGE = "lineage-sandbox"


@dataclass(frozen=True)
class SandboxConfig:
    """How the warm containers are made. Defaults suit a small CPU machine."""

    image: str = DEFAULT_IMAGE  # our image, or a user's image with python3 (we add the supervisor)
    workers: int = 0  # containers in the pool; 0 means one per core
    memory_mb: int = 2048  # container memory limit (candidate + referee + tmpfs)
    pids: int = 256  # container pid limit; the candidate's own rlimit stays well below it
    cpus: float = 1.0  # CPU quota per container
    tmpfs_mb: int = 64  # size of /tmp, the candidate's scratch area
    shm_mb: int = 16  # size of /dev/shm
    # Files and folders each of /tmp and /dev/shm may hold: bounds what the wipe after a job has
    # to remove (a job creating empty files as fast as it can gets ENOSPC here, not a wipe that
    # outlasts the host's patience and makes the job an infra error).
    scratch_inodes: int = 65536
    job_grace_s: float = (
        15.0  # host waits wall_s + this for an answer before declaring the container dead
    )
    retries: int = 1  # re-runs of a job whose container died mid-job
    # "fork": each job's candidate is a fork of a pristine per-container interpreter that never
    # sees a job (about 1 ms); "exec": a new `python3 -I` per job (about 15 ms of CPU).
    candidate_start: str = "fork"
    # A host folder holding the LLM gateway's Unix socket, mounted read-only at GATEWAY_MOUNT: the
    # one channel out that agent code gets. None (the default, for scoring pools) mounts nothing.
    gateway_dir: str | None = None

    def __post_init__(self) -> None:
        if self.candidate_start not in ("fork", "exec"):
            raise ValueError(
                f"SandboxConfig.candidate_start must be 'fork' or 'exec', got {self.candidate_start!r}"
            )
        for name, value in asdict(self).items():
            if (
                isinstance(value, (int, float))
                and name not in ("workers", "retries")
                and value <= 0
            ):
                raise ValueError(f"SandboxConfig.{name} must be positive, got {value!r}")
        if self.gateway_dir is not None and not os.path.isdir(self.gateway_dir):
            raise ValueError(f"SandboxConfig.gateway_dir {self.gateway_dir!r} is not a folder")
        if self.workers < 0 or self.retries < 0:
            raise ValueError("SandboxConfig.workers and .retries must be >= 0")

    @property
    def pool_size(self) -> int:
        return self.workers or (os.cpu_count() or 1)
