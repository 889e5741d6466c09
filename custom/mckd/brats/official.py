"""Lesion-wise metrics (BraTS 2023+) from the official ``brats-evaluation`` package, as an optional extra scorer.

The package (PyPI ``brats-evaluation``, built on panoptica) is AGPL-3.0: it is an optional extra
(``pip install "mckd[brats-eval]"``, which also pins numpy below 2.3), imported only when a :class:`LesionWiseScorer`
is created, and none of its code is copied here. The global Dice and HD95 that the report always shows follow its
rules under the ``official`` convention (:mod:`mckd.scoring`) without it.

The scorer turns one sample's region channels (ET, TC, WT, and RC for a BraTS 2024 post-treatment run) into BraTS
2024 label maps (ET = 3, RC = 4; without an RC channel the same as the 2023 maps) and runs the package's own panoptica
configuration (``gli``: groups et, tc, wt and rc = label 4; connected components, matching at Dice > 1e-6) on the
arrays, passing the
spacing of the array's axes itself (reading the spacing from files, the package applies it in reversed axis order).
It returns, per region, the package's lesion-wise Dice and HD95 (``sq_dsc`` / ``sq_hd95``: the means over matched
lesions, as its ``parse_seg_results`` reports them; an infinite HD95 is written as 373, the package's penalty) and
the numbers of true-positive, false-positive and false-negative lesions.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mckd.brats.conventions import REGIONS
from mckd.brats.labels import RegionsToLabel, resolve_regions

__all__ = ["INSTALL_HINT", "LesionWiseScorer"]

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "mckd[brats-eval]"  (or: pip install "brats-evaluation==0.0.10")'
#: The package's group names of the BraTS 2023+ glioma configurations, per region (RC: ``gli`` and ``mets`` only).
_GROUPS = {"ET": "et", "TC": "tc", "WT": "wt", "RC": "rc"}
#: The label convention the region channels are composed in (the package's ``gli`` values: ET 3, RC 4).
_LABELS = "brats2024"
#: What the package writes instead of an infinite HD95.
_MISSED_HD95 = 373.0


def _load_package(config: str) -> Any:
    """The package's panoptica evaluator for the bundled ``config``; an ImportError with the install command."""
    try:
        import brats_evaluation  # noqa: PLC0415 - optional AGPL extra, imported only on request
        from panoptica import Panoptica_Evaluator  # noqa: PLC0415
    except ImportError as err:
        raise ImportError(
            f"lesion-wise metrics need the official BraTS evaluation package, which is not installed ({err}). "
            f"Install it with: {INSTALL_HINT}"
        ) from err
    return Panoptica_Evaluator.load_from_config(brats_evaluation.config_path(config))


class LesionWiseScorer:
    """Extra scorer for :class:`mckd.evaluation.SubsetEvaluator`: the official package's lesion-wise metrics.

    Args:
        config: name of the package's bundled configuration. Default ``"gli"`` (BraTS 2023+ glioma, RC included).
        region_names: the region channels, in order; None (default) gives :data:`REGIONS` (ET, TC, WT).

    Raises:
        ImportError: when ``brats-evaluation`` is not installed, naming the install command.
        ValueError: when the configuration has no group for one of ``region_names`` (its lesion-wise metrics do not
            cover that region), naming the regions and the configuration's groups.
    """

    #: Metric names added to the results, in order.
    METRICS = ("lesionwise_dice", "lesionwise_hd95", "lesions_tp", "lesions_fp", "lesions_fn")

    def __init__(self, config: str = "gli", region_names: Sequence[str] | None = None) -> None:
        self.config = config
        self.region_names = resolve_regions(region_names, REGIONS)
        self.evaluator = _load_package(config)
        groups = set(getattr(self.evaluator, "segmentation_class_groups_names", _GROUPS.values()))
        uncovered = [r for r in self.region_names if _GROUPS.get(r) not in groups]
        if uncovered:
            raise ValueError(
                f"the official package's '{config}' configuration has no lesion-wise group for the regions {uncovered} "
                f"(its groups: {sorted(groups)}); turn lesion_wise off or score only regions it covers."
            )
        self.to_label = RegionsToLabel(convention=_LABELS, threshold=None, regions=self.region_names)

    def __call__(
        self, pred: torch.Tensor, reference: torch.Tensor, spacing: Sequence[float] | None = None
    ) -> dict[str, list[float]]:
        """Lesion-wise metrics per region of one sample (binary ``[R, *S]`` prediction and reference, ``region_names``
        order)."""
        pred_label = self.to_label(torch.as_tensor(pred).cpu())[0].numpy()
        ref_label = self.to_label(torch.as_tensor(reference).cpu())[0].numpy()
        voxelspacing = tuple(float(v) for v in spacing) if spacing is not None else (1.0,) * pred_label.ndim
        groups = self.evaluator.evaluate(pred_label, ref_label, voxelspacing=voxelspacing, verbose=False)
        out: dict[str, list[float]] = {name: [] for name in self.METRICS}
        for region in self.region_names:
            result = groups[_GROUPS[region]].to_dict(True)
            hd95 = float(result.get("sq_hd95", math.nan))
            out["lesionwise_dice"].append(float(result.get("sq_dsc", math.nan)))
            out["lesionwise_hd95"].append(_MISSED_HD95 if np.isinf(hd95) else hd95)
            for key in ("tp", "fp", "fn"):
                out[f"lesions_{key}"].append(float(result.get(key, math.nan)))
        return out
