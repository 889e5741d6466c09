"""A tiny network that follows the MCKD network contract, for the core tests."""

from __future__ import annotations


import pytest
import torch
from torch import nn

from mckd.networks.feature_tap import FeatureTap


class ToyMultiModalNet(nn.Module):
    """Shared per-modality encoder -> FeatureTap -> mean-fill of missing modalities -> optional scaling -> head.

    Input ``x[B, M, in_features]``; missing modalities' inputs are never read.
    """

    def __init__(
        self,
        num_modalities: int = 2,
        in_features: int = 4,
        features: int = 8,
        num_classes: int = 3,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.num_modalities = num_modalities
        self.encoder = nn.Linear(in_features, features)
        self.tap = FeatureTap()
        self.norm = nn.BatchNorm1d(num_modalities * features) if batch_norm else nn.Identity()
        self.head = nn.Linear(num_modalities * features, num_classes)

    def forward(
        self, x: torch.Tensor, available: torch.Tensor | None = None, modality_scale: torch.Tensor | None = None
    ) -> torch.Tensor:
        if available is None:
            available = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        mask = available.unsqueeze(-1)
        feats = torch.where(mask, torch.relu(self.encoder(torch.where(mask, x, 0.0))), 0.0)
        feats = self.tap(feats)
        mean = feats.sum(1, keepdim=True) / mask.sum(1, keepdim=True)
        fused = torch.where(mask, feats, mean)
        if modality_scale is not None:
            fused = fused * modality_scale.expand(x.shape[0], self.num_modalities).unsqueeze(-1).to(fused.dtype)
        return self.head(self.norm(fused.flatten(1)))


@pytest.fixture
def toy_net_class():
    return ToyMultiModalNet


def make_classification_data(
    num_samples: int,
    num_modalities: int = 2,
    in_features: int = 4,
    num_classes: int = 3,
    informative: int = 0,
    seed: int = 0,
) -> list[dict]:
    """Samples whose modality ``informative`` encodes the class (one-hot + noise); the others are pure noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (num_samples,), generator=g)
    x = torch.randn(num_samples, num_modalities, in_features, generator=g)
    x[:, informative] = 0.3 * x[:, informative]
    x[torch.arange(num_samples), informative, labels] += 2.0
    return [{"image": x[i], "label": labels[i]} for i in range(num_samples)]


@pytest.fixture
def classification_data():
    return make_classification_data
