"""The AV-MNIST bundle: schema and property checks, shared MCKD components, and train -> evaluate -> infer runs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, verify_metadata

from data_prep._avmnist_protocol import write_dataset
from mckd.avmnist.report import SubsetAccuracyReport
from mckd.avmnist.transforms import KeepModalitiesd
from mckd.engines import MCKDTrainer
from mckd.handlers import MetaImportanceUpdater
from mckd.networks.avdigit import AVDigitNet

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundle" / "avmnist_mckd_classification"
BRATS_TRAIN = REPO / "bundle" / "brats_mri_mckd_segmentation" / "configs" / "train.json"
SCHEMA = REPO / "bundle" / "meta_schema_20240725.json"
SHARED_TARGETS = {
    "mckd.distillation.ModalityImportance",
    "mckd.distillation.PairwiseDistillationLoss",
    "mckd.availability.ModalityDropout",
    "mckd.handlers.MetaImportanceUpdater",
    "mckd.engines.MCKDTrainer",
}
FAST = {"epochs": 1, "batch_size": 8, "meta_interval": 2, "meta_steps": 1, "meta_batch_size": 4, "val_interval": 1}


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    """A random dataset in the data_prep.avmnist format: 20 training (half without audio), 10 meta-val, 10 test."""
    folder = tmp_path_factory.mktemp("avmnist")
    rng = np.random.default_rng(0)

    def split(n: int, audio_every: int = 1) -> dict[str, np.ndarray]:
        available = np.ones((n, 2), dtype=bool)
        available[::audio_every, 1] = audio_every == 1
        return {
            "image": rng.integers(0, 256, (n, 1, 28, 28)).astype(np.uint8),
            "audio": rng.standard_normal((n, 1, 20, 20)).astype(np.float32),
            "label": np.arange(n) % 10,
            "available": available,
            "speaker": np.array(["s"] * n),
            "source_index": np.zeros((n, 2), dtype=np.int64),
        }

    write_dataset(folder, {"training": split(20, 2), "meta_validation": split(10), "test": split(10)}, {})
    return folder


def _targets(node) -> set[str]:
    if isinstance(node, dict):
        found = {node["_target_"]} if isinstance(node.get("_target_"), str) else set()
        return found.union(*(_targets(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_targets(v) for v in node))
    return set()


def test_both_bundles_use_the_same_mckd_distillation_handler_and_trainer():
    ours = _targets(json.loads((BUNDLE / "configs" / "train.json").read_text()))
    brats = _targets(json.loads(BRATS_TRAIN.read_text()))
    assert SHARED_TARGETS <= ours
    assert SHARED_TARGETS <= brats


def test_metadata_passes_the_schema():
    verify_metadata(meta_file=str(BUNDLE / "configs" / "metadata.json"), filepath=str(SCHEMA))


def test_train_and_inference_configs_have_the_zoo_properties(tiny_dataset, tmp_path):
    common = {"dataset_dir": str(tiny_dataset), "bundle_root": str(tmp_path)}
    train = ConfigWorkflow(config_file=str(BUNDLE / "configs" / "train.json"), workflow_type="train", **common, **FAST)
    train.initialize()
    assert train.check_properties() == []
    trainer = train.parser.get_parsed_content("train#trainer")
    assert isinstance(trainer, MCKDTrainer) and isinstance(trainer.network, AVDigitNet)
    assert any(isinstance(h, MetaImportanceUpdater) for h in train.parser.get_parsed_content("train#handlers"))
    train.run()
    train.finalize()
    assert (tmp_path / "models" / "model.pt").is_file()
    infer = ConfigWorkflow(config_file=str(BUNDLE / "configs" / "inference.json"), workflow_type="infer", **common)
    infer.initialize()
    assert infer.check_properties() == []


def _bundle_run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", *args], cwd=BUNDLE, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_train_evaluate_infer_through_the_bundle_runner(tiny_dataset, tmp_path):
    overrides = ["--dataset_dir", str(tiny_dataset), "--bundle_root", str(tmp_path)]
    fast = [item for key, value in FAST.items() for item in (f"--{key}", str(value))]
    _bundle_run("training", "--config_file", "configs/train.json", *overrides, *fast)
    trajectory = (tmp_path / "eval" / "importance_trajectory.csv").read_text().splitlines()
    assert trajectory[0] == "iteration,image,audio" and trajectory[1].startswith("1,")
    evaluated = _bundle_run("--config_file", "['configs/train.json','configs/evaluate.json']", *overrides)
    for inputs in ("Image", "Audio", "Image+Audio"):
        assert f"accuracy with {inputs}:" in evaluated.stdout + evaluated.stderr
    with open(tmp_path / "eval" / "accuracy.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["inputs"] for r in rows] == ["Image", "Audio", "Image+Audio"]
    assert all(r["num_samples"] == "10" for r in rows)
    assert set(json.loads((tmp_path / "eval" / "importance.json").read_text())) == {"image", "audio"}
    _bundle_run("--config_file", "configs/inference.json", *overrides, "--input_modalities", "['audio']")
    predictions = (tmp_path / "eval" / "predictions.csv").read_text().splitlines()
    assert len(predictions) == 10 and predictions[0].startswith("test.npz#0,")


def test_keep_modalities_marks_dropped_inputs_missing_and_zeroes_them():
    sample = {"image": np.ones((1, 28, 28)), "audio": np.ones((1, 20, 20)), "available": np.array([True, False])}
    out = KeepModalitiesd(keep=["audio"])(sample)
    assert out["available"].tolist() == [False, False] and not out["image"].any()
    out = KeepModalitiesd(keep=["image"])(sample)
    assert out["available"].tolist() == [True, False] and out["image"].all()
    with pytest.raises(ValueError, match="keep must name"):
        KeepModalitiesd(keep=["video"])


def test_report_skips_samples_left_without_inputs(tiny_dataset, tmp_path):
    from mckd.avmnist.data import load_split

    torch.manual_seed(0)
    report = SubsetAccuracyReport(AVDigitNet(), load_split(tiny_dataset, "training"), lambda d: d, tmp_path)
    rows = {r["inputs"]: r for r in report.run()}
    assert rows["Audio"]["num_samples"] == 10 and rows["Image"]["num_samples"] == 20
    assert (tmp_path / "accuracy.md").read_text().startswith("# AV-MNIST accuracy")
