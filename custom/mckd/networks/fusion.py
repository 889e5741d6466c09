"""Fusion of per-modality features when some modalities are missing: gather/scatter, mean fill, importance scaling.

The helpers work on any per-modality tensor ``[B, M, *F]`` (segmentation bottlenecks, skip features, embedding
vectors) with the availability mask ``[B, M]``, so every MCKD network shares the same fill rule: a missing
modality's features are the mean of the same sample's available ones. A network with a shared encoder can
:func:`gather_available` the ``(sample, modality)`` pairs it has, encode only those (compute follows availability),
and put the results back with :func:`scatter_available` (zeros for missing) or :func:`scatter_mean_fill` (filled;
the same result as ``mean_fill(scatter_available(...))`` with less memory traffic). Everything is written with
TorchScript-compatible operations, so networks that call these helpers stay scriptable.
"""

from __future__ import annotations

from typing import Optional

import torch

__all__ = [
    "gather_available",
    "scatter_available",
    "scatter_mean_fill",
    "mean_fill",
    "scale_modalities",
    "project_mean_filled",
]


def _per_modality_shape(batch: int, num_modalities: int, ndim: int) -> list[int]:
    """Shape ``[batch, num_modalities, 1, ...]`` that broadcasts a per-modality value over ``ndim``-d features."""
    return [batch, num_modalities] + [1] * (ndim - 2)


def _check_rows(encoded: torch.Tensor, index: torch.Tensor) -> None:
    if encoded.ndim < 1 or encoded.shape[0] != index.shape[0]:
        raise ValueError(
            f"expected one row of features per available pair ({index.shape[0]}); got shape {list(encoded.shape)}."
        )


def _check_mask(features: torch.Tensor, available: torch.Tensor) -> None:
    if features.ndim < 2 or available.ndim != 2 or available.shape[0] != features.shape[0]:
        raise ValueError(
            f"expected features [B, M, *F] and available [B, M]; "
            f"got {list(features.shape)} and {list(available.shape)}."
        )
    if available.shape[1] != features.shape[1]:
        raise ValueError(
            f"expected features [B, M, *F] and available [B, M]; "
            f"got {list(features.shape)} and {list(available.shape)}."
        )


def _available_pairs(available: torch.Tensor) -> torch.Tensor:
    """Flat indices ``b * M + m`` of the available pairs, in row-major order (the order of the gathered batch)."""
    if available.ndim != 2:
        raise ValueError(f"expected available [B, M]; got {list(available.shape)}.")
    return available.to(torch.bool).reshape(-1).nonzero().squeeze(1)


