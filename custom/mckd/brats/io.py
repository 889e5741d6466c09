"""Finding a user's cases for inference and writing one prediction per case, never over the inputs.

:func:`discover_cases` turns a folder of cases (or one case folder, or one 4D file) in any supported layout into a
datalist for a MONAI ``Dataset`` whose first transform is :class:`~mckd.brats.transforms.LoadModalitiesd`:

- BraTS 2018-2021 ``<case>_{flair,t1,t1ce,t2}.nii[.gz]`` and BraTS 2023+ ``<case>-{t2f,t1n,t1c,t2w}.nii[.gz]``
  (file names from :data:`~mckd.brats.conventions.LAYOUTS`), in case folders, nested group folders (``HGG/``, ``LGG/``)
  or side by side in one folder;
- the MSD layout: one 4D NIfTI per case with the modalities in :data:`~mckd.brats.conventions.MODALITIES` order;
- DICOM: a case folder holding one series folder per modality, named by the modality key (``flair/``, ``t1/``,
  ``t1ce/``, ``t2/``) or by the 2023 suffix (``t2f/``, ``t1n/``, ``t1c/``, ``t2w/``), in any letter case.

An absent file (or an empty series folder) is a missing modality. Unusable cases (no modality, two files for one
modality, disagreeing geometry, a 4D image with the wrong channel count, a duplicate case id) are returned as
:class:`CaseProblem` entries next to the good cases, so the caller logs them and goes on with the others. Problems that
only show when the voxels are read (unreadable DICOM, DICOM geometry) surface as
:class:`~mckd.brats.transforms.CaseError` from the loader, which an inference loop catches per case.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import nibabel as nib
import numpy as np
from monai.config import KeysCollection
from monai.data import MetaTensor, NibabelWriter, load_decathlon_datalist
from monai.transforms import MapTransform, Transform

from mckd.brats.conventions import LAYOUTS, MODALITIES
from mckd.brats.transforms import CaseError
from mckd.fileio import atomic_path, ensure_not_input

__all__ = [
    "DatalistError",
    "load_datalist",
    "CaseProblem",
    "DiscoveredCases",
    "discover_cases",
    "check_output_dir",
    "prediction_path",
    "SaveCasePrediction",
    "SaveCasePredictiond",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

_NIFTI_EXTS = (".nii.gz", ".nii")
# MSD keeps label maps in these folders next to imagesTr/imagesTs; they hold no modality images.
_LABEL_FOLDERS = frozenset({"labelstr", "labelsts"})


def _modality_folder_names() -> dict[str, str]:
    """Series-folder name (lower case) -> modality key: the keys themselves and every layout's file suffix."""
    names = {m: m for m in MODALITIES}
    for layout in LAYOUTS.values():
        for modality, suffix in layout.modality_suffixes.items():
            names.setdefault(suffix.lower(), modality)
    return names


def _file_patterns() -> list[tuple[str, str, dict[str, str], str]]:
    """``(layout name, separator, suffix -> modality, label suffix)`` for each distinct per-modality naming."""
    patterns, seen = [], set()
    for layout in LAYOUTS.values():
        if layout.four_d:
            continue
        key = (layout.separator, tuple(sorted(layout.modality_suffixes.items())), layout.label_suffix)
        if key in seen:
            continue
        seen.add(key)
        suffixes = {s: m for m, s in layout.modality_suffixes.items()}
        patterns.append((layout.name, layout.separator, suffixes, layout.label_suffix))
    return patterns


@dataclass(frozen=True)
class CaseProblem:
    """A case that discovery could not turn into a usable datalist entry.

    Attributes:
        case_id: the case identifier (file stem or folder name).
        path: the file or folder concerned.
        reason: what is wrong, in words a user can act on.
    """

    case_id: str
    path: str
    reason: str

    def __str__(self) -> str:
        return f"case '{self.case_id}' ({self.path}): {self.reason}"


@dataclass
class DiscoveredCases:
    """The result of :func:`discover_cases`.

    Attributes:
        cases: datalist entries ``{"case_id", "image", "available", "layout"[, "label"]}``; ``image`` is a list of
            ``M`` paths (``None`` where missing) or, for the MSD layout, the path of the 4D image.
        problems: the cases that were left out, with the reason.
    """

    cases: list[dict[str, Any]] = field(default_factory=list)
    problems: list[CaseProblem] = field(default_factory=list)

    def log_problems(self, log: logging.Logger | None = None) -> None:
        """Log every problem as a warning (the caller's logger by default this module's)."""
        for problem in self.problems:
            (log or logger).warning("skipping %s", problem)


