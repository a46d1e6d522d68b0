"""Docker sandbox: a warm pool of hardened containers that run untrusted code and judge it.

Public API: `SandboxPool` runs `Job`s and returns `Verdict`s; `SandboxConfig` holds the container
settings; `ensure_image` builds the image on demand.
"""

from sandbox.config import SandboxConfig
from sandbox.errors import DockerUnavailable, ImageBuildError, SandboxError
from sandbox.job import CheckOutcome, CheckResult, Job, JobRunner, Limits, Status, Verdict

__all__ = [
    "CheckOutcome",
    "CheckResult",
    "DockerUnavailable",
    "ImageBuildError",
    "Job",
    "JobRunner",
    "Limits",
    "SandboxConfig",
    "SandboxError",
    "SandboxPool",
    "Status",
    "Verdict",
    "ensure_image",
]


def __getattr__(name: str):
    # Lazy: importing the pool pulls in the Docker SDK, which pure-logic users do not need.
    if name == "SandboxPool":
        from sandbox.pool import SandboxPool

        return SandboxPool
    if name == "ensure_image":
        from sandbox.image import ensure_image

        return ensure_image
    raise AttributeError(name)
