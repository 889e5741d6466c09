"""BraTS label transforms that MONAI lacks: label map <-> region channels, and the small-enhancing-tumour rule.

The array transforms follow MONAI's ``Foo`` / ``Food`` pattern so bundle configs use them like MONAI's own.

Why not MONAI's ``ConvertToMultiChannelBasedOnBratsClasses``: it fixes the channel order to TC, WT, ET and assumes
labels 1 and 2 mean NCR and oedema, which is false for the Medical Segmentation Decathlon (1 = oedema, 2 = non-enhancing
tumour). Here the label semantics come from :mod:`mckd.brats.conventions` and the channels follow a region list:
:data:`REGIONS` (ET, TC, WT) by default, or a convention's :attr:`~mckd.brats.conventions.LabelConvention.region_names`
(ET, TC, WT, RC for the BraTS 2024 post-treatment labels) where a run predicts more regions.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from mckd.brats.cases import check_label_values
from mckd.brats.conventions import LABEL_CONVENTIONS, REGION_DISPLAY_NAMES, REGIONS, LabelConvention

__all__ = [
    "resolve_convention",
    "resolve_regions",
    "ConvertLabelToRegions",
    "ConvertLabelToRegionsd",
    "RegionsToLabel",
    "RegionsToLabeld",
    "RemoveSmallEnhancingTumour",
    "RemoveSmallEnhancingTumourd",
    "describe_postprocessing",
]

ConventionLike = str | LabelConvention


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


def resolve_regions(regions: Sequence[str] | None, default: Sequence[str] = REGIONS) -> tuple[str, ...]:
    """The region channel order ``regions`` (``default`` when None) as a tuple, checked.

    Raises:
        ValueError: for an empty list, a repeated region or a name that is no region
            (:data:`~mckd.brats.conventions.REGION_DISPLAY_NAMES`).
    """
    names = tuple(default if regions is None else regions)
    unknown = [r for r in names if r not in REGION_DISPLAY_NAMES]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(
            f"regions must be distinct names among {list(REGION_DISPLAY_NAMES)}, got {list(names)}"
            + (f" ({unknown} unknown)." if unknown else ".")
        )
    return names


def _require_defined(conv: LabelConvention, regions: Sequence[str], what: str) -> None:
    """Raise when ``conv`` defines no label values for one of ``regions``; ``what`` names the data in the message."""
    missing = [r for r in regions if r not in conv.regions]
    if missing:
        fitting = [c.name for c in LABEL_CONVENTIONS.values() if all(r in c.regions for r in regions)]
        raise ValueError(
            f"{what}: the '{conv.name}' label convention defines no region {missing} (its regions: "
            f"{list(conv.region_names)}); the regions {list(regions)} need one of the conventions {fitting}."
        )


def _describe(data: Any) -> str:
    """File name recorded in a MetaTensor's meta, for error messages."""
    meta = getattr(data, "meta", None) or {}
    return str(meta.get("filename_or_obj", "<in memory>"))


