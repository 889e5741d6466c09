"""The export commands never write over what they read, and refuse unusable arguments with one line before any work."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
import torch
from monai.bundle import ConfigParser

CPU_CONFIGS = ("inference.json", "cpu_small.json")


@pytest.fixture
def checkpoint(bundle, tmp_path):
    """``models/model.pt`` of the CPU configuration (untrained), as training writes it."""
    parser = ConfigParser()
    parser.read_config(bundle.config_files(*CPU_CONFIGS))
    path = tmp_path / "model.pt"
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return path


def _run(command, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _torchscript(checkpoint, target, *extra):
    return [
        sys.executable,
        "-m",
        "mckd.ckpt_export",
        "network_def",
        "--filepath",
        str(target),
        "--ckpt_file",
        str(checkpoint),
        "--meta_file",
        "configs/metadata.json",
        "--config_file",
        "['configs/inference.json','configs/cpu_small.json']",
        *extra,
    ]


def _onnx(checkpoint, target, *extra):
    return [
        sys.executable,
        "-m",
        "mckd.onnx_export",
        "--config_file",
        "['configs/inference.json','configs/cpu_small.json']",
        "--ckpt_file",
        str(checkpoint),
        "--filepath",
        str(target),
        *extra,
    ]


@pytest.mark.parametrize("command", [_torchscript, _onnx])
def test_an_export_onto_its_checkpoint_is_refused_and_the_checkpoint_kept(bundle, checkpoint, command):
    before = _digest(checkpoint)
    result = _run(command(checkpoint, checkpoint), bundle.root)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert f"refusing to overwrite input file '{checkpoint}'" in last, result.stderr[-2000:]
    assert _digest(checkpoint) == before


def test_the_torchscript_export_explains_itself_on_help(bundle):
    result = _run([sys.executable, "-m", "mckd.ckpt_export", "--help"], bundle.root)
    assert result.returncode == 0 and "--filepath models/model.ts" in result.stdout and "Traceback" not in result.stderr


def test_the_onnx_export_takes_the_list_form_of_config_file(bundle, checkpoint, tmp_path):
    target = tmp_path / "model.onnx"
    result = _run(_onnx(checkpoint, target), bundle.root)
    assert result.returncode == 0, result.stderr[-2000:]
    assert target.stat().st_size > 0


@pytest.mark.parametrize(
    "shape", [["1", "8", "40", "32", "32"], ["1", "6", "32", "32", "32"], ["0", "8", "32", "32", "32"]]
)
def test_an_onnx_input_shape_the_network_cannot_take_is_refused_naming_what_it_needs(
    bundle, checkpoint, tmp_path, shape
):
    result = _run(_onnx(checkpoint, tmp_path / "model.onnx", "--input_shape", *shape), bundle.root)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert f"--input_shape [{', '.join(shape)}]: expected B >= 1, 8 channels" in last and "stride [16, 16, 16]" in last
    assert not (tmp_path / "model.onnx").exists()
