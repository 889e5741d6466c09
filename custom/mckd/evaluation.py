"""Evaluate a multi-modal segmentation network under every modality subset (the missing-modality protocol).

Generic: nothing here knows about BraTS. Region names, modality names and post-processing are arguments; the BraTS
report (:mod:`mckd.brats.report`) and bundle configs supply them.

For each case the loader yields once, and every subset is evaluated on it (the data is read and preprocessed once,
not once per subset). For subset ``s`` and a case with data availability ``a``, the network sees ``s AND a``, packed
into one tensor with :func:`mckd.availability.pack_available` and run through the given MONAI inferer. The binary
prediction is scored per region channel by :func:`mckd.scoring.score_regions` under a named scoring convention
(``brats_legacy`` or ``official``, see :mod:`mckd.scoring`), with HD95 in mm from the spacing of the array's own axes
(:func:`mckd.scoring.voxel_spacing`). A subset that shares no modality with a case's data gives NaN for that case
(left out of the means).

Nothing diverged is scored: :func:`mckd.checkpoints.load_deployable` refuses a checkpoint holding NaN or infinite
values, and the evaluator stops with :class:`DivergedNetworkError` when the network's output is not finite (weights that
are finite but useless, e.g. the last checkpoint of a run whose loss became infinite). A NaN network predicts
nothing, and an empty prediction would otherwise score Dice 1 on every case without that region.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.transforms import Activations, AsDiscrete, Compose

from mckd.availability import all_subsets, pack_available, read_available, subset_name, under_subsets
from mckd.progress import progress_bar
from mckd.scoring import ConventionLike, score_regions, scoring_convention, voxel_spacing

__all__ = [
    "CaseSlice",
    "SubsetResults",
    "SubsetEvaluator",
    "DivergedNetworkError",
    "default_postprocessing",
]

logger = logging.getLogger(__name__)

#: ``(pred [R, *S], reference [R, *S], spacing) -> {metric name: [R] values}``: extra per-sample metrics.
ExtraScorer = Callable[[torch.Tensor, torch.Tensor, Sequence[float] | None], Mapping[str, Sequence[float]]]


class DivergedNetworkError(FloatingPointError):
    """The network's output is NaN or infinite: its weights come from a diverged run and are not scored."""


def default_postprocessing(threshold: float = 0.5) -> Compose:
    """Sigmoid per channel, then binarise at ``threshold`` (MONAI ``Activations`` + ``AsDiscrete``)."""
    return Compose([Activations(sigmoid=True), AsDiscrete(threshold=threshold)])


@dataclass
class CaseSlice:
    """One 2D slice of a case for the overlay figure: image, reference and the prediction under every subset.

    Attributes:
        case_id: the case.
        index: the slice's index along the first spatial axis (axial for the BraTS bundle's D, H, W arrays): the
            slice with the largest reference area.
        image: ``[M, H, W]`` every modality (zero where the case's data lacks it).
        available: ``[M]`` the case's data availability.
        reference: ``[R, H, W]`` binary reference regions.
        prediction: ``[subsets, R, H, W]`` binary predictions (all False where the subset could not be evaluated).
    """

    case_id: str
    index: int
    image: np.ndarray
    available: np.ndarray
    reference: np.ndarray
    prediction: np.ndarray


