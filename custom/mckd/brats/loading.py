"""Reading a case whose modalities may be missing (NIfTI, other ITK formats, MSD 4D, DICOM series) into one tensor.

:class:`LoadModalities` is the first transform of training, evaluation, inference and the MONAI Label app, and
:func:`check_case` (data preparation) reads a case the same way, so a case is usable for one exactly when it is for
the others. Every check it applies lives in :mod:`mckd.brats.cases`. :class:`PackAvailability` is the last
preprocessing step of single-tensor inference.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, PathLike
from monai.data import MetaTensor
from monai.data.image_reader import ImageReader
from monai.transforms import LoadImage, MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from mckd.availability import pack_available
from mckd.brats.alignment import GRID_MODES, RigidLimits, align_modalities
from mckd.brats.cases import (
    Case,
    CaseError,
    check_dicom_series,
    check_geometry,
    check_header,
    check_input_path,
    check_label_values,
    check_voxels,
    read_header,
)
from mckd.brats.conventions import LAYOUTS, MODALITIES, MODALITY_DISPLAY_NAMES

__all__ = [
    "read_checked",
    "LoadModalities",
    "LoadModalitiesd",
    "CaseVerdict",
    "check_case",
    "PackAvailability",
    "PackAvailabilityd",
]

logger = logging.getLogger(__name__)


def _describe(data: Any) -> str:
    """File name recorded in a MetaTensor's meta, for error messages."""
    meta = getattr(data, "meta", None) or {}
    return str(meta.get("filename_or_obj", "<in memory>"))


def _without_trailing_ones(shape: tuple[int, ...]) -> tuple[int, ...]:
    """``(x, y, z, 1)`` -> ``(x, y, z)``: a 3D volume stored with singleton extra dimensions."""
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _np_dtype(img: torch.Tensor) -> np.dtype:
    """The numpy voxel type of a tensor (``complex`` and ``bool`` kinds kept for :func:`check_header`)."""
    return np.dtype(bool) if img.dtype == torch.bool else np.dtype(str(img.dtype).replace("torch.", ""))


def read_checked(
    loader: LoadImage, path: Path, case_id: str | None, channels: int, modality: str | None = None
) -> MetaTensor:
    """Read one input (channel first) with ``loader`` after the gate and the header checks, and check the result.

    The order is the one boundary of a file input (:mod:`mckd.brats.cases`): :func:`check_input_path` (a regular
    readable file, or a folder for a single-modality input), then the header (:func:`read_header` +
    :func:`check_header` for NIfTI and ITK formats; :func:`check_dicom_series` for a folder), and only then the
    voxels are read and checked.

    Args:
        loader: a channel-first ``LoadImage`` that keeps the stored voxel type (``dtype=None``).
        path: a file or a DICOM series folder.
        case_id: the case, for messages.
        channels: 1 for a single-modality input, ``M`` for a 4D image with the modalities last.
        modality: the modality the input stands for (e.g. ``"FLAIR"``), for messages.

    Raises:
        CaseError: naming the case and the file (see :mod:`mckd.brats.cases` for the checks).
    """
    check_input_path(case_id, path, series_ok=channels == 1)
    if path.is_dir():
        check_dicom_series(path, case_id, modality)
    header = read_header(case_id, path)
    if header is not None:
        shape = _without_trailing_ones(header.shape) if channels == 1 else header.shape
        check_header(case_id, path, shape, header.dtype, channels, header.components)
    try:
        img = loader(str(path))
    except MemoryError as err:
        raise CaseError(case_id, "is too large to be read into memory.", path) from err
    except Exception as err:  # any reader failure becomes a per-case error naming the file
        raise CaseError(case_id, f"cannot be read: {err}", path) from err
    spatial, count = tuple(img.shape[1:]), int(img.shape[0])
    if channels == 1 and count != 1:
        raise CaseError(case_id, f"is not a 3D volume: it holds {count} volumes (one file per modality).", path)
    check_header(case_id, path, spatial if channels == 1 else (*spatial, count), _np_dtype(img), channels)
    if img.is_floating_point():
        check_voxels(case_id, path, img.as_tensor().numpy())
    return img


