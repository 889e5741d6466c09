"""MONAI Label app that serves the BraTS MCKD bundle (segmentation from any subset of FLAIR, T1, T1ce, T2).

Start it with MONAI Label's own command (its options after ``--conf``; see ``docs/monailabel.md``)::

    monailabel start_server --app bundle/monailabel_app --studies /path/to/4d_cases \
        --host 127.0.0.1 --port 8000 --conf bundle_configs "inference.json,cpu_small.json"

Options (``--conf KEY VALUE``):

- ``bundle``: the bundle folder, or several separated by commas (one model each, named after its folder); default
  the sibling ``../brats_mri_mckd_segmentation`` of this app. A model-zoo export (``python -m mckd.bundle_export``)
  is served with its own vendored code (``scripts.mckd``), so ``mckd`` need not be installed for it.
- ``bundle_configs``: comma-separated config files under each bundle's ``configs/``, merged in order; default
  ``inference.json``. Add the overlay the model was trained with (``cpu_small.json`` for the CPU configuration).
- ``model_name``: the model's name in ``/info/`` and ``/infer/<model>`` when one bundle is served; default the
  bundle folder's name.
- ``preload``: ``true`` builds the networks at start-up instead of on the first request.
- ``series_rules``: a JSON file of series -> modality rules (``mckd.brats.series_mapping.rules_from_json``) for a
  DICOMweb datastore; default the built-in rules, which read the usual scanner spellings.

On a DICOMweb datastore (``--studies http://.../dicom-web``) a request on any series segments its whole study: the
study's series are mapped to modalities, the bundle segments from the subset found on the reference grid, and the
result is stored in the PACS as a DICOM SEG (written with highdicom) unless the request says ``"store_seg": false``
(see :mod:`lib.study`). The result JSON says which series served as which modality.

Only inference is served: MONAI Label would train from its datastore's label maps, which it cannot tell apart by
label convention (MSD and BraTS 2018 use the same values for different regions); train with the bundle's own configs.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any

from fastapi import HTTPException
from monailabel.config import settings
from monailabel.datastore.dicom import DICOMwebClientX, DICOMWebDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

from lib.bundle_code import bundle_package, import_bundle_module
from lib.infers import MCKDBundleInferTask

logger = logging.getLogger(__name__)

#: The bundle this app serves when ``--conf bundle`` is not given: the sibling folder in the repository.
DEFAULT_BUNDLE = "brats_mri_mckd_segmentation"


def _bundle_version(bundle_path: str) -> str:
    """The bundle's version from its ``configs/metadata.json`` ("unknown" when the metadata has none)."""
    with open(os.path.join(bundle_path, "configs", "metadata.json")) as fp:
        return str(json.load(fp).get("version", "unknown"))


def _bundle_paths(conf: dict[str, str], app_dir: str) -> list[str]:
    """The bundle folders of ``--conf bundle`` (default: the repository's sibling bundle), resolved.

    Raises:
        FileNotFoundError: for a folder without ``configs/``.
    """
    default = os.path.join(os.path.dirname(os.path.realpath(app_dir)), DEFAULT_BUNDLE)
    paths = [os.path.realpath(p.strip()) for p in (conf.get("bundle") or default).split(",") if p.strip()]
    for path in paths:
        if not os.path.isdir(os.path.join(path, "configs")):
            raise FileNotFoundError(f"no bundle at '{path}' (a folder with configs/); pass --conf bundle.")
    return paths