class ConvertLabelToRegions(Transform):
    """Turn a channel-first label map ``[1, *S]`` into float region channels ``[R, *S]``, one per region of ``regions``.

    Args:
        convention: the label convention (a key of :data:`~mckd.brats.conventions.LABEL_CONVENTIONS` or a
            :class:`LabelConvention`). Default ``"brats2018"`` (ET = 4).
        strict: raise when the label map holds a value the convention does not define (for example label 3 in a map
            read with the 2018 convention, which usually means the wrong convention was chosen). Default True.
        regions: the channels, in order; None (default) gives :data:`REGIONS` (ET, TC, WT), so a BraTS 2024 map's
            resection cavity (label 4) is then background. ``["ET", "TC", "WT", "RC"]`` adds the cavity as a fourth
            channel; every region must be defined by the convention of each map converted.

    Raises:
        ValueError: for a map that is not channel-first with one channel, unknown region names, or a convention
            that does not define one of ``regions`` (naming the case and file).
        CaseError: (``strict``) for values the convention does not define, naming the case and the file
            (:func:`mckd.brats.cases.check_label_values`, the check data preparation applies).
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self, convention: ConventionLike = "brats2018", strict: bool = True, regions: Sequence[str] | None = None
    ) -> None:
        self.convention = resolve_convention(convention)
        self.strict = strict
        self.regions = resolve_regions(regions)

    def __call__(
        self, label: Any, convention: ConventionLike | None = None, case_id: str | None = None
    ) -> torch.Tensor:
        """Convert ``label``; ``convention`` overrides the one given at construction for this call."""
        conv = self.convention if convention is None else resolve_convention(convention)
        lab = convert_to_tensor(label, track_meta=False)
        if lab.ndim < 2 or lab.shape[0] != 1:
            raise ValueError(
                f"label map '{_describe(label)}' must be channel-first with one channel [1, *spatial]; "
                f"got shape {tuple(lab.shape)}."
            )
        lab = lab[0]
        _require_defined(conv, self.regions, f"case '{case_id}', label map '{_describe(label)}'")
        if self.strict:
            check_label_values(case_id, _describe(label), lab.cpu().numpy(), conv)
        values = {r: torch.as_tensor(conv.regions[r], device=lab.device, dtype=lab.dtype) for r in self.regions}
        out = torch.stack([torch.isin(lab, values[r]) for r in self.regions], dim=0)
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
        case_id_key: key of the case identifier named in error messages. Default ``"case_id"``.
        allow_missing_keys: don't raise when a key is missing.
        regions: the channels, in order (see :class:`ConvertLabelToRegions`); None gives :data:`REGIONS`.
    """

    backend = ConvertLabelToRegions.backend

    def __init__(
        self,
        keys: KeysCollection,
        convention: ConventionLike = "brats2018",
        convention_key: str | None = None,
        strict: bool = True,
        case_id_key: str = "case_id",
        allow_missing_keys: bool = False,
        regions: Sequence[str] | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = ConvertLabelToRegions(convention=convention, strict=strict, regions=regions)
        self.convention_key = convention_key
        self.case_id_key = case_id_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        convention = d.get(self.convention_key) if self.convention_key else None
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key], convention=convention, case_id=d.get(self.case_id_key))
        return d


