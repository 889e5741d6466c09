"""BraTS 2024/2025 post-treatment glioma: the convention (RC = label 4), its layout, the label transforms with RC."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mckd.brats.cases import CaseError
from mckd.brats.conventions import (
    BRATS2018_LABELS,
    BRATS2023_LABELS,
    BRATS2024_LABELS,
    LABEL_CONVENTIONS,
    LAYOUTS,
    REGION_DISPLAY_NAMES,
    REGIONS,
)
from mckd.brats.labels import (
    ConvertLabelToRegions,
    ConvertLabelToRegionsd,
    RegionsToLabel,
    RegionsToLabeld,
    RemoveSmallEnhancingTumour,
)
from mckd.monitoring import slice_mosaic

POST = ("ET", "TC", "WT", "RC")
#: One voxel per label value 0..4 of the 2024 convention.
LABEL = torch.tensor([[[0, 1, 2, 3, 4]]], dtype=torch.uint8)


def test_the_2024_convention_is_the_challenges():
    assert LABEL_CONVENTIONS["brats2024"] is BRATS2024_LABELS
    assert dict(BRATS2024_LABELS.labels) == {1: "NETC", 2: "SNFH", 3: "ET", 4: "RC"}
    assert dict(BRATS2024_LABELS.regions) == {"ET": (3,), "TC": (1, 3), "WT": (1, 2, 3), "RC": (4,)}
    assert BRATS2024_LABELS.region_names == POST and BRATS2024_LABELS.valid_values == {0, 1, 2, 3, 4}
    assert REGION_DISPLAY_NAMES["RC"] == "Resection cavity"
    # the default region set and the earlier conventions are unchanged
    assert REGIONS == ("ET", "TC", "WT") == BRATS2023_LABELS.region_names == BRATS2018_LABELS.region_names
    assert BRATS2018_LABELS.regions["ET"] == (4,)


def test_the_2024_layout_has_the_2023_file_names_and_the_2024_labels():
    layout, previous = LAYOUTS["brats2024"], LAYOUTS["brats2023"]
    assert layout.label_convention is BRATS2024_LABELS
    assert layout.modality_file("BraTS-GLI-00000-000", "flair") == "BraTS-GLI-00000-000-t2f.nii.gz"
    assert layout.modality_file("BraTS-GLI-00000-000", "t1ce") == "BraTS-GLI-00000-000-t1c.nii.gz"
    assert layout.label_file("BraTS-GLI-00000-000") == "BraTS-GLI-00000-000-seg.nii.gz"
    assert dict(layout.modality_suffixes) == dict(previous.modality_suffixes)


def test_label_to_regions_adds_rc_as_its_own_fourth_channel():
    regions = ConvertLabelToRegions("brats2024", regions=POST)(LABEL)
    assert regions.shape == (4, 1, 5) and regions.dtype == torch.float32
    expected = {"ET": [3], "TC": [1, 3], "WT": [1, 2, 3], "RC": [4]}
    for channel, name in enumerate(POST):
        assert torch.nonzero(regions[channel, 0]).flatten().tolist() == expected[name], name


def test_without_the_rc_channel_a_cavity_is_background_of_the_three_tumour_regions():
    regions = ConvertLabelToRegions("brats2024")(LABEL)
    assert regions.shape == (3, 1, 5) and not regions[:, 0, 4].any()


def test_the_2018_convention_keeps_label_4_as_enhancing_tumour():
    regions = ConvertLabelToRegions("brats2018")(torch.tensor([[[0, 1, 2, 4]]]))
    assert regions[REGIONS.index("ET"), 0].tolist() == [0, 0, 0, 1]
    with pytest.raises(ValueError, match=r"case 'Brats18_X'.*'brats2018' label convention defines no region \['RC'\]"):
        ConvertLabelToRegions("brats2018", regions=POST)(torch.tensor([[[0, 4]]]), case_id="Brats18_X")


def test_a_2023_map_refuses_label_4_naming_the_case():
    with pytest.raises(CaseError, match=r"values \[4\].*'brats2023'"):
        ConvertLabelToRegions("brats2023")(LABEL, case_id="BraTS-GLI-00001-000")


def test_the_dict_transform_takes_the_regions_and_each_cases_convention():
    convert = ConvertLabelToRegionsd("label", convention_key="label_convention", regions=POST)
    out = convert({"label": LABEL, "label_convention": "brats2024", "case_id": "BraTS-GLI-00001-000"})
    assert out["label"].shape[0] == 4 and out["label"][3, 0, 4] == 1
    refused = r"case 'BraTS-GLI-00002-000'.*'brats2023'.*need one of the conventions \['brats2024'\]"
    with pytest.raises(ValueError, match=refused):
        convert({"label": LABEL[..., :4], "label_convention": "brats2023", "case_id": "BraTS-GLI-00002-000"})


def test_regions_to_label_writes_4_where_rc_is_predicted():
    probabilities = torch.zeros(4, 2, 3)
    probabilities[3, 0, :] = 0.9  # RC predicted on the first row only
    probabilities[2, 1, 0] = 0.8  # oedema (WT only) elsewhere
    label = RegionsToLabel("brats2024")(probabilities)
    assert label.dtype == torch.uint8 and label.shape == (1, 2, 3)
    assert label[0].tolist() == [[4, 4, 4], [2, 0, 0]]


def test_a_round_trip_of_a_2024_map_through_its_regions_is_exact():
    rng = np.random.default_rng(0)
    label = torch.as_tensor(rng.choice([0, 1, 2, 3, 4], size=(1, 6, 6, 6)).astype(np.uint8))
    regions = ConvertLabelToRegions("brats2024", regions=POST)(label)
    assert torch.equal(RegionsToLabel("brats2024", threshold=None)(regions), label)


def test_overlapping_predictions_paint_cavity_over_oedema_and_tumour_core_over_cavity():
    binary = torch.zeros(4, 1, 3)
    binary[POST.index("RC")] = 1
    binary[POST.index("WT"), 0, :] = 1  # all three voxels also WT
    binary[POST.index("TC"), 0, 1:] = 1  # the last two also TC
    binary[POST.index("ET"), 0, 2] = 1  # the last also ET
    assert RegionsToLabel("brats2024", threshold=None)(binary)[0, 0].tolist() == [4, 1, 3]


def test_a_three_region_model_can_write_2024_labels_without_rc():
    label = RegionsToLabeld("pred", convention="brats2024", regions=REGIONS)({"pred": torch.ones(3, 1, 2)})["pred"]
    assert label[0].tolist() == [[3, 3]]


def test_the_channel_count_must_match_the_regions_and_rc_needs_a_convention_with_a_value_for_it():
    with pytest.raises(ValueError, match=r"expected 4 region channels \['ET', 'TC', 'WT', 'RC'\].*'brats2024'"):
        RegionsToLabel("brats2024")(torch.zeros(3, 2, 2))
    with pytest.raises(ValueError, match=r"'brats2023' label convention defines no region \['RC'\]"):
        RegionsToLabel("brats2023", regions=POST)
    with pytest.raises(ValueError, match=r"regions must be distinct names.*\['XX'\] unknown"):
        RegionsToLabel("brats2024", regions=("ET", "XX"))


def test_the_small_et_rule_works_on_four_channels_and_leaves_rc_alone():
    regions = torch.zeros(4, 4, 4)
    regions[0, 0, 0] = 1  # one ET voxel
    regions[3, 2:, 2:] = 1  # a cavity
    out = RemoveSmallEnhancingTumour(min_size=5, regions=POST)(regions)
    assert out[0].sum() == 0 and out[1, 0, 0] == 1 and torch.equal(out[3], regions[3])
    with pytest.raises(ValueError, match=r"expected 3 region channels"):
        RemoveSmallEnhancingTumour(min_size=5)(regions)
    with pytest.raises(ValueError, match="needs ET and TC"):
        RemoveSmallEnhancingTumour(regions=("WT", "RC"))


def test_the_slice_image_shows_the_cavity_in_its_own_colour():
    label = torch.zeros(4, 6, 8, 8)
    label[POST.index("WT"), 3, 1:3, 1:3] = 1
    label[POST.index("RC"), 3, 5:7, 5:7] = 1
    mosaic = slice_mosaic(torch.rand(8, 6, 8, 8), label, label, POST, num_modalities=4)
    colours = {tuple(int(c) for c in px) for px in mosaic.reshape(-1, mosaic.shape[-1])}
    assert (40, 110, 255) in colours and (0, 170, 0) in colours
