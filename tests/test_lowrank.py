"""The batched per-row low-rank forward equals explicit (W + sigma E_m) forwards, member by member."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from agent.policy.lowrank import PopulationPerturbation, perturbed


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8, bias=False)).float()


def random_perturbation(
    model: nn.Module, members: int, rank: int, sigma: float
) -> PopulationPerturbation:
    g = torch.Generator().manual_seed(1)
    factors = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            out_f, in_f = module.weight.shape
            factors[name] = (
                torch.randn(members, out_f, rank, generator=g),
                torch.randn(members, in_f, rank, generator=g),
            )
    return PopulationPerturbation(sigma, factors)


@pytest.mark.parametrize("rank", [1, 4])
def test_batched_forward_matches_explicit_weights(rank):
    model = make_model()
    pert = random_perturbation(model, members=5, rank=rank, sigma=0.05)
    x = torch.randn(7, 3, 16)  # batch rows, tokens, features
    member_of_row = [0, 1, 2, 3, 4, -1, 2]
    with torch.no_grad(), perturbed(model, pert) as rows:
        rows.set(member_of_row)
        batched = model(x)
    for row, member in enumerate(member_of_row):
        explicit = make_model()
        if member >= 0:
            with torch.no_grad():
                for name, module in explicit.named_modules():
                    if name in pert.factors:
                        module.weight += pert.dense_delta(name, member)
        with torch.no_grad():
            expected = explicit(x[row : row + 1])
        assert torch.allclose(batched[row : row + 1], expected, atol=1e-5), (row, member)


def test_forwards_are_restored_and_rows_are_required():
    model = make_model()
    pert = random_perturbation(model, members=2, rank=1, sigma=0.1)
    x = torch.randn(2, 16)
    base = model(x)
    with perturbed(model, pert) as rows, pytest.raises(RuntimeError, match="rows.set"):
        model(x)
    with perturbed(model, pert) as rows:
        assert all("forward" in vars(model[i]) for i in (0, 2))
        rows.set([-1, -1])
        assert torch.equal(model(x), base)  # -1 rows are exactly unperturbed
        rows.set([0])
        with pytest.raises(ValueError, match="member_of_row"):
            model(x)
        rows.set([-1])
        with pytest.raises(ValueError, match="member_of_row"):
            model(x)
        for outside in ([0, 2], [-2, 0]):  # members are 0 and 1; -1 is the only other entry
            with pytest.raises(ValueError, match=r"in \[-1, 2\)"):
                rows.set(outside)
    assert not any("forward" in vars(m) for m in model)
    assert torch.equal(model(x), base)


def test_bad_factors_are_refused():
    model = make_model()
    with (
        pytest.raises(KeyError, match="no modules"),
        perturbed(
            model,
            PopulationPerturbation(0.1, {"nope": (torch.zeros(1, 2, 1), torch.zeros(1, 2, 1))}),
        ),
    ):
        pass
    with (
        pytest.raises(ValueError, match="weight is 32x16"),
        perturbed(
            model,
            PopulationPerturbation(0.1, {"0": (torch.zeros(1, 31, 1), torch.zeros(1, 16, 1))}),
        ),
    ):
        pass
    with pytest.raises(ValueError, match="same members"):
        PopulationPerturbation(0.1, {"0": (torch.zeros(2, 32, 1), torch.zeros(3, 16, 1))})


def explicit_output(pert: PopulationPerturbation, member: int, x: torch.Tensor) -> torch.Tensor:
    """The model with sigma E_member added to its weights (none for -1), run on `x`."""
    model = make_model()
    with torch.no_grad():
        if member >= 0:
            for name, module in model.named_modules():
                if name in pert.factors:
                    module.weight += pert.dense_delta(name, member)
        return model(x)


def test_reassigning_rows_between_forwards_takes_effect():
    """Hooks reuse their gathered factors until the next `set`: a new assignment of the same
    batch size (members swapped, a row switched off) must be used by the very next forward."""
    model = make_model()
    pert = random_perturbation(model, members=3, rank=2, sigma=0.05)
    x = torch.randn(3, 16)
    with torch.no_grad(), perturbed(model, pert) as rows:
        outputs = []
        for assignment in ([0, 1, 2], [2, -1, 0], [1, 1, 1]):
            rows.set(assignment)
            outputs.append((assignment, model(x), model(x)))
    for assignment, first, second in outputs:
        assert torch.equal(first, second)  # the reused factors give the same result
        for row, member in enumerate(assignment):
            expected = explicit_output(pert, member, x[row : row + 1])
            assert torch.allclose(first[row : row + 1], expected, atol=1e-5), (assignment, row)
