"""Seeded noise: every perturbation is a pure function of (run seed, step, pair, module).

Nothing random is stored: a step is replayed by regenerating its noise. Each (pair, module) gets
its own generator seeded from a hash of all four coordinates, so layers never share noise (the bug
Qiu et al.'s public code has: every layer reseeded with the same seed) and the result does not
depend on which worker generates it or in what order. Members 2p and 2p+1 are the antithetic pair
(+E_p, -E_p). Noise is drawn on the CPU in fp32 so it is the same on every device.
"""

from __future__ import annotations

import hashlib

import torch


def noise_seed(run_seed: int, step: int, pair: int, module: str) -> int:
    digest = hashlib.sha256(f"lineage-es:{run_seed}:{step}:{pair}:{module}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def pair_factors(
    run_seed: int, step: int, pair: int, module: str, shape: tuple[int, int], rank: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A (out, r), B (in, r)), standard normal, for one antithetic pair and one weight matrix."""
    out_features, in_features = shape
    g = torch.Generator(device="cpu").manual_seed(noise_seed(run_seed, step, pair, module))
    a = torch.randn(out_features, rank, generator=g, dtype=torch.float32)
    b = torch.randn(in_features, rank, generator=g, dtype=torch.float32)
    return a, b


def pair_dense(
    run_seed: int, step: int, pair: int, module: str, shape: tuple[int, int]
) -> torch.Tensor:
    """A full-rank standard-normal matrix for one pair and module (the full-rank mode's noise)."""
    g = torch.Generator(device="cpu").manual_seed(noise_seed(run_seed, step, pair, module) ^ 0x5EED)
    return torch.randn(*shape, generator=g, dtype=torch.float32)


def member_sign(member: int) -> float:
    return 1.0 if member % 2 == 0 else -1.0
