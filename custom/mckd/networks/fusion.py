"""Fusion of per-modality features when some modalities are missing: gather/scatter, mean fill, importance scaling.

The helpers work on any per-modality tensor ``[B, M, *F]`` (segmentation bottlenecks, skip features, embedding
vectors), so every MCKD network shares the same fill rule: a missing modality's features are the mean of the same
sample's available ones. The availability reaches them as one :class:`AvailablePairs`, built once per forward
by :func:`available_pairs` from the mask ``[B, M]``: it checks the mask (every sample has a modality) and holds the
flat indices of the available ``(sample, modality)`` pairs, so that the gather, the scatter and every decoder stage
reuse one index instead of rebuilding it (each rebuild is a host sync on a GPU). A network with a shared encoder
can :func:`gather_available` the pairs it has, encode only those (compute follows availability), and put the
results back with :func:`scatter_available` (zeros for missing) or :func:`scatter_mean_fill` (filled; the same
result as ``mean_fill(scatter_available(...))`` with less memory traffic). Everything is written with
TorchScript-compatible operations, so networks that call these helpers stay scriptable.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from mckd.availability import check_every_sample_has_one

__all__ = [
    "AvailablePairs",
    "available_pairs",
    "gather_available",
    "scatter_available",
    "scatter_mean_fill",
    "mean_fill",
    "scale_modalities",
    "project_mean_filled",
]


# The functional form keeps real types in the annotations (TorchScript cannot resolve the string annotations that
# ``from __future__ import annotations`` gives a class body).
AvailablePairs = NamedTuple(
    "AvailablePairs",
    [
        ("mask", torch.Tensor),
        ("index", torch.Tensor),
        ("sample", torch.Tensor),
        ("counts", torch.Tensor),
        ("first_subset", torch.Tensor),
        ("all_present", bool),
        ("one_subset", bool),
    ],
)
AvailablePairs.__doc__ = """A batch's availability, prepared once for every fusion step of a forward.

Attributes:
    mask: boolean ``[B, M]``.
    index: flat indices ``b * M + m`` of the available pairs, row-major (the order of the gathered batch).
    sample: the sample ``b`` of each available pair.
    counts: number of available modalities per sample ``[B]``.
    first_subset: the available modalities of sample 0 (those of every sample when ``one_subset``).
    all_present: every modality of every sample is available.
    one_subset: every sample has the same subset.
