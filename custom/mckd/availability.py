"""Modality availability: the boolean mask ``available[B, M]`` that travels with every batch.

This module is the single home of
- the enumeration of modality subsets (evaluation runs all ``2**M - 1`` of them),
- the training-time draw of a subset per sample (:class:`ModalityDropout`),
- the encoding that lets one tensor carry its own availability (:func:`pack_available` / :func:`unpack_available`).

Why an encoding: MONAI's sliding-window inferer, ``verify_net_in_out``, TorchScript export and MONAI Label call a
network with a single tensor. A packed tensor holds the ``M`` modality channels followed by ``M`` constant flag
channels (1 = present, 0 = missing). Availability is read back as "the flag channel is non-zero somewhere in the
window": a window always contains real voxels, and padding (zeros) can only ever add zeros, so a present modality is
never mistaken for a missing one, and a background-only window of a present modality keeps its flag.
"""

from __future__ import annotations

import itertools
from typing import Optional, Sequence

import torch

__all__ = [
    "all_subsets",
    "subset_name",
    "subset_mask",
    "pack_available",
    "unpack_available",
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


def subset_mask(subset: Sequence[bool], batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The ``[batch_size, M]`` availability mask that applies one subset to every sample of a batch."""
    row = torch.as_tensor(list(subset), dtype=torch.bool, device=device)
    return row.unsqueeze(0).expand(batch_size, -1).clone()


def pack_available(image: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """Append ``M`` constant flag channels to ``image[B, M, *S]``: the single-tensor form of ``(image, available)``.

    Missing modalities' image channels are zeroed so that nothing about them leaks into the packed tensor.
    """
    if image.ndim < 3 or available.shape != image.shape[:2]:
        raise ValueError(
            f"expected image [B, M, *spatial] and available [B, M]; got {tuple(image.shape)} and {tuple(available.shape)}."
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
        max_keep: Optional[int] = None,
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
        generator: Optional[torch.Generator] = None,
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
