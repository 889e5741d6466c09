"""Find the cases of a BraTS / MSD Task01 download and tell which release's layout it uses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mckd.brats.conventions import LAYOUTS, MODALITIES

__all__ = ["NIFTI_EXTENSIONS", "LayoutError", "CaseFiles", "discover_cases"]

#: File extensions tried for every expected file, in this order.
NIFTI_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii")
_MAX_DEPTH = 3  # root/<release folder>/{HGG,LGG}/<case>
_GRADE_FOLDERS = frozenset({"HGG", "LGG"})


class LayoutError(ValueError):
    """The root folder cannot be read as any supported layout (a usage error, not a per-case problem)."""


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case as found on disk.

    Attributes:
        case_id: case identifier (folder name, or the MSD file name without extension).
        images: one path per modality in :data:`MODALITIES` order (a path that does not exist marks a missing file),
            or a single 4D image path for MSD.
        label: label file, or None for an unlabelled case (e.g. a BraTS validation set, MSD ``imagesTs``).
        group: ``"HGG"``/``"LGG"`` when the case sits in such a folder (BraTS 2018-2020), else None.
    """

    case_id: str
    images: tuple[Path, ...] | Path
    label: Path | None
    group: str | None = None


def _existing(folder: Path, names: list[str]) -> Path | None:
    """The first of ``names`` that exists in ``folder``."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def _folder_layout(folder: Path, candidates: tuple[str, ...]) -> str | None:
    """Which of the ``candidates`` layouts names the files of ``folder`` (None: not a case folder)."""
    names = {p.name for p in folder.iterdir() if p.is_file()}
    for name in candidates:
        spec = LAYOUTS[name]
        expected = [spec.label_file(folder.name, ext) for ext in NIFTI_EXTENSIONS]
        expected += [spec.modality_file(folder.name, m, ext) for m in MODALITIES for ext in NIFTI_EXTENSIONS]
        if names.intersection(expected):
            return name
    return None


def _auto_layout_of(folder_layout: str, folder: Path) -> str:
    """BraTS 2021 shares 2018's file naming; its case ids tell it apart."""
    return "brats2021" if folder_layout == "brats2018" and folder.name.startswith("BraTS2021_") else folder_layout


def _case_folders(root: Path, candidates: tuple[str, ...]) -> list[tuple[Path, str]]:
    """Every case folder up to :data:`_MAX_DEPTH` levels below ``root``, with the layout of its file names."""
    found, frontier = [], [root]
    for _ in range(_MAX_DEPTH):
        deeper = []
        for folder in frontier:
            for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
                layout = _folder_layout(child, candidates)
                if layout is None:
                    deeper.append(child)
                else:
                    found.append((child, layout))
        frontier = deeper
    return found


def _per_modality_case(folder: Path, layout: str) -> CaseFiles:
    """The files of one case folder; a missing modality gets its expected ``.nii.gz`` path."""
    spec, case_id = LAYOUTS[layout], folder.name
    images = tuple(
        _existing(folder, [spec.modality_file(case_id, m, ext) for ext in NIFTI_EXTENSIONS])
        or folder / spec.modality_file(case_id, m)
        for m in MODALITIES
    )
    label = _existing(folder, [spec.label_file(case_id, ext) for ext in NIFTI_EXTENSIONS])
    group = folder.parent.name if folder.parent.name in _GRADE_FOLDERS else None
    return CaseFiles(case_id, images, label, group)


def _msd_case_id(path: Path) -> str:
    """``BRATS_001`` from ``.../BRATS_001.nii.gz``."""
    name = path.name
    for ext in NIFTI_EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _msd_cases(root: Path) -> list[CaseFiles]:
    """Cases listed by an MSD ``dataset.json``: ``training`` entries are labelled, ``test`` entries are not."""
    index = root / "dataset.json"
    try:
        listing = json.loads(index.read_text(encoding="utf-8"))
        training, test = listing["training"], listing.get("test", [])
        cases = [
            CaseFiles(_msd_case_id(Path(item["image"])), (root / item["image"]).resolve(), (root / item["label"]).resolve())
            for item in training
        ]
        test_images = [item["image"] if isinstance(item, dict) else item for item in test]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise LayoutError(f"'{index}' is not a readable MSD dataset.json ({type(err).__name__}: {err}).") from err
    cases += [CaseFiles(_msd_case_id(Path(image)), (root / image).resolve(), None) for image in test_images]
    return cases


def _is_msd(root: Path) -> bool:
    """An MSD task folder has a ``dataset.json`` beside ``imagesTr``."""
    return (root / "dataset.json").is_file() and (root / "imagesTr").is_dir()


def discover_cases(root: Path, layout: str = "auto") -> tuple[str, list[CaseFiles]]:
    """Find the cases under ``root`` and the layout they use.

    Args:
        root: the dataset folder (a BraTS download's training or validation folder, or an MSD task folder).
        layout: ``"auto"`` or a key of ``LAYOUTS``; with ``"auto"`` an MSD folder is recognised by its
            ``dataset.json``, BraTS releases by their file naming (2021 by its ``BraTS2021_`` case ids).

    Raises:
        LayoutError: ``root`` is not a folder, the layout is unknown, no case folder is found, or the folders mix
            layouts.
    """
    if not root.is_dir():
        raise LayoutError(f"--root '{root}' is not a folder.")
    if layout != "auto" and layout not in LAYOUTS:
        raise LayoutError(f"unknown layout '{layout}', expected auto or one of {', '.join(LAYOUTS)}.")
    if layout == "msd" or (layout == "auto" and _is_msd(root)):
        return "msd", _msd_cases(root)
    candidates = ("brats2023", "brats2018") if layout == "auto" else (layout,)
    folders = _case_folders(root, candidates)
    if not folders:
        wanted = "BraTS 2018-2023 or MSD Task01" if layout == "auto" else layout
        raise LayoutError(f"no {wanted} case folder found under '{root}'.")
    if layout == "auto":
        found = sorted({_auto_layout_of(name, folder) for folder, name in folders})
        if len(found) > 1:
            raise LayoutError(f"'{root}' mixes layouts {', '.join(found)}; pass --layout or split the folder.")
        layout = found[0]
    return layout, [_per_modality_case(folder, layout) for folder, _ in folders]
