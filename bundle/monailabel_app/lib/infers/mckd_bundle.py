"""MONAI Label infer task that serves the BraTS MCKD bundle: MONAI Label's bundle task plus what the bundle needs.

What it changes in :class:`monailabel.tasks.infer.bundle.BundleInferTask` (and why, see ``docs/monailabel.md``):

- reads the bundle's inference config with optional overlays (``inference.json`` + ``cpu_small.json`` for a model
  trained with the CPU configuration), as ``python -m monai.bundle run --config_file "[a, b]"`` does;
- names the labels of the label map the bundle writes (``post_processed_outputs`` in the metadata: 1 / 2 / 4) instead
  of the network's raw region channels (``outputs``: ET / TC / WT as channels 0 / 1 / 2);
- drops the bundle's own writers (:class:`mckd.brats.writing.CaseWriterd`: the prediction, the alignment report, the
  copies on each input's grid; they need a case id and write into the bundle folder) besides ``SaveImaged``; MONAI
  Label writes and returns the label map itself;
- gives the bundle's loader a case id and the modality selection of the request (parameter ``modalities``; the
  loader itself treats an all-zero channel of the 4D image as a missing modality), and reports the modalities used
  in the result JSON;
- loads the weights strictly and through :func:`mckd.checkpoints.load_objects` (``weights_only=True``, checked before
  anything is loaded), so a checkpoint of another backbone, a truncated or a code-carrying file fails with a message
  naming the file and the cause instead of serving random weights or PyTorch's bare error.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose, SaveImaged
from monailabel.tasks.infer.bundle import BundleConstants, BundleInferTask

from lib.transforms import CaseIdFromPathd, ReportModalitiesd, SelectModalitiesd
from mckd.brats.labels import RegionsToLabeld
from mckd.brats.loading import LoadModalitiesd
from mckd.brats.writing import CaseWriterd
from mckd.checkpoints import load_objects

__all__ = ["MCKDBundleConstants", "MCKDBundleInferTask", "post_processed_labels"]

logger = logging.getLogger(__name__)


def post_processed_labels(metadata: Mapping[str, Any]) -> dict[str, int]:
    """``{name.lower(): value}`` of the written label map, from the metadata's first ``post_processed_outputs`` entry.

    Background is skipped, as MONAI Label does for ``outputs``.

    Raises:
        ValueError: when the metadata has no ``post_processed_outputs`` entry with a ``channel_def``.
    """
    outputs = metadata.get("network_data_format", {}).get("post_processed_outputs") or {}
    if not outputs:
        raise ValueError("metadata.json has no network_data_format.post_processed_outputs entry naming the labels.")
    key, output = next(iter(outputs.items()))
    channel_def = output.get("channel_def") or {}
    if not channel_def:
        raise ValueError(f"metadata.json: network_data_format.post_processed_outputs.{key} has no channel_def.")
    return {str(name).lower(): int(value) for value, name in channel_def.items() if str(name).lower() != "background"}


class MCKDBundleConstants(BundleConstants):
    """Bundle constants whose inference config is the first of ``config_files`` (the rest are overlays).

    Args:
        config_files: config file names under the bundle's ``configs/``, merged in order. Default
            ``("inference.json",)``.

    Raises:
        ValueError: when ``config_files`` is empty.
    """

    def __init__(self, config_files: Sequence[str] = ("inference.json",)) -> None:
        if not config_files:
            raise ValueError("config_files must name at least the inference config, got an empty list.")
        self.config_files = tuple(config_files)

    def configs(self) -> Sequence[str]:
        """The inference config MONAI Label looks for (overlays are merged by the task)."""
        return [self.config_files[0]]


class MCKDBundleInferTask(BundleInferTask):
    """Segment a BraTS case (one 4D image: FLAIR, T1, T1ce, T2) with the MCKD bundle from any subset of modalities.

    Args:
        path: the bundle folder (holding ``configs/`` and ``models/model.pt`` or ``models/model.ts``).
        conf: the app's ``--conf`` options (``preload`` is honoured as in MONAI Label's bundle task).
        config_files: inference config and overlays under ``configs/``, merged in order. Default
            ``("inference.json",)``.
        kwargs: further arguments of :class:`~monailabel.tasks.infer.bundle.BundleInferTask`.

    Raises:
        FileNotFoundError: when an overlay config does not exist.
        ValueError: when the metadata does not name the labels of the written map, when those labels disagree with
            the label convention the config writes, or when the preprocessing has no ``LoadModalitiesd``.
    """

    def __init__(
        self, path: str, conf: dict[str, str], config_files: Sequence[str] = ("inference.json",), **kwargs: Any
    ) -> None:
        super().__init__(
            path,
            conf,
            const=MCKDBundleConstants(config_files),
            type="segmentation",
            post_filter=[SaveImaged, CaseWriterd],
            load_strict=True,
            **kwargs,
        )
        if not self.valid:
            return
        with open(os.path.join(path, "configs", self.const.metadata_json())) as fp:
            self.labels = post_processed_labels(json.load(fp))
        self._check_labels_match_config()

    def _load_bundle_config(self, path: str, config: str) -> ConfigParser:
        """The inference config merged with the overlays, with ``bundle_root`` set to ``path``."""
        files = [config]
        for name in self.const.config_files[1:]:
            overlay = os.path.join(path, "configs", name)
            if not os.path.exists(overlay):
                raise FileNotFoundError(f"bundle config overlay '{overlay}' does not exist.")
            files.append(overlay)
        parser = ConfigParser()
        parser.read_config(files)
        parser.config.update({self.const.key_bundle_root(): path})
        logger.info("bundle configs: %s", files)
        return parser

    def _postprocessing(self) -> list[Callable]:
        """The bundle's postprocessing transforms, instantiated."""
        for key in self.const.key_postprocessing():
            if self.bundle_config.get(key):
                content = self.bundle_config.get_parsed_content(key, instantiate=True)
                return list(content.transforms) if isinstance(content, Compose) else list(content)
        return []

    def _check_labels_match_config(self) -> None:
        """Fail when the label values named in the metadata are not the values the postprocessing writes."""
        composers = [t for t in self._postprocessing() if isinstance(t, RegionsToLabeld)]
        if not composers:
            raise ValueError(f"{self.bundle_config_path}: no RegionsToLabeld in the postprocessing writes a label map.")
        convention = composers[-1].composer.convention
        if set(self.labels.values()) != set(convention.labels):
            raise ValueError(
                f"metadata.json names the label values {sorted(self.labels.values())} but the inference config writes "
                f"the '{convention.name}' convention {sorted(convention.labels)}; make post_processed_outputs match "
                "output_convention."
            )

    def pre_transforms(self, data: dict[str, Any] | None = None) -> Sequence[Callable]:
        """The bundle's preprocessing with the case id and the modality selection before its ``LoadModalitiesd``."""
        pre = list(super().pre_transforms(data))
        index = next((i for i, t in enumerate(pre) if isinstance(t, LoadModalitiesd)), None)
        if index is None:
            raise ValueError(f"{self.bundle_config_path}: the preprocessing has no LoadModalitiesd to load the case.")
        loader = pre[index]
        case_id = CaseIdFromPathd(case_id_key=loader.case_id_key)
        select = SelectModalitiesd(available_key=loader.available_key)
        return [*pre[:index], case_id, select, *pre[index:]]

    def post_transforms(self, data: dict[str, Any] | None = None) -> Sequence[Callable]:
        """The bundle's postprocessing without its writers, MONAI Label's ``Restored``, and the modalities report."""
        post = list(super().post_transforms(data))
        return [*post, ReportModalitiesd(result_key=self.output_json_key)]

    def _get_network(self, device: str, data: dict[str, Any] | None) -> Any:
        """The network with the checkpoint's weights, cached per device until the file changes (as MONAI Label does).

        Differs from :meth:`BasicInferTask._get_network` only in how a ``.pt`` checkpoint is read: with
        :func:`mckd.checkpoints.load_objects`. TorchScript models and a request's own ``model_filename`` go to MONAI
        Label's method.

        Raises:
            CheckpointError: when the checkpoint is corrupted, holds a pickled object or does not fit the network.
        """
        path = self.get_path()
        if self.network is None or not path or (data and self._config.get("model_filename")):
            return super()._get_network(device, data)
        modified = os.stat(path).st_mtime
        cached = self._networks.get(device)
        if cached and cached[1] == modified:
            return cached[0]
        network = copy.deepcopy(self.network).to(torch.device(device))
        load_objects({self.model_state_dict: network}, path, map_location=torch.device(device), strict=self.load_strict)
        network.train(self.train_mode)
        self._networks[device] = (network, modified)
        return network
