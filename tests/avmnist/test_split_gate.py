"""An AV-MNIST split the network cannot use is refused when it is read, naming the file and the first rows, instead
of failing mid-training."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_prep._avmnist_protocol import write_dataset
from mckd.avmnist.data import AVMNISTDataError, load_split

BUNDLE = Path(__file__).resolve().parents[2] / "bundle" / "avmnist_mckd_classification"


def _split(n: int = 6, image_shape: tuple[int, ...] = (1, 28, 28)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "image": rng.integers(0, 256, (n, *image_shape)).astype(np.uint8),
        "audio": rng.standard_normal((n, 1, 20, 20)).astype(np.float32),
        "label": np.arange(n) % 10,
        "available": np.ones((n, 2), dtype=bool),
        "speaker": np.array(["s"] * n),
        "source_index": np.zeros((n, 2), dtype=np.int64),
    }


def _dataset(folder: Path, training: dict[str, np.ndarray]) -> Path:
    write_dataset(folder, {"training": training, "meta_validation": _split(), "test": _split()}, {})
    return folder


def test_a_well_formed_split_loads(tmp_path):
    samples = load_split(_dataset(tmp_path, _split()), "training")
    assert len(samples) == 6 and samples[3]["label"] == 3


def test_a_label_outside_the_ten_digits_names_the_file_and_row(tmp_path):
    training = _split()
    training["label"][3] = 10
    with pytest.raises(AVMNISTDataError, match=r"train.npz': labels \[10\] outside 0..9 at row 3\."):
        load_split(_dataset(tmp_path, training), "training")


def test_images_of_another_size_are_refused(tmp_path):
    with pytest.raises(AVMNISTDataError, match=r"train.npz': images of shape \(1, 28, 27\), expected \(1, 28, 28\)"):
        load_split(_dataset(tmp_path, _split(image_shape=(1, 28, 27))), "training")


def test_a_sample_without_any_modality_is_refused(tmp_path):
    training = _split()
    training["available"][[1, 4]] = False
    with pytest.raises(AVMNISTDataError, match=r"train.npz': no modality available at rows 1, 4\."):
        load_split(_dataset(tmp_path, training), "training")


def test_non_finite_audio_is_named_as_data_not_as_divergence(tmp_path):
    training = _split()
    training["audio"][2, 0, 0, 0] = np.nan
    with pytest.raises(AVMNISTDataError, match=r"train.npz': NaN or infinite audio values at row 2\."):
        load_split(_dataset(tmp_path, training), "training")


def test_the_bundle_training_stops_at_start_with_the_file_in_its_last_line(tmp_path):
    training = _split()
    training["label"][0] = 12
    dataset = _dataset(tmp_path / "data", training)
    command = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        "configs/train.json",
        "--bundle_root",
        str(tmp_path / "run"),
        "--dataset_dir",
        str(dataset),
        "--epochs",
        "1",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    result = subprocess.run(command, cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("AVMNISTDataError: AV-MNIST split file") and "labels [12] outside 0..9 at row 0" in last
    ), last
    assert not (tmp_path / "run" / "models").exists() or not any((tmp_path / "run" / "models").iterdir())
