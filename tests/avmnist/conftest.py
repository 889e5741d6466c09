"""Small fake AV-MNIST sources (MNIST IDX bytes written with numpy, FSDD wavs written with scipy) and a tiny offline build."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.io import wavfile

SPEAKERS = ("jackson", "theo")
RECORDINGS = 4
TEST_INDEX_BELOW = 1
SAMPLE_RATE = 8000


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """Write ``array`` (uint8) as an IDX file: magic 0x0000080{ndim}, big-endian dims, raw bytes."""
    payload = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def fake_digit_images(per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Images whose first pixel row encodes (digit, serial), labels interleaved class by class like MNIST."""
    labels = np.tile(np.arange(10), per_class)
    images = rng.integers(0, 50, (labels.size, 28, 28)).astype(np.uint8)
    images[:, 0, 0] = labels
    images[:, 0, 1] = np.arange(labels.size) % 256
    return images, labels


def write_fake_mnist(folder: Path, train_per_class: int = 8, test_per_class: int = 5) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for stem, per_class, compress in (("train", train_per_class, True), ("t10k", test_per_class, False)):
        images, labels = fake_digit_images(per_class, rng)
        suffix = ".gz" if compress else ""
        write_idx(folder / f"{stem}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(folder / f"{stem}-labels-idx1-ubyte{suffix}", labels, compress)
    return folder


def write_fake_fsdd(folder: Path) -> Path:
    """``recordings/{digit}_{speaker}_{index}.wav``: 0.3 s tones whose pitch depends on the digit, 16-bit PCM."""
    recordings = folder / "recordings"
    recordings.mkdir(parents=True, exist_ok=True)
    time = np.arange(int(0.3 * SAMPLE_RATE)) / SAMPLE_RATE
    for digit in range(10):
        for s, speaker in enumerate(SPEAKERS):
            for index in range(RECORDINGS):
                tone = 0.5 * np.sin(2 * np.pi * (200 + 80 * digit + 10 * s + index) * time)
                wavfile.write(recordings / f"{digit}_{speaker}_{index}.wav", SAMPLE_RATE, (tone * 32767).astype(np.int16))
    return folder


@pytest.fixture
def fake_sources(tmp_path: Path) -> tuple[Path, Path]:
    """``(mnist_dir, fsdd_dir)`` with 8 train / 5 test images per class and 2 speakers x 4 recordings per digit."""
    return write_fake_mnist(tmp_path / "mnist"), write_fake_fsdd(tmp_path / "fsdd")


@pytest.fixture
def fakes() -> SimpleNamespace:
    """The fake-source helpers and their sizes, for tests that need them directly."""
    return SimpleNamespace(
        speakers=SPEAKERS,
        recordings=RECORDINGS,
        test_index_below=TEST_INDEX_BELOW,
        write_idx=write_idx,
        fake_digit_images=fake_digit_images,
    )


@pytest.fixture
def speech_tools() -> None:
    """Skip when espeak-ng or sox is missing (``.ci/run`` installs both; locally: apt-get install -y espeak-ng sox)."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed for the offline build (apt-get install -y espeak-ng sox)")