def gather_available(x: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """Fold the available ``(sample, modality)`` pairs of ``x[B, M, *S]`` into one batch ``[n_available, *S]``.

    Missing modalities' entries are not read.

    Args:
        x: per-modality inputs ``[B, M, *S]``.
        available: boolean mask ``[B, M]``.

    Raises:
        ValueError: when the shapes do not match.
    """
    _check_mask(x, available)
    pairs = x.reshape([x.shape[0] * x.shape[1]] + list(x.shape[2:]))
    if bool(available.to(torch.bool).all()):
        return pairs
    return pairs.index_select(0, _available_pairs(available))


def scatter_available(encoded: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`gather_available`: ``[n_available, *F]`` -> ``[B, M, *F]`` with zeros for missing pairs.

    Args:
        encoded: features of the available pairs, in the order of :func:`gather_available`.
        available: boolean mask ``[B, M]``.

    Raises:
        ValueError: when ``encoded`` does not have one row per available pair.
    """
    index = _available_pairs(available)
    _check_rows(encoded, index)
    batch, num_modalities = available.shape[0], available.shape[1]
    if index.numel() == batch * num_modalities:
        return encoded.reshape([batch, num_modalities] + list(encoded.shape[1:]))
    full = encoded.new_zeros([batch * num_modalities] + list(encoded.shape[1:])).index_copy(0, index, encoded)
    return full.reshape([batch, num_modalities] + list(encoded.shape[1:]))


def scatter_mean_fill(encoded: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """``mean_fill(scatter_available(encoded, available), available)``, computed without the intermediate zeros.

    Args:
        encoded: features of the available pairs ``[n_available, *F]``, in the order of :func:`gather_available`.
        available: boolean mask ``[B, M]``.

    Raises:
        ValueError: when ``encoded`` does not have one row per available pair or a sample has no available modality.
    """
    index = _available_pairs(available)
    _check_rows(encoded, index)
    batch, num_modalities = available.shape[0], available.shape[1]
    feature_shape = list(encoded.shape[1:])
    if index.numel() == batch * num_modalities:
        return encoded.reshape([batch, num_modalities] + feature_shape)
    counts = available.to(torch.bool).sum(dim=1)
    if bool((counts == 0).any()):
        raise ValueError("every sample needs at least one available modality to fill the missing ones from.")
    sample = torch.div(index, num_modalities, rounding_mode="floor")
    sums = encoded.new_zeros([batch] + feature_shape).index_add(0, sample, encoded)
    means = sums / counts.to(encoded.dtype).reshape([batch] + [1] * len(feature_shape))
    full = means.repeat_interleave(num_modalities, dim=0).index_copy(0, index, encoded)
    return full.reshape([batch, num_modalities] + feature_shape)


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
    # a [B, M, N] view with a [B, M, 1] mask: broadcasting over one contiguous dimension is several times faster
    flat = features.reshape(features.shape[0], features.shape[1], -1)
    mask = available.unsqueeze(2)
    kept = torch.where(mask, flat, torch.zeros((1,), dtype=flat.dtype, device=flat.device))
    mean = kept.sum(dim=1, keepdim=True) / counts.to(flat.dtype).reshape(-1, 1, 1)
    return torch.where(mask, flat, mean).reshape(features.shape)


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
            f"modality_scale must be [M] or [B, M] with B={batch}, M={num_modalities}; "
            f"got {list(modality_scale.shape)}."
        )
    shape = _per_modality_shape(scale.shape[0], num_modalities, features.ndim)
    return features * scale.to(features.dtype).reshape(shape)


def project_mean_filled(
    encoded: torch.Tensor, available: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """A 1x1x1 convolution of the mean-filled, concatenated skips, computed from the available pairs only.

    Equals ``conv3d(scatter_mean_fill(encoded, available).flatten(1, 2), weight, bias)`` up to float rounding, without
    building the filled ``[B, M * C, *S]`` tensor. The convolution is linear, so with ``W_m`` the weight block of
    modality ``m`` and ``A_b`` the ``k_b`` available modalities of sample ``b``,

        sum_m W_m s_m = sum_{a in A_b} (W_a + (1 / k_b) * sum_{m not in A_b} W_m) s_a,

    because every missing ``s_m`` is ``(1 / k_b) * sum_{a in A_b} s_a``. The missing modalities' blocks are folded into
    the available ones' weights, and the work shrinks by ``k_b / M``. (Filling with the mean of the per-modality
    projections ``W_a s_a`` instead would not be equivalent: the blocks ``W_m`` differ between modalities.) When all
    samples share one subset, that is one convolution over ``k * C`` channels; otherwise one matrix product per
    available pair, summed per sample. Gradients are those of the filled formulation.

    Args:
        encoded: features of the available pairs ``[n_available, C, *S]``, in the order of :func:`gather_available`.
        available: boolean mask ``[B, M]``.
        weight: 1x1x1 convolution kernel ``[C_out, M * C, 1, 1, 1]``.
        bias: optional ``[C_out]`` bias.

    Returns:
        ``[B, C_out, *S]``.

    Raises:
        ValueError: when the shapes do not match or a sample has no available modality.
    """
    index = _available_pairs(available)
    _check_rows(encoded, index)
    batch, num_modalities = available.shape[0], available.shape[1]
    channels, spatial = encoded.shape[1], list(encoded.shape[2:])
    if weight.shape[1] != num_modalities * channels or weight[0, 0].numel() != 1:
        raise ValueError(
            f"expected a 1x1x1 kernel with {num_modalities * channels} input channels; got {list(weight.shape)}."
        )
    mask = available.to(torch.bool)
    counts = mask.sum(dim=1)
    if bool((counts == 0).any()):
        raise ValueError("every sample needs at least one available modality to fill the missing ones from.")
    blocks = weight.reshape(weight.shape[0], num_modalities, channels)
    if bool((mask == mask[0:1]).all()):
        # one subset for the whole batch: fold once, then one matrix product over the k * C gathered channels
        keep = mask[0]
        missing = (~keep).to(weight.dtype).reshape(1, num_modalities, 1) / counts[0].to(weight.dtype)
        folded = blocks.index_select(1, keep.nonzero().squeeze(1)) + (blocks * missing).sum(dim=1, keepdim=True)
        gathered = encoded.reshape(batch, folded.shape[1] * channels, -1)
        out = torch.matmul(folded.flatten(1), gathered)
    else:
        # per pair p = (b, a): W_a + (1 / k_b) * sum of the missing blocks of sample b, then summed per sample
        sample = torch.div(index, num_modalities, rounding_mode="floor")
        modality = index - sample * num_modalities
        fill = (~mask).to(weight.dtype) / counts.to(weight.dtype).unsqueeze(1)
        one_hot = torch.nn.functional.one_hot(modality, num_modalities).to(weight.dtype)
        per_pair = torch.einsum("pm,omc->poc", fill.index_select(0, sample) + one_hot, blocks)
        projected = torch.bmm(per_pair, encoded.reshape(index.shape[0], channels, -1))
        out = projected.new_zeros([batch, weight.shape[0], projected.shape[2]]).index_add(0, sample, projected)
    out = out.reshape([batch, weight.shape[0]] + spatial)
    return out if bias is None else out + bias.reshape([1, -1] + [1] * len(spatial))