class LoadModalities(Transform):
    """Load one case whose modalities may be missing: image ``[M, *S]`` (missing channels zero) + ``available[M]``.

    ``paths`` is either
    - a sequence of ``M`` entries in modality order, each a file (NIfTI, MetaImage, NRRD or anything MONAI reads), a
      DICOM series folder, or ``None`` for a missing modality; a path that does not exist counts as missing too
      (unless ``absent_is_missing=False``), or
    - one path to a 4D image whose channels are the ``M`` modalities in order (MSD).

    ``available`` (optional, ``M`` booleans) marks channels to treat as missing even though data exists, e.g. the
    channels of an MSD image a user wants ignored.

    Modalities on different grids (clinical scans): with ``grid="resample"`` or ``"register"`` they are brought onto
    the grid of a reference modality (:mod:`mckd.brats.alignment`) and the output carries the reference's meta, plus
    the :class:`~mckd.brats.alignment.AlignmentReport` as JSON under ``meta["alignment"]``; with ``grid="same"``
    (training data, which data preparation checks) a grid mismatch is a case error.

    Every input is checked with :mod:`mckd.brats.cases` before use: the header (a 3D volume, or a 4D image with the
    ``M`` channels last; integer or floating-point voxels; a plausible size), a DICOM folder's slices (one series,
    evenly spaced), the voxels (no NaN/Inf), and the present modalities' grid (shape and affine within
    :data:`~mckd.brats.cases.GEOMETRY_ATOL_MM`). An all-zero modality is a blank placeholder, treated as missing with
    a warning (``zero_is_missing``). The output keeps the meta (affine, original affine, file name, ...) of the first
    present modality, so ``Orientationd`` + ``Invertd`` bring predictions back to the input's space; the ``case_id``
    is added to the meta.

    Why by hand: MONAI's ``LoadImage`` with a list of files stacks them but cannot represent an absent entry, and does
    not compare the files' geometry. Each file is still read by ``LoadImage``.

    Args:
        reader: a MONAI reader (instance or name such as ``"NibabelReader"``, ``"ITKReader"``) for every file; None
            lets ``LoadImage`` pick per file (NIfTI by nibabel, DICOM folders, MetaImage and NRRD by ITK).
        num_modalities: ``M``. Default 4 (:data:`MODALITIES`).
        absent_is_missing: treat a path that does not exist as a missing modality (default) instead of an error.
        dtype: dtype of the image. Default ``torch.float32``.
        zero_is_missing: treat an all-zero modality as missing, with a warning (default), instead of as a present,
            empty image.
        grid: ``"same"`` (default: one grid required), ``"resample"`` or ``"register"`` (see above).
        reference: the reference modality for ``resample``/``register``: ``"auto"`` (highest resolution, default) or
            a modality key.
        limits: the largest rigid correction ``register`` accepts (:class:`~mckd.brats.alignment.RigidLimits`).
        reader_kwargs: extra arguments for the reader (passed to ``LoadImage``).

    Raises:
        CaseError: naming the case and the file, for any failed check or unreadable input, and when no modality is
            present.
        ValueError: for an unknown ``grid``, or ``resample``/``register`` with other than the BraTS modalities.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        reader: ImageReader | str | None = None,
        num_modalities: int = len(MODALITIES),
        absent_is_missing: bool = True,
        dtype: torch.dtype = torch.float32,
        zero_is_missing: bool = True,
        grid: str = "same",
        reference: str = "auto",
        limits: RigidLimits | None = None,
        **reader_kwargs: Any,
    ) -> None:
        if grid not in GRID_MODES:
            raise ValueError(f"grid must be one of {list(GRID_MODES)}, got '{grid}'.")
        if grid != "same" and num_modalities != len(MODALITIES):
            raise ValueError(f"grid '{grid}' aligns the {len(MODALITIES)} BraTS modalities; got {num_modalities}.")
        # dtype=None keeps the stored voxel type, so complex or boolean files are seen before any cast
        self.loader = LoadImage(reader=reader, image_only=True, ensure_channel_first=True, dtype=None, **reader_kwargs)
        self.num_modalities = num_modalities
        self.absent_is_missing = absent_is_missing
        self.dtype = dtype
        self.zero_is_missing = zero_is_missing
        self.grid = grid
        self.reference = reference
        self.limits = limits or RigidLimits()

    def __call__(
        self,
        paths: Sequence[PathLike | None] | PathLike,
        available: Sequence[bool] | torch.Tensor | None = None,
        case_id: str | None = None,
    ) -> tuple[MetaTensor, torch.Tensor]:
        """Load ``paths`` and return ``(image [M, *S], available bool [M])``."""
        wanted = self._wanted(available, case_id)
        if isinstance(paths, (str, os.PathLike)):
            return self._load_4d(Path(paths), wanted, case_id)
        if len(paths) != self.num_modalities:
            raise CaseError(case_id, f"expected {self.num_modalities} modality entries, got {len(paths)}.")
        loaded: list[MetaTensor | None] = []
        names = [MODALITY_DISPLAY_NAMES[m] for m in MODALITIES] if self.num_modalities == len(MODALITIES) else []
        for m, (path, want) in enumerate(zip(paths, wanted)):
            loaded.append(self._load_one(path, case_id, names[m] if names else None) if want else None)
        present = [m for m, img in enumerate(loaded) if img is not None]
        if not present:
            raise CaseError(case_id, "no modality is present (every entry is missing, absent or all zero).")
        report = None
        if self.grid == "same":
            ref = loaded[present[0]]
            for m in present[1:]:
                other = loaded[m]
                check_geometry(
                    case_id,
                    (_describe(ref), ref.shape[1:], ref.affine),
                    (_describe(other), other.shape[1:], other.affine),
                )
        else:
            loaded, report = align_modalities(loaded, self.grid, self.reference, case_id, self.limits)
            ref = loaded[MODALITIES.index(report.reference)]
        image = torch.zeros((self.num_modalities, *ref.shape[1:]), dtype=self.dtype)
        for m in present:
            image[m] = loaded[m][0].as_tensor().to(self.dtype)
        mask = torch.zeros(self.num_modalities, dtype=torch.bool)
        mask[present] = True
        out = self._with_meta(image, ref, case_id)
        if report is not None:
            out.meta["alignment"] = report.to_json()
        return out, mask

    def _wanted(self, available: Sequence[bool] | torch.Tensor | None, case_id: str | None) -> list[bool]:
        if available is None:
            return [True] * self.num_modalities
        values = available.tolist() if isinstance(available, torch.Tensor) else available
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise CaseError(case_id, f"'available' must be {self.num_modalities} booleans, got {values!r}.")
        if len(values) != self.num_modalities or not all(isinstance(v, (bool, int, np.bool_)) for v in values):
            raise CaseError(case_id, f"'available' must be {self.num_modalities} booleans, got {list(values)!r}.")
        return [bool(v) for v in values]

    def _load_one(self, path: PathLike | None, case_id: str | None, modality: str | None = None) -> MetaTensor | None:
        if path is None or str(path) == "":
            return None
        path = Path(path)
        if not os.path.lexists(path):  # a dangling link exists as a link: the gate reports it, never "missing"
            if self.absent_is_missing:
                logger.info("case '%s': %s does not exist; the modality is treated as missing.", case_id, path)
                return None
            raise CaseError(case_id, "does not exist.", path)
        img = read_checked(self.loader, path, case_id, channels=1, modality=modality)
        if self.zero_is_missing and not img.as_tensor().any():
            logger.warning("case '%s': %s is all zero; the modality is treated as missing.", case_id, path)
            return None
        return img

    def _load_4d(self, path: Path, wanted: list[bool], case_id: str | None) -> tuple[MetaTensor, torch.Tensor]:
        if not os.path.lexists(path):
            raise CaseError(case_id, "does not exist.", path)
        img = read_checked(self.loader, path, case_id, channels=self.num_modalities)
        mask = torch.as_tensor(wanted, dtype=torch.bool)
        if self.zero_is_missing:
            blank = ~img.as_tensor().flatten(1).any(dim=1)
            if (blank & mask).any():
                logger.warning(
                    "case '%s': %s has all-zero channels %s; those modalities are treated as missing.",
                    case_id,
                    path,
                    (blank & mask).nonzero().flatten().tolist(),
                )
            mask = mask & ~blank
        if not mask.any():
            raise CaseError(case_id, "no modality is present (every channel is unselected or all zero).", path)
        image = img.as_tensor().to(self.dtype) * mask.to(self.dtype).reshape(-1, *([1] * (img.ndim - 1)))
        return self._with_meta(image, img, case_id), mask

    @staticmethod
    def _with_meta(image: torch.Tensor, ref: MetaTensor, case_id: str | None) -> MetaTensor:
        meta = deepcopy(ref.meta)
        meta["original_channel_dim"] = 0
        if case_id is not None:
            meta["case_id"] = str(case_id)
        return MetaTensor(image, meta=meta)


class LoadModalitiesd(MapTransform):
    """Dictionary wrapper of :class:`LoadModalities`; also the "missing input -> zero channel + mask" of training.

    Reads ``data[key]`` (a list of ``M`` paths with ``None``/absent entries, or one 4D path) and the optional per-case
    ``data[available_key]`` (``M`` booleans), then writes the image ``[M, *S]`` to ``key`` and the bool mask ``[M]`` to
    ``available_key``; batches then carry ``available[B, M]``.

    Args:
        keys: the image key (one key; the mask key is shared).
        available_key: where the availability mask is read from (optional) and written to. Default ``"available"``.
        case_id_key: key of the case identifier used in error messages and the meta. Default ``"case_id"``.
        reader: see :class:`LoadModalities`.
        num_modalities: see :class:`LoadModalities`.
        absent_is_missing: see :class:`LoadModalities`.
        dtype: see :class:`LoadModalities`.
        zero_is_missing: see :class:`LoadModalities`.
        grid: see :class:`LoadModalities`.
        reference: see :class:`LoadModalities`.
        alignment_key: where the alignment report (JSON) is written when the modalities were aligned. Default
            ``"alignment"``.
        allow_missing_keys: don't raise when a key is missing.
        reader_kwargs: see :class:`LoadModalities`.
    """

    backend = LoadModalities.backend

    def __init__(
        self,
        keys: KeysCollection = "image",
        available_key: str = "available",
        case_id_key: str = "case_id",
        reader: ImageReader | str | None = None,
        num_modalities: int = len(MODALITIES),
        absent_is_missing: bool = True,
        dtype: torch.dtype = torch.float32,
        zero_is_missing: bool = True,
        grid: str = "same",
        reference: str = "auto",
        alignment_key: str = "alignment",
        allow_missing_keys: bool = False,
        **reader_kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"LoadModalitiesd loads one image key (the mask key is shared), got {self.keys}.")
        self.available_key = available_key
        self.case_id_key = case_id_key
        self.alignment_key = alignment_key
        self.loader = LoadModalities(
            reader=reader,
            num_modalities=num_modalities,
            absent_is_missing=absent_is_missing,
            dtype=dtype,
            zero_is_missing=zero_is_missing,
            grid=grid,
            reference=reference,
            **reader_kwargs,
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        case_id = d.get(self.case_id_key)
        for key in self.key_iterator(d):
            d[key], d[self.available_key] = self.loader(d[key], available=d.get(self.available_key), case_id=case_id)
            if "alignment" in d[key].meta:
                d[self.alignment_key] = d[key].meta["alignment"]
        return d


@dataclass(frozen=True)
class CaseVerdict:
    """Whether a case can be used, as every entry point would find.

    Attributes:
        case: the case.
        problem: why it cannot be used, or None.
        available: per modality (:data:`MODALITIES` order), whether it holds data (an all-zero image does not).
        has_enhancing: whether the label holds enhancing tumour (None without a usable label).
    """

    case: Case
    problem: CaseError | None
    available: tuple[bool, ...]
    has_enhancing: bool | None = None


def check_case(case: Case, loader: LoadModalities | None = None, require_all: bool = False) -> CaseVerdict:
    """Read ``case`` as training and inference do, and its label map against its images and label convention.

    Args:
        case: the case to check.
        loader: the loader to read it with; default ``LoadModalities()``.
        require_all: a missing (or all-zero) modality is a problem, as data preparation requires by default.
    """
    loader = loader or LoadModalities()
    try:
        image, mask = loader(case.images, case_id=case.case_id)
        available = tuple(bool(a) for a in mask.tolist())
        if require_all:
            _require_all(case, available)
        has_enhancing = None if case.label is None else _check_label(case, image)
    except CaseError as err:
        return CaseVerdict(case, err, case.available)
    return CaseVerdict(case, None, available, has_enhancing)


def _require_all(case: Case, available: tuple[bool, ...]) -> None:
    """Raise for the first modality without data: absent, or present but all zero."""
    for m, (modality, usable) in enumerate(zip(MODALITIES, available)):
        if usable:
            continue
        name = MODALITY_DISPLAY_NAMES[modality]
        hint = "pass --allow-missing-modalities to keep cases with missing modalities"
        if case.available[m]:
            path = case.images if isinstance(case.images, Path) else case.images[m]
            raise CaseError(case.case_id, f"the {name} image is all zero, i.e. missing ({hint}).", path)
        raise CaseError(case.case_id, f"has no {name} image ({hint}).", case.folder)


def _check_label(case: Case, image: MetaTensor) -> bool:
    """Check the label map's header, grid and values; return whether it holds enhancing tumour."""
    convention = LAYOUTS[case.layout].label_convention
    reader = LoadImage(image_only=True, ensure_channel_first=True, dtype=None)
    label = read_checked(reader, Path(case.label), case.case_id, channels=1)
    check_geometry(
        case.case_id, (_describe(image), image.shape[1:], image.affine), (case.label, label.shape[1:], label.affine)
    )
    values = check_label_values(case.case_id, case.label, label.as_tensor().numpy(), convention)
    return any(v in values for v in convention.regions["ET"])


