"""Read an AV-MNIST dataset folder written by ``python -m data_prep.avmnist`` into MONAI-style sample dictionaries."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .conventions import ARRAY_KEYS, DATASET_INFO_FILE, FORMAT_VERSION, SPLIT_FILES

__all__ = ["read_dataset_info", "load_split"]


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


def load_split(dataset_dir: str | Path, split: str) -> list[dict[str, Any]]:
    """One dictionary per sample of ``split``: ``image`` float32 ``[1, 28, 28]`` (0..255), ``audio`` float32
    ``[1, F, T]``, ``label`` int, ``available`` bool ``[2]`` (see :mod:`mckd.avmnist.conventions`), ``speaker`` str and
    ``filename_or_obj`` (``"<split file>#<row>"``, the sample's identifier in prediction files).

    Args:
        dataset_dir: the dataset folder.
        split: ``"training"``, ``"meta_validation"`` or ``"test"``.

    Raises:
        ValueError: for an unknown split, or a split file that is corrupt or lacks arrays (naming the file).
        FileNotFoundError: when the dataset or the split file is missing.
    """
    if split not in SPLIT_FILES:
        raise ValueError(f"unknown AV-MNIST split '{split}'; expected one of {sorted(SPLIT_FILES)}.")
    info = read_dataset_info(dataset_dir)
    if split not in info["splits"]:
        raise FileNotFoundError(f"dataset '{dataset_dir}' has no '{split}' split (built with {sorted(info['splits'])}).")
    path = Path(dataset_dir) / info["splits"][split]["file"]
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in ARRAY_KEYS}
    except KeyError as err:
        raise ValueError(f"AV-MNIST split file '{path}' lacks array {err}.") from err
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"cannot read AV-MNIST split file '{path}': {err}") from err
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
