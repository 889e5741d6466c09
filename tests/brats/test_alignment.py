"""Clinical inputs on different grids: cases made from one synthetic case by known transforms come back onto one grid.

The stand-in "prediction" thresholds each normalised modality (one region per modality), so its Dice against the
same-grid prediction measures only what resampling and registration did to the inputs.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.metrics import compute_dice
from monai.transforms import NormalizeIntensity
from scipy.ndimage import affine_transform

from data_prep.synthetic_brats import brats_affine, case_rng, generate_case
from mckd.brats.alignment import AlignmentReport, RigidLimits, choose_reference, to_native_grid
from mckd.brats.cases import CaseError
from mckd.brats.conventions import MODALITIES
from mckd.brats.loading import LoadModalities

SHAPE = (96, 96, 96)
AFFINE = brats_affine(SHAPE)


@pytest.fixture(scope="module")
def case():
    return generate_case(SHAPE, case_rng(0, 0))


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(path))
    return str(path)


#: The thick-slice FLAIR's field of view along x (voxels of the 1 mm grid).
FOV = slice(12, 84)


def _thick_cropped_flair(case, folder: Path) -> str:
    """FLAIR at 1 x 1 x 3 mm (every third slice) over a narrower field of view along x."""
    affine = AFFINE.copy()
    affine[:3, 2] *= 3
    affine[:3, 3] = AFFINE[:3, :3] @ np.array([FOV.start, 0, 0]) + AFFINE[:3, 3]
    return _save(folder / "c_flair.nii.gz", case.images["flair"][FOV, :, ::3], affine)


def _world_motion(rotation_deg: np.ndarray, shift_mm: np.ndarray) -> np.ndarray:
    """A rigid world map (RAS) rotating by the rotation vector about the volume's centre, then shifting."""
    from scipy.spatial.transform import Rotation

    centre = AFFINE[:3, :3] @ ((np.asarray(SHAPE) - 1) / 2) + AFFINE[:3, 3]
    motion = np.eye(4)
    motion[:3, :3] = Rotation.from_rotvec(np.radians(rotation_deg)).as_matrix()
    motion[:3, 3] = centre + shift_mm - motion[:3, :3] @ centre
    return motion


