"""Batched per-row low-rank perturbations of Linear layers: a whole ES population in one forward.

EGGROLL (arXiv 2511.16652): member m perturbs a weight W (out x in) by sigma * E_m with
E_m = A_m B_m^T / sqrt(r), A_m (out x r), B_m (in x r). On a row x that belongs to member m,

    y = x W^T + sigma / sqrt(r) * (x B_m) A_m^T

so the base matmul is shared by every member, exactly like batched multi-LoRA, and the extra work
is 2 r (in + out) multiply-adds per token and layer. No member ever gets a copy of the weights.

Usage: `with perturbed(model, perturbation) as rows:` then `rows.set(member_of_row)` before each
forward (or `generate`) on a batch; row i uses member `member_of_row[i]`, and -1 means unperturbed.

Decoding a small model is bound by how many ops are launched, not by arithmetic (measured by
`benchmarks/perturb_overhead.py`, figures in the README's benchmark table). The low-rank term
therefore costs exactly two ops per layer, `bmm` for x B_m and an in-place `baddbmm_` that adds
(x B_m) A_m^T to the layer's output, in the layer's own dtype (bf16 and fp16 matmuls accumulate in
fp32; the scale sigma / sqrt(r) sits in B, so fp16 never holds the unscaled x B). It wraps the
layer's forward rather than hooking it, as a forward hook sends every call through nn.Module's
slow path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import MethodType

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

    Each layer gathers its rows' factors once per `set` and reuses them for every forward until
    the next `set`. With continuous batching rows leave every few steps, and each leaving is a new
    assignment, so the index the layers gather with is made once per set and device (unperturbed
    rows point at a zero slot after the last member): a new assignment costs each layer two
    gathers, not a host-to-device copy, masks and a multiply each."""

    def __init__(self, members: int) -> None:
        self.members = members
        self.member_of_row: torch.Tensor | None = None
        self.any_active = False
        self.version = 0
        self._slots: dict[torch.device, torch.Tensor] = {}

    def set(self, member_of_row: Sequence[int] | torch.Tensor) -> None:
        rows = torch.as_tensor(member_of_row, dtype=torch.long)
        if rows.numel() and not (int(rows.min()) >= -1 and int(rows.max()) < self.members):
            raise ValueError(f"member_of_row entries must be in [-1, {self.members})")
        self.member_of_row = rows
        self.any_active = bool((rows >= 0).any())  # one check per set, not per layer and token
        self._slots = {}
        self.version += 1

    def slots(self, device: torch.device) -> torch.Tensor:
        """Each row's slot in the layers' factors, on `device`: its member, or the zero slot."""
        index = self._slots.get(device)
        if index is None:
            rows = self.member_of_row
            index = torch.where(rows >= 0, rows, self.members).to(device)  # type: ignore[arg-type]
            self._slots[device] = index
        return index


def _perturbed_forward(
    base: Callable[[torch.Tensor], torch.Tensor],
    a_slots_t: torch.Tensor,
    b_slots: torch.Tensor,
    rows: RowAssignment,
    name: str,
):
    """`base` (the layer's own forward) plus each row's low-rank term. Slot m < P of `a_slots_t`
    (P + 1, r, out) holds A_m^T, of `b_slots` (P + 1, in, r) B_m sigma / sqrt(r); slot P is zero.
    Both are on the layer's device in its dtype."""
    cache: dict[str, object] = {"version": None}

    def gathered() -> tuple[torch.Tensor, torch.Tensor]:
        """(scaled B rows (batch, in, r), A rows^T (batch, r, out))."""
        if cache["version"] != rows.version:
            index = rows.slots(b_slots.device)
            cache["b"], cache["a_t"] = (
                b_slots.index_select(0, index),
                a_slots_t.index_select(0, index),
            )
            cache["version"] = rows.version
        return cache["b"], cache["a_t"]  # type: ignore[return-value]

    def forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        y = base(x)
        if rows.member_of_row is None:
            raise RuntimeError("call rows.set(member_of_row) before running a perturbed forward")
        if x.shape[0] != rows.member_of_row.shape[0]:
            raise ValueError(
                f"{name}: batch has {x.shape[0]} rows, member_of_row has "
                f"{rows.member_of_row.shape[0]}"
            )
        if not rows.any_active:
            return y
        b_rows, a_rows_t = gathered()
        if x.dim() == 3:  # (batch, tokens, features): every transformer's hidden states
            return y.baddbmm_(torch.bmm(x, b_rows), a_rows_t)
        x3 = x.reshape(x.shape[0], -1, x.shape[-1])  # any other shape: rows first
        y.view(y.shape[0], -1, y.shape[-1]).baddbmm_(torch.bmm(x3, b_rows), a_rows_t)
        return y

    return forward


def _with_zero_slot(factor: torch.Tensor) -> torch.Tensor:
    """(P, n, r) in fp32 with a zero slot P appended, where unperturbed rows point."""
    factor = factor.float()
    return torch.cat([factor, factor.new_zeros(1, *factor.shape[1:])])


@contextmanager
def perturbed(model: nn.Module, perturbation: PopulationPerturbation) -> Iterator[RowAssignment]:
    """Add each row's member perturbation to the named Linear layers for the block's duration.

    Each layer's forward, as it is on entry (its class's, or an override such as `cpu_linear`'s
    oneDNN path), is wrapped, and put back on exit; nest overrides in last-in, first-out order."""
    modules = dict(model.named_modules())
    missing = sorted(set(perturbation.factors) - set(modules))
    if missing:
        raise KeyError(f"the model has no modules named {missing[:5]}")
    rows = RowAssignment(perturbation.members)
    scale = perturbation.sigma / math.sqrt(perturbation.rank)
    wrapped: list[tuple[nn.Module, object]] = []  # (layer, its own forward attribute or None)
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
            place = {"device": layer.weight.device, "dtype": layer.weight.dtype}
            forward = _perturbed_forward(
                layer.forward,
                _with_zero_slot(a).transpose(1, 2).contiguous().to(**place),
                (_with_zero_slot(b) * scale).to(**place),
                rows,
                name,
            )
            wrapped.append((layer, vars(layer).get("forward")))
            layer.forward = MethodType(forward, layer)
        yield rows
    finally:
        for layer, own in reversed(wrapped):
            if own is None:
                del layer.forward
            else:
                layer.forward = own
