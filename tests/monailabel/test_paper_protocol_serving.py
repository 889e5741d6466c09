"""The repository's MONAI Label app serves, with its defaults, a bundle trained on a paper split (no validation
list): ``models/model.pt`` is then the final network's state dict."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.bundle.paper_run import train_paper_split
from tests.monailabel.servers import APP, CASE_SHAPE, infer_ok, metadata_labels, running_server, tail

pytestmark = pytest.mark.slow

#: A 4-iteration training of the CPU configuration at 32^3 (the light backbone's window).
SMALL_RUN = {
    "crop_size": [32, 32, 32], "sw_roi_size": [32, 32, 32], "batch_size": 1, "num_workers": 0,
    "num_iterations": 4, "epoch_length": 2, "warmup_iterations": 2, "meta_interval": 3, "meta_steps": 1,
}


def test_the_app_serves_a_paper_split_training_with_its_defaults(monailabel_python, studies, tmp_path):
    trained = train_paper_split(tmp_path / "trained", SMALL_RUN, (32, 32, 32))
    app = Path(shutil.copytree(APP, tmp_path / "app", ignore=shutil.ignore_patterns("logs", "__pycache__")))
    conf = {"bundle": str(trained.root), "bundle_configs": "inference.json,cpu_small.json"}

    with running_server(monailabel_python, app, studies, conf, tmp_path / "server.log") as server:
        model = trained.root.name
        assert model in server.info["models"], tail(server.log)
        body = infer_ok(server, model, "BRATS_001", "image")

    target = tmp_path / "label.nii.gz"
    target.write_bytes(body)
    label = nib.load(str(target))
    assert label.shape == CASE_SHAPE
    assert set(np.unique(np.asarray(label.dataobj)).astype(int).tolist()) <= {0, *metadata_labels().values()}
