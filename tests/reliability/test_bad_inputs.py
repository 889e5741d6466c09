"""The bad-input catalogue (docs/bad_inputs.md): each entry fails early with a message naming the case and file.

Entries already covered by ``tests/data_prep`` and ``tests/brats`` are referenced from the catalogue, not repeated.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import NibabelWriter
from monai.transforms import Compose, LoadImaged

from data_prep.brats import EXIT_OK, EXIT_STRICT, main as prepare_main
from data_prep.synthetic_brats import brats_affine, write_dataset
from mckd.brats.cases import CaseError, discover_cases
from mckd.brats.datalist import DatalistError, load_datalist
from mckd.brats.labels import ConvertLabelToRegionsd
from mckd.brats.loading import LoadModalities, LoadModalitiesd
from mckd.brats.writing import SaveCasePrediction
from mckd.checkpoints import AtomicCheckpointSaver, save_checkpoint
from mckd.interrupt import GracefulInterrupt
from tests.dicom_builders import write_dicom_series

ROOT = Path(__file__).parents[2]
SHAPE = (24, 28, 20)
#: A folder name with a space, non-ASCII letters and shell metacharacters.
AWKWARD = "my data é ü $(touch pwned); `id` & | 'q' \"dq\" %s @x"


def _nifti(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, brats_affine(SHAPE[:3])), str(path))
    return path


def _volume(seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random(SHAPE) * 100 + 1).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------- data_prep


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "brats2021"
    return root, write_dataset(root, 4, "brats2021", SHAPE, 0)


def _complex(path: Path) -> None:
    nib.save(nib.Nifti1Image(np.asarray(nib.load(path).dataobj).astype(np.complex64), brats_affine(SHAPE)), path)


def _label_five(path: Path) -> None:
    data = np.asarray(nib.load(path).dataobj).copy()
    data[0, 0, 0] = 5
    nib.save(nib.Nifti1Image(data, brats_affine(SHAPE)), path)


def _two_d(path: Path) -> None:
    nib.save(nib.Nifti1Image(np.ones(SHAPE[:2], np.int16), np.eye(4)), path)


def _five_d(path: Path) -> None:
    nib.save(nib.Nifti1Image(np.ones((*SHAPE, 1, 2), np.int16), brats_affine(SHAPE)), path)


DATA_PREP_BREAKAGES = {
    "complex voxels": ("t1", _complex, "has complex voxels (complex64); expected integer or floating-point intensities."),
    "label 5": ("seg", _label_five, "label map holds values [5] that the 'brats2018' convention does not define"),
    "2D image": ("flair", _two_d, "is not a 3D volume: shape (24, 28) (one 3D file per modality)."),
    "5D image": ("t2", _five_d, "is not a 3D volume: shape (24, 28, 20, 1, 2) (one 3D file per modality)."),
}


@pytest.mark.parametrize("breakage", list(DATA_PREP_BREAKAGES))
def test_data_prep_skips_the_case_naming_case_and_file_and_strict_writes_nothing(tmp_path, dataset, caplog, breakage):
    root, written = dataset
    suffix, damage, reason = DATA_PREP_BREAKAGES[breakage]
    case = written[0]
    path = case.label if suffix == "seg" else case.images[suffix]
    damage(path)
    out = tmp_path / "lists" / "d.json"
    assert prepare_main(["--root", str(root), "--out", str(out), "--strict"]) == EXIT_STRICT
    assert f"{case.case_id}: {case.case_id}/{path.name}: {reason}" in caplog.text
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
    assert prepare_main(["--root", str(root), "--out", str(out)]) == EXIT_OK
    assert case.case_id not in [item["case_id"] for item in json.loads(out.read_text())["training"]]


def test_awkward_file_names_go_through_data_prep_loading_and_prediction_untouched(tmp_path):
    root = tmp_path / AWKWARD / "brats2021"
    written = write_dataset(root, 3, "brats2021", SHAPE, 0)
    out = tmp_path / AWKWARD / "lists" / "datalist é.json"
    assert prepare_main(["--root", str(root), "--out", str(out), "--split", "ratio:0.34"]) == EXIT_OK
    items = load_datalist(out, "training")
    loaded = LoadModalitiesd("image")(items[0])
    assert loaded["image"].shape == (4, *SHAPE) and loaded["available"].all()
    assert AWKWARD in loaded["image"].meta["filename_or_obj"]
    saved = SaveCasePrediction(tmp_path / AWKWARD / "preds")(loaded["image"][:1], items[0]["case_id"])
    assert saved.parent.name == "preds" and saved.exists()
    assert not (Path.cwd() / "pwned").exists() and not (tmp_path / "pwned").exists()
    assert {c.case_id for c in written} >= {items[0]["case_id"]}


# ------------------------------------------------------------------------------------------ loading (train/infer)


def _bool_npy(path: Path) -> Path:
    path = path.parent / "c1_t1.npy"
    np.save(path, np.ones(SHAPE, bool))
    return path


def _complex_nifti(path: Path) -> Path:
    return _nifti(path, _volume().astype(np.complex64))


def _nan_nifti(path: Path) -> Path:
    data = _volume()
    data[1, 2, 3], data[2, 2, 2] = np.nan, np.inf
    return _nifti(path, data)


def _two_d_nifti(path: Path) -> Path:
    return _nifti(path, _volume()[:, :, 0])


def _five_d_nifti(path: Path) -> Path:
    return _nifti(path, np.ones((*SHAPE, 1, 2), np.float32))


def _truncated_nifti(path: Path) -> Path:
    _nifti(path, _volume())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _text_as_nifti(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("patient notes, not an image")
    return path


LOADING_BREAKAGES = {
    "boolean voxels": (_bool_npy, "has boolean voxels"),
    "complex voxels": (_complex_nifti, "has complex voxels"),
    "NaN/Inf voxels": (_nan_nifti, "contains 2 NaN/Inf voxels"),
    "2D image": (_two_d_nifti, r"is not a 3D volume: shape \(24, 28\)"),
    "5D image": (_five_d_nifti, "(is not a 3D volume|expected a single-modality image)"),
    "truncated .nii.gz": (_truncated_nifti, "cannot be read"),
    "text file named .nii.gz": (_text_as_nifti, "cannot be read"),
}


@pytest.mark.parametrize("breakage", list(LOADING_BREAKAGES))
def test_loading_a_bad_modality_file_is_a_case_error_naming_case_and_file(tmp_path, breakage):
    make, reason = LOADING_BREAKAGES[breakage]
    good = _nifti(tmp_path / "c1" / "c1_flair.nii.gz", _volume())
    bad = make(tmp_path / "c1" / "c1_t1.nii.gz")
    with pytest.raises(CaseError, match=rf"case 'c1' \(file '{bad}'\): {reason}"):
        LoadModalitiesd("image")({"case_id": "c1", "image": [str(good), str(bad), None, None]})


def test_all_zero_modality_is_treated_as_missing_and_all_zero_everywhere_is_no_modality(tmp_path, caplog):
    flair = _nifti(tmp_path / "c2_flair.nii.gz", _volume())
    blank = _nifti(tmp_path / "c2_t1.nii.gz", np.zeros(SHAPE, np.float32))
    image, available = LoadModalities()([str(flair), str(blank), None, None], case_id="c2")
    assert available.tolist() == [True, False, False, False] and not image[1].any()
    assert f"case 'c2': {blank} is all zero; the modality is treated as missing" in caplog.text
    with pytest.raises(CaseError, match="case 'c2': no modality is present"):
        LoadModalities()([None, str(blank), None, None], case_id="c2")


@pytest.mark.parametrize("value, convention", [(3, "brats2018"), (5, "brats2023"), (5, "msd")])
def test_label_value_outside_the_convention_names_the_file(tmp_path, value, convention):
    data = np.zeros(SHAPE, np.uint8)
    data[1, 1, 1] = value
    path = _nifti(tmp_path / "c3_seg.nii.gz", data)
    item = LoadImaged("label", ensure_channel_first=True)({"label": str(path), "label_convention": convention})
    with pytest.raises(CaseError, match=rf"\(file '{path}'\): label map holds values \[{value}\] that the '{convention}'"):
        ConvertLabelToRegionsd("label", convention_key="label_convention")(item)


# ---------------------------------------------------------------------------------------------------------- DICOM


@pytest.fixture(scope="module")
def dicom_writer():
    return write_dicom_series


def _series(folder: Path, writer, spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0), slices: int = 6) -> Path:
    return writer(folder, (np.arange(4 * 5 * slices).reshape(4, 5, slices) % 97 + 1).astype(np.int16), spacing, origin)


def _missing_slice(folder: Path, writer) -> None:
    _series(folder, writer)
    (folder / "slice003.dcm").unlink()


def _uneven_spacing(folder: Path, writer) -> None:
    _series(folder, writer)
    for k, path in enumerate(sorted(folder.iterdir())):
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * k + (0.7 if k >= 4 else 0.0)]
        ds.save_as(path)


def _two_series(folder: Path, writer) -> None:
    _series(folder, writer)
    other = _series(folder.parent / "other", writer, origin=(0.0, 0.0, 100.0))
    for path in other.iterdir():
        shutil.move(path, folder / f"b_{path.name}")


DICOM_BREAKAGES = {
    "missing slice": (_missing_slice, r"misses 1 slice\(s\): the first gap is between positions 4 and 8 mm"),
    "inconsistent spacing": (_uneven_spacing, "has unevenly spaced slices: 2 to 2.7 mm apart"),
    "two series in one folder": (_two_series, "holds 2 DICOM series"),
}


@pytest.mark.parametrize("breakage", list(DICOM_BREAKAGES))
def test_bad_dicom_series_is_a_case_error_naming_case_and_folder(tmp_path, dicom_writer, breakage):
    damage, reason = DICOM_BREAKAGES[breakage]
    folder = tmp_path / "case7" / "flair"
    damage(folder, dicom_writer)
    with pytest.raises(CaseError, match=rf"case 'case7' \(file '{folder}'\): {reason}"):
        LoadModalities()([str(folder), None, None, None], case_id="case7")


def test_a_good_dicom_series_passes_the_series_check(tmp_path, dicom_writer):
    folder = _series(tmp_path / "case8" / "t2", dicom_writer)
    image, available = LoadModalities()([None, None, None, str(folder)], case_id="case8")
    assert available.tolist() == [False, False, False, True] and image.shape == (4, 4, 5, 6)


# ------------------------------------------------------------------------------------------------------ datalists


def _write_datalist(folder: Path, content) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "datalist.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.mark.parametrize(
    "content, key, message",
    [
        ("{not json", "training", r"is not valid JSON: Expecting property name .* at line 1, column 2"),
        ("", "training", "is not valid JSON"),
        ("[]", "training", "must be a JSON object of case lists, not a list"),
        ({"validation": []}, "training", r"has no list 'training' \(it has validation \(0 cases\)\)"),
        ({"training": {"image": "x"}}, "training", "'training' must be a list of cases, not a dict"),
        ({"training": []}, "training", "'training' is empty; it needs at least one case"),
        ({"training": [{"image": []}], "meta_validation": []}, "meta_validation", "'meta_validation' is empty"),
        ({"training": [{"label": "x.nii.gz"}]}, "training", r"'training': item 0 \(case '\?'\) is not an object with an"),
    ],
    ids=["malformed", "empty file", "not an object", "no key", "not a list", "empty training",
         "empty meta-validation", "item without image"],
)
def test_unusable_datalist_fails_at_start_naming_the_file(tmp_path, content, key, message):
    path = _write_datalist(tmp_path / "lists", content)
    with pytest.raises(DatalistError, match=rf"datalist '{path}': {message}"):
        load_datalist(path, key)


def test_absent_datalist_names_the_file(tmp_path):
    with pytest.raises(DatalistError, match=f"datalist '{tmp_path / 'nope.json'}': does not exist"):
        load_datalist(tmp_path / "nope.json")


def test_missing_file_listed_in_a_datalist_fails_at_start_naming_case_and_file(tmp_path):
    flair = _nifti(tmp_path / "data" / "c1" / "c1_flair.nii.gz", _volume())
    images = [str(flair), str(flair.with_name("c1_t1.nii.gz")), str(flair), str(flair)]
    path = _write_datalist(tmp_path / "lists", {"training": [{"case_id": "c1", "image": images}]})
    with pytest.raises(DatalistError, match=r"1 file\(s\) listed in 'training' do not exist: case 'c1': .*c1_t1"):
        load_datalist(path)
    # a modality the datalist marks unavailable may be absent
    marked = {"training": [{"case_id": "c1", "image": images, "available": [True, False, True, True]}]}
    assert load_datalist(_write_datalist(tmp_path / "lists", marked))[0]["case_id"] == "c1"


def test_datalist_strings_are_data_never_config_expressions(tmp_path):
    marker = tmp_path / "evaluated"
    weird = tmp_path / "data" / "$x @y %z.nii.gz"
    _nifti(weird, _volume())
    expression = f"$open('{marker}', 'w')"
    item = {"case_id": expression, "image": [str(weird), None, None, None], "note": "@network_def", "ref": "%x#y"}
    path = _write_datalist(tmp_path / "lists", {"training": [item]})

    parser = ConfigParser(
        {
            "datalist": str(path),
            "data": {"_target_": "mckd.brats.datalist.load_datalist", "path": "@datalist", "key": "training"},
            "monai_data": "$monai.data.load_decathlon_datalist(@datalist, True, 'training')",
            "dataset": {"_target_": "Dataset", "data": "@data", "transform": {"_target_": "Identity"}},
        }
    )
    dataset = parser.get_parsed_content("dataset")
    monai_items = parser.get_parsed_content("monai_data")
    for loaded in (dataset[0], monai_items[0]):
        assert (loaded["case_id"], loaded["note"], loaded["ref"]) == (expression, "@network_def", "%x#y")
        assert loaded["image"][0] == str(weird)
    image, available = LoadModalities()(dataset[0]["image"], case_id=dataset[0]["case_id"])
    assert available.tolist() == [True, False, False, False] and image.meta["case_id"] == expression
    assert not marker.exists()


# ---------------------------------------------------------------------------------------- outputs and crops


def test_output_folder_below_a_regular_file_fails_clearly_and_writes_nothing(tmp_path, toy):
    # tests run as root, which may write into read-only folders: an output path below a regular file is unwritable
    # for every user (tests/data_prep covers chmod for non-root runs)
    blocker = tmp_path / "plain_file"
    blocker.write_text("")
    image = torch.ones(1, *SHAPE)
    with pytest.raises(CaseError, match=rf"case 'c5' \(file '{blocker}/preds/c5_seg.nii.gz'\): cannot write"):
        SaveCasePrediction(blocker / "preds")(image, "c5")
    trainer, save_dict = toy.build(1)
    with pytest.raises(PermissionError, match=f"cannot create checkpoint folder '{blocker}/ckpt'"):
        AtomicCheckpointSaver(str(blocker / "ckpt"), save_dict, save_interval=1)
    GracefulInterrupt(save_dict, blocker / "ckpt").attach(trainer)
    with pytest.raises(PermissionError, match=f"cannot create checkpoint folder '{blocker}/ckpt'"):
        trainer.run()
    with pytest.raises(PermissionError, match=f"cannot create output folder '{blocker}/ckpt'"):
        save_checkpoint(save_dict, blocker / "ckpt" / "model.pt")
    assert blocker.read_text() == "" and sorted(p.name for p in tmp_path.iterdir()) == ["plain_file"]


def test_a_crash_while_writing_a_prediction_leaves_no_file_and_no_temporary(tmp_path, monkeypatch):
    def failing_write(self, filename, verbose=False, **kwargs):
        Path(filename).write_bytes(b"\x1f\x8b partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(NibabelWriter, "write", failing_write)
    with pytest.raises(CaseError, match=rf"case 'c6' \(file '{tmp_path}/out/c6_seg.nii.gz'\): cannot write"):
        SaveCasePrediction(tmp_path / "out")(torch.ones(1, *SHAPE), "c6")
    assert list((tmp_path / "out").iterdir()) == []


def test_crop_larger_than_the_image_is_padded_by_the_training_pipeline(tmp_path):
    parser = ConfigParser()
    parser.read_config(ROOT / "bundle" / "brats_mri_mckd_segmentation" / "configs" / "train.json")
    parser["crop_size"] = [32, 32, 32]
    chain = parser.get_parsed_content("train#sampling_transforms") + parser.get_parsed_content("train#random_transforms")
    sample = {"image": torch.rand(4, 16, 20, 12), "label": (torch.rand(3, 16, 20, 12) > 0.7).float()}
    out = Compose(chain)(sample)
    out = out[0] if isinstance(out, list) else out
    assert tuple(out["image"].shape) == (4, 32, 32, 32) and tuple(out["label"].shape) == (3, 32, 32, 32)


def test_inference_discovery_reports_a_case_without_any_modality(tmp_path):
    (tmp_path / "in" / "empty_case").mkdir(parents=True)
    _nifti(tmp_path / "in" / "ok" / "ok_flair.nii.gz", _volume())
    found = discover_cases(tmp_path / "in")
    assert [c.case_id for c in found.cases] == ["ok"]
    problems = [(p.case_id, p.reason) for p in found.problems]
    assert problems == [("empty_case", "no modality image found in this folder.")]
    assert os.path.basename(found.problems[0].path) == "empty_case"