def _moved(volume: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """The volume's content moved by ``motion`` (the patient moved between scans), on the unchanged grid."""
    voxels = np.linalg.inv(AFFINE) @ np.linalg.inv(motion) @ AFFINE
    return affine_transform(volume.astype(np.float32), voxels[:3, :3], voxels[:3, 3], order=1)


def _same_grid(case, folder: Path) -> list[str]:
    return [_save(folder / f"c_{m}.nii.gz", case.images[m], AFFINE) for m in MODALITIES]


def _predict(image: torch.Tensor) -> torch.Tensor:
    """One region per modality: normalised intensity above 1 (FLAIR: the tumour; the others: tumour parts and CSF)."""
    normalised = NormalizeIntensity(nonzero=True, channel_wise=True)(image)
    return (torch.as_tensor(normalised) > 1.0).float()


def _dice(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return compute_dice(a[None], b[None], include_background=True)[0].numpy()


def test_a_thick_slice_modality_with_another_field_of_view_is_resampled_onto_the_reference(case, tmp_path):
    reference, _ = LoadModalities()(_same_grid(case, tmp_path / "same"), case_id="c")
    paths = _same_grid(case, tmp_path / "clinical")
    paths[0] = _thick_cropped_flair(case, tmp_path / "clinical")
    with pytest.raises(CaseError, match="spatial shape .* differs"):
        LoadModalities()(paths, case_id="c")
    aligned, available = LoadModalities(grid="resample")(paths, case_id="c")
    assert aligned.shape == reference.shape and np.allclose(aligned.affine, reference.affine)
    report = AlignmentReport.from_json(aligned.meta["alignment"])
    assert report.reference == "t1" and report.modalities["flair"].resampled
    assert not report.modalities["t1ce"].resampled
    rerun, _ = LoadModalities()(_same_grid(case, tmp_path / "same"), case_id="c")
    same_grid_dice = _dice(_predict(rerun), _predict(reference))
    # FLAIR outside its narrower field of view is absent: compare inside it
    inside = torch.zeros(SHAPE, dtype=torch.bool)
    inside[FOV] = True
    dice = _dice(_predict(aligned) * inside, _predict(reference) * inside)
    assert np.all(dice >= 0.9 * same_grid_dice), dice
    assert available.tolist() == [True] * 4


@pytest.mark.parametrize(
    "rotation_deg, shift_mm", [((0.0, 0.0, 3.0), (3.0, -2.0, 1.0)), ((-4.0, 0.0, 0.0), (-2.5, 1.5, 2.0))]
)
def test_registration_recovers_a_rotation_and_shift_within_1_degree_and_1_mm(case, tmp_path, rotation_deg, shift_mm):
    motion = _world_motion(np.asarray(rotation_deg), np.asarray(shift_mm))
    paths = _same_grid(case, tmp_path)
    paths[0] = _save(tmp_path / "c_flair_moved.nii.gz", _moved(case.images["flair"], motion), AFFINE)
    paths[1] = paths[3] = None
    aligned, _ = LoadModalities(grid="register", reference="t1ce")(paths, case_id="c")
    found = AlignmentReport.from_json(aligned.meta["alignment"]).modalities["flair"]
    # the registration maps reference points onto the moved FLAIR: the motion itself
    from scipy.spatial.transform import Rotation

    error = Rotation.from_rotvec(np.radians(found.rotation_deg)) * Rotation.from_rotvec(np.radians(rotation_deg)).inv()
    assert np.degrees(error.magnitude()) <= 1.0, found.rotation_deg
    assert np.linalg.norm(np.asarray(found.translation_mm) - shift_mm) <= 1.0, found.translation_mm
    assert found.metric is not None and found.metric < 0
    reference, _ = LoadModalities()(_same_grid(case, tmp_path / "same"), case_id="c")
    dice = _dice(_predict(aligned)[:1], _predict(reference)[:1])
    assert dice[0] >= 0.9, dice


def test_a_registration_beyond_the_plausible_limits_is_a_case_error(case, tmp_path):
    motion = _world_motion(np.array([0.0, 0.0, 0.0]), np.array([4.0, 0.0, 0.0]))
    moved = _save(tmp_path / "flair.nii.gz", _moved(case.images["flair"], motion), AFFINE)
    paths = [moved, None, _same_grid(case, tmp_path)[2], None]
    loader = LoadModalities(grid="register", reference="t1ce", limits=RigidLimits(max_translation_mm=2.0))
    with pytest.raises(CaseError, match=r"case 'c': the rigid registration of flair .* implausible transform"):
        loader(paths, case_id="c")


def test_the_reference_is_the_highest_resolution_modality_unless_one_is_named(case, tmp_path):
    paths = _same_grid(case, tmp_path)
    paths[0] = _thick_cropped_flair(case, tmp_path)
    paths[1] = None
    images = [None if p is None else LoadModalities()._load_one(p, "c") for p in paths]
    assert MODALITIES[choose_reference(images)] == "t1ce"  # 1 mm, the first of the finest grids present
    assert MODALITIES[choose_reference(images, "flair")] == "flair"
    assert MODALITIES[choose_reference(images, "t1")] == "t1ce"  # the named one is missing: the finest instead


def test_a_modality_outside_the_reference_field_of_view_is_a_case_error(case, tmp_path):
    far = AFFINE.copy()
    far[:3, 3] += 500.0
    paths = [_save(tmp_path / "flair.nii.gz", case.images["flair"], far), None, _same_grid(case, tmp_path)[2], None]
    with pytest.raises(CaseError, match="flair does not overlap the field of view of the reference t1ce"):
        LoadModalities(grid="resample", reference="t1ce")(paths, case_id="c")


def test_a_label_on_the_reference_grid_goes_back_onto_each_inputs_own_grid(case, tmp_path):
    paths = _same_grid(case, tmp_path)
    paths[0] = _thick_cropped_flair(case, tmp_path)
    aligned, _ = LoadModalities(grid="resample", reference="t1ce")(paths, case_id="c")
    report = AlignmentReport.from_json(aligned.meta["alignment"])
    label = MetaTensor(torch.as_tensor(case.regions["WT"][None].astype(np.float32)), affine=torch.as_tensor(AFFINE))
    native = to_native_grid(label, report.modalities["flair"])
    flair = nib.load(paths[0])
    assert native.shape[1:] == flair.shape and np.allclose(native.affine, flair.affine)
    np.testing.assert_array_equal(native[0].numpy(), case.regions["WT"][FOV, :, ::3].astype(np.float32))
