"""The padded decoding batch against a plain model of it: each row's own keys, in order, under its
mask, through joins wider and narrower than the batch, rows leaving, and buffer growth."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from agent.policy import kv_rows

HEADS, DIM, LAYERS = 2, 3, 2


class Rows:
    """Hands out key/value columns numbered so that every one is recognisable."""

    def __init__(self) -> None:
        self.counter = 0

    def columns(self, rows: int, width: int) -> torch.Tensor:
        start = self.counter
        self.counter += rows * width
        values = torch.arange(start, self.counter, dtype=torch.float32) + 1
        return values.view(rows, 1, width, 1).expand(rows, HEADS, width, DIM).contiguous()


def prefilled(source: Rows, lengths: list[int]) -> tuple[DynamicCache, torch.Tensor, list]:
    """A left-padded cache as the backend's prefill makes it, and each row's real columns."""
    width = max(lengths)
    keys = source.columns(len(lengths), width)
    mask = torch.tensor([[0] * (width - n) + [1] * n for n in lengths])
    cache = DynamicCache()
    for layer in range(LAYERS):
        cache.update(keys * (layer + 1), -keys * (layer + 1), layer)
    own = [keys[r, :, width - n :] for r, n in enumerate(lengths)]
    return cache, mask, own


def check(batch: kv_rows.PaddedBatch, own: list[torch.Tensor]) -> None:
    assert batch.mask.shape[0] == len(own)
    for layer_index, layer in enumerate(batch.cache.layers):
        assert layer.keys.shape[:3] == (len(own), HEADS, batch.mask.shape[1])
        assert torch.isfinite(layer.keys).all() and torch.isfinite(layer.values).all()
        for row, expected in enumerate(own):
            seen = batch.mask[row].bool()
            assert int(seen.sum()) == expected.shape[1]
            assert torch.equal(layer.keys[row][:, seen], expected * (layer_index + 1))
            assert torch.equal(layer.values[row][:, seen], -expected * (layer_index + 1))
    assert batch.mask.any(dim=0)[0], "a column every row pads was left on the left"


def step(batch: kv_rows.PaddedBatch, source: Rows, own: list[torch.Tensor]) -> list:
    new = source.columns(len(own), 1)
    batch.next_column()
    for layer_index, layer in enumerate(batch.cache.layers):
        batch.cache.update(new * (layer_index + 1), -new * (layer_index + 1), layer_index)
        assert layer.keys.shape[2] == batch.mask.shape[1]
    return [torch.cat([mine, new[r]], dim=1) for r, mine in enumerate(own)]


def test_rows_join_leave_and_grow_past_the_spare_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kv_rows, "SPARE_COLUMNS", 3)
    source = Rows()
    cache, mask, own = prefilled(source, [4, 2])
    batch = kv_rows.PaddedBatch(cache, mask, max_rows=6)
    assert all(isinstance(layer, kv_rows.BufferedLayer) for layer in batch.cache.layers)
    check(batch, own)
    for _ in range(5):  # past the 3 spare columns: the buffers move
        own = step(batch, source, own)
        check(batch, own)
    narrow, narrow_mask, narrow_own = prefilled(source, [1, 3])
    batch.join(narrow, narrow_mask)
    own += narrow_own
    check(batch, own)
    wide, wide_mask, wide_own = prefilled(source, [20])  # wider than the batch: pads the others
    batch.join(wide, wide_mask)
    own += wide_own
    check(batch, own)
    own = step(batch, source, own)
    batch.keep_rows([4, 1, 2])  # the widest stays, reordered
    own = [own[4], own[1], own[2]]
    check(batch, own)
    batch.keep_rows([1, 2])  # the widest leaves: its columns are cut
    own = [own[1], own[2]]
    check(batch, own)
    assert batch.mask.shape[1] == max(row.shape[1] for row in own)
    for _ in range(4):
        own = step(batch, source, own)
        check(batch, own)
    with pytest.raises(ValueError, match="exceed the 6 reserved"):
        batch.join(*prefilled(source, [1] * 5)[:2])


def test_caches_with_other_layers_decode_without_joining() -> None:
    source = Rows()
    cache, mask, own = prefilled(source, [3, 1, 2])

    class Sliding(DynamicLayer):
        pass

    cache.layers[1].__class__ = Sliding
    batch = kv_rows.PaddedBatch(cache, mask, max_rows=3)
    assert not batch.can_join and batch.cache is cache
    batch.keep_rows([2, 0])
    own = [own[2], own[0]]
    check(batch, own)
    with pytest.raises(ValueError, match="cannot join"):
        batch.join(*prefilled(source, [1])[:2])
