"""Errors the sandbox raises to its callers (job outcomes are verdicts, not exceptions)."""


class SandboxError(RuntimeError):
    """Something about the sandbox itself went wrong (not the code under test)."""


class DockerUnavailable(SandboxError):
    """No Docker engine answers; the message names the fix."""


class ImageBuildError(SandboxError):
    """The sandbox image could not be built."""
