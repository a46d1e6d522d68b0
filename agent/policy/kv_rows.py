"""Rows joining and leaving a left-padded KV cache mid-decode (continuous batching on transformers).

A batch is a KV cache (keys and values `(rows, heads, length, dim)` per layer) and a 2-D attention
mask `(rows, length)`; each row is left-padded to the common length. New rows are prefilled on
their own and joined by left-padding the shorter side; finished rows are dropped, and columns that
every remaining row pads are cut off the left. Positions come from the mask (`cumsum - 1`), so
padding never shifts a row's positions, and a row's tokens see only its own unmasked keys: a row
decodes the same whichever rows share its batch.

Full-attention layers keep their keys in buffers with spare rows and columns (`BufferedLayer`):
a decoding step writes one column in place, where transformers' `DynamicLayer` concatenates, that
is copies the whole cache, at every step (12% of a CPU decoding step at 24 rows); joining rows
writes only the new rows, and cutting columns moves a view. Masked columns may hold stale keys of
rows that left; they are finite, so they get exactly zero attention weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

# Columns a buffer grows by: decoding refills them one per step before the next copy.
SPARE_COLUMNS = 256


def joinable(cache: DynamicCache) -> bool:
    """Only full-attention layers keep every key; sliding-window or recurrent layers would need
    their own padding rules, so batches with them decode without joining (row groups in turn)."""
    return all(type(layer) is DynamicLayer for layer in cache.layers)


class BufferedLayer(DynamicLayer):
    """A full-attention layer whose `keys`/`values` are views `[:rows, :, start:end]` of buffers
    holding up to `max_rows` rows (see the module docstring)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, max_rows: int) -> None:
        super().__init__()
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        rows, heads, width, dim = keys.shape
        shape = (max(max_rows, rows), heads, width + SPARE_COLUMNS, dim)
        self._keys = keys.new_zeros(shape)  # zeros: a masked column is never NaN
        self._values = values.new_zeros(shape)
        self.rows, self.start, self.end = 0, width, width
        self.add_rows(keys, values)

    def _view(self) -> None:
        self.keys = self._keys[: self.rows, :, self.start : self.end]
        self.values = self._values[: self.rows, :, self.start : self.end]

    def _move(self, left: int, room: int) -> None:
        """Copy the live columns into new buffers, after `left` free columns, before `room`."""
        live = self.end - self.start
        rows, heads, _, dim = self._keys.shape
        keys = self._keys.new_zeros((rows, heads, left + live + room, dim))
        values = self._values.new_zeros(keys.shape)
        keys[: self.rows, :, left : left + live] = self.keys
        values[: self.rows, :, left : left + live] = self.values
        self._keys, self._values = keys, values
        self.start, self.end = left, left + live

    def add_rows(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Append rows whose keys end at the current last column (left-padded if shorter)."""
        new_rows, width = keys.shape[0], keys.shape[-2]
        reserved = self._keys.shape[0]
        if self.rows + new_rows > reserved:
            raise ValueError(f"{self.rows} + {new_rows} rows exceed the {reserved} reserved")
        if width > self.end:
            self._move(left=width - (self.end - self.start), room=SPARE_COLUMNS)
        self.start = min(self.start, self.end - width)
        rows = slice(self.rows, self.rows + new_rows)
        self._keys[rows, :, self.end - width : self.end] = keys
        self._values[rows, :, self.end - width : self.end] = values
        self.rows += new_rows
        self._view()

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the step's columns in place (buffers are copied only every SPARE_COLUMNS)."""
        width = key_states.shape[-2]
        if self.end + width > self._keys.shape[2]:
            self._move(left=0, room=width + SPARE_COLUMNS)
        self._keys[: self.rows, :, self.end : self.end + width] = key_states
        self._values[: self.rows, :, self.end : self.end + width] = value_states
        self.end += width
        self._view()
        return self.keys, self.values

    def keep(self, index: torch.Tensor, first: int) -> None:
        """Keep rows `index` (in that order) in front and drop the first `first` live columns."""
        self.start += first
        live = slice(self.start, self.end)
        self._keys[: len(index), :, live] = self._keys[index, :, live]
        self._values[: len(index), :, live] = self._values[index, :, live]
        self.rows = len(index)
        self._view()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.keep(indices, 0)


def _left_pad(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """Zeros before the start of a mask's last dimension."""
    return F.pad(tensor, [length - tensor.shape[-1], 0])


class PaddedBatch:
    """The decoding batch: its KV cache (`cache`, for the model) and padding mask (`mask`)."""

    def __init__(self, cache: DynamicCache, mask: torch.Tensor, max_rows: int) -> None:
        self.can_join = joinable(cache)
        if self.can_join:
            layers = [BufferedLayer(lay.keys, lay.values, max_rows) for lay in cache.layers]
            cache = Cache(layers=layers)
        self.cache: Cache = cache
        self.mask = mask

    def join(self, new_cache: DynamicCache, new_mask: torch.Tensor) -> None:
        """Append `new_cache`'s rows (prefilled on their own) to the batch."""
        if not self.can_join:
            raise ValueError("this model's cache has layers that cannot join rows")
        for layer, new_layer in zip(self.cache.layers, new_cache.layers, strict=True):
            layer.add_rows(new_layer.keys, new_layer.values)  # type: ignore[attr-defined]
        length = max(self.mask.shape[1], new_mask.shape[1])
        self.mask = torch.cat([_left_pad(self.mask, length), _left_pad(new_mask, length)])

    def keep_rows(self, keep: list[int]) -> None:
        """Keep only rows `keep` and cut the columns they all pad."""
        index = torch.tensor(keep, device=self.mask.device)
        mask = self.mask[index]
        if not self.can_join:
            self.cache.batch_select_indices(index)
            self.mask = mask
            return
        first = int(mask.any(dim=0).int().argmax())  # first column some kept row attends to
        for layer in self.cache.layers:
            layer.keep(index, first)  # type: ignore[attr-defined]
        self.mask = mask[:, first:]

    def next_column(self) -> None:
        """Every row attends to the token it is about to feed."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=-1)
