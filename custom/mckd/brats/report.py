"""The BraTS all-subset evaluation report: CSV (long + summary), Markdown, Dice and HD95 heat maps, an overlay figure.

The Markdown report starts with the scoring convention that produced it (``brats_legacy`` or ``official``, see
:mod:`mckd.scoring`). The overlay figure shows, per subset, a representative case (among the first cases the evaluator
kept slices of, the one whose mean Dice under that subset is closest to the median): image, reference, prediction.

Rows follow the order usual in the missing-modality literature (HeMIS / RobustSeg / mmFormer tables; see
``mckd_method.md`` section 2.1): T2; T1ce; T1; FLAIR; T1ce+T2; T1+T1ce; FLAIR+T1; T1+T2; FLAIR+T2; FLAIR+T1ce;
FLAIR+T1+T1ce; FLAIR+T1+T2; FLAIR+T1ce+T2; T1+T1ce+T2; all four. ``order="evaluation"`` keeps the evaluator's order
(:func:`mckd.availability.all_subsets`: singles, pairs, triples, all, each in modality order). Subsets that are not in
the literature list (or results over a different number of modalities) follow in evaluation order.

Given a published protocol (``protocol="rfnet2018:1"`` ..., :mod:`mckd.brats.protocols`), the report adds the
protocol's headline beside the peers' published numbers and what makes them comparable or not
(:mod:`mckd.brats.protocol_report`), and writes it as ``<prefix>_protocol.json`` too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from monai.config import PathLike

from mckd import tables
from mckd.brats.conventions import MODALITIES, MODALITY_DISPLAY_NAMES, REGION_DISPLAY_NAMES
from mckd.brats.protocol_report import ProtocolScore, protocol_markdown, read_availability, score_protocol
from mckd.brats.protocols import published_split
from mckd.evaluation import CaseSlice, SubsetEvaluator, SubsetResults
from mckd.fileio import atomic_path, ensure_not_input, write_json_atomic, write_text_atomic

__all__ = [
    "LITERATURE_SUBSET_ORDER",
    "literature_subset_order",
    "row_order",
    "markdown_table",
    "convention_header",
    "markdown_report",
    "write_report",
    "evaluate_and_report",
]

logger = logging.getLogger(__name__)


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
#: Overlay colour of each region channel, in channel order (name -> hex).
_COLOURS = {"red": "#e41a1c", "yellow": "#ffd92f", "green": "#4daf4a", "blue": "#377eb8", "purple": "#984ea3"}


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


def markdown_table(results: SubsetResults, order: str = "literature", dice_percent: bool = True) -> str:
    """The results as a Markdown table: one row per subset, then the mean over subsets.

    Columns are Dice per region then HD95 per region; Dice in percent by default.
    """
    scale = 100.0 if dice_percent else 1.0
    dice_unit = " (%)" if dice_percent else ""
    header = ["Subset"] + [f"Dice {r}{dice_unit}" for r in results.region_names]
    header += [f"HD95 {r}" for r in results.region_names]
    dice, hd95 = results.per_subset_mean("dice"), results.per_subset_mean("hd95")
    rows = [
        [results.subset_names[s]] + [tables.number(v, scale) for v in dice[s]] + [tables.number(v) for v in hd95[s]]
        for s in row_order(results, order)
    ]
    mean_dice, mean_hd95 = results.mean_over_subsets("dice"), results.mean_over_subsets("hd95")
    rows.append([MEAN_ROW] + [tables.number(v, scale) for v in mean_dice] + [tables.number(v) for v in mean_hd95])
    return tables.markdown_table(header, rows, bold_last=True)


def convention_header(results: SubsetResults) -> str:
    """The report's first line after the title: which scoring convention produced the numbers, and its source."""
    conv = results.conventions
    name = conv.get("scoring_convention", "unnamed")
    summary, source = conv.get("summary", "not described"), conv.get("source", "n/a")
    return f"Scoring convention: **`{name}`** — {summary}. Source: {source}.\n"


