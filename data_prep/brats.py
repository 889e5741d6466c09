"""Turn a BraTS 2018-2025 or MSD Task01 download into a checked MONAI datalist JSON with MCKD's splits.

Usage::

    python -m data_prep.brats --root DIR --out datalist.json
        [--layout auto|brats2018|brats2021|brats2023|brats2024|msd]
        [--split paper|kfold:K:I|ratio:R|PROTOCOL] [--seed S] [--strict] [--allow-missing-modalities] [--jobs N]
        [--resample-to MODALITY [--resampled-dir DIR]]

Cases are found and checked by the BraTS case model (:mod:`mckd.brats.cases`), reading each case as training and
inference do (:func:`mckd.brats.loading.check_case`): missing, unreadable or corrupt files, wrong dimensionality, data
type or an implausible size, shape/affine mismatch, NaN/Inf, all-zero images, label values outside the release's
convention. Bad cases are skipped with a warning naming case, file and reason (``--strict``: nothing is written).
The datalist is never written over an input or into the dataset folder. Paths in the datalist are relative to the
datalist's folder, so ``monai.data.load_decathlon_datalist(path, data_list_key=...)`` resolves them with its default
``base_dir``.

BraTS 2024/2025 post-treatment glioma (``brats2024``) uses the 2023 file names with one more label, 4 = resection
cavity, which the 2023 convention refuses. ``--layout auto`` therefore reads a folder of 2023 file names as
``brats2023`` unless a label map holds the value 4: the cases refused for it are read again as ``brats2024`` and, if
one passes, the whole folder is ``brats2024`` (a warning says so). ``--layout brats2023`` refuses label 4;
``--layout brats2024`` reads every case once. Label 4 of BraTS 2018-2021 stays the enhancing tumour.

``--split`` takes a published protocol's name too (``rfnet2018:1``, ``rfnet2018:2``, ``rfnet2018:3``, ``rfnet2020``,
``m2ftrans2021``, ``imfuse2023``; :mod:`mckd.brats.protocols`): the datalist then keeps the published training /
validation / test membership, with the meta-validation cases taken from the training list
(:mod:`data_prep._published_splits`); a listed case that is absent or unusable is an error (exit 2) naming it, and
cases the lists do not name are left out with a warning naming them.

Exit status: 0 datalist written (possibly with skipped cases); 1 ``--strict`` and a case has a problem;
2 usage error (bad argument, ``--root`` not a folder, no case found, malformed ``dataset.json``, output
inside the dataset or not writable, labelled cases of two label conventions, too few cases for the split or an empty
training split, a case of a published protocol missing) or no usable case.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from mckd.brats.cases import Case, CaseError, DiscoveryError, discover_cases
from mckd.brats.conventions import LAYOUTS, MODALITIES
from mckd.brats.loading import CaseVerdict, LoadModalities, check_case
from mckd.brats.protocols import PROTOCOLS, ProtocolError
from mckd.brats.protocols import protocol as published_protocol
from mckd.fileio import enclosing_folder, ensure_not_input, write_json_atomic

from ._brats_resample import resample_case
from ._brats_splits import SplitSpec, split_cases
from ._published_splits import PublishedSplitError, assign_published, select_listed

__all__ = ["EXIT_OK", "EXIT_STRICT", "EXIT_USAGE", "PreparationError", "Preparation", "prepare_datalist", "main"]

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_STRICT, EXIT_USAGE = 0, 1, 2
#: Datalist keys of the case lists, in the order they are written.
SPLIT_KEYS: tuple[str, ...] = ("training", "meta_validation", "validation", "testing")
#: Per-case keys whose values MONAI's datalist loader may rewrite into paths when a same-named file exists.
_NON_PATH_KEYS: tuple[str, ...] = ("case_id", "label_convention")


class PreparationError(Exception):
    """Preparation stopped; ``status`` is the exit status and ``problems`` the per-case problems (if any)."""

    def __init__(self, message: str, status: int, problems: Sequence[CaseError] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.problems = tuple(problems)


@dataclass(frozen=True)
class Preparation:
    """What :func:`prepare_datalist` wrote.

    Attributes:
        out: the datalist file.
        layout: the layout read.
        datalist: the JSON content written.
        problems: problems of the skipped cases.
    """

    out: Path
    layout: str
    datalist: dict[str, Any]
    problems: tuple[CaseError, ...]


def _shown(path: str | None, root: Path) -> str:
    """``path`` relative to the dataset root where possible, with forward slashes."""
    if path is None:
        return str(root)
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _describe(problem: CaseError, root: Path) -> str:
    """``<case>: <file relative to the root>: <reason>``."""
    return f"{problem.case_id}: {_shown(problem.path, root)}: {problem.reason}"


def _find(root: Path, layout: str) -> tuple[str, list[Case], list[CaseError]]:
    """The dataset's layout (``"mixed"`` for several), cases and discovery problems.

    Unlabelled cases of any layout may share a folder; labelled cases must share one label convention.

    Raises:
        PreparationError: (usage) for a root that is not a folder, an unknown layout, no case, or labelled cases of
            several label conventions.
    """
    if not root.is_dir():
        raise PreparationError(f"--root '{root}' is not a folder.", EXIT_USAGE)
    try:
        found = discover_cases(root, layout)
    except DiscoveryError as err:
        raise PreparationError(str(err), EXIT_USAGE) from err
    if not found.cases and not found.problems:
        wanted = "BraTS 2018-2023 or MSD Task01" if layout == "auto" else layout
        raise PreparationError(f"no {wanted} case found under '{root}'.", EXIT_USAGE)
    labelled = sorted({c.layout for c in found.cases if c.label is not None})
    if len({LAYOUTS[name].label_convention.name for name in labelled}) > 1:
        raise PreparationError(
            f"'{root}' mixes labelled cases of the layouts {', '.join(labelled)}, whose label conventions differ; "
            "pass --layout or split the folder.",
            EXIT_USAGE,
        )
    layouts = found.layouts or [layout]
    return (layouts[0] if len(layouts) == 1 else "mixed"), found.cases, found.problems


def _check_all(cases: Sequence[Case], allow_missing: bool, jobs: int) -> list[CaseVerdict]:
    """Check every case (in ``jobs`` threads; gzip and numpy release the GIL) with a progress bar on a terminal."""
    loader = LoadModalities()

    def check(case: Case) -> CaseVerdict:
        return check_case(case, loader, require_all=not allow_missing)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = pool.map(check, cases)
        return list(tqdm(results, total=len(cases), desc="checking cases", unit="case", disable=None, leave=False))


def _relabelled_layouts(layout: str) -> list[str]:
    """Layouts with the file names of ``layout`` but another label convention (``brats2023`` -> ``brats2024``)."""
    spec = LAYOUTS[layout]
    return [
        name
        for name, other in LAYOUTS.items()
        if not other.four_d
        and other.modality_suffixes == spec.modality_suffixes
        and other.label_convention.valid_values > spec.label_convention.valid_values
    ]


def _read_as_post_treatment(
    verdicts: Sequence[CaseVerdict], allow_missing: bool, jobs: int
) -> tuple[list[CaseVerdict], str | None]:
    """(``--layout auto``) Read the dataset in a layout of the same file names whose labels extend its own, when a
    label map holds a value only that layout defines (BraTS 2023 names with label 4: ``brats2024``).

    The labelled cases refused under their layout are read again in each such layout (the only difference is the
    extra values, so a case passing now holds one of them); the first layout under which one passes is the
    dataset's: every case of the original layout is moved to it, the re-read verdicts replace the refusals.

    Returns:
        the verdicts (unchanged when no layout fits) and the layout moved to (None when none).
    """
    for original in sorted({v.case.layout for v in verdicts}):
        refused = [v for v in verdicts if v.case.layout == original and v.problem is not None and v.case.label]
        for layout in _relabelled_layouts(original) if refused else []:
            again = _check_all([dataclasses.replace(v.case, layout=layout) for v in refused], allow_missing, jobs)
            passing = [v.case.case_id for v in again if v.problem is None]
            if not passing:
                continue
            labels = LAYOUTS[layout].label_convention.labels
            logger.warning(
                "%d case(s) hold label values the '%s' convention does not define but '%s' does (e.g. %s): reading "
                "the dataset as %s (labels %s); pass --layout %s to refuse them, --layout %s to read each case once",
                len(passing), LAYOUTS[original].label_convention.name, LAYOUTS[layout].label_convention.name,
                ", ".join(passing[:3]), layout, ", ".join(f"{k} {n}" for k, n in labels.items()), original, layout,
            )
            reread = {v.case.case_id: v for v in again}

            def moved(verdict: CaseVerdict) -> CaseVerdict:
                if verdict.case.layout != original:
                    return verdict
                case = dataclasses.replace(verdict.case, layout=layout)
                return reread.get(case.case_id) or dataclasses.replace(verdict, case=case)

            return [moved(v) for v in verdicts], layout
    return list(verdicts), None


def _resample_all(cases: Sequence[Case], reference: str, folder: Path, jobs: int) -> tuple[list[Case], list[CaseError]]:
    """Each case on the grid of its ``reference`` modality (copies under ``folder`` where needed), and the failures."""

    def resample(case: Case) -> Case | CaseError:
        try:
            return resample_case(case, reference, folder)
        except CaseError as err:
            return err

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(tqdm(pool.map(resample, cases), total=len(cases), desc="resampling", unit="case", disable=None))
    return [r for r in results if isinstance(r, Case)], [r for r in results if isinstance(r, CaseError)]


def _relative(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` with forward slashes."""
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def _image_paths(case: Case) -> Path | list[Path]:
    """The case's image entry; a missing modality keeps the path its file would have (MONAI's loader needs strings)."""
    if isinstance(case.images, Path):
        return case.images
    spec = LAYOUTS[case.layout]
    return [
        path if path is not None else case.folder / spec.modality_file(case.case_id, modality)
        for modality, path in zip(MODALITIES, case.images)
    ]


