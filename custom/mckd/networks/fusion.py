"""Fusion of per-modality features when some modalities are missing: per-sample mean fill and importance scaling.

Both helpers work on any per-modality tensor ``[B, M, *F]`` (segmentation bottlenecks, skip features, embedding
vectors) with the availability mask ``[B, M]``, so every MCKD network shares the same fill rule. They are written
with TorchScript-compatible operations only, so networks that call them stay scriptable.
"""

from __future__ import annotations

import torch

__all__ = ["mean_fill", "scale_modalities"]


def _per_modality_shape(batch: int, num_modalities: int, ndim: int) -> list[int]:
    """Shape ``[batch, num_modalities, 1, ...]`` that broadcasts a per-modality value over ``ndim``-d features."""
    return [batch, num_modalities] + [1] * (ndim - 2)


def _check_mask(features: torch.Tensor, available: torch.Tensor) -> None:
    if features.ndim < 2 or available.ndim != 2 or available.shape[0] != features.shape[0]:
        raise ValueError(
            f"expected features [B, M, *F] and available [B, M]; got {list(features.shape)} and {list(available.shape)}."
        )
    if available.shape[1] != features.shape[1]:
        raise ValueError(
            f"expected features [B, M, *F] and available [B, M]; got {list(features.shape)} and {list(available.shape)}."
        )


def mean_fill(features: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """Replace each missing modality's features by the mean of the same sample's available modalities.

    Available modalities keep their features unchanged; the values held by missing entries are never read (they are
    masked out with ``torch.where``, so even NaN there cannot leak into the mean or its gradient).

    Args:
        features: per-modality features ``[B, M, *F]``.
        available: boolean mask ``[B, M]``; ``True`` marks a present modality.

    Returns:
        A tensor shaped like ``features``.

    Raises:
        ValueError: when the shapes do not match or a sample has no available modality.
    """
    _check_mask(features, available)
    available = available.to(torch.bool)
    counts = available.sum(dim=1)
    if bool((counts == 0).any()):
        raise ValueError("every sample needs at least one available modality to fill the missing ones from.")
    mask = available.reshape(_per_modality_shape(available.shape[0], available.shape[1], features.ndim))
    kept = torch.where(mask, features, torch.zeros_like(features))
    denominator = counts.to(features.dtype).reshape(_per_modality_shape(available.shape[0], 1, features.ndim))
    mean = kept.sum(dim=1, keepdim=True) / denominator
    return torch.where(mask, features, mean)


def scale_modalities(features: torch.Tensor, modality_scale: torch.Tensor) -> torch.Tensor:
    """Multiply each modality's features by its scale, e.g. the importance weights ``softmax(w)`` of a meta-update.

    Args:
        features: per-modality features ``[B, M, *F]``.
        modality_scale: ``[M]`` (shared by the batch) or ``[B, M]`` (per sample). Gradients flow to it.

    Returns:
        ``features`` scaled per modality, same shape.

    Raises:
        ValueError: when ``modality_scale`` has neither shape.
    """
    if features.ndim < 2:
        raise ValueError(f"expected features [B, M, *F]; got {list(features.shape)}.")
    batch, num_modalities = features.shape[0], features.shape[1]
    if modality_scale.ndim == 1 and modality_scale.shape[0] == num_modalities:
        scale = modality_scale.unsqueeze(0)
    elif modality_scale.ndim == 2 and modality_scale.shape[0] == batch and modality_scale.shape[1] == num_modalities:
        scale = modality_scale
    else:
        raise ValueError(
            f"modality_scale must be [M] or [B, M] with B={batch}, M={num_modalities}; got {list(modality_scale.shape)}."
        )
    return features * scale.to(features.dtype).reshape(_per_modality_shape(scale.shape[0], num_modalities, features.ndim))
