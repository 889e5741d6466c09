"""Bad input: every problem class names case and file; skipped by default, fatal with --strict; usage errors."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from data_prep.brats import EXIT_OK, EXIT_STRICT, EXIT_USAGE, main
from data_prep.synthetic_brats import brats_affine
from mckd.brats.conventions import PAPER_META_VALIDATION_CASES

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


def _digest(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("target", ["an image file", "a new file inside the dataset", "the dataset's own folder name"])
def test_an_output_over_an_input_or_inside_the_dataset_is_refused_and_nothing_changes(tmp_path, make_dataset, target):
    root, written = make_dataset("brats2021", n_cases=3)
    out = {
        "an image file": written[0].images["flair"],
        "a new file inside the dataset": root / "lists" / "datalist.json",
        "the dataset's own folder name": root / written[1].case_id / "datalist.json",
    }[target]
    before = _digest(root)
    result = subprocess.run(
        [sys.executable, "-m", "data_prep.brats", "--root", str(root), "--out", str(out)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == EXIT_USAGE and "Traceback" not in result.stderr
    assert ("refusing to overwrite input file" in result.stderr) or ("lies inside the dataset folder" in result.stderr)
    assert _digest(root) == before


def test_a_split_that_leaves_training_empty_is_an_error(tmp_path, make_dataset, caplog):
    root, written = make_dataset("brats2018", n_cases=5)
    for case, published in zip(written, PAPER_META_VALIDATION_CASES):  # exactly the 5 published meta-validation ids
        folder = case.label.parent
        for path in folder.iterdir():
            path.rename(folder / path.name.replace(case.case_id, published))
        folder.rename(folder.parent / published)
    assert main(["--root", str(root), "--out", str(tmp_path / "out" / "d.json")]) == EXIT_USAGE
    assert "split paper leaves 'training' empty (5 labelled cases)" in caplog.text
    assert not (tmp_path / "out" / "d.json").exists()


def test_symlink_loops_do_not_duplicate_cases(tmp_path, make_dataset):
    root, written = make_dataset("brats2021", n_cases=4)
    os.symlink(root, root / written[0].case_id / "loop")
    os.symlink(root / written[1].case_id, root / "alias_of_a_case")
    assert main(["--root", str(root), "--out", str(tmp_path / "out" / "d.json")]) == EXIT_OK
    datalist = json.loads((tmp_path / "out" / "d.json").read_text())
    listed = [item["case_id"] for key in ("training", "meta_validation", "validation") for item in datalist[key]]
    assert sorted(listed) == sorted(c.case_id for c in written) and datalist["skipped"] == []


def test_the_same_case_id_in_hgg_and_lgg_is_reported(tmp_path, make_dataset, caplog):
    root, written = make_dataset("brats2018", n_cases=7)
    hgg = next(c for c in written if c.label.parent.parent.name == "HGG")
    shutil.copytree(hgg.label.parent, root / "LGG" / hgg.case_id)
    assert main(["--root", str(root), "--out", str(tmp_path / "out" / "d.json")]) == EXIT_OK
    assert f"{hgg.case_id}: HGG/{hgg.case_id}: the case id is found 2 times" in caplog.text
    assert f"{hgg.case_id}: LGG/{hgg.case_id}: the case id is found 2 times" in caplog.text
    datalist = json.loads((tmp_path / "out" / "d.json").read_text())
    assert hgg.case_id not in [item["case_id"] for key in ("training", "meta_validation") for item in datalist[key]]


def test_a_header_claiming_an_absurd_size_is_reported_for_that_case(tmp_path, make_dataset, caplog):
    root, written = make_dataset("brats2021", n_cases=4)
    path = written[0].images["t1"]
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[42:48] = np.array([30000, 30000, 30000], dtype="<i2").tobytes()  # NIfTI-1 dim[1..3]
    path.write_bytes(gzip.compress(bytes(raw)))
    assert main(["--root", str(root), "--out", str(tmp_path / "out" / "d.json")]) == EXIT_OK
    assert f"{written[0].case_id}: {written[0].case_id}/{path.name}: declares an implausible size (30000" in caplog.text
    assert "MemoryError" not in caplog.text


def test_labelled_cases_of_two_label_conventions_are_refused_as_a_whole(tmp_path, make_dataset, caplog):
    root, _ = make_dataset("brats2021", n_cases=3)
    other, _ = make_dataset("brats2023", n_cases=3)
    shutil.move(str(other), str(root / "release2023"))
    assert main(["--root", str(root), "--out", str(tmp_path / "out" / "d.json")]) == EXIT_USAGE
    assert "mixes labelled cases of the layouts brats2021, brats2023, whose label conventions differ" in caplog.text


def test_resample_to_writes_copies_of_a_case_on_two_grids_and_leaves_the_inputs_untouched(tmp_path, make_dataset):
    root, written = make_dataset("brats2021", n_cases=4)
    case = written[0]
    flair = case.images["flair"]
    volume = np.asarray(nib.load(flair).dataobj)[:, :, ::3]
    thick = brats_affine(SHAPE)
    thick[:3, 2] *= 3
    _rewrite(flair, volume, thick)  # FLAIR at 1 x 1 x 3 mm, the other modalities and the label at 1 mm
    before = _digest(root)
    out = tmp_path / "lists" / "d.json"
    assert main(["--root", str(root), "--out", str(out)]) == EXIT_OK
    skipped = json.loads(out.read_text())["skipped"]
    assert [s["case_id"] for s in skipped] == [case.case_id] and "spatial shape" in skipped[0]["reason"]

    assert main(["--root", str(root), "--out", str(out), "--resample-to", "t1ce"]) == EXIT_OK
    datalist = json.loads(out.read_text())
    items = {item["case_id"]: item for key in ("training", "meta_validation", "validation") for item in datalist[key]}
    assert datalist["skipped"] == [] and sorted(items) == sorted(c.case_id for c in written)
    copied = items[case.case_id]
    assert all(path.startswith(f"resampled/{case.case_id}/") for path in copied["image"])
    assert copied["label"].endswith(f"{case.case_id}/{case.case_id}_seg.nii.gz") and "resampled" not in copied["label"]
    assert not any("resampled" in path for path in items[written[1].case_id]["image"])
    resampled = nib.load(out.parent / copied["image"][0])
    assert resampled.shape == SHAPE and np.allclose(resampled.affine, brats_affine(SHAPE))
    assert _digest(root) == before


def test_resampled_copies_inside_the_dataset_are_refused(tmp_path, make_dataset, caplog):
    root, _ = make_dataset("brats2021", n_cases=2)
    argv = ["--root", str(root), "--out", str(tmp_path / "d.json"), "--resample-to", "t1ce"]
    assert main([*argv, "--resampled-dir", str(root / "copies")]) == EXIT_USAGE
    assert "--resampled-dir" in caplog.text and "lies inside the dataset folder" in caplog.text
    assert main([*argv[:-1], "pd"]) == EXIT_USAGE and "--resample-to must be auto or one of" in caplog.text
