"""oneDNN linears for decoding-sized batches: same results as `F.linear` up to summation order,
hooks kept, only large fp32 weights switched, and everything restored after the block."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from agent.policy import cpu_linear

pytestmark = pytest.mark.skipif(
    not cpu_linear.available(), reason="this torch build has no oneDNN linear"
)


def model() -> nn.Sequential:
    torch.manual_seed(0)
    big = nn.Linear(2048, 2048)  # 4.2M entries: switches
    small = nn.Linear(2048, 16)  # stays
    return nn.Sequential(big, small).eval()


def test_small_batches_go_through_onednn_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    onednn = cpu_linear.onednn_linear

    def counting(x, weight, bias):  # noqa: ANN001, ANN202
        calls.append(x.numel() // x.shape[-1])
        return onednn(x, weight, bias)

    monkeypatch.setattr(cpu_linear, "onednn_linear", counting)
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
    assert calls == [15, 15], "oneDNN ran on other calls than the two small batches"
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
