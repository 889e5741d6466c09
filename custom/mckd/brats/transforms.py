"""BraTS transforms that MONAI lacks: label map <-> region channels, loading a case with missing modalities, packing.

Everything else in the BraTS pipelines is a MONAI transform (``EnsureChannelFirstd``, ``Orientationd``,
``NormalizeIntensityd``, crops, flips, ``Invertd``, ``SaveImaged``). The array transforms here follow MONAI's
``Foo`` / ``Food`` pattern so bundle configs use them like MONAI's own.

Why not MONAI's ``ConvertToMultiChannelBasedOnBratsClasses``: it fixes the channel order to TC, WT, ET and assumes
labels 1 and 2 mean NCR and oedema, which is false for the Medical Segmentation Decathlon (1 = oedema, 2 = non-enhancing
tumour). Here the label semantics come from :mod:`mckd.brats.conventions` and the channels follow :data:`REGIONS`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from copy import deepcopy
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.image_reader import ImageReader
from monai.transforms import LoadImage, MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor, optional_import

from mckd.availability import pack_available
from mckd.brats.conventions import LABEL_CONVENTIONS, MODALITIES, REGIONS, LabelConvention

pydicom, has_pydicom = optional_import("pydicom")

__all__ = [
    "CaseError",
    "SLICE_SPACING_RTOL",
    "check_dicom_series",
    "resolve_convention",
    "ConvertLabelToRegions",
    "ConvertLabelToRegionsd",
    "RegionsToLabel",
    "RegionsToLabeld",
    "RemoveSmallEnhancingTumour",
    "RemoveSmallEnhancingTumourd",
    "LoadModalities",
    "LoadModalitiesd",
    "PackAvailability",
    "PackAvailabilityd",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
ConventionLike = Union[str, LabelConvention]

#: Largest relative difference between the distances of consecutive DICOM slices and their median.
SLICE_SPACING_RTOL = 0.01


class CaseError(ValueError):
    """A case cannot be used; the message names the case and the file. Inference loops catch it per case.

    Attributes:
        case_id: the case's identifier (``"<unknown case>"`` when the caller did not give one).
        path: the offending file or folder, when there is one.
    """

    def __init__(self, case_id: str | None, message: str, path: PathLike | None = None) -> None:
        self.case_id = case_id or "<unknown case>"
        self.path = None if path is None else str(path)
        where = f" (file '{self.path}')" if self.path else ""
        super().__init__(f"case '{self.case_id}'{where}: {message}")


def _slice_positions(slices: Sequence[Any]) -> list[float] | None:
    """Slice positions along the normal of their shared orientation, or None when the headers cannot tell."""
    positions = []
    for ds in slices:
        position, orientation = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
        if position is None or orientation is None or len(orientation) != 6:
            return None
        normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
        positions.append(float(np.dot(normal, np.asarray(position, float))))
    return sorted(positions)


def check_dicom_series(folder: PathLike, case_id: str | None = None) -> None:
    """Check a DICOM series folder from its headers: every file DICOM, one series, evenly spaced slices.

    Readers stack whatever slices they find: a folder mixing two series, or a series with a missing slice, would load
    as a volume with wrong geometry. Multi-frame files (no per-file ``ImagePositionPatient``) are left to the reader.
    Without pydicom nothing is checked.

    Args:
        folder: the series folder.
        case_id: the case, for messages.

    Raises:
        CaseError: naming the case and the folder: a file that is not DICOM, several ``SeriesInstanceUID``, two slices
            at one position, or slice distances that differ from their median by more than
            :data:`SLICE_SPACING_RTOL` (missing slices are counted when the gap is a multiple of the spacing).
    """
    folder = Path(folder)
    if not has_pydicom:
        return
    series: dict[str, list[Any]] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as err:  # pydicom raises several types for non-DICOM content
            reason = f"'{path.name}' in this DICOM series folder is not DICOM ({err})."
            raise CaseError(case_id, reason, folder) from err
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(ds)
    if len(series) > 1:
        uids = ", ".join(sorted(series))
        raise CaseError(
            case_id, f"holds {len(series)} DICOM series ({uids}); put each series in its own folder.", folder
        )
    positions = _slice_positions(next(iter(series.values()), []))
    if positions is None or len(positions) < 3:
        return
    gaps = np.diff(positions)
    step = float(np.median(gaps))
    if gaps.min() <= SLICE_SPACING_RTOL * abs(step):
        at = positions[int(np.argmin(gaps))]
        raise CaseError(case_id, f"has two slices at position {at:.4g} mm.", folder)
    uneven = np.flatnonzero(np.abs(gaps - step) > SLICE_SPACING_RTOL * step)
    if uneven.size == 0:
        return
    first = int(uneven[0])
    ratio = gaps[first] / step
    where = f"between positions {positions[first]:.4g} and {positions[first + 1]:.4g} mm"
    if round(ratio) >= 2 and abs(ratio - round(ratio)) <= SLICE_SPACING_RTOL * round(ratio):
        missing = int(sum(round(g / step) - 1 for g in gaps[uneven] if round(g / step) >= 2))
        raise CaseError(
            case_id, f"misses {missing} slice(s): the first gap is {where} (slice spacing {step:.4g} mm).", folder
        )
    raise CaseError(
        case_id,
        f"has unevenly spaced slices: {gaps.min():.4g} to {gaps.max():.4g} mm apart (first irregular gap {where}).",
        folder,
    )


def resolve_convention(convention: ConventionLike) -> LabelConvention:
    """Return the :class:`LabelConvention` named by ``convention`` (or ``convention`` itself).

    Raises:
        ValueError: for an unknown name.
        TypeError: for anything that is neither a name nor a :class:`LabelConvention`.
    """
    if isinstance(convention, LabelConvention):
        return convention
    if isinstance(convention, str):
        if convention not in LABEL_CONVENTIONS:
            raise ValueError(f"unknown label convention '{convention}'; expected one of {sorted(LABEL_CONVENTIONS)}.")
        return LABEL_CONVENTIONS[convention]
    raise TypeError(f"convention must be a name or a LabelConvention, got {type(convention).__name__}.")


def _describe(data: Any) -> str:
    """File name recorded in a MetaTensor's meta, for error messages."""
    meta = getattr(data, "meta", None) or {}
    return str(meta.get("filename_or_obj", "<in memory>"))


