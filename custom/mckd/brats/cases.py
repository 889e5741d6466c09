"""The BraTS case model: the one place that turns a folder into cases and says whether a case's files are usable.

Every entry point uses it — ``python -m data_prep.brats`` (datalists), bundle inference and evaluation (through
:class:`~mckd.brats.loading.LoadModalities`), the MONAI Label app — so the same folder gets the same verdict everywhere.

Discovery (:func:`discover_cases`) finds files by name only; what they hold is checked when they are read, by the
checks below, one gate per input kind and in this order: the path (:func:`check_input_path`: a regular readable file,
or a DICOM series folder where a modality may be one; a folder, FIFO, device, dangling link or unreadable file is
named as such, never taken for a missing modality), the header before any voxel (:func:`read_header` +
:func:`check_header`: 3D, grey level, a plausible size, for NIfTI and every ITK format; :func:`check_dicom_series`:
one intact MR series), then one geometry tolerance and the voxels. What counts as a case:

- an MSD task folder (``dataset.json`` beside ``imagesTr/``): the images it lists, each one 4D image with the
  modalities in :data:`~mckd.brats.conventions.MODALITIES` order;
- a folder whose modality files belong to one case is that case, named after the folder whatever its files' prefix
  (``Brats18_x/Brats18_x_flair.nii.gz``, ``patientA/scan_flair.nii.gz``, ``patientA/FLAIR.nii``); its sub-folders
  named after a modality (``flair/``, ``T1ce/``, ``t2f/``) are DICOM series of the same case;
- a folder with the modality files of several cases side by side: one case per file prefix (``A_flair``, ``B_flair``);
- any other 4D image with as many channels as modalities: an MSD-style case named after the file.

Modality files are recognised by a suffix after ``_``, ``-``, ``.`` or a space, or as the whole name, in any letter
case: the BraTS 2018-2021 names (``flair``, ``t1``, ``t1ce``, ``t2``) and the 2023+ names (``t2f``, ``t1n``, ``t1c``,
``t2w``) of :data:`~mckd.brats.conventions.LAYOUTS`; the label map by ``seg``. Image files are those MONAI reads:
NIfTI (``.nii``, ``.nii.gz``) with nibabel, MetaImage and NRRD (``.mha``, ``.mhd``, ``.nrrd``, ``.nhdr``) with ITK.
A missing modality is ``None``. Folders are followed through symbolic links once each (a link loop neither repeats
a case nor hangs), down to :data:`MAX_DEPTH` levels.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.config import PathLike
from monai.utils import optional_import

from mckd.brats.conventions import LAYOUTS, MODALITIES, LabelConvention

pydicom, has_pydicom = optional_import("pydicom")

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_DEPTH",
    "GEOMETRY_ATOL_MM",
    "MAX_VOXELS",
    "SLICE_SPACING_RTOL",
    "CaseError",
    "DiscoveryError",
    "Case",
    "Discovery",
    "discover_cases",
    "image_stem",
    "check_input_path",
    "ImageHeader",
    "read_header",
    "check_header",
    "check_geometry",
    "check_voxels",
    "check_label_values",
    "check_dicom_series",
]

logger = logging.getLogger(__name__)

#: File extensions of the images a case may consist of (lower case; matched in any letter case), NIfTI first.
IMAGE_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
#: Folder levels searched below the root (``root/<release>/HGG/<case>/<series>``).
MAX_DEPTH = 6
#: Largest element-wise difference of two images' 4x4 affines (mm, and direction cosines) that still counts as one grid.
GEOMETRY_ATOL_MM = 1e-3
#: Largest volume (voxels per modality) read at all: a header claiming more is reported instead of allocated.
#: A BraTS volume has 240 x 240 x 155 = 8.9 M voxels; 2**30 voxels of float32 would need 4 GiB.
MAX_VOXELS = 2**30
#: Largest relative difference between the distances of consecutive DICOM slices and their median.
SLICE_SPACING_RTOL = 0.01

#: Characters that separate a file's case prefix from its modality suffix.
_SEPARATORS = ("_", "-", ".", " ")
#: MSD keeps label maps in these folders next to imagesTr/imagesTs; they hold no modality images.
_LABEL_FOLDERS = frozenset({"labelstr", "labelsts"})
_GRADE_FOLDERS = frozenset({"HGG", "LGG"})
_LABEL_SUFFIX = "seg"


#: Largest voxel magnitude accepted: squares summed over ~1e7 voxels stay far below float32's 3.4e38. MR intensities
#: (scanner units, or scaled to a few thousand) are many orders of magnitude smaller.
MAX_INTENSITY = 1e12


class CaseError(ValueError):
    """A case cannot be used; the message names the case and the file. Inference goes on with the other cases.

    Attributes:
        case_id: the case's identifier (``"<unknown case>"`` when the caller did not give one).
        path: the offending file or folder, when there is one.
        reason: what is wrong, in words a user can act on.
    """

    def __init__(self, case_id: str | None, reason: str, path: PathLike | None = None) -> None:
        self.case_id = case_id or "<unknown case>"
        self.path = None if path is None else str(path)
        self.reason = reason
        where = f" (file '{self.path}')" if self.path else ""
        super().__init__(f"case '{self.case_id}'{where}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # picklable across DataLoader worker processes with its three arguments
        return type(self), (self.case_id, self.reason, self.path)


class DiscoveryError(ValueError):
    """The input as a whole cannot be read (absent root, unknown layout, unreadable ``dataset.json``)."""


@dataclass(frozen=True)
class Case:
    """The files of one case as found on disk.

    Attributes:
        case_id: the case's identifier; it names the outputs.
        images: one entry per modality in :data:`MODALITIES` order (a file, a DICOM series folder, or None when the
            modality is missing), or one 4D image path (MSD).
        label: the label map, or None for an unlabelled case.
        layout: the key of :data:`LAYOUTS` whose file names the case uses (``"msd"`` for a 4D image).
        folder: the folder that holds the case.
        group: ``"HGG"``/``"LGG"`` when the case sits in such a folder (BraTS 2018-2020), else None.
    """

    case_id: str
    images: tuple[Path | None, ...] | Path
    label: Path | None
    layout: str
    folder: Path
    group: str | None = None

    @property
    def four_d(self) -> bool:
        """Whether the case is one 4D image."""
        return isinstance(self.images, Path)

    @property
    def available(self) -> tuple[bool, ...]:
        """Per modality, whether the case has an input for it (a 4D image has all)."""
        if isinstance(self.images, Path):
            return (True,) * len(MODALITIES)
        return tuple(path is not None for path in self.images)

    @property
    def inputs(self) -> list[Path]:
        """Every input path of the case (images and label)."""
        images = [self.images] if isinstance(self.images, Path) else [p for p in self.images if p is not None]
        return images + ([self.label] if self.label is not None else [])

    def item(self) -> dict[str, Any]:
        """The datalist entry of the case for :class:`~mckd.brats.loading.LoadModalitiesd` (absolute paths)."""
        images = self.images
        entry: dict[str, Any] = {
            "case_id": self.case_id,
            "image": str(images) if isinstance(images, Path) else [None if p is None else str(p) for p in images],
            "available": list(self.available),
            "layout": self.layout,
            "label_convention": LAYOUTS[self.layout].label_convention.name,
        }
        if self.label is not None:
            entry["label"] = str(self.label)
        return entry


@dataclass
class Discovery:
    """What :func:`discover_cases` found.

    Attributes:
        root: the searched path.
        cases: the cases, sorted by case id.
        problems: the cases that were left out, with the reason (:class:`CaseError`).
    """

    root: Path
    cases: list[Case] = field(default_factory=list)
    problems: list[CaseError] = field(default_factory=list)

    @property
    def items(self) -> list[dict[str, Any]]:
        """The cases as datalist entries (see :meth:`Case.item`)."""
        return [case.item() for case in self.cases]

    @property
    def layouts(self) -> list[str]:
        """The distinct layouts of the cases, sorted."""
        return sorted({case.layout for case in self.cases})

    def log_problems(self, log: logging.Logger | None = None) -> None:
        """Log every problem as a warning (on ``log``, default this module's logger)."""
        for problem in self.problems:
            (log or logger).warning("skipping %s", problem)


def image_stem(name: str) -> str | None:
    """``name`` without its image extension (any letter case), or None when it is not an image file name."""
    lower = name.lower()
    for ext in IMAGE_EXTENSIONS:
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return None


def _family(layout: str) -> str:
    """Layouts that share their file names (brats2018 and brats2021) form one family, named by its first member."""
    spec = LAYOUTS[layout]
    return next(name for name, other in LAYOUTS.items() if other.modality_suffixes == spec.modality_suffixes)


def _suffix_table() -> dict[str, tuple[str, str]]:
    """Lower-case suffix -> (modality, layout family) for every per-modality layout's names."""
    table: dict[str, tuple[str, str]] = {}
    for name, layout in LAYOUTS.items():
        for modality, suffix in layout.modality_suffixes.items():
            table.setdefault(suffix.lower(), (modality, _family(name)))
    return table


_SUFFIXES = _suffix_table()
#: ``(suffix, modality or None for the label, family or None)``, longest suffix first (``t1ce`` before ``t1``).
_NAMES = sorted(
    [(s, m, f) for s, (m, f) in _SUFFIXES.items()] + [(_LABEL_SUFFIX, None, None)], key=lambda n: -len(n[0])
)


def _match(stem: str) -> tuple[str, str | None, str | None] | None:
    """``(prefix, modality or None for the label, layout family or None)`` of a file stem, or None.

    The prefix loses its trailing separator; a stem that is only the suffix has the prefix ``""``.
    """
    lower = stem.lower()
    for suffix, modality, family in _NAMES:
        if lower == suffix:
            return "", modality, family
        if lower.endswith(suffix) and lower[-len(suffix) - 1] in _SEPARATORS:
            return stem[: -len(suffix) - 1], modality, family
    return None


def _header_shape(path: Path) -> tuple[int, ...] | None:
    """The shape a NIfTI header declares (None for other formats, a non-regular file or an unreadable header)."""
    if not path.name.lower().endswith((".nii", ".nii.gz")) or not path.is_file():
        return None
    try:
        return tuple(int(n) for n in nib.load(str(path)).shape)
    except Exception:  # any nibabel failure: the file is reported when it is read
        return None


@dataclass
class _Group:
    """The modality files sharing one prefix in one folder."""

    files: dict[str, list[Path]] = field(default_factory=dict)
    labels: list[Path] = field(default_factory=list)
    families: set[str] = field(default_factory=set)


class _Walker:
    """Walks the folders once (each real folder once) and collects cases and problems."""

    def __init__(self, num_modalities: int) -> None:
        self.num_modalities = num_modalities
        self.cases: list[Case] = []
        self.problems: list[CaseError] = []
        self.visited: set[Path] = set()

    def problem(self, case_id: str, reason: str, path: PathLike) -> None:
        self.problems.append(CaseError(case_id, reason, path))

    def walk(self, folder: Path, depth: int, is_root: bool) -> None:
        real = folder.resolve()
        if real in self.visited or depth > MAX_DEPTH or folder.name.lower() in _LABEL_FOLDERS:
            return
        self.visited.add(real)
        try:
            # real folders before links to them, so a case reached both ways keeps its own folder's name
            entries = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=_links_last)
        except OSError as err:
            self.problem(folder.name, f"cannot be listed: {err.strerror or err}", folder)
            return
        # every entry with an image name is an input, whatever it is (a FIFO, a dangling link, a folder): the gate
        # (check_input_path) reports it when the case is read, instead of the modality silently counting as missing
        files = [p for p in entries if image_stem(p.name) is not None]
        dirs = [p for p in entries if p.is_dir() and image_stem(p.name) is None]
        series = {d: _series_input(d) for d in dirs if d.name.lower() in _SUFFIXES}
        found_before = len(self.cases) + len(self.problems)
        self.folder_cases(folder, files, {d: source for d, source in series.items() if source is not None})
        others = [d for d in dirs if d not in series]
        for sub in others:
            self.walk(sub, depth + 1, is_root=False)
        nothing = len(self.cases) + len(self.problems) == found_before and not is_root and not others
        if nothing and (files or series or not entries):
            self.problem(folder.name, _nothing_found(files), folder)
        elif nothing:
            logger.debug("ignoring %s: it holds no image file.", folder)

    def folder_cases(
        self, folder: Path, files: list[Path], series: dict[Path, Path], single_file: bool = False
    ) -> None:
        """The cases of one folder's image files and modality sub-folders (``series``: folder -> its input).

        With ``single_file`` (one file given as the root) a prefixed file names its case by the prefix.
        """
        groups: dict[str, _Group] = {}
        others = []
        for path in files:
            match = _match(image_stem(path.name) or "")
            if match is None:
                others.append(path)
                continue
            prefix, modality, family = match
            group = groups.setdefault(prefix, _Group())
            if modality is None:
                group.labels.append(path)
            else:
                group.files.setdefault(modality, []).append(path)
                group.families.add(family)
        with_images = {p: g for p, g in groups.items() if g.files}
        if series and len(with_images) > 1:
            self.problem(
                folder.name,
                f"holds the files of several cases ({', '.join(sorted(with_images))}) and DICOM series folders; "
                "put each case in its own folder.",
                folder,
            )
        elif series or len(groups) == 1:
            merged = _Group()
            for group in groups.values():
                for modality, paths in group.files.items():
                    merged.files.setdefault(modality, []).extend(paths)
                merged.labels += group.labels
                merged.families |= group.families
            for sub, source in series.items():
                modality, family = _SUFFIXES[sub.name.lower()]
                merged.files.setdefault(modality, []).append(source)
                merged.families.add(family)
            name = next(iter(groups)) if single_file and next(iter(groups)) else folder.name
            self.per_modality_case(name, folder, merged)
        else:
            for prefix, group in groups.items():
                self.per_modality_case(prefix or folder.name, folder, group)
        for path in others:
            self.four_d_case(path, report_3d=single_file)

    def per_modality_case(self, case_id: str, folder: Path, group: _Group) -> None:
        twice = next(((m, p) for m, p in group.files.items() if len(p) > 1), None)
        if twice is not None:
            modality, paths = twice
            names = " and ".join(p.name for p in paths)
            self.problem(case_id, f"has two inputs for modality '{modality}' ({names}); keep one.", folder)
            return
        if len(group.labels) > 1:
            names = " and ".join(p.name for p in group.labels)
            self.problem(case_id, f"has two label maps ({names}); keep one.", folder)
            return
        label = group.labels[0] if group.labels else None
        if not group.files:
            self.problem(case_id, f"has a label map but no modality image (expected any of {list(MODALITIES)}).", label)
            return
        if len(group.families) > 1 and label is not None:
            self.problem(
                case_id, "mixes BraTS 2018-2021 and 2023 file names, so its label convention is unknown.", folder
            )
            return
        family = min(group.families)
        layout = "brats2021" if family == "brats2018" and case_id.startswith("BraTS2021_") else family
        images = tuple(group.files[m][0] if m in group.files else None for m in MODALITIES)
        group_name = folder.parent.name if folder.parent.name in _GRADE_FOLDERS else None
        self.cases.append(Case(case_id, images, label, layout, folder, group_name))

    def four_d_case(self, path: Path, report_3d: bool) -> None:
        """A file whose name is no modality's: a case when it is a 4D image with one channel per modality.

        Other such files are ignored (a brain mask beside the modalities), unless ``report_3d`` (the file is the root).
        """
        stem = image_stem(path.name) or path.name
        try:
            check_input_path(stem, path)
        except CaseError as err:  # a broken file with an image name is reported, never silently passed over
            self.problems.append(err)
            return
        shape = _header_shape(path)
        if shape is None or len(shape) < 4:
            if report_3d:
                self.problem(stem, "matches no modality name and is not a 4D multi-modality NIfTI image.", path)
            logger.debug("ignoring %s: its name matches no modality and it is not a 4D NIfTI image.", path)
            return
        if len(shape) == 4 and shape[3] == self.num_modalities:
            self.cases.append(Case(stem, path, None, "msd", path.parent))
        else:
            self.problem(
                stem, f"a 4D image needs {self.num_modalities} modality volumes last, its shape is {shape}.", path
            )


