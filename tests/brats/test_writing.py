"""Predictions are written atomically, one per case, and never over or inside the inputs."""

from __future__ import annotations

import numpy as np
import pytest
from monai.data import Dataset

from mckd.brats.loading import LoadModalitiesd
from mckd.brats.writing import SaveCasePredictiond, check_output_dir, prediction_path

SHAPE = (3, 3, 2)


def _vol(value: float = 1.0) -> np.ndarray:
    return np.full(SHAPE, value, np.float32)


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
