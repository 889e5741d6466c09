"""The missing-modality protocol of AV-MNIST (SMIL): meta-validation hold-out, per-class availability rates, output.

Selections are made per class and balanced over speakers: within a class the samples are shuffled per speaker and
then interleaved speaker by speaker, and every selection takes a prefix (or suffix) of that order.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np

from mckd.avmnist.conventions import (
    ARRAY_KEYS,
    AUDIO_INDEX,
    DATASET_INFO_FILE,
    FORMAT_VERSION,
    IMAGE_INDEX,
    MODALITIES,
    NUM_CLASSES,
    SPLIT_FILES,
)
from mckd.fileio import atomic_path, write_json_atomic

__all__ = ["balanced_order", "split_meta_validation", "availability_mask", "check_rates", "write_dataset"]

logger = logging.getLogger(__name__)


def balanced_order(labels: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Per class, the sample indices shuffled within each group (speaker) and interleaved group by group."""
    order = {}
    for digit in range(NUM_CLASSES):
        per_group = []
        for group in sorted(set(groups[labels == digit].tolist())):
            members = np.flatnonzero((labels == digit) & (groups == group))
            per_group.append(members[rng.permutation(members.size)])
        longest = max((g.size for g in per_group), default=0)
        interleaved = [g[i] for i in range(longest) for g in per_group if i < g.size]
        order[digit] = np.asarray(interleaved, dtype=np.int64)
    return order


def split_meta_validation(
    labels: np.ndarray, groups: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices ``(train, meta_validation)``: ``round(fraction * n_c)`` samples of each class are held out.

    Raises:
        ValueError: when ``fraction`` is outside ``[0, 1)`` or would leave a class without training samples.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"meta-validation fraction must be in [0, 1), got {fraction}.")
    held_out = []
    for digit, order in balanced_order(labels, groups, rng).items():
        count = int(round(fraction * order.size))
        if count >= order.size and order.size:
            raise ValueError(f"meta-validation fraction {fraction} leaves class {digit} without training samples.")
        held_out.append(order[:count])
    meta = np.sort(np.concatenate(held_out)) if held_out else np.zeros(0, dtype=np.int64)
    train = np.setdiff1d(np.arange(labels.size), meta)
    return train, meta


def check_rates(audio_rate: float | None, image_rate: float | None) -> None:
    """Validate the availability rates (percent of training samples that keep the modality).

    Raises:
        ValueError: when a rate is outside ``(0, 100]`` or both are given and some sample would keep neither modality.
    """
    for name, rate in (("audio", audio_rate), ("image", image_rate)):
        if rate is not None and not 0.0 < rate <= 100.0:
            raise ValueError(f"--{name}-rate is a percentage in (0, 100], got {rate}.")
    if audio_rate is not None and image_rate is not None and audio_rate + image_rate < 100.0:
        raise ValueError(
            f"--audio-rate {audio_rate} and --image-rate {image_rate} add up to less than 100 %: some samples would "
            "have no modality at all."
        )


def availability_mask(
    labels: np.ndarray,
    groups: np.ndarray,
    audio_rate: float | None,
    image_rate: float | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """``bool [N, M]`` availability of the training samples under the rates (``None`` keeps a modality everywhere).

    Per class, ``round(rate / 100 * n_c)`` samples keep the modality, balanced over speakers. Audio is kept by a
    prefix and images by a suffix of the same balanced order, so with both rates every sample keeps at least one.
    """
    check_rates(audio_rate, image_rate)
    available = np.ones((labels.size, len(MODALITIES)), dtype=bool)
    for order in balanced_order(labels, groups, rng).values():
        n = order.size
        keep_audio = n if audio_rate is None else int(round(audio_rate / 100.0 * n))
        keep_image = n if image_rate is None else int(round(image_rate / 100.0 * n))
        keep_image = max(keep_image, n - keep_audio)  # rounding must not leave a sample with neither modality
        available[order[keep_audio:], AUDIO_INDEX] = False
        available[order[: n - keep_image], IMAGE_INDEX] = False
    return available


def _apply_availability(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Zero the arrays of missing modalities, so that nothing about them is stored."""
    out = dict(arrays)
    for index, key in enumerate(MODALITIES):
        missing = ~arrays["available"][:, index]
        if missing.any():
            out[key] = arrays[key].copy()
            out[key][missing] = 0
    return out


def write_dataset(out_dir: Path, splits: Mapping[str, dict[str, np.ndarray]], info: dict) -> Path:
    """Write one ``.npz`` per split and then ``dataset.json`` (written last: its presence marks a complete build).

    Args:
        out_dir: the dataset folder.
        splits: split name (a key of :data:`SPLIT_FILES`) -> arrays with every key of :data:`ARRAY_KEYS`.
        info: extra fields of the description (source, settings, seed).

    Returns:
        The path of ``dataset.json``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    description = {"format_version": FORMAT_VERSION, "modalities": dict(enumerate(MODALITIES)), **info, "splits": {}}
    for split, arrays in splits.items():
        missing = [key for key in ARRAY_KEYS if key not in arrays]
        if missing:
            raise ValueError(f"split '{split}' lacks arrays {missing}.")
        arrays = _apply_availability(arrays)
        with atomic_path(out_dir / SPLIT_FILES[split]) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, **{key: arrays[key] for key in ARRAY_KEYS})
        available = arrays["available"]
        description["splits"][split] = {
            "file": SPLIT_FILES[split],
            "num_samples": int(arrays["label"].size),
            "per_class": np.bincount(arrays["label"], minlength=NUM_CLASSES).tolist(),
            "available_per_modality": {m: int(available[:, i].sum()) for i, m in enumerate(MODALITIES)},
            "image_shape": list(arrays["image"].shape[1:]),
            "audio_shape": list(arrays["audio"].shape[1:]),
        }
        logger.info(
            "%s: %d samples (%s) -> %s",
            split,
            arrays["label"].size,
            ", ".join(f"{m} {int(available[:, i].sum())}" for i, m in enumerate(MODALITIES)),
            out_dir / SPLIT_FILES[split],
        )
    return write_json_atomic(out_dir / DATASET_INFO_FILE, description)
