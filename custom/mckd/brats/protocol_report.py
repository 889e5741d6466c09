"""An evaluation scored in a published protocol, beside the peers' published numbers for it.

:func:`score_protocol` turns the all-subset results (:class:`mckd.evaluation.SubsetResults`) into the protocol's
headline Dice (:mod:`mckd.brats.protocols`):

- ``all_subsets`` (RFNet family: ``rfnet2018:K``, ``rfnet2020``, ``m2ftrans2021``): the mean over the 15 subsets of the
  per-subset mean Dice on the test list, as the evaluation report's last row;
- ``per_case_subset`` (``imfuse2023``): every case once, under its published subset. The datalist of
  ``data_prep.brats --split imfuse2023`` gives each test item that subset as ``available``, so the all-modality
  subset's row of the evaluation (``s AND available = available``) holds exactly those scores; cases are grouped by
  their subset, and the headline is the mean of the 15 group means (the mean over cases is given too).

It also says whether the numbers can stand beside the peers': the evaluated cases against the published test list
(and, for ``imfuse2023``, each case's subset against the published one), all 15 subsets evaluated, the Dice of an
empty region (the peers' epsilon Dice scores an empty prediction of an empty region 1, as ``brats_legacy``), and the
post-processing (the RFNet family empties a predicted ET under 500 voxels: ``et_min_size 500``). What no setting here
matches (the peers' networks, preprocessing and schedules) is stated, not hidden.

The mean of the three BraTS 2018 splits, RFNet's table row, comes from three reports' ``*_protocol.json``::

    python -m mckd.brats.protocol_report average split1/evaluation_protocol.json split2/... split3/... [--out FILE.md]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import PathLike

from mckd import tables
from mckd.availability import all_subsets, subset_name
from mckd.brats.conventions import MODALITIES, MODALITY_NAMES
from mckd.brats.protocols import ALL_SUBSETS, PER_CASE_SUBSET, peer_results, peers_dice_convention, published_split
from mckd.evaluation import SubsetResults
from mckd.fileio import write_text_atomic

__all__ = [
    "PEER_ET_MIN_SIZE",
    "RFNET2018_SPLITS",
    "ProtocolScore",
    "read_availability",
    "score_protocol",
    "protocol_markdown",
    "average_split_reports",
    "average_markdown",
    "main",
]

logger = logging.getLogger(__name__)

#: The RFNet family's post-processing: a predicted ET under this many voxels is emptied (``predict.py``).
PEER_ET_MIN_SIZE = 500
#: The three BraTS 2018 protocols whose mean is RFNet's table row.
RFNET2018_SPLITS: tuple[str, ...] = ("rfnet2018:1", "rfnet2018:2", "rfnet2018:3")
_SHOWN = 5
_HEADER = ["Method", "Source", "Post-processing"]


@dataclass
class ProtocolScore:
    """An evaluation in a protocol.

    Attributes:
        protocol: the protocol's name.
        evaluated_list: ``"testing"`` or ``"validation"`` when the evaluated cases are exactly that published list,
            else ``"other"``.
        num_cases: number of evaluated cases.
        dice: region -> headline Dice in percent (NaN when it cannot be computed).
        groups: per-case-subset protocols: ``[subset name, number of cases, {region: Dice %}]`` per subset.
        mean_over_cases: per-case-subset protocols: region -> Dice % over all cases.
        comparable: whether nothing found keeps the numbers from the peers' table.
        notes: what makes them comparable or not, one sentence each.
        scoring_convention: the scoring convention of the evaluation.
        et_min_size: the ET post-processing threshold of the evaluation (0: none).
    """

    protocol: str
    evaluated_list: str
    num_cases: int
    dice: dict[str, float]
    groups: list[tuple[str, int, dict[str, float]]] = field(default_factory=list)
    mean_over_cases: dict[str, float] = field(default_factory=dict)
    comparable: bool = True
    notes: list[str] = field(default_factory=list)
    scoring_convention: str = ""
    et_min_size: int = 0

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable form (NaN as None), as written into ``<prefix>_protocol.json``."""
        data = asdict(self)
        data["dice"] = _without_nan(self.dice)
        data["mean_over_cases"] = _without_nan(self.mean_over_cases)
        data["groups"] = [[name, n, _without_nan(d)] for name, n, d in self.groups]
        return data