def _conventions_paragraph(results: SubsetResults, order: str) -> str:
    conv = results.conventions
    regions = "; ".join(f"{r} = {REGION_DISPLAY_NAMES.get(r, r)}" for r in results.region_names)
    rows = (
        "the order usual in the missing-modality literature (T2, T1ce, T1, FLAIR, pairs, triples, all)"
        if order == "literature"
        else "evaluation order (singles, pairs, triples, all)"
    )
    disjoint = conv.get("disjoint_hd95")
    return (
        f"Regions: {regions}. Dice (MONAI's `compute_dice`) and HD95 (95th percentile of the pooled surface distances "
        f"of both directions, from MONAI's `get_edge_surface_distance`) are computed per case, then averaged over the "
        f"{len(results.case_ids)} case(s) of each subset (NaN left out); the last row averages the per-subset means "
        f"(the headline number of the missing-modality tables). Convention `{conv.get('scoring_convention', 'n/a')}`: "
        f"empty prediction and empty reference: Dice {conv.get('both_empty_dice', 'n/a')}, HD95 "
        f"{conv.get('both_empty_hd95', 'n/a')}; exactly one of them empty: Dice 0, HD95 "
        f"{conv.get('missed_hd95', 'n/a')}; "
        f"both non-empty without a common voxel: HD95 {'computed' if disjoint is None else disjoint}. HD95 units: "
        f"{conv.get('hd95_units', 'n/a')}. Post-processing: {conv.get('postprocessing', 'n/a')}. A subset sharing no "
        f"modality with a case's data: {conv.get('subset_with_no_case_modality', 'n/a')}. Rows are in {rows}.\n"
    )


def _extra_table(results: SubsetResults, order: str) -> str:
    """The extra metrics (e.g. the official package's lesion-wise ones) per subset, or an empty string."""
    if not results.extra:
        return ""
    metrics = list(results.extra)
    header = ["Subset"] + [f"{m} {r}" for m in metrics for r in results.region_names]
    means = {m: results.per_subset_mean(m) for m in metrics}
    rows = [
        [results.subset_names[s]] + [tables.number(v) for m in metrics for v in means[m][s]]
        for s in row_order(results, order)
    ]
    rows.append([MEAN_ROW] + [tables.number(v) for m in metrics for v in results.mean_over_subsets(m)])
    return "## Further metrics\n\n" + tables.markdown_table(header, rows, bold_last=True) + "\n"


def _importance_table(results: SubsetResults) -> str:
    if not results.importance:
        return "No importance weights were given.\n"
    rows = [[MODALITY_DISPLAY_NAMES.get(name, name), f"{value:.4f}"] for name, value in results.importance.items()]
    return tables.markdown_table(["Modality", "p"], rows)


def markdown_report(
    results: SubsetResults,
    order: str = "literature",
    title: str = "Missing-modality evaluation",
    protocol: ProtocolScore | None = None,
) -> str:
    """The full Markdown report: table, learned importance weights, the scoring conventions, and the protocol section
    (the headline beside the peers' numbers) when a protocol score is given."""
    section = "" if protocol is None else "\n" + protocol_markdown(protocol, results.region_names)
    return (
        f"# {title}\n\n{convention_header(results)}\n{markdown_table(results, order)}\n{_extra_table(results, order)}"
        f"## Learned importance weights\n\n{_importance_table(results)}\n"
        f"## Conventions\n\n{_conventions_paragraph(results, order)}{section}"
    )


def _long_csv(results: SubsetResults) -> str:
    header = ["subset", "case", "region", *results.metrics]
    return tables.csv_text(header, [[r[k] for k in header] for r in results.records()])


def _summary_csv(results: SubsetResults, order: str) -> str:
    means = {m: results.per_subset_mean(m) for m in results.metrics}
    count = (~np.isnan(results.dice)).sum(axis=1)
    rows: list[list[object]] = []
    for s in row_order(results, order):
        for r, region in enumerate(results.region_names):
            rows.append([results.subset_names[s], region, *(means[m][s, r] for m in results.metrics), int(count[s, r])])
    overall = {m: results.mean_over_subsets(m) for m in results.metrics}
    for r, region in enumerate(results.region_names):
        rows.append([MEAN_ROW, region, *(overall[m][r] for m in results.metrics), len(results.case_ids)])
    header = ["subset", "region", *(f"{m}_mean" for m in results.metrics), "num_cases"]
    return tables.csv_text(header, rows)


def _save(fig: Figure, target: Path) -> None:
    # matplotlib's object API renders with Agg and leaves pyplot's global backend and figure list alone.
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=120, format="png")


