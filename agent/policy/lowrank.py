"""Batched per-row low-rank perturbations of Linear layers: a whole ES population in one forward.

EGGROLL (arXiv 2511.16652): member m perturbs a weight W (out x in) by sigma * E_m with
E_m = A_m B_m^T / sqrt(r), A_m (out x r), B_m (in x r). On a row x that belongs to member m,

    y = x W^T + sigma / sqrt(r) * (x B_m) A_m^T

so the base matmul is shared by every member, exactly like batched multi-LoRA, and the extra work
is 2 r (in + out) multiply-adds per token and layer. No member ever gets a copy of the weights.

Usage: `with perturbed(model, perturbation) as rows:` then `rows.set(member_of_row)` before each
forward (or `generate`) on a batch; row i uses member `member_of_row[i]`, and -1 means unperturbed.
The low-rank term is computed in fp32 and added in the layer's output dtype.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class PopulationPerturbation:
    """Low-rank noise for P members on some Linear modules: name -> (A (P, out, r), B (P, in, r))."""

    sigma: float
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]

    def __post_init__(self) -> None:
        if not self.factors:
            raise ValueError("a perturbation needs factors for at least one module")
        for name, (a, b) in self.factors.items():
            if a.dim() != 3 or b.dim() != 3:
                raise ValueError(f"{name}: factors must be (P, out, r) and (P, in, r)")
        members_and_ranks = {
            (t.shape[0], t.shape[2]) for pair in self.factors.values() for t in pair
        }
        if len(members_and_ranks) != 1:
            raise ValueError("every module's factors must have the same members P and rank r")

    @property
    def members(self) -> int:
        return next(iter(self.factors.values()))[0].shape[0]

    @property
    def rank(self) -> int:
        return next(iter(self.factors.values()))[0].shape[2]

    def dense_delta(self, name: str, member: int) -> torch.Tensor:
        """sigma * E_m for one module, materialized: only for tests and the full-rank reference."""
        a, b = self.factors[name]
        return self.sigma / math.sqrt(self.rank) * (a[member].float() @ b[member].float().T)


class RowAssignment:
    """Which member each row of the next forward belongs to (set per batch).

    Each hook gathers its rows' factors once per `set` and reuses them for every forward until
    the next `set` (decoding runs hundreds of forwards per assignment): on a GPU the per-layer
    gathers, masks and host-to-device index copies would otherwise be small kernels and syncs
    launched 7 times per block per token."""

    def __init__(self) -> None:
        self.member_of_row: torch.Tensor | None = None
        self.any_active = False
        self.version = 0

    def set(self, member_of_row: Sequence[int] | torch.Tensor) -> None:
        rows = torch.as_tensor(member_of_row, dtype=torch.long)
        self.member_of_row = rows
        self.any_active = bool((rows >= 0).any())  # one check per set, not per layer and token
        self.version += 1


def _low_rank_hook(a: torch.Tensor, b: torch.Tensor, scale: float, rows: RowAssignment, name: str):
    cache: dict[str, object] = {"version": None}

    def gathered(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(B rows (batch, in, r), scale * A rows^T (batch, r, out)), zero for -1 rows."""
        if cache["version"] != rows.version:
            index = rows.member_of_row.to(device)  # type: ignore[union-attr]
            member = index.clamp(min=0)
            active = (index >= 0).to(a.dtype).view(-1, 1, 1)
            cache["b"] = b[member]
            cache["a_t"] = (a[member] * (active * scale)).transpose(1, 2)
            cache["version"] = rows.version
        return cache["b"], cache["a_t"]  # type: ignore[return-value]

    def hook(
        module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> torch.Tensor:
        index = rows.member_of_row
        if index is None:
            raise RuntimeError("call rows.set(member_of_row) before running a perturbed forward")
        x = inputs[0]
        if x.shape[0] != index.shape[0]:
            raise ValueError(
                f"{name}: batch has {x.shape[0]} rows, member_of_row has {index.shape[0]}"
            )
        if not rows.any_active:
            return output
        b_rows, a_rows_t = gathered(x.device)
        flat = x.reshape(x.shape[0], -1, x.shape[-1]).float()  # (batch, tokens, in)
        delta = torch.bmm(torch.bmm(flat, b_rows), a_rows_t)  # (batch, tokens, out)
        return output + delta.reshape(output.shape).to(output.dtype)

    return hook


@contextmanager
def perturbed(model: nn.Module, perturbation: PopulationPerturbation) -> Iterator[RowAssignment]:
    """Add each row's member perturbation to the named Linear layers for the block's duration."""
    modules = dict(model.named_modules())
    missing = sorted(set(perturbation.factors) - set(modules))
    if missing:
        raise KeyError(f"the model has no modules named {missing[:5]}")
    rows = RowAssignment()
    scale = perturbation.sigma / math.sqrt(perturbation.rank)
    handles = []
    try:
        for name, (a, b) in perturbation.factors.items():
            layer = modules[name]
            if not isinstance(layer, nn.Linear):
                raise TypeError(f"{name} is a {type(layer).__name__}, not a Linear layer")
            out_features, in_features = layer.weight.shape
            if a.shape[1] != out_features or b.shape[1] != in_features:
                raise ValueError(
                    f"{name}: weight is {out_features}x{in_features}, factors are "
                    f"{a.shape[1]}x{a.shape[2]} and {b.shape[1]}x{b.shape[2]}"
                )
            device = layer.weight.device
            hook = _low_rank_hook(
                a.to(device, torch.float32), b.to(device, torch.float32), scale, rows, name
            )
            handles.append(layer.register_forward_hook(hook))
        yield rows
    finally:
        for handle in handles:
            handle.remove()
