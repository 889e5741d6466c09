"""Networks of MCKD: the any-subset multi-modal segmentation network and its building blocks."""

from __future__ import annotations

from mckd.networks.feature_tap import FeatureTap, capture_features
from mckd.networks.fusion import mean_fill, scale_modalities
from mckd.networks.segnet import MultiModalSegNet

__all__ = ["FeatureTap", "capture_features", "mean_fill", "scale_modalities", "MultiModalSegNet"]
