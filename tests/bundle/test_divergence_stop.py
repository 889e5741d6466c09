"""A learning rate that makes the loss explode ends the bundle's training with our message as the last line, a
non-zero exit status and no final or deployable model."""

from __future__ import annotations

import os
import subprocess
import sys


def test_an_exploding_training_stops_with_one_line_and_no_final_model(bundle, brats_data, tmp_path):
    overrides = dict(bundle.small_run, num_iterations=12, val_interval=100, learning_rate=1.0e6, max_grad_norm=None)
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
               "['configs/train.json','configs/cpu_small.json']", "--bundle_root", str(tmp_path),
               "--data_list_file_path", str(brats_data.datalist)]
    command += [token for key, value in overrides.items() for token in (f"--{key}", str(value).replace(" ", ""))]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")

    result = subprocess.run(command, cwd=bundle.root, env=env, capture_output=True, text=True, timeout=600)

    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("TrainingDivergedError: training diverged at iteration "), last
    assert "Lower the learning rate" in last
    written = {p.name for p in (tmp_path / "models").iterdir()}
    assert not written & {"model_final.pt", "model.pt", "modality_weights.pt"}, written
