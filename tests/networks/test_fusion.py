"""Fusion helpers: the availability plan, per-sample mean fill, gather/scatter of the available pairs, scaling."""

from __future__ import annotations

import pytest
import torch

from mckd.networks.fusion import (
    available_pairs,
    gather_available,
    mean_fill,
    project_mean_filled,
    scale_modalities,
    scatter_available,
    scatter_mean_fill,
)

MIXED = torch.tensor([[True, False, True, False], [False, False, False, True], [True, True, True, True]])


def test_mean_fill_replaces_missing_by_mean_of_available_per_sample() -> None:
    features = torch.tensor([[[1.0, 2.0], [9.0, 9.0], [3.0, 6.0]], [[5.0, 5.0], [7.0, 1.0], [0.0, 0.0]]])
    available = torch.tensor([[True, False, True], [False, True, False]])
    filled = mean_fill(features, available_pairs(available))
    expected = torch.tensor([[[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]], [[7.0, 1.0], [7.0, 1.0], [7.0, 1.0]]])
    assert torch.equal(filled, expected)


def test_mean_fill_never_reads_missing_entries() -> None:
    features = torch.randn(2, 3, 4, 5, requires_grad=True)
    available = torch.tensor([[True, False, True], [False, False, True]])
    poisoned = torch.where(available[:, :, None, None], features, torch.full_like(features, float("nan")))
    filled = mean_fill(poisoned, available_pairs(available))
    assert torch.isfinite(filled).all()
    filled.sum().backward()
    assert torch.isfinite(features.grad).all()
    assert (features.grad[~available] == 0).all()


def test_available_pairs_lists_the_pairs_once_for_every_step() -> None:
    pairs = available_pairs(MIXED)
    assert pairs.index.tolist() == [0, 2, 7, 8, 9, 10, 11]
    assert pairs.sample.tolist() == [0, 0, 1, 2, 2, 2, 2]
    assert pairs.counts.tolist() == [2, 1, 4]
    assert not pairs.all_present and not pairs.one_subset
    shared = available_pairs(MIXED[:1].expand(3, -1))
    assert shared.one_subset and shared.first_subset.tolist() == [0, 2]
    assert available_pairs(torch.ones(2, 4)).all_present


def test_scatter_mean_fill_equals_mean_fill_of_scatter() -> None:
    torch.manual_seed(0)
    pairs = available_pairs(MIXED)
    encoded = torch.randn(int(MIXED.sum()), 3, 2, 2)
    expected = mean_fill(scatter_available(encoded, pairs), pairs)
    assert torch.allclose(scatter_mean_fill(encoded, pairs), expected, atol=1e-6)
    zeros = scatter_available(encoded, pairs)
    assert (zeros[~MIXED] == 0).all()


def test_gather_then_scatter_round_trips_available_pairs() -> None:
    x = torch.randn(3, 4, 2, 5)
    pairs = available_pairs(MIXED)
    round_trip = scatter_available(gather_available(x, pairs), pairs)
    assert torch.equal(round_trip[MIXED], x[MIXED])


def test_sample_without_any_modality_is_rejected_when_the_plan_is_built() -> None:
    with pytest.raises(ValueError, match=r"at least one available modality; samples \[1\]"):
        available_pairs(torch.tensor([[True, False], [False, False]]))


def test_rows_that_do_not_match_the_pairs_are_rejected() -> None:
    with pytest.raises(ValueError, match="one row of features per available pair"):
        scatter_mean_fill(torch.randn(1, 3), available_pairs(torch.tensor([[True, True]])))


def test_scale_modalities_accepts_shared_and_per_sample_scales() -> None:
    features = torch.randn(2, 3, 4)
    scale = torch.tensor([0.5, 1.0, 2.0])
    assert torch.allclose(scale_modalities(features, scale), features * scale[None, :, None])
    per_sample = torch.rand(2, 3)
    assert torch.allclose(scale_modalities(features, per_sample), features * per_sample[:, :, None])
    with pytest.raises(ValueError, match="modality_scale"):
        scale_modalities(features, torch.ones(4))


@pytest.mark.parametrize("mask", [MIXED, MIXED[:1].expand(2, -1), torch.ones(2, 4, dtype=torch.bool)])
def test_scripted_fusion_helpers_give_the_eager_results(mask: torch.Tensor) -> None:
    torch.manual_seed(1)
    pairs = available_pairs(mask)
    scripted_pairs = torch.jit.script(available_pairs)(mask)
    assert all(torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b for a, b in zip(scripted_pairs, pairs))
    encoded = torch.randn(int(mask.sum()), 3, 2, 2)
    features = torch.randn(mask.shape[0], 4, 3, 2)
    weight, bias = torch.randn(5, 12, 1, 1, 1), torch.randn(5)
    cases = [
        (scatter_mean_fill, (encoded, pairs)),
        (scatter_available, (encoded, pairs)),
        (gather_available, (features, pairs)),
        (mean_fill, (features, pairs)),
        (scale_modalities, (features, torch.rand(4))),
        (project_mean_filled, (encoded, pairs, weight, bias)),
    ]
    for fn, args in cases:
        assert torch.equal(torch.jit.script(fn)(*args), fn(*args)), fn.__name__
