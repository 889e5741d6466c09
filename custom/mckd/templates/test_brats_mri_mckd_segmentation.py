"""Model-zoo style unit test of the BraTS MCKD bundle: train, evaluate and infer on synthetic data on the CPU.

Written into a model-zoo export by ``mckd.bundle_export`` (``ci/unit_tests/``). It runs with MONAI and the packages
pinned in ``configs/metadata.json`` only: ``python -m unittest discover -s ci/unit_tests`` from the bundle folder, or,
in the model-zoo repository, ``python ci/unit_tests/runner.py --b brats_mri_mckd_segmentation`` (the bundle under
``models/``). Every workflow goes through ``initialize``, ``check_properties``, ``run`` and ``finalize``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigWorkflow

BUNDLE_NAME = "brats_mri_mckd_segmentation"
_HERE = Path(__file__).resolve().parents[2]
#: The bundle: this test's own bundle (``<bundle>/ci/unit_tests``) or ``models/<bundle>`` of the model-zoo layout.
BUNDLE_ROOT = _HERE if (_HERE / "configs" / "metadata.json").is_file() else _HERE / "models" / BUNDLE_NAME
CASE_SHAPE = (32, 32, 32)
MODALITY_SUFFIXES = ("flair", "t1", "t1ce", "t2")
#: A few seconds on a CPU: the light backbone, 4 iterations (random subsets from iteration 3), 2 meta rounds.
SMALL_TRAIN = {
    "crop_size": [32, 32, 32],
    "sw_roi_size": [32, 32, 32],
    "batch_size": 1,
    "num_workers": 0,
    "num_iterations": 4,
    "epoch_length": 2,
    "val_interval": 1,
    "warmup_iterations": 2,
    "meta_interval": 3,
    "meta_steps": 1,
}
TRAIN_CONFIGS = ("train.json", "cpu_small.json")


def _write_case(folder: Path, case: str, rng: np.random.Generator) -> None:
    """One BraTS 2018-layout case: four random modalities and a label map with a tumour (labels 1, 2, 4)."""
    folder.mkdir(parents=True)
    label = np.zeros(CASE_SHAPE, np.uint8)
    label[8:24, 8:24, 8:24] = 2
    label[12:20, 12:20, 12:20] = 1
    label[14:18, 14:18, 14:18] = 4
    for suffix in MODALITY_SUFFIXES:
        image = (rng.random(CASE_SHAPE) * 100 + 50 * (label > 0)).astype(np.float32)
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(folder / f"{case}_{suffix}.nii.gz"))
    nib.save(nib.Nifti1Image(label, np.eye(4)), str(folder / f"{case}_seg.nii.gz"))


def _workflow(names: tuple[str, ...], workflow_type: str, **override) -> ConfigWorkflow:
    configs = [str(BUNDLE_ROOT / "configs" / name) for name in names]
    return ConfigWorkflow(
        config_file=configs,
        workflow_type=workflow_type,
        meta_file=str(BUNDLE_ROOT / "configs" / "metadata.json"),
        logging_file=str(BUNDLE_ROOT / "configs" / "logging.conf"),
        **override,
    )


def _run(workflow: ConfigWorkflow) -> None:
    workflow.initialize()
    missing = workflow.check_properties()
    if missing:
        raise ValueError(f"check_properties failed: {missing}")
    workflow.run()
    workflow.finalize()


def write_dataset(folder: Path, rng: np.random.Generator, cases: int = 8) -> Path:
    """Synthetic cases under ``folder/cases`` and their datalist (``folder/datalist.json``, 25% for validation, as
    ``scripts.data_prep.brats`` splits them); return ``folder``, the ``dataset_dir`` of the train configs."""
    for i in range(cases):
        _write_case(folder / "cases" / f"case_{i}", f"case_{i}", rng)
    command = [sys.executable, "-m", "scripts.data_prep.brats", "--root", str(folder / "cases")]
    command += ["--out", str(folder / "datalist.json"), "--split", "ratio:0.25"]
    subprocess.run(command, cwd=BUNDLE_ROOT, check=True)
    return folder


class TestBratsMCKDSegmentation(unittest.TestCase):
    def setUp(self) -> None:
        sys.path.insert(0, str(BUNDLE_ROOT))  # the bundle's ``scripts`` package, as the zoo's runner does
        self.work = Path(tempfile.mkdtemp())
        self.dataset_dir = write_dataset(self.work / "data", np.random.default_rng(0))

    def tearDown(self) -> None:
        sys.path.remove(str(BUNDLE_ROOT))
        shutil.rmtree(self.work)

    def test_train_evaluate_and_infer_configs(self) -> None:
        output = {"bundle_root": str(self.work / "run"), "dataset_dir": str(self.dataset_dir)}
        _run(_workflow(TRAIN_CONFIGS, "train", **output, **SMALL_TRAIN))
        # the deployable network is a plain state dict (what ckpt_export reads), its learned importance beside it
        state = torch.load(self.work / "run" / "models" / "model.pt", map_location="cpu", weights_only=True)
        self.assertFalse([key for key in state if key in ("model", "modality_weights")])
        self.assertTrue(os.path.isfile(self.work / "run" / "models" / "modality_weights.pt"))

        _run(_workflow((*TRAIN_CONFIGS, "evaluate.json"), "train", **output, **SMALL_TRAIN))
        self.assertTrue(os.path.isfile(self.work / "run" / "eval" / "evaluation_summary.json"))

        predictions = self.work / "predictions"
        case_dir = self.dataset_dir / "cases" / "case_0"
        infer = {"dataset_dir": str(case_dir), "output_dir": str(predictions), "backbone": "light"}
        _run(
            _workflow(
                ("inference.json",), "infer", bundle_root=output["bundle_root"], sw_roi_size=[32, 32, 32], **infer
            )
        )
        self.assertTrue(os.path.isfile(predictions / "case_0_seg.nii.gz"))


if __name__ == "__main__":
    unittest.main()
