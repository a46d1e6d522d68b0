"""Connecting to the Docker engine, with an error that names the fix when none answers."""

from __future__ import annotations

import functools

import docker
from docker.errors import DockerException

from sandbox.errors import DockerUnavailable

FIX = (
    "start the Docker engine (e.g. `sudo dockerd &` or `sudo systemctl start docker`), or run "
    "`make test`/`make demo`, which install and start it on Debian/Ubuntu as root"
)


@functools.cache
def docker_client() -> docker.DockerClient:
    """One client per process; `docker.from_env` honours DOCKER_HOST like the CLI does."""
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except DockerException as exc:
        raise DockerUnavailable(f"no Docker engine answers ({exc}); {FIX}") from None
    return client
