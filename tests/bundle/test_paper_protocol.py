"""The paper protocol end to end: a datalist without a validation list trains a deployable ``models/model.pt`` that
every consumer reads with its defaults (inference, evaluation, MONAI's ``ckpt_export``, the ONNX export)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from data_prep.brats import prepare_datalist
from data_prep.synthetic_brats import write_dataset

CPU = "['configs/train.json','configs/cpu_small.json']"


def _run(command: list[str], cwd: Path, expect: int = 0) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == expect, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _bundle_run(config_files: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_files, *args]


@pytest.fixture(scope="module")
def paper_run(bundle, tmp_path_factory) -> SimpleNamespace:
    """A copy of the bundle trained for 4 iterations on a paper split (training + meta-validation, no validation)."""
    root = tmp_path_factory.mktemp("paper_protocol")
    write_dataset(root / "cases", 6, "brats2018", bundle.case_shape, seed=1)
    datalist = root / "lists" / "datalist.json"
    prepare_datalist(root / "cases", datalist, split="paper", seed=0)
    assert json.loads(datalist.read_text())["validation"] == []
    overrides = dict(bundle.small_run, bundle_root=str(root), data_list_file_path=str(datalist))
    args = [token for key, value in overrides.items() for token in (f"--{key}", str(value).replace(" ", ""))]
    _run(_bundle_run(CPU, *args), bundle.root)
    return SimpleNamespace(root=root, models=root / "models", datalist=datalist, cases=root / "cases")


def test_training_without_validation_writes_the_final_network_as_model_pt(paper_run):
    final = torch.load(paper_run.models / "model_final.pt", weights_only=True)
    deployable = torch.load(paper_run.models / "model.pt", weights_only=True)
    assert set(deployable) == set(final["model"])
    assert all(torch.equal(deployable[key], final["model"][key]) for key in deployable)
    importance = torch.load(paper_run.models / "modality_weights.pt", weights_only=True)
    assert torch.equal(importance["w"], final["modality_weights"]["w"])


def test_inference_with_its_default_checkpoint(paper_run, bundle, tmp_path):
    command = _bundle_run(
        "['configs/inference.json','configs/cpu_small.json']", "--bundle_root", str(paper_run.root),
        "--dataset_dir", str(paper_run.cases), "--output_dir", str(tmp_path / "predictions"),
    )
    _run(command, bundle.root)
    summary = json.loads((tmp_path / "predictions" / "inference_summary.json").read_text())
    assert len(summary["written"]) == 6 and not summary["skipped"]


def test_evaluation_without_a_held_out_list_stops_at_start_naming_the_lists(paper_run, bundle):
    configs = "['configs/train.json','configs/cpu_small.json','configs/evaluate.json']"
    command = _bundle_run(configs, "--bundle_root", str(paper_run.root), "--data_list_file_path", str(paper_run.datalist))
    result = _run(command, bundle.root, expect=1)
    last_line = result.stderr.strip().splitlines()[-1]
    assert "has no labelled held-out cases to evaluate" in last_line
    assert "training (3 cases), meta_validation (3 cases), validation (0 cases)" in last_line
    assert not (paper_run.root / "eval" / "evaluation").exists()


def test_evaluation_of_a_named_list_reads_model_pt_and_the_importance_beside_it(paper_run, bundle, tmp_path):
    configs = "['configs/train.json','configs/cpu_small.json','configs/evaluate.json']"
    command = _bundle_run(
        configs, "--bundle_root", str(paper_run.root), "--data_list_file_path", str(paper_run.datalist),
        "--eval_list_key", "meta_validation", "--output_dir", str(tmp_path / "eval"), "--eval_subsets", "[[1,1,1,1]]",
    )
    _run(command, bundle.root)
    report = (tmp_path / "eval" / "evaluation.md").read_text()
    learned = torch.softmax(torch.load(paper_run.models / "modality_weights.pt", weights_only=True)["w"], 0)
    assert all(f"| {value:.4f} |" in report for value in learned.tolist())


def test_monai_ckpt_export_reads_model_pt_without_key_in_ckpt(paper_run, bundle, tmp_path):
    target = tmp_path / "model.ts"
    command = [
        sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(target),
        "--bundle_root", str(paper_run.root), "--meta_file", "configs/metadata.json",
        "--config_file", "['configs/inference.json','configs/cpu_small.json']",
    ]
    _run(command, bundle.root)
    assert torch.jit.load(str(target)) is not None


def test_onnx_export_reads_model_pt_with_its_defaults(paper_run, bundle, tmp_path):
    target = tmp_path / "model.onnx"
    command = [
        sys.executable, "-m", "mckd.onnx_export", "--config_file", "configs/inference.json",
        "--config_file", "configs/cpu_small.json", "--ckpt_file", str(paper_run.models / "model.pt"),
        "--filepath", str(target),
    ]
    _run(command, bundle.root)
    assert target.stat().st_size > 0
