"""The published backbone: size, a tiny-crop training step, and the zero-image guard of paper_exact mode."""

from __future__ import annotations

import pytest
import torch

from mckd.networks import MultiModalSegNet
from mckd.networks.resnet_aspp import ResNetASPPEncoder

CROP = (32, 32, 32)  # smallest crop: total stride (16, 32, 32) and more than one bottleneck voxel


def _finite_grads(net: torch.nn.Module) -> bool:
    return all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_resnet50_aspp_has_the_published_size() -> None:
    net = MultiModalSegNet(4, 3, backbone="resnet50_aspp")
    count = sum(p.numel() for p in net.parameters())
    assert abs(count - 43.7e6) <= 0.01 * 43.7e6
    assert count == 43_656_160  # published 43,719,676 - attention 63,000 - 4 logits - B6 norm 512


@pytest.mark.parametrize("paper_exact", [False, True])
def test_resnet50_aspp_single_modality_step_from_scratch_stays_finite(paper_exact: bool) -> None:
    torch.manual_seed(0)
    net = MultiModalSegNet(4, 3, backbone="resnet50_aspp", paper_exact=paper_exact).train()
    available = torch.tensor([[False, True, False, False]])
    logits = net(torch.randn(1, 4, *CROP), available)
    assert logits.shape == (1, 3, *CROP)
    torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.rand_like(logits)).backward()
    assert _finite_grads(net)
    assert net.encoder.stem[0].weight.grad.abs().sum() > 0


def test_zero_image_backward_through_resnet_encoder_is_what_the_guard_prevents() -> None:
    torch.manual_seed(0)
    encoder = ResNetASPPEncoder().train()
    outputs = encoder(torch.zeros(1, 1, *CROP))
    sum((o * torch.randn_like(o)).sum() for o in outputs[:-1]).backward()
    assert not _finite_grads(encoder)