class ConvertLabelToRegions(Transform):
    """Turn a channel-first label map ``[1, *S]`` into float region channels ``[3, *S]`` in :data:`REGIONS` order.

    Args:
        convention: the label convention (``"brats2018"``, ``"brats2023"``, ``"msd"`` or a :class:`LabelConvention`).
            Default ``"brats2018"`` (ET = 4).
        strict: raise when the label map holds a value the convention does not define (for example label 3 in a map
            read with the 2018 convention, which usually means the wrong convention was chosen). Default True.

    Raises:
        ValueError: for a map that is not channel-first with one channel, or (``strict``) for unknown label values.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, convention: ConventionLike = "brats2018", strict: bool = True) -> None:
        self.convention = resolve_convention(convention)
        self.strict = strict

    def __call__(self, label: Any, convention: ConventionLike | None = None) -> torch.Tensor:
        """Convert ``label``; ``convention`` overrides the one given at construction for this call."""
        conv = self.convention if convention is None else resolve_convention(convention)
        lab = convert_to_tensor(label, track_meta=False)
        if lab.ndim < 2 or lab.shape[0] != 1:
            raise ValueError(
                f"label map '{_describe(label)}' must be channel-first with one channel [1, *spatial]; "
                f"got shape {tuple(lab.shape)}."
            )
        lab = lab[0]
        if self.strict:
            found = {int(v) for v in torch.unique(lab).tolist()}
            unknown = sorted(found - conv.valid_values)
            if unknown:
                raise ValueError(
                    f"label map '{_describe(label)}' holds values {unknown} that the '{conv.name}' convention does not "
                    f"define (valid: {sorted(conv.valid_values)}); is it the right convention?"
                )
        values = {r: torch.as_tensor(conv.regions[r], device=lab.device, dtype=lab.dtype) for r in REGIONS}
        out = torch.stack([torch.isin(lab, values[r]) for r in REGIONS], dim=0)
        return convert_to_dst_type(out, label, dtype=torch.float32)[0]


class ConvertLabelToRegionsd(MapTransform):
    """Dictionary wrapper of :class:`ConvertLabelToRegions`.

    Args:
        keys: keys of the label maps to convert.
        convention: the default label convention (see :class:`ConvertLabelToRegions`).
        convention_key: a data-dict key holding each case's convention name (as datalists written by
            ``data_prep.brats`` do, under ``"label_convention"``); when the key is absent from a case, ``convention``
            applies. Default None (always ``convention``).
        strict: see :class:`ConvertLabelToRegions`.
        allow_missing_keys: don't raise when a key is missing.
    """

    backend = ConvertLabelToRegions.backend

    def __init__(
        self,
        keys: KeysCollection,
        convention: ConventionLike = "brats2018",
        convention_key: str | None = None,
        strict: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = ConvertLabelToRegions(convention=convention, strict=strict)
        self.convention_key = convention_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        convention = d.get(self.convention_key) if self.convention_key else None
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key], convention=convention)
        return d


class RegionsToLabel(Transform):
    """Compose region channels ``[3, *S]`` (:data:`REGIONS` order) into one label map ``[1, *S]``.

    Regions are painted in the convention's ``compose_order`` (whole tumour, then core, then enhancing), so the
    output is well defined even when the predicted regions are not nested.

    Args:
        convention: label convention of the output; ``"brats2018"`` (labels 1/2/4, default) or ``"brats2023"`` (1/2/3).
        threshold: a channel counts as present where it is above this value (0.5 for probabilities); None means the
            input is already binary (non-zero = present).
        dtype: dtype of the label map. Default ``torch.uint8``.

    Raises:
        ValueError: when the input does not have one channel per region.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self, convention: ConventionLike = "brats2018", threshold: float | None = 0.5, dtype: torch.dtype = torch.uint8
    ) -> None:
        self.convention = resolve_convention(convention)
        self.threshold = threshold
        self.dtype = dtype

    def __call__(self, regions: Any) -> torch.Tensor:
        reg = convert_to_tensor(regions, track_meta=False)
        if reg.ndim < 2 or reg.shape[0] != len(REGIONS):
            raise ValueError(
                f"expected {len(REGIONS)} region channels {REGIONS} first; got shape {tuple(reg.shape)} "
                f"for '{_describe(regions)}'."
            )
        present = reg > self.threshold if self.threshold is not None else reg != 0
        label = torch.zeros_like(reg[:1], dtype=self.dtype)
        for region, value in self.convention.compose_order:
            label[0][present[REGIONS.index(region)]] = value
        return convert_to_dst_type(label, regions, dtype=self.dtype)[0]


