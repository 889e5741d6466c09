"""Availability masks: subsets, the random-subset draw, the single-tensor encoding, reading a batch's mask."""

from __future__ import annotations

import pytest
import torch

from mckd.availability import (
    ModalityDropout,
    all_subsets,
    check_every_sample_has_one,
    pack_available,
    read_available,
    resolve_available,
    split_available,
    subset_name,
    unpack_available,
)


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


def test_read_available_takes_the_given_mask_then_the_batch_entry_then_all_present():
    stored = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1]])
    given = torch.tensor([[True, True, False, False], [True, False, False, False]])
    batch = {"image": torch.zeros(2, 4, 1, 1, 1), "available": stored}
    assert torch.equal(read_available(batch, 2, 4, given=given), given)
    assert torch.equal(read_available(batch, 2, 4), stored.bool())
    assert read_available(batch, 2, 4).dtype == torch.bool
    assert torch.equal(read_available({"image": batch["image"]}, 2, 4), torch.ones(2, 4, dtype=torch.bool))
    assert torch.equal(read_available([batch["image"]], 2, 4), torch.ones(2, 4, dtype=torch.bool))
    assert torch.equal(read_available({"mask": stored}, 2, 4, key="mask"), stored.bool())


@pytest.mark.parametrize(
    "stored, message",
    [
        (torch.ones(3, 4), r"'available' must have shape \[B, M\] = \(2, 4\), got \(3, 4\)"),
        (torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]]), r"samples \[1\] have none"),
    ],
)
def test_read_available_rejects_a_wrong_shape_and_an_empty_sample(stored, message):
    with pytest.raises(ValueError, match=message):
        read_available({"available": stored}, 2, 4)


def test_check_every_sample_has_one_names_the_empty_samples():
    check_every_sample_has_one(torch.tensor([[True, False], [False, True]]))
    with pytest.raises(ValueError, match=r"samples \[0, 2\] have none"):
        check_every_sample_has_one(torch.tensor([[False, False], [True, False], [False, False]]))


def test_no_mask_means_all_present_unless_the_input_is_packed():
    image = torch.randn(2, 4, 3, 3, 3)
    available = torch.tensor([[True, False, True, True], [False, False, False, True]])
    same, plain = split_available(image, None, 4)
    assert same is image and torch.equal(plain, torch.ones(2, 4, dtype=torch.bool))
    _, packed = split_available(pack_available(image, available), None, 4)
    assert torch.equal(packed, available)
    _, given = split_available(image, available.int(), 4)
    assert torch.equal(given, available)
    assert torch.equal(resolve_available(None, 2, 4, torch.device("cpu")), torch.ones(2, 4, dtype=torch.bool))


@pytest.mark.parametrize(
    "x, available, message",
    [
        (torch.zeros(1, 5, 2, 2, 2), None, r"needs 4 channels \(one per modality\) or 8"),
        (torch.zeros(1, 8, 2, 2, 2), torch.ones(1, 4), r"needs 4 channels \(one per modality\);"),
        (torch.zeros(1, 4, 2, 2, 2), torch.ones(2, 4), r"available must be \[B, M\] = \[1, 4\]"),
    ],
)
def test_split_available_rejects_inputs_it_cannot_read(x, available, message):
    with pytest.raises(ValueError, match=message):
        split_available(x, available, 4)