def _entry(verdict: CaseVerdict, base: Path, allow_missing: bool) -> dict[str, Any]:
    """The datalist item of one usable case."""
    case = verdict.case
    images = _image_paths(case)
    entry: dict[str, Any] = {
        "case_id": case.case_id,
        "image": _relative(images, base) if isinstance(images, Path) else [_relative(p, base) for p in images],
    }
    if case.label is not None:
        entry["label"] = _relative(case.label, base)
    entry["label_convention"] = LAYOUTS[case.layout].label_convention.name
    if allow_missing:
        entry["available"] = list(verdict.available)
    return entry


def _stratum(verdict: CaseVerdict) -> tuple[str, bool]:
    """Stratification key of a labelled case: its grade folder (if any) and whether it has enhancing tumour."""
    return (verdict.case.group or "", bool(verdict.has_enhancing))


def _warn_about_loader_rewrites(datalist: dict[str, Any], base: Path) -> None:
    """Warn when MONAI's ``load_decathlon_datalist`` would turn a case id or convention name into a path.

    The loader joins every string value with its ``base_dir`` when the result exists; a case folder or a folder named
    like the convention beside the datalist would be mistaken for such a path.
    """
    clashes = {
        item[key]
        for split in SPLIT_KEYS
        for item in datalist[split]
        for key in _NON_PATH_KEYS
        if (base / item[key]).exists()
    }
    if clashes:
        logger.warning(
            "'%s' holds entries named %s: monai.data.load_decathlon_datalist would read these values as paths; "
            "write the datalist into another folder",
            base,
            ", ".join(sorted(clashes)[:5]),
        )