class RegionsToLabeld(MapTransform):
    """Dictionary wrapper of :class:`RegionsToLabel`.

    Args:
        keys: keys of the region tensors to compose.
        convention: output label convention (default ``"brats2018"``).
        threshold: see :class:`RegionsToLabel`.
        dtype: see :class:`RegionsToLabel`.
        allow_missing_keys: don't raise when a key is missing.
    """

    backend = RegionsToLabel.backend

    def __init__(
        self,
        keys: KeysCollection,
        convention: ConventionLike = "brats2018",
        threshold: float | None = 0.5,
        dtype: torch.dtype = torch.uint8,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.composer = RegionsToLabel(convention=convention, threshold=threshold, dtype=dtype)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.composer(d[key])
        return d


class RemoveSmallEnhancingTumour(Transform):
    """Relabel a predicted enhancing tumour smaller than ``min_size`` voxels as tumour core (standard BraTS trick).

    Works on binary region channels ``[3, *S]`` in :data:`REGIONS` order: the ET voxels are moved into TC (they stay in
    WT) and the ET channel is cleared. It is off in every default pipeline; it changes ET scores strongly on cases
    without enhancing tumour (an empty ET prediction then scores Dice 1 instead of 0).

    Why by hand: MONAI's ``RemoveSmallObjects`` drops connected components by size, whereas this rule looks at the
    total ET volume and keeps the voxels as core.

    Args:
        min_size: ET volumes below this many voxels are relabelled. Default 500 (the published post-processing).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, min_size: int = 500) -> None:
        if min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {min_size}.")
        self.min_size = min_size

    def __call__(self, regions: Any) -> Any:
        reg = convert_to_tensor(regions, track_meta=False)
        et, tc = REGIONS.index("ET"), REGIONS.index("TC")
        if reg.ndim < 2 or reg.shape[0] != len(REGIONS):
            raise ValueError(f"expected {len(REGIONS)} region channels {REGIONS} first; got shape {tuple(reg.shape)}.")
        if int((reg[et] != 0).sum()) >= self.min_size:
            return regions
        out = reg.clone()
        out[tc] = torch.maximum(out[tc], out[et])
        out[et] = 0
        return convert_to_dst_type(out, regions)[0]


class RemoveSmallEnhancingTumourd(MapTransform):
    """Dictionary wrapper of :class:`RemoveSmallEnhancingTumour`.

    Args:
        keys: keys of binary region tensors.
        min_size: see :class:`RemoveSmallEnhancingTumour`.
        allow_missing_keys: don't raise when a key is missing.
    """

    backend = RemoveSmallEnhancingTumour.backend

    def __init__(self, keys: KeysCollection, min_size: int = 500, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.remover = RemoveSmallEnhancingTumour(min_size=min_size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.remover(d[key])
        return d


class LoadModalities(Transform):
    """Load one case whose modalities may be missing: image ``[M, *S]`` (missing channels zero) + ``available[M]``.

    ``paths`` is either
    - a sequence of ``M`` entries in modality order, each a file (``.nii``/``.nii.gz`` or anything MONAI reads), a
      DICOM series folder, or ``None`` for a missing modality; a path that does not exist counts as missing too
      (unless ``absent_is_missing=False``), or
    - one path to a 4D image whose channels are the ``M`` modalities in order (MSD).

    ``available`` (optional, ``M`` booleans) marks channels to treat as missing even though data exists, e.g. the
    channels of an MSD image a user wants ignored.

    The present modalities must agree in spatial shape and affine (within ``atol`` mm). The output keeps the meta
    (affine, original affine, file name, ...) of the first present modality, so ``Orientationd`` + ``Invertd`` +
    ``SaveImage`` bring predictions back to the input's original space. The ``case_id`` is added to the meta.

    Every file is checked before use: a 3D volume (a 4D file with ``M`` channels last for one file per case), integer
    or floating-point voxels (not complex, not boolean), no NaN/Inf. A DICOM series folder is checked from its headers
    first: one series only, and evenly spaced slices (no missing slice). An all-zero modality is a blank placeholder,
    treated as missing with a warning (``zero_is_missing``).

    Why by hand: MONAI's ``LoadImage`` with a list of files stacks them but cannot represent an absent entry, and does
    not compare the files' geometry. Each file is still read by ``LoadImage``.

    Args:
        reader: a MONAI reader (instance or name such as ``"NibabelReader"``, ``"ITKReader"``, ``"PydicomReader"``)
            for every file; None lets ``LoadImage`` pick per file (NIfTI by nibabel, DICOM folders by ITK).
        num_modalities: ``M``. Default 4 (:data:`MODALITIES`).
        atol: tolerance in mm (and direction cosines) when comparing affines. Default 1e-3.
        absent_is_missing: treat a path that does not exist as a missing modality (default) instead of an error.
        dtype: dtype of the image. Default ``torch.float32``.
        zero_is_missing: treat an all-zero modality (a blank placeholder) as missing, with a warning (default),
            instead of as a present, empty image.
        reader_kwargs: extra arguments for the reader (passed to ``LoadImage``).

    Raises:
        CaseError: no modality present, an unreadable file, a file that is not a 3D volume, complex or boolean
            voxels, NaN/Inf voxels, a DICOM folder with several series or unevenly spaced (missing) slices, a 4D
            image without ``M`` channels, or modalities whose shape or affine disagree; the message names the case
            and the file.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        reader: ImageReader | str | None = None,
        num_modalities: int = len(MODALITIES),
        atol: float = 1e-3,
        absent_is_missing: bool = True,
        dtype: torch.dtype = torch.float32,
        zero_is_missing: bool = True,
        **reader_kwargs: Any,
    ) -> None:
        # dtype=None keeps the stored voxel type, so complex or boolean files are seen before any cast
        self.loader = LoadImage(reader=reader, image_only=True, ensure_channel_first=True, dtype=None, **reader_kwargs)
        self.num_modalities = num_modalities
        self.atol = atol
        self.absent_is_missing = absent_is_missing
        self.dtype = dtype
        self.zero_is_missing = zero_is_missing

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
        loaded: list[Optional[MetaTensor]] = []
        for path, want in zip(paths, wanted):
            loaded.append(self._load_one(path, case_id) if want else None)
        present = [m for m, img in enumerate(loaded) if img is not None]
        if not present:
            raise CaseError(case_id, "no modality is present (every entry is missing or absent).")
        ref = loaded[present[0]]
        for m in present[1:]:
            self._check_geometry(ref, loaded[m], case_id)
        image = torch.zeros((self.num_modalities, *ref.shape[1:]), dtype=self.dtype)
        for m in present:
            image[m] = loaded[m][0].as_tensor().to(self.dtype)
        mask = torch.zeros(self.num_modalities, dtype=torch.bool)
        mask[present] = True
        return self._with_meta(image, ref, case_id), mask

    def _wanted(self, available: Sequence[bool] | torch.Tensor | None, case_id: str | None) -> list[bool]:
        if available is None:
            return [True] * self.num_modalities
        wanted = [bool(a) for a in (available.tolist() if isinstance(available, torch.Tensor) else available)]
        if len(wanted) != self.num_modalities:
            raise CaseError(case_id, f"'available' has {len(wanted)} entries, expected {self.num_modalities}.")
        return wanted

    def _read(self, path: Path, case_id: str | None) -> MetaTensor:
        if path.is_dir():
            check_dicom_series(path, case_id)
        try:
            img = self.loader(str(path))
        except Exception as err:  # any reader failure becomes a per-case error naming the file
            raise CaseError(case_id, f"cannot be read: {err}", path) from err
        if img.dtype.is_complex or img.dtype == torch.bool:
            kind = "complex" if img.dtype.is_complex else "boolean"
            raise CaseError(
                case_id, f"has {kind} voxels ({img.dtype}); expected integer or floating-point intensities.", path
            )
        if img.ndim != 4:
            raise CaseError(
                case_id,
                f"is not a 3D volume: shape {tuple(img.shape[1:])} after moving channels first (one 3D file per "
                f"modality, or one 4D file with the {self.num_modalities} modalities last).",
                path,
            )
        if img.is_floating_point():
            bad = int((~torch.isfinite(img.as_tensor())).sum())
            if bad:
                raise CaseError(case_id, f"contains {bad} NaN/Inf voxels.", path)
        return img

    def _load_one(self, path: PathLike | None, case_id: str | None) -> Optional[MetaTensor]:
        if path is None or str(path) == "":
            return None
        path = Path(path)
        if not path.exists():
            if self.absent_is_missing:
                logger.info("case '%s': %s does not exist; the modality is treated as missing.", case_id, path)
                return None
            raise CaseError(case_id, "does not exist.", path)
        img = self._read(path, case_id)
        if img.shape[0] != 1:
            raise CaseError(case_id, f"expected a single-modality image, got {img.shape[0]} channels.", path)
        if self.zero_is_missing and not img.as_tensor().any():
            logger.warning("case '%s': %s is all zero; the modality is treated as missing.", case_id, path)
            return None
        return img

    def _load_4d(self, path: Path, wanted: list[bool], case_id: str | None) -> tuple[MetaTensor, torch.Tensor]:
        if not path.exists():
            raise CaseError(case_id, "does not exist.", path)
        img = self._read(path, case_id)
        if img.shape[0] != self.num_modalities:
            raise CaseError(
                case_id, f"a 4D image needs {self.num_modalities} modality channels, got {img.shape[0]}.", path
            )
        mask = torch.as_tensor(wanted, dtype=torch.bool)
        if self.zero_is_missing:
            blank = ~img.as_tensor().flatten(1).any(dim=1)
            if (blank & mask).any():
                logger.warning(
                    "case '%s': %s has all-zero channels %s; those modalities are treated as missing.",
                    case_id, path, (blank & mask).nonzero().flatten().tolist(),
                )
            mask = mask & ~blank
        if not mask.any():
            raise CaseError(case_id, "no modality is marked available.", path)
        image = img.as_tensor().to(self.dtype) * mask.to(self.dtype).reshape(-1, *([1] * (img.ndim - 1)))
        return self._with_meta(image, img, case_id), mask

    def _check_geometry(self, ref: MetaTensor, other: MetaTensor, case_id: str | None) -> None:
        if tuple(ref.shape[1:]) != tuple(other.shape[1:]):
            raise CaseError(
                case_id,
                f"spatial shape {tuple(other.shape[1:])} differs from {tuple(ref.shape[1:])} of '{_describe(ref)}'.",
                _describe(other),
            )
        a, b = ref.affine.double(), other.affine.double()
        if not torch.allclose(a, b, atol=self.atol, rtol=0):
            raise CaseError(
                case_id,
                f"affine differs from that of '{_describe(ref)}' by up to {float((a - b).abs().max()):.4g} "
                f"(tolerance {self.atol}); the modalities are not co-registered on one grid.",
                _describe(other),
            )

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
        atol: see :class:`LoadModalities`.
        absent_is_missing: see :class:`LoadModalities`.
        dtype: see :class:`LoadModalities`.
        zero_is_missing: see :class:`LoadModalities`.
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
        atol: float = 1e-3,
        absent_is_missing: bool = True,
        dtype: torch.dtype = torch.float32,
        zero_is_missing: bool = True,
        allow_missing_keys: bool = False,
        **reader_kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"LoadModalitiesd loads one image key (the mask key is shared), got {self.keys}.")
        self.available_key = available_key
        self.case_id_key = case_id_key
        self.loader = LoadModalities(
            reader=reader,
            num_modalities=num_modalities,
            atol=atol,
            absent_is_missing=absent_is_missing,
            dtype=dtype,
            zero_is_missing=zero_is_missing,
            **reader_kwargs,
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        case_id = d.get(self.case_id_key)
        for key in self.key_iterator(d):
            d[key], d[self.available_key] = self.loader(d[key], available=d.get(self.available_key), case_id=case_id)
        return d


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