def _links_last(path: Path) -> tuple[bool, str]:
    return path.is_symlink(), path.name


def _series_input(folder: Path) -> Path | None:
    """The input of a modality-named sub-folder: its one image file, else the folder as a DICOM series (None: empty)."""
    files = [p for p in folder.iterdir() if not p.is_dir() and not p.name.startswith(".")]
    if len(files) == 1 and image_stem(files[0].name) is not None:
        return files[0]
    return folder if files else None


def _nothing_found(images: list[Path]) -> str:
    if not images:
        return "no modality image found in this folder."
    names = ", ".join(p.name for p in images[:5])
    return (
        f"no modality image found in this folder: the images {names} match no modality name "
        f"(expected a suffix such as {', '.join(sorted(_SUFFIXES))} after '_' or '-')."
    )


def _msd_cases(root: Path) -> list[Case]:
    """Cases listed by an MSD ``dataset.json``: ``training`` entries are labelled, ``test`` entries are not.

    Raises:
        DiscoveryError: when ``dataset.json`` cannot be read as an MSD listing.
    """
    index = root / "dataset.json"
    try:
        listing = json.loads(index.read_text(encoding="utf-8"))
        labelled = [
            ((root / item["image"]).resolve(), (root / item["label"]).resolve()) for item in listing["training"]
        ]
        test = [item["image"] if isinstance(item, dict) else item for item in listing.get("test", [])]
        unlabelled = [((root / image).resolve(), None) for image in test]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DiscoveryError(f"'{index}' is not a readable MSD dataset.json ({type(err).__name__}: {err}).") from err
    return [Case(image_stem(i.name) or i.name, i, label, "msd", i.parent) for i, label in labelled + unlabelled]


