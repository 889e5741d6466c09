"""Modality availability: the boolean mask ``available[B, M]`` that travels with every batch.

This module is the single home of
- the enumeration of modality subsets (evaluation runs all ``2**M - 1`` of them),
- the training-time draw of a subset per sample (:class:`ModalityDropout`),
- the encoding that lets one tensor carry its own availability (:func:`pack_available` / :func:`unpack_available`),
- what "no mask given" means, for a batch (:func:`read_available`) and for a network's input
  (:func:`split_available`): every modality is present, unless the input carries its own flags (a packed tensor).
  The same holds for every MCKD network's ``available=None``.
- the rule that every sample needs at least one available modality (:func:`check_every_sample_has_one`).

Why an encoding: MONAI's sliding-window inferer, ``verify_net_in_out``, TorchScript export and MONAI Label call a
network with a single tensor. A packed tensor holds the ``M`` modality channels followed by ``M`` constant flag
channels (1 = present, 0 = missing). Availability is read back as "the flag channel is non-zero somewhere in the
window": a window always contains real voxels, and padding (zeros) can only ever add zeros, so a present modality is
never mistaken for a missing one, and a background-only window of a present modality keeps its flag.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any, Sequence

import torch

__all__ = [
    "under_subsets",
    "all_subsets",
    "subset_name",
    "pack_available",
    "unpack_available",
    "check_every_sample_has_one",
    "resolve_available",
    "split_available",
    "read_available",
    "ModalityDropout",
]


def all_subsets(num_modalities: int) -> list[tuple[bool, ...]]:
    """Every non-empty subset of ``num_modalities`` modalities, smallest first, then in modality order.

    For 4 modalities that is 15 subsets: the 4 singles, 6 pairs, 4 triples and the full set.
    """
    if num_modalities < 1:
        raise ValueError(f"num_modalities must be >= 1, got {num_modalities}.")
    subsets = []
    for k in range(1, num_modalities + 1):
        for chosen in itertools.combinations(range(num_modalities), k):
            subsets.append(tuple(m in chosen for m in range(num_modalities)))
    return subsets


def subset_name(subset: Sequence[bool], names: Sequence[str], joiner: str = "+") -> str:
    """Human-readable name of a subset, e.g. ``"FLAIR+T1ce"``."""
    if len(subset) != len(names):
        raise ValueError(f"subset has {len(subset)} entries but {len(names)} modality names were given.")
    return joiner.join(n for n, present in zip(names, subset) if present)


def pack_available(image: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """Append ``M`` constant flag channels to ``image[B, M, *S]``: the single-tensor form of ``(image, available)``.

    Missing modalities' image channels are zeroed so that nothing about them leaks into the packed tensor.
    """
    if image.ndim < 3 or available.shape != image.shape[:2]:
        raise ValueError(
            "expected image [B, M, *spatial] and available [B, M]; "
            f"got {tuple(image.shape)} and {tuple(available.shape)}."
        )
    flags = available.to(image.dtype).reshape(*available.shape, *([1] * (image.ndim - 2))).expand_as(image)
    return torch.cat([image * flags, flags], dim=1)


def unpack_available(x: torch.Tensor, num_modalities: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a packed tensor ``[B, 2M, *S]`` into ``(image[B, M, *S], available[B, M])``.

    A modality is available when its flag channel is non-zero anywhere in ``x`` (see the module docstring).
    TorchScript-compatible, so scripted networks decode their input with this same function.
    """
    if x.ndim < 3 or x.shape[1] != 2 * num_modalities:
        raise ValueError(
            f"a packed input needs {2 * num_modalities} channels ({num_modalities} modalities + {num_modalities} "
            f"availability flags); got shape {list(x.shape)}."
        )
    image = x[:, :num_modalities]
    available = x[:, num_modalities:].flatten(2).abs().amax(dim=2) > 0
    return image, available


def check_every_sample_has_one(available: torch.Tensor) -> None:
    """Raise when a row of the boolean ``available[B, M]`` has no modality (one host sync on a GPU mask).

    Raises:
        ValueError: naming the samples without an available modality.
    """
    empty: list[int] = (~available.any(dim=1)).nonzero().flatten().tolist()
    if len(empty) > 0:
        raise ValueError(f"every sample needs at least one available modality; samples {empty} have none.")


def resolve_available(
    available: torch.Tensor | None, batch_size: int, num_modalities: int, device: torch.device
) -> torch.Tensor:
    """The boolean ``[batch_size, num_modalities]`` mask on ``device``: ``available`` checked, or all present if None.

    Any dtype is accepted; non-zero means present. TorchScript-compatible (the networks call it).

    Raises:
        ValueError: when ``available`` does not have the shape ``[batch_size, num_modalities]``.
    """
    if available is None:
        return torch.ones(batch_size, num_modalities, dtype=torch.bool, device=device)
    if available.ndim != 2 or available.shape[0] != batch_size or available.shape[1] != num_modalities:
        raise ValueError(
            f"available must be [B, M] = [{batch_size}, {num_modalities}]; got {list(available.shape)}."
        )
    return available.to(device=device, dtype=torch.bool)