class RegionsToLabel(Transform):
    """Compose region channels ``[R, *S]`` (in ``regions`` order) into one label map ``[1, *S]``.

    Regions are painted in the convention's ``compose_order`` (whole tumour, then core, then enhancing; the 2024
    resection cavity after the whole tumour and before the core), so the output is well defined even when the
    predicted regions are not nested. Regions of the convention that are not among the channels are not painted.

    Args:
        convention: label convention of the output: ``"brats2018"`` (labels 1/2/4, default), ``"brats2023"`` (1/2/3),
            ``"brats2024"`` (1/2/3 and 4 = resection cavity), ``"msd"`` or a :class:`LabelConvention`.
        threshold: a channel counts as present where it is above this value (0.5 for probabilities); None means the
            input is already binary (non-zero = present).
        dtype: dtype of the label map. Default ``torch.uint8``.
        regions: the input's channels, in order; None (default) gives the convention's own regions
            (:attr:`~mckd.brats.conventions.LabelConvention.region_names`: ET, TC, WT, and RC for ``"brats2024"``).

    Raises:
        ValueError: (construction) for a channel the convention has no label value for (e.g. RC written as
            ``"brats2018"``); (call) when the input does not have one channel per region.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        convention: ConventionLike = "brats2018",
        threshold: float | None = 0.5,
        dtype: torch.dtype = torch.uint8,
        regions: Sequence[str] | None = None,
    ) -> None:
        self.convention = resolve_convention(convention)
        self.threshold = threshold
        self.dtype = dtype
        self.regions = resolve_regions(regions, self.convention.region_names)
        _require_defined(self.convention, self.regions, "the output label map")

    def __call__(self, regions: Any) -> torch.Tensor:
        reg = convert_to_tensor(regions, track_meta=False)
        if reg.ndim < 2 or reg.shape[0] != len(self.regions):
            raise ValueError(
                f"expected {len(self.regions)} region channels {list(self.regions)} first (label convention "
                f"'{self.convention.name}'); got shape {tuple(reg.shape)} for '{_describe(regions)}'."
            )
        present = reg > self.threshold if self.threshold is not None else reg != 0
        label = torch.zeros_like(reg[:1], dtype=self.dtype)
        for region, value in self.convention.compose_order:
            if region in self.regions:
                label[0][present[self.regions.index(region)]] = value
        return convert_to_dst_type(label, regions, dtype=self.dtype)[0]


class RegionsToLabeld(MapTransform):
    """Dictionary wrapper of :class:`RegionsToLabel`.

    Args:
        keys: keys of the region tensors to compose.
        convention: output label convention (default ``"brats2018"``).
        threshold: see :class:`RegionsToLabel`.
        dtype: see :class:`RegionsToLabel`.
        allow_missing_keys: don't raise when a key is missing.
        regions: the input's channels (see :class:`RegionsToLabel`); None gives the convention's regions.
    """

    backend = RegionsToLabel.backend

    def __init__(
        self,
        keys: KeysCollection,
        convention: ConventionLike = "brats2018",
        threshold: float | None = 0.5,
        dtype: torch.dtype = torch.uint8,
        allow_missing_keys: bool = False,
        regions: Sequence[str] | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.composer = RegionsToLabel(convention=convention, threshold=threshold, dtype=dtype, regions=regions)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.composer(d[key])
        return d


class RemoveSmallEnhancingTumour(Transform):
    """Relabel a predicted enhancing tumour smaller than ``min_size`` voxels as tumour core (standard BraTS trick).

    Works on binary region channels ``[R, *S]`` in ``regions`` order: the ET voxels are moved into TC (they stay in
    WT) and the ET channel is cleared; other channels (e.g. RC) are left as they are. It is off in every default
    pipeline; it changes ET scores strongly on cases without enhancing tumour (an empty ET prediction then scores
    Dice 1 instead of 0).

    Why by hand: MONAI's ``RemoveSmallObjects`` drops connected components by size, whereas this rule looks at the
    total ET volume and keeps the voxels as core.

    Args:
        min_size: ET volumes below this many voxels are relabelled. Default 500 (the published post-processing).
        regions: the channels, in order; None (default) gives :data:`REGIONS`. Must hold ET and TC.

    Raises:
        ValueError: for a negative ``min_size``, ``regions`` without ET or TC, or an input whose channel count
            differs from ``regions``.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, min_size: int = 500, regions: Sequence[str] | None = None) -> None:
        if min_size < 0:
            raise ValueError(f"min_size must be >= 0, got {min_size}.")
        self.min_size = min_size
        self.regions = resolve_regions(regions)
        if not {"ET", "TC"} <= set(self.regions):
            raise ValueError(f"the small-ET rule needs ET and TC channels; got regions {list(self.regions)}.")

    def __call__(self, regions: Any) -> Any:
        reg = convert_to_tensor(regions, track_meta=False)
        et, tc = self.regions.index("ET"), self.regions.index("TC")
        if reg.ndim < 2 or reg.shape[0] != len(self.regions):
            raise ValueError(
                f"expected {len(self.regions)} region channels {list(self.regions)} first; "
                f"got shape {tuple(reg.shape)}."
            )
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
        regions: see :class:`RemoveSmallEnhancingTumour`.
    """

    backend = RemoveSmallEnhancingTumour.backend

    def __init__(
        self,
        keys: KeysCollection,
        min_size: int = 500,
        allow_missing_keys: bool = False,
        regions: Sequence[str] | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.remover = RemoveSmallEnhancingTumour(min_size=min_size, regions=regions)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.remover(d[key])
        return d


def describe_postprocessing(threshold: float = 0.5, et_min_size: int = 0) -> str:
    """The evaluation report's words for its postprocessing: sigmoid, threshold, and the small-ET rule when on."""
    text = f"sigmoid per channel, threshold {threshold:g}"
    if et_min_size > 0:
        text += f"; predicted enhancing tumour under {et_min_size} voxels relabelled as tumour core"
    return text
