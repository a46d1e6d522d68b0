"""Shared fixtures. Sandbox tests talk to the real Docker engine: when none answers they fail with
the engine's fix in the message (they are not skipped, so a CI without Docker cannot look green)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def sandbox_image() -> str:
    from sandbox.image import ensure_image

    return ensure_image()


@pytest.fixture(scope="module")
def one_worker_pool(sandbox_image):
    """One container, so consecutive jobs provably share it."""
    from sandbox import SandboxConfig, SandboxPool

    with SandboxPool(SandboxConfig(workers=1), image=sandbox_image) as pool:
        yield pool