@dataclass
class SubsetResults:
    """Per subset x case x region Dice and HD95, with the conventions they were computed under.

    Attributes:
        subsets: the evaluated subsets (``M`` booleans each), in evaluation order.
        subset_names: readable names of ``subsets`` (e.g. ``"FLAIR+T1ce"``).
        case_ids: case identifiers in loader order.
        region_names: names of the output channels.
        modality_names: names of the modalities.
        dice: ``[subsets, cases, regions]`` Dice, NaN where a case could not be evaluated under a subset (or where
            the convention leaves a both-empty region out).
        hd95: same shape, HD95 in mm.
        importance: learned importance per modality (name -> p), when given.
        conventions: the scoring convention, post-processing and spacing rules in force.
        extra: further per-sample metrics (e.g. the official package's lesion-wise ones), name -> same shape.
        slices: one :class:`CaseSlice` per kept case (the first ones), for the overlay figure.
    """

    subsets: list[tuple[bool, ...]]
    subset_names: list[str]
    case_ids: list[str]
    region_names: list[str]
    modality_names: list[str]
    dice: np.ndarray
    hd95: np.ndarray
    importance: dict[str, float] | None = None
    conventions: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    slices: list[CaseSlice] = field(default_factory=list)

    @property
    def metrics(self) -> list[str]:
        """Names of every metric held: ``dice``, ``hd95``, then the extra ones."""
        return ["dice", "hd95", *self.extra]

    def per_subset_mean(self, metric: str = "dice") -> np.ndarray:
        """``[subsets, regions]`` mean over cases (NaN entries skipped)."""
        return _nanmean(self.values(metric), axis=1)

    def mean_over_subsets(self, metric: str = "dice") -> np.ndarray:
        """``[regions]`` mean of the per-subset means: the headline number of the missing-modality tables."""
        return _nanmean(self.per_subset_mean(metric), axis=0)

    def records(self) -> list[dict[str, Any]]:
        """Long format: one dict per subset x case x region with keys subset, case, region and every metric."""
        rows = []
        for s, name in enumerate(self.subset_names):
            for c, case in enumerate(self.case_ids):
                for r, region in enumerate(self.region_names):
                    row: dict[str, Any] = {"subset": name, "case": case, "region": region}
                    row.update({m: float(self.values(m)[s, c, r]) for m in self.metrics})
                    rows.append(row)
        return rows

    def summary(self) -> dict[str, Any]:
        """Per-subset means and the mean over subsets, keyed by names (JSON-serialisable)."""
        means = {m: self.per_subset_mean(m) for m in self.metrics}
        per_subset = {
            name: {
                region: {m: _finite(means[m][s, r]) for m in self.metrics} for r, region in enumerate(self.region_names)
            }
            for s, name in enumerate(self.subset_names)
        }
        overall = {m: self.mean_over_subsets(m) for m in self.metrics}
        mean = {region: {m: _finite(overall[m][r]) for m in self.metrics} for r, region in enumerate(self.region_names)}
        return {
            "per_subset": per_subset,
            "mean_over_subsets": mean,
            "num_cases": len(self.case_ids),
            "importance": self.importance,
            "conventions": self.conventions,
        }

    def values(self, metric: str) -> np.ndarray:
        """The ``[subsets, cases, regions]`` array of ``metric``.

        Raises:
            ValueError: for a metric that is not held.
        """
        if metric == "dice":
            return self.dice
        if metric == "hd95":
            return self.hd95
        if metric in self.extra:
            return self.extra[metric]
        raise ValueError(f"metric must be one of {', '.join(map(repr, self.metrics))}, got '{metric}'.")


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean ignoring NaN; all-NaN slices give NaN without numpy's warning."""
    valid = ~np.isnan(values)
    count = valid.sum(axis=axis)
    total = np.where(valid, values, 0.0).sum(axis=axis)
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def _finite(value: float) -> float | None:
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
        convention: the scoring convention, a name in :data:`mckd.scoring.SCORING_CONVENTIONS` (``"brats_legacy"``,
            default, or ``"official"``) or a :class:`mckd.scoring.ScoringConvention`.
        extra_scorer: optional callable ``(pred [R, *S], reference [R, *S], spacing) -> {name: [R] values}`` whose
            metrics are kept beside Dice and HD95 (e.g. :class:`mckd.brats.official.LesionWiseScorer`). Default None.
        overlay_cases: keep one slice of each of the first ``overlay_cases`` cases under every subset for the
            report's overlay figure (memory stays bounded on large datasets); 0 keeps none. Default 16.
        importance: learned importance per modality (a sequence/tensor of ``M`` numbers or a name -> value mapping),
            copied into the results for the report. Default None.
        image_key: batch key of the image. Default ``"image"``.
        label_key: batch key of the reference regions. Default ``"label"``.
        available_key: batch key of the data availability. Default ``"available"``.
        case_id_key: batch key of the case ids; when absent cases are numbered. Default ``"case_id"``.
        amp: run the network under ``torch.autocast`` on the device. Default False.

    Raises:
        ValueError: for an empty subset, subsets of the wrong length, or an unknown convention.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        dataloader: Any,
        inferer: Inferer,
        device: str | torch.device = "cpu",
        subsets: Sequence[Sequence[bool]] | None = None,
        region_names: Sequence[str] | None = None,
        modality_names: Sequence[str] | None = None,
        postprocessing: Callable[[torch.Tensor], torch.Tensor] | None = None,
        postprocessing_description: str | None = None,
        convention: ConventionLike = "brats_legacy",
        extra_scorer: ExtraScorer | None = None,
        overlay_cases: int = 16,
        importance: Sequence[float] | torch.Tensor | Mapping[str, float] | None = None,
        image_key: str = "image",
        label_key: str = "label",
        available_key: str = "available",
        case_id_key: str = "case_id",
        amp: bool = False,
    ) -> None:
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
        self.convention = scoring_convention(convention)
        self.extra_scorer = extra_scorer
        if overlay_cases < 0:
            raise ValueError(f"overlay_cases must be >= 0, got {overlay_cases}.")
        self.overlay_cases = overlay_cases
        self.importance = importance
        self.image_key = image_key
        self.label_key = label_key
        self.available_key = available_key
        self.case_id_key = case_id_key
        self.amp = amp

    def run(self) -> SubsetResults:
        """Evaluate every case under every subset and return the results.

        Raises:
            DivergedNetworkError: when the network's output is not finite (naming the case and the subset).
            ValueError: when the loader yields nothing or the subsets do not fit the images.
        """
        self.network.to(self.device).eval()
        subsets = self.subsets
        rows: dict[str, list[np.ndarray]] = {}  # metric -> per case [subsets, regions]
        case_ids: list[str] = []
        slices: list[CaseSlice] = []
        num_regions = None
        num_batches = len(self.dataloader) if hasattr(self.dataloader, "__len__") else None
        with torch.no_grad(), progress_bar(num_batches, "evaluating", unit="batch") as bar:
            for batch in self.dataloader:
                bar.update(1)
                image = batch[self.image_key]
                image = (image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)).to(self.device)
                label = batch[self.label_key]
                batch_size, num_modalities = image.shape[:2]
                if subsets is None:
                    subsets = all_subsets(num_modalities)
                elif len(subsets[0]) != num_modalities:
                    raise ValueError(f"subsets have {len(subsets[0])} entries but the image has {num_modalities}.")
                data_available = read_available(batch, batch_size, num_modalities, self.available_key, device=self.device)
                ids = self._case_ids(batch, batch_size, len(case_ids))
                num_regions = label.shape[1]
                scores, kept = self._evaluate_batch(image, label, data_available, subsets, ids, len(case_ids))
                for i, case in enumerate(ids):
                    for metric, values in scores.items():
                        rows.setdefault(metric, []).append(values[i])
                    case_ids.append(case)
                    logger.info(
                        "case %s (%d%s): mean Dice over subsets %s",
                        case,
                        len(case_ids),
                        f"/{num_batches * batch_size}" if num_batches else "",
                        np.round(_nanmean(scores["dice"][i], axis=0), 4).tolist(),
                    )
                slices += kept
        if subsets is None or num_regions is None:
            raise ValueError("the data loader yielded no batch; nothing to evaluate.")
        return self._results(subsets, case_ids, num_regions, rows, slices)

    def _evaluate_batch(
        self,
        image: torch.Tensor,
        label: Any,
        data_available: torch.Tensor,
        subsets: list[tuple[bool, ...]],
        ids: list[str],
        seen: int,
    ) -> tuple[dict[str, np.ndarray], list[CaseSlice]]:
        """Scores ``{metric: [B, subsets, regions]}`` of one batch under every subset, and its overlay slices."""
        batch_size, num_regions = image.shape[0], label.shape[1]
        scores: dict[str, np.ndarray] = {}
        kept = [
            self._new_slice(image[i], label[i], data_available[i], ids[i], len(subsets), seen + i)
            for i in range(batch_size)
        ]
        for s, available, usable in under_subsets(data_available, subsets):
            members = usable.nonzero().flatten().tolist()
            preds = self._predict(image[usable], available[usable], [ids[i] for i in members], s, subsets)
            for pred, i in zip(preds, members):
                for metric, values in self._score(pred, label[i]).items():
                    if metric not in scores:
                        scores[metric] = np.full((batch_size, len(subsets), num_regions), np.nan)
                    scores[metric][i, s] = values
                if kept[i] is not None:
                    kept[i].prediction[s] = pred[:, kept[i].index].bool().cpu().numpy()
        if not scores:  # no case of this batch had any modality of any subset
            scores = {"dice": np.full((batch_size, len(subsets), num_regions), np.nan)}
            scores["hd95"] = scores["dice"].copy()
        return scores, [k for k in kept if k is not None]

    def _new_slice(
        self,
        image: torch.Tensor,
        reference: Any,
        available: torch.Tensor,
        case_id: str,
        num_subsets: int,
        position: int,
    ) -> CaseSlice | None:
        """The overlay slice of one case (its largest reference area along the first spatial axis), or None."""
        if position >= self.overlay_cases or image.ndim < 3:
            return None
        ref = torch.as_tensor(reference).bool().cpu()
        area = ref.any(dim=0).flatten(1).sum(dim=1)
        index = int(area.argmax())
        return CaseSlice(
            case_id=case_id,
            index=index,
            image=image[:, index].float().cpu().numpy(),
            available=available.bool().cpu().numpy(),
            reference=ref[:, index].numpy(),
            prediction=np.zeros((num_subsets, *ref[:, index].shape), bool),
        )

    def _results(
        self,
        subsets: list[tuple[bool, ...]],
        case_ids: list[str],
        num_regions: int,
        rows: dict[str, list[np.ndarray]],
        slices: list[CaseSlice],
    ) -> SubsetResults:
        modality_names = self.modality_names or [f"m{m}" for m in range(len(subsets[0]))]
        region_names = self.region_names or [f"region{r}" for r in range(num_regions)]
        stacked = {metric: np.stack(values, axis=1) for metric, values in rows.items()}
        return SubsetResults(
            subsets=list(subsets),
            subset_names=[subset_name(s, modality_names) for s in subsets],
            case_ids=case_ids,
            region_names=region_names,
            modality_names=modality_names,
            dice=stacked.pop("dice"),
            hd95=stacked.pop("hd95"),
            importance=self._importance(modality_names),
            conventions=self.conventions(),
            extra=stacked,
            slices=slices,
        )

    def conventions(self) -> dict[str, Any]:
        """The scoring conventions in force, as written into the results."""
        return {
            "scoring_convention": self.convention.name,
            **{k: v for k, v in self.convention.describe().items() if k != "name"},
            "hd95_units": "mm, from the spacing of the array's own axes after every transform (voxels without an "
            "affine)",
            "postprocessing": self.postprocessing_description,
            "subset_with_no_case_modality": "NaN, left out of the means",
        }

    def _case_ids(self, batch: Mapping[str, Any], batch_size: int, offset: int) -> list[str]:
        ids = batch.get(self.case_id_key)
        if ids is None:
            return [f"case{offset + i}" for i in range(batch_size)]
        return [str(i) for i in ([ids] if isinstance(ids, str) else ids)]

    def _predict(
        self,
        image: torch.Tensor,
        available: torch.Tensor,
        ids: list[str],
        subset_index: int,
        subsets: list[tuple[bool, ...]],
    ) -> list[torch.Tensor]:
        packed = pack_available(image, available)
        with torch.autocast(self.device.type, enabled=self.amp):
            logits = torch.as_tensor(self.inferer(packed, self.network)).float()
        finite = torch.isfinite(logits.flatten(1)).all(dim=1)
        if not bool(finite.all()):
            case = ids[int((~finite).nonzero()[0])]
            names = self.modality_names or [f"m{m}" for m in range(len(subsets[0]))]
            raise DivergedNetworkError(
                f"the network's output is NaN or infinite for case '{case}' under subset "
                f"'{subset_name(subsets[subset_index], names)}': its weights come from a diverged run and are not "
                "scored. Evaluate an earlier checkpoint, or retrain with a lower learning rate or gradient clipping "
                "(max_grad_norm)."
            )
        return [self.postprocessing(l) for l in logits]

    def _score(self, pred: torch.Tensor, reference: Any) -> dict[str, np.ndarray]:
        """Dice, HD95 and the extra metrics per region channel of one sample."""
        spacing = voxel_spacing(reference)
        ref = torch.as_tensor(reference).to(pred.device).bool()
        dice, hd95 = score_regions(pred, ref, self.convention, spacing)
        scores = {"dice": dice, "hd95": hd95}
        if self.extra_scorer is not None:
            for name, values in self.extra_scorer(pred.bool(), ref, spacing).items():
                if name in scores:
                    raise ValueError(f"the extra scorer returned '{name}', which is already a metric.")
                scores[name] = np.asarray(values, dtype=np.float64)
        return scores

    def _importance(self, modality_names: list[str]) -> dict[str, float] | None:
        if self.importance is None:
            return None
        if isinstance(self.importance, Mapping):
            return {str(k): float(v) for k, v in self.importance.items()}
        values = torch.as_tensor(self.importance).detach().flatten().tolist()
        if len(values) != len(modality_names):
            raise ValueError(f"importance has {len(values)} values for {len(modality_names)} modalities.")
        return dict(zip(modality_names, map(float, values)))
