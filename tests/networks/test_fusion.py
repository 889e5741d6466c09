"""Fusion helpers: per-sample mean fill, gather/scatter of available pairs, importance scaling."""

from __future__ import annotations

import pytest
import torch

from mckd.networks.fusion import (
    gather_available,
    mean_fill,
    scale_modalities,
    scatter_available,
    scatter_mean_fill,
)


def test_mean_fill_replaces_missing_by_mean_of_available_per_sample() -> None:
    features = torch.tensor([[[1.0, 2.0], [9.0, 9.0], [3.0, 6.0]], [[5.0, 5.0], [7.0, 1.0], [0.0, 0.0]]])
    available = torch.tensor([[True, False, True], [False, True, False]])
    filled = mean_fill(features, available)
    expected = torch.tensor([[[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]], [[7.0, 1.0], [7.0, 1.0], [7.0, 1.0]]])
    assert torch.equal(filled, expected)


def test_mean_fill_never_reads_missing_entries() -> None:
    features = torch.randn(2, 3, 4, 5, requires_grad=True)
    available = torch.tensor([[True, False, True], [False, False, True]])
    poisoned = torch.where(available[:, :, None, None], features, torch.full_like(features, float("nan")))
    filled = mean_fill(poisoned, available)
    assert torch.isfinite(filled).all()
    filled.sum().backward()
    assert torch.isfinite(features.grad).all()
    assert (features.grad[~available] == 0).all()


def test_scatter_mean_fill_equals_mean_fill_of_scatter() -> None:
    torch.manual_seed(0)
    available = torch.tensor([[True, False, True, False], [False, False, False, True], [True, True, True, True]])
    encoded = torch.randn(int(available.sum()), 3, 2, 2)
    expected = mean_fill(scatter_available(encoded, available), available)
    assert torch.allclose(scatter_mean_fill(encoded, available), expected, atol=1e-6)
    zeros = scatter_available(encoded, available)
    assert (zeros[~available] == 0).all()


def test_gather_then_scatter_round_trips_available_pairs() -> None:
    x = torch.randn(3, 4, 2, 5)
    available = torch.tensor([[True, False, True, False], [False, False, False, True], [True, True, False, True]])
    round_trip = scatter_available(gather_available(x, available), available)
    assert torch.equal(round_trip[available], x[available])


def test_fill_rejects_sample_without_any_modality() -> None:
    available = torch.tensor([[True, False], [False, False]])
    with pytest.raises(ValueError, match="at least one available"):
        mean_fill(torch.randn(2, 2, 3), available)
    with pytest.raises(ValueError, match="at least one available"):
        scatter_mean_fill(torch.randn(1, 3), available)


def test_scale_modalities_accepts_shared_and_per_sample_scales() -> None:
    features = torch.randn(2, 3, 4)
    scale = torch.tensor([0.5, 1.0, 2.0])
    assert torch.allclose(scale_modalities(features, scale), features * scale[None, :, None])
    per_sample = torch.rand(2, 3)
    assert torch.allclose(scale_modalities(features, per_sample), features * per_sample[:, :, None])
    with pytest.raises(ValueError, match="modality_scale"):
        scale_modalities(features, torch.ones(4))


def test_fusion_helpers_are_scriptable() -> None:
    available = torch.tensor([[True, False, True]])
    encoded = torch.randn(2, 5)
    scripted = torch.jit.script(scatter_mean_fill)
    assert torch.equal(scripted(encoded, available), scatter_mean_fill(encoded, available))
    assert torch.jit.script(mean_fill) is not None
    assert torch.jit.script(scale_modalities) is not None
