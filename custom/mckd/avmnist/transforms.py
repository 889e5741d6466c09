"""AV-MNIST dictionary transforms that MONAI lacks: restrict a sample to a subset of its modalities."""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from .conventions import MODALITIES

__all__ = ["KeepModalitiesd"]


class KeepModalitiesd(MapTransform):
    """Keep only the modalities named in ``keep``: the others are marked missing in ``available`` and zeroed.

    Evaluation uses it to score each input set (image only, audio only, both), inference to honour which inputs a
    user provides. A modality the sample already lacks stays missing.

    Args:
        keep: modality names (from :data:`~mckd.avmnist.conventions.MODALITIES`) to keep.
        keys: the modality keys, in availability order. Default ``("image", "audio")``.
        available_key: key of the boolean ``[M]`` availability; created (all present) when absent.
        allow_missing_keys: do not raise when a modality key is absent from the sample.

    Raises:
        ValueError: when ``keep`` is empty or names an unknown modality.
    """

    def __init__(
        self,
        keep: Sequence[str],
        keys: KeysCollection = MODALITIES,
        available_key: str = "available",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        unknown = [name for name in keep if name not in self.keys]
        if not keep or unknown:
            raise ValueError(f"keep must name one or more of {list(self.keys)}; got {list(keep)}.")
        self.keep = np.array([key in keep for key in self.keys], dtype=bool)
        self.available_key = available_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        available = np.asarray(d.get(self.available_key, np.ones(len(self.keys), dtype=bool)), dtype=bool)
        if available.shape != self.keep.shape:
            raise ValueError(f"'{self.available_key}' must have {self.keep.size} entries, got shape {available.shape}.")
        available = available & self.keep
        for index, key in enumerate(self.keys):
            if key not in d:
                if not self.allow_missing_keys:
                    raise KeyError(f"key '{key}' is not in the sample; set allow_missing_keys=True to skip it.")
                continue
            if not available[index]:
                d[key] = torch.zeros_like(d[key]) if isinstance(d[key], torch.Tensor) else np.zeros_like(d[key])
        d[self.available_key] = available
        return d