class PackAvailability(Transform):
    """Pack a channel-first image ``[M, *S]`` and its mask ``[M]`` into the single tensor ``[2M, *S]`` networks take.

    Uses :func:`mckd.availability.pack_available` (the one home of the encoding). The MetaTensor's meta and
    ``applied_operations`` are kept, so ``Invertd`` keyed on this image still inverts the earlier spatial transforms
    for the prediction.
    """

    backend = [TransformBackends.TORCH]

    def __call__(self, image: Any, available: Sequence[bool] | torch.Tensor) -> Any:
        img = convert_to_tensor(image, track_meta=True)
        mask = torch.as_tensor(available, dtype=torch.bool, device=img.device)
        packed = pack_available(img.as_tensor()[None] if isinstance(img, MetaTensor) else img[None], mask[None])[0]
        if isinstance(img, MetaTensor):
            return MetaTensor(packed, meta=img.meta, applied_operations=img.applied_operations)
        return convert_to_dst_type(packed, image)[0]


class PackAvailabilityd(MapTransform):
    """Dictionary wrapper of :class:`PackAvailability`: the last preprocessing step of single-tensor inference.

    Args:
        keys: image keys to pack. Default ``"image"``.
        available_key: key of the ``[M]`` availability mask. Default ``"available"``.
        allow_missing_keys: don't raise when a key is missing.
    """

    backend = PackAvailability.backend

    def __init__(
        self, keys: KeysCollection = "image", available_key: str = "available", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.available_key = available_key
        self.packer = PackAvailability()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.packer(d[key], d[self.available_key])
        return d
