"""``data_prep.brats --resample-to MODALITY``: copies of cases whose modalities lie on different grids, on one grid.

Training reads co-registered volumes on one voxel grid. A case whose modalities (or label map) do not share the grid
of its ``MODALITY`` image is read with :class:`mckd.brats.loading.LoadModalities` (``grid="resample"``: world
coordinates, trilinear) and written as a copy beside the datalist, with the label map resampled by nearest neighbour;
a case already on one grid keeps its files. The inputs are never written.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from monai.data import MetaTensor
from monai.transforms import LoadImage, SpatialResample

from mckd.brats.alignment import AlignmentReport
from mckd.brats.cases import GEOMETRY_ATOL_MM, Case
from mckd.brats.conventions import LAYOUTS, MODALITIES
from mckd.brats.loading import LoadModalities, read_checked
from mckd.brats.writing import SaveCasePrediction

__all__ = ["resample_case"]

logger = logging.getLogger(__name__)


def _on_grid(image: MetaTensor, reference: MetaTensor) -> bool:
    return tuple(image.shape[1:]) == tuple(reference.shape[1:]) and bool(
        np.abs(np.asarray(image.affine, float) - np.asarray(reference.affine, float)).max() <= GEOMETRY_ATOL_MM
    )


def _label_on(case: Case, reference: MetaTensor) -> tuple[MetaTensor, bool]:
    """The case's label map on the reference grid (nearest neighbour), and whether it had to be resampled."""
    label = read_checked(LoadImage(image_only=True, ensure_channel_first=True, dtype=None), case.label, case.case_id, 1)
    if _on_grid(label, reference):
        return label, False
    resampled = SpatialResample(mode="nearest", padding_mode="zeros")(
        label, dst_affine=reference.affine, spatial_size=reference.shape[1:]
    )
    return resampled, True


def resample_case(case: Case, reference: str, folder: Path) -> Case:
    """``case`` on the grid of its ``reference`` modality: a copy under ``folder/<case id>/`` when needed.

    Args:
        case: a per-modality case (a 4D image has one grid and is returned as it is).
        reference: the modality key whose grid the copy uses (``"auto"``: the highest-resolution one).
        folder: where copies go (outside the dataset).

    Returns:
        the case itself when every modality and the label already share the reference grid, else the copy.

    Raises:
        CaseError: when the case cannot be read or aligned (see :class:`~mckd.brats.loading.LoadModalities`).
    """
    if case.four_d:
        return case
    image, available = LoadModalities(grid="resample", reference=reference)(case.images, case_id=case.case_id)
    moved = any(grid.resampled for grid in AlignmentReport.from_json(image.meta["alignment"]).modalities.values())
    label, label_moved = (None, False) if case.label is None else _label_on(case, image)
    if not moved and not label_moved:
        return case
    out = folder / case.case_id
    spec = LAYOUTS[case.layout]
    images = []
    for m, modality in enumerate(MODALITIES):
        if not available[m]:
            images.append(None)
            continue
        channel = MetaTensor(image[m : m + 1].as_tensor(), meta=dict(image.meta))
        suffix = f"{spec.separator}{spec.modality_suffixes[modality]}"
        images.append(
            SaveCasePrediction(out, postfix=suffix, output_dtype=np.float32)(channel, case.case_id, case.inputs)
        )
    label_path = case.label
    if label_moved:
        writer = SaveCasePrediction(out, postfix=f"{spec.separator}{spec.label_suffix}", output_dtype=np.uint8)
        label_path = writer(label, case.case_id, case.inputs)
    logger.info("case '%s': resampled onto its %s grid into %s", case.case_id, reference, out)
    return Case(case.case_id, tuple(images), label_path, case.layout, out, case.group)
