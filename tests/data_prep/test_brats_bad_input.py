"""Bad input: every problem class names case and file; skipped by default, fatal with --strict; usage errors."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from data_prep.brats import EXIT_OK, EXIT_STRICT, EXIT_USAGE, main
from data_prep.synthetic_brats import brats_affine

from .conftest import SHAPE


def _rewrite(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> None:
    """Replace a NIfTI file's content."""
    nib.save(nib.Nifti1Image(array, brats_affine(SHAPE) if affine is None else affine), path)


def _run(root: Path, out: Path, *extra: str) -> int:
    return main(["--root", str(root), "--out", str(out), "--layout", "brats2021", *extra])


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _not_an_image(path: Path) -> None:
    path.write_text("this is not a NIfTI file")


def _remove(path: Path) -> None:
    path.unlink()


def _shift_affine(path: Path) -> None:
    affine = brats_affine(SHAPE)
    affine[0, 3] += 0.5
    _rewrite(path, np.asarray(nib.load(path).dataobj), affine)


def _crop(path: Path) -> None:
    _rewrite(path, np.asarray(nib.load(path).dataobj)[:-2])


def _nan(path: Path) -> None:
    data = np.asarray(nib.load(path).dataobj).astype(np.float32)
    data[0, 0, 0] = np.nan
    _rewrite(path, data)


def _zero(path: Path) -> None:
    _rewrite(path, np.zeros(SHAPE, dtype=np.int16))


def _four_d(path: Path) -> None:
    _rewrite(path, np.ones((*SHAPE, 2), dtype=np.int16))


def _label_three(path: Path) -> None:
    data = np.asarray(nib.load(path).dataobj).copy()
    data[data == 4] = 3
    _rewrite(path, data)


