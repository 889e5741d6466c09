"""Helpers of the real-server MONAI Label tests: studies, served bundle copies, a server on 127.0.0.1, requests."""

from __future__ import annotations

import contextlib
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser

from data_prep.synthetic_brats import write_dataset
from mckd.brats.conventions import MODALITIES
from mckd.bundle_export import merge_overlays

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "bundle" / "monailabel_app"
BUNDLE = REPO / "bundle" / "brats_mri_mckd_segmentation"
#: The configuration the fake weights belong to: the inference config with the CPU overlay (light backbone).
TRAINED_WITH = ("inference.json", "cpu_small.json")
CASE_SHAPE = (48, 48, 32)
#: Case whose T1 channel is written as zeros: a 4D case with a missing modality.
NO_T1_CASE = "BRATS_002_noT1"
SERVER_START_TIMEOUT_S = 300
REQUEST_TIMEOUT_S = 300
_IGNORED = shutil.ignore_patterns("models", "eval", "runs", "logs", "model", "__pycache__")


@dataclass(frozen=True)
class Server:
    """A running MONAI Label server and what it serves."""

    url: str
    studies: Path | str
    log: Path
    info: dict


@dataclass(frozen=True)
class Reply:
    """An HTTP reply: status and body."""

    status: int
    body: bytes


def write_studies(root: Path) -> Path:
    """Two synthetic MSD-layout 4D cases, plus a copy of the second with its T1 channel all zero."""
    written = write_dataset(root / "msd", 2, layout="msd", shape=CASE_SHAPE, seed=0)
    studies = root / "studies"
    shutil.copytree(root / "msd" / "imagesTr", studies)
    source = nib.load(str(written[1].images["t1"]))
    channels = np.asarray(source.dataobj).copy()
    channels[..., MODALITIES.index("t1")] = 0
    nib.save(nib.Nifti1Image(channels, source.affine, source.header), str(studies / f"{NO_T1_CASE}.nii.gz"))
    return studies


def untrained_weights(path: Path) -> Path:
    """``models/model.pt`` as training writes it (the network's state dict) of the CPU configuration, untrained."""
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / name) for name in TRAINED_WITH])
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return path


def bundle_copy(target: Path, weights: Path, inference_overlays: tuple[str, ...] = ()) -> Path:
    """A copy of the repository bundle with ``weights`` as ``models/model.pt``.

    ``inference_overlays`` are merged into the copy's ``inference.json`` (what a user of MONAI Label's stock app,
    which reads ``inference.json`` alone, does for a model trained with the CPU configuration).
    """
    shutil.copytree(BUNDLE, target, ignore=_IGNORED)
    if inference_overlays:
        inference = target / "configs" / "inference.json"
        overlays = [(BUNDLE / "configs" / name).read_text() for name in inference_overlays]
        inference.write_text(merge_overlays(inference.read_text(), overlays))
    (target / "models").mkdir()
    shutil.copyfile(weights, target / "models" / "model.pt")
    return target


def metadata_labels(bundle: Path = BUNDLE) -> dict[str, int]:
    """The label map's names and values as the bundle's metadata documents them (background left out)."""
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    channel_def = metadata["network_data_format"]["outputs"]["pred"]["channel_def"]
    return {name.lower(): int(value) for value, name in channel_def.items() if name.lower() != "background"}


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, chars: int = 6000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "<no log>"


def stop_process(process: subprocess.Popen) -> None:
    """Stop the server's process group (uvicorn and anything it started): SIGTERM, then SIGKILL after 30 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def _wait_for_info(process: subprocess.Popen, url: str, log: Path) -> dict:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise AssertionError(f"MONAI Label exited with {process.returncode} before serving; log:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"MONAI Label did not answer /info/ in {SERVER_START_TIMEOUT_S} s; log:\n{tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/info/", timeout=10) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1)


@contextlib.contextmanager
def running_server(
    python: Path,
    app: Path,
    studies: Path | str,
    conf: Mapping[str, str],
    log: Path,
    env: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    """MONAI Label on a free port of 127.0.0.1 serving ``app`` with ``--conf`` options; stopped on exit.

    ``studies`` is a folder or a DICOMweb address; ``env`` adds environment variables (MONAI Label's settings).
    """
    port = free_port()
    env = dict(os.environ, **(env or {}), PYTHONPATH=os.pathsep.join([str(REPO / "custom"), str(REPO)]))
    command = [str(python), "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    for key, value in conf.items():
        command += ["--conf", key, value]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        yield Server(url=url, studies=studies, log=log, info=_wait_for_info(process, url, log))
    finally:
        stop_process(process)


def infer(server: Server, model: str, image: str, output: str, params: dict | None = None) -> Reply:
    """POST ``/infer/<model>?image=<image>&output=<output>`` (``params`` as MONAI Label's form field)."""
    query = urllib.parse.urlencode({"image": image, "output": output})
    body = urllib.parse.urlencode({"params": json.dumps(params or {})}).encode()
    request = urllib.request.Request(f"{server.url}/infer/{model}?{query}", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            return Reply(response.status, response.read())
    except urllib.error.HTTPError as err:
        return Reply(err.code, err.read())


def infer_ok(server: Server, model: str, image: str, output: str, params: dict | None = None) -> bytes:
    """The body of a successful ``/infer``; fails the test with the server log otherwise."""
    reply = infer(server, model, image, output, params)
    assert reply.status == 200, f"/infer failed with {reply.status}: {reply.body[:500]!r}; log:\n{tail(server.log)}"
    return reply.body


def assert_label_map_on_case_grid(body: bytes, server: Server, case: str, target: Path, labels: dict[str, int]) -> None:
    """``body`` is a NIfTI label map on the grid of the datastore case ``case`` with only the bundle's label values."""
    target.write_bytes(body)
    label = nib.load(str(target))
    image = nib.load(str(server.studies / f"{case}.nii.gz"))
    assert label.shape == CASE_SHAPE == image.shape[:3]
    np.testing.assert_allclose(label.affine, image.affine, atol=1e-4)
    values = set(np.unique(np.asarray(label.dataobj)).astype(int).tolist())
    assert values <= {0, *labels.values()}


def log_text_when(server: Server, *texts: str, timeout_s: float = 30) -> str:
    """The server log once it holds every one of ``texts`` (a traceback is logged after the reply is sent)."""
    deadline = time.monotonic() + timeout_s
    log = server.log.read_text(errors="replace")
    while not all(text in log for text in texts) and time.monotonic() < deadline:
        time.sleep(0.5)
        log = server.log.read_text(errors="replace")
    return log