def _is_msd(root: Path) -> bool:
    """An MSD task folder has a ``dataset.json`` beside ``imagesTr``."""
    return (root / "dataset.json").is_file() and (root / "imagesTr").is_dir()


def _without_duplicates(cases: list[Case], problems: list[CaseError]) -> list[Case]:
    """The cases whose id is unique; every copy of a repeated id becomes a problem (outputs are named by id)."""
    by_id: dict[str, list[Case]] = {}
    for case in cases:
        by_id.setdefault(case.case_id, []).append(case)
    for case_id, copies in by_id.items():
        if len(copies) > 1:
            places = ", ".join(str(c.folder) for c in copies)
            for copy in copies:
                problems.append(
                    CaseError(case_id, f"the case id is found {len(copies)} times ({places}); keep one.", copy.folder)
                )
    return [copies[0] for _, copies in sorted(by_id.items()) if len(copies) == 1]


def discover_cases(root: PathLike, layout: str = "auto", num_modalities: int = len(MODALITIES)) -> Discovery:
    """Find every case under ``root``: a dataset folder, a folder of cases, one case folder, or one image file.

    Args:
        root: where to look.
        layout: ``"auto"`` (default) keeps every case; a key of :data:`LAYOUTS` keeps only the cases whose file names
            follow it (and gives ``brats2018``/``brats2021`` cases that name, as the two share their file names).
        num_modalities: the channels a 4D (MSD) image must have. Default 4.

    Returns:
        :class:`Discovery` with the cases sorted by id and the problems (including every copy of a repeated id).

    Raises:
        DiscoveryError: when ``root`` does not exist, the layout is unknown, or an MSD ``dataset.json`` is unreadable.
    """
    root = Path(root)
    if not root.exists():
        raise DiscoveryError(f"input path '{root}' does not exist.")
    if layout != "auto" and layout not in LAYOUTS:
        raise DiscoveryError(f"unknown layout '{layout}', expected auto or one of {', '.join(LAYOUTS)}.")
    walker = _Walker(num_modalities)
    if root.is_dir() and _is_msd(root):
        walker.cases = _msd_cases(root)
    elif root.is_dir():
        walker.walk(root, 0, is_root=True)
    elif image_stem(root.name) is None:
        walker.problem(root.name, f"is not an image file (expected one of {', '.join(IMAGE_EXTENSIONS)}).", root)
    else:
        walker.folder_cases(root.parent, [root], {}, single_file=True)
    cases = walker.cases
    if layout != "auto":
        cases = [_as_layout(c, layout) for c in cases if _family(c.layout) == _family(layout)]
    result = Discovery(root, [], walker.problems)
    result.cases = _without_duplicates(cases, result.problems)
    logger.info("found %d case(s) under %s, %d problem(s).", len(result.cases), root, len(result.problems))
    return result


