"""Rows joining and leaving a left-padded KV cache mid-decode (continuous batching on transformers).

A batch is a `DynamicCache` (keys and values `(rows, heads, length, dim)` per layer) and a 2-D
attention mask `(rows, length)`; each row is left-padded to the common length. New rows are
prefilled on their own and joined by left-padding the shorter side; finished rows are dropped, and
columns that every remaining row pads are cut off the left. Positions come from the mask
(`cumsum - 1`), so padding never shifts a row's positions, and a row's tokens see only its own
unmasked keys: a row decodes the same whichever rows share its batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


def joinable(cache: DynamicCache) -> bool:
    """Only full-attention layers keep every key; sliding-window or recurrent layers would need
    their own padding rules, so batches with them decode without joining (row groups in turn)."""
    return all(type(layer) is DynamicLayer for layer in cache.layers)


def _left_pad(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """Zeros before the start of dimension `dim` (negative: counted from the end)."""
    missing = length - tensor.shape[dim]
    if missing == 0:
        return tensor
    return F.pad(tensor, [0, 0] * (-dim - 1) + [missing, 0])


def join(
    cache: DynamicCache, mask: torch.Tensor, new_cache: DynamicCache, new_mask: torch.Tensor
) -> torch.Tensor:
    """Append `new_cache`'s rows to `cache` (in place) and return the joined mask."""
    length = max(mask.shape[1], new_mask.shape[1])
    for layer, new_layer in zip(cache.layers, new_cache.layers, strict=True):
        layer.keys = torch.cat(
            [_left_pad(layer.keys, length, -2), _left_pad(new_layer.keys, length, -2)]
        )
        layer.values = torch.cat(
            [_left_pad(layer.values, length, -2), _left_pad(new_layer.values, length, -2)]
        )
    return torch.cat([_left_pad(mask, length, -1), _left_pad(new_mask, length, -1)])


def keep_rows(cache: DynamicCache, mask: torch.Tensor, keep: list[int]) -> torch.Tensor:
    """Keep only rows `keep` (in place) and cut the columns they all pad; returns their mask."""
    index = torch.tensor(keep, device=mask.device)
    cache.batch_select_indices(index)
    mask = mask[index]
    if not joinable(cache):
        return mask
    first = int(mask.any(dim=0).int().argmax())  # first column some kept row attends to
    if first > 0:
        for layer in cache.layers:
            layer.keys = layer.keys[:, :, first:]
            layer.values = layer.values[:, :, first:]
        mask = mask[:, first:]
    return mask
