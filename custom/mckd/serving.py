"""The inference network as serving applications load it: weights always loaded strictly.

MONAI Label's stock bundle infer task builds ``network_def`` from ``inference.json`` and loads ``models/model.pt``
with ``load_state_dict(..., strict=False)`` (its default ``load_strict=False``; the stock ``monaibundle`` app has no
option to change it). A checkpoint of another configuration (e.g. the light backbone's weights for the default
``resnet50_aspp`` network) then loads nothing and the app serves random weights, with only a log warning. The
inference config therefore builds :class:`StrictLoadingSegNet`, the same network whose ``load_state_dict`` is strict
whatever its caller asks, so a mismatch is an error naming the missing and unexpected keys in every application.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch.nn.modules.module import _IncompatibleKeys

from mckd.networks.segnet import MultiModalSegNet

__all__ = ["StrictLoadingSegNet"]


class StrictLoadingSegNet(MultiModalSegNet):
    """:class:`~mckd.networks.segnet.MultiModalSegNet` (same arguments, parameters and outputs) with strict loading.

    Only ``load_state_dict`` differs: ``strict`` is always True, so keys that are missing from the checkpoint or that
    the network does not have raise PyTorch's ``RuntimeError`` listing them, also for callers that pass
    ``strict=False`` (MONAI Label's bundle infer task).
    """

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> _IncompatibleKeys:
        """Load ``state_dict`` strictly (``strict`` is ignored: see the class docstring)."""
        return super().load_state_dict(state_dict, strict=True, assign=assign)
