"""The transformers backend on the tiny random model: continuous batching, stops, sampling."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from agent.policy import kv_rows
from agent.policy.backend import GenerationConfig
from agent.policy.prompts import COMPLETION_STOPS, truncate_at_stop
from agent.policy.tiny import TinyModelConfig, tiny_model
from agent.policy.transformers_backend import (
    PREFILL_ROWS,
    TransformersBackend,
    joining,
    longest_first,
    pick_dtype,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: a tiny model, one thread

PROMPTS = ["def f(x):\n", "hello", "a much longer prompt than the others, yes indeed", "x", "ab"]


@pytest.fixture(scope="module")
def backend() -> TransformersBackend:
    model, tokenizer = tiny_model(TinyModelConfig(seed=0))
    return TransformersBackend(model, tokenizer)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="temperature"):
        GenerationConfig(temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        GenerationConfig(top_p=0)
    with pytest.raises(ValueError, match="stop"):
        GenerationConfig(stop=("",))
    assert GenerationConfig().greedy and not GenerationConfig(temperature=0.7).greedy


def test_truncate_at_earliest_stop() -> None:
    text = "    return x\n\nprint(f(1))\ndef g():"
    assert truncate_at_stop(text, COMPLETION_STOPS) == ("    return x\n", True)
    assert truncate_at_stop("    return x\n", COMPLETION_STOPS) == ("    return x\n", False)


def test_prompts_start_longest_first() -> None:
    assert longest_first([3, 9, 1, 5, 9]) == [1, 4, 3, 0, 2]


def test_prompts_join_in_groups() -> None:
    """A group waits until its slots are free; small batches and the last prompts join in
    smaller groups; a cache that cannot join takes a new batch only when the last one is done."""
    group = PREFILL_ROWS
    assert joining(live=0, waiting=100, batch_size=48, can_join=True) == group
    assert joining(live=48 - group + 1, waiting=100, batch_size=48, can_join=True) == 0
    assert joining(live=48 - group, waiting=100, batch_size=48, can_join=True) == group
    assert joining(live=40, waiting=3, batch_size=48, can_join=True) == 3
    assert joining(live=1, waiting=5, batch_size=2, can_join=True) == 1
    assert joining(live=14, waiting=5, batch_size=16, can_join=True) == 0  # a quarter: 4
    assert joining(live=0, waiting=0, batch_size=16, can_join=True) == 0
    assert joining(live=0, waiting=5, batch_size=8, can_join=False) == 5
    assert joining(live=3, waiting=5, batch_size=8, can_join=False) == 0


def test_tiny_model_is_seeded() -> None:
    a, _ = tiny_model(TinyModelConfig(seed=1))
    b, _ = tiny_model(TinyModelConfig(seed=1))
    c, _ = tiny_model(TinyModelConfig(seed=2))
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_batched_greedy_equals_one_by_one_in_prompt_order(backend: TransformersBackend) -> None:
    batched = backend.generate(PROMPTS, GenerationConfig(max_new_tokens=16, batch_size=2))
    single = [
        backend.generate([p], GenerationConfig(max_new_tokens=16, batch_size=1))[0] for p in PROMPTS
    ]
    assert batched == single
    assert all(g.num_tokens == 16 and g.finish_reason == "length" for g in batched)
    reversed_ = backend.generate(PROMPTS[::-1], GenerationConfig(max_new_tokens=16, batch_size=3))
    assert reversed_ == batched[::-1]


def test_stop_string_cuts_the_text_and_ends_the_row(backend: TransformersBackend) -> None:
    free = backend.generate(PROMPTS, GenerationConfig(max_new_tokens=24, batch_size=8))
    # A stop string the model is known to produce: the first two printable ASCII characters in a
    # row (the random model emits arbitrary bytes).
    row, at = next(
        (r, i)
        for r, g in enumerate(free)
        for i in range(len(g.text) - 1)
        if g.text[i : i + 2].isascii() and g.text[i : i + 2].isprintable()
    )
    stop = free[row].text[at : at + 2]
    stopped = backend.generate(PROMPTS, GenerationConfig(max_new_tokens=24, stop=(stop,)))
    hit = stopped[row]
    assert hit.finish_reason == "stop"
    assert hit.text == free[row].text[: free[row].text.index(stop)]
    assert hit.num_tokens < 24
    for before, after in zip(free, stopped, strict=True):
        assert before.text.startswith(after.text)
        assert (after.finish_reason == "stop") == (stop in before.text)


def count_joins(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records the rows of every batch that prompts joined mid-decode."""
    joins: list[int] = []
    join = kv_rows.PaddedBatch.join

    def counting(batch, new_cache, new_mask):  # noqa: ANN001, ANN202
        joins.append(batch.mask.shape[0])
        return join(batch, new_cache, new_mask)

    monkeypatch.setattr(kv_rows.PaddedBatch, "join", counting)
    return joins


