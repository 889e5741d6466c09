"""Bundle training through ``python -m monai.bundle run`` survives SIGTERM and a kill -9 inside a checkpoint write.

SIGTERM: the run stops after the iteration, writes ``models/interrupted.pt``, logs one line, exits 143 without a
traceback, and ``--resume_checkpoint`` continues from the next iteration. kill -9 while the epoch-2 checkpoint is
being written (``save_hook/sitecustomize.py`` makes that ``torch.save`` hang half-way): the epoch-1 checkpoint
survives and the run resumes from it; the same kill with MONAI's own ``CheckpointSaver`` leaves only the half-written
file, which shows that the test detects the failure it guards against.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mckd.checkpoints import CheckpointError, load_checkpoint

HOOK = Path(__file__).parent / "save_hook"
CONFIGS = "['configs/train.json','configs/cpu_small.json']"


def _command(bundle, brats_data, root: Path, **extra) -> list[str]:
    values = dict(bundle.small_run, bundle_root=str(root), data_list_file_path=str(brats_data.datalist), **extra)
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", CONFIGS]
    for key, value in values.items():
        command += [f"--{key}", str(value).replace(" ", "")]
    return command


def _start(command: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    environment = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", **env)
    pipe = subprocess.PIPE
    return subprocess.Popen(command, cwd=cwd, env=environment, stdout=pipe, stderr=pipe, text=True)


def _wait_for(process: subprocess.Popen, path: Path, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            out, err = process.communicate()
            pytest.fail(f"the run ended before {path.name} appeared:\n{out[-3000:]}\n{err[-3000:]}")
        time.sleep(0.05)


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_sigterm_saves_a_resumable_checkpoint_exits_143_in_one_line_and_resume_continues(bundle, brats_data, tmp_path):
    models = tmp_path / "models"
    process = _start(_command(bundle, brats_data, tmp_path, num_iterations=4000, val_interval=1000), bundle.root)
    _wait_for(process, models / "last_checkpoint_epoch=1.pt")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=300)

    assert process.returncode == 143, out[-3000:] + err[-3000:]
    (line,) = [line for line in (out + err).splitlines() if "received" in line]
    assert "WARNING - SIGTERM received: stopped after iteration" in line and f"'{models / 'interrupted.pt'}'" in line
    assert "Traceback" not in out + err
    saved = load_checkpoint(models / "interrupted.pt")
    iteration = saved["trainer"]["iteration"]
    assert iteration >= 2 and not (models / "model_final.pt").exists()

    epoch = iteration // 2 + 1  # two iterations per epoch: the epoch of the next iteration, run to its end
    end = 2 * epoch
    resumed = _run(
        _command(
            bundle,
            brats_data,
            tmp_path,
            num_iterations=end,
            val_interval=1000,
            resume_checkpoint=str(models / "interrupted.pt"),
        ),
        bundle.root,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"Restored all variables from {models / 'interrupted.pt'} (iteration {iteration})" in resumed.stdout
    assert f"Epoch: {epoch}/{epoch}, Iter: 2/2" in resumed.stdout
    assert load_checkpoint(models / "model_final.pt")["trainer"]["iteration"] == end


def _kill_during_the_epoch_2_save(bundle, brats_data, root: Path, **extra) -> list[Path]:
    """Train until the epoch-2 checkpoint write hangs half-way, kill -9 there; the files left in ``models``."""
    ready = root / "hung"
    process = _start(
        _command(bundle, brats_data, root, val_interval=1000, **extra),
        bundle.root,
        PYTHONPATH=os.pathsep.join([str(HOOK), os.environ.get("PYTHONPATH", "")]),
        MCKD_TEST_HANG_SAVE="last_checkpoint_epoch=2",
        MCKD_TEST_HANG_READY=str(ready),
    )
    _wait_for(process, ready)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    return sorted((root / "models").iterdir())


def test_kill_9_during_the_checkpoint_write_keeps_the_previous_checkpoint_and_resume_continues(
    bundle, brats_data, tmp_path
):
    left = _kill_during_the_epoch_2_save(bundle, brats_data, tmp_path)

    names = [path.name for path in left]
    assert names[0].startswith(".last_checkpoint_epoch=2.pt.") and names[0].endswith(".part.pt")  # the hung write
    assert names[1:] == ["last_checkpoint_epoch=1.pt"]
    assert load_checkpoint(left[1])["trainer"]["iteration"] == 2

    resumed = _run(
        _command(bundle, brats_data, tmp_path, val_interval=1000, resume_checkpoint=str(left[1])), bundle.root
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "a partial checkpoint left by an interrupted save" in resumed.stdout
    final = torch.load(tmp_path / "models" / "model_final.pt", weights_only=True)
    assert final["trainer"]["iteration"] == 4
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [
        "last_checkpoint_epoch=1.pt",
        "last_checkpoint_epoch=2.pt",
        "modality_weights.pt",
        "model.pt",
        "model_final.pt",
    ]


def test_the_same_kill_with_monai_checkpoint_saver_leaves_no_usable_checkpoint(bundle, brats_data, tmp_path):
    left = _kill_during_the_epoch_2_save(
        bundle, brats_data, tmp_path, **{"train#checkpoint_saver#_target_": "CheckpointSaver"}
    )

    assert [path.name for path in left] == ["last_checkpoint_epoch=2.pt"]  # epoch 1 deleted before the write
    with pytest.raises(CheckpointError, match="is truncated or corrupted"):
        load_checkpoint(left[0])