def _heatmap(results: SubsetResults, target: Path, order: str, metric: str = "dice") -> None:
    """Per-subset means of ``metric`` (rows) per region (columns), the mean over subsets last."""
    rows = row_order(results, order)
    values = np.vstack([results.per_subset_mean(metric)[rows], results.mean_over_subsets(metric)[None]])
    labels = [results.subset_names[s] for s in rows] + [MEAN_ROW]
    finite = values[np.isfinite(values)]
    if metric == "dice":
        vmin, vmax, cmap, title, unit = 0.0, 1.0, "viridis", "Dice per modality subset", "Dice"
    else:
        vmax = max(float(finite.max()) if finite.size else 1.0, 1.0)
        vmin, cmap, title, unit = 0.0, "magma_r", "HD95 per modality subset (lower is better)", "HD95 (mm)"
    fig = Figure(figsize=(1.2 * len(results.region_names) + 3.0, 0.35 * len(labels) + 1.5))
    ax = fig.add_subplot()
    im = ax.imshow(
        np.nan_to_num(values, nan=vmin if metric == "dice" else vmax), vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto"
    )
    ax.set_xticks(range(len(results.region_names)), results.region_names)
    ax.set_yticks(range(len(labels)), labels)
    ax.axhline(len(rows) - 0.5, color="white", linewidth=2)
    for (i, j), value in np.ndenumerate(values):
        text = "n/a" if math.isnan(value) else (f"{value:.3f}" if metric == "dice" else f"{value:.1f}")
        dark = (value - vmin) / (vmax - vmin) < 0.6 if metric == "dice" else (value - vmin) / (vmax - vmin) > 0.4
        ax.text(j, i, text, ha="center", va="center", color="white" if dark else "black", fontsize=8)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label=unit)
    fig.tight_layout()
    _save(fig, target)


def _representative(results: SubsetResults, subset: int) -> CaseSlice | None:
    """Among the kept slices, the case whose mean Dice under ``subset`` is closest to their median (None if none)."""
    index = {case: c for c, case in enumerate(results.case_ids)}
    candidates = []
    for kept in results.slices:
        dice = results.dice[subset, index[kept.case_id]]
        if not np.isnan(dice).all():
            candidates.append((float(np.nanmean(dice)), kept))
    if not candidates:
        return None
    median = float(np.median([score for score, _ in candidates]))
    return min(candidates, key=lambda item: abs(item[0] - median))[1]


def _regions_map(masks: np.ndarray, paint_order: list[int]) -> np.ndarray:
    """``[R, H, W]`` binary regions -> ``[H, W]`` colour index (0 = none, r + 1 = region r), smaller regions on top."""
    out = np.zeros(masks.shape[1:], np.int16)
    for r in paint_order:
        out[masks[r]] = r + 1
    return out


def _overlay(results: SubsetResults, target: Path, order: str) -> None:
    """One row per subset: a representative case's slice, its reference and the prediction under that subset."""
    rows = row_order(results, order)
    fig = Figure(figsize=(6.0, 1.9 * len(rows) + 0.6))
    colours = ListedColormap([(0, 0, 0, 0), *_COLOURS.values()][: len(results.region_names) + 1])
    reference_area = [sum(int(k.reference[r].sum()) for k in results.slices) for r in range(len(results.region_names))]
    paint_order = sorted(range(len(results.region_names)), key=lambda r: -reference_area[r])
    for row, s in enumerate(rows):
        kept = _representative(results, s)
        axes = [fig.add_subplot(len(rows), 3, 3 * row + k + 1) for k in range(3)]
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
        if kept is None:
            axes[0].set_ylabel(results.subset_names[s], fontsize=7)
            axes[1].set_title("no case could be evaluated", fontsize=7)
            continue
        c = results.case_ids.index(kept.case_id)
        dice = " / ".join(tables.number(v, 100.0) for v in results.dice[s, c])
        shown = [m for m, used in enumerate(results.subsets[s]) if used and kept.available[m]][0]
        for ax, masks in zip(axes, (None, kept.reference, kept.prediction[s])):
            ax.imshow(kept.image[shown], cmap="gray")
            if masks is not None:
                ax.imshow(
                    _regions_map(masks, paint_order),
                    cmap=colours,
                    vmin=0,
                    vmax=len(results.region_names),
                    alpha=0.6,
                    interpolation="nearest",
                )
        axes[0].set_ylabel(results.subset_names[s], fontsize=7)
        axes[0].set_title(f"{kept.case_id}, slice {kept.index}, {results.modality_names[shown]}", fontsize=7)
        axes[1].set_title("reference", fontsize=7)
        axes[2].set_title(f"prediction (Dice {dice})", fontsize=7)
    legend = ", ".join(f"{name}: {colour}" for name, colour in zip(results.region_names, _COLOURS))
    fig.suptitle(f"Representative slice per subset ({legend}; Dice in % per region)", fontsize=8)
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.4 / fig.get_figheight()))
    _save(fig, target)


