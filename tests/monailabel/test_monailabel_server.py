"""The real MONAI Label server serves the BraTS MCKD bundle through the repository's app, over REST on 127.0.0.1.

One server for the module: a studies folder of synthetic MSD-style 4D cases (48 x 48 x 32), a copy of the bundle with
untrained but saved weights (the CPU configuration's network, as the model zoo's CI fakes weights) and a copy of the
app. About 40 s with MONAI Label's environment in place (server start about 15 s, each /infer 2-7 s on 2 CPU cores);
the first run also installs that environment (about 9 minutes, see ``conftest.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from data_prep.synthetic_brats import write_dataset
from mckd.brats.conventions import MODALITIES

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "bundle" / "monailabel_app"
BUNDLE = REPO / "bundle" / "brats_mri_mckd_segmentation"
#: The served configuration: the inference config with the CPU overlay (light backbone) the fake weights match.
BUNDLE_CONFIGS = ("inference.json", "cpu_small.json")
MODEL = BUNDLE.name
CASE_SHAPE = (48, 48, 32)
#: Case whose T1 channel is written as zeros: a 4D case with a missing modality.
NO_T1_CASE = "BRATS_002_noT1"
SERVER_START_TIMEOUT_S = 300
REQUEST_TIMEOUT_S = 300


@dataclass(frozen=True)
class Server:
    """A running MONAI Label server and what it serves."""

    url: str
    studies: Path
    log: Path
    info: dict


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def _infer(server: Server, image: str, output: str, params: dict | None = None) -> bytes:
    """POST ``/infer/<model>?image=<image>&output=<output>`` (``params`` as MONAI Label's form field); the body."""
    query = urllib.parse.urlencode({"image": image, "output": output})
    body = urllib.parse.urlencode({"params": json.dumps(params or {})}).encode()
    request = urllib.request.Request(f"{server.url}/infer/{MODEL}?{query}", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            return response.read()
    except urllib.error.HTTPError as err:
        raise AssertionError(f"/infer failed with {err.code}; server log:\n{_tail(server.log)}") from err


def _tail(path: Path, chars: int = 6000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "<no log>"


def _copy_app_and_bundle(root: Path) -> tuple[Path, Path]:
    """Copies of the app and the bundle side by side, as in the repository, so the test writes into neither."""
    ignore = shutil.ignore_patterns("models", "eval", "runs", "logs", "model", "__pycache__")
    app = shutil.copytree(APP, root / "bundle" / APP.name, ignore=ignore)
    bundle = shutil.copytree(BUNDLE, root / "bundle" / BUNDLE.name, ignore=ignore)
    return Path(app), Path(bundle)


def _save_untrained_weights(bundle: Path) -> None:
    """``models/model.pt``: the state dict of the served configuration's network, freshly initialised."""
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / name) for name in BUNDLE_CONFIGS])
    network = parser.get_parsed_content("network_def")
    (bundle / "models").mkdir()
    torch.save(network.state_dict(), bundle / "models" / "model.pt")


def _write_studies(root: Path) -> Path:
    """Two synthetic MSD-layout 4D cases, plus a copy of the second with its T1 channel all zero."""
    written = write_dataset(root / "msd", 2, layout="msd", shape=CASE_SHAPE, seed=0)
    studies = root / "studies"
    shutil.copytree(root / "msd" / "imagesTr", studies)
    source = nib.load(str(written[1].images["t1"]))
    channels = np.asarray(source.dataobj).copy()
    channels[..., MODALITIES.index("t1")] = 0
    nib.save(nib.Nifti1Image(channels, source.affine, source.header), str(studies / f"{NO_T1_CASE}.nii.gz"))
    return studies


def _stop(process: subprocess.Popen) -> None:
    """Stop the server's process group (uvicorn and anything it started): SIGTERM, then SIGKILL after 30 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(monailabel_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """MONAI Label on a free port of 127.0.0.1 serving the bundle copy; stopped when the module's tests are done."""
    root = tmp_path_factory.mktemp("monailabel")
    app, bundle = _copy_app_and_bundle(root)
    _save_untrained_weights(bundle)
    studies = _write_studies(root)
    port = _free_port()
    log = root / "server.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "custom"), str(REPO)]))
    command = [
        str(monailabel_python), "-m", "monailabel.main", "start_server",
        "--app", str(app), "--studies", str(studies), "--host", "127.0.0.1", "--port", str(port),
        "--conf", "bundle_configs", ",".join(BUNDLE_CONFIGS),
    ]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        info = None
        while info is None:
            if process.poll() is not None:
                pytest.fail(f"MONAI Label exited with {process.returncode} before serving; log:\n{_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"MONAI Label did not answer /info/ within {SERVER_START_TIMEOUT_S} s; log:\n{_tail(log)}")
            try:
                info = _get_json(f"{url}/info/")
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        yield Server(url=url, studies=studies, log=log, info=info)
    finally:
        _stop(process)


def _metadata_labels() -> dict[str, int]:
    """The label map's names and values as the bundle's metadata documents them (background left out)."""
    metadata = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    output = next(iter(metadata["network_data_format"]["post_processed_outputs"].values()))
    return {name.lower(): int(value) for value, name in output["channel_def"].items() if name.lower() != "background"}


def test_info_lists_the_bundle_with_the_names_of_its_label_map(server: Server) -> None:
    model = server.info["models"][MODEL]
    assert model["type"] == "segmentation"
    assert model["dimension"] == 3
    assert model["labels"] == _metadata_labels()
    assert server.info["datastore"]["total"] == 3


def test_infer_returns_a_label_map_on_the_case_grid_with_the_bundle_labels(server: Server, tmp_path: Path) -> None:
    result = tmp_path / "BRATS_001_seg.nii.gz"
    result.write_bytes(_infer(server, "BRATS_001", output="image"))
    label = nib.load(str(result))
    case = nib.load(str(server.studies / "BRATS_001.nii.gz"))
    assert label.shape == CASE_SHAPE == case.shape[:3]
    np.testing.assert_allclose(label.affine, case.affine, atol=1e-4)
    values = set(np.unique(np.asarray(label.dataobj)).astype(int).tolist())
    assert values <= {0, *_metadata_labels().values()}


def test_an_all_zero_channel_is_served_as_a_missing_modality(server: Server) -> None:
    result = json.loads(_infer(server, NO_T1_CASE, output="json"))
    assert result["modalities"] == ["flair", "t1ce", "t2"]
    assert result["label_names"] == _metadata_labels()


def test_the_modalities_parameter_selects_the_subset_the_network_sees(server: Server) -> None:
    result = json.loads(_infer(server, "BRATS_001", output="json", params={"modalities": ["FLAIR", "t1ce"]}))
    assert result["modalities"] == ["flair", "t1ce"]
