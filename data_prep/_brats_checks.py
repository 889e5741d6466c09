"""Check one case's files: present, readable, 3D/4D, same grid, real-valued, finite, non-empty, valid label values."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from mckd.brats.conventions import MODALITIES, MODALITY_DISPLAY_NAMES, LabelConvention

from ._brats_discovery import CaseFiles

__all__ = ["AFFINE_TOLERANCE_MM", "Problem", "CaseCheck", "check_case"]

#: Largest difference allowed between two files' 4x4 affines, element-wise (mm for the translation column).
AFFINE_TOLERANCE_MM = 1e-3
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError)


@dataclass(frozen=True)
class Problem:
    """Why one file of one case cannot be used.

    Attributes:
        case_id: the case.
        file: the file, relative to the dataset root where possible.
        reason: what is wrong, in words.
    """

    case_id: str
    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.case_id}: {self.file}: {self.reason}"


@dataclass(frozen=True)
class CaseCheck:
    """The outcome of checking one case.

    Attributes:
        case: the case's files.
        problems: every problem found; empty when the case is usable.
        available: per modality (:data:`MODALITIES` order), whether its file is present.
        has_enhancing: whether the label holds enhancing tumour (None without a usable label).
    """

    case: CaseFiles
    problems: tuple[Problem, ...]
    available: tuple[bool, ...]
    has_enhancing: bool | None


class _CaseChecker:
    """Collects the problems of one case while its files are read one at a time."""

    def __init__(self, case: CaseFiles, root: Path, convention: LabelConvention, allow_missing: bool) -> None:
        self.case, self.root, self.convention, self.allow_missing = case, root, convention, allow_missing
        self.problems: list[Problem] = []
        self.reference: tuple[Path, tuple[int, ...], np.ndarray] | None = None

    def report(self, path: Path, reason: str) -> None:
        """Record a problem with ``path``."""
        try:
            shown = path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            shown = str(path)
        self.problems.append(Problem(self.case.case_id, shown, reason))

    def read(self, path: Path, ndim: int, channels: int | None = None) -> np.ndarray | None:
        """Voxel data of ``path`` after the header checks, or None (problem recorded) when unusable."""
        try:
            image = nib.load(path)
        except _READ_ERRORS as err:
            self.report(path, f"unreadable file ({type(err).__name__}: {err})")
            return None
        shape = tuple(int(n) for n in image.shape)
        if len(shape) != ndim or (channels is not None and shape[-1] != channels):
            wanted = f"{ndim}D" + (f" with {channels} channels last" if channels else "")
            self.report(path, f"wrong dimensionality: shape {shape}, expected {wanted}")
            return None
        self.compare_grid(path, shape[:3], image.affine)
        dtype = image.get_data_dtype()
        if dtype.kind in "bc":
            self.report(path, f"unsupported data type {dtype} (expected integer or floating-point voxels)")
            return None
        try:
            return np.asanyarray(image.dataobj)
        except _READ_ERRORS as err:
            self.report(path, f"unreadable file, corrupt or truncated ({type(err).__name__}: {err})")
            return None

    def compare_grid(self, path: Path, shape: tuple[int, ...], affine: np.ndarray) -> None:
        """Compare ``path``'s spatial shape and affine with the first file read of this case."""
        if self.reference is None:
            self.reference = (path, shape, affine)
            return
        ref_path, ref_shape, ref_affine = self.reference
        if shape != ref_shape:
            self.report(path, f"shape {shape} differs from {ref_path.name}'s {ref_shape}")
        elif not np.allclose(affine, ref_affine, rtol=0, atol=AFFINE_TOLERANCE_MM):
            worst = float(np.abs(affine - ref_affine).max())
            self.report(
                path, f"affine differs from {ref_path.name}'s by up to {worst:.4g} (tolerance {AFFINE_TOLERANCE_MM})"
            )

    def check_image_voxels(self, path: Path, data: np.ndarray, what: str = "volume") -> None:
        """Report non-finite voxels and an all-zero volume."""
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            self.report(path, f"{what} contains {int((~np.isfinite(data)).sum())} NaN/Inf voxels")
        elif not data.any():
            self.report(path, f"{what} is all zero")

    def check_label_voxels(self, path: Path, data: np.ndarray) -> bool | None:
        """Report label values outside the convention; return whether enhancing tumour is present."""
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            self.report(path, f"label contains {int((~np.isfinite(data)).sum())} NaN/Inf voxels")
            return None
        values = _distinct_values(data)
        unexpected = sorted(v for v in values if v not in self.convention.valid_values)
        if unexpected:
            allowed = ", ".join(str(v) for v in sorted(self.convention.valid_values))
            shown = ", ".join(f"{v:g}" for v in unexpected)
            self.report(
                path, f"unexpected label values {shown} for convention {self.convention.name} (allowed {allowed})"
            )
            return None
        return any(v in values for v in self.convention.regions["ET"])


def _distinct_values(data: np.ndarray) -> set[float]:
    """The distinct values of a label map; fast for small non-negative integer labels."""
    if data.dtype.kind in "ui" and data.size and 0 <= data.min() and data.max() < 256:
        return {float(v) for v in np.flatnonzero(np.bincount(data.ravel()))}
    return {float(v) for v in np.unique(data)}


def _check_per_modality(checker: _CaseChecker) -> tuple[bool, ...]:
    """Check the four modality files of a BraTS case; return which are present."""
    case = checker.case
    available = tuple(path.is_file() for path in case.images)
    for modality, path, present in zip(MODALITIES, case.images, available):
        if not present:
            if not checker.allow_missing:
                checker.report(path, f"missing file ({MODALITY_DISPLAY_NAMES[modality]})")
            continue
        data = checker.read(path, ndim=3)
        if data is not None:
            checker.check_image_voxels(path, data)
    if not any(available) and checker.allow_missing:
        checker.report(case.images[0].parent, "no modality file found")
    return available


def _check_four_d(checker: _CaseChecker, path: Path) -> tuple[bool, ...]:
    """Check the 4D image of an MSD case (channels in :data:`MODALITIES` order)."""
    if not path.is_file():
        checker.report(path, "missing file")
        return (False,) * len(MODALITIES)
    data = checker.read(path, ndim=4, channels=len(MODALITIES))
    if data is not None:
        for channel, modality in enumerate(MODALITIES):
            checker.check_image_voxels(path, data[..., channel], f"channel {channel} ({MODALITY_DISPLAY_NAMES[modality]})")
    return (True,) * len(MODALITIES)


def check_case(case: CaseFiles, root: Path, convention: LabelConvention, allow_missing: bool = False) -> CaseCheck:
    """Check every file of ``case``.

    Files are read one at a time: the header first (shape, dimensionality, affine against the case's first file,
    within :data:`AFFINE_TOLERANCE_MM`), then the voxels (NaN/Inf, all-zero image, label values of ``convention``).

    Args:
        case: the case's files.
        root: dataset root; problem file names are shown relative to it.
        convention: the label convention the label map must follow.
        allow_missing: an absent modality file is recorded in ``available`` instead of being a problem.
    """
    checker = _CaseChecker(case, root, convention, allow_missing)
    has_enhancing = None
    if case.label is not None:
        if not case.label.is_file():
            checker.report(case.label, "missing file (label)")
        else:
            data = checker.read(case.label, ndim=3)
            has_enhancing = None if data is None else checker.check_label_voxels(case.label, data)
    if isinstance(case.images, Path):
        available = _check_four_d(checker, case.images)
    else:
        available = _check_per_modality(checker)
    return CaseCheck(case, tuple(checker.problems), available, has_enhancing)
