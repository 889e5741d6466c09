"""Dice and HD95 of binary region masks under a named scoring convention, with the spacing of the array's own axes.

Published BraTS numbers depend on rules that the metric formulas leave open: what a region that is empty in the
reference *and* the prediction scores, what a region missed or invented scores, and how the 95th percentile of the
surface distances is taken. Two conventions are named here (:data:`SCORING_CONVENTIONS`):

``brats_legacy`` — the online evaluation of BraTS 2018-2021 (CBICA's Image Processing Portal, then Synapse), which
the MCKD paper's BraTS 2018 tables used. Its code was not published as one program; the rules below are those its
users documented and re-implemented:

- reference and prediction both empty: Dice 1, HD95 0; exactly one of them empty: Dice 0, HD95 373.13, the diagonal
  of the 240 x 240 x 155 1 mm volume (F. Isensee in MIC-DKFZ/nnUNet issue #134; nnU-Net's re-implementation of the
  BraTS evaluation, ``compute_BraTS_dice`` / ``compute_BraTS_HD95`` in
  ``nnunet/dataset_conversion/Task082_BraTS_2020.py``, uses 373.12866; MONAI research-contributions issue #384
  shows the 2020 portal returning Dice 0 / HD95 373 for such cases);
- HD95: medpy's ``hd95``, the 95th percentile of the surface distances of both directions pooled together (CBICA's
  ``Hausdorff95`` command-line tool, github.com/CBICA/HausdorffCLI, calls ``medpy.metric.binary.hd95``), in mm.

``official`` — the ``brats-evaluation`` package (0.0.10, the evaluation of BraTS 2023+, built on panoptica), its
global (not lesion-wise) metrics as its ``parse_seg_results`` reports them:

- reference and prediction both empty: Dice and HD95 NaN, so the case is left out of that region's means;
- no voxel in common (one side empty, or both non-empty but disjoint): Dice 0, HD95 373 (panoptica returns infinity;
  the package replaces it with 373, "the diameter of the cube in SRI space");
- HD95: the pooled 95th percentile as above. The package computes its global HD95 on the voxel grid (it ignores the
  file's spacing, and its lesion-wise HD95 applies the spacing in reversed axis order); BraTS images are 1 mm
  isotropic, where that makes no difference. Here distances are always in mm.

MONAI's ``HausdorffDistanceMetric(percentile=95)`` takes the larger of the two directed 95th percentiles instead of
the percentile of the pooled distances: a few hundredths of a mm apart on typical masks. The edges and distances
themselves come from MONAI (``get_edge_surface_distance``); only the pooling is done here, because MONAI offers no
pooled percentile.

Spacing: MONAI's ``Transposed`` (the BraTS bundle reorders its arrays to D, H, W with it) permutes the array but
leaves the affine describing the old axis order. :func:`voxel_spacing` therefore reads the spacing from the affine
(MONAI's ``affine_to_spacing``) and applies every transpose that MONAI recorded in the tensor's
``applied_operations`` after it, so the spacing is that of the array's own axes whatever transforms ran.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.metrics import compute_dice
from monai.metrics.utils import get_edge_surface_distance
from monai.utils import TraceKeys

__all__ = [
    "BRATS_DIAGONAL_MM",
    "ScoringConvention",
    "SCORING_CONVENTIONS",
    "scoring_convention",
    "voxel_spacing",
    "pooled_hd95",
    "score_regions",
]

#: Diagonal of the 240 x 240 x 155 1 mm BraTS volume (373.1287 mm): the legacy evaluator's HD95 for a missed region.
BRATS_DIAGONAL_MM = math.sqrt(240**2 + 240**2 + 155**2)
_TRANSPOSES = ("Transposed", "Transpose")


@dataclass(frozen=True)
class ScoringConvention:
    """How Dice and HD95 treat empty and non-overlapping regions; see the module docstring for the named ones.

    Attributes:
        name: identifier used in configs and reports (``"brats_legacy"``, ``"official"``).
        both_empty_dice: Dice when reference and prediction are both empty (NaN: left out of the means).
        both_empty_hd95: HD95 in that case.
        missed_hd95: HD95 when exactly one of reference and prediction is empty (Dice is then 0).
        disjoint_hd95: HD95 when both are non-empty but share no voxel; None computes the distance.
        summary: one sentence for reports.
        source: where the rules come from.
    """

    name: str
    both_empty_dice: float
    both_empty_hd95: float
    missed_hd95: float
    disjoint_hd95: float | None
    summary: str
    source: str

    def describe(self) -> dict[str, Any]:
        """The convention as a JSON-serialisable dict (NaN written as the string ``"NaN"``)."""
        return {k: ("NaN" if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


SCORING_CONVENTIONS: dict[str, ScoringConvention] = {
    "brats_legacy": ScoringConvention(
        name="brats_legacy",
        both_empty_dice=1.0,
        both_empty_hd95=0.0,
        missed_hd95=BRATS_DIAGONAL_MM,
        disjoint_hd95=None,
        summary=(
            "BraTS 2018-2021 online evaluation: both empty -> Dice 1, HD95 0; one side empty -> Dice 0, HD95 373.13 "
            "mm; HD95 = 95th percentile of the pooled surface distances of both directions, in mm"
        ),
        source=(
            "as documented by its users: MIC-DKFZ/nnUNet issue #134 and nnU-Net's Task082_BraTS_2020.py "
            "(compute_BraTS_dice / compute_BraTS_HD95); CBICA's Hausdorff95 tool (github.com/CBICA/HausdorffCLI, "
            "medpy hd95)"
        ),
    ),
    "official": ScoringConvention(
        name="official",
        both_empty_dice=math.nan,
        both_empty_hd95=math.nan,
        missed_hd95=373.0,
        disjoint_hd95=373.0,
        summary=(
            "brats-evaluation package (BraTS 2023+), global metrics: both empty -> NaN (left out of the means); "
            "no common voxel -> Dice 0, HD95 373; HD95 = 95th percentile of the pooled surface distances, in mm"
        ),
        source="brats-evaluation 0.0.10 (PyPI; panoptica 2.1.7), evaluate_single_exam + parse_seg_results",
    ),
}

ConventionLike = str | ScoringConvention


def scoring_convention(convention: ConventionLike) -> ScoringConvention:
    """The :class:`ScoringConvention` named ``convention`` (an instance is returned as is).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if isinstance(convention, ScoringConvention):
        return convention
    if convention not in SCORING_CONVENTIONS:
        raise ValueError(
            f"unknown scoring convention '{convention}'; choose one of {', '.join(map(repr, SCORING_CONVENTIONS))}."
        )
    return SCORING_CONVENTIONS[convention]


