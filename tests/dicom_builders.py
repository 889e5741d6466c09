"""Test data builders shared by several test folders: DICOM MR series written with pydicom, and whole MR studies of
one patient (one series per sequence, on different grids, with the names scanners give them) for the PACS tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from scipy.ndimage import map_coordinates

AXIAL: tuple[tuple[float, float, float], tuple[float, float, float]] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
#: Rows along P, columns going down (inferior): slices run from patient left to right.
SAGITTAL: tuple[tuple[float, float, float], tuple[float, float, float]] = ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0))


def write_dicom_series(
    folder: Path,
    volume: np.ndarray,
    spacing: tuple[float, float, float],
    origin_lps=(0.0, 0.0, 0.0),
    *,
    orientation: tuple[Sequence[float], Sequence[float]] = AXIAL,
    tags: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``volume[i, j, k]`` (int16) as an MR series, one file per slice ``k``, in patient LPS coordinates.

    Index ``i`` is the column (along ``orientation[0]``, the row direction), ``j`` the row (along ``orientation[1]``),
    ``k`` the slice (along their cross product), starting at ``origin_lps``; ``spacing`` is in that ``(i, j, k)``
    order. The default orientation is axial: columns along L, rows along P, slices along S. ``tags`` (DICOM keywords)
    are set on every slice after the defaults: the study, series and frame-of-reference UIDs, names and numbers of a
    series that belongs to a study (without them, each call writes a new study).
    """
    folder.mkdir(parents=True, exist_ok=True)
    row, column = np.asarray(orientation[0], float), np.asarray(orientation[1], float)
    normal = np.cross(row, column)
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
        ds.ImageOrientationPatient = [float(v) for v in (*row, *column)]
        position = np.asarray(origin_lps, float) + k * spacing[2] * normal
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # (between rows, between columns)
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        for keyword, value in (tags or {}).items():
            setattr(ds, keyword, value)
        ds.PixelData = np.ascontiguousarray(volume[:, :, k].T.astype(np.int16)).tobytes()
        ds.save_as(folder / f"slice{k:03d}.dcm", enforce_file_format=True)
    return folder


def lps_series_affine_ras(spacing, origin_lps) -> np.ndarray:
    """The RAS affine of an axial series written by :func:`write_dicom_series`."""
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [-origin_lps[0], -origin_lps[1], origin_lps[2]]
    return affine


@dataclass(frozen=True)
class SeriesGrid:
    """The voxel grid of one series: ``shape`` and ``spacing`` in (column, row, slice) order, LPS origin and
    orientation as :func:`write_dicom_series` takes them."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin_lps: tuple[float, float, float] = (0.0, 0.0, 0.0)
    orientation: tuple[Sequence[float], Sequence[float]] = AXIAL

    def affine_lps(self) -> np.ndarray:
        """Voxel ``(i, j, k)`` -> patient LPS, mm."""
        row, column = np.asarray(self.orientation[0], float), np.asarray(self.orientation[1], float)
        affine = np.eye(4)
        affine[:3, 0], affine[:3, 1], affine[:3, 2] = row, column, np.cross(row, column)
        affine[:3, :3] = affine[:3, :3] * np.asarray(self.spacing, float)
        affine[:3, 3] = self.origin_lps
        return affine

    def affine_ras(self) -> np.ndarray:
        """Voxel ``(i, j, k)`` -> RAS, mm (the affine MONAI and nibabel use)."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine_lps()


