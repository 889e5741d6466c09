"""Availability masks: subset enumeration, the random-subset draw and the single-tensor encoding."""

from __future__ import annotations

import pytest
import torch

from mckd.availability import ModalityDropout, all_subsets, pack_available, subset_name, unpack_available


def test_all_subsets_of_four_modalities_are_the_fifteen_non_empty_ones():
    subsets = all_subsets(4)
    assert len(subsets) == 15 == len(set(subsets))
    assert all(any(s) for s in subsets)
    assert [sum(s) for s in subsets] == [1] * 4 + [2] * 6 + [3] * 4 + [4]


def test_subset_name_joins_present_modalities_in_order():
    assert subset_name((True, False, True, False), ("FLAIR", "T1", "T1ce", "T2")) == "FLAIR+T1ce"


def test_dropout_keeps_everything_during_warmup():
    policy = ModalityDropout(4, warmup_iterations=5)
    assert policy(3, iteration=5).all()


def test_dropout_draws_every_subset_size_and_never_an_empty_one():
    policy = ModalityDropout(4)
    masks = policy(4000, iteration=1, generator=torch.Generator().manual_seed(0))
    sizes = masks.sum(1)
    assert sizes.min() >= 1
    counts = torch.bincount(sizes, minlength=5)[1:].float() / len(sizes)
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.03)
    per_modality = masks.float().mean(0)
    assert torch.allclose(per_modality, per_modality.mean().expand(4), atol=0.03)


def test_dropout_per_batch_shares_one_subset():
    masks = ModalityDropout(4, per_sample=False)(8, iteration=1, generator=torch.Generator().manual_seed(1))
    assert (masks == masks[0]).all()


def test_dropout_is_repeatable_with_a_seeded_generator():
    policy = ModalityDropout(4, min_keep=2, max_keep=3)
    a = policy(16, 1, torch.Generator().manual_seed(7))
    b = policy(16, 1, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.sum(1).min() >= 2 and a.sum(1).max() <= 3


@pytest.mark.parametrize("kwargs", [{"min_keep": 0}, {"max_keep": 5}, {"min_keep": 3, "max_keep": 2}])
def test_dropout_rejects_inconsistent_bounds(kwargs):
    with pytest.raises(ValueError, match="min_keep"):
        ModalityDropout(4, **kwargs)


def test_pack_then_unpack_round_trips_and_zeroes_missing_channels():
    image = torch.randn(2, 4, 5, 6, 7)
    available = torch.tensor([[True, False, True, True], [False, False, False, True]])
    packed = pack_available(image, available)
    assert packed.shape == (2, 8, 5, 6, 7)
    restored, restored_available = unpack_available(packed, 4)
    assert torch.equal(restored_available, available)
    assert torch.equal(restored[~available], torch.zeros_like(restored[~available]))
    assert torch.equal(restored[available], image[available])


def test_zero_padding_and_background_windows_keep_a_present_modality_present():
    image = torch.zeros(1, 4, 8, 8, 8)  # all-background window of present modalities
    available = torch.tensor([[True, True, False, True]])
    packed = torch.nn.functional.pad(pack_available(image, available), (0, 4, 0, 4, 0, 4))
    _, restored = unpack_available(packed, 4)
    assert torch.equal(restored, available)


def test_unpack_rejects_a_tensor_without_flag_channels():
    with pytest.raises(ValueError, match="8 channels"):
        unpack_available(torch.zeros(1, 4, 4, 4, 4), 4)
