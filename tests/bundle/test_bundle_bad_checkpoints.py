"""A bad checkpoint given to the bundle's command lines ends the run with one line naming the file and the cause.

Through ``python -m monai.bundle run`` (inference with ``--ckpt_path``, training with ``--resume_checkpoint``) and
``python -m mckd.ckpt_export``, for each kind of bad file: truncated, empty, text, a pickled payload whose unpickling
would run code, and a good checkpoint of another configuration (the CPU model loaded without the CPU overlay).
Never a bare ``EOFError`` / ``KeyError``, never PyTorch's advice to load with ``weights_only=False``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from monai.bundle import ConfigWorkflow

CPU = ["configs/cpu_small.json"]


class CodeOnLoad:
    """Unpickling this object would run ``open(marker, "w")``: the payload of a malicious checkpoint."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def checkpoints(bundle, brats_data, tmp_path_factory) -> SimpleNamespace:
    """A 2-iteration CPU training (in-process) and bad files made from its resumable checkpoint."""
    root = tmp_path_factory.mktemp("bad_checkpoints")
    workflow = ConfigWorkflow(
        config_file=bundle.config_files("train.json", "cpu_small.json"), workflow_type="train", logging_file=False,
        bundle_root=str(root), data_list_file_path=str(brats_data.datalist),
        **dict(bundle.small_run, num_iterations=2, val_interval=1000),
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    good = root / "models" / "last_checkpoint_epoch=1.pt"
    data = good.read_bytes()
    bad = root / "bad"
    bad.mkdir()
    (bad / "truncated.pt").write_bytes(data[: len(data) // 2])
    (bad / "empty.pt").write_bytes(b"")
    (bad / "text.pt").write_text("model weights: see the shared drive\n")
    payload = torch.load(good, weights_only=True)
    payload["extra"] = CodeOnLoad(str(root / "pwned"))
    torch.save(payload, bad / "pickled.pt")
    return SimpleNamespace(root=root, good=good, bad=bad, marker=root / "pwned")


#: kind -> (file, whether the CPU overlay is used, expected cause)
KINDS = {
    "truncated": ("truncated.pt", True, "is truncated or corrupted: an incomplete or damaged PyTorch zip archive"),
    "empty": ("empty.pt", True, "is empty (0 bytes)"),
    "text": ("text.pt", True, "is a text file, not a PyTorch checkpoint (it starts with 'model weights"),
    "pickled code": ("pickled.pt", True, "was refused: torch.load(weights_only=True) refused a non-tensor object"),
    "other configuration": (None, False, "does not fit 'model': missing keys encoder."),
}


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _assert_reported(result: subprocess.CompletedProcess, path: Path, cause: str, marker: Path) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-4000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"CheckpointError: checkpoint '{path}' {cause}"), output[-4000:]
    assert "weights_only=False" not in output and "Weights only load failed" not in output  # PyTorch's advice
    bare = ("EOFError", "KeyError", "_pickle.", "UnpicklingError")
    assert not any(line.startswith(bare) for line in output.splitlines())
    assert not marker.exists()


def _bad_file(checkpoints, kind: str) -> tuple[Path, list[str], str]:
    name, with_cpu_overlay, cause = KINDS[kind]
    path = checkpoints.bad / name if name else checkpoints.good
    return path, CPU if with_cpu_overlay else [], cause


@pytest.mark.parametrize("kind", list(KINDS))
def test_inference_with_a_bad_checkpoint_names_the_file_and_the_cause(bundle, brats_data, checkpoints, kind, tmp_path):
    path, overlay, cause = _bad_file(checkpoints, kind)
    configs = "[" + ",".join(f"'{c}'" for c in ["configs/inference.json", *overlay]) + "]"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", configs, "--ckpt_path", str(path)]
    command += ["--dataset_dir", str(brats_data.root / "cases"), "--output_dir", str(tmp_path / "out")]
    command += ["--sw_roi_size", "[32,32,32]", "--num_workers", "0"]

    result = _run(command, bundle.root)

    _assert_reported(result, path, cause, checkpoints.marker)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("kind", list(KINDS))
def test_resume_from_a_bad_checkpoint_names_the_file_and_the_cause(bundle, brats_data, checkpoints, kind, tmp_path):
    path, overlay, cause = _bad_file(checkpoints, kind)
    configs = "[" + ",".join(f"'{c}'" for c in ["configs/train.json", *overlay]) + "]"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", configs, "--resume_checkpoint", str(path)]
    command += ["--bundle_root", str(tmp_path), "--data_list_file_path", str(brats_data.datalist)]
    for key, value in bundle.small_run.items():
        command += [f"--{key}", str(value).replace(" ", "")]

    result = _run(command, bundle.root)

    _assert_reported(result, path, cause, checkpoints.marker)
    assert not list((tmp_path / "models").glob("*.pt"))  # nothing trained, nothing saved


@pytest.mark.parametrize("kind", ["good", "pickled code"])
def test_the_documented_torchscript_export_checks_the_checkpoint_first(bundle, checkpoints, kind, tmp_path):
    path = checkpoints.good if kind == "good" else checkpoints.bad / "pickled.pt"
    target = tmp_path / "model.ts"
    command = [sys.executable, "-m", "mckd.ckpt_export", "network_def", "--filepath", str(target), "--ckpt_file",
               str(path), "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json",
               "--key_in_ckpt", "model", "--backbone", "light"]

    result = _run(command, bundle.root)

    if kind == "good":
        assert result.returncode == 0 and target.is_file(), result.stdout[-3000:] + result.stderr[-3000:]
        assert torch.jit.load(str(target)) is not None
    else:
        output = result.stdout + result.stderr
        assert result.returncode == 1 and not target.exists(), output[-3000:]
        assert f"ERROR - checkpoint '{path}' was refused" in output and "Weights only load failed" not in output
        assert "Traceback" not in output and not checkpoints.marker.exists()
