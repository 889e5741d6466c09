"""Evaluate a multi-modal segmentation network under every modality subset (the missing-modality protocol).

Generic: nothing here knows about BraTS. Region names, modality names and post-processing are arguments; the BraTS
report (:mod:`mckd.brats.report`) and bundle configs supply them.

For each case the loader yields once, and every subset is evaluated on it (the data is read and preprocessed once,
not once per subset). For subset ``s`` and a case with data availability ``a``, the network sees ``s AND a``, packed
into one tensor with :func:`mckd.availability.pack_available` and run through the given MONAI inferer. The binary
prediction is scored per region channel with MONAI's Dice and 95th-percentile Hausdorff distance.

Scoring conventions (explicit, configurable, written into the results and the report):

- both prediction and reference empty: Dice ``empty_dice`` (default 1) and HD95 ``empty_hd95`` (default 0);
- reference empty, prediction not (or the reverse): Dice 0 (MONAI's value), HD95 ``missed_hd95``: a number, or
  ``"diagonal"`` (default) for the length of the image diagonal in physical units, which for a 240x240x155 1 mm
  volume is 373.13, the value the BraTS evaluation uses;
- a subset that shares no modality with a case's data gives NaN for that case (left out of the means);
- HD95 uses the voxel spacing of the reference's affine when it is a MetaTensor (mm), else unit spacing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.metrics import compute_dice, compute_hausdorff_distance
from monai.transforms import Activations, AsDiscrete, Compose

from mckd.availability import all_subsets, pack_available, subset_name

__all__ = ["SubsetResults", "SubsetEvaluator", "default_postprocessing"]

logger = logging.getLogger(__name__)

MissedHD95 = Union[float, str]


def default_postprocessing(threshold: float = 0.5) -> Compose:
    """Sigmoid per channel, then binarise at ``threshold`` (MONAI ``Activations`` + ``AsDiscrete``)."""
    return Compose([Activations(sigmoid=True), AsDiscrete(threshold=threshold)])


@dataclass
class SubsetResults:
    """Per subset x case x region Dice and HD95, with the conventions they were computed under.

    Attributes:
        subsets: the evaluated subsets (``M`` booleans each), in evaluation order.
        subset_names: readable names of ``subsets`` (e.g. ``"FLAIR+T1ce"``).
        case_ids: case identifiers in loader order.
        region_names: names of the output channels.
        modality_names: names of the modalities.
        dice: ``[subsets, cases, regions]`` Dice, NaN where a case could not be evaluated under a subset.
        hd95: same shape, HD95.
        importance: learned importance per modality (name -> p), when given.
        conventions: how empty and missed regions were scored, post-processing, spacing.
    """

    subsets: list[tuple[bool, ...]]
    subset_names: list[str]
    case_ids: list[str]
    region_names: list[str]
    modality_names: list[str]
    dice: np.ndarray
    hd95: np.ndarray
    importance: Optional[dict[str, float]] = None
    conventions: dict[str, Any] = field(default_factory=dict)

    def per_subset_mean(self, metric: str = "dice") -> np.ndarray:
        """``[subsets, regions]`` mean over cases (NaN entries skipped)."""
        return _nanmean(self._metric(metric), axis=1)

    def mean_over_subsets(self, metric: str = "dice") -> np.ndarray:
        """``[regions]`` mean of the per-subset means: the headline number of the missing-modality tables."""
        return _nanmean(self.per_subset_mean(metric), axis=0)

    def records(self) -> list[dict[str, Any]]:
        """Long format: one dict per subset x case x region with keys subset, case, region, dice, hd95."""
        rows = []
        for s, name in enumerate(self.subset_names):
            for c, case in enumerate(self.case_ids):
                for r, region in enumerate(self.region_names):
                    rows.append(
                        {
                            "subset": name,
                            "case": case,
                            "region": region,
                            "dice": float(self.dice[s, c, r]),
                            "hd95": float(self.hd95[s, c, r]),
                        }
                    )
        return rows

    def summary(self) -> dict[str, Any]:
        """Per-subset means and the mean over subsets, keyed by names (JSON-serialisable)."""
        dice, hd95 = self.per_subset_mean("dice"), self.per_subset_mean("hd95")
        per_subset = {
            name: {
                region: {"dice": _finite(dice[s, r]), "hd95": _finite(hd95[s, r])}
                for r, region in enumerate(self.region_names)
            }
            for s, name in enumerate(self.subset_names)
        }
        mean_dice, mean_hd95 = self.mean_over_subsets("dice"), self.mean_over_subsets("hd95")
        mean = {
            region: {"dice": _finite(mean_dice[r]), "hd95": _finite(mean_hd95[r])}
            for r, region in enumerate(self.region_names)
        }
        return {
            "per_subset": per_subset,
            "mean_over_subsets": mean,
            "num_cases": len(self.case_ids),
            "importance": self.importance,
            "conventions": self.conventions,
        }

    def _metric(self, metric: str) -> np.ndarray:
        if metric not in ("dice", "hd95"):
            raise ValueError(f"metric must be 'dice' or 'hd95', got '{metric}'.")
        return self.dice if metric == "dice" else self.hd95


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean ignoring NaN; all-NaN slices give NaN without numpy's warning."""
    valid = ~np.isnan(values)
    count = valid.sum(axis=axis)
    total = np.where(valid, values, 0.0).sum(axis=axis)
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def _finite(value: float) -> Optional[float]:
    return None if math.isnan(value) else float(value)


