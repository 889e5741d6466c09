"""One gate per input kind (issue 23, class 3): a modality path that is not a regular readable file, a header that
declares an implausible size or a colour / one-slice image, and a DICOM series that is not one intact MR volume are
each a ``CaseError`` naming the case, the file and what is wrong, never a silently missing modality; the same
verdict in the case model, data preparation and bundle inference (through their command lines).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.bundle import ConfigParser

from data_prep.brats import EXIT_OK, main as prepare_main
from mckd.brats.cases import CaseError, check_input_path, discover_cases, image_stem
from mckd.brats.inference import EXIT_CASES_SKIPPED
from mckd.brats.loading import LoadModalities
from tests.dicom_builders import write_dicom_series

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundle" / "brats_mri_mckd_segmentation"
SHAPE = (24, 28, 20)
AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])


def _nifti(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))
    return path


def _volume(seed: int = 0, shape=SHAPE) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) * 100 + 1).astype(np.float32)


# ------------------------------------------------------------------------------------------- what the path is


def _folder(path: Path) -> None:
    path.mkdir(parents=True)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _dangling(path: Path) -> None:
    # as git-annex leaves a file whose content was not fetched
    path.symlink_to("../.git/annex/objects/Xk/9Q/SHA256E-s1234--abc.nii.gz/SHA256E-s1234--abc.nii.gz")


def _device(path: Path) -> None:
    path.symlink_to("/dev/null")


PATH_KINDS = {
    "folder": (_folder, r"is a folder, not an image file\."),
    "FIFO": (_fifo, r"is a FIFO \(named pipe\), not an image file\."),
    "dangling link": (_dangling, r"is a dangling symbolic link: its target '\.\./\.git/annex/.*' does not exist"),
    "link to a device": (_device, r"is a character device \(a symbolic link to '/dev/null'\), not an image file\."),
}


@pytest.mark.parametrize("kind", list(PATH_KINDS))
def test_a_modality_path_that_is_not_a_regular_file_is_named_as_such_never_missing(tmp_path, kind):
    make, reason = PATH_KINDS[kind]
    good = _nifti(tmp_path / "c1" / "c1_flair.nii.gz", _volume())
    bad = tmp_path / "c1" / "c1_t1.nii.gz"
    make(bad)
    with pytest.raises(CaseError, match=rf"case 'c1' \(file '{bad}'\): {reason}"):
        LoadModalities()([str(good), str(bad), None, None], case_id="c1")


@pytest.mark.parametrize("kind", list(PATH_KINDS))
def test_discovery_keeps_a_broken_modality_path_as_an_input_for_the_gate(tmp_path, kind):
    make, _ = PATH_KINDS[kind]
    _nifti(tmp_path / "in" / "c1" / "c1_flair.nii.gz", _volume())
    make(tmp_path / "in" / "c1" / "c1_t1.nii.gz")
    (case,) = discover_cases(tmp_path / "in").cases
    assert case.available == (True, True, False, False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_modality_file_says_permission_denied(tmp_path):
    bad = _nifti(tmp_path / "c1" / "c1_t1.nii.gz", _volume())
    bad.chmod(0o200)
    with pytest.raises(CaseError, match=rf"case 'c1' \(file '{bad}'\): cannot be read: permission denied"):
        check_input_path("c1", bad)


def test_a_file_the_system_refuses_to_open_says_permission_denied_even_under_root(tmp_path, monkeypatch):
    # root opens any file; the refusal of a non-root user (or of an ACL, SELinux) is what os.open raises
    bad = _nifti(tmp_path / "c1" / "c1_t1.nii.gz", _volume())

    def refused(path, flags, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "open", refused)
    with pytest.raises(CaseError, match=rf"case 'c1' \(file '{bad}'\): cannot be read: permission denied \(mode -rw"):
        check_input_path("c1", bad)


def test_a_dicom_series_folder_is_accepted_where_a_modality_may_be_a_series_only(tmp_path):
    check_input_path("c1", tmp_path, series_ok=True)
    with pytest.raises(CaseError, match="is a folder, not an image file"):
        check_input_path("c1", tmp_path)


# ------------------------------------------------------------------------------------------- what the header says


def _renamed(path: Path, extension: str) -> Path:
    """``path`` with ``extension`` instead of its image extension."""
    return path.with_name(image_stem(path.name) + extension)


def _mhd_8gb(path: Path) -> Path:
    path, raw = _renamed(path, ".mhd"), _renamed(path, ".raw")
    raw.write_bytes(b"\0" * 64)
    path.write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 2048 2048 512\nElementType = MET_FLOAT\n"
        f"ElementDataFile = {raw.name}\n"
    )
    return path


def _nhdr_8gb(path: Path) -> Path:
    path, raw = _renamed(path, ".nhdr"), _renamed(path, ".raw")
    raw.write_bytes(b"\0" * 64)
    path.write_text(
        "NRRD0004\ntype: float\ndimension: 3\nsizes: 2048 2048 512\nencoding: raw\nendian: little\n"
        f"data file: {raw.name}\n"
    )
    return path


def _rgb_nifti(path: Path) -> Path:
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["G"] = 7
    return _nifti(path, rgb)


def _rgb_metaimage(path: Path) -> Path:
    import itk

    path = _renamed(path, ".mha")
    image = itk.image_from_array(np.full((*SHAPE[::-1], 3), 9, np.uint8), is_vector=True)
    itk.imwrite(image, str(path))
    return path


def _one_slice(path: Path) -> Path:
    return _nifti(path, _volume(shape=(*SHAPE[:2], 1)))


HEADERS = {
    "MetaImage claiming 8 GB": (_mhd_8gb, r"declares an implausible size \(2048, 2048, 512\)"),
    "NRRD claiming 8 GB": (_nhdr_8gb, r"declares an implausible size \(2048, 2048, 512\)"),
    "RGB NIfTI": (_rgb_nifti, r"is a colour image \(R, G, B per voxel\); expected one grey-level MR intensity"),
    "RGB MetaImage": (_rgb_metaimage, r"has 3 values per voxel \(colour or vector pixels\)"),
    "one-slice volume": (_one_slice, r"is not a 3D volume: shape \(24, 28, 1\) has a single voxel along an axis"),
}


@pytest.mark.parametrize("kind", list(HEADERS))
def test_a_header_the_network_cannot_use_is_refused_before_the_voxels_are_read(tmp_path, kind):
    make, reason = HEADERS[kind]
    good = _nifti(tmp_path / "c1" / "c1_flair.nii.gz", _volume())
    bad = make(tmp_path / "c1" / "c1_t1.nii.gz")
    with pytest.raises(CaseError, match=rf"case 'c1' \(file '{bad}'\): {reason}"):
        LoadModalities()([str(good), str(bad), None, None], case_id="c1")


# ------------------------------------------------------------------------------------------- DICOM series


def _series(folder: Path, **kwargs) -> Path:
    volume = (np.arange(4 * 5 * 6).reshape(4, 5, 6) % 97 + 1).astype(np.int16)
    return write_dicom_series(folder, volume, (1.0, 1.0, 2.0), **kwargs)


def _edit(folder: Path, index: int, change) -> None:
    path = sorted(folder.iterdir())[index]
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


def _ct(folder: Path) -> None:
    _series(folder, tags={"Modality": "CT"})


def _half_pixel_data(folder: Path) -> None:
    _series(folder)
    path = sorted(folder.iterdir())[2]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])  # the last slice bytes are pixel data


def _other_size(folder: Path) -> None:
    _series(folder)

    def smaller(ds):
        ds.Rows, ds.Columns = 4, 4
        ds.PixelData = np.ones((4, 4), np.int16).tobytes()

    _edit(folder, 3, smaller)


def _no_position(folder: Path) -> None:
    _series(folder)

    def without_position(ds):
        del ds.ImagePositionPatient

    for index in (1, 4):
        _edit(folder, index, without_position)


def _two_orientations(folder: Path) -> None:
    _series(folder)
    _edit(folder, 2, lambda ds: setattr(ds, "ImageOrientationPatient", [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]))


def _colour(folder: Path) -> None:
    _series(folder)
    for index in range(6):

        def rgb(ds):
            ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
            ds.PixelData = np.zeros((5, 4, 3), np.uint8).tobytes()

        _edit(folder, index, rgb)


def _one_file(folder: Path) -> None:
    volume = (np.arange(20).reshape(4, 5, 1) + 1).astype(np.int16)
    write_dicom_series(folder, volume, (1.0, 1.0, 2.0))


DICOM = {
    "CT series": (_ct, r"is a CT series \(Modality 'CT' in 'slice000.dcm'\), not MR: the T1 input must be an MR"),
    "half the pixel data": (_half_pixel_data, r"slice 'slice002.dcm' holds 20 of the 40 bytes of pixel data"),
    "a slice of another size": (_other_size, r"has slices of different sizes \(4 x 4, 5 x 4 rows x columns"),
    "slices without position": (_no_position, r"2 of 6 slices have no ImagePositionPatient \(first 'slice001.dcm'\)"),
    "two orientations": (_two_orientations, r"mixes slice orientations: 'slice002.dcm' has ImageOrientationPatient"),
    "colour slices": (_colour, r"is a colour series \(3 samples per pixel, RGB in 'slice000.dcm'\)"),
    "one slice": (_one_file, r"holds a single slice: not a 3D volume\."),
}


@pytest.mark.parametrize("kind", list(DICOM))
def test_a_dicom_series_that_is_not_one_intact_mr_volume_is_named(tmp_path, kind):
    make, reason = DICOM[kind]
    folder = tmp_path / "case9" / "t1"
    make(folder)
    with pytest.raises(CaseError, match=rf"case 'case9' \(file '{folder}'\): {reason}"):
        LoadModalities()([None, str(folder), None, None], case_id="case9")


def test_a_fifo_inside_a_dicom_series_folder_is_named_not_waited_on(tmp_path):
    folder = _series(tmp_path / "case9" / "t2")
    os.mkfifo(folder / "slice999.dcm")
    with pytest.raises(CaseError, match=rf"\(file '{folder}/slice999.dcm'\): is a FIFO"):
        LoadModalities()([None, None, None, str(folder)], case_id="case9")


# ------------------------------------------------------------------------------ the command lines, one verdict


def _gate_cases(root: Path) -> dict[str, str]:
    """A good case, cases with one broken input each, and a good case whose folder name is not UTF-8."""
    for seed, modality in enumerate(("flair", "t1ce")):
        _nifti(root / "good" / f"good_{modality}.nii.gz", _volume(seed, (32, 32, 32)))
    broken = {"fifo": _fifo, "annex": _dangling, "device": _device, "folder": _folder}
    for case, make in broken.items():
        _nifti(root / case / f"{case}_flair.nii.gz", _volume(1, (32, 32, 32)))
        make(root / case / f"{case}_t1.nii.gz")
    _nifti(root / "big" / "big_flair.nii.gz", _volume(2, (32, 32, 32)))
    _mhd_8gb(root / "big" / "big_t1.nii.gz")
    _nifti(root / "ct" / "ct_flair.nii.gz", _volume(3, (32, 32, 32)))
    _ct(root / "ct" / "t2")
    latin1 = os.fsdecode(b"caf\xe9")
    _nifti(root / latin1 / "scan_flair.nii.gz", _volume(4, (32, 32, 32)))
    return {
        "fifo": "is a FIFO (named pipe), not an image file.",
        "annex": "is a dangling symbolic link",
        "device": "is a character device (a symbolic link to '/dev/null')",
        "folder": "is a folder, not an image file.",
        "big": "declares an implausible size (2048, 2048, 512)",
        "ct": "is a CT series (Modality 'CT' in 'slice000.dcm'), not MR: the T2 input must be an MR series.",
    }


@pytest.fixture(scope="module")
def gate_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    reasons = _gate_cases(root / "cases")
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / n) for n in ("inference.json", "cpu_small.json")])
    (root / "bundle" / "models").mkdir(parents=True)
    torch.save(
        {"model": parser.get_parsed_content("network_def").state_dict()}, root / "bundle" / "models" / "model.pt"
    )
    command = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file",
        json.dumps([str(BUNDLE / "configs" / n) for n in ("inference.json", "cpu_small.json")]),
        "--bundle_root", str(root / "bundle"), "--dataset_dir", str(root / "cases"),
        "--output_dir", str(root / "predictions"), "--sw_roi_size", "[32, 32, 32]", "--num_workers", "0",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=BUNDLE, capture_output=True, encoding="utf-8", errors="backslashreplace", check=False, timeout=600
    )
    return root, reasons, result


def test_inference_names_each_broken_input_writes_the_others_and_exits_3(gate_run):
    root, reasons, result = gate_run
    assert result.returncode == EXIT_CASES_SKIPPED, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((root / "predictions" / "inference_summary.json").read_text(encoding="utf-8"))
    skipped = {item["case_id"]: item["reason"] for item in summary["skipped"]}
    assert set(skipped) == set(reasons)
    for case, reason in reasons.items():
        assert reason in skipped[case] and f"case '{case}'" in skipped[case]
    written = sorted(item["case_id"] for item in summary["written"])
    assert written == sorted(["good", os.fsdecode(b"caf\xe9")])
    predictions = {p.name for p in (root / "predictions").iterdir() if p.name.endswith("_seg.nii.gz")}
    assert predictions == {"good_seg.nii.gz", os.fsdecode(b"caf\xe9_seg.nii.gz")}


def test_data_prep_gives_the_same_verdict_as_inference(gate_run, caplog):
    root, reasons, _ = gate_run
    out = root / "lists" / "datalist.json"
    assert prepare_main(["--root", str(root / "cases"), "--out", str(out), "--allow-missing-modalities"]) == EXIT_OK
    listed = json.loads(out.read_text(encoding="utf-8"))
    lists = [listed.get(key, []) for key in ("training", "meta_validation", "validation", "testing")]
    assert {item["case_id"] for items in lists for item in items} == {"good", os.fsdecode(b"caf\xe9")}
    for case, reason in reasons.items():
        assert reason in caplog.text, case


def test_data_prep_refuses_an_output_inside_a_case_folder_reached_through_a_symlink(tmp_path, caplog):
    elsewhere = tmp_path / "elsewhere" / "c1"
    for seed, modality in enumerate(("flair", "t1", "t1ce", "t2")):
        _nifti(elsewhere / f"c1_{modality}.nii.gz", _volume(seed))
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "c1").symlink_to(elsewhere)
    out = elsewhere / "datalist.json"
    assert prepare_main(["--root", str(tmp_path / "root"), "--out", str(out)]) == 2
    assert f"--out '{out}' lies inside the case folder '{elsewhere}'" in caplog.text
    assert not out.exists()