def _without_nan(values: Mapping[str, float]) -> dict[str, float | None]:
    """``values`` with NaN written as None (JSON has no NaN)."""
    return {k: (None if np.isnan(v) else float(v)) for k, v in values.items()}


def read_availability(datalist: PathLike, key: str) -> dict[str, tuple[bool, ...]]:
    """Case id -> ``available`` of each item of list ``key`` of a datalist JSON (all modalities when absent).

    Raises:
        ValueError: when the file is not a datalist with that list, naming the file and the key.
    """
    try:
        items = json.loads(Path(datalist).read_text(encoding="utf-8"))[key]
        return {
            str(item["case_id"]): tuple(bool(a) for a in item.get("available", [True] * len(MODALITIES)))
            for item in items
        }
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"datalist '{datalist}': cannot read the case ids and 'available' of list '{key}' ({err})")


def _named(ids: Sequence[str]) -> str:
    return ", ".join(ids[:_SHOWN]) + (f" and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else "")


def _membership(name: str, case_ids: Sequence[str], notes: list[str]) -> tuple[str, bool]:
    """Which published list the evaluated cases are, and whether they are the test list."""
    split = published_split(name)
    evaluated = set(case_ids)
    if evaluated == set(split.testing):
        notes.append(f"Cases: the published test list of {name} ({len(split.testing)} cases), as the peers.")
        return "testing", True
    if evaluated == set(split.validation):
        notes.append(
            f"Cases: the published validation list of {name} ({len(split.validation)} cases); the peers report the "
            "test list (evaluate with eval_list_key testing): not comparable."
        )
        return "validation", False
    absent = [c for c in split.testing if c not in evaluated]
    extra = sorted(evaluated - set(split.testing))
    notes.append(
        f"Cases: not the published test list of {name}: {len(absent)} of its {len(split.testing)} cases not evaluated"
        f"{' (' + _named(absent) + ')' if absent else ''}, {len(extra)} evaluated cases not in it"
        f"{' (' + _named(extra) + ')' if extra else ''}: not comparable."
    )
    return "other", False


def _conventions(scoring_convention: str, et_min_size: int, scoring: str, notes: list[str]) -> bool:
    """Notes on the Dice convention and the post-processing; whether both match the peers' (``scoring`` is the
    protocol's; for the per-case-subset protocol the peers' ET rule is not known, so it decides nothing)."""
    same_dice = scoring_convention == "brats_legacy"
    notes.append(
        f"Dice of an empty region: the peers' {peers_dice_convention()}; this evaluation used `{scoring_convention}`"
        + (", the same rule." if same_dice else ", which leaves such cases out of the means: not comparable.")
    )
    if scoring == PER_CASE_SUBSET:
        what = "none" if et_min_size <= 0 else f"predicted ET under {et_min_size} voxels removed"
        notes.append(
            f"Post-processing: {what}. IM-Fuse's code reports ET both without and with the {PEER_ET_MIN_SIZE}-voxel "
            f"rule (ET and ETpp); which one the peers' numbers use is not stated: evaluate with et_min_size 0 and "
            f"{PEER_ET_MIN_SIZE} and compare ET with care."
        )
        return same_dice
    same_post = et_min_size == PEER_ET_MIN_SIZE
    if same_post:
        notes.append(
            f"Post-processing: predicted ET under {PEER_ET_MIN_SIZE} voxels removed, the RFNet family's rule (RFNet, "
            "mmFormer, DeMoSeg; here the voxels become tumour core, and the peers' TC, computed from the label map, "
            "keeps them too)."
        )
    else:
        what = "none" if et_min_size <= 0 else f"predicted ET under {et_min_size} voxels removed"
        notes.append(
            f"Post-processing: {what}; the RFNet family empties a predicted ET under {PEER_ET_MIN_SIZE} voxels "
            f"(set et_min_size {PEER_ET_MIN_SIZE}): ET not comparable."
        )
    return same_dice and same_post


def _percent(values: np.ndarray, regions: Sequence[str]) -> dict[str, float]:
    return {r: float(v) * 100.0 for r, v in zip(regions, values)}


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    valid = ~np.isnan(values)
    count = valid.sum(axis=axis)
    total = np.where(valid, values, 0.0).sum(axis=axis)
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def _all_subsets_headline(results: SubsetResults, notes: list[str]) -> tuple[dict[str, float], bool]:
    wanted = set(all_subsets(len(MODALITIES)))
    evaluated = set(results.subsets)
    complete = wanted <= evaluated
    if complete:
        notes.append("Aggregate: mean over the 15 subsets of the per-subset mean Dice, as the peers' tables.")
        rows = [results.subsets.index(s) for s in all_subsets(len(MODALITIES))]
        headline = _nanmean(results.per_subset_mean("dice")[rows], axis=0)
    else:
        notes.append(
            f"Aggregate: only {len(wanted & evaluated)} of the 15 subsets were evaluated (eval_subsets); the peers "
            "average all 15: not comparable."
        )
        headline = np.full(len(results.region_names), np.nan)
    return _percent(headline, results.region_names), complete


def _per_case_headline(
    results: SubsetResults,
    name: str,
    availability: Mapping[str, Sequence[bool]] | None,
    row_order: Sequence[tuple[bool, ...]] | None,
    notes: list[str],
) -> tuple[dict[str, float], list[tuple[str, int, dict[str, float]]], dict[str, float], bool]:
    full = tuple(True for _ in MODALITIES)
    regions = results.region_names
    nan = {r: float("nan") for r in regions}
    if full not in results.subsets:
        notes.append(
            "Aggregate: the all-modality subset was not evaluated, so no case was scored with its own subset "
            "(set eval_subsets null or include FLAIR+T1+T1ce+T2): no headline."
        )
        return nan, [], nan, False
    published = published_split(name).subsets
    used = {c: tuple(bool(a) for a in availability.get(c, full)) for c in results.case_ids} if availability else {}
    wrong = [c for c in results.case_ids if c in published and used.get(c, full) != published[c]]
    ok = not wrong
    if wrong:
        notes.append(
            f"Subsets: {len(wrong)} case(s) were not evaluated with their published subset ({_named(wrong)}); build "
            f"the datalist with data_prep.brats --split {name}: not comparable."
        )
    else:
        notes.append("Subsets: every case was scored once, with its published subset (the datalist's 'available').")
    dice = results.dice[results.subsets.index(full)]  # [cases, regions]; s AND available = available
    keys = [used.get(c, full) for c in results.case_ids]
    order = list(row_order or []) + [s for s in all_subsets(len(MODALITIES)) if s not in (row_order or [])]
    groups = []
    for subset in order:
        members = [i for i, k in enumerate(keys) if k == subset]
        if members:
            groups.append(
                (subset_name(subset, MODALITY_NAMES), len(members), _percent(_nanmean(dice[members], 0), regions))
            )
    group_means = np.array([[g[2][r] for r in regions] for g in groups])
    headline = {r: float(v) for r, v in zip(regions, _nanmean(group_means, 0))}
    notes.append(
        f"Aggregate: mean over the {len(groups)} subsets of the mean Dice of the cases scored with each subset "
        "(about 1/15 of the cases each); the mean over all cases is given too."
    )
    if len(groups) < 15:
        ok = False
    return headline, groups, _percent(_nanmean(dice, 0), regions), ok


def score_protocol(
    results: SubsetResults,
    name: str,
    availability: Mapping[str, Sequence[bool]] | None = None,
    et_min_size: int = 0,
    row_order: Sequence[tuple[bool, ...]] | None = None,
) -> ProtocolScore:
    """Score ``results`` in protocol ``name`` and say whether they can stand beside the peers' numbers.

    Args:
        results: the all-subset evaluation.
        name: a protocol of :data:`mckd.brats.protocols.PROTOCOLS`.
        availability: case id -> the ``available`` the evaluation's datalist gave it (:func:`read_availability`);
            needed by per-case-subset protocols, None meaning every modality.
        et_min_size: the evaluation's small-ET post-processing threshold (0: none).
        row_order: order of the per-subset groups (e.g. the report's literature order); others follow.

    Raises:
        mckd.brats.protocols.ProtocolError: for an unknown protocol.
    """
    split = published_split(name)
    notes: list[str] = []
    evaluated_list, same_cases = _membership(name, results.case_ids, notes)
    convention = str(results.conventions.get("scoring_convention", ""))
    score = ProtocolScore(name, evaluated_list, len(results.case_ids), {}, scoring_convention=convention)
    score.et_min_size = int(et_min_size)
    if split.protocol.scoring == ALL_SUBSETS:
        score.dice, complete = _all_subsets_headline(results, notes)
    elif split.protocol.scoring == PER_CASE_SUBSET:
        score.dice, score.groups, score.mean_over_cases, complete = _per_case_headline(
            results, name, availability, row_order, notes
        )
    else:  # pragma: no cover - PROTOCOLS holds only the two
        raise ValueError(f"protocol {name} has an unknown scoring '{split.protocol.scoring}'.")
    same_rules = _conventions(convention, et_min_size, split.protocol.scoring, notes)
    notes.append(
        "Not matched by any setting: the peers' networks, preprocessing (RFNet family: crop to the brain's bounding "
        "box, z-score per modality) and training schedules; only Dice is compared (HD95 is not in the peers' tables)."
    )
    if name.startswith("rfnet2018:"):
        notes.append(
            "The peers' BraTS 2018 rows are the mean of the 3 splits: average the three reports with "
            "`python -m mckd.brats.protocol_report average` before comparing."
        )
    score.comparable = same_cases and complete and same_rules
    score.notes = notes
    return score


def _peer_rows(name: str, regions: Sequence[str]) -> list[list[str]]:
    return [
        [p.method, p.source, p.postprocessing, *(tables.number(p.dice.get(r)) for r in regions)]
        for p in peer_results(name)
    ]


def _comparison_table(name: str, ours: str, dice: Mapping[str, float], regions: Sequence[str], post: str) -> str:
    rows = [[ours, "this evaluation", post, *(tables.number(dice.get(r)) for r in regions)]]
    peers = _peer_rows(name, regions)
    table = tables.markdown_table(_HEADER + [f"Dice {r} (%)" for r in regions], rows + peers, text_columns=3)
    if not peers:
        table += "\nNo peer's number on this protocol was retrieved (`peer_results.json`).\n"
    return table


def _post_words(et_min_size: int) -> str:
    return f"predicted ET under {et_min_size} voxels removed" if et_min_size > 0 else "none"


def protocol_markdown(score: ProtocolScore, regions: Sequence[str] | None = None) -> str:
    """The report's protocol section: the headline beside the peers' numbers, the groups, and the notes."""
    regions = list(regions or score.dice)
    split = published_split(score.protocol)
    proto = split.protocol
    verdict = "the protocol's rules are met" if score.comparable else "not directly comparable (see the notes)"
    parts = [
        f"## Protocol `{proto.name}`\n\n{proto.release}, published lists {len(split.training)} / "
        f"{len(split.validation)} / {len(split.testing)} (training / validation / test) from {proto.source}; used by "
        f"{proto.used_by}. Peers' aggregate: {proto.aggregate}. This evaluation: {score.num_cases} case(s) "
        f"({score.evaluated_list} list); {verdict}.\n",
        _comparison_table(
            score.protocol, "MCKD (this evaluation)", score.dice, regions, _post_words(score.et_min_size)
        ),
    ]
    if score.groups:
        header = ["Subset (published, per case)", "Cases", *(f"Dice {r} (%)" for r in regions)]
        rows = [[g, str(n), *(tables.number(d.get(r)) for r in regions)] for g, n, d in score.groups]
        rows.append(
            ["Mean over cases", str(score.num_cases), *(tables.number(score.mean_over_cases.get(r)) for r in regions)]
        )
        parts.append("\n### Cases grouped by their published subset\n\n" + tables.markdown_table(header, rows))
    parts.append("\n### Comparability\n\n" + "".join(f"- {note}\n" for note in score.notes))
    return "\n".join(parts)


def average_split_reports(paths: Sequence[PathLike]) -> dict[str, Any]:
    """The mean of the three BraTS 2018 split reports (``*_protocol.json`` of ``rfnet2018:1``, ``:2``, ``:3``).

    Returns:
        ``{"protocol": "rfnet2018", "dice": {region: mean %}, "per_split": {name: {region: %}}, "comparable": bool,
        "notes": [...]}``.

    Raises:
        ValueError: unless the files are the three splits' protocol reports, each once, naming the offending file.
    """
    reports: dict[str, dict[str, Any]] = {}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            name = data["protocol"]
            dice = {r: (float("nan") if v is None else float(v)) for r, v in data["dice"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"'{path}' is not a protocol report (*_protocol.json): {err}") from err
        if name not in RFNET2018_SPLITS:
            raise ValueError(f"'{path}' is a report of protocol '{name}', not one of {', '.join(RFNET2018_SPLITS)}.")
        if name in reports:
            raise ValueError(f"'{path}' repeats protocol '{name}'; give one report per split.")
        reports[name] = {**data, "dice": dice}
    absent = [name for name in RFNET2018_SPLITS if name not in reports]
    if absent:
        raise ValueError(
            f"the mean of the BraTS 2018 splits needs a report of each split; missing {', '.join(absent)}."
        )
    regions = list(reports[RFNET2018_SPLITS[0]]["dice"])
    mean = {r: float(np.mean([reports[n]["dice"][r] for n in RFNET2018_SPLITS])) for r in regions}
    notes = [
        f"{n}: {note}" for n in RFNET2018_SPLITS for note in reports[n].get("notes", []) if "not comparable" in note
    ]
    comparable = all(reports[n].get("evaluated_list") == "testing" for n in RFNET2018_SPLITS) and not notes
    return {
        "protocol": "rfnet2018",
        "dice": mean,
        "per_split": {n: reports[n]["dice"] for n in RFNET2018_SPLITS},
        "et_min_size": sorted({int(reports[n].get("et_min_size", 0)) for n in RFNET2018_SPLITS}),
        "comparable": comparable,
        "notes": notes,
    }


def average_markdown(average: Mapping[str, Any]) -> str:
    """The mean of the three splits beside the peers' mean-of-three numbers, as Markdown."""
    regions = list(average["dice"])
    sizes = average.get("et_min_size") or [0]
    post = _post_words(sizes[0]) if len(sizes) == 1 else "differs between the splits"
    header = _HEADER + [f"Dice {r} (%)" for r in regions]
    rows = [
        [f"MCKD, {name}", "this evaluation", post, *(tables.number(d.get(r)) for r in regions)]
        for name, d in average["per_split"].items()
    ]
    ours = [tables.number(average["dice"][r]) for r in regions]
    rows.append(["MCKD, mean of the 3 splits", "this evaluation", post, *ours])
    rows += _peer_rows("rfnet2018", regions)
    verdict = "the protocol's rules are met" if average["comparable"] else "not directly comparable"
    notes = (
        "".join(f"- {note}\n" for note in average["notes"])
        or "- Every split: the published test list, the peers' rules.\n"
    )
    return (
        "# BraTS 2018, mean of the 3 RFNet splits\n\nMean Dice over the 15 subsets on each split's published test "
        f"list, then the mean of the 3 splits (RFNet's table row); {verdict}.\n\n"
        + tables.markdown_table(header, rows, text_columns=3)
        + "\n## Notes\n\n"
        + notes
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mckd.brats.protocol_report",
        description="Protocol reports: the mean of the three BraTS 2018 RFNet splits beside the peers' numbers.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    average = sub.add_parser("average", help="average the *_protocol.json reports of rfnet2018:1, :2 and :3")
    average.add_argument("reports", nargs=3, type=Path, help="the three *_protocol.json files")
    average.add_argument("--out", type=Path, help="also write the Markdown table to this file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line: 0 on success, 2 (one line on stderr) when the reports cannot be averaged."""
    args = _parser().parse_args(argv)
    try:
        text = average_markdown(average_split_reports(args.reports))
        if args.out is not None:
            write_text_atomic(args.out, text)
    except (ValueError, PermissionError) as err:
        logger.error("error: %s", err)
        return 2
    logger.info("%s", text)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
