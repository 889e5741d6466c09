"""Shared builders for the BraTS tests: tiny NIfTI and DICOM files, and a stand-in segmentation network."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from mckd.availability import unpack_available


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Save ``data`` as NIfTI (creating folders) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def write_dicom_series(folder: Path, volume: np.ndarray, spacing: tuple[float, float, float], origin_lps) -> Path:
    """Write ``volume[x, y, z]`` (int16) as an axial MR series, one file per z slice, in patient LPS coordinates.

    Column index = x along L, row index = y along P, slices along S starting at ``origin_lps``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.PatientName, ds.Modality = "test", "test", "MR"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin_lps[0], origin_lps[1], origin_lps[2] + k * spacing[2]]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # (between rows, between columns)
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(volume[:, :, k].T.astype(np.int16)).tobytes()
        ds.save_as(folder / f"slice{k:03d}.dcm", enforce_file_format=True)
    return folder


def lps_series_affine_ras(spacing, origin_lps) -> np.ndarray:
    """The RAS affine of a series written by :func:`write_dicom_series`."""
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [-origin_lps[0], -origin_lps[1], origin_lps[2]]
    return affine


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
