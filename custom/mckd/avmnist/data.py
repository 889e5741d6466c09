"""Read an AV-MNIST dataset folder written by ``python -m data_prep.avmnist`` into MONAI-style sample dictionaries."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .conventions import (
    ARRAY_KEYS,
    DATASET_INFO_FILE,
    FORMAT_VERSION,
    IMAGE_SHAPE,
    MODALITIES,
    NUM_CLASSES,
    NUM_MODALITIES,
    SPLIT_FILES,
)

__all__ = ["AVMNISTDataError", "read_dataset_info", "check_split", "load_split"]


class AVMNISTDataError(ValueError):
    """An AV-MNIST split file cannot be used; the message names the file and the first offending rows."""


def read_dataset_info(dataset_dir: str | Path) -> dict[str, Any]:
    """The ``dataset.json`` description of a dataset folder.

    Raises:
        FileNotFoundError: when the folder holds no (complete) build, with the command that makes one.
        ValueError: when the description is unreadable or of another format version.
    """
    path = Path(dataset_dir) / DATASET_INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"'{path}' not found: build the dataset first, e.g. 'python -m data_prep.avmnist offline --out {dataset_dir}'."
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"'{path}' is not valid JSON: {err}") from err
    if info.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"'{path}' has format version {info.get('format_version')}; expected {FORMAT_VERSION}.")
    return info


def _rows(mask: np.ndarray) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(map(str, rows[:5])) + (f" and {rows.size - 5} more" if rows.size > 5 else "")
    return f"row{'s' if rows.size > 1 else ''} {shown}"


def check_split(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Refuse a split whose samples the network cannot use, naming the file and the first rows, before training.

    Raises:
        AVMNISTDataError: when the arrays disagree in length, an image is not ``IMAGE_SHAPE``, a label is outside
            ``0..NUM_CLASSES-1``, ``available`` is not ``[N, NUM_MODALITIES]`` booleans, a sample has no modality, or
            an available modality holds NaN or infinite values.
    """
    count = arrays["label"].shape[0] if arrays["label"].ndim else -1
    lengths = {key: value.shape[0] if value.ndim else -1 for key, value in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise AVMNISTDataError(f"AV-MNIST split file '{path}': arrays of different lengths {lengths}.")
    if tuple(arrays["image"].shape[1:]) != IMAGE_SHAPE:
        raise AVMNISTDataError(
            f"AV-MNIST split file '{path}': images of shape {tuple(arrays['image'].shape[1:])}, expected {IMAGE_SHAPE}."
        )
    labels = arrays["label"]
    bad = ~np.isin(labels, np.arange(NUM_CLASSES))
    if bad.any():
        raise AVMNISTDataError(
            f"AV-MNIST split file '{path}': labels {sorted(set(labels[bad].tolist()))[:5]} outside "
            f"0..{NUM_CLASSES - 1} at {_rows(bad)}."
        )
    available = arrays["available"]
    if available.dtype != np.bool_ or tuple(available.shape) != (count, NUM_MODALITIES):
        raise AVMNISTDataError(
            f"AV-MNIST split file '{path}': 'available' is {available.dtype} {tuple(available.shape)}, expected bool "
            f"({count}, {NUM_MODALITIES})."
        )
    if not available.any(axis=1).all():
        raise AVMNISTDataError(
            f"AV-MNIST split file '{path}': no modality available at {_rows(~available.any(axis=1))}."
        )
    for index, key in enumerate(MODALITIES):
        values = arrays[key].reshape(count, -1)
        if values.dtype.kind == "f":
            broken = available[:, index] & ~np.isfinite(values).all(axis=1)
            if broken.any():
                raise AVMNISTDataError(
                    f"AV-MNIST split file '{path}': NaN or infinite {key} values at {_rows(broken)}."
                )


def load_split(dataset_dir: str | Path, split: str) -> list[dict[str, Any]]:
    """One dictionary per sample of ``split``: ``image`` float32 ``[1, 28, 28]`` (0..255), ``audio`` float32
    ``[1, F, T]``, ``label`` int, ``available`` bool ``[2]`` (see :mod:`mckd.avmnist.conventions`), ``speaker`` str and
    ``filename_or_obj`` (``"<split file>#<row>"``, the sample's identifier in prediction files).

    Args:
        dataset_dir: the dataset folder.
        split: ``"training"``, ``"meta_validation"`` or ``"test"``.

    Raises:
        ValueError: for an unknown split.
        AVMNISTDataError: for a split file that is corrupt, lacks arrays or holds unusable samples (see
            :func:`check_split`), naming the file.
        FileNotFoundError: when the dataset or the split file is missing.
    """
    if split not in SPLIT_FILES:
        raise ValueError(f"unknown AV-MNIST split '{split}'; expected one of {sorted(SPLIT_FILES)}.")
    info = read_dataset_info(dataset_dir)
    if split not in info["splits"]:
        raise FileNotFoundError(
            f"dataset '{dataset_dir}' has no '{split}' split (built with {sorted(info['splits'])})."
        )
    path = Path(dataset_dir) / info["splits"][split]["file"]
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in ARRAY_KEYS}
    except KeyError as err:
        raise AVMNISTDataError(f"AV-MNIST split file '{path}' lacks array {err}.") from err
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise AVMNISTDataError(f"cannot read AV-MNIST split file '{path}': {err}") from err
    check_split(arrays, path)
    return [
        {
            "image": arrays["image"][i].astype(np.float32),
            "audio": arrays["audio"][i],
            "label": int(arrays["label"][i]),
            "available": arrays["available"][i],
            "speaker": str(arrays["speaker"][i]),
            "filename_or_obj": f"{path.name}#{i}",
        }
        for i in range(arrays["label"].size)
    ]
