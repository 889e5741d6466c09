"""The decoder shared by every MCKD segmentation backbone: stages of upsample, add the fused multi-modal skip, refine.

The published decoder fuses skips by addition after a 1x1x1 projection of the concatenated per-modality skip
features (mckd_method §1.2); MONAI's UNet/DynUNet decoders concatenate instead, so the stage and the decoder are
written here. When the skips come as the encoder's output for the available ``(sample, modality)`` pairs only, the
projection of their mean-filled concatenation is computed without building it
(:func:`~mckd.networks.fusion.project_mean_filled`). A backbone only chooses its stages' modules, its classifier and
the axes of the final x2 upsample (:class:`SkipDecoder`).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mckd.networks.conv import OneDNNConv3d, use_onednn_conv3d
from mckd.networks.fusion import AvailablePairs, project_mean_filled
from mckd.networks.upsample import upsample2x_linear

__all__ = ["SkipAddStage", "SkipDecoder"]


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

    def forward(self, x: torch.Tensor, skip: torch.Tensor, pairs: AvailablePairs | None = None) -> torch.Tensor:
        """Fuse ``x`` with the skip features.

        Args:
            x: deeper decoder features.
            skip: the concatenated, filled skips ``[B, M * C_skip, *S]`` when ``pairs`` is ``None``; otherwise the
                available pairs' skips ``[n_available, C_skip, *S]`` in the order of
                :func:`~mckd.networks.fusion.gather_available`, mean-filled implicitly.
            pairs: the batch's availability for the second form.
        """
        if pairs is None:
            projected = self.project(skip)
        else:
            conv = self.project[0]
            projected = project_mean_filled(skip, pairs, conv.kernel(), conv.bias)
            for i, module in enumerate(self.project):
                if i > 0:
                    projected = module(projected)
        return self.refine(self.upsample(x) + projected)


class SkipDecoder(nn.Module):
    """Shared decoder: fused bottleneck ``[B, M * C, *F]`` and per-scale skips -> logits at the input resolution.

    The stages run deep to shallow, each fusing one skip scale; then the classifier, and a linear x2 upsample of the
    logits along the chosen axes (the encoder's stem halves those), as the published decoder does.

    Args:
        stages: the stages, deepest first; stage ``i`` consumes the ``i``-th deepest skip.
        classifier: maps the last stage's features to the logits.
        upsampled: per spatial axis, whether the final upsample doubles it.
    """

    def __init__(self, stages: Sequence[SkipAddStage], classifier: nn.Module, upsampled: Sequence[bool]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.classifier = classifier
        self.upsampled: list[bool] = [bool(flag) for flag in upsampled]

    def forward(
        self, bottleneck: torch.Tensor, skips: list[torch.Tensor], pairs: AvailablePairs | None = None
    ) -> torch.Tensor:
        """Logits from the fused bottleneck and the skips, shallow to deep (see :class:`SkipAddStage` for the forms).

        Args:
            bottleneck: fused bottleneck features ``[B, M * C, *F]``.
            skips: concatenated filled skips ``[B, M * C_i, *S_i]``, or, with ``pairs``, the available pairs'
                skips ``[n_available, C_i, *S_i]``.
            pairs: the batch's availability for the second form of ``skips``.
        """
        x = bottleneck
        last = len(skips) - 1
        for i, stage in enumerate(self.stages):
            x = stage(x, skips[last - i], pairs)
        return upsample2x_linear(self.classifier(x), self.upsampled)
