"""A seeded random ES population over a model's projections, for backend tests."""

from __future__ import annotations

import torch

from agent.es.config import DEFAULT_TARGETS
from agent.policy.lowrank import PopulationPerturbation


def random_population(
    model: torch.nn.Module, members: int, sigma: float, rank: int, seed: int = 7
) -> PopulationPerturbation:
    """Rank-`rank` factors for every attention and MLP projection of `model`."""
    gen = torch.Generator().manual_seed(seed)
    factors = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in DEFAULT_TARGETS:
            out_features, in_features = module.weight.shape
            factors[name] = (
                torch.randn(members, out_features, rank, generator=gen),
                torch.randn(members, in_features, rank, generator=gen),
            )
    return PopulationPerturbation(sigma=sigma, factors=factors)
