"""Loading cases with missing modalities (NIfTI, MSD 4D, DICOM) and returning predictions to the input's space."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import Dataset, decollate_batch, list_data_collate
from monai.inferers import SlidingWindowInferer
from monai.transforms import Activationsd, AsDiscreted, Compose, Invertd, Orientationd

from mckd.brats.cases import CaseError
from mckd.brats.labels import RegionsToLabeld
from mckd.brats.loading import LoadModalities, LoadModalitiesd, PackAvailabilityd
from mckd.brats.writing import SaveCasePredictiond

SHAPE = (6, 5, 4)


def _affine() -> np.ndarray:
    affine = np.diag([1.5, 1.0, 2.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 3.0]
    return affine


def _volumes(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.random(SHAPE).astype(np.float32) + m for m in range(count)]


def test_missing_and_absent_modalities_become_zero_channels_with_a_false_flag(tmp_path, helpers):
    vols = _volumes(4)
    flair = helpers.write_nifti(tmp_path / "c1_flair.nii.gz", vols[0], _affine())
    t1ce = helpers.write_nifti(tmp_path / "c1_t1ce.nii.gz", vols[2], _affine())
    data = LoadModalitiesd("image")(
        {"case_id": "c1", "image": [str(flair), None, str(t1ce), str(tmp_path / "c1_t2.nii.gz")]}
    )
    image, available = data["image"], data["available"]
    assert image.shape == (4, *SHAPE) and available.tolist() == [True, False, True, False]
    np.testing.assert_allclose(image[0].numpy(), vols[0])
    np.testing.assert_allclose(image[2].numpy(), vols[2])
    assert torch.all(image[1] == 0) and torch.all(image[3] == 0)
    np.testing.assert_allclose(image.affine.numpy(), _affine())
    assert image.meta["filename_or_obj"] == str(flair) and image.meta["case_id"] == "c1"


def test_msd_4d_image_loads_in_modality_order_and_honours_per_case_availability(tmp_path, helpers):
    vols = _volumes(4)
    path = helpers.write_nifti(tmp_path / "BRATS_001.nii.gz", np.stack(vols, axis=-1), _affine())
    image, available = LoadModalities()(str(path), available=[True, True, False, True], case_id="BRATS_001")
    assert image.shape == (4, *SHAPE) and available.tolist() == [True, True, False, True]
    for m in (0, 1, 3):
        np.testing.assert_allclose(image[m].numpy(), vols[m])
    assert torch.all(image[2] == 0)
    np.testing.assert_allclose(image.affine.numpy(), _affine())


def test_msd_image_with_wrong_channel_count_names_case_and_file(tmp_path, helpers):
    path = helpers.write_nifti(tmp_path / "BRATS_002.nii.gz", np.stack(_volumes(3), axis=-1), _affine())
    with pytest.raises(CaseError, match=r"BRATS_002.*BRATS_002\.nii\.gz.*4 modality volumes last, its shape is \(6, 5, 4, 3\)"):
        LoadModalities()(str(path), case_id="BRATS_002")


@pytest.mark.parametrize("reader", [None, "PydicomReader"])
def test_dicom_series_per_modality_matches_the_equivalent_nifti(tmp_path, helpers, reader):
    rng = np.random.default_rng(1)
    vols = [rng.integers(0, 1000, size=SHAPE).astype(np.int16) for _ in range(2)]
    spacing, origin = (0.9, 1.1, 2.5), (12.0, -7.0, 30.0)
    flair = helpers.write_dicom_series(tmp_path / "dcm" / "flair", vols[0], spacing, origin)
    t2 = helpers.write_dicom_series(tmp_path / "dcm" / "t2", vols[1], spacing, origin)
    ras = helpers.lps_series_affine_ras(spacing, origin)
    nii = [helpers.write_nifti(tmp_path / "nii" / f"c_{m}.nii.gz", v, ras) for m, v in zip(("flair", "t2"), vols)]

    dicom_image, dicom_available = LoadModalities(reader=reader)([str(flair), None, None, str(t2)], case_id="c")
    nifti_image, _ = LoadModalities()([str(nii[0]), None, None, str(nii[1])], case_id="c")
    assert dicom_available.tolist() == [True, False, False, True]
    assert dicom_image.shape == nifti_image.shape == (4, *SHAPE)
    np.testing.assert_allclose(dicom_image.affine.numpy(), nifti_image.affine.numpy(), atol=1e-3)
    np.testing.assert_allclose(dicom_image.numpy(), nifti_image.numpy())


def test_shape_mismatch_names_the_case_and_the_file(tmp_path, helpers):
    flair = helpers.write_nifti(tmp_path / "c9_flair.nii.gz", np.ones(SHAPE, np.float32), _affine())
    t1 = helpers.write_nifti(tmp_path / "c9_t1.nii.gz", np.ones((6, 5, 3), np.float32), _affine())
    with pytest.raises(CaseError, match=r"case 'c9'.*c9_t1\.nii\.gz.*spatial shape"):
        LoadModalitiesd("image")({"case_id": "c9", "image": [str(flair), str(t1), None, None]})


def test_affine_mismatch_beyond_tolerance_names_the_case_and_the_file(tmp_path, helpers):
    shifted = _affine()
    shifted[0, 3] += 0.01
    flair = helpers.write_nifti(tmp_path / "c8_flair.nii.gz", np.ones(SHAPE, np.float32), _affine())
    t2 = helpers.write_nifti(tmp_path / "c8_t2.nii.gz", np.ones(SHAPE, np.float32), shifted)
    with pytest.raises(CaseError, match=r"case 'c8'.*c8_t2\.nii\.gz.*affine differs"):
        LoadModalities()([str(flair), None, None, str(t2)], case_id="c8")
    shifted[0, 3] -= 0.0095  # within 1e-3 mm: accepted
    helpers.write_nifti(tmp_path / "c8_t2.nii.gz", np.ones(SHAPE, np.float32), shifted)
    assert LoadModalities()([str(flair), None, None, str(t2)], case_id="c8")[1].sum() == 2


def test_a_case_with_no_modality_is_a_case_error(tmp_path):
    with pytest.raises(CaseError, match=r"case 'empty'.*no modality is present"):
        LoadModalities()([None, str(tmp_path / "absent.nii.gz"), None, None], case_id="empty")


def test_prediction_is_saved_in_the_inputs_original_space_and_orientation(tmp_path, helpers, threshold_net):
    # A non-RAS, axis-permuted input grid: Orientationd has to permute and flip, Invertd has to undo it.
    affine = np.array([[0.0, 0.0, -2.0, 40.0], [-1.0, 0.0, 0.0, 12.0], [0.0, 1.5, 0.0, -6.0], [0.0, 0.0, 0.0, 1.0]])
    flair = np.zeros(SHAPE, np.float32)
    flair[1:3, 0:2, 1:3] = 1.0  # ET where FLAIR is bright
    t1ce = np.zeros(SHAPE, np.float32)
    t1ce[0:4, 0:3, 0:3] = 1.0  # WT where T1ce is bright
    case_dir = tmp_path / "in" / "case7"
    paths = [
        str(helpers.write_nifti(case_dir / "case7_flair.nii.gz", flair, affine)),
        None,
        str(helpers.write_nifti(case_dir / "case7_t1ce.nii.gz", t1ce, affine)),
        None,
    ]
    preprocessing = Compose(
        [LoadModalitiesd("image"), Orientationd("image", axcodes="RAS", labels=None), PackAvailabilityd("image")]
    )
    postprocessing = Compose(
        [
            Invertd("pred", transform=preprocessing, orig_keys="image", nearest_interp=False),
            Activationsd("pred", sigmoid=True),
            AsDiscreted("pred", threshold=0.5),
            RegionsToLabeld("pred", convention="brats2018"),
            SaveCasePredictiond("pred", output_dir=tmp_path / "out", path_key="saved"),
        ]
    )
    batch = list_data_collate([Dataset([{"case_id": "case7", "image": paths}], transform=preprocessing)[0]])
    assert not torch.equal(torch.as_tensor(batch["image"].affine[0]), torch.as_tensor(affine))  # reoriented
    batch["pred"] = SlidingWindowInferer(roi_size=(4, 4, 4), overlap=0.25)(batch["image"], threshold_net)
    saved = [postprocessing(item)["saved"] for item in decollate_batch(batch)]

    assert saved == [str(tmp_path / "out" / "case7_seg.nii.gz")]
    written = nib.load(saved[0])
    np.testing.assert_allclose(written.affine, affine, atol=1e-5)
    assert written.shape == SHAPE
    expected = np.where(flair > 0, 4, np.where(t1ce > 0, 2, 0))  # no T1 -> no TC: ET then oedema
    np.testing.assert_array_equal(np.asarray(written.dataobj), expected)
    assert not list((tmp_path / "out").glob(".*part*")), "no temporary file may be left behind"
