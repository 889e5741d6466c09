"""Transforms the MONAI Label app adds around the bundle's own: case id, modality selection, modality report.

MONAI Label serves one image per case, so a BraTS case is one 4D image with the channels FLAIR, T1, T1ce, T2
(``mckd.brats.conventions.MODALITIES``, the MSD Task01 order). A case with fewer modalities keeps all four channels
and stores an absent modality as a channel that is exactly zero everywhere; the bundle's loader
(:class:`mckd.brats.loading.LoadModalities`, ``zero_is_missing``) treats such a channel as missing. A request can
also name the modalities to use (parameter ``modalities``) to ignore channels that do hold data.

The transforms take the bundle's facts (modality names, the case model's file-name rule) as arguments, so they work
with the bundle's own copy of ``mckd`` (see :mod:`lib.bundle_code`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.transforms import MapTransform

__all__ = ["parse_modalities", "CaseIdFromPathd", "SelectModalitiesd", "ReportModalitiesd"]


def parse_modalities(value: Any, names: Sequence[str]) -> list[str]:
    """Modality names from a request value: a list of names or one comma-separated string, any letter case.

    Raises:
        ValueError: for an unknown name, a repeated name or an empty selection.
        TypeError: for a value that is neither a string nor a list of strings.
    """
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        items = list(value)
    else:
        raise TypeError(f"'modalities' must be a list of names or a comma-separated string, got {value!r}.")
    chosen = [v.strip().lower() for v in items if v.strip()]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise ValueError(f"unknown modalities {unknown} in 'modalities'; expected names from {list(names)}.")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"'modalities' names a modality twice: {chosen}.")
    if not chosen:
        raise ValueError(f"'modalities' selects no modality; name at least one of {list(names)}.")
    return chosen


class CaseIdFromPathd(MapTransform):
    """Name the case after its image file (``BRATS_001.nii.gz`` -> ``BRATS_001``) for the bundle's messages.

    MONAI Label's request carries the image path (``image_path``) but no case id; the bundle's loader names the case
    in its warnings and errors. The name follows the case model's rule for a 4D image (its file name without the
    image extension, ``mckd.brats.cases.image_stem``), so a case has the same id here as in data preparation
    and bundle inference. A case id already in the data is kept.

    Args:
        stem: the case model's rule: a file name without its image extension, or None for a non-image name.
        path_key: key of the image path. Default ``"image_path"`` (set by MONAI Label).
        case_id_key: key the bundle's loader reads the case id from. Default ``"case_id"``.
    """

    def __init__(
        self, stem: Callable[[str], str | None], path_key: str = "image_path", case_id_key: str = "case_id"
    ) -> None:
        super().__init__(keys=path_key, allow_missing_keys=True)
        self.stem = stem
        self.path_key = path_key
        self.case_id_key = case_id_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        path = d.get(self.path_key)
        if d.get(self.case_id_key) or not isinstance(path, (str, os.PathLike)):
            return d
        name = os.path.basename(os.path.normpath(str(path)))
        d[self.case_id_key] = self.stem(name) or name
        return d


class SelectModalitiesd(MapTransform):
    """Turn the request parameter ``modalities`` (names) into the availability mask the bundle's loader reads.

    Runs before :class:`mckd.brats.loading.LoadModalitiesd`, which zeroes the channels marked unavailable. A request
    without the parameter is left as it is (every channel is used unless it is zero everywhere).

    Args:
        names: the modality names in channel order (``mckd.brats.conventions.MODALITIES``).
        modalities_key: request key holding the names, e.g. ``["flair", "t1ce"]`` or ``"flair,t1ce"``.
            Default ``"modalities"``.
        available_key: where the mask (one bool per modality, in ``names`` order) is written. Default ``"available"``.

    Raises:
        ValueError: for an unknown or repeated name or an empty selection (see :func:`parse_modalities`).
        TypeError: for a value that is neither a string nor a list of strings.
    """

    def __init__(
        self, names: Sequence[str], modalities_key: str = "modalities", available_key: str = "available"
    ) -> None:
        super().__init__(keys=modalities_key, allow_missing_keys=True)
        self.modalities_key = modalities_key
        self.available_key = available_key
        self.names = tuple(names)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        value = d.get(self.modalities_key)
        if value is None or (isinstance(value, str) and not value.strip()):
            return d
        chosen = parse_modalities(value, self.names)
        d[self.available_key] = [name in chosen for name in self.names]
        return d


class ReportModalitiesd(MapTransform):
    """Record the modalities the network used in the result JSON that MONAI Label returns with the label map.

    When the bundle's loader aligned modalities on different grids, the result also names the reference modality
    (``reference_modality``: the label map lies on its grid) and holds the alignment report (``alignment``).

    Args:
        names: modality names in channel order (``mckd.brats.conventions.MODALITIES``).
        available_key: key of the ``[M]`` availability mask. Default ``"available"``.
        result_key: key of MONAI Label's result JSON (``output_json_key`` of the infer task). Default ``"result"``.
        alignment_key: key of the loader's alignment report (JSON text). Default ``"alignment"``.
    """

    def __init__(
        self,
        names: Sequence[str],
        available_key: str = "available",
        result_key: str = "result",
        alignment_key: str = "alignment",
    ) -> None:
        super().__init__(keys=available_key)
        self.available_key = available_key
        self.result_key = result_key
        self.alignment_key = alignment_key
        self.names = tuple(names)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        available = torch.as_tensor(d[self.available_key], dtype=torch.bool).tolist()
        result = dict(d.get(self.result_key) or {})
        result["modalities"] = [n for n, a in zip(self.names, available) if a]
        if isinstance(d.get(self.alignment_key), str):
            report = json.loads(d[self.alignment_key])
            result["reference_modality"] = report["reference"]
            result["alignment"] = report
        d[self.result_key] = result
        return d