BREAKAGES = {
    "truncated gzip": ("t2", _truncate, "cannot be read: "),
    "not an image": ("flair", _not_an_image, "cannot be read as NIfTI: "),
    "affine mismatch": ("t1ce", _shift_affine, "affine differs from that of"),
    "shape mismatch": ("t1", _crop, "spatial shape (30, 40, 24) differs from (32, 40, 24)"),
    "nan": ("flair", _nan, "contains 1 NaN/Inf voxels."),
    "all zero": ("t2", _zero, "the T2 image is all zero, i.e. missing (pass --allow-missing-modalities"),
    "wrong dimensionality": ("t1", _four_d, "is not a 3D volume: shape (32, 40, 24, 2) (one 3D file per modality)."),
    "label values": ("seg", _label_three, "label map holds values [3] that the 'brats2018' convention does not define"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_bad_case_is_skipped_with_a_warning_naming_case_file_and_reason(tmp_path, make_dataset, caplog, breakage):
    root, written = make_dataset("brats2021", n_cases=4)
    suffix, damage, reason = BREAKAGES[breakage]
    case = written[0]
    path = case.label if suffix == "seg" else case.images[suffix]
    damage(path)
    assert _run(root, tmp_path / "out" / "d.json") == EXIT_OK
    assert f"{case.case_id}: {case.case_id}/{path.name}: {reason}" in caplog.text
    assert "skipped 1 case(s) with problems" in caplog.text


def test_a_missing_modality_file_skips_the_case_naming_case_folder_and_modality(tmp_path, make_dataset, caplog):
    root, written = make_dataset("brats2021", n_cases=4)
    case = written[0]
    case.images["t1"].unlink()
    assert _run(root, tmp_path / "out" / "d.json") == EXIT_OK
    assert f"{case.case_id}: {case.case_id}: has no T1 image (pass --allow-missing-modalities" in caplog.text


def test_strict_fails_with_status_1_listing_the_problems_and_writes_nothing(tmp_path, make_dataset, caplog):
    root, written = make_dataset("brats2021", n_cases=4)
    written[1].images["t1ce"].unlink()
    assert _run(root, tmp_path / "out" / "d.json", "--strict") == EXIT_STRICT
    assert f"{written[1].case_id}: {written[1].case_id}: has no T1ce image" in caplog.text
    assert not (tmp_path / "out" / "d.json").exists()


def test_skipped_cases_are_listed_in_the_datalist(tmp_path, make_dataset):
    root, written = make_dataset("brats2021", n_cases=4)
    written[0].images["t2"].unlink()
    _run(root, tmp_path / "out" / "d.json")
    text = (tmp_path / "out" / "d.json").read_text()
    assert f'"case_id": "{written[0].case_id}"' in text and '"reason": "has no T2 image (pass' in text


def test_no_usable_case_exits_with_status_2(tmp_path, make_dataset, caplog):
    root, written = make_dataset("brats2021", n_cases=2)
    for case in written:
        case.images["flair"].unlink()
    assert _run(root, tmp_path / "out" / "d.json") == EXIT_USAGE
    assert "no usable case among 2" in caplog.text
    assert not (tmp_path / "out" / "d.json").exists()


def test_all_modalities_missing_is_a_problem_even_when_missing_modalities_are_allowed(tmp_path, make_dataset, caplog):
    root, written = make_dataset("brats2021", n_cases=3)
    for path in written[0].images.values():
        path.unlink()
    assert _run(root, tmp_path / "out" / "d.json", "--allow-missing-modalities") == EXIT_OK
    label = f"{written[0].case_id}/{written[0].case_id}_seg.nii.gz"
    assert f"{written[0].case_id}: {label}: has a label map but no modality image" in caplog.text


def test_msd_image_with_wrong_channel_count_is_reported(tmp_path, make_dataset, caplog):
    root, written = make_dataset("msd", n_cases=3)
    _rewrite(written[0].images["flair"], np.ones((*SHAPE, 3), dtype=np.int16))
    assert main(["--root", str(root), "--out", str(tmp_path / "out" / "d.json")]) == EXIT_OK
    assert "BRATS_001: imagesTr/BRATS_001.nii.gz: a 4D image needs 4 modality volumes last, its shape is (32, 40, 24, 3)" in (
        caplog.text
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--root", "{missing}"], "is not a folder"),
        (["--layout", "brats1999"], "unknown layout 'brats1999'"),
        (["--split", "kfold:3:5"], "malformed --split 'kfold:3:5'"),
        (["--split", "ratio:1.5"], "malformed --split 'ratio:1.5'"),
        (["--root", "{empty}"], "no BraTS 2018-2023 or MSD Task01 case found"),
        (["--jobs", "0"], "--jobs must be at least 1"),
    ],
)
def test_usage_errors_give_one_line_and_status_2(tmp_path, make_dataset, caplog, argv, message):
    root, _ = make_dataset("brats2021", n_cases=2)
    (tmp_path / "empty").mkdir()
    argv = [a.format(missing=tmp_path / "nope", empty=tmp_path / "empty") for a in argv]
    assert main(["--root", str(root), "--out", str(tmp_path / "out" / "d.json"), *argv]) == EXIT_USAGE
    assert message in caplog.text and "Traceback" not in caplog.text


def test_malformed_msd_dataset_json_is_a_usage_error(tmp_path, make_dataset, caplog):
    root, _ = make_dataset("msd", n_cases=2)
    (root / "dataset.json").write_text("{not json")
    assert main(["--root", str(root), "--out", str(tmp_path / "out" / "d.json")]) == EXIT_USAGE
    assert "is not a readable MSD dataset.json" in caplog.text


def test_refuses_to_overwrite_the_msd_dataset_json(make_dataset, caplog):
    root, _ = make_dataset("msd", n_cases=2)
    before = (root / "dataset.json").read_bytes()
    assert main(["--root", str(root), "--out", str(root / "dataset.json")]) == EXIT_USAGE
    assert (root / "dataset.json").read_bytes() == before and "refusing to overwrite" in caplog.text


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_unwritable_output_folder_is_a_usage_error(tmp_path, make_dataset, caplog):
    root, _ = make_dataset("brats2021", n_cases=2)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(["--root", str(root), "--out", str(locked / "d.json")]) == EXIT_USAGE
    assert "is not writable" in caplog.text


def test_output_below_a_file_is_a_usage_error(tmp_path, make_dataset, caplog):
    root, _ = make_dataset("brats2021", n_cases=2)
    (tmp_path / "plain_file").write_text("")
    assert main(["--root", str(root), "--out", str(tmp_path / "plain_file" / "d.json")]) == EXIT_USAGE
    assert "cannot create output folder" in caplog.text


def test_output_path_that_is_a_folder_is_a_usage_error(tmp_path, make_dataset, caplog):
    root, _ = make_dataset("brats2021", n_cases=2)
    assert main(["--root", str(root), "--out", str(tmp_path)]) == EXIT_USAGE
    assert "is a folder" in caplog.text


def test_command_line_prints_one_line_error_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "data_prep.brats", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "d.json")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == EXIT_USAGE
    assert result.stderr.strip() == f"error: --root '{tmp_path / 'nope'}' is not a folder."
