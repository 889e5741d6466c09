"""The published MCKD backbone: 3D ResNet-50 + ASPP encoder and an additive-skip decoder (mckd_method §1.2).

Written by hand because MONAI has no weight-standardised ResNet and its ``SimpleASPP`` lacks the image-pooling
branch. Every convolution except the transposed ones and the classifier is weight-standardised and bias-free;
norms are ``InstanceNorm3d(affine=True)``, activations ``LeakyReLU(0.01)``; convolutions start from Kaiming-normal
(fan-out) weights.

One deliberate change (bug B6 of the published code): the ASPP image-pooling branch has no norm. An instance norm
over a 1x1x1 pooled tensor raises in current PyTorch and, once patched, outputs only its bias, so the published
branch carries no information. Without it, the branch is ``global mean -> 1x1x1 conv -> LeakyReLU -> upsample``.

With the unused attention module of the published code left out, the segmentation network for 4 modalities and 3
outputs has 43,656,160 parameters (published: 43,719,676 including a 63,000-parameter attention module, 4
importance logits and the 512 parameters of the B6 norm).
"""

from __future__ import annotations

import torch
from monai.networks.layers import Act, Norm
from torch import nn

from mckd.networks.stages import SkipAddStage, SkipDecoder
from mckd.networks.ws_conv import WeightStandardizedConv3d

__all__ = ["ResNetASPPEncoder", "ResNetASPPDecoder", "ASPP"]

_EXPANSION = 4


def _norm(channels: int) -> nn.Module:
    return Norm[Norm.INSTANCE, 3](channels, affine=True)


def _act() -> nn.Module:
    return Act[Act.LEAKYRELU](negative_slope=0.01)


def _conv_norm_act(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1
) -> nn.Sequential:
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        WeightStandardizedConv3d(in_channels, out_channels, kernel_size, stride, padding, dilation),
        _norm(out_channels),
        _act(),
    )


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")


