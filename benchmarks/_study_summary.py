"""Aggregation, paired comparisons, tables and the importance plot of the accuracy study (no training here).

Every function is pure (numbers in, numbers or text out) except :func:`plot_trajectories`, which writes one PNG.
The per-run records these functions consume are produced by :mod:`benchmarks.accuracy_study`:

- a BraTS run record: ``{"arm": str, "seed": int, "dice": {subset: {region: float}}, ...}``;
- an AV-MNIST run record: ``{"arm": str, "seed": int, "accuracy": {inputs: float}, ...}``;
- an importance trajectory: ``{"arm": str, "seed": int, "modalities": [...], "points": [[iteration, p_0, ...], ...]}``.

A run record with ``scored: False`` or ``diverged: True`` is never scored: the summaries leave it out and list it
under ``not_scored``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from mckd.fileio import atomic_path

__all__ = [
    "MEAN_ROW",
    "SINGLES_ROW",
    "FUSION_ROW",
    "is_scored",
    "not_scored",
    "importance_ranking",
    "mean_sd",
    "paired_comparison",
    "brats_seed_values",
    "summarise_brats",
    "summarise_avmnist",
    "plot_trajectories",
]

#: Row name of the mean over all evaluated subsets (the headline number of the missing-modality tables).
MEAN_ROW = "Mean over subsets"
#: Row name of the mean over the single-modality subsets.
SINGLES_ROW = "Mean of single-modality subsets"
#: Row name of the subset with every modality minus the best single-modality subset (per seed): negative when more
#: modalities segment worse than one alone.
FUSION_ROW = "All modalities minus the best single one"


def is_scored(run: Mapping[str, Any]) -> bool:
    """Whether a run record may be scored: it was evaluated (``scored`` not False) and did not diverge."""
    return bool(run.get("scored", True)) and not bool(run.get("diverged", False))


def not_scored(runs: Sequence[Mapping[str, Any]]) -> dict[str, list[int]]:
    """Seeds of the runs that are not scored, per arm (arms without such runs are absent)."""
    seeds: dict[str, list[int]] = {}
    for run in runs:
        if not is_scored(run):
            seeds.setdefault(run["arm"], []).append(int(run["seed"]))
    return {arm: sorted(values) for arm, values in seeds.items()}


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1) of ``values``; NaN for fewer than 2 values or a NaN value.

    Raises:
        ValueError: when ``values`` is empty.
    """
    if not values:
        raise ValueError("mean_sd needs at least one value.")
    array = np.asarray(values, dtype=float)  # numpy, not statistics: a NaN (diverged run) must give NaN, not raise
    sd = float(np.std(array, ddof=1)) if array.size > 1 else math.nan
    return float(np.mean(array)), sd


def paired_comparison(
    reference: Mapping[int, float], other: Mapping[int, float], level: float = 0.95
) -> dict[str, Any]:
    """Difference ``reference - other`` paired by seed, with a Student-t confidence interval of its mean.

    Both arms of a seed share the network initialisation, the data order and the availability draws, so the per-seed
    difference removes most of the seed-to-seed variation. The verdict is ``"higher"`` (reference better) when the
    whole interval lies above 0, ``"lower"`` when it lies below 0, else ``"within seed noise"``; with a single common
    seed no interval exists and the verdict is ``"n/a (one seed)"``.

    Args:
        reference: value per seed of the reference arm (MCKD).
        other: value per seed of the compared arm.
        level: confidence level of the interval. Default 0.95.

    Raises:
        ValueError: when the two arms share no seed.
    """
    seeds = sorted(set(reference) & set(other))
    if not seeds:
        raise ValueError("the two arms share no seed; nothing to pair.")
    diffs = [float(reference[s]) - float(other[s]) for s in seeds]
    mean, sd = mean_sd(diffs)
    if len(diffs) < 2:
        return {
            "seeds": seeds,
            "diff_mean": mean,
            "diff_sd": sd,
            "ci_low": math.nan,
            "ci_high": math.nan,
            "verdict": "n/a (one seed)",
        }
    half = float(stats.t.ppf(0.5 + level / 2, len(diffs) - 1)) * sd / math.sqrt(len(diffs))
    low, high = mean - half, mean + half
    verdict = "higher" if low > 0 else "lower" if high < 0 else "within seed noise"
    return {"seeds": seeds, "diff_mean": mean, "diff_sd": sd, "ci_low": low, "ci_high": high, "verdict": verdict}


