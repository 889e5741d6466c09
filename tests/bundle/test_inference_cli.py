"""One folder, one verdict: data preparation, bundle inference, evaluation loading and the MONAI Label app agree on
which cases of a folder are usable; inference writes every usable case, skips the others with a reason, and never
writes into its inputs. Through the real command lines (``python -m data_prep.brats``, ``python -m monai.bundle``).

One difference is by design: modalities on different grids. Inference resamples them onto a reference modality
(``grid: resample``, clinical inputs); data preparation, whose datalists feed training on co-registered volumes,
reports them (``--resample-to`` writes resampled copies instead).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import itk
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import LoadImage

from mckd.brats.cases import CaseError, image_stem
from mckd.brats.conventions import MODALITIES
from mckd.brats.datalist import load_datalist
from mckd.brats.inference import EXIT_CASES_SKIPPED, EXIT_OK, EXIT_USAGE
from mckd.brats.loading import LoadModalitiesd
from tests.dicom_builders import lps_series_affine_ras

SHAPE = (32, 32, 32)
AFFINE = lps_series_affine_ras((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
USABLE = {
    "patientA": ["flair", "t1ce"],  # generic file names in a patient folder
    "Brats18_B_1": list(MODALITIES),
    "mixed1": ["flair", "t2"],  # NIfTI FLAIR + DICOM T2 series in one folder
    "MSD_4D": list(MODALITIES),  # a 4D image side by side with the case folders
    "zero_t2": ["flair"],  # its T2 file is all zero: a blank placeholder, the modality is missing
    "itk_case": ["t1", "t2"],  # MetaImage and NRRD files, upper-case extension, read through ITK
}
#: Usable for inference (resampled onto the reference grid), reported by data preparation.
ON_TWO_GRIDS = {"shape_mismatch": ["flair", "t2"]}
#: Case id -> words of the reason every entry point must give.
BROKEN = {
    "truncated": "cannot be read",
    "nan_case": "contains 1 NaN/Inf voxels",
    "five_d": "is not a 3D volume",
    "dcm_gap": "misses 1 slice(s)",
    "dcm_two": "holds 2 DICOM series",
    "bad4d": "a 4D image needs 4 modality volumes last",
}


def _volume(seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(SHAPE) * 100 + 1).astype(np.float32)


def _nifti(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))
    return path


def _cases(root: Path, write_dicom_series) -> Path:
    """The folder of cases above: usable ones and broken ones side by side."""
    _nifti(root / "patientA" / "scan_flair.nii.gz", _volume(0))
    _nifti(root / "patientA" / "scan_t1ce.nii.gz", _volume(1))
    for m, modality in enumerate(MODALITIES):
        _nifti(root / "Brats18_B_1" / f"Brats18_B_1_{modality}.nii.gz", _volume(m))
    _nifti(root / "mixed1" / "mixed1_flair.nii.gz", _volume(2))
    write_dicom_series(root / "mixed1" / "T2", _volume(3).astype(np.int16), (1.0, 1.0, 1.0))
    _nifti(root / "MSD_4D.nii.gz", np.stack([_volume(m) for m in range(4)], axis=-1))
    _nifti(root / "zero_t2" / "zero_t2_flair.nii.gz", _volume(4))
    _nifti(root / "zero_t2" / "zero_t2_t2.nii.gz", np.zeros(SHAPE, np.float32))
    for name, modality in (("itk_case_T1.MHA", 12), ("itk_case_t2.nrrd", 13)):
        (root / "itk_case").mkdir(exist_ok=True)
        itk.imwrite(itk.image_from_array(np.ascontiguousarray(_volume(modality).T)), str(root / "itk_case" / name))
    truncated = _nifti(root / "truncated" / "truncated_flair.nii.gz", _volume(5))
    truncated.write_bytes(truncated.read_bytes()[:2000])
    nan = _volume(6)
    nan[3, 3, 3] = np.nan
    _nifti(root / "nan_case" / "nan_case_flair.nii.gz", nan)
    _nifti(root / "five_d" / "five_d_t1.nii.gz", np.ones((*SHAPE, 1, 2), np.float32))
    write_dicom_series(root / "dcm_gap" / "flair", _volume(7).astype(np.int16), (1.0, 1.0, 1.0))
    (root / "dcm_gap" / "flair" / "slice010.dcm").unlink()
    write_dicom_series(root / "dcm_two" / "flair", _volume(8).astype(np.int16), (1.0, 1.0, 1.0))
    other = write_dicom_series(root / "other_series", _volume(9).astype(np.int16), (1.0, 1.0, 1.0))
    for path in other.iterdir():
        path.rename(root / "dcm_two" / "flair" / f"b_{path.name}")
    other.rmdir()
    _nifti(root / "shape_mismatch" / "shape_mismatch_flair.nii.gz", _volume(10))
    _nifti(root / "shape_mismatch" / "shape_mismatch_t2.nii.gz", _volume(11)[:30])
    _nifti(root / "bad4d.nii.gz", np.stack([_volume(m) for m in range(3)], axis=-1))
    return root


def _digest(folder: Path) -> dict[str, str]:
    files = (p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def setup(bundle, tmp_path_factory) -> SimpleNamespace:
    """The cases, and a bundle root with weights of the CPU configuration's network (untrained: only IO is tested)."""
    root = tmp_path_factory.mktemp("inference_cli")
    cases = _cases(root / "cases", bundle.write_dicom_series)
    parser = ConfigParser()
    parser.read_config(bundle.config_files("inference.json", "cpu_small.json"))
    network = parser.get_parsed_content("network_def")
    (root / "bundle" / "models").mkdir(parents=True)
    torch.save({"model": network.state_dict()}, root / "bundle" / "models" / "model.pt")
    return SimpleNamespace(root=root, cases=cases, bundle_root=root / "bundle")


