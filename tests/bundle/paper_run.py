"""A copy of the BraTS bundle trained on a paper split (training + meta-validation, no validation list), for the
tests of every consumer of ``models/model.pt`` (tests/bundle and the MONAI Label server tests)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from data_prep.brats import prepare_datalist
from data_prep.synthetic_brats import write_dataset

BUNDLE = Path(__file__).resolve().parents[2] / "bundle" / "brats_mri_mckd_segmentation"
#: What the trained copy leaves out of the repository bundle (outputs of earlier runs).
_NOT_COPIED = shutil.ignore_patterns("models", "eval", "runs", "logs", "__pycache__")


def run_command(command: list[str], cwd: Path, expect: int = 0) -> subprocess.CompletedProcess:
    """Run ``command`` (one torch thread, warnings off) and check its exit status."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == expect, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def bundle_run_command(config_files: str, *args: str) -> list[str]:
    """``python -m monai.bundle run --config_file CONFIG_FILES ARGS...`` with this interpreter."""
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_files, *args]


def train_paper_split(root: Path, small_run: dict[str, Any], case_shape: tuple[int, int, int]) -> SimpleNamespace:
    """Copy the bundle to ``root/<bundle name>`` and train it with ``python -m monai.bundle run`` and the CPU overlay
    on 6 synthetic cases split as the paper does (no validation list), with the ``small_run`` overrides."""
    bundle = Path(shutil.copytree(BUNDLE, root / BUNDLE.name, ignore=_NOT_COPIED))
    write_dataset(root / "cases", 6, "brats2018", case_shape, seed=1)
    datalist = root / "lists" / "datalist.json"
    prepare_datalist(root / "cases", datalist, split="paper", seed=0)
    assert json.loads(datalist.read_text())["validation"] == []
    overrides = dict(small_run, data_list_file_path=str(datalist))
    command = bundle_run_command("['configs/train.json','configs/cpu_small.json']", "--bundle_root", ".")
    command += [token for key, value in overrides.items() for token in (f"--{key}", str(value).replace(" ", ""))]
    run_command(command, bundle)
    return SimpleNamespace(root=bundle, models=bundle / "models", datalist=datalist, cases=root / "cases")
