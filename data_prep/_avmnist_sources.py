"""Readers for the downloaded AV-MNIST sources: MNIST IDX files and Free Spoken Digit Dataset wav recordings.

Every error names the offending file, so a user can fix a broken download without reading code.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
from scipy.io import wavfile

__all__ = [
    "IDX_IMAGE_MAGIC",
    "IDX_LABEL_MAGIC",
    "read_idx",
    "find_idx_file",
    "read_mnist_split",
    "read_wav",
    "fsdd_path",
]

#: IDX magic numbers: 0x08 = unsigned byte, then the number of dimensions.
IDX_IMAGE_MAGIC = 0x00000803
IDX_LABEL_MAGIC = 0x00000801
#: File stems of the four MNIST IDX files, by split.
MNIST_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path, expected_magic: int) -> np.ndarray:
    """Read one (optionally gzip-compressed) IDX file of unsigned bytes.

    Args:
        path: the ``.idx*-ubyte`` or ``.idx*-ubyte.gz`` file.
        expected_magic: :data:`IDX_IMAGE_MAGIC` (3-d images) or :data:`IDX_LABEL_MAGIC` (1-d labels).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the header is not the expected one or the payload is truncated, naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MNIST IDX file '{path}' does not exist.")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot read MNIST IDX file '{path}': {err}") from err
    ndim = expected_magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"MNIST IDX file '{path}' is truncated: {len(raw)} bytes, shorter than its header.")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != expected_magic:
        raise ValueError(
            f"MNIST IDX file '{path}' has magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"({'images' if ndim == 3 else 'labels'}); is it the right file?"
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(shape))
    if len(raw) - header != count:
        raise ValueError(
            f"MNIST IDX file '{path}' is corrupt: header announces shape {shape} ({count} bytes) but "
            f"{len(raw) - header} bytes follow."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def find_idx_file(folder: str | Path, stem: str) -> Path:
    """The path of ``stem`` in ``folder``, plain or ``.gz`` (also accepting the ``stem.idx`` spelling of some mirrors).

    Raises:
        FileNotFoundError: naming every spelling that was tried.
    """
    folder = Path(folder)
    candidates = [folder / f"{stem}{ext}" for ext in ("", ".gz")]
    candidates += [folder / f"{stem.replace('-idx', '.idx')}{ext}" for ext in ("", ".gz")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"MNIST file '{stem}' not found in '{folder}' (tried {', '.join(c.name for c in candidates)})."
    )


def read_mnist_split(folder: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [N, 28, 28]`` and labels ``int64 [N]`` of the MNIST ``split`` (``"train"`` or ``"test"``).

    Raises:
        FileNotFoundError: when a file is missing.
        ValueError: when a file is corrupt or images and labels disagree in number, naming the files.
    """
    image_stem, label_stem = MNIST_STEMS[split]
    image_file, label_file = find_idx_file(folder, image_stem), find_idx_file(folder, label_stem)
    images = read_idx(image_file, IDX_IMAGE_MAGIC)
    labels = read_idx(label_file, IDX_LABEL_MAGIC).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"'{image_file}' holds {images.shape[0]} images but '{label_file}' {labels.shape[0]} labels.")
    if labels.size and labels.max() > 9:
        raise ValueError(f"MNIST label file '{label_file}' holds label {labels.max()}; digits are 0..9.")
    return images, labels


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A mono wav file as float32 samples in [-1, 1] and its sample rate.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the file is not a readable, non-empty wav, naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"wav recording '{path}' does not exist.")
    try:
        rate, data = wavfile.read(path)
    except Exception as err:  # scipy's parser raises assorted types (ValueError, EOFError, UnboundLocalError) on junk
        raise ValueError(f"cannot read wav recording '{path}': {err!r}") from err
    if data.size == 0:
        raise ValueError(f"wav recording '{path}' holds no samples.")
    if data.ndim == 2:
        data = data.mean(axis=1)
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        midpoint = (int(info.max) + int(info.min) + 1) / 2  # 0 for signed PCM, 128 for 8-bit unsigned PCM
        data = (data.astype(np.float64) - midpoint) / (int(info.max) + 1 - midpoint)
    return data.astype(np.float32), int(rate)


def fsdd_path(recordings: str | Path, digit: int, speaker: str, index: int) -> Path:
    """Path of one Free Spoken Digit Dataset recording: ``recordings/{digit}_{speaker}_{index}.wav``."""
    return Path(recordings) / f"{digit}_{speaker}_{index}.wav"

