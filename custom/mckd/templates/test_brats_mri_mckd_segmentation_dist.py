"""Model-zoo style multi-GPU unit test of the BraTS MCKD bundle: ``configs/multi_gpu_train.json`` under ``torchrun``.

Written into a model-zoo export by ``mckd.bundle_export`` (``ci/unit_tests/``), beside the single-process test whose
synthetic data it reuses. It starts ``torchrun`` with one process per GPU (NCCL) when there are at least two GPUs,
else with two CPU processes (gloo: the overlay picks its backend from the device), and trains a few iterations of the
CPU configuration. In the model-zoo repository: ``torchrun ci/unit_tests/runner.py --b brats_mri_mckd_segmentation
--dist True``; from the bundle folder: ``python -m unittest discover -s ci/unit_tests``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np
import torch
from test_brats_mri_mckd_segmentation import BUNDLE_ROOT, SMALL_TRAIN, TRAIN_CONFIGS, write_dataset

#: Variables of an enclosing ``torchrun`` (the zoo runs its runner under one): the inner launch must not inherit them.
_LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE")
_LAUNCHER_VARIABLES += ("ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT")


def _world() -> tuple[int, dict[str, str]]:
    """Number of processes and extra environment: every GPU when there are two or more, else 2 CPU processes."""
    gpus = torch.cuda.device_count()
    return (gpus, {}) if gpus >= 2 else (2, {"CUDA_VISIBLE_DEVICES": ""})


def _environment(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARIABLES and not k.startswith("TORCHELASTIC_")}
    env["PYTHONPATH"] = os.pathsep.join([str(BUNDLE_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env | extra


class TestBratsMCKDSegmentationMultiGPU(unittest.TestCase):
    def setUp(self) -> None:
        self.work = Path(tempfile.mkdtemp())
        self.dataset_dir = write_dataset(self.work / "data", np.random.default_rng(0))

    def tearDown(self) -> None:
        shutil.rmtree(self.work)

    def test_multi_gpu_train_config(self) -> None:
        nproc, extra = _world()
        configs = [str(BUNDLE_ROOT / "configs" / name) for name in (*TRAIN_CONFIGS, "multi_gpu_train.json")]
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1"]
        command += [f"--nproc_per_node={nproc}", "-m", "monai.bundle", "run", "--config_file", json.dumps(configs)]
        command += ["--meta_file", str(BUNDLE_ROOT / "configs" / "metadata.json")]
        command += ["--logging_file", str(BUNDLE_ROOT / "configs" / "logging.conf")]
        command += ["--bundle_root", str(self.work / "run"), "--dataset_dir", str(self.dataset_dir)]
        for key, value in SMALL_TRAIN.items():
            command += [f"--{key}", json.dumps(value)]
        result = subprocess.run(
            command, cwd=BUNDLE_ROOT, env=_environment(extra), capture_output=True, text=True, timeout=1800
        )
        self.assertEqual(result.returncode, 0, msg=result.stdout[-3000:] + result.stderr[-3000:])

        # one deployable network, saved unwrapped from DistributedDataParallel as a plain state dict
        state = torch.load(self.work / "run" / "models" / "model.pt", map_location="cpu", weights_only=True)
        self.assertFalse([key for key in state if key.startswith("module.") or key == "model"])
        final = torch.load(self.work / "run" / "models" / "model_final.pt", map_location="cpu", weights_only=True)
        self.assertEqual(final["trainer"]["iteration"], SMALL_TRAIN["num_iterations"])


if __name__ == "__main__":
    unittest.main()