def _strip_nifti(name: str) -> str | None:
    lower = name.lower()
    for ext in _NIFTI_EXTS:
        if lower.endswith(ext):
            return name[: -len(ext)]
    return None


def _has_files(folder: Path) -> bool:
    return any(p.is_file() and not p.name.startswith(".") for p in folder.iterdir())


class _Scanner:
    """Walks the folders once and collects cases and problems."""

    def __init__(self, num_modalities: int, check_geometry: bool, atol: float) -> None:
        self.num_modalities = num_modalities
        self.check_geometry = check_geometry
        self.atol = atol
        self.folder_names = _modality_folder_names()
        self.patterns = _file_patterns()
        self.result = DiscoveredCases()

    def case(self, entry: dict[str, Any]) -> None:
        self.result.cases.append(entry)

    def problem(self, case_id: str, path: PathLike, reason: str) -> None:
        self.result.problems.append(CaseProblem(case_id, str(path), reason))

    def scan_file(self, path: Path) -> None:
        stem = _strip_nifti(path.name)
        if stem is None:
            self.problem(path.name, path, "a single file must be a 4D NIfTI image (MSD layout).")
            return
        self.four_d(path, stem, report_3d=True)

    def scan_folder(self, folder: Path, is_root: bool) -> None:
        if folder.name.lower() in _LABEL_FOLDERS:
            return
        before = len(self.result.cases) + len(self.result.problems)
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        files = [p for p in entries if p.is_file()]
        dirs = [p for p in entries if p.is_dir()]
        self.per_modality_files(files)
        series = {d: self.folder_names[d.name.lower()] for d in dirs if d.name.lower() in self.folder_names}
        if series:
            self.dicom_case(folder, series)
        for sub in dirs:
            if sub not in series:
                self.scan_folder(sub, is_root=False)
        if len(self.result.cases) + len(self.result.problems) == before and not dirs and not is_root:
            self.problem(folder.name, folder, "no modality image found in this folder.")

    def per_modality_files(self, files: list[Path]) -> None:
        groups: dict[str, dict[str, Any]] = {}
        leftovers = []
        for path in files:
            stem = _strip_nifti(path.name)
            if stem is None:
                continue
            match = self.match(stem)
            if match is None:
                leftovers.append((path, stem))
                continue
            layout, case_id, modality = match
            group = groups.setdefault(case_id, {"layout": layout, "files": {}, "label": None, "duplicates": []})
            if modality is None:
                group["label"] = path
            elif modality in group["files"]:
                group["duplicates"].append((modality, path))
            else:
                group["files"][modality] = path
        for case_id, group in groups.items():
            self.per_modality_case(case_id, group)
        for path, stem in leftovers:
            self.four_d(path, stem, report_3d=False)

    def match(self, stem: str) -> tuple[str, str, str | None] | None:
        """``(layout, case id, modality or None for the label map)`` of a file stem, or None."""
        lower = stem.lower()
        for layout, sep, suffixes, label_suffix in self.patterns:
            for suffix, modality in [*suffixes.items(), (label_suffix, None)]:
                tail = f"{sep}{suffix}".lower()
                if lower.endswith(tail) and len(stem) > len(tail):
                    return layout, stem[: -len(tail)], modality
        return None

    def per_modality_case(self, case_id: str, group: dict[str, Any]) -> None:
        files: dict[str, Path] = group["files"]
        if group["duplicates"]:
            modality, path = group["duplicates"][0]
            other = files[modality].name
            self.problem(case_id, path, f"two files for modality '{modality}' ({other} and {path.name}).")
            return
        if not files:
            self.problem(case_id, group["label"], f"no modality image found (expected any of {list(MODALITIES)}).")
            return
        if self.check_geometry and not self.geometry_agrees(case_id, [files[m] for m in MODALITIES if m in files]):
            return
        entry = {
            "case_id": case_id,
            "image": [str(files[m]) if m in files else None for m in MODALITIES],
            "available": [m in files for m in MODALITIES],
            "layout": group["layout"],
        }
        if group["label"] is not None:
            entry["label"] = str(group["label"])
        self.case(entry)

    def geometry_agrees(self, case_id: str, paths: Sequence[Path]) -> bool:
        """Compare the headers (shape, affine) of a case's NIfTI files without reading voxels."""
        ref = None
        for path in paths:
            try:
                header = nib.load(str(path))
            except Exception as err:  # any nibabel failure: report the file, keep going with other cases
                self.problem(case_id, path, f"cannot be read as NIfTI: {err}")
                return False
            geometry = (tuple(header.shape[:3]), np.asarray(header.affine, dtype=float))
            if ref is None:
                ref = (path, geometry)
                continue
            (ref_path, (ref_shape, ref_affine)), (shape, affine) = ref, geometry
            if shape != ref_shape:
                self.problem(case_id, path, f"spatial shape {shape} differs from {ref_shape} of {ref_path.name}.")
                return False
            if not np.allclose(affine, ref_affine, atol=self.atol, rtol=0):
                self.problem(case_id, path, f"affine differs from that of {ref_path.name} (tolerance {self.atol}).")
                return False
        return True

    def four_d(self, path: Path, stem: str, report_3d: bool) -> None:
        try:
            shape = nib.load(str(path)).shape
        except Exception as err:  # any nibabel failure: report the file, keep going with other cases
            self.problem(stem, path, f"cannot be read as NIfTI: {err}")
            return
        if len(shape) == 4 and shape[3] == self.num_modalities:
            available = [True] * self.num_modalities
            self.case({"case_id": stem, "image": str(path), "available": available, "layout": "msd"})
        elif len(shape) == 4:
            self.problem(stem, path, f"a 4D image needs {self.num_modalities} modality volumes, it has {shape[3]}.")
        elif report_3d:
            self.problem(stem, path, f"not a 4D multi-modality image (shape {tuple(shape)}).")
        else:
            logger.debug("ignoring %s: not a modality file of a known layout.", path)

    def dicom_case(self, folder: Path, series: dict[Path, str]) -> None:
        case_id = folder.name
        chosen: dict[str, Path] = {}
        for sub, modality in sorted(series.items()):
            if not _has_files(sub):
                continue
            if modality in chosen:
                self.problem(case_id, sub, f"two series folders for modality '{modality}' ({chosen[modality].name}).")
                return
            chosen[modality] = sub
        if not chosen:
            self.problem(case_id, folder, "every modality series folder is empty.")
            return
        self.case(
            {
                "case_id": case_id,
                "image": [str(chosen[m]) if m in chosen else None for m in MODALITIES],
                "available": [m in chosen for m in MODALITIES],
                "layout": "dicom",
            }
        )