class SubsetEvaluator:
    """Evaluate ``network`` on a labelled loader under each modality subset.

    Each batch must hold the image ``[B, M, *S]`` under ``image_key``, the binary reference regions ``[B, R, *S]``
    under ``label_key`` and, optionally, the data availability ``[B, M]`` under ``available_key`` (absent: every
    modality present). The network is called with the packed single tensor ``[B, 2M, *S]`` through ``inferer``.

    Args:
        network: the network (put in ``eval`` mode; its weights are not changed).
        dataloader: yields labelled batches (any batch size).
        inferer: a MONAI inferer, e.g. ``SlidingWindowInferer(roi_size, overlap=0.5)``.
        device: device for the network and the data. Default ``"cpu"``.
        subsets: subsets to evaluate (``M`` booleans each); None means all ``2**M - 1`` in
            :func:`mckd.availability.all_subsets` order.
        region_names: names of the output channels; None gives ``"region0"``, ...
        modality_names: names of the modalities (used in subset names); None gives ``"m0"``, ...
        postprocessing: callable mapping one sample's logits ``[R, *S]`` to a binary prediction; default
            :func:`default_postprocessing` (sigmoid, threshold 0.5). Put optional extra steps (e.g. small-region
            removal) here.
        postprocessing_description: how ``postprocessing`` is described in the report. Default describes the
            default post-processing.
        empty_dice: Dice when prediction and reference are both empty. Default 1.0.
        empty_hd95: HD95 when both are empty. Default 0.0.
        missed_hd95: HD95 when exactly one of them is empty: a number, or ``"diagonal"`` (default) for the
            image diagonal in physical units.
        importance: learned importance per modality (a sequence/tensor of ``M`` numbers or a name -> value mapping),
            copied into the results for the report. Default None.
        image_key: batch key of the image. Default ``"image"``.
        label_key: batch key of the reference regions. Default ``"label"``.
        available_key: batch key of the data availability. Default ``"available"``.
        case_id_key: batch key of the case ids; when absent cases are numbered. Default ``"case_id"``.
        amp: run the network under ``torch.autocast`` on the device. Default False.

    Raises:
        ValueError: for an empty subset, subsets of the wrong length, or an unknown ``missed_hd95`` keyword.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        dataloader: Any,
        inferer: Inferer,
        device: str | torch.device = "cpu",
        subsets: Optional[Sequence[Sequence[bool]]] = None,
        region_names: Optional[Sequence[str]] = None,
        modality_names: Optional[Sequence[str]] = None,
        postprocessing: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        postprocessing_description: Optional[str] = None,
        empty_dice: float = 1.0,
        empty_hd95: float = 0.0,
        missed_hd95: MissedHD95 = "diagonal",
        importance: Optional[Union[Sequence[float], torch.Tensor, Mapping[str, float]]] = None,
        image_key: str = "image",
        label_key: str = "label",
        available_key: str = "available",
        case_id_key: str = "case_id",
        amp: bool = False,
    ) -> None:
        if isinstance(missed_hd95, str) and missed_hd95 != "diagonal":
            raise ValueError(f"missed_hd95 must be a number or 'diagonal', got '{missed_hd95}'.")
        self.network = network
        self.dataloader = dataloader
        self.inferer = inferer
        self.device = torch.device(device)
        self.subsets = None if subsets is None else [tuple(bool(x) for x in s) for s in subsets]
        if self.subsets is not None:
            if not self.subsets or any(not any(s) for s in self.subsets):
                raise ValueError("subsets must be a non-empty list of non-empty modality subsets.")
            if len({len(s) for s in self.subsets}) != 1:
                raise ValueError("all subsets must have one entry per modality.")
        self.region_names = None if region_names is None else list(region_names)
        self.modality_names = None if modality_names is None else list(modality_names)
        self.postprocessing = postprocessing or default_postprocessing()
        self.postprocessing_description = postprocessing_description or (
            "sigmoid per channel, threshold 0.5" if postprocessing is None else "custom (not described)"
        )
        self.empty_dice = float(empty_dice)
        self.empty_hd95 = float(empty_hd95)
        self.missed_hd95 = missed_hd95
        self.importance = importance
        self.image_key = image_key
        self.label_key = label_key
        self.available_key = available_key
        self.case_id_key = case_id_key
        self.amp = amp

    def run(self) -> SubsetResults:
        """Evaluate every case under every subset and return the results."""
        self.network.to(self.device).eval()
        subsets = self.subsets
        dice_rows: list[np.ndarray] = []  # per case: [subsets, regions]
        hd_rows: list[np.ndarray] = []
        case_ids: list[str] = []
        num_regions = None
        num_batches = len(self.dataloader) if hasattr(self.dataloader, "__len__") else None
        with torch.no_grad():
            for b, batch in enumerate(self.dataloader):
                image = batch[self.image_key]
                image = (image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)).to(self.device)
                label = batch[self.label_key]
                batch_size, num_modalities = image.shape[:2]
                if subsets is None:
                    subsets = all_subsets(num_modalities)
                elif len(subsets[0]) != num_modalities:
                    raise ValueError(f"subsets have {len(subsets[0])} entries but the image has {num_modalities}.")
                data_available = self._data_available(batch, batch_size, num_modalities)
                ids = self._case_ids(batch, batch_size, len(case_ids))
                num_regions = label.shape[1]
                dice = np.full((batch_size, len(subsets), num_regions), np.nan)
                hd95 = np.full_like(dice, np.nan)
                for s, subset in enumerate(subsets):
                    available = data_available & torch.as_tensor(subset, device=self.device)[None]
                    usable = available.any(dim=1)
                    if not usable.any():
                        continue
                    preds = self._predict(image[usable], available[usable])
                    for pred, i in zip(preds, usable.nonzero().flatten().tolist()):
                        dice[i, s], hd95[i, s] = self._score(pred, label[i])
                for i, case in enumerate(ids):
                    dice_rows.append(dice[i])
                    hd_rows.append(hd95[i])
                    case_ids.append(case)
                    logger.info(
                        "case %s (%d%s): mean Dice over subsets %s",
                        case,
                        len(case_ids),
                        f"/{num_batches * batch_size}" if num_batches else "",
                        np.round(_nanmean(dice[i], axis=0), 4).tolist(),
                    )
                logger.debug("batch %d done", b)
        if subsets is None or num_regions is None:
            raise ValueError("the data loader yielded no batch; nothing to evaluate.")
        modality_names = self.modality_names or [f"m{m}" for m in range(len(subsets[0]))]
        region_names = self.region_names or [f"region{r}" for r in range(num_regions)]
        return SubsetResults(
            subsets=list(subsets),
            subset_names=[subset_name(s, modality_names) for s in subsets],
            case_ids=case_ids,
            region_names=region_names,
            modality_names=modality_names,
            dice=np.stack(dice_rows, axis=1),
            hd95=np.stack(hd_rows, axis=1),
            importance=self._importance(modality_names),
            conventions=self.conventions(),
        )

    def conventions(self) -> dict[str, Any]:
        """The scoring conventions in force, as written into the results."""
        return {
            "empty_prediction_empty_reference_dice": self.empty_dice,
            "empty_prediction_empty_reference_hd95": self.empty_hd95,
            "one_side_empty_dice": 0.0,
            "one_side_empty_hd95": self.missed_hd95,
            "hd95_units": "physical (spacing from the reference affine) when available, else voxels",
            "postprocessing": self.postprocessing_description,
            "subset_with_no_case_modality": "NaN, left out of the means",
        }

    def _data_available(self, batch: Mapping[str, Any], batch_size: int, num_modalities: int) -> torch.Tensor:
        if self.available_key not in batch:
            return torch.ones(batch_size, num_modalities, dtype=torch.bool, device=self.device)
        available = torch.as_tensor(batch[self.available_key]).to(self.device).bool()
        if available.shape != (batch_size, num_modalities):
            raise ValueError(
                f"'{self.available_key}' has shape {tuple(available.shape)}, expected {(batch_size, num_modalities)}."
            )
        return available

    def _case_ids(self, batch: Mapping[str, Any], batch_size: int, offset: int) -> list[str]:
        ids = batch.get(self.case_id_key)
        if ids is None:
            return [f"case{offset + i}" for i in range(batch_size)]
        return [str(i) for i in ([ids] if isinstance(ids, str) else ids)]

    def _predict(self, image: torch.Tensor, available: torch.Tensor) -> list[torch.Tensor]:
        packed = pack_available(image, available)
        with torch.autocast(self.device.type, enabled=self.amp):
            logits = self.inferer(packed, self.network)
        return [self.postprocessing(torch.as_tensor(l).float()) for l in logits]

    def _score(self, pred: torch.Tensor, reference: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Dice and HD95 per region channel of one sample, with the conventions applied."""
        spacing = _spacing(reference)
        ref = torch.as_tensor(reference).to(pred.device).bool()
        pred = torch.as_tensor(pred).bool()
        dice = compute_dice(pred[None].float(), ref[None].float(), include_background=True, ignore_empty=False)[0]
        dice = dice.cpu().double().numpy()
        hd95 = np.empty(pred.shape[0])
        missed = self._missed_penalty(ref.shape[1:], spacing)
        for r in range(pred.shape[0]):
            pred_any, ref_any = bool(pred[r].any()), bool(ref[r].any())
            if not pred_any and not ref_any:
                dice[r], hd95[r] = self.empty_dice, self.empty_hd95
            elif pred_any != ref_any:
                dice[r], hd95[r] = 0.0, missed
            else:
                hd95[r] = float(
                    compute_hausdorff_distance(
                        pred[None, r : r + 1].float(),
                        ref[None, r : r + 1].float(),
                        include_background=True,
                        percentile=95,
                        spacing=spacing,
                    )[0, 0]
                )
        return dice, hd95

    def _missed_penalty(self, shape: Sequence[int], spacing: Optional[list[float]]) -> float:
        if self.missed_hd95 != "diagonal":
            return float(self.missed_hd95)
        steps = spacing or [1.0] * len(shape)
        return float(math.sqrt(sum((n * d) ** 2 for n, d in zip(shape, steps))))

    def _importance(self, modality_names: list[str]) -> Optional[dict[str, float]]:
        if self.importance is None:
            return None
        if isinstance(self.importance, Mapping):
            return {str(k): float(v) for k, v in self.importance.items()}
        values = torch.as_tensor(self.importance).detach().flatten().tolist()
        if len(values) != len(modality_names):
            raise ValueError(f"importance has {len(values)} values for {len(modality_names)} modalities.")
        return dict(zip(modality_names, map(float, values)))


def _spacing(reference: Any) -> Optional[list[float]]:
    """Voxel spacing from a MetaTensor's affine (column norms), None for plain tensors."""
    if not isinstance(reference, MetaTensor):
        return None
    spatial = reference.ndim - 1
    affine = reference.affine.double()
    if affine.ndim == 3:  # a batched affine left on an item
        affine = affine[0]
    return [float(v) for v in torch.linalg.norm(affine[:spatial, :spatial], dim=0)]
