"""Shared fixtures. Sandbox tests talk to the real Docker engine: when none answers they fail with
the engine's fix in the message (they are not skipped, so a CI without Docker cannot look green)."""

from __future__ import annotations

from collections.abc import Iterator

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


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """The tiny random model saved as a local model folder (with a plain chat template), so
    anything that loads a model by name, `lineage run` included, can use it."""
    from agent.policy.tiny import tiny_model

    folder = tmp_path_factory.mktemp("tiny-model")
    model, tokenizer = tiny_model()
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """torch on one thread for a module: a tiny model gains nothing from threads, two can crawl
    on a shared machine, and each 1-CPU Ray replica runs so."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
