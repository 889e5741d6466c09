"""The official BraTS evaluation package in its own virtual environment: created on first use, reused afterwards.

``brats-evaluation`` is AGPL-3.0 and pins numpy below 2.3, so it never goes into the project's environment. The
environment lives outside the repository (``$MCKD_BRATS_EVAL_VENV``, default ``~/.cache/mckd-brats-eval-venv``), holds
only the package and its dependencies (no torch), and is rebuilt when the pin below changes. The tests run this
project's Python with that environment's ``site-packages`` appended to ``sys.path``. They are skipped only when pip
cannot install the package, with pip's output as the reason.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import TextIO

import pytest

#: The official package, pinned (its version decides the numbers the tests compare with).
REQUIREMENTS: tuple[str, ...] = ("brats-evaluation==0.0.10",)
#: Longest time the pip step may take.
PIP_TIMEOUT_S = 900
#: Longest wait for another process that is installing into the same environment.
LOCK_TIMEOUT_S = PIP_TIMEOUT_S + 300


def brats_eval_venv() -> Path:
    """Folder of the package's virtual environment."""
    default = Path.home() / ".cache" / "mckd-brats-eval-venv"
    return Path(os.environ.get("MCKD_BRATS_EVAL_VENV", default)).expanduser()


def _site_packages(venv: Path) -> Path:
    """The environment's ``site-packages`` (same Python version as this interpreter)."""
    relative = Path(sysconfig.get_path("purelib")).relative_to(sysconfig.get_path("data"))
    return venv / relative


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
                raise TimeoutError(f"{path} stayed locked for {LOCK_TIMEOUT_S} s (another brats-evaluation install?).")
            time.sleep(5)


def _install(venv: Path) -> None:
    """Create the environment and pip-install the package; skip the calling test with pip's output on failure."""
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
    command = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", *REQUIREMENTS]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as err:
        output = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else err.stdout or ""
        pytest.skip(f"brats-evaluation could not be installed: `{' '.join(command)}` ran over {PIP_TIMEOUT_S} s:\n"
                    f"{output[-4000:]}")
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-4000:]
        pytest.skip(f"brats-evaluation could not be installed: `{' '.join(command)}` exited {done.returncode}:\n{output}")


@pytest.fixture(scope="session")
def brats_eval_site_packages() -> Path:
    """``site-packages`` of the environment holding the official package (built once per machine)."""
    venv = brats_eval_venv()
    stamp = venv / ".mckd-brats-eval-stamp"
    wanted = json.dumps({"requirements": REQUIREMENTS, "python": sys.version_info[:2]})
    venv.parent.mkdir(parents=True, exist_ok=True)
    handle = _lock(venv.parent / f"{venv.name}.lock")
    try:
        if not (stamp.exists() and stamp.read_text() == wanted):
            start = time.monotonic()
            _install(venv)
            stamp.write_text(wanted)
            print(f"built {venv} in {time.monotonic() - start:.0f} s")
        return _site_packages(venv)
    finally:
        handle.close()
