"""The bundle through MONAI's command line: the legacy ``run training`` spelling and 2-process torchrun (gloo)."""

from __future__ import annotations

import os
import subprocess
import sys

import torch


def _cli_overrides(bundle, brats_data, root, **extra) -> list[str]:
    values = dict(bundle.small_run, bundle_root=str(root), data_list_file_path=str(brats_data.datalist), **extra)
    args = []
    for key, value in values.items():
        args += [f"--{key}", str(value).replace(" ", "")]
    return args


def _run(command: list[str], cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_legacy_run_training_spelling_trains_with_command_line_overrides(bundle, brats_data, tmp_path):
    command = [sys.executable, "-m", "monai.bundle", "run", "training"]
    command += ["--config_file", "['configs/train.json','configs/cpu_small.json']"]
    command += _cli_overrides(bundle, brats_data, tmp_path, num_iterations=2, val_interval=5)

    _run(command, cwd=bundle.root)

    final = torch.load(tmp_path / "models" / "model_final.pt", weights_only=True)
    assert final["trainer"]["iteration"] == 2 and final["trainer"]["epoch_length"] == 2
    # val_interval 5 > 1 epoch: no validation ran, so models/model.pt is the final network's state dict
    assert set(torch.load(tmp_path / "models" / "model.pt", weights_only=True)) == set(final["model"])


def test_two_process_torchrun_on_cpu_trains_and_only_rank0_writes_checkpoints(bundle, brats_data, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
    command += ["-m", "monai.bundle", "run"]
    command += ["--config_file", "['configs/train.json','configs/cpu_small.json','configs/multi_gpu_train.json']"]
    command += _cli_overrides(bundle, brats_data, tmp_path, num_iterations=2)

    result = _run(command, cwd=bundle.root)

    models = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert models == [
        "last_checkpoint_epoch=1.pt", "modality_weights.pt", "model.pt", "model_final.pt"
    ], result.stdout[-2000:]
    final = torch.load(tmp_path / "models" / "model_final.pt", weights_only=True)
    assert final["trainer"]["iteration"] == 2
    assert not any(k.startswith("module.") for k in final["model"])  # saved unwrapped from DDP
    assert len(list((tmp_path / "eval").glob("events.out.tfevents.*"))) >= 1
