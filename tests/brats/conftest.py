"""Shared builders for the BraTS tests: tiny NIfTI and DICOM files, and a stand-in segmentation network."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch

from mckd.availability import unpack_available
from tests.dicom_builders import lps_series_affine_ras, write_dicom_series


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Save ``data`` as NIfTI (creating folders) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


class ThresholdNet(torch.nn.Module):
    """Stand-in for the network contract: packed ``[B, 2M, *S]`` -> logits ``[B, 3, *S]``.

    Region channel ``r`` is predicted where modality ``r`` (FLAIR -> ET, T1 -> TC, T1ce -> WT) is above 0.5 and
    available; T2 is ignored. Predictions are therefore checkable by hand.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        image, available = unpack_available(x, 4)
        flags = available[:, :3].to(image.dtype).reshape(*available[:, :3].shape, *([1] * (image.ndim - 2)))
        return torch.where(flags > 0, 20.0 * (image[:, :3] - 0.5), torch.full_like(image[:, :3], -10.0))


@pytest.fixture
def threshold_net() -> ThresholdNet:
    return ThresholdNet()


@pytest.fixture
def helpers() -> SimpleNamespace:
    """The builders above, for tests (pytest's importlib mode does not let tests import conftest)."""
    return SimpleNamespace(
        write_nifti=write_nifti,
        write_dicom_series=write_dicom_series,
        lps_series_affine_ras=lps_series_affine_ras,
    )


@pytest.fixture(scope="session")
def net_factory() -> type[ThresholdNet]:
    """The stand-in network class, for module-scoped fixtures."""
    return ThresholdNet
