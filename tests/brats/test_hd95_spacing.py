"""HD95 in mm on anisotropic and oblique cases, through the BraTS bundle's own preprocessing (which transposes the
array to D, H, W without touching the affine): the spacing must be that of the array's axes after every transform."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset
from monai.inferers import SimpleInferer
from monai.metrics import HausdorffDistanceMetric
from monai.transforms import Compose

from mckd.brats.conventions import MODALITIES, MODALITY_DISPLAY_NAMES, REGIONS
from mckd.evaluation import SubsetEvaluator

TRAIN_CONFIG = Path(__file__).resolve().parents[2] / "bundle" / "brats_mri_mckd_segmentation" / "configs" / "train.json"
SHAPE = (20, 22, 12)  # file axes x, y, z; z is the 3 mm axis
SPACING = (1.0, 1.0, 3.0)


def _rotation_about_x(degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _box(lo: tuple[int, int, int], hi: tuple[int, int, int], shift: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    mask = np.zeros(SHAPE, bool)
    mask[tuple(slice(a + d, b + d) for a, b, d in zip(lo, hi, shift))] = True
    return mask


def _write_case(folder: Path, case_id: str, rotation_degrees: float) -> dict:
    """A BraTS 2018-format case whose FLAIR / T1 / T1ce are the ET / TC / WT masks the stand-in network thresholds:
    FLAIR is ET shifted one voxel along the 3 mm file axis z, T1ce is WT shifted one voxel along the 1 mm axis y."""
    affine = np.eye(4)
    affine[:3, :3] = _rotation_about_x(rotation_degrees) @ np.diag(SPACING)
    et, tc, wt = _box((8, 8, 4), (12, 12, 8)), _box((6, 6, 3), (14, 14, 9)), _box((4, 4, 2), (16, 16, 10))
    label = np.zeros(SHAPE, np.int16)
    label[wt], label[tc], label[et] = 2, 1, 4
    # background 1 and foreground 3: after NormalizeIntensityd (nonzero, channel-wise) the foreground is above 0.5
    images = {
        "flair": _box((8, 8, 4), (12, 12, 8), shift=(0, 0, 1)),
        "t1": tc,
        "t1ce": _box((4, 4, 2), (16, 16, 10), shift=(0, 1, 0)),
        "t2": np.zeros(SHAPE, bool),
    }
    case = folder / case_id
    case.mkdir(parents=True)
    item = {"case_id": case_id, "label_convention": "brats2018", "image": []}
    for modality in MODALITIES:
        path = case / f"{case_id}_{modality}.nii.gz"
        nib.save(nib.Nifti1Image(np.where(images[modality], 3.0, 1.0).astype(np.float32), affine), path)
        item["image"].append(str(path))
    item["label"] = str(case / f"{case_id}_seg.nii.gz")
    nib.save(nib.Nifti1Image(label, affine), item["label"])
    return item


def _bundle_preprocessing() -> Compose:
    parser = ConfigParser()
    parser.read_config(str(TRAIN_CONFIG))
    return Compose(parser.get_parsed_content("train#preprocessing_transforms"))


@pytest.fixture(scope="module")
def scored(tmp_path_factory, net_factory):
    folder = tmp_path_factory.mktemp("anisotropic")
    items = [_write_case(folder, "Brats18_AXIS_1", 0.0), _write_case(folder, "Brats18_OBLQ_1", 25.0)]
    dataset = Dataset(items, transform=_bundle_preprocessing())
    evaluator = SubsetEvaluator(
        net_factory(),
        DataLoader(dataset, batch_size=1, num_workers=0),
        SimpleInferer(),
        subsets=[(True, True, True, False)],
        region_names=REGIONS,
        modality_names=[MODALITY_DISPLAY_NAMES[m] for m in MODALITIES],
    )
    return evaluator.run(), dataset


def test_hd95_of_a_shift_along_the_3mm_axis_is_3mm_after_the_bundle_transposes_the_array(scored):
    results, _ = scored
    for c, case in enumerate(results.case_ids):
        et, tc, wt = results.hd95[0, c]
        assert et == pytest.approx(3.0, abs=1e-4), case  # one voxel along the 3 mm axis
        assert tc == pytest.approx(0.0, abs=1e-6), case
        assert wt == pytest.approx(1.0, abs=1e-4), case  # one voxel along a 1 mm axis


def test_hd95_equals_monai_hausdorff_with_the_spacing_of_the_transformed_axes(scored):
    results, dataset = scored
    for c, item in enumerate(dataset):
        label = item["label"]
        assert label.shape[1] == SHAPE[2]  # the bundle puts the 3 mm axis first
        image = item["image"].as_tensor()
        pred = (image[:3] > 0.5).float()[None]
        # the spacing of the transformed axes, from the case's own geometry (z first, then x, y)
        spacing = [SPACING[2], SPACING[0], SPACING[1]]
        expected = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(
            pred, label.as_tensor()[None].float(), spacing=spacing
        )[0]
        np.testing.assert_allclose(results.hd95[0, c], expected.numpy(), atol=1e-4)
        assert float(torch.as_tensor(results.dice[0, c, 1])) == 1.0
