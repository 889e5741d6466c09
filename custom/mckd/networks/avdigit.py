"""Audio-visual digit classifier for AV-MNIST with the MCKD fusion (image + spoken digit -> digit class).

Each modality has its own encoder, following the SMIL reference networks of the AV-MNIST protocol (mckd_method §4):

- image: LeNet-5 as in SMIL (conv 5x5 1->5, max-pool 2, ReLU; conv 5x5 5->10, dropout, max-pool 2, ReLU), then a
  linear projection + ReLU to ``feature_size``;
- audio: SMIL's MFCC network (three 2x2 convolutions 1->32->48->20, each with batch norm and ReLU; max-pool kernel 2,
  stride 4; dropout), then a linear projection + ReLU to ``feature_size``.

Fusion (the same rule as the BraTS network): the per-modality features ``[B, 2, d]`` (zeros for missing modalities)
pass through the network's one :class:`~mckd.networks.feature_tap.FeatureTap` (the distillation features), missing
modalities' features are filled with the mean of the available ones (:func:`~mckd.networks.fusion.mean_fill`; with
two modalities that is a copy of the other), optionally scaled per modality (the meta-update's ``modality_scale``),
concatenated in :data:`~mckd.avmnist.conventions.MODALITIES` order and classified (linear, ReLU, dropout, linear).

Missing modalities are never encoded: each encoder runs only on the samples that have its modality, so the output
never depends on a missing input's values, batch-norm statistics see only real audio, and compute shrinks with the
number of missing inputs.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mckd.avmnist.conventions import AUDIO_INDEX, IMAGE_INDEX, IMAGE_SHAPE, MFCC_SHAPE, NUM_CLASSES, NUM_MODALITIES
from mckd.networks.feature_tap import FeatureTap
from mckd.availability import resolve_available
from mckd.networks.fusion import available_pairs, mean_fill, scale_modalities

__all__ = ["LeNetImageEncoder", "MFCCAudioEncoder", "AVDigitNet"]


def _flat_size(module: nn.Module, shape: Sequence[int]) -> int:
    """Number of features ``module`` produces per sample of channel-first ``shape``."""
    with torch.no_grad():
        return int(module(torch.zeros(2, *shape)).flatten(1).shape[1])


class LeNetImageEncoder(nn.Module):
    """SMIL's LeNet-5 image encoder followed by a projection to ``feature_size`` (``[N, 1, H, W]`` -> ``[N, d]``).

    Args:
        feature_size: output feature size ``d``.
        image_shape: channel-first input shape. Default ``(1, 28, 28)``.
        dropout: dropout of the second convolution (SMIL: 0.5).
    """

    def __init__(self, feature_size: int, image_shape: Sequence[int] = IMAGE_SHAPE, dropout: float = 0.5) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(image_shape[0], 5, kernel_size=5),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Conv2d(5, 10, kernel_size=5),
            nn.Dropout2d(dropout),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.project = nn.Sequential(nn.Linear(_flat_size(self.trunk, image_shape), feature_size), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.trunk(x))


class MFCCAudioEncoder(nn.Module):
    """SMIL's MFCC audio encoder followed by a projection to ``feature_size`` (``[N, 1, F, T]`` -> ``[N, d]``).

    Args:
        feature_size: output feature size ``d``.
        audio_shape: channel-first input shape. Default ``(1, 20, 20)`` (20 MFCC x 20 frames).
        dropout: dropout after pooling (SMIL: 0.25).
    """

    def __init__(self, feature_size: int, audio_shape: Sequence[int] = MFCC_SHAPE, dropout: float = 0.25) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in zip((audio_shape[0], 32, 48), (32, 48, 20)):
            layers += [nn.Conv2d(c_in, c_out, kernel_size=2), nn.BatchNorm2d(c_out), nn.ReLU()]
        self.trunk = nn.Sequential(*layers, nn.MaxPool2d(kernel_size=2, stride=4), nn.Dropout(dropout), nn.Flatten())
        self.trunk.eval()  # batch norm in eval mode while sizing, so the dummy pass leaves no running statistics
        self.project = nn.Sequential(nn.Linear(_flat_size(self.trunk, audio_shape), feature_size), nn.ReLU())
        self.trunk.train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.trunk(x))


class AVDigitNet(nn.Module):
    """Digit logits ``[B, 10]`` from an image and a spoken-digit MFCC, either of which may be missing.

    Args:
        feature_size: common per-modality feature size ``d`` (the distillation features). Default 64.
        hidden_size: width of the classifier's hidden layer. Default 64 (SMIL's fusion layer).
        num_classes: number of classes. Default 10.
        image_shape: channel-first image shape. Default ``(1, 28, 28)``.
        audio_shape: channel-first audio shape. Default ``(1, 20, 20)``.
        image_dropout: dropout inside the image encoder (SMIL 0.5).
        audio_dropout: dropout inside the audio encoder (SMIL 0.25).
        classifier_dropout: dropout of the classifier's hidden layer (SMIL 0.5).

    Raises:
        ValueError: when a size is not positive.
    """

    def __init__(
        self,
        feature_size: int = 64,
        hidden_size: int = 64,
        num_classes: int = NUM_CLASSES,
        image_shape: Sequence[int] = IMAGE_SHAPE,
        audio_shape: Sequence[int] = MFCC_SHAPE,
        image_dropout: float = 0.5,
        audio_dropout: float = 0.25,
        classifier_dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if min(feature_size, hidden_size, num_classes) < 1:
            raise ValueError(
                "feature_size, hidden_size and num_classes must be >= 1; "
                f"got {feature_size}, {hidden_size}, {num_classes}."
            )
        self.num_modalities = NUM_MODALITIES
        self.feature_size = feature_size
        self.image_shape = tuple(image_shape)
        self.audio_shape = tuple(audio_shape)
        self.image_encoder = LeNetImageEncoder(feature_size, image_shape, image_dropout)
        self.audio_encoder = MFCCAudioEncoder(feature_size, audio_shape, audio_dropout)
        self.feature_tap = FeatureTap()
        self.classifier = nn.Sequential(
            nn.Linear(NUM_MODALITIES * feature_size, hidden_size),
            nn.ReLU(),
            nn.Dropout(classifier_dropout),
            nn.Linear(hidden_size, num_classes),
        )

    def _check(self, image: torch.Tensor, audio: torch.Tensor) -> None:
        for name, x, shape in (("image", image, self.image_shape), ("audio", audio, self.audio_shape)):
            if x.ndim != 4 or tuple(x.shape[1:]) != shape:
                raise ValueError(f"{name} must have shape [B, {', '.join(map(str, shape))}]; got {list(x.shape)}.")
        if image.shape[0] != audio.shape[0]:
            raise ValueError(
                f"image and audio must agree on the batch: got {list(image.shape)} and {list(audio.shape)}."
            )

    def encode(self, image: torch.Tensor, audio: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        """Per-modality features ``[B, 2, d]``; rows of missing modalities are zeros and their inputs are never read."""
        features = image.new_zeros(image.shape[0], self.num_modalities, self.feature_size)
        for index, encoder, x in ((IMAGE_INDEX, self.image_encoder, image), (AUDIO_INDEX, self.audio_encoder, audio)):
            present = available[:, index]
            if bool(present.any()):
                features = features.index_put((present.nonzero().flatten(), torch.tensor(index)), encoder(x[present]))
        return features

    def forward(
        self,
        image: torch.Tensor,
        audio: torch.Tensor,
        available: torch.Tensor | None = None,
        modality_scale: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Class logits.

        Args:
            image: ``[B, 1, 28, 28]`` images (any values where the image is missing; they are never read).
            audio: ``[B, 1, 20, 20]`` MFCCs (any values where the audio is missing; they are never read).
            available: boolean ``[B, 2]`` in ``("image", "audio")`` order; ``None`` means both modalities are present
                for every sample (:func:`mckd.availability.resolve_available`; the inputs carry no flags, and the
                network never guesses availability from their values).
            modality_scale: optional ``[2]`` or ``[B, 2]`` factors applied to each modality's fused feature (the
                meta-update's forward); gradients flow to it.

        Raises:
            ValueError: on wrong shapes or a sample without any available modality.
        """
        self._check(image, audio)
        available = resolve_available(available, image.shape[0], self.num_modalities, image.device)
        pairs = available_pairs(available)
        features = self.feature_tap(self.encode(image, audio, available))
        fused = mean_fill(features, pairs)
        if modality_scale is not None:
            fused = scale_modalities(fused, modality_scale)
        return self.classifier(fused.flatten(1))