def split_available(
    x: torch.Tensor, available: torch.Tensor | None, num_modalities: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A network input ``x[B, C, *S]`` and its optional mask -> ``(image[B, M, *S], available[B, M])``.

    With a mask, ``x`` must have ``M`` channels. Without one (``None``), the input says: a packed ``x`` (``2M``
    channels, :func:`pack_available`) carries its own flags, and a plain ``x`` (``M`` channels) has every modality.
    TorchScript-compatible.

    Raises:
        ValueError: on a channel count that is neither, or a mask of the wrong shape.
    """
    if available is None and x.shape[1] == 2 * num_modalities:
        return unpack_available(x, num_modalities)
    if x.shape[1] != num_modalities:
        packed = "" if available is not None else f" or {2 * num_modalities} (packed with availability flags)"
        raise ValueError(
            f"the input needs {num_modalities} channels (one per modality){packed}; got shape {list(x.shape)}."
        )
    return x, resolve_available(available, x.shape[0], num_modalities, x.device)


def read_available(
    batch: Any,
    batch_size: int,
    num_modalities: int,
    key: str = "available",
    given: Any | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The data availability ``[B, M]`` of a batch, checked once: what engines, handlers and reports feed the network.

    Taken from ``given`` (e.g. an ``available`` keyword returned by ``prepare_batch``) if not ``None``, else from
    ``batch[key]`` when ``batch`` is a mapping that has it, else every modality is present.

    Args:
        batch: the batch (a dictionary batch, or anything else, which then carries no availability).
        batch_size: number of samples ``B``.
        num_modalities: number of modalities ``M``.
        key: key of the availability in a dictionary batch. Default ``"available"``.
        given: availability passed explicitly (any dtype, non-zero = present), or ``None``.
        device: device of the returned mask (default: that of the stored mask, or the CPU).

    Raises:
        ValueError: when the mask is not ``[B, M]`` or a sample has no available modality.
    """
    if given is None and isinstance(batch, Mapping):
        given = batch.get(key)
    if given is None:
        return torch.ones(batch_size, num_modalities, dtype=torch.bool, device=device)
    mask = torch.as_tensor(given, device=device)
    if tuple(mask.shape) != (batch_size, num_modalities):
        raise ValueError(
            f"the batch's availability '{key}' must have shape [B, M] = {(batch_size, num_modalities)}, "
            f"got {tuple(mask.shape)}."
        )
    mask = mask.to(torch.bool)
    check_every_sample_has_one(mask)
    return mask


def under_subsets(
    data_available: torch.Tensor, subsets: Sequence[Sequence[bool]]
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """The missing-modality protocol: each subset ``S`` restricted to what every sample's data provides.

    Yields ``(s, available, usable)`` per subset index ``s`` that leaves any sample a modality: ``available`` is
    ``data_available AND S`` ``[B, M]`` and ``usable`` ``[B]`` marks the samples left with at least one modality
    (evaluate those under ``available[usable]``; the others share no modality with ``S``).

    Args:
        data_available: the batch's availability ``[B, M]`` (boolean).
        subsets: the subsets, ``M`` booleans each.
    """
    for s, subset in enumerate(subsets):
        available = data_available & torch.as_tensor(subset, dtype=torch.bool, device=data_available.device)[None]
        usable = available.any(dim=1)
        if bool(usable.any()):
            yield s, available, usable


class ModalityDropout:
    """Draw which modalities each training sample keeps (the published random-subset schedule by default).

    During the first ``warmup_iterations`` every modality is kept. Afterwards, per sample, ``k`` is drawn uniformly
    from ``[min_keep, max_keep]`` and then a uniformly random ``k``-subset is kept. ``per_sample=False`` shares one
    subset across the batch, as the published code does.

    Args:
        num_modalities: number of modalities ``M``.
        warmup_iterations: iterations (1-based, as ignite counts) that keep all modalities. Default 0.
        min_keep: smallest number of kept modalities. Default 1.
        max_keep: largest number of kept modalities; ``None`` means ``M`` (the full set can be drawn).
        per_sample: draw a subset per sample (default) rather than one per batch.

    Raises:
        ValueError: when the bounds are inconsistent.
    """

    def __init__(
        self,
        num_modalities: int,
        warmup_iterations: int = 0,
        min_keep: int = 1,
        max_keep: int | None = None,
        per_sample: bool = True,
    ) -> None:
        max_keep = num_modalities if max_keep is None else max_keep
        if num_modalities < 1:
            raise ValueError(f"num_modalities must be >= 1, got {num_modalities}.")
        if warmup_iterations < 0:
            raise ValueError(f"warmup_iterations must be >= 0, got {warmup_iterations}.")
        if not 1 <= min_keep <= max_keep <= num_modalities:
            raise ValueError(
                f"need 1 <= min_keep <= max_keep <= num_modalities; got min_keep={min_keep}, max_keep={max_keep}, "
                f"num_modalities={num_modalities}."
            )
        self.num_modalities = num_modalities
        self.warmup_iterations = warmup_iterations
        self.min_keep = min_keep
        self.max_keep = max_keep
        self.per_sample = per_sample

    def __call__(
        self,
        batch_size: int,
        iteration: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """The ``[batch_size, M]`` mask for the 1-based training ``iteration``."""
        if iteration <= self.warmup_iterations:
            return torch.ones(batch_size, self.num_modalities, dtype=torch.bool, device=device)
        rows = batch_size if self.per_sample else 1
        keep = torch.randint(self.min_keep, self.max_keep + 1, (rows, 1), generator=generator)
        # rank of a uniform random score inside each row -> a uniformly random permutation; keep its first k entries
        order = torch.rand(rows, self.num_modalities, generator=generator).argsort(dim=1).argsort(dim=1)
        mask = order < keep
        return mask.expand(batch_size, -1).to(device) if not self.per_sample else mask.to(device)