def _assign(verdicts: Sequence[CaseVerdict], spec: SplitSpec, seed: int) -> dict[str, list[str]]:
    """Case ids per list; unlabelled cases go to ``testing``.

    Raises:
        ValueError: when the split cannot be made or leaves ``training`` empty while labelled cases exist.
    """
    labelled = [(v.case.case_id, _stratum(v)) for v in verdicts if v.case.label is not None]
    if spec.kind == "published":
        raise ValueError("a published protocol's lists are assigned by data_prep._published_splits.assign_published")
    assignment = split_cases(labelled, spec, seed) if labelled else {k: [] for k in SPLIT_KEYS[:3]}
    if labelled and not assignment["training"]:
        raise ValueError(f"split {spec} leaves 'training' empty ({len(labelled)} labelled cases).")
    assignment["testing"] = [v.case.case_id for v in verdicts if v.case.label is None]
    return assignment


def _assign_published(
    verdicts: Sequence[CaseVerdict], spec: SplitSpec, seed: int, problems: Sequence[CaseError]
) -> tuple[dict[str, list[str]], dict[str, tuple[bool, ...]]]:
    """Case ids per list of a published protocol, and its fixed per-case subsets (see :mod:`._published_splits`)."""
    labelled = [(v.case.case_id, _stratum(v)) for v in verdicts if v.case.label is not None]
    unlabelled = [v.case.case_id for v in verdicts if v.case.label is None]
    result = assign_published(spec.protocol, labelled, unlabelled, problems, seed)
    return result.lists, dict(result.subsets)


