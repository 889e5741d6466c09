"""MONAI Label infer task that serves the BraTS MCKD bundle: MONAI Label's bundle task plus what the bundle needs.

MONAI Label's stock ``monaibundle`` app serves the bundle too (label names from ``outputs.pred.channel_def``, the
bundle's writers dropped as ``SaveImaged``, strict loading by the network itself; see ``docs/monailabel.md``). This
task adds what the stock app cannot do:

- reads the bundle's inference config with optional overlays (``inference.json`` + ``cpu_small.json`` for a model
  trained with the CPU configuration), as ``python -m monai.bundle run --config_file "[a, b]"`` does;
- the request parameter ``modalities`` (the subset the network sees; the loader itself treats an all-zero channel of
  the 4D image as a missing modality), checked before anything runs: a bad value is HTTP 422 with the reason;
- the modalities used, in the result JSON, and a case id for the bundle's messages;
- checks at start-up that the labels the metadata names are the values the configured ``output_convention`` writes;
- loads ``.pt`` weights through the bundle's ``checkpoints.load_objects`` (``weights_only=True``, checked before
  anything is loaded), so a truncated or code-carrying file fails with a message naming the file and the cause.

It serves the repository's bundle (``mckd`` installed) and a model-zoo export (code vendored as ``scripts.mckd``)
alike: the bundle's own copy of the code is used (:mod:`lib.bundle_code`).
"""

from __future__ import annotations

import copy
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from fastapi import HTTPException
from monai.bundle import ConfigParser
from monai.transforms import Compose
from monailabel.tasks.infer.bundle import BundleConstants, BundleInferTask

from lib.bundle_code import import_bundle_module, is_component
from lib.transforms import CaseIdFromPathd, ReportModalitiesd, SelectModalitiesd, parse_modalities

__all__ = ["MCKDBundleConstants", "MCKDBundleInferTask"]

logger = logging.getLogger(__name__)

#: HTTP status of a request whose parameters cannot be used (FastAPI's validation status).
BAD_PARAMETERS = 422


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
        ValueError: when the labels the metadata names disagree with the label convention the config writes, or when
            the postprocessing writes no label map or the preprocessing has no ``LoadModalitiesd``.
    """

    def __init__(
        self, path: str, conf: dict[str, str], config_files: Sequence[str] = ("inference.json",), **kwargs: Any
    ) -> None:
        super().__init__(
            path, conf, const=MCKDBundleConstants(config_files), type="segmentation", load_strict=True, **kwargs
        )
        if not self.valid:
            return
        self.modality_names = tuple(import_bundle_module(path, "brats.conventions").MODALITIES)
        self.image_stem = import_bundle_module(path, "brats.cases").image_stem
        self.load_objects = import_bundle_module(path, "checkpoints").load_objects
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
        """The bundle's postprocessing transforms, instantiated (the bundle folder on ``sys.path`` meanwhile)."""
        sys.path.insert(0, self.bundle_path)
        try:
            for key in self.const.key_postprocessing():
                if self.bundle_config.get(key):
                    content = self.bundle_config.get_parsed_content(key, instantiate=True)
                    return list(content.transforms) if isinstance(content, Compose) else list(content)
        finally:
            sys.path.remove(self.bundle_path)
        return []

    def _check_labels_match_config(self) -> None:
        """Fail when the label values named in the metadata are not the values the postprocessing writes."""
        composers = [t for t in self._postprocessing() if is_component(t, "brats.labels.RegionsToLabeld")]
        if not composers:
            raise ValueError(f"{self.bundle_config_path}: no RegionsToLabeld in the postprocessing writes a label map.")
        convention = composers[-1].composer.convention
        if set(self.labels.values()) != set(convention.labels):
            raise ValueError(
                f"metadata.json names the label values {sorted(self.labels.values())} but the inference config writes "
                f"the '{convention.name}' convention {sorted(convention.labels)}; make outputs.pred.channel_def "
                "match output_convention."
            )

    def __call__(self, request: dict[str, Any], callbacks: Any = None) -> tuple[Any, dict]:
        """Check the request's parameters, then infer as MONAI Label's bundle task does.

        Raises:
            HTTPException: 422 with the reason, for a ``modalities`` value that names no, an unknown or a repeated
                modality, or that is neither a list of names nor a string.
        """
        value = request.get("modalities")
        if value is not None and not (isinstance(value, str) and not value.strip()):
            try:
                parse_modalities(value, self.modality_names)
            except (TypeError, ValueError) as err:
                raise HTTPException(status_code=BAD_PARAMETERS, detail=str(err)) from err
        return super().__call__(request, callbacks)

    def pre_transforms(self, data: dict[str, Any] | None = None) -> Sequence[Callable]:
        """The bundle's preprocessing with the case id and the modality selection before its ``LoadModalitiesd``."""
        pre = list(super().pre_transforms(data))
        index = next((i for i, t in enumerate(pre) if is_component(t, "brats.loading.LoadModalitiesd")), None)
        if index is None:
            raise ValueError(f"{self.bundle_config_path}: the preprocessing has no LoadModalitiesd to load the case.")
        loader = pre[index]
        case_id = CaseIdFromPathd(self.image_stem, case_id_key=loader.case_id_key)
        select = SelectModalitiesd(self.modality_names, available_key=loader.available_key)
        return [*pre[:index], case_id, select, *pre[index:]]

    def post_transforms(self, data: dict[str, Any] | None = None) -> Sequence[Callable]:
        """The bundle's postprocessing without its writers, MONAI Label's ``Restored``, and the modalities report."""
        post = list(super().post_transforms(data))
        return [*post, ReportModalitiesd(self.modality_names, result_key=self.output_json_key)]

    def _get_network(self, device: str, data: dict[str, Any] | None) -> Any:
        """The network with the checkpoint's weights, cached per device until the file changes (as MONAI Label does).

        Differs from :meth:`BasicInferTask._get_network` only in how a ``.pt`` checkpoint is read: with the bundle's
        ``checkpoints.load_objects``. TorchScript models and a request's own ``model_filename`` go to MONAI Label's
        method.

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
        self.load_objects({self.model_state_dict: network}, path, map_location=torch.device(device), strict=True)
        network.train(self.train_mode)
        self._networks[device] = (network, modified)
        return network