def report_paths(
    output_dir: PathLike, prefix: str = "evaluation", overlay: bool = True, protocol: bool = True
) -> dict[str, Path]:
    """The files :func:`write_report` writes, keyed as it returns them."""
    out = Path(output_dir)
    paths = {
        "csv": out / f"{prefix}_per_case.csv",
        "summary_csv": out / f"{prefix}_summary.csv",
        "markdown": out / f"{prefix}.md",
        "heatmap": out / f"{prefix}_dice.png",
        "hd95_heatmap": out / f"{prefix}_hd95.png",
        "json": out / f"{prefix}_summary.json",
    }
    if overlay:
        paths["overlay"] = out / f"{prefix}_overlay.png"
    if protocol:
        paths["protocol"] = out / f"{prefix}_protocol.json"
    return paths


def write_report(
    results: SubsetResults,
    output_dir: PathLike,
    order: str = "literature",
    prefix: str = "evaluation",
    protocol: ProtocolScore | None = None,
) -> dict[str, Path]:
    """Write ``<prefix>_per_case.csv``, ``<prefix>_summary.csv``, ``<prefix>.md``, ``<prefix>_dice.png``,
    ``<prefix>_hd95.png``, ``<prefix>_overlay.png`` (when the results kept slices), ``<prefix>_summary.json`` and,
    with a protocol score, ``<prefix>_protocol.json`` into ``output_dir``, each atomically.

    Returns:
        The written paths keyed ``"csv"``, ``"summary_csv"``, ``"markdown"``, ``"heatmap"`` (Dice),
        ``"hd95_heatmap"``, ``"overlay"`` (when written), ``"json"`` and ``"protocol"`` (when written).
    """
    out = Path(output_dir)
    paths = report_paths(out, prefix, overlay=bool(results.slices), protocol=protocol is not None)
    if protocol is not None:
        write_json_atomic(paths["protocol"], protocol.to_json())
    write_text_atomic(paths["csv"], _long_csv(results))
    write_text_atomic(paths["summary_csv"], _summary_csv(results, order))
    write_text_atomic(paths["markdown"], markdown_report(results, order, protocol=protocol))
    _heatmap(results, paths["heatmap"], order, "dice")
    _heatmap(results, paths["hd95_heatmap"], order, "hd95")
    if results.slices:
        _overlay(results, paths["overlay"], order)
    write_json_atomic(paths["json"], results.summary())
    logger.info("evaluation report written to %s", out)
    return paths


def evaluate_and_report(
    evaluator: SubsetEvaluator,
    output_dir: PathLike,
    order: str = "literature",
    prefix: str = "evaluation",
    protocol: str | None = None,
    datalist: PathLike | None = None,
    list_key: str = "testing",
    et_min_size: int = 0,
    inputs: Sequence[PathLike] = (),
) -> dict[str, Path]:
    """Run ``evaluator``, write the report into ``output_dir`` and log the Markdown table: one call for a bundle's
    ``run`` list (``"$mckd.brats.report.evaluate_and_report(@evaluator, @output_dir)"``).

    Args:
        evaluator: the all-subset evaluator.
        output_dir: the report's folder.
        order: row order, ``"literature"`` or ``"evaluation"``.
        prefix: file-name prefix of the outputs.
        protocol: a published protocol (:data:`mckd.brats.protocols.PROTOCOLS`) to score the results in, or None.
        datalist: the evaluated datalist JSON; with a protocol, each case's ``available`` is read from its list
            ``list_key`` (the fixed per-case subsets of ``imfuse2023``).
        list_key: the evaluated list of ``datalist``.
        et_min_size: the evaluation's small-ET post-processing threshold (0: none), stated beside the peers'.
        inputs: files the report must never overwrite (the datalist, the checkpoints), checked before evaluating.

    Returns:
        The written paths, as :func:`write_report`.

    Raises:
        mckd.brats.protocols.ProtocolError: for an unknown protocol (before anything is evaluated).
        ValueError: when the datalist cannot be read.
        InputOverwriteError: when a report file would overwrite one of ``inputs``.
    """
    for target in report_paths(output_dir, prefix).values():
        ensure_not_input(target, [*inputs, *([datalist] if datalist is not None else [])])
    availability = None
    if protocol is not None:
        published_split(protocol)
        availability = None if datalist is None else read_availability(datalist, list_key)
    results = evaluator.run()
    score = None
    if protocol is not None:
        rows = literature_subset_order() if order == "literature" else None
        score = score_protocol(results, protocol, availability, et_min_size, rows)
    paths = write_report(results, output_dir, order=order, prefix=prefix, protocol=score)
    logger.info("Dice and HD95 per modality subset:\n%s", markdown_table(results, order))
    if score is not None:
        logger.info("Protocol %s:\n%s", protocol, protocol_markdown(score, results.region_names))
    return paths
