"""The decoder stage shared by every MCKD segmentation backbone: upsample, add the fused multi-modal skip, refine.

The published decoder fuses skips by addition after a 1x1x1 projection of the concatenated per-modality skip
features (mckd_method §1.2); MONAI's UNet/DynUNet decoders concatenate instead, so this container is written here.
When the skips come as the encoder's output for the available ``(sample, modality)`` pairs only, the projection of
their mean-filled concatenation is computed without building it (:func:`~mckd.networks.fusion.project_mean_filled`).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from mckd.networks.conv import OneDNNConv3d, use_onednn_conv3d
from mckd.networks.fusion import project_mean_filled

__all__ = ["SkipAddStage"]


class SkipAddStage(nn.Module):
    """``refine(upsample(x) + project(skip))``.

    Args:
        upsample: maps the deeper decoder features to the skip's resolution and channel count.
        project: an ``nn.Sequential`` (MONAI ``Convolution`` or similar) whose first module is a bias-free or biased
            1x1x1 ``nn.Conv3d`` over the concatenated per-modality skip features ``[B, M * C_skip, *S]``, followed by
            its norm and activation. Plain ``nn.Conv3d`` modules are re-classed as
            :class:`~mckd.networks.conv.OneDNNConv3d` (same parameters, same result).
        refine: applied to the sum.

    Raises:
        TypeError: when ``project`` does not start with a 1x1x1 ``nn.Conv3d``.
    """

    def __init__(self, upsample: nn.Module, project: nn.Sequential, refine: nn.Module) -> None:
        super().__init__()
        use_onednn_conv3d(project)
        first = project[0] if isinstance(project, nn.Sequential) and len(project) > 0 else None
        if not isinstance(first, OneDNNConv3d) or tuple(first.kernel_size) != (1, 1, 1):
            raise TypeError(f"project must be an nn.Sequential starting with a 1x1x1 nn.Conv3d; got {project}.")
        self.upsample = upsample
        self.project = project
        self.refine = refine

    def forward(self, x: torch.Tensor, skip: torch.Tensor, available: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Fuse ``x`` with the skip features.

        Args:
            x: deeper decoder features.
            skip: the concatenated, filled skips ``[B, M * C_skip, *S]`` when ``available`` is ``None``; otherwise the
                available pairs' skips ``[n_available, C_skip, *S]`` in the order of
                :func:`~mckd.networks.fusion.gather_available`, mean-filled implicitly.
            available: boolean ``[B, M]`` mask for the second form.
        """
        if available is None:
            projected = self.project(skip)
        else:
            conv = self.project[0]
            projected = project_mean_filled(skip, available, conv.kernel(), conv.bias)
            for i, module in enumerate(self.project):
                if i > 0:
                    projected = module(projected)
        return self.refine(self.upsample(x) + projected)