def _infer(bundle, setup, dataset_dir: Path, output_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        json.dumps(bundle.config_files("inference.json", "cpu_small.json")),
        "--bundle_root",
        str(setup.bundle_root),
        "--dataset_dir",
        str(dataset_dir),
        "--output_dir",
        str(output_dir),
        "--sw_roi_size",
        "[32, 32, 32]",
        "--num_workers",
        "0",
        *overrides,
    ]
    return subprocess.run(
        command, cwd=bundle.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False, timeout=600
    )


@pytest.fixture(scope="module")
def inferred(bundle, setup) -> SimpleNamespace:
    before = _digest(setup.cases)
    result = _infer(bundle, setup, setup.cases, setup.root / "predictions")
    summary = json.loads((setup.root / "predictions" / "inference_summary.json").read_text())
    return SimpleNamespace(result=result, summary=summary, inputs_before=before)


@pytest.fixture(scope="module")
def prepared(setup) -> SimpleNamespace:
    out = setup.root / "lists" / "datalist.json"
    command = [sys.executable, "-m", "data_prep.brats", "--root", str(setup.cases), "--out", str(out)]
    result = subprocess.run([*command, "--allow-missing-modalities"], capture_output=True, text=True, check=False)
    return SimpleNamespace(result=result, datalist=json.loads(out.read_text()), path=out)


def test_inference_writes_every_usable_case_and_exits_3_naming_each_skipped_case(inferred, setup):
    assert inferred.result.returncode == EXIT_CASES_SKIPPED, inferred.result.stdout[-3000:]
    written = {item["case_id"]: item for item in inferred.summary["written"]}
    assert {case: item["modalities"] for case, item in written.items()} == {**USABLE, **ON_TWO_GRIDS}
    for case in set(USABLE) - {"itk_case"}:
        prediction = nib.load(setup.root / "predictions" / f"{case}_seg.nii.gz")
        assert prediction.shape == SHAPE and np.allclose(prediction.affine, AFFINE)
    assert nib.load(setup.root / "predictions" / "itk_case_seg.nii.gz").shape == SHAPE
    skipped = {item["case_id"]: item["reason"] for item in inferred.summary["skipped"]}
    assert sorted(skipped) == sorted(BROKEN)
    for case, words in BROKEN.items():
        assert words in skipped[case] and f"case '{case}'" in skipped[case] and "(file '" in skipped[case]
        assert f"skipped case '{case}'" in inferred.result.stdout
    assert "Traceback" not in inferred.result.stdout and "ConfigExpression" not in inferred.result.stdout
    assert f"inference summary: {len(USABLE) + len(ON_TWO_GRIDS)} case(s) written" in inferred.result.stdout
    assert (
        json.loads((setup.root / "predictions" / "shape_mismatch_alignment.json").read_text())["reference"] == "flair"
    )


def test_inference_leaves_its_inputs_untouched(inferred, setup):
    assert _digest(setup.cases) == inferred.inputs_before


def test_data_preparation_gives_the_same_verdict_as_inference(prepared, inferred):
    assert prepared.result.returncode == EXIT_OK, prepared.result.stderr[-3000:]
    listed = {item["case_id"]: item for item in prepared.datalist["testing"]}
    assert {case: [m for m, a in zip(MODALITIES, item["available"]) if a] for case, item in listed.items()} == USABLE
    skipped = {item["case_id"]: item["reason"] for item in prepared.datalist["skipped"]}
    assert sorted(skipped) == sorted([*BROKEN, *ON_TWO_GRIDS])
    for case, words in BROKEN.items():
        assert words in skipped[case]
    assert "spatial shape (30, 32, 32) differs from (32, 32, 32)" in skipped["shape_mismatch"]


