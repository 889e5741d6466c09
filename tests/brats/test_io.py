"""Case discovery for inference in every supported layout, per-case problems, and outputs kept away from inputs."""

from __future__ import annotations

import numpy as np
import pytest
from monai.data import Dataset

from mckd.brats.io import SaveCasePredictiond, check_output_dir, discover_cases, prediction_path
from mckd.brats.transforms import LoadModalitiesd

SHAPE = (3, 3, 2)


def _vol(value: float = 1.0) -> np.ndarray:
    return np.full(SHAPE, value, np.float32)


def _by_id(found) -> dict:
    return {case["case_id"]: case for case in found.cases}


def test_brats2018_tree_with_grade_folders_and_a_missing_file(tmp_path, helpers):
    for case, group in (("Brats18_A_1", "HGG"), ("Brats18_B_1", "LGG")):
        for modality in ("flair", "t1", "t1ce", "t2", "seg"):
            if (case, modality) != ("Brats18_B_1", "t1"):
                helpers.write_nifti(tmp_path / group / case / f"{case}_{modality}.nii.gz", _vol())
    found = discover_cases(tmp_path)
    cases = _by_id(found)
    assert sorted(cases) == ["Brats18_A_1", "Brats18_B_1"] and found.problems == []
    b = cases["Brats18_B_1"]
    assert b["available"] == [True, False, True, True] and b["image"][1] is None
    assert b["image"][2].endswith("LGG/Brats18_B_1/Brats18_B_1_t1ce.nii.gz")
    assert b["layout"] == "brats2018" and b["label"].endswith("Brats18_B_1_seg.nii.gz")


def test_brats2023_names_map_to_modality_order(tmp_path, helpers):
    case = "BraTS-GLI-00001-000"
    for suffix, value in (("t2f", 1.0), ("t1c", 3.0), ("t2w", 4.0)):
        helpers.write_nifti(tmp_path / case / f"{case}-{suffix}.nii", _vol(value))
    found = discover_cases(tmp_path / case)  # a single case folder as the root
    (entry,) = found.cases
    assert entry["case_id"] == case and entry["layout"] == "brats2023"
    assert entry["available"] == [True, False, True, True]
    assert entry["image"][1] is None
    assert [entry["image"][m].rsplit("-", 1)[1] for m in (0, 2, 3)] == ["t2f.nii", "t1c.nii", "t2w.nii"]


def test_msd_folder_of_4d_images_skips_labels_and_reports_a_wrong_channel_count(tmp_path, helpers):
    helpers.write_nifti(tmp_path / "imagesTs" / "BRATS_485.nii.gz", np.stack([_vol()] * 4, axis=-1))
    helpers.write_nifti(tmp_path / "imagesTs" / "BRATS_486.nii.gz", np.stack([_vol()] * 3, axis=-1))
    helpers.write_nifti(tmp_path / "labelsTr" / "BRATS_001.nii.gz", _vol())
    found = discover_cases(tmp_path)
    assert [c["case_id"] for c in found.cases] == ["BRATS_485"]
    assert found.cases[0]["image"].endswith("BRATS_485.nii.gz") and found.cases[0]["layout"] == "msd"
    assert [(p.case_id, "has 3" in p.reason) for p in found.problems] == [("BRATS_486", True)]
    single = discover_cases(tmp_path / "imagesTs" / "BRATS_485.nii.gz")  # a single 4D file as the root
    assert [c["case_id"] for c in single.cases] == ["BRATS_485"]