def _protocol_fields(spec: SplitSpec) -> dict[str, Any]:
    """The datalist's description of a published protocol (empty for the other splits)."""
    if spec.kind != "published":
        return {}
    proto = published_protocol(spec.protocol)
    return {
        "protocol": {
            "name": proto.name,
            "release": proto.release,
            "scoring": proto.scoring,
            "source": proto.source,
            "meta_validation": "taken from the published training list (data_prep._brats_splits.meta_validation_from, "
            "stratified, seeded by 'seed'); training + meta_validation = the published training list",
        }
    }


def _assemble(
    verdicts: Sequence[CaseVerdict],
    layout: str,
    spec: SplitSpec,
    seed: int,
    base: Path,
    allow_missing: bool,
    problems: Sequence[CaseError] = (),
) -> dict[str, Any]:
    """The datalist JSON content of the usable cases (of the listed ones for a published protocol)."""
    entries = {v.case.case_id: _entry(v, base, allow_missing) for v in verdicts}
    if spec.kind == "published":
        assignment, subsets = _assign_published(verdicts, spec, seed, problems)
        for case_id, subset in subsets.items():
            data = entries[case_id].get("available", [True] * len(subset))
            entries[case_id]["available"] = [bool(a and b) for a, b in zip(data, subset)]
            if not any(entries[case_id]["available"]):
                raise ValueError(f"case '{case_id}' has none of the modalities of its published subset.")
    else:
        assignment = _assign(verdicts, spec, seed)
    labelled = [v.case.layout for v in verdicts if v.case.label is not None]
    convention = LAYOUTS[labelled[0] if labelled else verdicts[0].case.layout].label_convention
    datalist: dict[str, Any] = {
        "name": f"BraTS datalist ({layout})",
        "description": "written by data_prep.brats; image/label paths are relative to this file's folder",
        "layout": layout,
        "label_convention": convention.name,
        "labels": {"0": "background", **{str(v): name for v, name in convention.labels.items()}},
        "modalities": list(MODALITIES),
        "split": str(spec),
        "seed": seed,
        **_protocol_fields(spec),
        **{f"num_{key}": len(assignment[key]) for key in SPLIT_KEYS},
    }
    datalist.update({key: [entries[case_id] for case_id in assignment[key]] for key in SPLIT_KEYS})
    return datalist


def _warn_unlabelled(verdicts: Sequence[CaseVerdict]) -> None:
    """A root mixing labelled and unlabelled cases is unusual: say which cases go to ``testing``."""
    unlabelled = [v.case.case_id for v in verdicts if v.case.label is None]
    if unlabelled and len(unlabelled) < len(verdicts):
        logger.warning(
            "%d case(s) have no label file and go to 'testing': %s", len(unlabelled), ", ".join(unlabelled[:10])
        )


def _check_output(out: Path, root: Path, cases: Sequence[Case]) -> None:
    """Refuse a datalist path that is a folder, an input, or inside the dataset folder.

    Raises:
        ValueError: naming the path and the reason.
    """
    if out.is_dir():
        raise ValueError(f"--out '{out}' is a folder; give the datalist's file name.")
    ensure_not_input(out, [root / "dataset.json", *(path for case in cases for path in case.inputs)])
    _check_outside(out, root, "--out")
    # a case folder reached through a symbolic link lies outside the root's own path: compared resolved, as inference
    folder = enclosing_folder(out, sorted({path.resolve().parent for case in cases for path in case.inputs}))
    if folder is not None:
        raise ValueError(f"--out '{out}' lies inside the case folder '{folder}'; write the datalist outside the inputs.")


