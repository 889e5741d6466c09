"""The decoder stage shared by every MCKD segmentation backbone: upsample, add the fused multi-modal skip, refine.

The published decoder fuses skips by addition after a 1x1x1 projection of the concatenated per-modality skip
features (mckd_method §1.2); MONAI's UNet/DynUNet decoders concatenate instead, so this container is written here.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SkipAddStage"]


class SkipAddStage(nn.Module):
    """``refine(upsample(x) + project(skip))``.

    Args:
        upsample: maps the deeper decoder features to the skip's resolution and channel count.
        project: maps the concatenated per-modality skip features ``[B, M * C_skip, *S]`` to the same channels.
        refine: applied to the sum.
    """

    def __init__(self, upsample: nn.Module, project: nn.Module, refine: nn.Module) -> None:
        super().__init__()
        self.upsample = upsample
        self.project = project
        self.refine = refine

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.refine(self.upsample(x) + self.project(skip))