def test_dicom_case_folders_accept_both_modality_namings_and_empty_series_mean_missing(tmp_path, helpers):
    volume = np.arange(24, dtype=np.int16).reshape(SHAPE[0], 4, 2)
    helpers.write_dicom_series(tmp_path / "patient1" / "FLAIR", volume, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    helpers.write_dicom_series(tmp_path / "patient1" / "t1c", volume, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    (tmp_path / "patient1" / "t2").mkdir()
    found = discover_cases(tmp_path)
    (entry,) = found.cases
    assert entry["case_id"] == "patient1" and entry["layout"] == "dicom"
    assert entry["available"] == [True, False, True, False]
    assert entry["image"][0].endswith("FLAIR") and entry["image"][2].endswith("t1c")
    loaded = Dataset(found.cases, transform=LoadModalitiesd("image"))[0]
    assert loaded["image"].shape == (4, SHAPE[0], 4, 2) and loaded["available"].tolist() == [True, False, True, False]


def test_cases_without_any_modality_are_reported_while_the_others_go_through(tmp_path, helpers):
    helpers.write_nifti(tmp_path / "good" / "good_t1.nii.gz", _vol())
    helpers.write_nifti(tmp_path / "labelonly" / "labelonly_seg.nii.gz", _vol())
    (tmp_path / "emptycase").mkdir()
    (tmp_path / "dicomcase" / "flair").mkdir(parents=True)
    found = discover_cases(tmp_path)
    assert [c["case_id"] for c in found.cases] == ["good"]
    assert sorted(p.case_id for p in found.problems) == ["dicomcase", "emptycase", "labelonly"]
    assert all(p.reason for p in found.problems)
    assert "labelonly" in str(next(p for p in found.problems if p.case_id == "labelonly"))


def test_disagreeing_headers_and_duplicate_ids_are_problems_not_crashes(tmp_path, helpers):
    helpers.write_nifti(tmp_path / "a" / "c1_flair.nii.gz", _vol())
    helpers.write_nifti(tmp_path / "a" / "c1_t2.nii.gz", np.zeros((3, 3, 3), np.float32))
    helpers.write_nifti(tmp_path / "b" / "c2_t1.nii.gz", _vol())
    helpers.write_nifti(tmp_path / "c" / "c2_t1.nii.gz", _vol())
    found = discover_cases(tmp_path)
    assert [c["case_id"] for c in found.cases] == ["c2"]
    reasons = {p.case_id: p for p in found.problems}
    assert "c1_t2.nii.gz" in reasons["c1"].path and "spatial shape" in reasons["c1"].reason
    assert "duplicate" in reasons["c2"].reason


def test_prediction_path_never_lands_over_or_inside_the_inputs(tmp_path, helpers):
    flair = helpers.write_nifti(tmp_path / "in" / "c1" / "c1_flair.nii.gz", _vol())
    inputs = [str(flair), None, None, None]
    assert prediction_path(tmp_path / "out", "c1", inputs) == tmp_path / "out" / "c1_seg.nii.gz"
    with pytest.raises(ValueError, match="inside the input"):
        prediction_path(tmp_path / "in" / "c1", "c1", inputs)
    with pytest.raises(ValueError, match="inside the input"):
        prediction_path(tmp_path / "in" / "c1" / "preds", "c1", inputs)
    with pytest.raises(ValueError, match="overwrite input"):
        prediction_path(tmp_path / "in" / "c1", "c1", [str(tmp_path / "in" / "c1" / "c1_seg.nii.gz")], postfix="_seg")
    with pytest.raises(ValueError, match="inside the input"):
        check_output_dir(tmp_path / "in" / "x", [tmp_path / "in"])


def test_saving_a_prediction_refuses_the_input_folder_and_leaves_no_partial_file(tmp_path, helpers):
    t1 = str(helpers.write_nifti(tmp_path / "in" / "c1_t1.nii.gz", _vol()))
    data = Dataset([{"case_id": "c1", "image": [t1, None, None, None]}], transform=LoadModalitiesd("image"))[0]
    data["pred"] = data["image"][:1]
    with pytest.raises(ValueError, match="inside the input"):
        SaveCasePredictiond("pred", output_dir=tmp_path / "in")(data)
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["c1_t1.nii.gz"]
    out = SaveCasePredictiond("pred", output_dir=tmp_path / "out", path_key="saved")(data)
    assert out["saved"].endswith("c1_seg.nii.gz")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["c1_seg.nii.gz"]
