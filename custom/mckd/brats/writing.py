"""Writing one prediction per case (and, for aligned inputs, its report and copies on each input's grid), atomically
and never over or into the inputs."""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import KeysCollection, PathLike
from monai.data import MetaTensor, NibabelWriter
from monai.transforms import MapTransform, SaveImaged, Transform

from mckd.brats.alignment import AlignmentReport, to_native_grid
from mckd.brats.cases import CaseError
from mckd.fileio import atomic_path, enclosing_folder, ensure_not_input, write_json_atomic

__all__ = [
    "CaseWriterd",
    "check_output_dir",
    "prediction_path",
    "SaveCasePrediction",
    "SaveCasePredictiond",
    "SaveAlignmentd",
    "SaveOnNativeGridsd",
]

logger = logging.getLogger(__name__)


def _case_folder(input_path: PathLike) -> Path:
    """The folder that holds an input: a file's folder, or a DICOM series folder's case folder."""
    return Path(input_path).resolve().parent


def check_output_dir(output_dir: PathLike, inputs: Sequence[PathLike]) -> None:
    """Refuse an output folder that is, or lies inside, one of the input folders (or is an input file).

    Raises:
        ValueError: naming the input folder the outputs would have been written into.
    """
    item = enclosing_folder(output_dir, inputs)
    if item is not None:
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


class CaseWriterd(SaveImaged):
    """Base of the transforms that write a case's outputs from a bundle's postprocessing.

    A subclass of MONAI's ``SaveImaged`` by type only: applications that write and return predictions themselves
    drop the bundle's writers by type, and every one of them knows ``SaveImaged`` (MONAI Label's stock bundle infer
    task filters ``post_filter=[SaveImaged]`` by ``isinstance``, also in its epistemic scoring). Being one, our
    writers (atomic, case-named, never into an input folder) are dropped without any app-side change, and the bundle
    keeps them inside ``postprocessing``, which MONAI's bundle convention requires as ``evaluator#postprocessing``.
    ``SaveImaged``'s own writer is not set up: this class initialises as a plain ``MapTransform`` and each subclass
    does its own writing in ``__call__``; ``SaveImaged.set_options`` (options of that writer) is therefore refused.

    Args:
        keys: keys of the items the writer reads.
        allow_missing_keys: don't raise when a key is missing.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)

    def set_options(self, *args: Any, **kwargs: Any) -> CaseWriterd:
        """Refused: a case writer has no ``SaveImage`` writer whose options could be set.

        Raises:
            TypeError: always, naming the class.
        """
        raise TypeError(f"{type(self).__name__} writes with its own settings; it has no SaveImage options to set.")


def _protected_inputs(data: Mapping[Hashable, Any], key: Hashable, inputs_key: str) -> list[str]:
    """The input paths an output must not overwrite: ``data[inputs_key]`` and the file named in ``data[key]``'s meta."""
    inputs = data.get(inputs_key)
    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs or [])
    meta = getattr(data[key], "meta", None) or {}
    if meta.get("filename_or_obj"):
        paths.append(str(meta["filename_or_obj"]))
    return [str(p) for p in paths if p is not None]


class SaveCasePredictiond(CaseWriterd):
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
            path = self.saver(d[key], str(case_id), _protected_inputs(d, key, self.inputs_key))
            if self.path_key is not None:
                d[self.path_key] = str(path)
        return d


class SaveAlignmentd(CaseWriterd):
    """Write a case's alignment report (:class:`~mckd.brats.alignment.AlignmentReport`) beside its prediction.

    ``<output_dir>/<case_id>_alignment.json``, written atomically, when the case's modalities were aligned (the report
    that :class:`~mckd.brats.loading.LoadModalitiesd` stored under ``alignment_key``); nothing otherwise.

    Args:
        output_dir: the output folder.
        alignment_key: key of the report (JSON text). Default ``"alignment"``.
        case_id_key: key of the case id. Default ``"case_id"``.
    """

    def __init__(self, output_dir: PathLike, alignment_key: str = "alignment", case_id_key: str = "case_id") -> None:
        super().__init__(keys=alignment_key, allow_missing_keys=True)
        self.output_dir = Path(output_dir)
        self.alignment_key = alignment_key
        self.case_id_key = case_id_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        report = d.get(self.alignment_key)
        if report:
            report = AlignmentReport.from_json(report)
            target = prediction_path(self.output_dir, str(d[self.case_id_key]), postfix="_alignment", ext=".json")
            write_json_atomic(target, asdict(report))
        return d


class SaveOnNativeGridsd(CaseWriterd):
    """Also write a case's label map on every input modality's own grid, for overlaying it on each series.

    ``<output_dir>/<case_id><postfix>_<modality>.nii.gz``, resampled with nearest neighbour from the reference grid
    (:func:`mckd.brats.alignment.to_native_grid`, undoing any registration). Needs the alignment report; a case whose
    modalities were not aligned has only the reference grid, and nothing more is written.

    Args:
        keys: the label map key.
        output_dir: the output folder.
        postfix: the prediction's postfix. Default ``"_seg"``.
        alignment_key: key of the report (JSON text). Default ``"alignment"``.
        case_id_key: key of the case id. Default ``"case_id"``.
        inputs_key: key of the case's input paths (protected from overwriting, as the file named in the label
            map's meta). Default ``"inputs"``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: PathLike,
        postfix: str = "_seg",
        alignment_key: str = "alignment",
        case_id_key: str = "case_id",
        inputs_key: str = "inputs",
    ) -> None:
        super().__init__(keys)
        self.output_dir = Path(output_dir)
        self.postfix = postfix
        self.alignment_key = alignment_key
        self.case_id_key = case_id_key
        self.inputs_key = inputs_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        report = d.get(self.alignment_key)
        if not report:
            return d
        report = AlignmentReport.from_json(report)
        case_id = str(d[self.case_id_key])
        for key in self.key_iterator(d):
            inputs = _protected_inputs(d, key, self.inputs_key)
            for modality, grid in report.modalities.items():
                saver = SaveCasePrediction(self.output_dir, postfix=f"{self.postfix}_{modality}")
                saver(to_native_grid(d[key], grid), case_id, inputs)
        return d
