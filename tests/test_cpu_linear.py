"""oneDNN linears for decoding-sized batches: same results as `F.linear` up to summation order,
hooks kept, only large fp32 weights switched, an ES population's layers wrapping them, and
everything restored after the block."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from agent.policy import cpu_linear
from agent.policy.lowrank import PopulationPerturbation, perturbed

pytestmark = pytest.mark.skipif(
    not cpu_linear.available(), reason="this torch build has no oneDNN linear"
)


def model() -> nn.Sequential:
    torch.manual_seed(0)
    big = nn.Linear(2048, 2048)  # 4.2M entries: switches
    small = nn.Linear(2048, 16)  # stays
    return nn.Sequential(big, small).eval()


@pytest.fixture
def onednn_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The rows of every call that went through oneDNN, in order."""
    calls: list[int] = []
    onednn = cpu_linear.onednn_linear

    def counting(x, weight, bias):  # noqa: ANN001, ANN202
        calls.append(x.numel() // x.shape[-1])
        return onednn(x, weight, bias)

    monkeypatch.setattr(cpu_linear, "onednn_linear", counting)
    return calls


def test_small_batches_go_through_onednn_with_the_same_result(onednn_calls: list[int]) -> None:
    net = model()
    big, small = net[0], net[1]
    x = torch.randn(5, 3, 2048)  # 15 rows: oneDNN
    many = torch.randn(80, 2048)  # beyond MAX_ROWS: F.linear, bit for bit
    seen: list[torch.Tensor] = []
    big.register_forward_hook(lambda module, inputs, output: seen.append(output))
    with torch.inference_mode():
        expected = F.linear(x, big.weight, big.bias)
        with cpu_linear.onednn_linears(net) as switched:
            assert switched == 1
            assert "forward" in vars(big) and "forward" not in vars(small)
            got = big(x)
            assert torch.equal(big(many), F.linear(many, big.weight, big.bias))
            net(x)
        assert "forward" not in vars(big)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    assert onednn_calls == [15, 15], "oneDNN ran on other calls than the two small batches"
    assert len(seen) == 3, "the forward hook did not run on every call"


def test_weights_changed_in_place_are_seen() -> None:
    net = model()
    big = net[0]
    x = torch.randn(4, 2048)
    with torch.inference_mode(), cpu_linear.onednn_linears(net):
        before = big(x)
        big.weight.data.mul_(2)
        big.bias.data.mul_(2)
        torch.testing.assert_close(big(x), 2 * before, rtol=1e-5, atol=1e-4)


def test_gradients_keep_the_default_path() -> None:
    net = model()
    x = torch.randn(4, 2048)
    with cpu_linear.onednn_linears(net):
        net(x).sum().backward()
    assert net[0].weight.grad is not None


def test_a_population_wraps_the_onednn_forward_and_both_are_undone(
    onednn_calls: list[int],
) -> None:
    """The backend enters `onednn_linears` first and `perturbed` inside it: perturbed layers
    must still multiply through oneDNN, add their rows' low-rank terms, and get back exactly
    the forward they had, layer by layer, as each block exits."""
    net = model()
    big = net[0]
    g = torch.Generator().manual_seed(1)
    pert = PopulationPerturbation(
        0.01, {"0": (torch.randn(2, 2048, 1, generator=g), torch.randn(2, 2048, 1, generator=g))}
    )
    x = torch.randn(3, 1, 2048)
    with torch.inference_mode(), cpu_linear.onednn_linears(net):
        onednn_forward = vars(big)["forward"]
        with perturbed(net, pert) as rows:
            rows.set([0, 1, -1])
            got = big(x)
        assert vars(big)["forward"] is onednn_forward
    assert "forward" not in vars(big)
    assert onednn_calls == [3], "the perturbed layer did not multiply through oneDNN"
    for row, member in enumerate([0, 1, -1]):
        weight = big.weight + (pert.dense_delta("0", member) if member >= 0 else 0)
        expected = F.linear(x[row], weight, big.bias)
        torch.testing.assert_close(got[row], expected, rtol=1e-5, atol=1e-4)
