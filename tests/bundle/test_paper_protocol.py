"""The paper protocol end to end: a datalist without a validation list trains a deployable ``models/model.pt`` that
every consumer reads with its defaults (inference, evaluation, MONAI's ``ckpt_export``, the ONNX export)."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch

from tests.bundle.paper_run import bundle_run_command as _bundle_run
from tests.bundle.paper_run import run_command as _run
from tests.bundle.paper_run import train_paper_split


@pytest.fixture(scope="module")
def paper_run(bundle, tmp_path_factory):
    """A copy of the bundle trained for 4 iterations on a paper split."""
    return train_paper_split(tmp_path_factory.mktemp("paper_protocol"), bundle.small_run, bundle.case_shape)


def test_training_without_validation_writes_the_final_network_as_model_pt(paper_run):
    final = torch.load(paper_run.models / "model_final.pt", weights_only=True)
    deployable = torch.load(paper_run.models / "model.pt", weights_only=True)
    assert set(deployable) == set(final["model"])
    assert all(torch.equal(deployable[key], final["model"][key]) for key in deployable)
    importance = torch.load(paper_run.models / "modality_weights.pt", weights_only=True)
    assert torch.equal(importance["w"], final["modality_weights"]["w"])


def test_inference_with_its_default_checkpoint(paper_run, tmp_path):
    command = _bundle_run(
        "['configs/inference.json','configs/cpu_small.json']",
        "--dataset_dir",
        str(paper_run.cases),
        "--output_dir",
        str(tmp_path / "predictions"),
    )
    _run(command, paper_run.root)
    summary = json.loads((tmp_path / "predictions" / "inference_summary.json").read_text())
    assert len(summary["written"]) == 6 and not summary["skipped"]


def test_evaluation_without_a_held_out_list_stops_at_start_naming_the_lists(paper_run):
    configs = "['configs/train.json','configs/cpu_small.json','configs/evaluate.json']"
    command = _bundle_run(configs, "--data_list_file_path", str(paper_run.datalist))
    result = _run(command, paper_run.root, expect=1)
    last_line = result.stderr.strip().splitlines()[-1]
    assert "has no labelled held-out cases to evaluate" in last_line
    assert "training (3 cases), meta_validation (3 cases), validation (0 cases)" in last_line
    assert not (paper_run.root / "eval" / "evaluation").exists()


def test_evaluation_of_a_named_list_reads_model_pt_and_the_importance_beside_it(paper_run, tmp_path):
    configs = "['configs/train.json','configs/cpu_small.json','configs/evaluate.json']"
    command = _bundle_run(
        configs,
        "--data_list_file_path",
        str(paper_run.datalist),
        "--eval_list_key",
        "meta_validation",
        "--output_dir",
        str(tmp_path / "eval"),
        "--eval_subsets",
        "[[1,1,1,1]]",
    )
    _run(command, paper_run.root)
    report = (tmp_path / "eval" / "evaluation.md").read_text()
    learned = torch.softmax(torch.load(paper_run.models / "modality_weights.pt", weights_only=True)["w"], 0)
    assert all(f"| {value:.4f} |" in report for value in learned.tolist())


def test_monai_ckpt_export_reads_model_pt_without_key_in_ckpt(paper_run, tmp_path):
    target = tmp_path / "model.ts"
    command = [
        sys.executable,
        "-m",
        "monai.bundle",
        "ckpt_export",
        "network_def",
        "--filepath",
        str(target),
        "--meta_file",
        "configs/metadata.json",
        "--config_file",
        "['configs/inference.json','configs/cpu_small.json']",
    ]
    _run(command, paper_run.root)
    assert torch.jit.load(str(target)) is not None


def test_onnx_export_reads_model_pt_with_its_defaults(paper_run, tmp_path):
    target = tmp_path / "model.onnx"
    command = [
        sys.executable,
        "-m",
        "mckd.onnx_export",
        "--config_file",
        "configs/inference.json",
        "--config_file",
        "configs/cpu_small.json",
        "--ckpt_file",
        "models/model.pt",
        "--filepath",
        str(target),
    ]
    _run(command, paper_run.root)
    assert target.stat().st_size > 0


def test_inference_refuses_a_model_with_nan_weights_and_writes_nothing(paper_run, tmp_path):
    bundle_copy = tmp_path / "bundle"
    shutil.copytree(paper_run.root, bundle_copy, ignore=shutil.ignore_patterns("eval"))
    state = torch.load(bundle_copy / "models" / "model.pt", weights_only=True)
    first = next(key for key, value in state.items() if value.is_floating_point())
    state[first].view(-1)[0] = float("nan")
    torch.save(state, bundle_copy / "models" / "model.pt")
    command = _bundle_run(
        "['configs/inference.json','configs/cpu_small.json']", "--dataset_dir", str(paper_run.cases),
        "--output_dir", str(tmp_path / "predictions"),
    )
    result = _run(command, bundle_copy, expect=1)
    last = result.stderr.strip().splitlines()[-1]
    assert f"holds NaN or infinite values in model.{first} (1 of" in last and "diverged" in last, last
    assert not list(tmp_path.glob("predictions/*.nii.gz"))
