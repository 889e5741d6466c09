"""The last line a user sees is ours (issue 23, class 6): a refused checkpoint ends inference with our one-line
message and no traceback before it (MONAI's StatsHandler logs engine exceptions with ``logger.exception``); any other
error keeps its full traceback."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from mckd.bundle_checks import _without_brief_tracebacks
from mckd.checkpoints import CheckpointError

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundle" / "brats_mri_mckd_segmentation"
CONFIGS = [str(BUNDLE / "configs" / n) for n in ("inference.json", "cpu_small.json")]


class _Payload:
    """Unpickling it would create a file: the code a hostile checkpoint carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("last_line")
    parser = ConfigParser()
    parser.read_config(CONFIGS)
    state = parser.get_parsed_content("network_def").state_dict()
    (root / "good").mkdir()
    torch.save({"model": state}, root / "good" / "model.pt")
    (root / "pickled" / "models").mkdir(parents=True)
    torch.save({"model": state, "extra": _Payload(root / "pwned")}, root / "pickled" / "models" / "model.pt")
    (root / "truncated" / "models").mkdir(parents=True)
    data = (root / "good" / "model.pt").read_bytes()
    (root / "truncated" / "models" / "model.pt").write_bytes(data[: len(data) // 2])
    (root / "cases" / "c1").mkdir(parents=True)
    volume = (np.random.default_rng(0).random((32, 32, 32)) * 100 + 1).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(root / "cases" / "c1" / "c1_flair.nii.gz"))
    return root


@pytest.mark.parametrize("kind, cause", [("pickled", "was refused: torch.load(weights_only=True) refused"),
                                         ("truncated", "is truncated or corrupted")])  # fmt: skip
def test_a_refused_checkpoint_ends_inference_with_our_line_and_no_traceback(setup, kind, cause):
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", json.dumps(CONFIGS),
               "--bundle_root", str(setup / kind), "--dataset_dir", str(setup / "cases"),
               "--output_dir", str(setup / f"out_{kind}"), "--sw_roi_size", "[32, 32, 32]",
               "--num_workers", "0"]  # fmt: skip
    result = subprocess.run(command, cwd=BUNDLE, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-4000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"CheckpointError: checkpoint '{setup / kind / 'models' / 'model.pt'}' {cause}"), last
    assert not (setup / "pwned").exists()


def _record(error: BaseException) -> logging.LogRecord:
    try:
        raise RuntimeError("Failed to evaluate ConfigExpression") from error
    except RuntimeError:
        return _without_brief_tracebacks(logging.LogRecord)("x", logging.ERROR, __file__, 1, "Exception", (),
                                                            sys.exc_info())  # fmt: skip


def test_only_foreseeable_errors_lose_their_traceback_in_the_log(monkeypatch):
    monkeypatch.delenv("MCKD_TRACEBACK", raising=False)
    assert _record(CheckpointError("m.pt", "is truncated")).exc_info is None
    assert _record(KeyError("unexpected")).exc_info is not None
    monkeypatch.setenv("MCKD_TRACEBACK", "1")
    assert _record(CheckpointError("m.pt", "is truncated")).exc_info is not None
