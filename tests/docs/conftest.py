"""Fixtures of the docs test (rules: ``tests/docs/workspace.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from data_prep.synthetic_brats import write_dataset
from tests.docs.workspace import BRATS, REPO, SHAPE, TINY_BRATS, shell_env


@pytest.fixture(scope="session")
def tiny_brats_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``models/`` of a 4-iteration training of the CPU configuration (for documents that use a model)."""
    root = tmp_path_factory.mktemp("docs_tiny_model")
    lists = root / "lists" / "datalist.json"
    write_dataset(root / "cases", 8, "brats2018", SHAPE, seed=0)
    subprocess.run(
        [sys.executable, "-m", "data_prep.brats", "--root", str(root / "cases"), "--out", str(lists)],
        check=True, capture_output=True, env=shell_env(),
    )
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
               "['configs/train.json','configs/cpu_small.json']", "--bundle_root", str(root / "run"),
               "--data_list_file_path", str(lists), *TINY_BRATS.split()]
    result = subprocess.run(command, cwd=REPO / "bundle" / BRATS, capture_output=True, text=True, env=shell_env())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root / "run" / "models"