def _as_layout(case: Case, layout: str) -> Case:
    return Case(case.case_id, case.images, case.label, layout, case.folder, case.group)


# -------------------------------------------------------------------------------------------------------------- checks


#: What a path is when it is not a regular file, by ``stat`` test.
_NOT_A_FILE = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def check_input_path(case_id: str | None, path: PathLike, series_ok: bool = False) -> None:
    """The gate of every input path, before anything opens it: a regular readable file, or a folder where allowed.

    Nothing is opened but the file itself (``open`` of a FIFO would block, of a device read it).

    Args:
        case_id: the case, for messages.
        path: the input (a modality file, a 4D image, a label map, a slice of a DICOM series).
        series_ok: a folder is accepted (a DICOM series folder where a modality is expected), unless its name is an
            image file's (``x_t1.nii.gz/``).

    Raises:
        CaseError: naming the case, the path and what it is: absent, a dangling symbolic link (as git-annex leaves
            files whose content is not present), a link loop, a folder where a file is expected, a FIFO, a device or
            a socket, or a file that cannot be opened (``permission denied`` named as such).
    """
    path = Path(path)
    link = f" (a symbolic link to '{os.readlink(path)}')" if path.is_symlink() else ""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if link:
            raise CaseError(
                case_id,
                f"is a dangling symbolic link: its target '{os.readlink(path)}' does not exist (a git-annex or "
                "git-lfs file whose content was not fetched?).",
                path,
            ) from None
        raise CaseError(case_id, "does not exist.", path) from None
    except OSError as err:  # ELOOP, EACCES on a parent folder, ...
        raise CaseError(case_id, f"cannot be accessed: {err.strerror or err}{link}.", path) from None
    if stat.S_ISDIR(info.st_mode):
        if series_ok and image_stem(path.name) is None:  # a folder named like an image file is where a file was meant
            return
        raise CaseError(case_id, f"is a folder{link}, not an image file.", path)
    for test, what in _NOT_A_FILE:
        if test(info.st_mode):
            raise CaseError(case_id, f"is {what}{link}, not an image file.", path)
    if not stat.S_ISREG(info.st_mode):
        raise CaseError(case_id, f"is not a regular file{link}.", path)
    try:
        os.close(os.open(path, os.O_RDONLY))
    except PermissionError:
        raise CaseError(
            case_id,
            f"cannot be read: permission denied (mode {stat.filemode(info.st_mode)}, owner uid "
            f"{info.st_uid}){link}.",
            path,
        ) from None
    except OSError as err:
        raise CaseError(case_id, f"cannot be opened: {err.strerror or err}{link}.", path) from None


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header declares, read without its voxels.

    Attributes:
        shape: the declared shape (spatial first; a 4D image's channels last).
        dtype: the voxel type (a structured type for NIfTI colour voxels), or None when the reader does not say.
        components: values per voxel (3 for RGB, ``n`` for a vector image; 1 for a grey-level image).
        pixel_type: the reader's name of the pixel type (``"scalar"``, ``"rgb"``, ``"vector"``, ...).
    """

    shape: tuple[int, ...]
    dtype: np.dtype | None
    components: int = 1
    pixel_type: str = "scalar"


_NIFTI_EXTENSIONS = (".nii", ".nii.gz")
#: ITK's component type names (``ImageIOBase.GetComponentTypeAsString``) -> numpy.
_ITK_COMPONENTS = {
    "unsigned_char": np.uint8,
    "char": np.int8,
    "unsigned_short": np.uint16,
    "short": np.int16,
    "unsigned_int": np.uint32,
    "int": np.int32,
    "unsigned_long": np.uint64,
    "long": np.int64,
    "unsigned_long_long": np.uint64,
    "long_long": np.int64,
    "float": np.float32,
    "double": np.float64,
}


def _itk_header(path: Path) -> ImageHeader | None:
    """The header of a file ITK reads (MetaImage, NRRD, ...), from ``ImageIOBase.ReadImageInformation``."""
    itk, has_itk = optional_import("itk")
    if not has_itk:
        return None
    io = itk.ImageIOFactory.CreateImageIO(str(path), itk.CommonEnums.IOFileMode_ReadMode)
    if io is None:
        return None
    io.SetFileName(str(path))
    io.ReadImageInformation()
    shape = tuple(int(io.GetDimensions(i)) for i in range(io.GetNumberOfDimensions()))
    pixel_type = str(io.GetPixelTypeAsString(io.GetPixelType()))
    component = _ITK_COMPONENTS.get(str(io.GetComponentTypeAsString(io.GetComponentType())))
    components = int(io.GetNumberOfComponents())
    dtype = None if component is None else np.dtype(component)
    if pixel_type == "complex" and dtype is not None:
        dtype, components = np.result_type(dtype, np.complex64), 1
    return ImageHeader(shape, dtype, components, pixel_type)


def read_header(case_id: str | None, path: PathLike) -> ImageHeader | None:
    """What the header of an image file declares, before any voxel is read (None for a format without a header
    reader here, e.g. a DICOM folder, checked by :func:`check_dicom_series`).

    NIfTI headers are read with nibabel, MetaImage / NRRD (and other ITK formats) with ITK's image IO.

    Raises:
        CaseError: when the header cannot be read, naming the case and the file.
    """
    path = Path(path)
    if not path.is_file():
        return None
    name = path.name.lower()
    try:
        if name.endswith(_NIFTI_EXTENSIONS):
            image = nib.load(str(path))
            return ImageHeader(tuple(int(n) for n in image.shape), image.get_data_dtype())
        if name.endswith(IMAGE_EXTENSIONS):
            return _itk_header(path)
    except Exception as err:  # any reader failure names the file
        kind = "NIfTI" if name.endswith(_NIFTI_EXTENSIONS) else "an ITK image"
        raise CaseError(case_id, f"cannot be read as {kind}: {err}", path) from err
    return None


def _check_size(case_id: str | None, path: PathLike, shape: Sequence[int]) -> None:
    """Refuse a volume of over :data:`MAX_VOXELS` voxels (its spatial part) before it is allocated."""
    if int(np.prod([int(n) for n in shape[:3]], dtype=np.int64)) > MAX_VOXELS:
        raise CaseError(
            case_id, f"declares an implausible size {tuple(shape)} (over {MAX_VOXELS} voxels); is it corrupt?", path
        )


def check_header(
    case_id: str | None,
    path: PathLike,
    shape: Sequence[int],
    dtype: np.dtype | None,
    channels: int = 1,
    components: int = 1,
) -> None:
    """Check what an image's header declares, before its voxels are read.

    Args:
        case_id: the case, for messages.
        path: the file.
        shape: the declared shape (spatial first; a 4D image's channels last).
        dtype: the declared voxel type (None: not known).
        channels: 1 for a single-modality file (a 3D volume), ``M`` for a 4D image with the modalities last.
        components: values per voxel (colour or vector pixels when above 1).

    Raises:
        CaseError: for colour (RGB) or vector voxels, a volume that is not 3D (or not 4D with ``channels`` last), a
            one-slice volume, a volume over :data:`MAX_VOXELS` voxels, or complex or boolean voxels.
    """
    shape = tuple(int(n) for n in shape)
    if dtype is not None and np.dtype(dtype).names:
        fields = ", ".join(np.dtype(dtype).names)
        raise CaseError(
            case_id, f"is a colour image ({fields} per voxel); expected one grey-level MR intensity per voxel.", path
        )
    if components > 1:
        raise CaseError(
            case_id,
            f"has {components} values per voxel (colour or vector pixels); expected one grey-level MR intensity per "
            "voxel.",
            path,
        )
    if channels == 1 and len(shape) != 3:
        raise CaseError(case_id, f"is not a 3D volume: shape {shape} (one 3D file per modality).", path)
    if channels > 1 and (len(shape) != 4 or shape[3] != channels):
        raise CaseError(case_id, f"a 4D image needs {channels} modality volumes last, its shape is {shape}.", path)
    _check_size(case_id, path, shape)
    if min(shape[:3]) < 2:
        raise CaseError(
            case_id, f"is not a 3D volume: shape {shape} has a single voxel along an axis (one slice?).", path
        )
    if dtype is not None and np.dtype(dtype).kind in "bc":
        kind = "complex" if np.dtype(dtype).kind == "c" else "boolean"
        raise CaseError(case_id, f"has {kind} voxels ({dtype}); expected integer or floating-point intensities.", path)


def check_geometry(
    case_id: str | None,
    reference: tuple[PathLike, Sequence[int], Any],
    other: tuple[PathLike, Sequence[int], Any],
) -> None:
    """Check that two images of one case share a voxel grid: same spatial shape, affines within GEOMETRY_ATOL_MM.

    Args:
        case_id: the case, for messages.
        reference: ``(path, spatial shape, 4x4 affine)`` of the case's first image.
        other: the same for the image to compare.

    Raises:
        CaseError: naming the other file and the reference, for a shape or affine mismatch.
    """
    (ref_path, ref_shape, ref_affine), (path, shape, affine) = reference, other
    ref_name = Path(ref_path).name
    if tuple(int(n) for n in shape) != tuple(int(n) for n in ref_shape):
        raise CaseError(case_id, f"spatial shape {tuple(shape)} differs from {tuple(ref_shape)} of '{ref_name}'.", path)
    difference = float(np.abs(np.asarray(affine, float) - np.asarray(ref_affine, float)).max())
    if difference > GEOMETRY_ATOL_MM:
        raise CaseError(
            case_id,
            f"affine differs from that of '{ref_name}' by up to {difference:.4g} (tolerance {GEOMETRY_ATOL_MM}); "
            "the modalities are not co-registered on one grid.",
            path,
        )


def check_voxels(case_id: str | None, path: PathLike, data: Any, what: str = "") -> bool:
    """Check an image's voxels; return whether it holds any non-zero voxel (an all-zero modality is a placeholder).

    Args:
        case_id: the case, for messages.
        path: the file.
        data: the voxels (numpy array or tensor).
        what: which part of the file, e.g. ``"channel 2 (T1ce)"``, for messages.

    Raises:
        CaseError: when the voxels hold NaN or Inf, or magnitudes beyond :data:`MAX_INTENSITY` (the intensity
            normalisation's float32 sums of squares would overflow and leave the case all background).
    """
    array = np.asarray(data)
    part = f"{what} " if what else ""
    if array.dtype.kind == "f":
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise CaseError(case_id, f"{part}contains {bad} NaN/Inf voxels.", path)
    if array.size and array.dtype.kind in "fiu":
        largest = float(np.abs(array).max())
        if largest > MAX_INTENSITY:
            raise CaseError(
                case_id,
                f"{part}holds intensities up to {largest:.3g}, beyond {MAX_INTENSITY:.0e}: not the range of an MR "
                "image (check the header's scl_slope / scl_inter or the conversion that wrote it); the intensity "
                "normalisation would overflow float32.",
                path,
            )
    return bool(array.any())


def check_label_values(case_id: str | None, path: PathLike, data: Any, convention: LabelConvention) -> set[int]:
    """Check a label map's values against ``convention``; return the values present.

    Raises:
        CaseError: for NaN/Inf, non-integer values or values the convention does not define.
    """
    array = np.asarray(data)
    check_voxels(case_id, path, array, "label")
    if array.dtype.kind in "ui" and array.size and array.min() >= 0 and array.max() < 256:
        values = {int(v) for v in np.flatnonzero(np.bincount(array.ravel()))}
    else:
        distinct = np.unique(array)
        if np.any(distinct != np.round(distinct)):
            raise CaseError(case_id, "label map holds non-integer values.", path)
        values = {int(v) for v in distinct}
    unknown = sorted(values - convention.valid_values)
    if unknown:
        raise CaseError(
            case_id,
            f"label map holds values {unknown} that the '{convention.name}' convention does not define "
            f"(valid: {sorted(convention.valid_values)}); is it the right convention?",
            path,
        )
    return values


def _slice_positions(slices: Iterable[Any]) -> list[float]:
    """Slice positions along the normal of their shared orientation (every slice has both tags: checked before)."""
    positions = []
    for ds in slices:
        orientation = ds.ImageOrientationPatient
        normal = np.cross(np.asarray(orientation[:3], float), np.asarray(orientation[3:], float))
        positions.append(float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))))
    return sorted(positions)


#: Values larger than this are not read by :func:`_read_series_headers` (the pixel data): only their length is.
_DEFER_BYTES = 1024
_PIXEL_DATA = 0x7FE00010
_UNDEFINED_LENGTH = 0xFFFFFFFF
#: Largest element-wise difference of two slices' ImageOrientationPatient that still counts as one orientation.
_ORIENTATION_ATOL = 1e-4


def _read_series_headers(folder: Path, case_id: str | None) -> dict[str, list[tuple[Path, Any]]]:
    """``SeriesInstanceUID -> [(file, dataset)]`` of every file in a series folder, pixel data left unread.

    Raises:
        CaseError: for an empty folder, an entry that is not a regular readable file (:func:`check_input_path`) or
            a file that is not DICOM.
    """
    try:
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and not p.is_dir())
    except OSError as err:
        raise CaseError(case_id, f"cannot be listed: {err.strerror or err}.", folder) from None
    if not entries:
        raise CaseError(case_id, "is an empty folder: neither an image file nor a DICOM series.", folder)
    series: dict[str, list[tuple[Path, Any]]] = {}
    for path in entries:
        check_input_path(case_id, path)
        try:
            ds = pydicom.dcmread(path, defer_size=_DEFER_BYTES)
        except Exception as err:  # pydicom raises several types for non-DICOM content
            raise CaseError(
                case_id, f"'{path.name}' in this DICOM series folder is not DICOM ({err}).", folder
            ) from err
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((path, ds))
    return series


def _frames(ds: Any) -> int:
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def _pixel_data_problem(path: Path, ds: Any) -> str | None:
    """Why a slice's pixel data is unusable (absent, shorter than Rows x Columns x ... declare), or None."""
    raw = ds.get_item(_PIXEL_DATA)
    if raw is None:
        return f"slice '{path.name}' has no pixel data."
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    length = getattr(raw, "length", None)
    if length is None or length == _UNDEFINED_LENGTH or (syntax is not None and syntax.is_compressed):
        return None  # encapsulated (compressed) frames: the decoder checks them
    rows, columns, bits = ds.get("Rows"), ds.get("Columns"), ds.get("BitsAllocated")
    if not rows or not columns or not bits:
        return f"slice '{path.name}' lacks Rows, Columns or BitsAllocated."
    expected = (int(rows) * int(columns) * int(ds.get("SamplesPerPixel", 1) or 1) * _frames(ds) * int(bits) + 7) // 8
    value_tell = getattr(raw, "value_tell", None)
    present = length if value_tell is None else min(length, path.stat().st_size - int(value_tell))
    if present < expected:
        return (
            f"slice '{path.name}' holds {present} of the {expected} bytes of pixel data its header declares "
            f"({rows} x {columns}, {bits} bits): the file is truncated or damaged."
        )
    return None


def _check_slices(folder: Path, case_id: str | None, files: list[tuple[Path, Any]], modality: str | None) -> None:
    """The checks of one series' files that need no geometry: MR, grey level, one size, complete pixel data."""
    what = f"the {modality} input" if modality else "a modality input"
    for path, ds in files:
        kind = str(ds.get("Modality", "") or "")
        if kind and kind != "MR":
            raise CaseError(
                case_id,
                f"is a {kind} series (Modality '{kind}' in '{path.name}'), not MR: {what} must be an MR " "series.",
                folder,
            )
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        if samples != 1:
            photometric = ds.get("PhotometricInterpretation", "?")
            raise CaseError(
                case_id,
                f"is a colour series ({samples} samples per pixel, {photometric} in '{path.name}'); "
                "expected grey-level MR slices.",
                folder,
            )
    sizes = {(ds.get("Rows"), ds.get("Columns")) for _, ds in files}
    if len(sizes) > 1:
        first = (files[0][1].get("Rows"), files[0][1].get("Columns"))
        odd = next(path for path, ds in files if (ds.get("Rows"), ds.get("Columns")) != first)
        shown = ", ".join(f"{r} x {c}" for r, c in sorted(sizes, key=str))
        raise CaseError(
            case_id,
            f"has slices of different sizes ({shown} rows x columns; '{odd.name}' differs from "
            f"'{files[0][0].name}'): not one volume.",
            folder,
        )
    for path, ds in files:
        problem = _pixel_data_problem(path, ds)
        if problem:
            raise CaseError(case_id, problem, folder)
    rows, columns = next(iter(sizes))
    if rows and columns:
        _check_size(case_id, folder, (int(columns), int(rows), sum(_frames(ds) for _, ds in files)))


def _check_placement(folder: Path, case_id: str | None, files: list[tuple[Path, Any]]) -> bool:
    """Every single-frame slice has a position and one shared orientation; return whether there is a slice stack.

    A multi-frame file (no per-file position) is left to the reader.
    """
    single = [(path, ds) for path, ds in files if _frames(ds) == 1]
    if not single:
        return False
    for keyword, size in (("ImagePositionPatient", 3), ("ImageOrientationPatient", 6)):
        without = [path.name for path, ds in single if len(ds.get(keyword) or ()) != size]
        if without:
            raise CaseError(
                case_id,
                f"{len(without)} of {len(single)} slices have no {keyword} (first '{without[0]}'): where the slices "
                "lie in the patient is unknown, and a reader would place them wrongly.",
                folder,
            )
    orientations = np.asarray([[float(v) for v in ds.ImageOrientationPatient] for _, ds in single])
    differs = np.flatnonzero(np.abs(orientations - orientations[0]).max(axis=1) > _ORIENTATION_ATOL)
    if differs.size:
        raise CaseError(
            case_id,
            f"mixes slice orientations: '{single[int(differs[0])][0].name}' has ImageOrientationPatient "
            f"{orientations[int(differs[0])].tolist()}, '{single[0][0].name}' {orientations[0].tolist()}.",
            folder,
        )
    if len(single) == 1 and len(files) == 1:
        raise CaseError(case_id, "holds a single slice: not a 3D volume.", folder)
    return True


def check_dicom_series(folder: PathLike, case_id: str | None = None, modality: str | None = None) -> None:
    """Check a DICOM series folder from its headers, pixel data unread: the gate of a series input.

    Readers stack whatever slices they find: a folder mixing two series, or a series with a missing slice, a slice
    of another size or a slice without a position, would load as a volume with wrong geometry (or fail deep inside
    the reader). Multi-frame files (no per-file ``ImagePositionPatient``) are left to the reader. Without pydicom
    nothing is checked.

    Args:
        folder: the series folder.
        case_id: the case, for messages.
        modality: the modality the series stands for (e.g. ``"FLAIR"``), for messages.

    Raises:
        CaseError: naming the case and the folder: an empty folder, an entry that is not a regular readable file, a
            file that is not DICOM, several ``SeriesInstanceUID``, a ``Modality`` other than MR, colour slices, slices
            of different sizes, pixel data shorter than the header declares, slices without
            ``ImagePositionPatient`` / ``ImageOrientationPatient``, mixed orientations, a single slice, an
            implausible size, two slices at one position, or slice distances that differ from their median by more
            than :data:`SLICE_SPACING_RTOL` (missing slices are counted when the gap is a multiple of the spacing).
    """
    folder = Path(folder)
    if not has_pydicom:
        return
    series = _read_series_headers(folder, case_id)
    if len(series) > 1:
        uids = ", ".join(sorted(series))
        raise CaseError(
            case_id, f"holds {len(series)} DICOM series ({uids}); put each series in its own folder.", folder
        )
    files = next(iter(series.values()))
    _check_slices(folder, case_id, files, modality)
    if not _check_placement(folder, case_id, files):
        return
    positions = _slice_positions(ds for _, ds in files if _frames(ds) == 1)
    if len(positions) < 3:
        if len(positions) == 2 and abs(positions[1] - positions[0]) <= 1e-6:
            raise CaseError(case_id, f"has two slices at position {positions[0]:.4g} mm.", folder)
        return
    gaps = np.diff(positions)
    step = float(np.median(gaps))
    if gaps.min() <= SLICE_SPACING_RTOL * abs(step):
        raise CaseError(case_id, f"has two slices at position {positions[int(np.argmin(gaps))]:.4g} mm.", folder)
    uneven = np.flatnonzero(np.abs(gaps - step) > SLICE_SPACING_RTOL * step)
    if uneven.size == 0:
        return
    first = int(uneven[0])
    ratio = gaps[first] / step
    where = f"between positions {positions[first]:.4g} and {positions[first + 1]:.4g} mm"
    if round(ratio) >= 2 and abs(ratio - round(ratio)) <= SLICE_SPACING_RTOL * round(ratio):
        missing = int(sum(round(g / step) - 1 for g in gaps[uneven] if round(g / step) >= 2))
        raise CaseError(
            case_id, f"misses {missing} slice(s): the first gap is {where} (slice spacing {step:.4g} mm).", folder
        )
    raise CaseError(
        case_id,
        f"has unevenly spaced slices: {gaps.min():.4g} to {gaps.max():.4g} mm apart (first irregular gap {where}).",
        folder,
    )