class Bottleneck(nn.Module):
    """ResNet bottleneck block (1x1x1, 3x3x3 with the stride, 1x1x1 to ``4 * planes``) with a projection shortcut.

    Args:
        in_channels: input channels.
        planes: inner width; the output has ``4 * planes`` channels.
        stride: stride of the 3x3x3 convolution and of the shortcut. Default 1.
    """

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * _EXPANSION
        self.conv1 = _conv_norm_act(in_channels, planes, 1)
        self.conv2 = _conv_norm_act(planes, planes, 3, stride)
        self.conv3 = nn.Sequential(WeightStandardizedConv3d(planes, out_channels, 1), _norm(out_channels))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                WeightStandardizedConv3d(in_channels, out_channels, 1, stride), _norm(out_channels)
            )
        self.act = _act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3x3 convolutions, identity shortcut) used by the decoder.

    Args:
        channels: input and output channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv_norm_act(channels, channels, 3)
        self.conv2 = nn.Sequential(WeightStandardizedConv3d(channels, channels, 3, padding=1), _norm(channels))
        self.act = _act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + x)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1x1, three dilated 3x3x3 and an image-pooling branch, concatenated, projected.

    Args:
        channels: input and output channels. Default 256.
        dilations: dilations of the 3x3x3 branches. Default ``(2, 4, 8)``.
    """

    def __init__(self, channels: int = 256, dilations: tuple[int, int, int] = (2, 4, 8)) -> None:
        super().__init__()
        branches = [_conv_norm_act(channels, channels, 1)]
        branches += [_conv_norm_act(channels, channels, 3, dilation=d) for d in dilations]
        self.branches = nn.ModuleList(branches)
        # no norm here: an instance norm of a 1x1x1 tensor carries no information (bug B6, module docstring)
        self.image_pool = nn.Sequential(WeightStandardizedConv3d(channels, channels, 1), _act())
        self.project = _conv_norm_act(channels * (len(branches) + 1), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [branch(x) for branch in self.branches]
        pooled = self.image_pool(x.mean(dim=[2, 3, 4], keepdim=True))
        outputs.append(pooled.expand(-1, -1, x.shape[2], x.shape[3], x.shape[4]))
        return self.project(torch.cat(outputs, dim=1))


class ResNetASPPEncoder(nn.Module):
    """Shared per-modality encoder: ``[N, 1, *S]`` -> ``[stem, layer1, layer2, layer3, aspp]``.

    Stem: 7x7x7 convolution with stride (1, 2, 2); then a 3x3x3 max-pool with stride 2 and ResNet-50 layers of
    (3, 4, 6, 3) bottleneck blocks with widths 64/128/256/320 (strides 1, 2, 2, 2); layer4 is reduced to 256
    channels and passed through :class:`ASPP`. The ASPP output is the bottleneck feature. The total stride is
    (16, 32, 32); the bottleneck of a training forward needs more than one voxel (instance norm), so the smallest
    crop is 32x32x32.

    Args:
        layers: bottleneck blocks per ResNet layer. Default ``(3, 4, 6, 3)`` (ResNet-50).
        widths: inner widths per ResNet layer. Default ``(64, 128, 256, 320)``.
        feature_channels: channels of the ASPP (the bottleneck feature). Default 256.
    """

    def __init__(
        self,
        layers: tuple[int, int, int, int] = (3, 4, 6, 3),
        widths: tuple[int, int, int, int] = (64, 128, 256, 320),
        feature_channels: int = 256,
    ) -> None:
        super().__init__()
        stem_channels = 64
        self.stem = nn.Sequential(
            WeightStandardizedConv3d(1, stem_channels, 7, stride=(1, 2, 2), padding=3), _norm(stem_channels), _act()
        )
        self.pool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        stages = []
        in_channels = stem_channels
        for i, (blocks, planes) in enumerate(zip(layers, widths)):
            stride = 1 if i == 0 else 2
            stage = [Bottleneck(in_channels, planes, stride)]
            in_channels = planes * _EXPANSION
            stage += [Bottleneck(in_channels, planes) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
        self.stages = nn.ModuleList(stages)
        self.reduce = _conv_norm_act(in_channels, feature_channels, 1)
        self.aspp = ASPP(feature_channels)
        self.skip_channels: list[int] = [stem_channels] + [w * _EXPANSION for w in widths[:-1]]
        self.feature_channels: int = feature_channels
        self.total_stride: list[int] = [16, 32, 32]
        _init_weights(self)

    def blocks(self) -> list[nn.Module]:
        """The units that activation checkpointing recomputes: stem, every bottleneck, reduction and ASPP."""
        units: list[nn.Module] = [self.stem]
        for stage in self.stages:
            units += list(stage)
        return units + [self.reduce, self.aspp]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outputs = [x]
        x = self.pool(x)
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        outputs[-1] = self.aspp(self.reduce(x))
        return outputs


class ResNetASPPDecoder(SkipDecoder):
    """The published decoder as a :class:`~mckd.networks.stages.SkipDecoder`: 4 stages of ``ConvTranspose3d(k=2, s=2)``
    + projected multi-modal skip + ``BasicBlock``.

    Widths 256/128/64/32; a bias-free 1x1x1 classifier and a trilinear x(1, 2, 2) upsample to the input resolution.

    Args:
        num_modalities: number of modalities ``M`` whose features are concatenated.
        out_channels: number of output (region) channels.
        skip_channels: per-modality skip channels, shallow to deep. Default ``(64, 256, 512, 1024)``.
        feature_channels: per-modality bottleneck channels. Default 256.
        widths: decoder widths, deep to shallow. Default ``(256, 128, 64, 32)``.
    """

    def __init__(
        self,
        num_modalities: int,
        out_channels: int,
        skip_channels: tuple[int, ...] = (64, 256, 512, 1024),
        feature_channels: int = 256,
        widths: tuple[int, ...] = (256, 128, 64, 32),
    ) -> None:
        stages = []
        c_deep = num_modalities * feature_channels
        for c_skip, width in zip(reversed(skip_channels), widths):
            stages.append(
                SkipAddStage(
                    upsample=nn.ConvTranspose3d(c_deep, width, kernel_size=2, stride=2, bias=False),
                    project=_conv_norm_act(num_modalities * c_skip, width, 1),
                    refine=BasicBlock(width),
                )
            )
            c_deep = width
        super().__init__(stages, nn.Conv3d(c_deep, out_channels, kernel_size=1, bias=False), [False, True, True])
        _init_weights(self)
