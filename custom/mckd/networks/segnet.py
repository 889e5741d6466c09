"""Multi-modal segmentation network of MCKD: one shared encoder, per-sample mean fill of missing modalities.

Each modality is encoded as its own 1-channel volume by one encoder shared by all modalities: the ``(sample,
modality)`` pairs are folded into the batch dimension. By default only the available pairs are gathered and
encoded (compute follows the number of available inputs; a missing modality's input is never read) and the results
are scattered back into ``[B, M, C, *F]``. A missing modality's bottleneck feature is then the mean of the same
sample's available ones (:func:`~mckd.networks.fusion.mean_fill`). Its skip features are filled the same way: the
decoder was designed for M skip inputs, and the mean of the available ones is the fill that the bottleneck already
uses, whereas zeros would be a value the encoder never produces. One shared decoder consumes the M fused
bottlenecks and, per scale, the M skip features (concatenated, projected by a 1x1x1 convolution, added).

``paper_exact=True`` reproduces the published forward instead: missing inputs are zeroed and encoded with the
others, only the bottleneck is filled, and the decoder gets the encoder's output on the zero images as skips. The
published code turns its weights into NaN on the first single-modality step from scratch: instance norm of an
all-zero volume has zero variance, so the backward pass through those encodings is multiplied by about
``1 / sqrt(eps)`` per layer until it overflows. In this mode the encodings of missing inputs are therefore detached
from the graph: the forward is unchanged, the encoder just receives no gradient through zero images.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from mckd.availability import split_available
from mckd.networks.checkpointing import checkpoint_blocks, remove_checkpointing
from mckd.networks.conv import use_onednn_conv3d
from mckd.networks.feature_tap import FeatureTap
from mckd.networks.fusion import (
    AvailablePairs,
    available_pairs,
    gather_available,
    mean_fill,
    scale_modalities,
    scatter_available,
)
from mckd.networks.light import LightDecoder, LightEncoder
from mckd.networks.resnet_aspp import ResNetASPPDecoder, ResNetASPPEncoder
from mckd.networks.stages import SkipDecoder

__all__ = ["MultiModalSegNet", "BACKBONES"]

BACKBONES = ("light", "resnet50_aspp")


class MultiModalSegNet(nn.Module):
    """Segment from any non-empty subset of ``M`` single-channel modalities (MCKD / MetaKD).

    ``forward(x, available=None, modality_scale=None)`` returns region logits ``[B, out_channels, *S]`` at the input
    resolution. The per-modality bottleneck features ``[B, M, C, *F]`` (before the fill; zero for missing
    modalities) pass through the single :class:`~mckd.networks.feature_tap.FeatureTap` ``feature_tap``; read them
    with :func:`~mckd.networks.feature_tap.capture_features`.

    Args:
        num_modalities: number of modalities ``M``. Default 4.
        out_channels: number of output (region) channels. Default 3.
        backbone: ``"light"`` (small, CPU-friendly, total stride 16; options ``filters``, default
            ``(8, 16, 32, 64)``, ``units_per_level``, default 2, and ``subunits``, default 2) or ``"resnet50_aspp"``
            (the published 3D ResNet-50 + ASPP, 43,656,160 parameters for 4 modalities and 3 outputs, total stride
            (16, 32, 32), smallest training crop 32^3; options ``layers``, ``widths``, ``feature_channels``).
            Default ``"light"``.
        paper_exact: reproduce the published missing-modality handling (see the module docstring). Default False.
        activation_checkpointing: recompute the encoder's blocks in the backward pass instead of keeping their
            activations (:func:`~mckd.networks.checkpointing.checkpoint_blocks`): less training memory, about one more
            encoder forward per step, the same values and gradients. Inference is unaffected. Default False.
        backbone_options: keyword options of the chosen backbone's encoder.

    Raises:
        ValueError: when ``num_modalities`` or ``out_channels`` is below 1 or ``backbone`` is unknown.
    """

    def __init__(
        self,
        num_modalities: int = 4,
        out_channels: int = 3,
        backbone: str = "light",
        paper_exact: bool = False,
        activation_checkpointing: bool = False,
        **backbone_options: Any,
    ) -> None:
        super().__init__()
        if num_modalities < 1:
            raise ValueError(f"num_modalities must be >= 1, got {num_modalities}.")
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}.")
        if backbone == "light":
            encoder = LightEncoder(**backbone_options)
            decoder: SkipDecoder = LightDecoder(
                num_modalities, out_channels, encoder.skip_channels + [encoder.feature_channels]
            )
        elif backbone == "resnet50_aspp":
            encoder = ResNetASPPEncoder(**backbone_options)
            decoder = ResNetASPPDecoder(
                num_modalities, out_channels, tuple(encoder.skip_channels), encoder.feature_channels
            )
        else:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}.")
        self.num_modalities = num_modalities
        self.out_channels = out_channels
        self.paper_exact = paper_exact
        self.total_stride: list[int] = list(encoder.total_stride)
        self.encoder = encoder
        self.feature_tap = FeatureTap()
        self.decoder = decoder
        use_onednn_conv3d(self)
        if activation_checkpointing:
            checkpoint_blocks(encoder.blocks())

    def __prepare_scriptable__(self) -> MultiModalSegNet:
        """What ``torch.jit.script`` compiles: this network, or a copy without activation checkpointing."""
        if not any("forward" in block.__dict__ for block in self.encoder.blocks()):
            return self
        clone = copy.deepcopy(self)
        remove_checkpointing(clone.encoder.blocks())
        return clone

    def forward(
        self, x: torch.Tensor, available: torch.Tensor | None = None, modality_scale: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Region logits for ``x``.

        Args:
            x: ``[B, M, *S]`` (missing modalities' channels may hold anything), or, with ``available=None``, the
                packed ``[B, 2M, *S]`` tensor of :func:`mckd.availability.pack_available` (single-tensor path for
                inferers, TorchScript and MONAI Label).
            available: boolean ``[B, M]`` mask of present modalities. ``None``: the input says
                (:func:`mckd.availability.split_available`): a packed ``x`` carries its flags, a plain one has every
                modality.
            modality_scale: optional ``[M]`` or ``[B, M]`` factors applied to each modality's fused bottleneck
                feature (the meta-update's forward); gradients flow to it.

        Raises:
            ValueError: on a wrong channel count, mask shape or spatial size, or a sample without any modality.
        """
        if x.ndim != 5:
            raise ValueError(f"expected a 5D input [B, C, D, H, W]; got shape {list(x.shape)}.")
        image, mask = split_available(x, available, self.num_modalities)
        for size, stride in zip(image.shape[2:], self.total_stride):
            if size % stride != 0:
                raise ValueError(
                    f"spatial size {list(image.shape[2:])} must be divisible by the network's total stride "
                    f"{self.total_stride}."
                )
        pairs = available_pairs(mask)
        if self.paper_exact:
            return self._forward_paper_exact(image, pairs, modality_scale)
        encoded = self.encoder(gather_available(image.unsqueeze(2), pairs))
        bottleneck = mean_fill(self.feature_tap(scatter_available(encoded[-1], pairs)), pairs)
        return self._decode(bottleneck, encoded[:-1], modality_scale, pairs)

    def _forward_paper_exact(
        self, image: torch.Tensor, pairs: AvailablePairs, modality_scale: torch.Tensor | None
    ) -> torch.Tensor:
        """Published handling: zeroed missing inputs are encoded too; only the bottleneck is filled."""
        batch, num_modalities = image.shape[0], self.num_modalities
        pair_mask = pairs.mask.reshape(batch * num_modalities, 1, 1, 1, 1)
        volumes = image.reshape([batch * num_modalities, 1] + list(image.shape[2:]))
        features = self.encoder(torch.where(pair_mask, volumes, torch.zeros_like(volumes)))
        if torch.is_grad_enabled():
            # guard against the exploding backward through zero images (module docstring)
            features = [torch.where(pair_mask, f, f.detach()) for f in features]
        features = [f.reshape([batch, num_modalities] + list(f.shape[1:])) for f in features]
        bottleneck = features[-1]
        feature_mask = pairs.mask.reshape(batch, num_modalities, 1, 1, 1, 1)
        bottleneck = torch.where(feature_mask, bottleneck, torch.zeros_like(bottleneck))
        bottleneck = mean_fill(self.feature_tap(bottleneck), pairs)
        return self._decode(bottleneck, [f.flatten(1, 2) for f in features[:-1]], modality_scale, None)

    def _decode(
        self,
        bottleneck: torch.Tensor,
        skips: list[torch.Tensor],
        modality_scale: torch.Tensor | None,
        pairs: AvailablePairs | None,
    ) -> torch.Tensor:
        """Scale the fused bottlenecks ``[B, M, C, *F]`` if asked and decode them with the skips.

        ``skips`` are the concatenated ``[B, M * C_i, *S_i]`` tensors when ``pairs`` is ``None``, else the available
        pairs' encoder outputs, mean-filled inside the decoder's projections.
        """
        if modality_scale is not None:
            bottleneck = scale_modalities(bottleneck, modality_scale)
        return self.decoder(bottleneck.flatten(1, 2), skips, pairs)