def sample_on_grid(volume: np.ndarray, grid: SeriesGrid, order: int = 1) -> np.ndarray:
    """``volume`` (voxel ``(x, y, z)`` at LPS ``(x, y, z)`` mm, 1 mm apart) sampled on ``grid``; zero outside."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), axis=0).reshape(3, -1)
    points = grid.affine_lps() @ np.vstack([index, np.ones((1, index.shape[1]))])
    values = map_coordinates(volume.astype(np.float32), points[:3], order=order, mode="constant", cval=0.0)
    return values.reshape(grid.shape)


@dataclass(frozen=True)
class SequenceSpec:
    """One series of a study: the names a scanner writes and its grid."""

    description: str
    protocol: str
    grid: SeriesGrid
    extra_tags: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WrittenSeries:
    """A series written by :func:`write_mr_study`: its UID, folder, grid and SeriesNumber."""

    uid: str
    folder: Path
    grid: SeriesGrid
    number: int
    description: str


@dataclass(frozen=True)
class WrittenStudy:
    """A study written by :func:`write_mr_study`: its UID and its series by name."""

    uid: str
    patient_id: str
    series: Mapping[str, WrittenSeries]

    def files(self) -> list[Path]:
        return sorted(p for s in self.series.values() for p in s.folder.glob("*.dcm"))


#: The four BraTS sequences as scanners name them, on four different grids covering a 48 x 48 x 32 mm volume: FLAIR
#: axial with 2 mm slices, T1 sagittal 1.2 mm, T1ce axial 1 mm isotropic (the finest grid, so the reference),
#: T2 axial 1.5 mm.
SCANNER_SEQUENCES: Mapping[str, SequenceSpec] = {
    "flair": SequenceSpec("AX FLAIR", "AX FLAIR", SeriesGrid((48, 48, 16), (1.0, 1.0, 2.0), (0.0, 0.0, 0.5))),
    "t1": SequenceSpec(
        "t1_mprage_sag_p2_iso",
        "t1_mprage_sag_p2_iso",
        SeriesGrid((40, 26, 40), (1.2, 1.2, 1.2), (47.0, 0.0, 31.0), SAGITTAL),
    ),
    "t1ce": SequenceSpec(
        "T1 POST GAD", "T1 POST GAD", SeriesGrid((48, 48, 32), (1.0, 1.0, 1.0)), {"ContrastBolusAgent": "GADOVIST"}
    ),
    "t2": SequenceSpec("T2W_TSE", "T2W_TSE", SeriesGrid((32, 32, 21), (1.5, 1.5, 1.5), (0.0, 0.0, 0.2))),
}


def write_mr_study(
    root: Path,
    volumes: Mapping[str, np.ndarray],
    sequences: Mapping[str, SequenceSpec],
    patient_id: str,
    study_description: str = "MRI BRAIN WITH AND WITHOUT CONTRAST",
) -> WrittenStudy:
    """Write one patient's MR study: one series per entry of ``sequences`` (name -> spec), numbered from 2.

    Each series samples ``volumes[name]`` (voxel ``(x, y, z)`` at LPS ``(x, y, z)`` mm) on its own grid; a name
    without a volume is filled with the first volume (a localiser or an unrelated sequence). All series share the
    study, the patient and one frame of reference.
    """
    study_uid, frame_uid = generate_uid(), generate_uid()
    fallback = next(iter(volumes.values()))
    written: dict[str, WrittenSeries] = {}
    for number, (name, spec) in enumerate(sequences.items(), start=2):
        series_uid = generate_uid()
        tags = {
            "PatientID": patient_id,
            "PatientName": f"MCKD^{patient_id}",
            "PatientBirthDate": "19700101",
            "PatientSex": "O",
            "StudyInstanceUID": study_uid,
            "StudyID": "1",
            "StudyDate": "20260101",
            "StudyTime": "120000",
            "AccessionNumber": patient_id[:16],
            "StudyDescription": study_description,
            "SeriesInstanceUID": series_uid,
            "SeriesNumber": number,
            "SeriesDescription": spec.description,
            "ProtocolName": spec.protocol,
            "FrameOfReferenceUID": frame_uid,
            "Manufacturer": "MCKD synthetic",
            "MagneticFieldStrength": 3.0,
            "WindowCenter": 800,
            "WindowWidth": 1600,
            **spec.extra_tags,
        }
        volume = sample_on_grid(volumes.get(name, fallback), spec.grid)
        folder = write_dicom_series(
            root / f"{number:02d}_{name}",
            np.round(volume).astype(np.int16),
            spec.grid.spacing,
            spec.grid.origin_lps,
            orientation=spec.grid.orientation,
            tags=tags,
        )
        written[name] = WrittenSeries(series_uid, folder, spec.grid, number, spec.description)
    return WrittenStudy(uid=study_uid, patient_id=patient_id, series=written)
