"""Spoken digits synthesised offline with ``espeak-ng`` and resampled to 8 kHz with ``sox`` (Debian packages).

Each utterance is fully described by ``(digit, voice, speed, pitch)``; its wav is cached under that name, so a rebuild
with the same seed reuses every file and a different seed only synthesises what it lacks.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mckd.avmnist.conventions import DIGIT_WORDS
from mckd.fileio import atomic_path

from ._avmnist_features import SAMPLE_RATE

__all__ = ["Utterance", "DEFAULT_VOICES", "require_speech_tools", "synthesise"]

logger = logging.getLogger(__name__)

#: espeak-ng voices (language + variant) used as the offline build's "speakers".
DEFAULT_VOICES: tuple[str, ...] = (
    "en-us+m3",
    "en-gb+f2",
    "en-gb-scotland+m1",
    "en-029+f4",
    "en-us+m7",
    "en-gb-x-rp+f1",
)
_INSTALL_HINT = "install them with 'apt-get install -y espeak-ng sox' (Debian/Ubuntu) or your system's package manager"


@dataclass(frozen=True)
class Utterance:
    """One synthesised spoken digit.

    Attributes:
        digit: the digit 0..9.
        voice: espeak-ng voice, e.g. ``"en-us+m3"``.
        speed: words per minute (espeak-ng ``-s``).
        pitch: 0..99 (espeak-ng ``-p``).
    """

    digit: int
    voice: str
    speed: int
    pitch: int

    @property
    def file_name(self) -> str:
        """Cache file name, FSDD-like: ``{digit}_{voice}_s{speed}_p{pitch}.wav`` (``+`` spelled ``-``)."""
        return f"{self.digit}_{self.voice.replace('+', '-')}_s{self.speed}_p{self.pitch}.wav"


def require_speech_tools() -> tuple[str, str]:
    """Paths of ``espeak-ng`` and ``sox``.

    Raises:
        RuntimeError: naming the missing program(s) and how to install them.
    """
    found = {name: shutil.which(name) for name in ("espeak-ng", "sox")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise RuntimeError(f"the offline AV-MNIST build needs {' and '.join(missing)} on PATH; {_INSTALL_HINT}.")
    return found["espeak-ng"], found["sox"]


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {result.returncode}): {' '.join(command)}\n{result.stderr.strip()}")


def synthesise(utterance: Utterance, cache_dir: Path) -> Path:
    """The cached 8 kHz mono 16-bit wav of ``utterance``, synthesising it on first use (sox without dither, so
    the same utterance always gives the same bytes).

    Raises:
        RuntimeError: when espeak-ng or sox are missing or fail (e.g. an unknown voice), with their message.
    """
    target = cache_dir / utterance.file_name
    if target.is_file():
        return target
    espeak, sox = require_speech_tools()
    with tempfile.TemporaryDirectory() as scratch, atomic_path(target) as tmp:
        raw = Path(scratch) / "espeak.wav"
        _run(
            [espeak, "-v", utterance.voice, "-s", str(utterance.speed), "-p", str(utterance.pitch), "-w", str(raw)]
            + [DIGIT_WORDS[utterance.digit]],
            f"espeak-ng synthesis of '{utterance.file_name}'",
        )
        _run([sox, "-D", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(tmp)], "sox resampling")
    logger.debug("synthesised %s", target)
    return target
