"""The BraTS case model: which cases a folder holds, in every supported layout, and what is reported instead."""

from __future__ import annotations

import json
import os

import itk
import numpy as np
import pytest

from mckd.brats.cases import MAX_VOXELS, CaseError, DiscoveryError, check_header, discover_cases
from mckd.brats.loading import LoadModalities

SHAPE = (3, 3, 2)


def _vol(value: float = 1.0) -> np.ndarray:
    return np.full(SHAPE, value, np.float32)


def _by_id(found) -> dict:
    return {case.case_id: case for case in found.cases}


def _names(case) -> list[str | None]:
    return [None if p is None else p.name for p in case.images]


def test_brats2018_tree_with_grade_folders_and_a_missing_file(tmp_path, helpers):
    for case, group in (("Brats18_A_1", "HGG"), ("Brats18_B_1", "LGG")):
        for modality in ("flair", "t1", "t1ce", "t2", "seg"):
            if (case, modality) != ("Brats18_B_1", "t1"):
                helpers.write_nifti(tmp_path / group / case / f"{case}_{modality}.nii.gz", _vol())
    found = discover_cases(tmp_path)
    cases = _by_id(found)
    assert sorted(cases) == ["Brats18_A_1", "Brats18_B_1"] and found.problems == []
    b = cases["Brats18_B_1"]
    assert b.available == (True, False, True, True) and b.images[1] is None
    assert _names(b)[2] == "Brats18_B_1_t1ce.nii.gz" and b.group == "LGG" and b.layout == "brats2018"
    assert b.label.name == "Brats18_B_1_seg.nii.gz"


def test_brats2023_names_map_to_modality_order_and_a_case_folder_can_be_the_root(tmp_path, helpers):
    case = "BraTS-GLI-00001-000"
    for suffix in ("t2f", "t1c", "t2w"):
        helpers.write_nifti(tmp_path / case / f"{case}-{suffix}.nii", _vol())
    (entry,) = discover_cases(tmp_path / case).cases
    assert entry.case_id == case and entry.layout == "brats2023"
    assert _names(entry) == [f"{case}-t2f.nii", None, f"{case}-t1c.nii", f"{case}-t2w.nii"]


def test_brats2021_case_ids_name_the_2021_layout(tmp_path, helpers):
    helpers.write_nifti(tmp_path / "BraTS2021_00001" / "BraTS2021_00001_flair.nii.gz", _vol())
    assert [c.layout for c in discover_cases(tmp_path).cases] == ["brats2021"]


def test_generic_file_names_give_one_case_per_patient_folder_named_after_it(tmp_path, helpers):
    for patient in ("patientA", "patientB"):
        for modality in ("flair", "t1ce"):
            helpers.write_nifti(tmp_path / patient / f"scan_{modality}.nii.gz", _vol())
    helpers.write_nifti(tmp_path / "patientC" / "FLAIR.NII.GZ", _vol())
    helpers.write_nifti(tmp_path / "patientC" / "T2.nii", _vol())
    found = discover_cases(tmp_path)
    assert found.problems == [] and sorted(_by_id(found)) == ["patientA", "patientB", "patientC"]
    assert _by_id(found)["patientA"].available == (True, False, True, False)
    assert _by_id(found)["patientC"].available == (True, False, False, True)


def test_a_folder_with_several_cases_side_by_side_gives_one_case_per_prefix(tmp_path, helpers):
    helpers.write_nifti(tmp_path / "A_flair.nii.gz", _vol())
    helpers.write_nifti(tmp_path / "B_flair.nii.gz", _vol())
    helpers.write_nifti(tmp_path / "B_t2.nii.gz", _vol())
    found = discover_cases(tmp_path)
    assert [(c.case_id, c.available) for c in found.cases] == [
        ("A", (True, False, False, False)),
        ("B", (True, False, False, True)),
    ]
    assert [c.case_id for c in discover_cases(tmp_path / "B_t2.nii.gz").cases] == ["B"]