def _check_outside(path: Path, root: Path, flag: str) -> None:
    """Refuse an output path that is, or lies inside, the dataset folder.

    Raises:
        ValueError: naming the option and the folder.
    """
    if path.resolve() == root.resolve() or root.resolve() in path.resolve().parents:
        raise ValueError(
            f"{flag} '{path}' lies inside the dataset folder '{root}'; write outside it (inputs are never written "
            "into), e.g. into a sibling 'lists' folder."
        )


def prepare_datalist(
    root: str | Path,
    out: str | Path,
    layout: str = "auto",
    split: str = "paper",
    seed: int = 0,
    strict: bool = False,
    allow_missing_modalities: bool = False,
    jobs: int = 1,
    resample_to: str | None = None,
    resampled_dir: str | Path | None = None,
) -> Preparation:
    """Check every case under ``root`` and write the datalist ``out``.

    Args:
        root: dataset folder.
        out: datalist JSON to write (atomically), outside ``root``; paths inside are relative to its folder.
        layout: ``auto`` or a key of ``mckd.brats.conventions.LAYOUTS``; ``auto`` reads BraTS 2023 file names as
            ``brats2024`` when a label map holds the resection cavity (4), see the module docstring.
        split: ``paper``, ``kfold:K:I`` or ``ratio:R`` (see :func:`data_prep._brats_splits.split_cases`), or a
            published protocol's name (:data:`mckd.brats.protocols.PROTOCOLS`; see :mod:`data_prep._published_splits`).
        seed: seed of the split (of the meta-validation pick for a published protocol).
        strict: raise instead of skipping cases with problems.
        allow_missing_modalities: keep cases with absent (or all-zero) modality images; every item then carries
            ``available`` (four booleans in ``MODALITIES`` order) and absent files keep their expected path in
            ``image``.
        jobs: number of threads checking cases.
        resample_to: a modality key (or ``"auto"``): cases whose modalities or label do not share that modality's
            grid are resampled onto it and written as copies (:mod:`data_prep._brats_resample`); None (default)
            reports such cases instead.
        resampled_dir: where the copies go; default ``resampled/`` beside the datalist. Never inside ``root``.

    Raises:
        PreparationError: with ``status`` :data:`EXIT_STRICT` (strict and problems) or :data:`EXIT_USAGE` (usage
            error, no usable case, output refused or not writable).
    """
    root, out, spec = Path(root), Path(out), _parse_split(split, jobs)
    requested = layout
    layout, cases, found_problems = _find(root, layout)
    copies = Path(resampled_dir) if resampled_dir is not None else out.parent / "resampled"
    _check_outputs(out, root, cases, resample_to, copies)
    left_out: list[str] = []
    if spec.kind == "published":
        cases, found_problems, left_out = _listed_only(spec, cases, found_problems)
    if resample_to is not None:
        cases, failed = _resample_all(cases, resample_to, copies, jobs)
        found_problems = [*found_problems, *failed]
    verdicts = _check_all(cases, allow_missing_modalities, jobs)
    if requested == "auto":
        verdicts, relabelled = _read_as_post_treatment(verdicts, allow_missing_modalities, jobs)
        layout = relabelled if relabelled is not None and layout != "mixed" else layout
    problems = tuple(found_problems) + tuple(v.problem for v in verdicts if v.problem is not None)
    usable = [v for v in verdicts if v.problem is None]
    if problems and strict:
        raise PreparationError(f"{len(problems)} case(s) have problems", EXIT_STRICT, problems)
    if not usable:
        total = len(verdicts) + len(found_problems)
        raise PreparationError(f"no usable case among {total} under '{root}'", EXIT_USAGE, problems)
    if spec.kind != "published":
        _warn_unlabelled(usable)
    try:
        datalist = _assemble(usable, layout, spec, seed, out.parent, allow_missing_modalities, problems)
        datalist["skipped"] = [
            {"case_id": p.case_id, "file": _shown(p.path, root), "reason": p.reason} for p in problems
        ]
        if spec.kind == "published":
            datalist["left_out"] = left_out
        _warn_about_loader_rewrites(datalist, out.parent)
        write_json_atomic(out, datalist)
    except (ValueError, PermissionError) as err:
        raise PreparationError(str(err), EXIT_USAGE, problems) from err
    return Preparation(out, layout, datalist, problems)


