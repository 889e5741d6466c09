"""Label map <-> region channels, small-ET removal and packing availability into one tensor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Orientationd

from mckd.brats.labels import ConvertLabelToRegions, ConvertLabelToRegionsd, RegionsToLabel, RemoveSmallEnhancingTumour
from mckd.brats.loading import PackAvailabilityd

# One voxel per label value (a 1x1x5 map); expected ET, TC, WT written out by hand for each convention.
HAND_CASES = {
    # 2018: 1 NCR/NET, 2 ED, 4 ET
    "brats2018": ([0, 1, 2, 4, 0], [[0, 0, 0, 1, 0], [0, 1, 0, 1, 0], [0, 1, 1, 1, 0]]),
    # 2023: 1 NETC, 2 SNFH, 3 ET
    "brats2023": ([0, 1, 2, 3, 0], [[0, 0, 0, 1, 0], [0, 1, 0, 1, 0], [0, 1, 1, 1, 0]]),
    # MSD: 1 oedema, 2 non-enhancing tumour, 3 enhancing tumour
    "msd": ([0, 1, 2, 3, 0], [[0, 0, 0, 1, 0], [0, 0, 1, 1, 0], [0, 1, 1, 1, 0]]),
}


def _label(values) -> MetaTensor:
    return MetaTensor(torch.tensor(values, dtype=torch.float32).reshape(1, 1, 1, -1), meta={"filename_or_obj": "x.nii"})


@pytest.mark.parametrize("convention", sorted(HAND_CASES))
def test_label_to_regions_matches_the_hand_written_regions(convention):
    values, expected = HAND_CASES[convention]
    regions = ConvertLabelToRegions(convention)(_label(values))
    assert regions.shape == (3, 1, 1, 5) and regions.dtype == torch.float32
    assert regions.reshape(3, -1).tolist() == expected
    assert isinstance(regions, MetaTensor) and regions.meta["filename_or_obj"] == "x.nii"


@pytest.mark.parametrize("convention", sorted(HAND_CASES))
def test_regions_to_label_round_trips_every_convention(convention):
    values, _ = HAND_CASES[convention]
    label = _label(values)
    back = RegionsToLabel(convention, threshold=None)(ConvertLabelToRegions(convention)(label))
    assert back.shape == (1, 1, 1, 5) and back.dtype == torch.uint8
    assert back.flatten().tolist() == values


def test_regions_to_label_thresholds_probabilities_and_paints_et_last():
    # ET predicted outside TC and WT still ends up as ET (the compose order paints it last).
    probs = torch.tensor([[0.9, 0.2, 0.1], [0.1, 0.7, 0.1], [0.1, 0.8, 0.6]]).reshape(3, 1, 1, 3)
    assert RegionsToLabel("brats2018")(probs).flatten().tolist() == [4, 1, 2]
    assert RegionsToLabel("brats2023")(probs).flatten().tolist() == [3, 1, 2]


def test_dict_transform_reads_the_convention_of_each_case():
    transform = ConvertLabelToRegionsd("label", convention="brats2018", convention_key="label_convention")
    out_2023 = transform({"label": _label([0, 3]), "label_convention": "brats2023"})
    out_default = transform({"label": _label([0, 4])})
    assert out_2023["label"].reshape(3, -1)[:, 1].tolist() == [1, 1, 1]
    assert out_default["label"].reshape(3, -1)[:, 1].tolist() == [1, 1, 1]


def test_a_label_value_outside_the_convention_is_an_error_naming_the_file():
    with pytest.raises(ValueError, match=r"x\.nii.*\[3\].*brats2018"):
        ConvertLabelToRegions("brats2018")(_label([0, 1, 3]))


def test_label_without_channel_dimension_is_rejected():
    with pytest.raises(ValueError, match="channel-first"):
        ConvertLabelToRegions()(torch.zeros(4, 4, 4))


def test_small_enhancing_tumour_becomes_core_and_large_one_stays():
    regions = torch.zeros(3, 4, 4, 4)
    regions[0, 0, 0, :2] = 1  # 2 ET voxels, outside the predicted core
    regions[2] = 1
    small = RemoveSmallEnhancingTumour(min_size=3)(regions)
    assert small[0].sum() == 0 and small[1, 0, 0, :2].tolist() == [1, 1] and small[2].sum() == 64
    kept = RemoveSmallEnhancingTumour(min_size=2)(regions)
    assert torch.equal(kept, regions)


def test_pack_availability_keeps_meta_and_applied_operations_for_invertd():
    affine = torch.diag(torch.tensor([-1.0, -1.0, 1.0, 1.0]))
    image = MetaTensor(torch.rand(4, 3, 4, 5), affine=affine, meta={"filename_or_obj": "case_flair.nii.gz"})
    available = torch.tensor([True, False, True, True])
    data = Orientationd("image", axcodes="RAS", labels=None)({"image": image, "available": available})
    packed = PackAvailabilityd("image")(data)["image"]
    assert packed.shape == (8, 3, 4, 5)
    assert packed[4:].flatten(1).amax(1).tolist() == [1, 0, 1, 1]
    assert torch.all(packed[1] == 0) and torch.equal(packed[0], data["image"][0])
    assert packed.meta["filename_or_obj"] == "case_flair.nii.gz"
    assert len(packed.applied_operations) == 1 and packed.applied_operations[0]["class"] == "Orientation"
    np.testing.assert_allclose(packed.affine, data["image"].affine)
