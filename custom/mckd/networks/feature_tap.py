"""How a trainer reads a network's per-modality features without changing the network's single-tensor forward.

Every MCKD network routes its per-modality features ``[B, M, *F]`` (before missing modalities are filled) through
one :class:`FeatureTap`. The network's ``forward`` still returns only logits, so sliding-window inference,
TorchScript export, ``verify_net_in_out`` and MONAI Label see an ordinary network, while DDP still wraps the real
``forward`` during training. :func:`capture_features` registers a forward hook on the tap for the duration of one
forward pass (the standard PyTorch hook mechanism; MONAI's CAM visualisers read activations the same way).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

__all__ = ["FeatureTap", "FeatureCapture", "capture_features", "find_feature_tap"]


class FeatureTap(nn.Identity):
    """Identity marker for the tensor of per-modality features ``[B, M, *F]`` used by the distillation loss."""


class FeatureCapture:
    """Holds what the tap saw during the last forward pass inside :func:`capture_features`."""

    def __init__(self) -> None:
        self.features: torch.Tensor | None = None

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.features = output


def find_feature_tap(network: nn.Module) -> FeatureTap:
    """The single :class:`FeatureTap` inside ``network`` (wrappers such as DDP are searched through).

    Raises:
        ValueError: when the network has no tap or more than one.
    """
    taps = [m for m in network.modules() if isinstance(m, FeatureTap)]
    if len(taps) != 1:
        raise ValueError(
            f"{type(network).__name__} must contain exactly one mckd.networks.FeatureTap to expose per-modality "
            f"features for distillation; found {len(taps)}."
        )
    return taps[0]


@contextmanager
def capture_features(network: nn.Module) -> Iterator[FeatureCapture]:
    """Within the block, record the per-modality features of each forward pass of ``network``."""
    capture = FeatureCapture()
    handle = find_feature_tap(network).register_forward_hook(capture)
    try:
        yield capture
    finally:
        handle.remove()
