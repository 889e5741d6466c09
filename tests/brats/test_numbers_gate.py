"""Numbers that would give a silent wrong answer are refused per case: intensities that overflow the normalisation,
and a network output that is not finite."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest
import torch

from mckd.brats.cases import MAX_INTENSITY, CaseError
from mckd.brats.inference import RequireFinited
from mckd.brats.loading import LoadModalities


def _save(path, data, slope=None):
    image = nib.Nifti1Image(data, np.eye(4))
    if slope is not None:
        image.header.set_slope_inter(slope, 0.0)
    nib.save(image, str(path))
    return str(path)


@pytest.mark.parametrize("slope, value", [(1e35, 100), (None, np.float32(3e38))])
def test_intensities_beyond_an_mr_range_are_refused_naming_case_and_file(tmp_path, slope, value):
    data = np.zeros((8, 8, 8), np.float32 if slope is None else np.int16)
    data[2:5, 2:5, 2:5] = value
    flair = _save(tmp_path / "Brats18_X_1_flair.nii.gz", data, slope)
    expected = rf"flair.nii.gz'\): holds intensities up to .*, beyond {re.escape(f'{MAX_INTENSITY:.0e}')}"
    with pytest.raises(CaseError, match=expected):
        LoadModalities()([flair, None, None, None])


def test_ordinary_mr_intensities_load(tmp_path):
    data = np.random.default_rng(0).uniform(0, 4000, (8, 8, 8)).astype(np.float32)
    image, available = LoadModalities()([_save(tmp_path / "t1.nii.gz", data), None, None, None])
    assert available.tolist() == [True, False, False, False]


def test_a_non_finite_network_output_is_a_case_error():
    output = torch.zeros(3, 4, 4, 4)
    output[0, 0, 0, 0] = float("nan")
    with pytest.raises(CaseError, match=r"case 'Brats18_X_1': the network's output holds 1 of 192 values NaN"):
        RequireFinited("pred")({"pred": output, "case_id": "Brats18_X_1"})
    finite = {"pred": torch.zeros(3, 4, 4, 4), "case_id": "Brats18_X_1"}
    assert RequireFinited("pred")(finite)["pred"] is finite["pred"]