def test_prompts_joining_a_running_batch_generate_as_alone(
    backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows stop at different steps (stop strings the model produces at different places), so
    waiting prompts join rows that are mid-decode, with caches of other lengths."""
    free = backend.generate(PROMPTS, GenerationConfig(max_new_tokens=24, batch_size=8))
    stops = tuple(
        g.text[i : i + 2]
        for g in free[:3]
        for i in range(4, len(g.text) - 1)
        if g.text[i : i + 2].isascii() and g.text[i : i + 2].isprintable()
    )[:2]
    assert stops, "the random model produced no printable pair to stop at"
    config = GenerationConfig(max_new_tokens=24, batch_size=2, stop=stops)
    single = [backend.generate([p], replace(config, batch_size=1))[0] for p in PROMPTS]
    joins = count_joins(monkeypatch)
    batched = backend.generate(PROMPTS, config)
    assert batched == single
    assert joins, "no prompt joined a running batch: the test did not exercise joining"
    assert len({g.num_tokens for g in batched}) > 1


def test_cache_buffers_moving_mid_decode_change_nothing(
    backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 3 spare columns the buffers move every few steps, and joins wider than the batch
    move them too."""
    config = GenerationConfig(max_new_tokens=20, batch_size=2)
    roomy = backend.generate(PROMPTS, config)
    monkeypatch.setattr(kv_rows, "SPARE_COLUMNS", 3)
    moves = []
    move = kv_rows.BufferedLayer._move
    monkeypatch.setattr(
        kv_rows.BufferedLayer, "_move", lambda layer, **at: moves.append(at) or move(layer, **at)
    )
    assert backend.generate(PROMPTS, config) == roomy
    assert len(moves) > 10


def test_sampling_is_seeded(backend: TransformersBackend) -> None:
    config = GenerationConfig(max_new_tokens=12, temperature=1.0, top_p=0.95, seed=7)
    one = backend.generate(PROMPTS, config)
    assert backend.generate(PROMPTS, config) == one
    other = backend.generate(PROMPTS, GenerationConfig(max_new_tokens=12, temperature=1.0, seed=8))
    assert other != one
    assert one != backend.generate(PROMPTS, GenerationConfig(max_new_tokens=12))


def test_progress_reports_every_prompt(backend: TransformersBackend) -> None:
    done: list[int] = []
    backend.generate(PROMPTS, GenerationConfig(max_new_tokens=2, batch_size=2), on_done=done.append)
    assert done == [2, 2, 1]


def test_dtype_choice() -> None:
    assert pick_dtype("float32", torch.device("cpu")) is torch.float32
    assert pick_dtype("auto", torch.device("cpu")) in (torch.float32, torch.bfloat16)


def test_grouped_attention_with_a_padding_mask_equals_repeated_heads(
    backend: TransformersBackend,
) -> None:
    """The CPU attention broadcasts key heads instead of copying them; same numbers as
    transformers' SDPA path, which copies them whenever there is a mask."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from agent.policy.cpu_attention import NAME, grouped_sdpa_forward

    assert backend.model.config._attn_implementation == NAME
    module = backend.model.model.layers[0].self_attn
    assert module.num_key_value_groups > 1
    gen = torch.Generator().manual_seed(0)
    query = torch.randn(3, 4, 1, 16, generator=gen)
    key, value = (torch.randn(3, 2, 9, 16, generator=gen) for _ in range(2))
    mask = torch.ones(3, 1, 1, 9, dtype=torch.bool)
    mask[0, ..., :4] = False
    ours, _ = grouped_sdpa_forward(module, query, key, value, mask, scaling=0.25)
    theirs, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.25)
    assert torch.equal(ours, theirs)
    unmasked, _ = grouped_sdpa_forward(module, query, key, value, mask | True, scaling=0.25)
    assert torch.equal(unmasked[1:], ours[1:]) and not torch.equal(unmasked[0], ours[0])