def discover_cases(
    root: PathLike, num_modalities: int = len(MODALITIES), check_geometry: bool = True, atol: float = 1e-3
) -> DiscoveredCases:
    """Find every case under ``root`` (a folder of cases, one case folder, or one 4D NIfTI file).

    Args:
        root: where to look; sub-folders are searched recursively (``HGG/``, ``LGG/``, ``imagesTs/``, ...).
        num_modalities: channels a 4D (MSD) image must have. Default 4.
        check_geometry: compare the NIfTI headers of each per-modality case (shape and affine) and report a
            disagreeing case as a problem instead of failing at load time. Default True.
        atol: affine tolerance in mm for that check. Default 1e-3 (as :class:`LoadModalities`).

    Returns:
        :class:`DiscoveredCases` with the usable cases sorted by case id and the problems (including duplicate ids).

    Raises:
        FileNotFoundError: when ``root`` does not exist.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"input path '{root}' does not exist.")
    scanner = _Scanner(num_modalities, check_geometry, atol)
    if root.is_file():
        scanner.scan_file(root)
    else:
        scanner.scan_folder(root, is_root=True)
    result = scanner.result
    unique: dict[str, dict[str, Any]] = {}
    for entry in sorted(result.cases, key=lambda e: e["case_id"]):
        if entry["case_id"] in unique:
            result.problems.append(
                CaseProblem(entry["case_id"], _first_path(entry), "duplicate case id (also found elsewhere).")
            )
            continue
        unique[entry["case_id"]] = entry
    result.cases = list(unique.values())
    logger.info("found %d case(s) under %s, %d problem(s).", len(result.cases), root, len(result.problems))
    return result


def _first_path(entry: Mapping[str, Any]) -> str:
    image = entry["image"]
    return image if isinstance(image, str) else next(p for p in image if p is not None)


class DatalistError(ValueError):
    """A datalist cannot be used; the message names the file, the list and, where it applies, the case and file.

    Attributes:
        path: the datalist file.
    """

    def __init__(self, path: PathLike, message: str) -> None:
        self.path = str(path)
        super().__init__(f"datalist '{self.path}': {message}")


#: Datalist item keys that hold input files.
_FILE_KEYS: tuple[str, ...] = ("image", "label")


def _missing_files(item: Mapping[str, Any], modality_key: str, available_key: str) -> list[str]:
    """The files an item names that do not exist; a modality marked unavailable may be absent."""
    missing = []
    for key in _FILE_KEYS:
        value = item.get(key)
        if value is None:
            continue
        if key == modality_key and not isinstance(value, (str, os.PathLike)):
            flags = item.get(available_key) or [True] * len(value)
            missing += [str(p) for p, flag in zip(value, flags) if flag and p is not None and not Path(p).exists()]
        elif not Path(value).exists():
            missing.append(str(value))
    return missing


def load_datalist(
    path: PathLike,
    key: str = "training",
    base_dir: PathLike | None = None,
    allow_empty: bool = False,
    check_files: bool = True,
    image_key: str = "image",
    available_key: str = "available",
) -> list[dict[str, Any]]:
    """Read one list of a datalist JSON with MONAI's ``load_decathlon_datalist``, after checking it can be used.

    The file is read as JSON data only: no value is ever evaluated (a case id such as ``"$expr"`` or ``"@ref"`` stays
    that string). Paths are resolved as MONAI does (relative to ``base_dir``, default the datalist's folder).

    Args:
        path: the datalist JSON.
        key: the list to read (``"training"``, ``"meta_validation"``, ``"validation"``, ``"testing"``).
        base_dir: folder relative paths are resolved against; None uses the datalist's folder.
        allow_empty: accept an empty list (e.g. an optional validation split). Default False: an empty training or
            meta-validation split fails here, before any training step.
        check_files: check that every listed file exists (a modality whose ``available`` entry is false may be
            absent), so a missing file fails at start, not after hours of training. Default True.
        image_key: item key of the image path(s). Default ``"image"``.
        available_key: item key of the per-modality availability. Default ``"available"``.

    Raises:
        DatalistError: when the file is absent or not valid JSON, the list is absent, not a list, empty (unless
            ``allow_empty``), an item is not an object or lacks ``image_key``, or listed files do not exist (naming
            the first cases and files).
    """
    path = Path(path)
    if not path.is_file():
        raise DatalistError(path, "does not exist." if not path.exists() else "is not a file.")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise DatalistError(path, f"is not a UTF-8 text file ({err.reason}).") from err
    except json.JSONDecodeError as err:
        raise DatalistError(path, f"is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}.") from err
    if not isinstance(content, Mapping):
        raise DatalistError(path, f"must be a JSON object with a '{key}' list, not a {type(content).__name__}.")
    if key not in content:
        raise DatalistError(path, f"has no list '{key}' (it has {', '.join(map(str, content)) or 'no keys'}).")
    items = content[key]
    if not isinstance(items, list):
        raise DatalistError(path, f"'{key}' must be a list of cases, not a {type(items).__name__}.")
    if not items and not allow_empty:
        raise DatalistError(path, f"'{key}' is empty; it needs at least one case.")
    for index, item in enumerate(items):
        if not isinstance(item, Mapping) or image_key not in item:
            raise DatalistError(path, f"item {index} of '{key}' is not an object with an '{image_key}' entry.")
    data = load_decathlon_datalist(str(path), is_segmentation=True, data_list_key=key, base_dir=base_dir)
    if check_files:
        absent = []
        for index, item in enumerate(data):
            case_id = item.get("case_id", f"item {index}")
            absent += [f"case '{case_id}': {file}" for file in _missing_files(item, image_key, available_key)]
        if absent:
            shown = "; ".join(absent[:5]) + (f"; and {len(absent) - 5} more" if len(absent) > 5 else "")
            raise DatalistError(path, f"{len(absent)} file(s) listed in '{key}' do not exist: {shown}.")
    return data


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
