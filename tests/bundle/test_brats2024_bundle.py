"""BraTS 2024/2025 post-treatment glioma through the bundle with ``python -m monai.bundle run`` and the overlay
``configs/brats2024.json``: a synthetic dataset with resection cavities trains a four-output network (ET, TC, WT, RC),
the evaluation report scores RC as a fourth region, and inference writes label 4 where RC is predicted."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch

from data_prep.brats import prepare_datalist
from data_prep.synthetic_brats import write_dataset
from mckd.brats.conventions import BRATS2024_LABELS
from tests.bundle.paper_run import run_command

POST = list(BRATS2024_LABELS.region_names)
CLASSIFIER = "decoder.classifier.conv"


def _run(bundle, configs: tuple[str, ...], root: Path, **overrides) -> None:
    """``python -m monai.bundle run`` of the repository bundle's ``configs`` with ``--key value`` overrides."""
    files = "[" + ",".join(f"'{name}'" for name in bundle.config_files(*configs)) + "]"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, "--bundle_root", str(root)]
    command += [token for key, value in overrides.items() for token in (f"--{key}", str(value).replace(" ", ""))]
    run_command(command, bundle.root)


@pytest.fixture(scope="module")
def post_run(bundle, tmp_path_factory) -> SimpleNamespace:
    """8 synthetic brats2024 cases (datalist by ``--layout auto``) and a 4-iteration CPU run with the 2024 overlay."""
    root = tmp_path_factory.mktemp("brats2024_bundle")
    cases = write_dataset(root / "cases", 8, "brats2024", bundle.case_shape, seed=5)
    datalist = root / "lists" / "datalist.json"
    prepared = prepare_datalist(root / "cases", datalist, split="ratio:0.25", seed=0)
    assert prepared.layout == "brats2024" and prepared.datalist["num_validation"] == 2
    run = root / "run"
    _run(
        bundle,
        ("train.json", "cpu_small.json", "brats2024.json"),
        run,
        data_list_file_path=str(datalist),
        **bundle.small_run,
    )
    return SimpleNamespace(root=root, run=run, cases=cases, datalist=datalist)


def test_the_overlay_trains_a_network_with_a_fourth_output_for_rc(post_run):
    model = torch.load(post_run.run / "models" / "model.pt", weights_only=True)
    assert model[f"{CLASSIFIER}.weight"].shape[0] == len(POST) == 4
    last = torch.load(post_run.run / "models" / "last_checkpoint_epoch=2.pt", weights_only=True)
    assert last["trainer"]["iteration"] == 4


def test_the_evaluation_report_scores_rc_as_its_own_region(bundle, post_run):
    output = post_run.root / "report"
    _run(
        bundle,
        ("train.json", "cpu_small.json", "evaluate.json", "brats2024.json"),
        post_run.run,
        data_list_file_path=str(post_run.datalist),
        output_dir=str(output),
        eval_subsets="['FLAIR+T1+T1ce+T2']",
        **bundle.small_run,
    )
    summary_csv = next(output.glob("*_summary.csv"))
    with open(summary_csv) as f:
        summary = list(csv.DictReader(f))
    assert {row["region"] for row in summary} == set(POST)
    rows = {(row["subset"], row["region"]) for row in summary}
    assert all((subset, "RC") in rows for subset, _ in rows)
    markdown = summary_csv.with_name(summary_csv.name.replace("_summary.csv", ".md")).read_text()
    assert "Dice RC" in markdown and "HD95 RC" in markdown and "RC = Resection cavity" in markdown
    with open(summary_csv.with_name(summary_csv.name.replace("_summary", "_per_case"))) as f:
        per_case = [row for row in csv.DictReader(f) if row["region"] == "RC"]
    assert len(per_case) == 2  # one subset x the two validation cases


def _inputs(post_run, folder: Path) -> Path:
    """Two validation cases' images without their label maps."""
    lists = json.loads(post_run.datalist.read_text())
    for item in lists["validation"]:
        source = (post_run.datalist.parent / item["image"][0]).resolve().parent
        shutil.copytree(source, folder / source.name, ignore=shutil.ignore_patterns("*-seg.nii.gz"))
    return folder


def test_inference_writes_2024_label_values_and_label_4_where_rc_is_predicted(bundle, post_run, tmp_path):
    inputs = _inputs(post_run, tmp_path / "inputs")
    configs = ("inference.json", "cpu_small.json", "brats2024.json")
    trained = tmp_path / "trained"
    _run(bundle, configs, post_run.run, dataset_dir=str(inputs), output_dir=str(trained), sw_roi_size=[32, 32, 32])
    written = sorted(trained.glob("*_seg.nii.gz"))
    assert len(written) == 2
    for path in written:
        assert set(np.unique(np.asarray(nib.load(path).dataobj)).tolist()) <= BRATS2024_LABELS.valid_values

    # the same network made to predict RC (and no tumour region) everywhere: every voxel must be written as 4
    state = torch.load(post_run.run / "models" / "model.pt", weights_only=True)
    state[f"{CLASSIFIER}.weight"].zero_()
    state[f"{CLASSIFIER}.bias"].copy_(torch.tensor([-30.0, -30.0, -30.0, 30.0]))
    forced = tmp_path / "rc_everywhere.pt"
    torch.save(state, forced)
    output = tmp_path / "rc"
    _run(
        bundle, configs, post_run.run,
        dataset_dir=str(inputs), output_dir=str(output), ckpt_path=str(forced), sw_roi_size=[32, 32, 32],
    )
    for path in sorted(output.glob("*_seg.nii.gz")):
        label = np.asarray(nib.load(path).dataobj)
        assert label.shape == tuple(bundle.case_shape) and (label == 4).all(), path.name