"""


def available_pairs(available: torch.Tensor) -> AvailablePairs:
    """Check the mask ``[B, M]`` and prepare its pair index; the decisions are taken from one copy on the host.

    Raises:
        ValueError: when ``available`` is not a non-empty 2D mask or a sample has no available modality.
    """
    if available.ndim != 2 or available.shape[0] == 0:
        raise ValueError(f"expected available [B, M] with B >= 1; got {list(available.shape)}.")
    mask = available.to(torch.bool)
    host = mask.cpu()
    check_every_sample_has_one(host)
    index = host.reshape(-1).nonzero().squeeze(1).to(mask.device)
    return AvailablePairs(
        mask=mask,
        index=index,
        sample=torch.div(index, mask.shape[1], rounding_mode="floor"),
        counts=host.sum(dim=1).to(mask.device),
        first_subset=host[0].nonzero().squeeze(1).to(mask.device),
        all_present=bool(host.all()),
        one_subset=bool((host == host[0:1]).all()),
    )


def _per_modality_shape(batch: int, num_modalities: int, ndim: int) -> list[int]:
    """Shape ``[batch, num_modalities, 1, ...]`` that broadcasts a per-modality value over ``ndim``-d features."""
    return [batch, num_modalities] + [1] * (ndim - 2)


def _check_rows(encoded: torch.Tensor, pairs: AvailablePairs) -> None:
    if encoded.ndim < 1 or encoded.shape[0] != pairs.index.shape[0]:
        raise ValueError(
            f"expected one row of features per available pair ({pairs.index.shape[0]}); "
            f"got shape {list(encoded.shape)}."
        )


def _check_features(features: torch.Tensor, pairs: AvailablePairs) -> None:
    mask = pairs.mask
    if features.ndim < 2 or features.shape[0] != mask.shape[0] or features.shape[1] != mask.shape[1]:
        raise ValueError(
            f"expected features [B, M, *F] and available [B, M]; "
            f"got {list(features.shape)} and {list(mask.shape)}."
        )


def gather_available(x: torch.Tensor, pairs: AvailablePairs) -> torch.Tensor:
    """Fold the available ``(sample, modality)`` pairs of ``x[B, M, *S]`` into one batch ``[n_available, *S]``.

    Missing modalities' entries are not read.

    Raises:
        ValueError: when the shapes do not match.
    """
    _check_features(x, pairs)
    flat = x.reshape([x.shape[0] * x.shape[1]] + list(x.shape[2:]))
    return flat if pairs.all_present else flat.index_select(0, pairs.index)


def scatter_available(encoded: torch.Tensor, pairs: AvailablePairs) -> torch.Tensor:
    """Inverse of :func:`gather_available`: ``[n_available, *F]`` -> ``[B, M, *F]`` with zeros for missing pairs.

    Raises:
        ValueError: when ``encoded`` does not have one row per available pair.
    """
    _check_rows(encoded, pairs)
    batch, num_modalities = pairs.mask.shape[0], pairs.mask.shape[1]
    shape = [batch, num_modalities] + list(encoded.shape[1:])
    if pairs.all_present:
        return encoded.reshape(shape)
    full = encoded.new_zeros([batch * num_modalities] + list(encoded.shape[1:])).index_copy(0, pairs.index, encoded)
    return full.reshape(shape)


def scatter_mean_fill(encoded: torch.Tensor, pairs: AvailablePairs) -> torch.Tensor:
    """``mean_fill(scatter_available(encoded, pairs), pairs)``, computed without the intermediate zeros.

    Raises:
        ValueError: when ``encoded`` does not have one row per available pair.
    """
    _check_rows(encoded, pairs)
    batch, num_modalities = pairs.mask.shape[0], pairs.mask.shape[1]
    feature_shape = list(encoded.shape[1:])
    if pairs.all_present:
        return encoded.reshape([batch, num_modalities] + feature_shape)
    sums = encoded.new_zeros([batch] + feature_shape).index_add(0, pairs.sample, encoded)
    means = sums / pairs.counts.to(encoded.dtype).reshape([batch] + [1] * len(feature_shape))
    full = means.repeat_interleave(num_modalities, dim=0).index_copy(0, pairs.index, encoded)
    return full.reshape([batch, num_modalities] + feature_shape)


def mean_fill(features: torch.Tensor, pairs: AvailablePairs) -> torch.Tensor:
    """Replace each missing modality's features by the mean of the same sample's available modalities.

    Available modalities keep their features unchanged; the values held by missing entries are never read (they are
    masked out with ``torch.where``, so even NaN there cannot leak into the mean or its gradient).

    Args:
        features: per-modality features ``[B, M, *F]``.
        pairs: the batch's availability (:func:`available_pairs`).

    Returns:
        A tensor shaped like ``features``.

    Raises:
        ValueError: when the shapes do not match.
    """
    _check_features(features, pairs)
    if pairs.all_present:
        return features
    # a [B, M, N] view with a [B, M, 1] mask: broadcasting over one contiguous dimension is several times faster
    flat = features.reshape(features.shape[0], features.shape[1], -1)
    mask = pairs.mask.unsqueeze(2)
    kept = torch.where(mask, flat, torch.zeros((1,), dtype=flat.dtype, device=flat.device))
    mean = kept.sum(dim=1, keepdim=True) / pairs.counts.to(flat.dtype).reshape(-1, 1, 1)
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
    encoded: torch.Tensor, pairs: AvailablePairs, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """A 1x1x1 convolution of the mean-filled, concatenated skips, computed from the available pairs only.

    Equals ``conv3d(scatter_mean_fill(encoded, pairs).flatten(1, 2), weight, bias)`` up to float rounding, without
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
        pairs: the batch's availability (:func:`available_pairs`).
        weight: 1x1x1 convolution kernel ``[C_out, M * C, 1, 1, 1]``.
        bias: optional ``[C_out]`` bias.

    Returns:
        ``[B, C_out, *S]``.

    Raises:
        ValueError: when the shapes do not match.
    """
    _check_rows(encoded, pairs)
    mask = pairs.mask
    batch, num_modalities = mask.shape[0], mask.shape[1]
    channels, spatial = encoded.shape[1], list(encoded.shape[2:])
    if weight.shape[1] != num_modalities * channels or weight[0, 0].numel() != 1:
        raise ValueError(
            f"expected a 1x1x1 kernel with {num_modalities * channels} input channels; got {list(weight.shape)}."
        )
    counts = pairs.counts
    blocks = weight.reshape(weight.shape[0], num_modalities, channels)
    if pairs.one_subset:
        # one subset for the whole batch: fold once, then one matrix product over the k * C gathered channels
        keep = mask[0]
        missing = (~keep).to(weight.dtype).reshape(1, num_modalities, 1) / counts[0].to(weight.dtype)
        folded = blocks.index_select(1, pairs.first_subset) + (blocks * missing).sum(dim=1, keepdim=True)
        gathered = encoded.reshape(batch, folded.shape[1] * channels, -1)
        out = torch.matmul(folded.flatten(1), gathered)
    else:
        # per pair p = (b, a): W_a + (1 / k_b) * sum of the missing blocks of sample b, then summed per sample
        modality = pairs.index - pairs.sample * num_modalities
        fill = (~mask).to(weight.dtype) / counts.to(weight.dtype).unsqueeze(1)
        one_hot = torch.nn.functional.one_hot(modality, num_modalities).to(weight.dtype)
        per_pair = torch.einsum("pm,omc->poc", fill.index_select(0, pairs.sample) + one_hot, blocks)
        projected = torch.bmm(per_pair, encoded.reshape(pairs.index.shape[0], channels, -1))
        out = projected.new_zeros([batch, weight.shape[0], projected.shape[2]]).index_add(0, pairs.sample, projected)
    out = out.reshape([batch, weight.shape[0]] + spatial)
    return out if bias is None else out + bias.reshape([1, -1] + [1] * len(spatial))
