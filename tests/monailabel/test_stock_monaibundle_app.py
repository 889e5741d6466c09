"""MONAI Label's released ``monaibundle`` sample app serves the bundle and its model-zoo export as they are.

One server for the module, on 127.0.0.1: the sample app shipped with MONAI Label 0.8.5 (copied from its environment,
unchanged), its ``model/`` folder holding three bundles with untrained but saved weights of the CPU configuration:

- the repository bundle, whose ``inference.json`` has the CPU overlay merged in (the stock app reads
  ``inference.json`` alone; a user serving a light model edits it the same way);
- the model-zoo export made for that configuration (``--overlay cpu_small.json --weights ...``);
- the repository bundle as it is (``resnet50_aspp``) with those light weights: a mismatch that must fail.

Started offline as documented (``zoo_source github``: no model-zoo listing call; no SAM2, no trainers).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.monailabel.servers import (
    BUNDLE,
    TRAINED_WITH,
    Server,
    assert_label_map_on_case_grid,
    bundle_copy,
    infer,
    infer_ok,
    log_text_when,
    metadata_labels,
    running_server,
)

pytestmark = pytest.mark.slow

REPO_MODEL = BUNDLE.name
MISMATCHED_MODEL = "brats_mri_mckd_segmentation_mismatched_weights"


@pytest.fixture(scope="module")
def server(
    monailabel_python: Path, studies: Path, untrained_checkpoint: Path, zoo_export: Path, tmp_path_factory
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("monaibundle_app")
    # the sample apps ship inside MONAI Label's environment: <venv>/monailabel/sample-apps
    stock = monailabel_python.parent.parent / "monailabel" / "sample-apps" / "monaibundle"
    app = Path(shutil.copytree(stock, root / "monaibundle", ignore=shutil.ignore_patterns("__pycache__")))
    models = app / "model"
    bundle_copy(models / REPO_MODEL, untrained_checkpoint, inference_overlays=TRAINED_WITH[1:])
    shutil.copytree(zoo_export, models / zoo_export.name)
    bundle_copy(models / MISMATCHED_MODEL, untrained_checkpoint)
    conf = {
        "models": ",".join([REPO_MODEL, zoo_export.name, MISMATCHED_MODEL]),
        "zoo_source": "github",
        "sam2": "false",
        "skip_trainers": "true",
    }
    with running_server(monailabel_python, app, studies, conf, root / "server.log") as running:
        yield running


def test_info_names_the_label_map_values_for_the_bundle_and_the_export(server: Server, zoo_export: Path) -> None:
    for model in (REPO_MODEL, zoo_export.name):
        info = server.info["models"][model]
        assert info["type"] == "segmentation" and info["dimension"] == 3
        assert info["labels"] == metadata_labels() == metadata_labels(zoo_export)
    assert set(metadata_labels().values()) == {1, 2, 4}


@pytest.mark.parametrize("which", ["repository bundle", "zoo export"])
def test_infer_returns_the_label_map_of_the_bundle(server: Server, zoo_export: Path, which: str, tmp_path) -> None:
    model = REPO_MODEL if which == "repository bundle" else zoo_export.name
    body = infer_ok(server, model, "BRATS_001", output="image")
    assert_label_map_on_case_grid(body, server, "BRATS_001", tmp_path / "seg.nii.gz", metadata_labels())
    result = json.loads(infer_ok(server, model, "BRATS_001", output="json"))
    assert result["label_names"] == metadata_labels()


def test_weights_of_another_configuration_are_an_error_not_random_weights(server: Server) -> None:
    reply = infer(server, MISMATCHED_MODEL, "BRATS_001", output="json")
    assert reply.status >= 500, f"served with mismatched weights: {reply.status}"
    expected = ("Error(s) in loading state_dict for StrictLoadingSegNet", "Missing key(s)")
    log = log_text_when(server, *expected)
    assert all(text in log for text in expected), log[-3000:]
