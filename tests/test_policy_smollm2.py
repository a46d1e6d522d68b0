"""The real small model (SmolLM2-135M, assembled from its PyPI wheel): load, greedy determinism,
stop sequences, and batched == unbatched greedy token for token."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from agent.policy.backend import GenerationConfig
from agent.policy.prompts import COMPLETION_STOPS
from agent.policy.transformers_backend import TransformersBackend, TransformersBackendConfig

pytestmark = pytest.mark.slow

PROMPTS = [
    'def add(a, b):\n    """Return the sum of a and b."""\n',
    "def fib(n):\n",
    "The capital of France is",
    "# Python\nimport os\n",
]


@pytest.fixture(scope="module")
def smollm2() -> Iterator[TransformersBackend]:
    # One thread: on a shared 2-core machine, two OpenMP threads can be many times slower.
    threads = torch.get_num_threads()
    yield TransformersBackend.from_config(
        TransformersBackendConfig(model="smollm2-135m", dtype="float32", threads=1)
    )
    torch.set_num_threads(threads)


def test_loads_the_real_model(smollm2: TransformersBackend) -> None:
    assert smollm2.model.config.model_type == "llama"
    assert 130e6 < sum(p.numel() for p in smollm2.model.parameters()) < 140e6
    assert smollm2.tokenizer.decode(smollm2.tokenizer("def fib(n):")["input_ids"]) == "def fib(n):"


def test_greedy_is_deterministic_and_batching_does_not_change_tokens(
    smollm2: TransformersBackend,
) -> None:
    config = GenerationConfig(max_new_tokens=16, batch_size=4)
    batched = smollm2.generate(PROMPTS, config)
    assert smollm2.generate(PROMPTS, config) == batched
    single = [
        smollm2.generate([p], GenerationConfig(max_new_tokens=16, batch_size=1))[0] for p in PROMPTS
    ]
    assert batched == single
    assert "Paris" in batched[2].text


def test_completion_stops_are_honoured(smollm2: TransformersBackend) -> None:
    prompts = PROMPTS[:2]  # functions: the model ends them and starts a new top-level line
    config = GenerationConfig(max_new_tokens=56, stop=COMPLETION_STOPS)
    free = smollm2.generate(prompts, GenerationConfig(max_new_tokens=56))
    stopped = smollm2.generate(prompts, config)
    for before, after in zip(free, stopped, strict=True):
        assert not any(stop in after.text for stop in COMPLETION_STOPS)
        assert before.text.startswith(after.text)
        if after.finish_reason == "stop":
            assert after.num_tokens < 56
    assert any(g.finish_reason == "stop" for g in stopped)
