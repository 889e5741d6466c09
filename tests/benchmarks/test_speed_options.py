"""Every speed option gives the results of the plain computation within tolerance (small sizes, under a minute).

Covered: the skip projection folded over the available modalities (vs fill-then-project), the fast x2 linear
upsample (vs ``F.interpolate``), the encoder's activation checkpointing (identical gradients, scriptable copy), and
the inference options of the bundle (``sw_batch_size``, bfloat16 autocast, ``torch.compile``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.inferers import SlidingWindowInferer

from mckd.availability import all_subsets, pack_available
from mckd.networks import MultiModalSegNet
from mckd.networks.fusion import available_pairs, gather_available, project_mean_filled, scatter_mean_fill
from mckd.networks.upsample import upsample2x_linear

M = 4


def _mixed_masks() -> list[torch.Tensor]:
    subsets = torch.tensor(all_subsets(M), dtype=torch.bool)
    return [subsets, subsets[:1].expand(3, -1).clone(), subsets[5:6].expand(2, -1).clone(), torch.ones(2, M).bool()]


@pytest.mark.parametrize("mask_index", range(4))
def test_folded_projection_equals_fill_then_project_with_gradients(mask_index: int) -> None:
    available = _mixed_masks()[mask_index]
    torch.manual_seed(0)
    channels = 3
    encoded = torch.randn(int(available.sum()), channels, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, M * channels, 1, 1, 1, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True)
    pairs = available_pairs(available)
    reference = F.conv3d(scatter_mean_fill(encoded, pairs).flatten(1, 2), weight, bias)
    folded = project_mean_filled(encoded, pairs, weight, bias)
    assert torch.allclose(folded, reference, atol=1e-12)
    grad = torch.randn_like(reference)
    expected = torch.autograd.grad(reference, (encoded, weight, bias), grad)
    got = torch.autograd.grad(folded, (encoded, weight, bias), grad)
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("backbone", ["light", "resnet50_aspp"])
def test_network_decoder_matches_filled_skips_for_every_subset(backbone: str) -> None:
    torch.manual_seed(0)
    options = {"layers": (1, 1, 1, 1), "widths": (8, 8, 8, 8), "feature_channels": 16} if backbone != "light" else {}
    net = MultiModalSegNet(M, 3, backbone=backbone, **options).eval()
    available = torch.tensor(all_subsets(M), dtype=torch.bool)
    pairs = available_pairs(available)
    x = torch.randn(len(available), M, 32, 32, 32)
    with torch.no_grad():
        encoded = net.encoder(gather_available(x.unsqueeze(2), pairs))
        filled = [scatter_mean_fill(f, pairs).flatten(1, 2) for f in encoded[:-1]]
        bottleneck = scatter_mean_fill(encoded[-1], pairs).flatten(1, 2)
        reference = net.decoder(bottleneck, filled)
        # float32 sums in another order: compared with the logits' range (they reach about 25 here)
        assert (net(x, available) - reference).abs().max() <= 5e-6 * reference.abs().max()


@pytest.mark.parametrize("shape,flags", [((2, 3, 5, 6, 7), [True, True, True]), ((1, 2, 4, 1, 6), [False, True, True])])
def test_fast_upsample_equals_interpolate_with_and_without_autograd(shape: tuple, flags: list[bool]) -> None:
    x = torch.randn(shape)
    expected = F.interpolate(x, scale_factor=[2.0 if f else 1.0 for f in flags], mode="trilinear", align_corners=False)
    with torch.no_grad():
        assert torch.allclose(upsample2x_linear(x, flags), expected, atol=1e-6)
        assert torch.allclose(torch.jit.script(upsample2x_linear)(x, flags), expected, atol=1e-6)
    leaf = x.clone().requires_grad_(True)
    upsample2x_linear(leaf, flags).sum().backward()
    assert leaf.grad is not None


@pytest.mark.parametrize("backbone", ["light", "resnet50_aspp"])
def test_activation_checkpointing_gives_identical_gradients_and_scripts(backbone: str) -> None:
    options = {"layers": (1, 2, 1, 1), "widths": (8, 8, 8, 8), "feature_channels": 16} if backbone != "light" else {}
    torch.manual_seed(0)
    plain = MultiModalSegNet(M, 3, backbone=backbone, **options)
    checkpointed = MultiModalSegNet(M, 3, backbone=backbone, activation_checkpointing=True, **options)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, M, 32, 32, 32)
    available = torch.tensor([[True, False, True, True], [False, True, False, False]])
    expected = torch.autograd.grad(plain(x, available).square().mean(), list(plain.parameters()))
    got = torch.autograd.grad(checkpointed(x, available).square().mean(), list(checkpointed.parameters()))
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, atol=1e-7)
    scripted = torch.jit.script(checkpointed.eval())
    with torch.no_grad():
        assert torch.allclose(scripted(x, available), plain.eval()(x, available), atol=1e-5)


def _infer(net: torch.nn.Module, x: torch.Tensor, sw_batch_size: int = 1, amp: bool = False) -> torch.Tensor:
    inferer = SlidingWindowInferer(roi_size=(16, 32, 32), sw_batch_size=sw_batch_size, overlap=0.25, mode="gaussian")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        return torch.sigmoid(inferer(x, net).float())


def _case() -> tuple[MultiModalSegNet, torch.Tensor]:
    torch.manual_seed(0)
    net = MultiModalSegNet(M, 3, backbone="light", filters=(4, 8), units_per_level=1).eval()
    image = torch.randn(1, M, 32, 48, 48)
    return net, pack_available(image, torch.tensor([[True, False, True, False]]))


def test_sw_batch_size_does_not_change_the_output() -> None:
    net, x = _case()
    assert torch.allclose(_infer(net, x, sw_batch_size=4), _infer(net, x), atol=1e-5)


def test_bfloat16_autocast_stays_close_to_float32() -> None:
    net, x = _case()
    assert (_infer(net, x, amp=True) - _infer(net, x)).abs().max() < 0.05


@pytest.mark.slow
def test_torch_compile_gives_the_eager_output() -> None:
    net, x = _case()
    compiled = torch.compile(net)
    assert torch.allclose(_infer(compiled, x), _infer(net, x), atol=1e-4)