def brats_seed_values(
    runs: Sequence[Mapping[str, Any]], singles: Sequence[str]
) -> dict[str, dict[str, dict[str, dict[int, float]]]]:
    """Per arm, row and region, the value of each seed.

    Rows are every subset of the runs, :data:`MEAN_ROW` (mean over all subsets of the run), :data:`SINGLES_ROW`
    (mean over the ``singles`` subsets) and :data:`FUSION_ROW` (the subset with the most modalities minus the best of
    the ``singles``). Runs that are not scored (:func:`is_scored`) are left out.

    Raises:
        ValueError: when a run lacks one of the ``singles`` subsets.
    """
    values: dict[str, dict[str, dict[str, dict[int, float]]]] = {}
    for run in filter(is_scored, runs):
        dice: Mapping[str, Mapping[str, float]] = run["dice"]
        missing = [s for s in singles if s not in dice]
        if missing:
            raise ValueError(f"run {run['arm']} seed {run['seed']} lacks the single-modality subsets {missing}.")
        regions = list(next(iter(dice.values())))
        rows = {name: dict(per_region) for name, per_region in dice.items()}
        rows[MEAN_ROW] = {r: statistics.fmean(dice[s][r] for s in dice) for r in regions}
        rows[SINGLES_ROW] = {r: statistics.fmean(dice[s][r] for s in singles) for r in regions}
        everything = max(dice, key=lambda name: len(name.split("+")))
        rows[FUSION_ROW] = {r: dice[everything][r] - max(dice[s][r] for s in singles) for r in regions}
        arm = values.setdefault(run["arm"], {})
        for row, per_region in rows.items():
            for region, value in per_region.items():
                arm.setdefault(row, {}).setdefault(region, {})[int(run["seed"])] = float(value)
    return values


def summarise_brats(
    runs: Sequence[Mapping[str, Any]], singles: Sequence[str], reference_arm: str | None = None
) -> dict[str, Any]:
    """Mean ± sd over seeds of every row (subsets, mean over subsets, mean of singles, all minus best single) per arm
    and region, and the paired comparison of ``reference_arm`` with every other arm on :data:`MEAN_ROW`,
    :data:`SINGLES_ROW`, :data:`FUSION_ROW` and each single-modality subset.

    Runs that are not scored are left out of everything (a comparison pairs only the seeds both arms scored).

    Returns:
        ``{"table": {arm: {row: {region: {"mean", "sd", "n"}}}}, "comparisons": [{"reference", "other", "row",
        "region", ...paired_comparison}], "not_scored": {arm: [seeds]}}``.
    """
    values = brats_seed_values(runs, singles)
    table = {
        arm: {
            row: {
                region: dict(zip(("mean", "sd"), mean_sd(list(per_seed.values()))), n=len(per_seed))
                for region, per_seed in per_region.items()
            }
            for row, per_region in rows.items()
        }
        for arm, rows in values.items()
    }
    comparisons = []
    if reference_arm is not None and reference_arm in values:
        for other in values:
            if other == reference_arm or not set(_seeds(values[other])) & set(_seeds(values[reference_arm])):
                continue
            for row in (MEAN_ROW, SINGLES_ROW, FUSION_ROW, *singles):
                for region, per_seed in values[reference_arm][row].items():
                    result = paired_comparison(per_seed, values[other][row][region])
                    comparisons.append(
                        {"reference": reference_arm, "other": other, "row": row, "region": region, **result}
                    )
    return {"table": table, "comparisons": comparisons, "not_scored": not_scored(runs)}


def _seeds(rows: Mapping[str, Mapping[str, Mapping[int, float]]]) -> list[int]:
    """The seeds of one arm's per-row, per-region values."""
    return sorted({seed for per_region in rows.values() for per_seed in per_region.values() for seed in per_seed})


def summarise_avmnist(runs: Sequence[Mapping[str, Any]], reference_arm: str | None = None) -> dict[str, Any]:
    """Mean ± sd over seeds of the accuracy per arm and input set, and paired comparisons with ``reference_arm``.

    Runs that are not scored are left out, as in :func:`summarise_brats`.

    Returns:
        ``{"table": {arm: {inputs: {"mean", "sd", "n"}}}, "comparisons": [{"reference", "other", "inputs", ...}],
        "not_scored": {arm: [seeds]}}``.
    """
    values: dict[str, dict[str, dict[int, float]]] = {}
    for run in filter(is_scored, runs):
        for inputs, accuracy in run["accuracy"].items():
            values.setdefault(run["arm"], {}).setdefault(inputs, {})[int(run["seed"])] = float(accuracy)
    table = {
        arm: {
            inputs: dict(zip(("mean", "sd"), mean_sd(list(per_seed.values()))), n=len(per_seed))
            for inputs, per_seed in rows.items()
        }
        for arm, rows in values.items()
    }
    comparisons = []
    if reference_arm is not None and reference_arm in values:
        reference_seeds = {seed for per_seed in values[reference_arm].values() for seed in per_seed}
        for other in values:
            if other == reference_arm or not reference_seeds & {s for v in values[other].values() for s in v}:
                continue
            for inputs, per_seed in values[reference_arm].items():
                result = paired_comparison(per_seed, values[other][inputs])
                comparisons.append({"reference": reference_arm, "other": other, "inputs": inputs, **result})
    return {"table": table, "comparisons": comparisons, "not_scored": not_scored(runs)}


