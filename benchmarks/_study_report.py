"""The accuracy study's Markdown report: rendering only (the numbers come from :mod:`benchmarks._study_summary`).

Every table states how many seeds it averages (``n``): runs that diverged are listed in the stability table with the
reason and never enter a mean, a comparison or a ranking.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from mckd.brats.conventions import MODALITY_NAMES, REGIONS
from mckd.tables import markdown_table, mean_sd_cell

from benchmarks._study_summary import FUSION_ROW, MEAN_ROW, SINGLES_ROW, mean_sd

__all__ = ["ALL_FOUR", "markdown_report"]

#: Name of the all-modality BraTS subset.
ALL_FOUR = "+".join(MODALITY_NAMES)


def _cell(stat: Mapping[str, Any]) -> str:
    return mean_sd_cell(stat["mean"], stat["sd"], scale=100.0)


def _verdict_cell(c: Mapping[str, Any]) -> str:
    if math.isnan(c["ci_low"]):
        return f"{100 * c['diff_mean']:+.2f} {c['verdict']}"
    return f"{100 * c['diff_mean']:+.2f} [{100 * c['ci_low']:+.2f}, {100 * c['ci_high']:+.2f}] {c['verdict']}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], text_columns: int = 1) -> list[str]:
    return ["", *markdown_table(header, rows, text_columns=text_columns).splitlines()]


def _header(record: Mapping[str, Any]) -> list[str]:
    budget, machine = record["budget"], record["machine"]
    load = record.get("load_average", {})
    commit = record.get("commit", {})
    dirty = " (with uncommitted changes in the bundle or the package)" if commit.get("dirty") else ""
    return [
        f"# Accuracy study (budget `{budget['name']}`)",
        "",
        f"Seeds {', '.join(map(str, record['seeds']))}; {record['jobs']} worker process(es) × "
        f"{record['threads_per_job']} torch thread(s); wall time {record['wall_seconds'] / 60:.1f} min on "
        f"{machine['cpus']} CPU(s), load average {load.get('start', '?')} at the start and {load.get('end', '?')} at "
        f"the end (other jobs shared the machine when it is above the number of workers). Repository commit "
        f"`{commit.get('sha', 'unknown')}`{dirty}.",
        "",
        f"BraTS: {budget['brats_cases']} synthetic BraTS 2018-format cases of {tuple(budget['brats_shape'])} voxels "
        f"(data seed {record['data_seed']}), split `{budget['brats_split']}`; overrides of "
        f"`train.json` + `cpu_small.json`: `{json.dumps(budget['brats_overrides'])}`. Final model (`model_final.pt`) "
        f"evaluated on the held-out cases under all 15 subsets; Dice in %, scoring convention "
        f"`{record.get('scoring_convention', 'brats_legacy')}`; mean ± sd over the scored seeds (n).",
    ]


def _arm_names(summary: Mapping[str, Any], arms: Sequence[str]) -> list[str]:
    return [a for a in arms if a in summary["table"] or a in summary["not_scored"]]


def _brats_headline(brats: Mapping[str, Any], arms: Sequence[str], labels: Mapping[str, str]) -> list[str]:
    header = ["arm", *(f"{r} (15 subsets)" for r in REGIONS), *(f"{r} (singles)" for r in REGIONS)]
    rows = []
    for arm in _arm_names(brats, arms):
        skipped = ", ".join(map(str, brats["not_scored"].get(arm, []))) or "none"
        table = brats["table"].get(arm)
        cells = [_cell(table[row][r]) for row in (MEAN_ROW, SINGLES_ROW) for r in REGIONS] if table else ["–"] * 6
        rows.append([labels[arm], *cells, table[MEAN_ROW]["ET"]["n"] if table else 0, skipped])
    return ["", "## BraTS: mean Dice over the 15 subsets and over the 4 single-modality subsets"] + _table(
        [*header, "n", "not scored (seeds)"], rows
    )


def _brats_singles(
    brats: Mapping[str, Any], arms: Sequence[str], labels: Mapping[str, str], singles: Sequence[str]
) -> list[str]:
    rows = [
        [subset, labels[arm], *(_cell(brats["table"][arm][subset][r]) for r in REGIONS)]
        for subset in [*singles, ALL_FOUR, FUSION_ROW]
        for arm in arms
        if arm in brats["table"]
    ]
    return ["", "## BraTS: single-modality subsets, all four, and all four minus the best single one"] + _table(
        ["subset", "arm", *REGIONS], rows, text_columns=2
    )


def _brats_comparisons(
    brats: Mapping[str, Any], arms: Sequence[str], labels: Mapping[str, str], singles: Sequence[str], reference: str
) -> list[str]:
    rows = []
    for other in (a for a in arms if a != reference):
        for row in (MEAN_ROW, SINGLES_ROW, FUSION_ROW, *singles):
            found = {c["region"]: c for c in brats["comparisons"] if c["other"] == other and c["row"] == row}
            if len(found) == len(REGIONS):
                rows.append([labels[other], row, *(_verdict_cell(found[r]) for r in REGIONS)])
    lines = [
        "",
        f"## BraTS: {labels[reference]} minus each other arm, paired by seed",
        "",
        "Mean difference in Dice points [95 % Student-t interval over the seeds both arms scored] and verdict.",
    ]
    return lines + _table(["compared with", "row", *REGIONS], rows, text_columns=5)


def _stability(runs: Sequence[Mapping[str, Any]], labels: Mapping[str, str], key: Any) -> list[str]:
    lines = [
        "",
        "## Training stability",
        "",
        "A run diverged when the trainer stopped it on a non-finite loss, a network parameter is not finite after "
        "training, or the evaluation refused its checkpoint or output as non-finite; a diverged run is never "
        "scored. `loss spike`: the training loss exceeded 10 times its first value at some iteration (the run "
        "is still scored when it stayed finite).",
    ]
    runs = sorted(runs, key=key)
    rows = [
        [
            run["bundle"],
            labels[run["arm"]],
            run["seed"],
            f"{run['first_loss']:.3g}",
            f"{run['max_loss']:.3g}",
            run["loss_spike"],
            run["diverged"],
            run["scored"],
            f"{run['seconds']:.0f}",
        ]
        for run in runs
    ]
    header = ["bundle", "arm", "seed", "first loss", "max loss", "loss spike", "diverged", "scored", "run time (s)"]
    reasons = [
        f"- {run['bundle']} {labels[run['arm']]} seed {run['seed']}: {run['not_scored_reason']}"
        for run in runs
        if not run["scored"]
    ]
    return lines + _table(header, rows, text_columns=2) + ([""] + reasons if reasons else [])


def _per_subset(
    brats: Mapping[str, Any], arms: Sequence[str], labels: Mapping[str, str], rows: Sequence[str]
) -> list[str]:
    arms = [a for a in arms if a in brats["table"]]
    header = ["subset", *(f"{labels[a].split(' ')[0]} {r}" for a in arms for r in REGIONS)]
    cells = [
        [row, *(f"{100 * brats['table'][a][row][r]['mean']:.2f}" for a in arms for r in REGIONS)]
        for row in [*rows, MEAN_ROW]
    ]
    return ["", "## BraTS: Dice per subset (mean over the scored seeds)"] + _table(header, cells)


def _importance(
    runs: Sequence[Mapping[str, Any]], ranking: Mapping[str, Any], labels: Mapping[str, str], key: Any
) -> list[str]:
    groups: dict[tuple[str, str], list[Mapping[str, float]]] = {}
    for run in sorted(runs, key=key):
        if not run["diverged"]:
            groups.setdefault((run["bundle"], run["arm"]), []).append(run["final_importance"])
    rows = [
        [
            bundle,
            labels[arm],
            ", ".join(f"{m} {mean_sd_cell(*mean_sd([v[m] for v in values]), 100.0)}" for m in values[0]),
        ]
        for (bundle, arm), values in groups.items()
    ]
    lines = ["", "## Learned importance p", "", "Last p of each non-diverged run, in % (mean ± sd over seeds):"]
    lines += _table(["bundle", "arm", "p per modality (%)"], rows, text_columns=3)
    for bundle, found in ranking.items():
        reference = ", ".join(f"{m} {100 * v:.1f}" for m, v in found["informativeness"].items())
        lines += [
            "",
            f"{bundle}: ranking by p against the reference ranking of the modalities ({found['source']}: "
            f"{reference}). ρ = Spearman rank correlation of the last p with the reference (mean over runs); "
            "`top` / `last`: fraction of runs whose largest / smallest p is the most / least informative "
            "modality; max |p − 1/M| before training and after the last meta round.",
        ]
        rows = [
            [
                labels[arm],
                r["n"],
                "n/a" if math.isnan(r["spearman"]) else f"{r['spearman']:+.2f}",
                f"{r['top_agrees']:.2f}",
                f"{r['last_agrees']:.2f}",
                f"{r['distance_start']:.3f}",
                f"{r['distance_end']:.3f}",
            ]
            for arm, r in found["arms"].items()
        ]
        lines += _table(["arm", "n", "ρ", "top", "last", "max abs(p − 1/M) start", "end"], rows)
    return lines + ["", "Trajectories: `importance_trajectory.png`, values in `importance_trajectory.csv`."]


def _avmnist(
    record: Mapping[str, Any],
    avmnist: Mapping[str, Any],
    arms: Sequence[str],
    labels: Mapping[str, str],
    reference: str,
) -> list[str]:
    budget = record["budget"]
    runs = [r for r in record["runs"] if r["bundle"] == "avmnist" and r["scored"]]
    inputs = list(next(iter(avmnist["table"].values()))) if avmnist["table"] else []
    lines = [
        "",
        "## AV-MNIST (offline build): test accuracy (%), mean ± sd over the scored seeds",
        "",
        f"Offline build, {budget['avmnist_train_per_class']} training / {budget['avmnist_test_per_class']} test pairs "
        f"per digit ({runs[0]['num_test_samples'] if runs else 0} test pairs), audio kept for "
        f"{budget['audio_rate']:g} % of each class's training samples, meta-validation fraction "
        f"{budget['avmnist_meta_val_fraction']:g}, data seed {record['data_seed']}; overrides of `train.json`: "
        f"`{json.dumps(budget['avmnist_overrides'])}`.",
    ]
    rows = []
    for arm in _arm_names(avmnist, arms):
        skipped = ", ".join(map(str, avmnist["not_scored"].get(arm, []))) or "none"
        t = avmnist["table"].get(arm)
        cells = [_cell(t[i]) for i in inputs] if t else ["–"] * len(inputs)
        rows.append([labels[arm], *cells, t[inputs[0]]["n"] if t else 0, skipped])
    lines += _table(["arm", *inputs, "n", "not scored (seeds)"], rows)
    comparisons = []
    for other in (a for a in arms if a in avmnist["table"] and a != reference):
        found = {c["inputs"]: c for c in avmnist["comparisons"] if c["other"] == other}
        if len(found) == len(inputs):
            comparisons.append([labels[other], *(_verdict_cell(found[i]) for i in inputs)])
    lines += ["", f"{labels[reference]} minus each other arm, paired by seed (accuracy points [95 % t-interval]):"]
    return lines + _table(["compared with", *inputs], comparisons, text_columns=1 + len(inputs))


def markdown_report(
    record: Mapping[str, Any],
    summaries: Mapping[str, Mapping[str, Any]],
    ranking: Mapping[str, Any],
    layout: Mapping[str, Any],
) -> str:
    """The study's Markdown report.

    Args:
        record: the study record (settings, ``runs``).
        summaries: ``{"brats": summarise_brats(...), "avmnist": summarise_avmnist(...)}``.
        ranking: per bundle, ``{"source", "informativeness", "arms": importance_ranking(...)}``.
        layout: ``brats_arms``, ``avmnist_arms`` (arm order), ``labels`` (arm -> label), ``reference`` (the arm the
            others are compared with), ``singles`` and ``subsets`` (BraTS row names), ``run_key`` (sort key of runs).
    """
    labels, reference, key = layout["labels"], layout["reference"], layout["run_key"]
    brats, brats_arms = summaries["brats"], layout["brats_arms"]
    lines = _header(record)
    lines += _brats_headline(brats, brats_arms, labels)
    lines += _brats_singles(brats, brats_arms, labels, layout["singles"])
    lines += _brats_comparisons(
        brats, [a for a in brats_arms if a in brats["table"]], labels, layout["singles"], reference
    )
    lines += _stability(record["runs"], labels, key)
    lines += _per_subset(brats, brats_arms, labels, layout["subsets"])
    lines += _importance(record["runs"], ranking, labels, key)
    lines += _avmnist(record, summaries["avmnist"], layout["avmnist_arms"], labels, reference)
    return "\n".join(lines) + "\n"