def _parse_split(split: str, jobs: int) -> SplitSpec:
    """The split specification, after checking the job count.

    Raises:
        PreparationError: (usage) for a malformed split or fewer than one job.
    """
    try:
        if jobs < 1:
            raise ValueError(f"--jobs must be at least 1, got {jobs}.")
        return SplitSpec.parse(split)
    except ValueError as err:
        raise PreparationError(str(err), EXIT_USAGE) from err


def _listed_only(
    spec: SplitSpec, cases: Sequence[Case], problems: Sequence[CaseError]
) -> tuple[list[Case], list[CaseError], list[str]]:
    """The cases (and discovery problems) a published protocol lists, before any case is read, and the ids of the
    cases it does not list (left out).

    Raises:
        PreparationError: (usage) naming the listed cases absent from the folder, or when the lists cannot be read.
    """
    try:
        listed, left_out = select_listed(spec.protocol, [c.case_id for c in cases], [p.case_id for p in problems])
    except (PublishedSplitError, ProtocolError) as err:
        raise PreparationError(str(err), EXIT_USAGE) from err
    return [c for c in cases if c.case_id in listed], [p for p in problems if p.case_id in listed], left_out


def _check_outputs(out: Path, root: Path, cases: Sequence[Case], resample_to: str | None, copies: Path) -> None:
    """Refuse the datalist path and the copies' folder before anything is read or written.

    Raises:
        PreparationError: (usage) for an output over an input or inside the dataset, or an unknown modality.
    """
    try:
        _check_output(out, root, cases)
        if resample_to is not None:
            if resample_to != "auto" and resample_to not in MODALITIES:
                raise ValueError(f"--resample-to must be auto or one of {', '.join(MODALITIES)}, got '{resample_to}'.")
            _check_outside(copies, root, "--resampled-dir")
    except ValueError as err:
        raise PreparationError(str(err), EXIT_USAGE) from err


def _log_problems(header: str, problems: Sequence[CaseError], root: Path, level: int) -> None:
    """Log ``header`` then one line per problem."""
    logger.log(level, "%s:", header)
    for problem in problems:
        logger.log(level, "  %s", _describe(problem, root))


def _parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.brats",
        description="Check a BraTS / MSD Task01 download and write a MONAI datalist JSON with MCKD's splits.",
    )
    parser.add_argument("--root", required=True, type=Path, help="dataset folder")
    parser.add_argument("--out", required=True, type=Path, help="datalist JSON to write (outside the dataset folder)")
    parser.add_argument(
        "--layout",
        default="auto",
        help="auto (default; 2023 file names with a label 4 read as brats2024), " + ", ".join(LAYOUTS),
    )
    parser.add_argument(
        "--split",
        default="paper",
        help="paper (default), kfold:K:I (0-based I), ratio:R, or a published protocol: " + ", ".join(PROTOCOLS),
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    parser.add_argument("--strict", action="store_true", help="fail (exit 1) when any case has a problem")
    parser.add_argument("--allow-missing-modalities", action="store_true", help="keep cases with absent modality files")
    parser.add_argument("--jobs", type=int, default=1, help="threads checking cases (default 1)")
    parser.add_argument(
        "--resample-to",
        metavar="MODALITY",
        help="resample cases whose modalities lie on different grids onto this modality's grid (or auto: the "
        "highest-resolution one), written as copies; default: report such cases",
    )
    parser.add_argument("--resampled-dir", type=Path, help="folder of the resampled copies (default: beside --out)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status (see the module docstring)."""
    args = _parser().parse_args(argv)
    try:
        result = prepare_datalist(
            args.root,
            args.out,
            args.layout,
            args.split,
            args.seed,
            args.strict,
            args.allow_missing_modalities,
            args.jobs,
            args.resample_to,
            args.resampled_dir,
        )
    except PreparationError as err:
        if err.problems:
            _log_problems("problems found", err.problems, args.root, logging.ERROR)
        logger.error("error: %s", err)
        return err.status
    if result.problems:
        skipped = len({p.case_id for p in result.problems})
        _log_problems(f"skipped {skipped} case(s) with problems", result.problems, args.root, logging.WARNING)
    counts = ", ".join(f"{key} {result.datalist[f'num_{key}']}" for key in SPLIT_KEYS)
    logger.info("%s: %s layout, split %s: %s", result.out, result.layout, result.datalist["split"], counts)
    return EXIT_OK


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
