"""Reading one split of a datalist JSON, checked before any training step: its items are usable, its files exist.

A missing file, a malformed list, an item without a label or with a malformed ``available`` fails at start with a
message naming the datalist, the list and the case, not after hours of training.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai.config import PathLike
from monai.data import load_decathlon_datalist

__all__ = ["DatalistError", "EVALUATION_LIST_KEYS", "evaluation_list_key", "load_datalist"]


class DatalistError(ValueError):
    """A datalist cannot be used; the message names the file, the list and, where it applies, the case and file.

    Attributes:
        path: the datalist file.
    """

    def __init__(self, path: PathLike, message: str) -> None:
        self.path = str(path)
        super().__init__(f"datalist '{self.path}': {message}")


#: The held-out lists evaluation scores by default, the first non-empty one whose cases all have labels: the
#: published test list, else the validation list (k-fold, ratio splits). ``data_prep.brats`` puts unlabelled cases
#: into ``testing`` too; such a list is passed over.
EVALUATION_LIST_KEYS: tuple[str, ...] = ("testing", "validation")

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


def _item_problem(
    item: Any, image_key: str, available_key: str, label_key: str | None, num_modalities: int | None
) -> str:
    """What keeps a datalist item from being used ('' when nothing)."""
    if not isinstance(item, Mapping) or image_key not in item:
        return f"is not an object with an '{image_key}' entry"
    if label_key is not None and not item.get(label_key):
        return f"has no '{label_key}' (training and evaluation lists need a label map per case)"
    if num_modalities is None:
        return ""
    image = item[image_key]
    if isinstance(image, (list, tuple)) and len(image) != num_modalities:
        return f"lists {len(image)} image files, expected one per modality ({num_modalities}) or one 4D file"
    if available_key not in item:
        return ""
    available = item[available_key]
    if (
        not isinstance(available, (list, tuple))
        or len(available) != num_modalities
        or not all(isinstance(flag, bool) for flag in available)
    ):
        return f"has '{available_key}': {available!r}; it must be a list of {num_modalities} booleans (true / false)"
    if not any(available):
        return f"has '{available_key}' false for every modality; at least one must be available"
    return ""


def _check_items(items: list[Any], path: Path, key: str, **checks: Any) -> None:
    """Raise for the first (up to 5) unusable items of ``items``, naming each by index and case id."""
    problems = []
    for index, item in enumerate(items):
        problem = _item_problem(item, **checks)
        if problem:
            case_id = item.get("case_id", "?") if isinstance(item, Mapping) else "?"
            problems.append(f"item {index} (case '{case_id}') {problem}")
    if problems:
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise DatalistError(path, f"'{key}': {'; '.join(problems[:5])}{more}.")


def _lists(content: Mapping[str, Any]) -> str:
    """The lists of a datalist with their sizes, e.g. ``training (280 cases), meta_validation (5 cases)``."""
    sizes = [f"{key} ({len(value)} cases)" for key, value in content.items() if isinstance(value, list)]
    return ", ".join(sizes) or "no lists"


def _content(path: Path) -> Mapping[str, Any]:
    """The datalist JSON ``path`` as data (no value is ever evaluated)."""
    if not path.is_file():
        raise DatalistError(path, "does not exist." if not path.exists() else "is not a file.")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise DatalistError(path, f"is not a UTF-8 text file ({err.reason}).") from err
    except json.JSONDecodeError as err:
        raise DatalistError(path, f"is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}.") from err
    if not isinstance(content, Mapping):
        raise DatalistError(path, f"must be a JSON object of case lists, not a {type(content).__name__}.")
    return content


def evaluation_list_key(path: PathLike, key: str | None = None) -> str:
    """The list of the datalist ``path`` that evaluation scores: ``key``, or by default the first non-empty, fully
    labelled list of :data:`EVALUATION_LIST_KEYS`.

    Raises:
        DatalistError: when ``key`` is absent or empty, or (default) no evaluation list has a case, naming the lists
            the file has. The paper's split has none: its held-out cases are the challenge's unlabelled validation set.
    """
    path = Path(path)
    content = _content(path)
    if key is not None:
        if not content.get(key):
            state = "is empty" if key in content else "is absent"
            raise DatalistError(
                path, f"list '{key}' {state}; it has {_lists(content)}. Choose one with --eval_list_key."
            )
        return key
    for candidate in EVALUATION_LIST_KEYS:
        items = content.get(candidate)
        if items and all(isinstance(item, Mapping) and item.get("label") for item in items):
            return candidate
    raise DatalistError(
        path,
        f"has no labelled held-out cases to evaluate ({' or '.join(map(repr, EVALUATION_LIST_KEYS))} list); it has "
        f"{_lists(content)}. Name a list with --eval_list_key, or (paper split) predict the challenge's validation "
        "cases with configs/inference.json and score them on the challenge portal.",
    )


def _read(path: Path, key: str) -> list[Any]:
    """The list ``key`` of the datalist JSON ``path``, read as data only (no value is ever evaluated)."""
    content = _content(path)
    if key not in content:
        raise DatalistError(path, f"has no list '{key}' (it has {_lists(content)}).")
    items = content[key]
    if not isinstance(items, list):
        raise DatalistError(path, f"'{key}' must be a list of cases, not a {type(items).__name__}.")
    return items


def load_datalist(
    path: PathLike,
    key: str = "training",
    base_dir: PathLike | None = None,
    allow_empty: bool = False,
    check_files: bool = True,
    require_label: bool = False,
    num_modalities: int | None = None,
    image_key: str = "image",
    available_key: str = "available",
    label_key: str = "label",
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
        require_label: every item needs a ``label_key`` entry (training, meta-validation, validation, evaluation).
        num_modalities: when given, an item's image list must have this many entries and its optional
            ``available`` must be that many booleans, at least one true.
        image_key: item key of the image path(s). Default ``"image"``.
        available_key: item key of the per-modality availability. Default ``"available"``.
        label_key: item key of the label map. Default ``"label"``.

    Raises:
        DatalistError: when the file is absent or not valid JSON, the list is absent, not a list, empty (unless
            ``allow_empty``), an item fails the checks above (naming the first items and their case ids), or listed
            files do not exist (naming the first cases and files).
    """
    path = Path(path)
    items = _read(path, key)
    if not items and not allow_empty:
        raise DatalistError(
            path, f"'{key}' is empty; it needs at least one case (the file has {_lists(_content(path))})."
        )
    _check_items(
        items,
        path,
        key,
        image_key=image_key,
        available_key=available_key,
        label_key=label_key if require_label else None,
        num_modalities=num_modalities,
    )
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
