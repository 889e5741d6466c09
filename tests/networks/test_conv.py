"""Convolution layers: the oneDNN CPU path and weight standardisation."""

from __future__ import annotations

import torch
from torch import nn

import pytest

from mckd.networks.conv import BlockTransposedConv3d, OneDNNConv3d, use_onednn_conv3d
from mckd.networks.ws_conv import WeightStandardizedConv3d


def test_onednn_conv_matches_conv3d_forward_and_gradients() -> None:
    torch.manual_seed(0)
    reference = nn.Conv3d(3, 5, 3, stride=2, padding=2, dilation=2)
    fast = use_onednn_conv3d(nn.Sequential(nn.Conv3d(3, 5, 3, stride=2, padding=2, dilation=2)))[0]
    fast.load_state_dict(reference.state_dict())
    assert isinstance(fast, OneDNNConv3d)
    x1 = torch.randn(1, 3, 9, 10, 11, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    y1, y2 = reference(x1), fast(x2)
    assert torch.allclose(y1, y2, atol=1e-5)
    grad = torch.randn_like(y1)
    y1.backward(grad)
    y2.backward(grad)
    assert torch.allclose(x1.grad, x2.grad, atol=1e-5)
    assert torch.allclose(reference.weight.grad, fast.weight.grad, atol=1e-4)
    assert torch.allclose(torch.jit.script(fast)(x2), y2)


def test_weight_standardized_conv_uses_zero_mean_unit_variance_kernel() -> None:
    torch.manual_seed(0)
    conv = WeightStandardizedConv3d(2, 4, 3, padding=1)
    with torch.no_grad():
        conv.weight.mul_(7.0).add_(3.0)
    flat = conv.weight.reshape(4, -1)
    standardized = ((flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True)).reshape_as(conv.weight)
    x = torch.randn(1, 2, 5, 5, 5)
    expected = nn.functional.conv3d(x, standardized, padding=1)
    assert torch.allclose(conv(x), expected, atol=1e-4)


def _ws_conv() -> WeightStandardizedConv3d:
    torch.manual_seed(0)
    return WeightStandardizedConv3d(2, 4, 3, padding=1).eval()


def test_kept_kernel_is_reused_without_gradients_and_gives_the_same_output() -> None:
    conv, x = _ws_conv(), torch.randn(1, 2, 5, 5, 5)
    with torch.inference_mode():
        first = conv.kernel()
        assert conv.kernel() is first
        kept = conv(x)
    with torch.no_grad():
        assert conv.kernel() is first
    with torch.no_grad():
        fresh = conv._conv_forward(x, conv.standardize(), conv.bias)
    assert torch.equal(kept, fresh)


def test_kept_kernel_follows_every_change_of_the_weight() -> None:
    conv = _ws_conv()
    optimizer = torch.optim.SGD(conv.parameters(), lr=0.1)
    changes = [
        lambda: (conv(torch.randn(1, 2, 4, 4, 4)).sum().backward(), optimizer.step()),
        lambda: conv.load_state_dict({"weight": torch.randn_like(conv.weight)}),
        lambda: conv.weight.detach().mul_(2.0),
        lambda: conv.double(),
        lambda: setattr(conv, "ws_eps", 1.0),
    ]
    for change in changes:
        with torch.no_grad():
            before = conv.kernel()
        change()
        with torch.no_grad():
            after = conv.kernel()
            assert after is not before
            assert torch.equal(after, conv.standardize())
            assert after.dtype == conv.weight.dtype


def test_forwards_that_record_gradients_standardise_afresh_and_drop_the_kept_kernel() -> None:
    conv = _ws_conv()
    with torch.inference_mode():
        conv.kernel()
    conv.weight.requires_grad_(False)
    x = torch.randn(1, 2, 4, 4, 4, requires_grad=True)
    conv(x).sum().backward()  # an inference-mode kernel could not be saved for this backward
    assert x.grad is not None and conv._kept is None
    conv.weight.requires_grad_(True)
    conv(x).sum().backward()
    assert conv.weight.grad is not None


def test_scripted_weight_standardized_conv_matches_eager() -> None:
    conv, x = _ws_conv(), torch.randn(1, 2, 5, 5, 5)
    scripted = torch.jit.script(conv)
    with torch.no_grad():
        assert torch.equal(scripted(x), conv(x))


@pytest.mark.parametrize(
    "batch, c_in, c_out, size, bias",
    [(1, 64, 16, 2, False), (2, 64, 8, 2, True), (1, 4, 2, 8, True)],  # matmul, matmul, PyTorch's kernel
)
def test_block_transposed_conv_matches_conv_transpose3d_forward_and_gradients(
    batch: int, c_in: int, c_out: int, size: int, bias: bool
) -> None:
    torch.manual_seed(0)
    reference = nn.ConvTranspose3d(c_in, c_out, 2, stride=2, bias=bias).double()
    fast = use_onednn_conv3d(nn.Sequential(nn.ConvTranspose3d(c_in, c_out, 2, stride=2, bias=bias)))[0].double()
    fast.load_state_dict(reference.state_dict())
    assert isinstance(fast, BlockTransposedConv3d)
    x = torch.randn(batch, c_in, size, size + 1, size, dtype=torch.float64, requires_grad=True)
    y_ref, y = reference(x), fast(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(y_ref)
    for a, b in zip(
        torch.autograd.grad(y, [x, *fast.parameters()], grad),
        torch.autograd.grad(y_ref, [x, *reference.parameters()], grad),
    ):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(fast)(x), y_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(fast(x, output_size=list(y_ref.shape[2:])), y_ref, rtol=1e-12, atol=1e-12)


def test_only_non_overlapping_transposed_convs_are_reclassed() -> None:
    overlapping = nn.ConvTranspose3d(4, 2, 3, stride=2, padding=1)
    block = nn.ConvTranspose3d(4, 2, 2, stride=2)
    use_onednn_conv3d(nn.Sequential(overlapping, block))
    assert type(overlapping) is nn.ConvTranspose3d and type(block) is BlockTransposedConv3d
