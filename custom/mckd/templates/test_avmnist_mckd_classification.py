"""Model-zoo style unit test of the AV-MNIST MCKD bundle: train, evaluate and infer on synthetic data on the CPU.

Written into a model-zoo export by ``mckd.bundle_export`` (``ci/unit_tests/``). It runs with MONAI and the packages
pinned in ``configs/metadata.json`` only: ``python -m unittest discover -s ci/unit_tests`` from the bundle folder, or,
in the model-zoo repository, ``python ci/unit_tests/runner.py --b avmnist_mckd_classification`` (the bundle under
``models/``). The dataset is written in the bundle's format by the vendored ``scripts.data_prep`` writer: random
images and audio features whose class shows in both. Every workflow goes through ``initialize``,
``check_properties``, ``run`` and ``finalize``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigWorkflow

BUNDLE_NAME = "avmnist_mckd_classification"
_HERE = Path(__file__).resolve().parents[2]
#: The bundle: this test's own bundle (``<bundle>/ci/unit_tests``) or ``models/<bundle>`` of the model-zoo layout.
BUNDLE_ROOT = _HERE if (_HERE / "configs" / "metadata.json").is_file() else _HERE / "models" / BUNDLE_NAME
#: Samples per class of each split, and the audio feature shape of the offline build.
PER_CLASS = {"training": 4, "meta_validation": 2, "test": 1}
AUDIO_SHAPE = (1, 20, 20)
#: A few seconds on a CPU: one epoch of small batches, one meta round.
SMALL_TRAIN = {"batch_size": 8, "meta_batch_size": 4, "epochs": 1, "val_interval": 1, "meta_interval": 2}


def _split(per_class: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Arrays of one split: each sample's class is its mean intensity; a third of the samples lack audio."""
    label = np.repeat(np.arange(10), per_class)
    n = label.size
    image = (rng.random((n, 1, 28, 28)) * 100 + 15 * label[:, None, None, None]).astype(np.uint8)
    audio = (rng.standard_normal((n, *AUDIO_SHAPE)) + label[:, None, None, None] / 3).astype(np.float32)
    available = np.ones((n, 2), bool)
    available[::3, 1] = False
    speaker = np.array(["synthetic"] * n)
    return {"image": image, "audio": audio, "label": label, "available": available, "speaker": speaker,
            "source_index": np.stack([np.arange(n), np.arange(n)], axis=1)}  # fmt: skip


def write_dataset(folder: Path, rng: np.random.Generator) -> Path:
    """A synthetic AV-MNIST build (training, meta_validation and test splits) in ``folder``; return ``folder``."""
    from scripts.data_prep._avmnist_protocol import write_dataset as write

    write(folder, {name: _split(n, rng) for name, n in PER_CLASS.items()}, {"name": "synthetic", "source": "test"})
    return folder


def _run(names: tuple[str, ...], workflow_type: str, **override) -> None:
    workflow = ConfigWorkflow(
        config_file=[str(BUNDLE_ROOT / "configs" / name) for name in names],
        workflow_type=workflow_type,
        meta_file=str(BUNDLE_ROOT / "configs" / "metadata.json"),
        logging_file=str(BUNDLE_ROOT / "configs" / "logging.conf"),
        **override,
    )
    workflow.initialize()
    missing = workflow.check_properties()
    if missing:
        raise ValueError(f"check_properties failed: {missing}")
    workflow.run()
    workflow.finalize()


class TestAVMNISTMCKDClassification(unittest.TestCase):
    def setUp(self) -> None:
        sys.path.insert(0, str(BUNDLE_ROOT))  # the bundle's ``scripts`` package, as the zoo's runner does
        self.work = Path(tempfile.mkdtemp())
        self.dataset_dir = write_dataset(self.work / "data", np.random.default_rng(0))

    def tearDown(self) -> None:
        sys.path.remove(str(BUNDLE_ROOT))
        shutil.rmtree(self.work)

    def test_train_evaluate_and_infer_configs(self) -> None:
        output = {"bundle_root": str(self.work / "run"), "dataset_dir": str(self.dataset_dir)}
        _run(("train.json",), "train", **output, **SMALL_TRAIN)
        models = self.work / "run" / "models"
        state = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
        self.assertFalse([key for key in state if key in ("model", "modality_weights")])  # a plain state dict
        self.assertTrue((models / "modality_weights.pt").is_file())

        _run(("train.json", "evaluate.json"), "train", **output, **SMALL_TRAIN)
        self.assertTrue(any((self.work / "run" / "eval").glob("accuracy*")))

        _run(("inference.json",), "infer", **output)
        self.assertTrue((self.work / "run" / "eval" / "predictions.csv").is_file())


if __name__ == "__main__":
    unittest.main()