def importance_ranking(
    trajectories: Sequence[Mapping[str, Any]], informativeness: Mapping[str, float]
) -> dict[str, dict[str, Any]]:
    """How the learned importance ``p`` ranks the modalities, per arm, compared with a reference ranking.

    Args:
        trajectories: records with ``arm``, ``modalities`` and ``points`` (``[[iteration, p_0, ...], ...]``); a record
            whose last ``p`` is not finite is left out.
        informativeness: per modality name, how much that modality alone reveals (higher = more), e.g. the accuracy
            of the modality alone; it defines the reference ranking.

    Returns:
        per arm: ``n`` (records), ``mean_p`` (last ``p`` per modality, mean over records), ``spearman`` (mean over
        records of the rank correlation of the last ``p`` with ``informativeness``; NaN when ``p`` has ties, e.g.
        uniform), ``top_agrees`` and ``last_agrees`` (fraction of records whose largest / smallest ``p`` belongs to the
        most / least informative modality), ``distance_start`` and ``distance_end`` (mean over records of
        ``max_m |p_m - 1/M|`` before training and after the last meta round).

    Raises:
        KeyError: when a record's modality has no ``informativeness``.
    """
    grouped: dict[str, list[tuple[list[str], np.ndarray, np.ndarray]]] = {}
    for record in trajectories:
        first, last = (np.asarray(record["points"][i][1:], dtype=float) for i in (0, -1))
        if np.isfinite(last).all():
            grouped.setdefault(record["arm"], []).append((list(record["modalities"]), first, last))
    result = {}
    for arm, items in grouped.items():
        rhos, tops, lasts = [], [], []
        for names, _, last in items:
            reference = np.asarray([informativeness[n] for n in names], dtype=float)
            tied = np.unique(last).size < last.size
            rhos.append(math.nan if tied else float(stats.spearmanr(last, reference).statistic))
            tops.append(int(np.argmax(last)) == int(np.argmax(reference)))
            lasts.append(int(np.argmin(last)) == int(np.argmin(reference)))
        names = items[0][0]
        uniform = 1.0 / len(names)
        result[arm] = {
            "n": len(items),
            "mean_p": {n: statistics.fmean(float(i[2][k]) for i in items) for k, n in enumerate(names)},
            "spearman": float(np.mean(rhos)) if not any(math.isnan(r) for r in rhos) else math.nan,
            "top_agrees": statistics.fmean(tops),
            "last_agrees": statistics.fmean(lasts),
            "distance_start": statistics.fmean(float(np.abs(i[1] - uniform).max()) for i in items),
            "distance_end": statistics.fmean(float(np.abs(i[2] - uniform).max()) for i in items),
        }
    return result


def plot_trajectories(panels: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], target: Path) -> None:
    """One panel per ``(title, trajectories)``: importance ``p`` per modality over training iterations.

    Each seed is drawn as a thin line; the mean over seeds (at the iterations all seeds share) as a thick one.
    The PNG is written atomically.
    """
    fig = Figure(figsize=(5.0 * max(1, len(panels)), 3.8))
    for index, (title, trajectories) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, max(1, len(panels)), index)
        if not trajectories:
            ax.set_title(f"{title}\n(no trajectory)")
            continue
        modalities = list(trajectories[0]["modalities"])
        colours = [f"C{m}" for m in range(len(modalities))]
        for trajectory in trajectories:
            points = np.asarray(trajectory["points"], dtype=float)
            for m, colour in enumerate(colours):
                ax.plot(points[:, 0], points[:, m + 1], color=colour, linewidth=0.7, alpha=0.45)
        common = sorted(set.intersection(*(set(p[0] for p in t["points"]) for t in trajectories)))
        for m, (name, colour) in enumerate(zip(modalities, colours)):
            mean = [
                statistics.fmean(dict((p[0], p[m + 1]) for p in t["points"])[it] for t in trajectories) for it in common
            ]
            ax.plot(common, mean, color=colour, linewidth=2.0, label=name)
        ax.axhline(1.0 / len(modalities), color="grey", linestyle=":", linewidth=1.0)
        ax.set_title(f"{title} ({len(trajectories)} seed(s))")
        ax.set_xlabel("training iteration")
        ax.set_ylabel("importance p = softmax(w)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