def test_evaluation_loads_every_listed_case_as_prepared(prepared):
    items = load_datalist(prepared.path, key="testing")
    loaded = [LoadModalitiesd("image")(item) for item in items]
    assert {
        item["case_id"]: [m for m, a in zip(MODALITIES, item["available"].tolist()) if a] for item in loaded
    } == USABLE


def test_the_monai_label_app_names_and_judges_4d_cases_as_inference_does(bundle, setup):
    sys.path.insert(0, str(bundle.repo / "bundle" / "monailabel_app"))
    try:
        from lib.transforms import CaseIdFromPathd
    finally:
        sys.path.pop(0)
    chain = [CaseIdFromPathd(stem=image_stem), LoadModalitiesd("image")]

    def serve(name: str) -> dict:
        data = {"image_path": str(setup.cases / name), "image": str(setup.cases / name)}
        for transform in chain:
            data = transform(data)
        return data

    served = serve("MSD_4D.nii.gz")
    assert served["case_id"] == "MSD_4D" and served["available"].tolist() == [True] * 4
    with pytest.raises(CaseError, match=rf"case 'bad4d'.*{BROKEN['bad4d']}"):
        serve("bad4d.nii.gz")


@pytest.mark.parametrize("inside", ["the input folder", "a case folder", "a folder below a case"])
def test_an_output_folder_in_the_inputs_is_refused_before_anything_is_written(bundle, setup, inside):
    output = {
        "the input folder": setup.cases,
        "a case folder": setup.cases / "patientA",
        "a folder below a case": setup.cases / "Brats18_B_1" / "predictions",
    }[inside]
    before = _digest(setup.cases)
    result = _infer(bundle, setup, setup.cases, output)
    assert result.returncode == EXIT_USAGE and "Traceback" not in result.stdout
    assert f"error: output folder '{output}' is inside the input" in result.stdout
    assert _digest(setup.cases) == before


def test_a_folder_of_usable_cases_exits_0(bundle, setup):
    good = setup.root / "good"
    shutil.copytree(setup.cases / "patientA", good / "patientA")
    result = _infer(bundle, setup, good, setup.root / "good_predictions")
    assert result.returncode == EXIT_OK, result.stdout[-3000:]
    assert (setup.root / "good_predictions" / "patientA_seg.nii.gz").is_file()


def test_a_missing_input_path_is_one_error_line_and_exit_2(bundle, setup):
    result = _infer(bundle, setup, setup.root / "nope", setup.root / "nope_predictions")
    assert result.returncode == EXIT_USAGE and "Traceback" not in result.stdout
    assert f"error: input path '{setup.root / 'nope'}' does not exist." in result.stdout


def test_a_dicom_case_with_series_of_different_geometries_is_predicted_on_the_reference_and_each_series_grid(
    bundle, setup
):
    patient = setup.root / "clinical" / "patient9"
    t1ce = bundle.write_dicom_series(patient / "T1CE", _volume(20).astype(np.int16), (1.0, 1.0, 1.0))
    thick = _volume(21)[4:28, :, ::3].astype(np.int16)  # FLAIR: 3 mm slices over a narrower field of view
    flair = bundle.write_dicom_series(patient / "FLAIR", thick, (1.0, 1.0, 3.0), (-4.0, 0.0, 0.0))
    output = setup.root / "clinical_predictions"
    result = _infer(bundle, setup, patient.parent, output, "--save_native_grids", "True")
    assert result.returncode == EXIT_OK, result.stdout[-3000:]
    report = json.loads((output / "patient9_alignment.json").read_text())
    assert report["reference"] == "t1ce" and report["modalities"]["flair"]["resampled"]
    assert report["modalities"]["flair"]["shape"] == [24, 32, 11]
    reference = LoadImage(image_only=True)(str(t1ce))
    seg = nib.load(output / "patient9_seg.nii.gz")
    assert seg.shape == SHAPE and np.allclose(seg.affine, reference.affine, atol=1e-4)
    on_flair = nib.load(output / "patient9_seg_flair.nii.gz")
    flair_grid = LoadImage(image_only=True)(str(flair))
    assert on_flair.shape == tuple(flair_grid.shape) and np.allclose(on_flair.affine, flair_grid.affine, atol=1e-4)
    assert nib.load(output / "patient9_seg_t1ce.nii.gz").shape == SHAPE
    assert "onto the t1ce grid: resampled from shape [24, 32, 11]" in result.stdout
