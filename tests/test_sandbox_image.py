"""Building images: idempotent by recipe hash, and a user's own image gets our supervisor added."""

from __future__ import annotations

import io
import tarfile
import time

import pytest

from sandbox import Job, SandboxConfig, SandboxPool
from sandbox.config import LABEL
from sandbox.engine import docker_client
from sandbox.errors import ImageBuildError
from sandbox.image import RECIPE_LABEL, ensure_base, ensure_image

pytestmark = pytest.mark.docker


def test_ensure_image_is_idempotent_and_labelled(sandbox_image):
    started = time.monotonic()
    assert ensure_image() == sandbox_image
    assert ensure_image(sandbox_image) == sandbox_image  # our own tag is taken as it is
    assert time.monotonic() - started < 5  # nothing was rebuilt
    labels = docker_client().images.get(sandbox_image).labels
    assert labels[LABEL] == "1" and sandbox_image.endswith(labels[RECIPE_LABEL])


def test_a_missing_user_image_is_a_clear_error():
    with pytest.raises(ImageBuildError, match="not found locally"):
        ensure_image("no-such-image-lineage-test:1")


def test_a_user_image_gets_the_supervisor_and_keeps_its_packages(sandbox_image):
    """A user's image with an extra module in site-packages (as numpy would be)."""
    client = docker_client()
    context = io.BytesIO()
    dockerfile = (
        f"FROM {ensure_base()}\n"
        "RUN mkdir -p /usr/local/lib/python3.11/dist-packages && "
        "echo 'ANSWER = 42' > /usr/local/lib/python3.11/dist-packages/usermod.py\n"
    ).encode()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    context.seek(0)
    tag = "lineage-test-user-image:1"
    client.images.build(
        fileobj=context, custom_context=True, tag=tag, pull=False, rm=True, labels={LABEL: "1"}
    )
    derived = ensure_image(tag)
    assert derived.startswith("lineage-sandbox-custom:") and ensure_image(tag) == derived
    job = Job(
        "import usermod\ndef f():\n    return usermod.ANSWER\n",
        ("assert candidate() == 42",),
        entry_point="f",
    )
    with SandboxPool(SandboxConfig(workers=1), image=tag) as pool:
        assert pool.image == derived
        verdict = pool.run([job])[0]
    assert verdict.passed, verdict
