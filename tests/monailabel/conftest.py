"""MONAI Label's own virtual environment for the server tests: created on first use, reused afterwards.

MONAI Label never goes into the project's environment: it needs torchvision, and PyPI's torchvision wheels only load
with PyPI's own torch build, not with the CPU wheel the project installs (see ``docs/monailabel.md``). The environment
lives outside the repository (``$MCKD_MONAILABEL_VENV``, default ``~/.cache/mckd-monailabel-venv``) and is rebuilt
when the pins below or the project's ``pyproject.toml`` change. Tests are skipped only when pip itself fails.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

import pytest

REPO = Path(__file__).resolve().parents[2]

#: Installed first, from PyPI itself (``--isolated`` ignores this machine's local CPU-wheel folder).
TORCH_REQUIREMENTS: tuple[str, ...] = ("torch==2.13.0", "torchvision==0.28.0")
#: Installed second, with the torch pins repeated so pip never swaps torch. pydicom 3 breaks pydicom-seg, which
#: MONAI Label 0.8.5 imports at start-up (``No module named 'pydicom._storage_sopclass_uids'``).
#: highdicom writes the DICOM SEG the app stores in the PACS (0.22 is the last release for pydicom 2); selenium drives
#: the system Chromium (``/usr/bin/chromedriver``) that opens OHIF in the PACS test.
MONAILABEL_REQUIREMENTS: tuple[str, ...] = (
    *TORCH_REQUIREMENTS,
    "monai==1.6.1",
    "monailabel==0.8.5",
    "pydicom==2.4.4",
    "highdicom==0.22.0",
    "selenium==4.40.0",
)
#: Longest time one pip step may take (a first install downloads about 5 GB and builds sam2 from source).
PIP_TIMEOUT_S = 1800
#: Longest wait for another process that is installing into the same environment.
LOCK_TIMEOUT_S = 2 * PIP_TIMEOUT_S + 300


def monailabel_venv() -> Path:
    """Folder of MONAI Label's virtual environment."""
    return Path(os.environ.get("MCKD_MONAILABEL_VENV", Path.home() / ".cache" / "mckd-monailabel-venv")).expanduser()


def _wanted_stamp() -> str:
    """What the environment must have been built from: the pins, the project's dependency file and the checkout
    that ``mckd`` is installed editable from (another checkout may since have moved or been deleted)."""
    digest = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    return json.dumps(
        {"requirements": MONAILABEL_REQUIREMENTS, "pyproject_sha256": digest, "checkout": str(REPO)}, sort_keys=True
    )


def _pip(python: Path, *args: str) -> None:
    """Run one pip install step; skip the calling test with pip's output when pip fails or runs out of time."""
    command = [str(python), "-m", "pip", "install", "--isolated", "--disable-pip-version-check", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as err:
        output = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else err.stdout or ""
        tail = output[-4000:]
        pytest.skip(f"MONAI Label could not be installed: `{' '.join(command)}` ran over {PIP_TIMEOUT_S} s:\n{tail}")
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-4000:]
        pytest.skip(f"MONAI Label could not be installed: `{' '.join(command)}` exited {done.returncode}:\n{output}")


def _lock(path: Path) -> TextIO:
    """An exclusive lock on ``path`` (another test run may be installing into the same environment)."""
    handle = path.open("a")
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                raise TimeoutError(f"{path} stayed locked for {LOCK_TIMEOUT_S} s (another MONAI Label install?).")
            time.sleep(5)


@pytest.fixture(scope="session")
def monailabel_python() -> Path:
    """The Python of MONAI Label's environment, with ``mckd`` installed editable from this checkout."""
    venv = monailabel_venv()
    python = venv / "bin" / "python"
    stamp = venv / ".mckd-monailabel-stamp"
    venv.parent.mkdir(parents=True, exist_ok=True)
    handle = _lock(venv.parent / f"{venv.name}.lock")
    try:
        wanted = _wanted_stamp()
        if python.exists() and stamp.exists() and stamp.read_text() == wanted:
            return python
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        stamp.unlink(missing_ok=True)
        _pip(python, *TORCH_REQUIREMENTS)
        _pip(python, *MONAILABEL_REQUIREMENTS, "-e", str(REPO))
        stamp.write_text(wanted)
        return python
    finally:
        handle.close()


@pytest.fixture(scope="session")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The datastore of both servers: synthetic MSD-style 4D cases, one with an all-zero T1 channel."""
    from tests.monailabel.servers import write_studies

    return write_studies(tmp_path_factory.mktemp("monailabel_studies"))


@pytest.fixture(scope="session")
def untrained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Saved, untrained weights of the CPU configuration's network (as the model zoo's CI fakes weights)."""
    from tests.monailabel.servers import untrained_weights

    return untrained_weights(tmp_path_factory.mktemp("monailabel_weights") / "model.pt")


@pytest.fixture(scope="session")
def zoo_export(untrained_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model-zoo export of the bundle for the CPU configuration, shipping the untrained weights."""
    from mckd.bundle_export import export_bundle
    from tests.monailabel.servers import BUNDLE

    out = tmp_path_factory.mktemp("monailabel_zoo") / f"{BUNDLE.name}_zoo"
    url = "https://example.org/brats_mri_mckd_segmentation/model.pt"
    export_bundle(BUNDLE, out, overlays=["cpu_small.json"], weights=untrained_checkpoint, weights_url=url)
    return out
