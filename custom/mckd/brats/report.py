"""The BraTS all-subset evaluation report: CSV (long + summary), a Markdown table, a PNG heat map, importance weights.

Rows follow the order usual in the missing-modality literature (HeMIS / RobustSeg / mmFormer tables; see
``mckd_method.md`` section 2.1): T2; T1ce; T1; FLAIR; T1ce+T2; T1+T1ce; FLAIR+T1; T1+T2; FLAIR+T2; FLAIR+T1ce;
FLAIR+T1+T1ce; FLAIR+T1+T2; FLAIR+T1ce+T2; T1+T1ce+T2; all four. ``order="evaluation"`` keeps the evaluator's order
(:func:`mckd.availability.all_subsets`: singles, pairs, triples, all, each in modality order). Subsets that are not in
the literature list (or results over a different number of modalities) follow in evaluation order.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from pathlib import Path
from typing import Union

import numpy as np
from matplotlib.figure import Figure

from mckd.brats.conventions import MODALITIES, MODALITY_DISPLAY_NAMES, REGION_DISPLAY_NAMES
from mckd.evaluation import SubsetEvaluator, SubsetResults
from mckd.fileio import atomic_path, write_json_atomic, write_text_atomic

__all__ = [
    "LITERATURE_SUBSET_ORDER",
    "literature_subset_order",
    "row_order",
    "markdown_table",
    "markdown_report",
    "write_report",
    "evaluate_and_report",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

#: Row order of the missing-modality tables in the literature, as the modality keys present in each row.
LITERATURE_SUBSET_ORDER: tuple[tuple[str, ...], ...] = (
    ("t2",),
    ("t1ce",),
    ("t1",),
    ("flair",),
    ("t1ce", "t2"),
    ("t1", "t1ce"),
    ("flair", "t1"),
    ("t1", "t2"),
    ("flair", "t2"),
    ("flair", "t1ce"),
    ("flair", "t1", "t1ce"),
    ("flair", "t1", "t2"),
    ("flair", "t1ce", "t2"),
    ("t1", "t1ce", "t2"),
    ("flair", "t1", "t1ce", "t2"),
)
MEAN_ROW = "Mean over subsets"


def literature_subset_order() -> list[tuple[bool, ...]]:
    """:data:`LITERATURE_SUBSET_ORDER` as availability tuples in :data:`MODALITIES` order."""
    return [tuple(m in row for m in MODALITIES) for row in LITERATURE_SUBSET_ORDER]


def row_order(results: SubsetResults, order: str = "literature") -> list[int]:
    """Indices into ``results.subsets`` in report order (``"literature"`` or ``"evaluation"``).

    Raises:
        ValueError: for an unknown ``order``.
    """
    if order not in ("literature", "evaluation"):
        raise ValueError(f"order must be 'literature' or 'evaluation', got '{order}'.")
    indices = list(range(len(results.subsets)))
    if order == "evaluation" or len(results.modality_names) != len(MODALITIES):
        return indices
    position = {subset: i for i, subset in enumerate(results.subsets)}
    first = [position[s] for s in literature_subset_order() if s in position]
    return first + [i for i in indices if i not in first]


def _fmt(value: float, scale: float = 1.0) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value * scale:.2f}"


def markdown_table(results: SubsetResults, order: str = "literature", dice_percent: bool = True) -> str:
    """The results as a Markdown table: one row per subset, then the mean over subsets.

    Columns are Dice per region then HD95 per region; Dice in percent by default.
    """
    scale = 100.0 if dice_percent else 1.0
    dice_unit = " (%)" if dice_percent else ""
    header = ["Subset"] + [f"Dice {r}{dice_unit}" for r in results.region_names]
    header += [f"HD95 {r}" for r in results.region_names]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    dice, hd95 = results.per_subset_mean("dice"), results.per_subset_mean("hd95")
    for s in row_order(results, order):
        cells = [results.subset_names[s]] + [_fmt(v, scale) for v in dice[s]] + [_fmt(v) for v in hd95[s]]
        lines.append("| " + " | ".join(cells) + " |")
    mean_dice, mean_hd95 = results.mean_over_subsets("dice"), results.mean_over_subsets("hd95")
    cells = [f"**{MEAN_ROW}**"] + [f"**{_fmt(v, scale)}**" for v in mean_dice] + [f"**{_fmt(v)}**" for v in mean_hd95]
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _conventions_paragraph(results: SubsetResults, order: str) -> str:
    conv = results.conventions
    missed = conv.get("one_side_empty_hd95", "n/a")
    if missed == "diagonal":
        missed = "the length of the image diagonal (373.13 mm for a 240x240x155 1 mm volume, as BraTS scores it)"
    regions = "; ".join(f"{r} = {REGION_DISPLAY_NAMES.get(r, r)}" for r in results.region_names)
    rows = (
        "the order usual in the missing-modality literature (T2, T1ce, T1, FLAIR, pairs, triples, all)"
        if order == "literature"
        else "evaluation order (singles, pairs, triples, all)"
    )
    return (
        f"Regions: {regions}. Dice and HD95 are computed per case with MONAI's `compute_dice` and "
        f"`compute_hausdorff_distance(percentile=95)`, then averaged over the {len(results.case_ids)} case(s) of each "
        f"subset; the last row averages the per-subset means (the headline number of the missing-modality tables). "
        f"Empty prediction and empty reference: Dice {conv.get('empty_prediction_empty_reference_dice', 'n/a')}, "
        f"HD95 {conv.get('empty_prediction_empty_reference_hd95', 'n/a')}. Exactly one of them empty: Dice "
        f"{conv.get('one_side_empty_dice', 'n/a')}, HD95 {missed}. HD95 units: {conv.get('hd95_units', 'n/a')}. "
        f"Post-processing: {conv.get('postprocessing', 'n/a')}. A subset sharing no modality with a case's data: "
        f"{conv.get('subset_with_no_case_modality', 'n/a')}. Rows are in {rows}.\n"
    )


def _importance_table(results: SubsetResults) -> str:
    if not results.importance:
        return "No importance weights were given.\n"
    lines = ["| Modality | p |", "|---|---:|"]
    for name, value in results.importance.items():
        lines.append(f"| {MODALITY_DISPLAY_NAMES.get(name, name)} | {value:.4f} |")
    return "\n".join(lines) + "\n"


def markdown_report(
    results: SubsetResults, order: str = "literature", title: str = "Missing-modality evaluation"
) -> str:
    """The full Markdown report: table, learned importance weights and the scoring conventions."""
    return (
        f"# {title}\n\n{markdown_table(results, order)}\n"
        f"## Learned importance weights\n\n{_importance_table(results)}\n"
        f"## Conventions\n\n{_conventions_paragraph(results, order)}"
    )


def _csv_text(header: list[str], rows: list[list[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _long_csv(results: SubsetResults) -> str:
    rows = [[r["subset"], r["case"], r["region"], r["dice"], r["hd95"]] for r in results.records()]
    return _csv_text(["subset", "case", "region", "dice", "hd95"], rows)


def _summary_csv(results: SubsetResults, order: str) -> str:
    dice, hd95 = results.per_subset_mean("dice"), results.per_subset_mean("hd95")
    count = (~np.isnan(results.dice)).sum(axis=1)
    rows: list[list[object]] = []
    for s in row_order(results, order):
        for r, region in enumerate(results.region_names):
            rows.append([results.subset_names[s], region, dice[s, r], hd95[s, r], int(count[s, r])])
    mean_dice, mean_hd95 = results.mean_over_subsets("dice"), results.mean_over_subsets("hd95")
    for r, region in enumerate(results.region_names):
        rows.append([MEAN_ROW, region, mean_dice[r], mean_hd95[r], len(results.case_ids)])
    return _csv_text(["subset", "region", "dice_mean", "hd95_mean", "num_cases"], rows)


def _heatmap(results: SubsetResults, target: Path, order: str) -> None:
    rows = row_order(results, order)
    values = np.vstack([results.per_subset_mean("dice")[rows], results.mean_over_subsets("dice")[None]])
    labels = [results.subset_names[s] for s in rows] + [MEAN_ROW]
    # matplotlib's object API renders with Agg and leaves pyplot's global backend and figure list alone.
    fig = Figure(figsize=(1.2 * len(results.region_names) + 3.0, 0.35 * len(labels) + 1.5))
    ax = fig.add_subplot()
    im = ax.imshow(np.nan_to_num(values, nan=0.0), vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(results.region_names)), results.region_names)
    ax.set_yticks(range(len(labels)), labels)
    ax.axhline(len(rows) - 0.5, color="white", linewidth=2)
    for (i, j), value in np.ndenumerate(values):
        text = "n/a" if math.isnan(value) else f"{value:.3f}"
        ax.text(j, i, text, ha="center", va="center", color="white" if value < 0.6 else "black", fontsize=8)
    ax.set_title("Dice per modality subset")
    fig.colorbar(im, ax=ax, label="Dice")
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=120, format="png")


def write_report(
    results: SubsetResults, output_dir: PathLike, order: str = "literature", prefix: str = "evaluation"
) -> dict[str, Path]:
    """Write ``<prefix>_per_case.csv``, ``<prefix>_summary.csv``, ``<prefix>.md``, ``<prefix>_dice.png`` and
    ``<prefix>_summary.json`` into ``output_dir``, each atomically.

    Returns:
        The written paths keyed ``"csv"``, ``"summary_csv"``, ``"markdown"``, ``"heatmap"``, ``"json"``.
    """
    out = Path(output_dir)
    paths = {
        "csv": out / f"{prefix}_per_case.csv",
        "summary_csv": out / f"{prefix}_summary.csv",
        "markdown": out / f"{prefix}.md",
        "heatmap": out / f"{prefix}_dice.png",
        "json": out / f"{prefix}_summary.json",
    }
    write_text_atomic(paths["csv"], _long_csv(results))
    write_text_atomic(paths["summary_csv"], _summary_csv(results, order))
    write_text_atomic(paths["markdown"], markdown_report(results, order))
    _heatmap(results, paths["heatmap"], order)
    write_json_atomic(paths["json"], results.summary())
    logger.info("evaluation report written to %s", out)
    return paths


def evaluate_and_report(
    evaluator: SubsetEvaluator, output_dir: PathLike, order: str = "literature", prefix: str = "evaluation"
) -> dict[str, Path]:
    """Run ``evaluator``, write the report into ``output_dir`` and log the Markdown table: one call for a bundle's
    ``run`` list (``"$mckd.brats.report.evaluate_and_report(@evaluator, @output_dir)"``).

    Returns:
        The written paths, as :func:`write_report`.
    """
    results = evaluator.run()
    paths = write_report(results, output_dir, order=order, prefix=prefix)
    logger.info("Dice and HD95 per modality subset:\n%s", markdown_table(results, order))
    return paths
