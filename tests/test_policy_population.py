"""Population generation: one batched pass with per-row low-rank perturbations equals generating
each member with its perturbation added to the weights explicitly."""

from __future__ import annotations

import pytest
import torch
from populations import random_population
from test_policy_generation import count_joins

from agent.policy.backend import GenerationConfig
from agent.policy.lowrank import PopulationPerturbation
from agent.policy.tiny import TinyModelConfig, tiny_model
from agent.policy.transformers_backend import TransformersBackend

PROMPTS = ["def f(x):\n", "hello", "a longer prompt than the others", "x"]
CONFIG = GenerationConfig(max_new_tokens=12, batch_size=3)
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: a tiny model, one thread


def generate_with_dense_weights(
    perturbation: PopulationPerturbation, member: int, prompts: list[str]
) -> list:
    model, tokenizer = tiny_model(TinyModelConfig(seed=0))
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name in perturbation.factors:
            modules[name].weight += perturbation.dense_delta(name, member)
    return TransformersBackend(model, tokenizer).generate(prompts, CONFIG)


def test_population_batch_equals_members_with_explicit_weights() -> None:
    model, tokenizer = tiny_model(TinyModelConfig(seed=0))
    backend = TransformersBackend(model, tokenizer)
    perturbation = random_population(model, members=2, rank=2, sigma=0.05, seed=123)
    prompts = PROMPTS * 2
    member_of_row = [0] * len(PROMPTS) + [1] * len(PROMPTS)
    batched = backend.generate(prompts, CONFIG, perturbation, member_of_row)

    per_member = [generate_with_dense_weights(perturbation, m, PROMPTS) for m in (0, 1)]
    assert batched[: len(PROMPTS)] == per_member[0]
    assert batched[len(PROMPTS) :] == per_member[1]
    # The test means something only if the members really generate differently.
    assert per_member[0] != per_member[1]
    assert per_member[0] != backend.generate(PROMPTS, CONFIG)


def test_unperturbed_rows_and_weights_left_untouched() -> None:
    model, tokenizer = tiny_model(TinyModelConfig(seed=0))
    backend = TransformersBackend(model, tokenizer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    base = backend.generate(PROMPTS, CONFIG)
    perturbation = random_population(model, members=3, rank=1, sigma=0.05, seed=123)
    mixed = backend.generate(PROMPTS, CONFIG, perturbation, [-1, 2, -1, 0])
    assert mixed[0] == base[0] and mixed[2] == base[2]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert backend.generate(PROMPTS, CONFIG) == base  # hooks removed after the call


def test_member_of_row_is_checked() -> None:
    model, tokenizer = tiny_model(TinyModelConfig(seed=0))
    backend = TransformersBackend(model, tokenizer)
    perturbation = random_population(model, members=2, rank=1, sigma=0.05, seed=123)
    with pytest.raises(ValueError, match="one member per prompt"):
        backend.generate(PROMPTS, CONFIG, perturbation, [0, 1])
    with pytest.raises(ValueError, match="outside"):
        backend.generate(PROMPTS, CONFIG, perturbation, [0, 1, 2, 0])


def test_rows_leaving_and_joining_the_batch_keep_their_members(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a stop string, rows finish at different steps and leave the batch while waiting
    prompts join it; every row must keep its own member's perturbation."""
    joins = count_joins(monkeypatch)
    model, tokenizer = tiny_model(TinyModelConfig(seed=0))
    backend = TransformersBackend(model, tokenizer)
    perturbation = random_population(model, members=2, rank=2, sigma=0.05, seed=123)
    free = generate_with_dense_weights(perturbation, 1, PROMPTS)
    # A character member 1 emits in some row: the first printable ASCII one.
    stop = next(c for g in free for c in g.text if c.isascii() and c.isprintable())
    config = GenerationConfig(max_new_tokens=12, batch_size=3, stop=(stop,))
    members = [0, 1, 0, 1, 1, 0, 1, 0]
    batched = backend.generate(PROMPTS * 2, config, perturbation, members)
    for member in (0, 1):
        model_m, _ = tiny_model(TinyModelConfig(seed=0))
        modules = dict(model_m.named_modules())
        with torch.no_grad():
            for name in perturbation.factors:
                modules[name].weight += perturbation.dense_delta(name, member)
        alone = TransformersBackend(model_m, tokenizer).generate(PROMPTS * 2, config)
        for row, m in enumerate(members):
            if m == member:
                assert batched[row] == alone[row]
    assert any(g.finish_reason == "stop" for g in batched)
    assert any(g.finish_reason == "length" for g in batched)
    assert joins, "no prompt joined a running batch: the test did not exercise joining"