class MCKDApp(MONAILabelApp):
    """MONAI Label app with one infer task per served MCKD BraTS bundle.

    Args:
        app_dir: this app's folder.
        studies: the datastore (a folder of 4D cases, or a DICOMweb address).
        conf: the ``--conf`` options listed in the module docstring.

    Raises:
        FileNotFoundError: when a bundle folder or one of its configs does not exist.
        ValueError: when ``model_name`` is given for several bundles, or two bundles have the same folder name, or the
            ``series_rules`` file is not valid.
        RuntimeError: when a bundle holds no weights (``models/model.pt`` or ``models/model.ts``).
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        conf = conf or {}
        self.bundle_paths = _bundle_paths(conf, app_dir)
        names = [os.path.basename(p) for p in self.bundle_paths]
        if conf.get("model_name"):
            if len(names) > 1:
                raise ValueError(f"--conf model_name names one model, but {len(names)} bundles are served: {names}.")
            names = [conf["model_name"]]
        if len(set(names)) != len(names):
            raise ValueError(f"two served bundles have the same folder name: {names}; rename one.")
        self.models = dict(zip(names, self.bundle_paths))
        self.config_files = [c.strip() for c in conf.get("bundle_configs", "inference.json").split(",") if c.strip()]
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="MCKD BraTS segmentation (any subset of modalities)",
            description="Brain tumour sub-regions from any non-empty subset of FLAIR, T1, T1ce and T2 (MCKD bundle)",
            version=", ".join(f"{name} {_bundle_version(path)}" for name, path in self.models.items()),
        )

    def init_infers(self) -> dict[str, InferTask]:
        """One infer task per bundle, under its model name."""
        infers: dict[str, InferTask] = {}
        for name, path in self.models.items():
            task = MCKDBundleInferTask(path, self.conf, config_files=self.config_files)
            if not task.is_valid():
                raise RuntimeError(
                    f"the bundle '{path}' cannot be served: it needs configs/{self.config_files[0]} and trained "
                    "weights in models/model.pt (or models/model.ts); train it with configs/train.json first."
                )
            logger.info(
                "+++ serving %s as '%s' with configs %s (code: %s)", path, name, self.config_files, bundle_package(path)
            )
            infers[name] = task
            if self.conf.get("series_rules"):  # a bad rules file stops the start, not the first request
                import_bundle_module(path, "brats.series_mapping").rules_from_json(self.conf["series_rules"])
        return infers

    def init_strategies(self) -> dict[str, Strategy]:
        """Next-sample strategies for the viewer: the first unlabelled case, or a random one."""
        return {"first": First(), "random": Random()}

    def _download_dcmqi_tools(self) -> None:
        """Nothing to download: the app writes DICOM SEG with highdicom, not with dcmqi's tools (MONAI Label fetches
        those from the internet when a DICOMweb datastore starts)."""
        logger.info("DICOM SEG is written with highdicom; dcmqi is not needed.")

    def infer(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        """MONAI Label's infer; on a DICOMweb datastore, a request on a PACS series segments its study
        (:func:`lib.study.infer_study`).

        Raises:
            HTTPException: 422 with the reason when the study's series cannot be mapped to modalities or the PACS
                has no such series.
        """
        image = request.get("image")
        task = self._infers.get(request.get("model"))
        dicomweb = isinstance(datastore or self.datastore(), DICOMWebDatastore)
        if not dicomweb or task is None or not isinstance(image, str) or not image or os.path.exists(image):
            return super().infer(request, datastore)
        from lib.study import infer_study

        mapping = import_bundle_module(task.bundle_path, "brats.series_mapping")
        modules = {"series_mapping": mapping, "alignment": import_bundle_module(task.bundle_path, "brats.alignment")}
        rules = mapping.rules_from_json(self.conf["series_rules"]) if self.conf.get("series_rules") else None
        try:
            return infer_study(
                request,
                client=self._pacs_client(),
                cache=os.path.join(tempfile.gettempdir(), "mckd-monailabel-series"),
                modules=modules,
                rules=rules or mapping.DEFAULT_RULES,
                run_infer=lambda r: super(MCKDApp, self).infer(r, datastore),
                labels=task.labels,
                version=_bundle_version(task.bundle_path),
            )
        except (mapping.SeriesMappingError, LookupError) as err:
            raise HTTPException(status_code=422, detail=str(err)) from err

    def _pacs_client(self) -> DICOMwebClientX:
        """A DICOMweb client of the datastore's PACS, configured as MONAI Label configures its own."""
        session = None
        if settings.MONAI_LABEL_DICOMWEB_USERNAME and settings.MONAI_LABEL_DICOMWEB_PASSWORD:
            from dicomweb_client.session_utils import create_session_from_user_pass

            session = create_session_from_user_pass(
                settings.MONAI_LABEL_DICOMWEB_USERNAME, settings.MONAI_LABEL_DICOMWEB_PASSWORD
            )
        return DICOMwebClientX(
            url=self.studies,
            session=session,
            qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
            wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
            stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX,
        )
