"""The commands the demo prints at its end work as printed, typed in the folder the demo ran from: inference on a
case folder, TensorBoard on the run, and the repository's MONAI Label app serving the trained copy of the bundle."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from data_prep.demo import MONAILABEL_VENV
from tests.monailabel.conftest import monailabel_venv
from tests.monailabel.servers import BUNDLE, free_port, stop_process, tail

pytestmark = pytest.mark.slow

#: How long a started service gets to answer its first request.
START_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> SimpleNamespace:
    """A toy-size demo run from its own folder, and the 'Next steps' commands it printed."""
    folder = tmp_path_factory.mktemp("demo_next_steps")
    printed = subprocess.run(
        [sys.executable, "-m", "data_prep.demo", "--out", "demo", "--cases", "8",
         "--shape", "32", "32", "32", "--iterations", "20", "--bundle", str(BUNDLE)],
        cwd=folder, capture_output=True, text=True, timeout=600, check=False,
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore"),
    )
    assert printed.returncode == 0, printed.stdout[-3000:] + printed.stderr[-3000:]
    steps = printed.stdout.split("Next steps")[1]
    commands = [line.strip() for line in steps.splitlines() if line.startswith("    ")]
    assert len(commands) == 3, steps
    return SimpleNamespace(folder=folder, infer=commands[0], tensorboard=commands[1], monailabel=commands[2])


@contextlib.contextmanager
def _service(command: str, cwd: Path, log: Path) -> Iterator[subprocess.Popen]:
    """``command`` started by bash in ``cwd`` (its own process group, output to ``log``); stopped on exit."""
    with log.open("w") as out:
        process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"], cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        stop_process(process)


def _get_json(url: str, process: subprocess.Popen, log: Path) -> object:
    """The JSON answer of ``url`` once the service answers (polled for at most :data:`START_TIMEOUT_S`)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the service exited with {process.returncode}; log:\n{tail(log)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1)
    raise AssertionError(f"{url} did not answer in {START_TIMEOUT_S} s; log:\n{tail(log)}")


def test_the_inference_command_segments_the_case_folder(demo):
    done = subprocess.run(["bash", "-c", demo.infer], cwd=demo.folder, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((demo.folder / "demo" / "predictions" / "inference_summary.json").read_text())
    assert len(summary["written"]) == 1 and not summary["skipped"]


def test_the_tensorboard_command_serves_the_run(demo, tmp_path):
    port = free_port()
    command = demo.tensorboard.replace("--port 6006", f"--port {port}")
    with _service(command, demo.folder, tmp_path / "tensorboard.log") as process:
        runs = _get_json(f"http://127.0.0.1:{port}/data/runs", process, tmp_path / "tensorboard.log")
        tags = _get_json(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", process, tmp_path / "tensorboard.log")
    assert runs
    scalars = {tag for run in tags.values() for tag in run}
    assert "train_loss" in scalars and any(tag.startswith("importance") for tag in scalars), sorted(scalars)


def test_the_monailabel_command_serves_the_trained_bundle(demo, monailabel_python, tmp_path):
    port = free_port()
    command = demo.monailabel.replace("--port 8000", f"--port {port}")
    command = command.replace(MONAILABEL_VENV, str(monailabel_venv()))
    log = tmp_path / "monailabel.log"
    with _service(command, demo.folder, log) as process:
        info = _get_json(f"http://127.0.0.1:{port}/info/", process, log)
        (study,) = [p.name.split(".")[0] for p in (demo.folder / "demo" / "studies").glob("*.nii.gz")]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/infer/bundle_run?image={study}&output=image", data=b"", method="POST"
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            assert response.status == 200 and len(response.read()) > 0
    assert "bundle_run" in info["models"], info["models"].keys()