def voxel_spacing(image: Any) -> tuple[float, ...] | None:
    """Spacing (mm) of the spatial axes of a channel-first ``image`` as they are now, or None for a plain tensor.

    The affine gives the spacing of the axes it describes (column norms, MONAI's ``affine_to_spacing``: correct for
    oblique affines too); MONAI's ``Transpose(d)`` permutes the array without updating the affine, so every transpose
    recorded in ``image.applied_operations`` is applied to that spacing in order.

    Raises:
        ValueError: when a recorded transpose moves the channel axis (the spatial axes cannot then be matched).
    """
    if not isinstance(image, MetaTensor):
        return None
    spatial = image.ndim - 1
    affine = image.affine
    if affine.ndim == 3:  # a batched affine left on an item
        affine = affine[0]
    spacing = [float(v) for v in affine_to_spacing(affine.double(), r=spatial)]
    for operation in image.applied_operations:
        if not isinstance(operation, dict) or operation.get(TraceKeys.CLASS_NAME) not in _TRANSPOSES:
            continue
        indices = list(operation.get(TraceKeys.EXTRA_INFO, {}).get("indices", ()))
        if len(indices) != spatial + 1 or indices[0] != 0:
            raise ValueError(f"a transpose with indices {indices} moved the channel axis; the spacing is unknown.")
        spacing = [spacing[i - 1] for i in indices[1:]]
    return tuple(spacing)


def pooled_hd95(pred: torch.Tensor, reference: torch.Tensor, spacing: Sequence[float] | None = None) -> float:
    """95th percentile of the surface distances of both directions pooled together (medpy / panoptica ``hd95``).

    Edges and Euclidean distances are MONAI's (``get_edge_surface_distance``). Both masks must be non-empty.

    Args:
        pred: binary mask ``[*S]``.
        reference: binary mask ``[*S]``.
        spacing: voxel spacing per axis in mm; None means 1.
    """
    _, distances, _ = get_edge_surface_distance(
        pred.bool(), reference.bool(), spacing=None if spacing is None else list(spacing), symmetric=True
    )
    pooled = np.concatenate([torch.as_tensor(d).detach().cpu().double().numpy() for d in distances])
    return float(np.percentile(pooled, 95))


def score_regions(
    pred: torch.Tensor,
    reference: torch.Tensor,
    convention: ConventionLike = "brats_legacy",
    spacing: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Dice and HD95 per region channel of one sample under ``convention``.

    Args:
        pred: binary prediction ``[R, *S]``.
        reference: binary reference ``[R, *S]``.
        convention: a name in :data:`SCORING_CONVENTIONS` or a :class:`ScoringConvention`.
        spacing: voxel spacing per spatial axis in mm (see :func:`voxel_spacing`); None means 1.

    Returns:
        ``(dice [R], hd95 [R])`` as float64 arrays.
    """
    rules = scoring_convention(convention)
    ref = torch.as_tensor(reference).to(torch.as_tensor(pred).device).bool()
    pred = torch.as_tensor(pred).bool()
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and reference {tuple(ref.shape)} differ in shape.")
    dice = compute_dice(pred[None].float(), ref[None].float(), include_background=True, ignore_empty=False)[0]
    dice = dice.cpu().double().numpy()
    hd95 = np.empty(pred.shape[0])
    for r in range(pred.shape[0]):
        pred_any, ref_any = bool(pred[r].any()), bool(ref[r].any())
        if not pred_any and not ref_any:
            dice[r], hd95[r] = rules.both_empty_dice, rules.both_empty_hd95
        elif pred_any != ref_any:
            dice[r], hd95[r] = 0.0, rules.missed_hd95
        elif rules.disjoint_hd95 is not None and not bool((pred[r] & ref[r]).any()):
            hd95[r] = rules.disjoint_hd95
        else:
            hd95[r] = pooled_hd95(pred[r], ref[r], spacing)
    return dice, hd95
