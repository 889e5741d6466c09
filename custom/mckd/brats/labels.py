"""BraTS label transforms that MONAI lacks: label map <-> region channels, and the small-enhancing-tumour rule.

The array transforms follow MONAI's ``Foo`` / ``Food`` pattern so bundle configs use them like MONAI's own.

Why not MONAI's ``ConvertToMultiChannelBasedOnBratsClasses``: it fixes the channel order to TC, WT, ET and assumes
labels 1 and 2 mean NCR and oedema, which is false for the Medical Segmentation Decathlon (1 = oedema, 2 = non-enhancing
tumour). Here the label semantics come from :mod:`mckd.brats.conventions` and the channels follow :data:`REGIONS`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from mckd.brats.cases import check_label_values
from mckd.brats.conventions import LABEL_CONVENTIONS, REGIONS, LabelConvention

__all__ = [
    "resolve_convention",
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
        ValueError: for a map that is not channel-first with one channel.
        CaseError: (``strict``) for values the convention does not define, naming the case and the file
            (:func:`mckd.brats.cases.check_label_values`, the check data preparation applies).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, convention: ConventionLike = "brats2018", strict: bool = True) -> None:
        self.convention = resolve_convention(convention)
        self.strict = strict

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
        if self.strict:
            check_label_values(case_id, _describe(label), lab.cpu().numpy(), conv)
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
        case_id_key: key of the case identifier named in error messages. Default ``"case_id"``.
        allow_missing_keys: don't raise when a key is missing.
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
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = ConvertLabelToRegions(convention=convention, strict=strict)
        self.convention_key = convention_key
        self.case_id_key = case_id_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        convention = d.get(self.convention_key) if self.convention_key else None
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key], convention=convention, case_id=d.get(self.case_id_key))
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


def describe_postprocessing(threshold: float = 0.5, et_min_size: int = 0) -> str:
    """The evaluation report's words for its postprocessing: sigmoid, threshold, and the small-ET rule when on."""
    text = f"sigmoid per channel, threshold {threshold:g}"
    if et_min_size > 0:
        text += f"; predicted enhancing tumour under {et_min_size} voxels relabelled as tumour core"
    return text
