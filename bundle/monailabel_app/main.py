"""MONAI Label app that serves the BraTS MCKD bundle (segmentation from any subset of FLAIR, T1, T1ce, T2).

Start it with MONAI Label's own command (its options after ``--conf``; see ``docs/monailabel.md``)::

    monailabel start_server --app bundle/monailabel_app --studies /path/to/4d_cases \
        --host 127.0.0.1 --port 8000 --conf bundle_configs "inference.json,cpu_small.json"

Options (``--conf KEY VALUE``):

- ``bundle``: the bundle folder; default the sibling ``../brats_mri_mckd_segmentation`` of this app.
- ``bundle_configs``: comma-separated config files under the bundle's ``configs/``, merged in order; default
  ``inference.json``. Add the overlay the model was trained with (``cpu_small.json`` for the CPU configuration).
- ``model_name``: the model's name in ``/info/`` and ``/infer/<model>``; default the bundle folder's name.
- ``preload``: ``true`` builds the network at start-up instead of on the first request.

Only inference is served: MONAI Label would train from its datastore's label maps, which it cannot tell apart by
label convention (MSD and BraTS 2018 use the same values for different regions); train with the bundle's own configs.
"""

from __future__ import annotations

import logging
import os

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

import mckd
from lib.infers import MCKDBundleInferTask

logger = logging.getLogger(__name__)

#: The bundle this app serves when ``--conf bundle`` is not given: the sibling folder in the repository.
DEFAULT_BUNDLE = "brats_mri_mckd_segmentation"


class MCKDApp(MONAILabelApp):
    """MONAI Label app with one infer task: the MCKD BraTS bundle.

    Args:
        app_dir: this app's folder.
        studies: the datastore (a folder of 4D cases, or a DICOMweb address).
        conf: the ``--conf`` options listed in the module docstring.

    Raises:
        FileNotFoundError: when the bundle folder or one of its configs does not exist.
        RuntimeError: when the bundle holds no weights (``models/model.pt`` or ``models/model.ts``).
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        conf = conf or {}
        bundle = conf.get("bundle") or os.path.join(os.path.dirname(os.path.realpath(app_dir)), DEFAULT_BUNDLE)
        self.bundle_path = os.path.realpath(bundle)
        if not os.path.isdir(os.path.join(self.bundle_path, "configs")):
            raise FileNotFoundError(f"no bundle at '{self.bundle_path}' (a folder with configs/); pass --conf bundle.")
        self.config_files = [c.strip() for c in conf.get("bundle_configs", "inference.json").split(",") if c.strip()]
        self.model_name = conf.get("model_name") or os.path.basename(self.bundle_path)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="MCKD BraTS segmentation (any subset of modalities)",
            description="Brain tumour sub-regions from any non-empty subset of FLAIR, T1, T1ce and T2 (MCKD bundle)",
            version=mckd.__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        """The bundle's infer task under :attr:`model_name`."""
        task = MCKDBundleInferTask(self.bundle_path, self.conf, config_files=self.config_files)
        if not task.is_valid():
            raise RuntimeError(
                f"the bundle '{self.bundle_path}' cannot be served: it needs configs/{self.config_files[0]} and "
                "trained weights in models/model.pt (or models/model.ts); train it with configs/train.json first."
            )
        logger.info("+++ serving %s as '%s' with configs %s", self.bundle_path, self.model_name, self.config_files)
        return {self.model_name: task}

    def init_strategies(self) -> dict[str, Strategy]:
        """Next-sample strategies for the viewer: the first unlabelled case, or a random one."""
        return {"first": First(), "random": Random()}