def test_msd_task_folder_lists_cases_from_its_dataset_json(tmp_path, helpers):
    helpers.write_nifti(tmp_path / "imagesTr" / "BRATS_001.nii.gz", np.stack([_vol()] * 4, axis=-1))
    helpers.write_nifti(tmp_path / "labelsTr" / "BRATS_001.nii.gz", _vol(0))
    helpers.write_nifti(tmp_path / "imagesTs" / "BRATS_485.nii.gz", np.stack([_vol()] * 4, axis=-1))
    listing = {"training": [{"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}]}
    (tmp_path / "dataset.json").write_text(json.dumps({**listing, "test": ["./imagesTs/BRATS_485.nii.gz"]}))
    cases = _by_id(discover_cases(tmp_path))
    assert sorted(cases) == ["BRATS_001", "BRATS_485"] and {c.layout for c in cases.values()} == {"msd"}
    assert cases["BRATS_001"].label.name == "BRATS_001.nii.gz" and cases["BRATS_485"].label is None
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DiscoveryError, match="is not a readable MSD dataset.json"):
        discover_cases(tmp_path)


def test_4d_images_without_dataset_json_are_cases_and_a_wrong_channel_count_is_reported(tmp_path, helpers):
    helpers.write_nifti(tmp_path / "imagesTs" / "BRATS_485.nii.gz", np.stack([_vol()] * 4, axis=-1))
    helpers.write_nifti(tmp_path / "imagesTs" / "BRATS_486.nii.gz", np.stack([_vol()] * 3, axis=-1))
    helpers.write_nifti(tmp_path / "labelsTr" / "BRATS_001.nii.gz", _vol())
    found = discover_cases(tmp_path)
    assert [(c.case_id, c.four_d) for c in found.cases] == [("BRATS_485", True)]
    assert [(p.case_id, "its shape is (3, 3, 2, 3)" in p.reason) for p in found.problems] == [("BRATS_486", True)]
    assert [c.case_id for c in discover_cases(tmp_path / "imagesTs" / "BRATS_485.nii.gz").cases] == ["BRATS_485"]


def test_dicom_series_folders_in_either_naming_and_empty_series_mean_missing(tmp_path, helpers):
    volume = np.arange(24, dtype=np.int16).reshape(3, 4, 2)
    helpers.write_dicom_series(tmp_path / "patient1" / "FLAIR", volume, (1.0, 1.0, 1.0))
    helpers.write_dicom_series(tmp_path / "patient1" / "t1c", volume, (1.0, 1.0, 1.0))
    (tmp_path / "patient1" / "t2").mkdir()
    (entry,) = discover_cases(tmp_path).cases
    assert entry.case_id == "patient1" and entry.available == (True, False, True, False)
    assert _names(entry) == ["FLAIR", None, "t1c", None]
    image, available = LoadModalities()(entry.images, case_id=entry.case_id)
    assert image.shape == (4, 3, 4, 2) and available.tolist() == [True, False, True, False]


def test_nifti_files_and_dicom_series_in_one_folder_are_one_case(tmp_path, helpers):
    volume = np.arange(24, dtype=np.int16).reshape(3, 4, 2)
    series = helpers.write_dicom_series(tmp_path / "p1" / "t1ce", volume, (1.0, 1.0, 1.0))
    affine = helpers.lps_series_affine_ras((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    helpers.write_nifti(tmp_path / "p1" / "p1_flair.nii.gz", volume.astype(np.float32) + 1, affine)
    found = discover_cases(tmp_path)
    assert found.problems == [] and [c.case_id for c in found.cases] == ["p1"]
    assert found.cases[0].images[2] == series and found.cases[0].available == (True, False, True, False)
    image, available = LoadModalities()(found.cases[0].images, case_id="p1")
    np.testing.assert_array_equal(image[2].numpy(), volume)
    np.testing.assert_array_equal(image[0].numpy(), volume + 1)


def test_one_modality_given_twice_is_one_clear_error(tmp_path, helpers):
    helpers.write_dicom_series(tmp_path / "p1" / "flair", np.ones((3, 4, 2), np.int16), (1.0, 1.0, 1.0))
    helpers.write_nifti(tmp_path / "p1" / "p1_flair.nii.gz", _vol())
    helpers.write_nifti(tmp_path / "p2" / "p2_t1.nii", _vol())
    helpers.write_nifti(tmp_path / "p2" / "p2_t1.nii.gz", _vol())
    found = discover_cases(tmp_path)
    assert found.cases == []
    reasons = {p.case_id: p.reason for p in found.problems}
    assert reasons["p1"].startswith("has two inputs for modality 'flair'")
    assert "p2_t1.nii and p2_t1.nii.gz" in reasons["p2"]


def test_a_modality_folder_holding_one_image_file_is_that_modality(tmp_path, helpers):
    helpers.write_nifti(tmp_path / "p1" / "FLAIR" / "image.nii.gz", _vol(2.0))
    (entry,) = discover_cases(tmp_path).cases
    assert entry.case_id == "p1" and _names(entry)[0] == "image.nii.gz"


@pytest.mark.parametrize("extension", [".mha", ".nrrd"])
def test_metaimage_and_nrrd_files_are_cases_read_through_itk(tmp_path, extension):
    volume = np.arange(60, dtype=np.float32).reshape(5, 4, 3) + 1
    for modality in ("flair", "t2"):
        tmp_path.joinpath("p1").mkdir(exist_ok=True)
        itk.imwrite(itk.image_from_array(volume), str(tmp_path / "p1" / f"p1_{modality}{extension.upper()}"))
    (entry,) = discover_cases(tmp_path).cases
    image, available = LoadModalities()(entry.images, case_id=entry.case_id)
    assert available.tolist() == [True, False, False, True] and float(image[3].sum()) == float(volume.sum())


def test_symlink_loops_neither_repeat_cases_nor_hang(tmp_path, helpers):
    helpers.write_nifti(tmp_path / "data" / "c1" / "c1_flair.nii.gz", _vol())
    os.symlink(tmp_path / "data", tmp_path / "data" / "c1" / "loop")
    os.symlink(tmp_path / "data" / "c1", tmp_path / "data" / "alias")
    found = discover_cases(tmp_path / "data")
    assert [c.case_id for c in found.cases] == ["c1"] and found.problems == []


def test_the_same_case_id_in_two_folders_is_reported_for_both_and_neither_is_used(tmp_path, helpers):
    for group in ("HGG", "LGG"):
        helpers.write_nifti(tmp_path / group / "Brats18_X_1" / "Brats18_X_1_flair.nii.gz", _vol())
    helpers.write_nifti(tmp_path / "LGG" / "Brats18_Y_1" / "Brats18_Y_1_flair.nii.gz", _vol())
    found = discover_cases(tmp_path)
    assert [c.case_id for c in found.cases] == ["Brats18_Y_1"]
    assert [p.case_id for p in found.problems] == ["Brats18_X_1", "Brats18_X_1"]
    assert all("found 2 times" in p.reason and "HGG" in p.reason and "LGG" in p.reason for p in found.problems)


def test_folders_without_any_modality_are_reported_while_the_others_go_through(tmp_path, helpers):
    helpers.write_nifti(tmp_path / "good" / "good_t1.nii.gz", _vol())
    helpers.write_nifti(tmp_path / "labelonly" / "labelonly_seg.nii.gz", _vol())
    helpers.write_nifti(tmp_path / "typo" / "typo_flar.nii.gz", _vol())
    (tmp_path / "emptycase").mkdir()
    (tmp_path / "dicomcase" / "flair").mkdir(parents=True)
    found = discover_cases(tmp_path)
    assert [c.case_id for c in found.cases] == ["good"]
    reasons = {p.case_id: p.reason for p in found.problems}
    assert sorted(reasons) == ["dicomcase", "emptycase", "labelonly", "typo"]
    assert reasons["labelonly"].startswith("has a label map but no modality image")
    assert "typo_flar.nii.gz match no modality name" in reasons["typo"]


def test_absent_root_and_unknown_layout_are_discovery_errors(tmp_path):
    with pytest.raises(DiscoveryError, match="does not exist"):
        discover_cases(tmp_path / "nope")
    with pytest.raises(DiscoveryError, match="unknown layout 'brats1999'"):
        discover_cases(tmp_path, layout="brats1999")


def test_a_header_claiming_an_absurd_size_is_a_case_error_before_any_voxel_is_read(tmp_path):
    with pytest.raises(CaseError, match=r"case 'c1' \(file 'x.nii'\): declares an implausible size"):
        check_header("c1", "x.nii", (4096, 4096, 4096), np.dtype(np.float32))
    assert MAX_VOXELS > 240 * 240 * 155


def test_a_folder_without_any_image_file_is_not_a_case(tmp_path, helpers):
    helpers.write_nifti(tmp_path / "c1" / "c1_flair.nii.gz", _vol())
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "survival_info.csv").write_text("id,days\n")
    found = discover_cases(tmp_path)
    assert [c.case_id for c in found.cases] == ["c1"] and found.problems == []
