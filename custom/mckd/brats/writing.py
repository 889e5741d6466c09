"""Writing one prediction per case, atomically and never over or into the inputs."""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import KeysCollection, PathLike
from monai.data import MetaTensor, NibabelWriter
from monai.transforms import MapTransform, Transform

from mckd.brats.cases import CaseError
from mckd.fileio import atomic_path, ensure_not_input

__all__ = ["check_output_dir", "prediction_path", "SaveCasePrediction", "SaveCasePredictiond"]

logger = logging.getLogger(__name__)


def _case_folder(input_path: PathLike) -> Path:
    """The folder that holds an input: a file's folder, or a DICOM series folder's case folder."""
    return Path(input_path).resolve().parent


def check_output_dir(output_dir: PathLike, inputs: Sequence[PathLike]) -> None:
    """Refuse an output folder that is, or lies inside, one of the input folders (or is an input file).

    Raises:
        ValueError: naming the input folder the outputs would have been written into.
    """
    out = Path(output_dir).resolve()
    for item in inputs:
        src = Path(item).resolve()
        if out == src or src in out.parents:
            raise ValueError(f"output folder '{output_dir}' is inside the input '{item}'; choose a folder outside it.")


def prediction_path(
    output_dir: PathLike,
    case_id: str,
    inputs: Sequence[PathLike | None] | PathLike | None = None,
    postfix: str = "_seg",
    ext: str = ".nii.gz",
) -> Path:
    """``<output_dir>/<case_id><postfix><ext>``, checked against the case's inputs.

    Args:
        output_dir: the output folder.
        case_id: the case identifier.
        inputs: the case's input paths (a datalist ``image`` entry); the output may be neither one of them nor inside
            the folder that holds them.
        postfix: appended to the case id. Default ``"_seg"``.
        ext: file extension. Default ``".nii.gz"``.

    Raises:
        ValueError: when the output would overwrite an input or land inside an input folder.
    """
    if not case_id or Path(case_id).name != case_id:
        raise ValueError(f"case id '{case_id}' cannot be used as a file name.")
    target = Path(output_dir) / f"{case_id}{postfix}{ext}"
    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else [p for p in (inputs or ()) if p is not None]
    ensure_not_input(target, paths)
    folders = {_case_folder(p) for p in paths}
    check_output_dir(output_dir, sorted(folders))
    return target


class SaveCasePrediction(Transform):
    """Write a channel-first prediction to ``<output_dir>/<case_id><postfix>.nii.gz`` atomically with MONAI's writer.

    The affine comes from the MetaTensor's meta: after ``Invertd`` it is the input's original affine, so the file lies
    in the input's original space and orientation. Writing goes to a temporary name that is renamed on success.

    Why not ``SaveImage``: it writes straight to the final name (a crash leaves a truncated file), and in MONAI 1.6.1
    its writer's resampling step, run even with ``resample=False``, treats a squeezed single-channel 3D volume as 2D
    and fails on affines that swap a through-plane axis into the first two (sagittal or coronal acquisitions). The
    prediction is already on the input grid after ``Invertd``, so the data go to MONAI's ``NibabelWriter`` as they are.

    Args:
        output_dir: the output folder.
        postfix: appended to the case id. Default ``"_seg"``.
        output_dtype: dtype written to disk. Default ``np.uint8`` (label maps); use ``np.float32`` for probabilities.
    """

    def __init__(self, output_dir: PathLike, postfix: str = "_seg", output_dtype: Any = np.uint8) -> None:
        self.output_dir = Path(output_dir)
        self.postfix = postfix
        self.output_dtype = output_dtype

    def __call__(self, pred: Any, case_id: str, inputs: Sequence[PathLike | None] | PathLike | None = None) -> Path:
        """Write ``pred`` for ``case_id``; ``inputs`` are the case's input paths to protect. Returns the path.

        Raises:
            ValueError: when the output would overwrite an input or land inside an input folder.
            CaseError: when the file cannot be written.
        """
        target = prediction_path(self.output_dir, case_id, inputs, postfix=self.postfix)
        writer = NibabelWriter(output_dtype=self.output_dtype)
        writer.set_data_array(pred, channel_dim=0)
        writer.affine = pred.affine if isinstance(pred, MetaTensor) else None
        try:
            with atomic_path(target) as tmp:
                writer.write(tmp)
        except OSError as err:
            raise CaseError(case_id, f"cannot write the prediction: {err}", target) from err
        logger.info("case '%s': wrote %s", case_id, target)
        return target


class SaveCasePredictiond(MapTransform):
    """Dictionary wrapper of :class:`SaveCasePrediction`.

    The case id is ``data[case_id_key]`` (or the ``case_id`` that :class:`LoadModalitiesd` put in the meta); the
    inputs to protect are ``data[inputs_key]`` when present and the file named in the meta.

    Args:
        keys: keys of predictions to write (one postfix per key: give several transforms for several keys).
        output_dir: the output folder.
        postfix: appended to the case id. Default ``"_seg"``.
        output_dtype: see :class:`SaveCasePrediction`.
        case_id_key: key of the case id. Default ``"case_id"``.
        inputs_key: key of the case's input paths (kept by the datalist). Default ``"inputs"``.
        path_key: where the written path is stored in the data dict, if given. Default None.
        allow_missing_keys: don't raise when a key is missing.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: PathLike,
        postfix: str = "_seg",
        output_dtype: Any = np.uint8,
        case_id_key: str = "case_id",
        inputs_key: str = "inputs",
        path_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.saver = SaveCasePrediction(output_dir, postfix=postfix, output_dtype=output_dtype)
        self.case_id_key = case_id_key
        self.inputs_key = inputs_key
        self.path_key = path_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            meta = getattr(d[key], "meta", None) or {}
            case_id = d.get(self.case_id_key) or meta.get("case_id")
            if not case_id:
                raise ValueError(f"no case id under '{self.case_id_key}' or in the meta of '{key}'.")
            inputs = d.get(self.inputs_key)
            inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs or [])
            if meta.get("filename_or_obj"):
                inputs.append(str(meta["filename_or_obj"]))
            path = self.saver(d[key], str(case_id), inputs)
            if self.path_key is not None:
                d[self.path_key] = str(path)
        return d
