"""Convolution layers: the oneDNN CPU path and weight standardisation."""

from __future__ import annotations

import torch
from torch import nn

from mckd.networks.conv import OneDNNConv3d, use_onednn_conv3d
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
