"""The real MONAI Label server serves the BraTS MCKD bundle and its model-zoo export through the repository's app.

One server for the module, on 127.0.0.1, serving two models: a copy of the repository bundle (``mckd`` code) and a
model-zoo export (vendored ``scripts.mckd`` code), both with untrained but saved weights of the CPU configuration
(as the model zoo's CI fakes weights) and the ``cpu_small.json`` overlay. The studies are synthetic MSD-style 4D cases
(48 x 48 x 32). About a minute with MONAI Label's environment in place (server start about 15 s, each /infer 2-7 s on
2 CPU cores); the first run also installs that environment (about 9 minutes, see ``conftest.py``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.monailabel.servers import (
    APP,
    BUNDLE,
    NO_T1_CASE,
    Server,
    assert_label_map_on_case_grid,
    bundle_copy,
    infer,
    infer_ok,
    metadata_labels,
    running_server,
    tail,
)

pytestmark = pytest.mark.slow

REPO_MODEL = BUNDLE.name


@pytest.fixture(scope="module")
def server(
    monailabel_python: Path, studies: Path, untrained_checkpoint: Path, zoo_export: Path, tmp_path_factory
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("monailabel_app")
    app = Path(shutil.copytree(APP, root / "bundle" / APP.name, ignore=shutil.ignore_patterns("logs", "__pycache__")))
    repo_bundle = bundle_copy(root / "bundle" / BUNDLE.name, untrained_checkpoint)
    conf = {"bundle": f"{repo_bundle},{zoo_export}", "bundle_configs": "inference.json,cpu_small.json"}
    with running_server(monailabel_python, app, studies, conf, root / "server.log") as running:
        yield running


@pytest.fixture(scope="module")
def zoo_model(zoo_export: Path) -> str:
    return zoo_export.name


def test_info_lists_the_bundle_and_the_export_with_the_names_of_the_label_map(server: Server, zoo_model: str) -> None:
    for model in (REPO_MODEL, zoo_model):
        info = server.info["models"][model]
        assert info["type"] == "segmentation" and info["dimension"] == 3
        assert info["labels"] == metadata_labels() == {
            "necrotic and non-enhancing tumour core": 1, "peritumoral oedema": 2, "enhancing tumour": 4,
        }  # fmt: skip
    assert server.info["datastore"]["total"] == 3
    log = server.log.read_text()
    assert "(code: mckd)" in log and "(code: scripts.mckd)" in log  # the export runs its own vendored copy


def test_infer_returns_a_label_map_on_the_case_grid_with_the_bundle_labels(server: Server, tmp_path: Path) -> None:
    body = infer_ok(server, REPO_MODEL, "BRATS_001", output="image")
    assert_label_map_on_case_grid(body, server, "BRATS_001", tmp_path / "seg.nii.gz", metadata_labels())


def test_an_all_zero_channel_is_served_as_a_missing_modality(server: Server) -> None:
    result = json.loads(infer_ok(server, REPO_MODEL, NO_T1_CASE, output="json"))
    assert result["modalities"] == ["flair", "t1ce", "t2"]
    assert result["label_names"] == metadata_labels()


def test_the_export_serves_the_modalities_parameter(server: Server, zoo_model: str, tmp_path: Path) -> None:
    result = json.loads(
        infer_ok(server, zoo_model, "BRATS_001", output="json", params={"modalities": ["FLAIR", "t1ce"]})
    )
    assert result["modalities"] == ["flair", "t1ce"]
    body = infer_ok(server, zoo_model, "BRATS_001", output="image", params={"modalities": "t2"})
    assert_label_map_on_case_grid(body, server, "BRATS_001", tmp_path / "seg.nii.gz", metadata_labels())


@pytest.mark.parametrize(
    "value, reason",
    [(["flair", "pd"], "unknown modalities ['pd']"), ([], "selects no modality"), (3, "must be a list of names")],
)
def test_a_bad_modalities_parameter_is_a_client_error_with_the_reason(server: Server, value, reason: str) -> None:
    reply = infer(server, REPO_MODEL, "BRATS_001", output="json", params={"modalities": value})
    assert reply.status == 422, f"{reply.status}: {reply.body[:300]!r}; log:\n{tail(server.log)}"
    assert reason in json.loads(reply.body)["detail"]
