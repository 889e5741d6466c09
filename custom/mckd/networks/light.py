"""A small CPU-friendly backbone with the structure of the published one (see :mod:`mckd.networks.resnet_aspp`).

Encoder: a stride-2 stem convolution on the 1-channel modality volume (the published stem also halves the
resolution), then residual units that halve it again, all with instance norm and LeakyReLU(0.01) (MONAI
``Convolution`` / ``ResidualUnit``). Its deepest output is the per-modality bottleneck feature used for distillation
and mean fill; the others are the skips. The decoder mirrors it with transposed convolutions and additive
multi-modal skips (:class:`~mckd.networks.stages.SkipDecoder`), classifies at half resolution and upsamples the
logits trilinearly, as the published decoder does. Nothing runs at full resolution on more than one channel, which
keeps a 4 x 64^3 training step within about a second on two CPU threads.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.blocks import Convolution, ResidualUnit
from torch import nn

from mckd.networks.stages import SkipAddStage, SkipDecoder

__all__ = ["LightEncoder", "LightDecoder"]

_NORM = ("instance", {"affine": True})
_ACT = ("leakyrelu", {"negative_slope": 0.01})


def _check_filters(filters: Sequence[int]) -> list[int]:
    filters = [int(f) for f in filters]
    if len(filters) < 2 or min(filters) < 1:
        raise ValueError(f"filters needs at least two positive channel counts (skips + bottleneck); got {filters}.")
    return filters


class LightEncoder(nn.Module):
    """Shared per-modality encoder: ``[N, 1, *S]`` -> ``[skip_0, ..., skip_{L-2}, bottleneck]``.

    Level ``i`` has ``filters[i]`` channels at stride ``2**(i + 1)``; the last level is the bottleneck. Level 0 is the
    stride-2 stem convolution; each deeper level is ``units_per_level`` residual units, the first one strided. The
    encoder is deliberately deeper than the decoder: its cost is paid once per available modality, the decoder's
    once per sample.

    Args:
        filters: channels per level, shallow to deep. Default ``(8, 16, 32, 64)`` (total stride 16).
        units_per_level: residual units per level after the stem. Default 2.
        subunits: convolutions per residual unit. Default 2.

    Raises:
        ValueError: when ``filters`` has fewer than two entries or a non-positive one, or ``units_per_level < 1``.
    """

    def __init__(self, filters: Sequence[int] = (8, 16, 32, 64), units_per_level: int = 2, subunits: int = 2) -> None:
        super().__init__()
        filters = _check_filters(filters)
        if units_per_level < 1:
            raise ValueError(f"units_per_level must be >= 1, got {units_per_level}.")
        self.skip_channels: list[int] = filters[:-1]
        self.feature_channels: int = filters[-1]
        self.total_stride: list[int] = [2 ** len(filters)] * 3
        levels = [Convolution(3, 1, filters[0], strides=2, kernel_size=3, norm=_NORM, act=_ACT, bias=False)]
        for c_in, c_out in zip(filters[:-1], filters[1:]):
            units = [ResidualUnit(3, c_in, c_out, strides=2, subunits=subunits, norm=_NORM, act=_ACT)]
            units += [
                ResidualUnit(3, c_out, c_out, strides=1, subunits=subunits, norm=_NORM, act=_ACT)
                for _ in range(units_per_level - 1)
            ]
            levels.append(nn.Sequential(*units))
        # The published KD feature is the ASPP output after instance norm + LeakyReLU. Ending the bottleneck the same
        # way fixes the features' scale: behind the decoder's instance norms the network is scale-invariant, so an
        # unnormalised residual sum drifts with the weights' norm and the L1 distillation term grows with it.
        levels[-1].append(Convolution(3, filters[-1], filters[-1], kernel_size=1, norm=_NORM, act=_ACT, bias=False))
        self.levels = nn.ModuleList(levels)

    def blocks(self) -> list[nn.Module]:
        """The units that activation checkpointing recomputes: the stem and every residual unit."""
        units: list[nn.Module] = [self.levels[0]]
        for level in list(self.levels)[1:]:
            units += list(level)
        return units

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs: list[torch.Tensor] = []
        for level in self.levels:
            x = level(x)
            outputs.append(x)
        return outputs


class LightDecoder(SkipDecoder):
    """The light backbone's :class:`~mckd.networks.stages.SkipDecoder`: per level a transposed convolution, the
    projected skip and one 3x3x3 convolution; 1x1x1 classifier at stride 2, trilinear x2 upsample.

    Args:
        num_modalities: number of modalities ``M`` whose features are concatenated.
        out_channels: number of output (region) channels.
        filters: the encoder's ``filters``.

    Raises:
        ValueError: when ``filters`` has fewer than two entries or a non-positive one.
    """

    def __init__(self, num_modalities: int, out_channels: int, filters: Sequence[int] = (8, 16, 32, 64)) -> None:
        filters = _check_filters(filters)
        stages = []
        c_deep = num_modalities * filters[-1]
        for c_skip in reversed(filters[:-1]):
            stages.append(
                SkipAddStage(
                    upsample=Convolution(
                        3,
                        c_deep,
                        c_skip,
                        strides=2,
                        kernel_size=2,
                        padding=0,
                        output_padding=0,
                        is_transposed=True,
                        conv_only=True,
                        bias=False,
                    ),
                    project=Convolution(
                        3, num_modalities * c_skip, c_skip, kernel_size=1, norm=_NORM, act=_ACT, bias=False
                    ),
                    refine=Convolution(3, c_skip, c_skip, kernel_size=3, norm=_NORM, act=_ACT, bias=False),
                )
            )
            c_deep = c_skip
        classifier = Convolution(3, filters[0], out_channels, kernel_size=1, conv_only=True)
        super().__init__(stages, classifier, [True, True, True])
