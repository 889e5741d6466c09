"""Accuracy study: does meta-learned distillation help under missing modalities? (issue 9)

Trains the real bundles in-process (``monai.bundle.ConfigWorkflow`` with command-line style overrides) and scores
every run with the bundles' own evaluation configs:

- BraTS bundle (``bundle/brats_mri_mckd_segmentation``, ``train.json`` + ``cpu_small.json``) on synthetic
  BraTS 2018-format cases (:mod:`data_prep.synthetic_brats`, generator parameters fixed below), four arms:
  (a) MCKD; (b) the same network, modality dropout and schedule with ``kd_weight`` 0; (c) distillation with fixed
  uniform importance (``w`` = 0 and the meta optimiser's learning rate 0, so the meta rounds run but never move
  ``p`` = 1/4: every arm sees the same data stream per seed); (d) MCKD with ``paper_exact: true``. Each trained
  final model (``model_final.pt``) is evaluated under all 15 modality subsets on the same held-out cases
  (``evaluate.json``).
- AV-MNIST bundle (``bundle/avmnist_mckd_classification``) on the offline build with audio kept for only a fraction
  of the training samples (``--audio-rate``), arms (a), (b), (c); accuracy with image only, audio only and both.

For every run the importance ``p`` is recorded before training and after every meta round (the values the
``MetaImportanceUpdater`` writes to ``engine.state.metrics``). Results (tables, CSV, JSON, one PNG; no weights) go to
``--out``; data and run folders (weights, TensorBoard files) to ``--work-dir``.

Usage (from the repository root)::

    python -m benchmarks.accuracy_study --budget cpu --out benchmarks/results/accuracy_study
    python -m benchmarks.accuracy_study --budget smoke --out /tmp/study_smoke
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from ignite.engine import Events
from monai.handlers import from_engine

from benchmarks._study_summary import (
    MEAN_ROW,
    SINGLES_ROW,
    format_mean_sd,
    mean_sd,
    plot_trajectories,
    summarise_avmnist,
    summarise_brats,
)
from mckd.availability import all_subsets, subset_name
from mckd.brats.conventions import MODALITIES, MODALITY_DISPLAY_NAMES
from mckd.brats.report import literature_subset_order
from mckd.fileio import write_json_atomic, write_text_atomic

__all__ = ["Budget", "BUDGETS", "BRATS_ARMS", "AVMNIST_ARMS", "ARM_LABELS", "run_study", "main"]

logger = logging.getLogger("accuracy_study")

REPO = Path(__file__).resolve().parents[1]
BRATS_CONFIGS = REPO / "bundle" / "brats_mri_mckd_segmentation" / "configs"
AVMNIST_CONFIGS = REPO / "bundle" / "avmnist_mckd_classification" / "configs"
BRATS_MODALITY_NAMES = [MODALITY_DISPLAY_NAMES[m] for m in MODALITIES]

#: Seed of the synthetic BraTS cases, of their split and of the AV-MNIST build (fixed for every arm and seed).
DATA_SEED = 0

#: Bundle overrides per arm (on top of the budget's overrides and the seed).
BRATS_ARMS: dict[str, dict[str, Any]] = {
    "mckd": {},
    "no_kd": {"kd_weight": 0.0},
    "uniform_kd": {"modality_weights#init": "zeros", "meta_learning_rate": 0.0, "meta_weight_decay": 0.0},
    "mckd_paper_exact": {"paper_exact": True},
}
AVMNIST_ARMS: dict[str, dict[str, Any]] = {arm: BRATS_ARMS[arm] for arm in ("mckd", "no_kd", "uniform_kd")}
ARM_LABELS: dict[str, str] = {
    "mckd": "(a) MCKD",
    "no_kd": "(b) no KD (λ = 0)",
    "uniform_kd": "(c) KD, fixed uniform p",
    "mckd_paper_exact": "(d) MCKD paper_exact",
}
REFERENCE_ARM = "mckd"


@dataclass(frozen=True)
class Budget:
    """Everything a study run fixes besides the arm and the seed.

    Attributes:
        name: budget name.
        brats_cases: number of synthetic BraTS cases (split into training, meta-validation and held-out test).
        brats_shape: stored voxel shape (x, y, z) of the synthetic cases.
        brats_test_ratio: fraction of the cases held out for the all-subset evaluation (``data_prep.brats
            --split ratio:R``; its ``validation`` list becomes the test list, and no validation runs during training).
        brats_overrides: overrides of ``train.json`` + ``cpu_small.json`` (iterations, crop, meta schedule, ...).
        avmnist_train_per_class: training pairs per digit of the offline AV-MNIST build (before meta-validation).
        avmnist_test_per_class: test pairs per digit.
        avmnist_meta_val_fraction: fraction of each class's training pairs held out for the meta-update.
        audio_rate: percent of each class's training samples that keep their audio.
        avmnist_overrides: overrides of the AV-MNIST ``train.json``.
    """

    name: str
    brats_cases: int
    brats_shape: tuple[int, int, int]
    brats_test_ratio: float
    brats_overrides: dict[str, Any] = field(default_factory=dict)
    avmnist_train_per_class: int = 105
    avmnist_test_per_class: int = 45
    avmnist_meta_val_fraction: float = 0.05
    audio_rate: float = 10.0
    avmnist_overrides: dict[str, Any] = field(default_factory=dict)


BUDGETS: dict[str, Budget] = {
    "smoke": Budget(
        name="smoke",
        brats_cases=8,
        brats_shape=(32, 32, 32),
        brats_test_ratio=0.25,
        brats_overrides={
            "crop_size": [32, 32, 32], "batch_size": 1, "num_workers": 0, "num_iterations": 4, "epoch_length": 4,
            "warmup_iterations": 2, "meta_interval": 2, "meta_steps": 1, "sw_overlap": 0.25,
        },
        avmnist_train_per_class=10,
        avmnist_test_per_class=3,
        avmnist_meta_val_fraction=0.2,
        avmnist_overrides={"epochs": 1, "meta_interval": 2, "meta_steps": 1, "batch_size": 16},
    ),
    "cpu": Budget(
        name="cpu",
        brats_cases=32,
        brats_shape=(64, 64, 48),
        brats_test_ratio=0.25,
        brats_overrides={
            "crop_size": [32, 48, 48], "batch_size": 2, "num_workers": 0, "num_iterations": 600,
            "epoch_length": 600, "warmup_iterations": 300, "meta_interval": 20, "meta_steps": 4,
            "sw_overlap": 0.25,
        },
    ),
}


@dataclass(frozen=True)
class RunTask:
    """One training + evaluation run, picklable for a worker process."""

    bundle: str  # "brats" or "avmnist"
    arm: str
    seed: int
    run_dir: str
    dataset: str  # BraTS: the datalist JSON; AV-MNIST: the build folder
    overrides: dict[str, Any]
    threads: int


class ImportanceRecorder:
    """Records ``p`` before training and after every meta round from ``engine.state.metrics["importance/<name>"]``.

    Args:
        importance: the run's ``ModalityImportance`` (read once, before training).
        modality_names: the names the meta handler logs under.
        interval: the meta handler's interval (rounds before iterations 1, N + 1, 2N + 1, ...).
    """

    def __init__(self, importance: torch.nn.Module, modality_names: Sequence[str], interval: int) -> None:
        self.importance = importance
        self.modality_names = list(modality_names)
        self.interval = int(interval)
        self.points: list[list[float]] = []

    def attach(self, engine: Any) -> None:
        """Register after the bundle's handlers, so a round's metrics are already written when this runs."""
        engine.add_event_handler(Events.STARTED, self._initial)
        engine.add_event_handler(
            Events.ITERATION_STARTED(event_filter=lambda _, iteration: (iteration - 1) % self.interval == 0), self
        )

    def _initial(self, engine: Any) -> None:
        if not self.points:
            self.points.append([0.0, *self.importance.probabilities().detach().cpu().tolist()])

    def __call__(self, engine: Any) -> None:
        metrics = engine.state.metrics
        self.points.append([float(engine.state.iteration)] + [float(metrics[f"importance/{n}"]) for n in self.modality_names])


def _workflow(configs: Sequence[Path], workflow_type: Optional[str], overrides: dict[str, Any]) -> Any:
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=[str(c) for c in configs], workflow_type=workflow_type, logging_file=False, **overrides
    )
    workflow.initialize()
    return workflow


class LossRecorder:
    """Records the training loss (every ``every`` iterations and its maximum) and, after training, whether every
    network parameter is still finite: the divergence check of the study."""

    def __init__(self, every: int = 10) -> None:
        self.every = every
        self.curve: list[list[float]] = []
        self.first = math.nan
        self.maximum = -math.inf

    def attach(self, engine: Any) -> None:
        """Register at ``ITERATION_COMPLETED``."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        loss = float(from_engine(["loss"], first=True)(engine.state.output))
        if engine.state.iteration == 1:
            self.first = loss
        self.maximum = max(self.maximum, loss) if not math.isnan(loss) else math.inf
        if engine.state.iteration % self.every == 0:
            self.curve.append([float(engine.state.iteration), loss])


def _train(configs: Sequence[Path], overrides: dict[str, Any]) -> dict[str, Any]:
    """Run a bundle's training workflow; return the importance trajectory ``[[iteration, p_0, ...], ...]`` and the
    training-stability record (loss curve, first and maximum loss, finite parameters)."""
    workflow = _workflow(configs, "train", overrides)
    parser = workflow.parser
    trainer = parser.get_parsed_content("train#trainer")
    recorder = ImportanceRecorder(
        parser.get_parsed_content("modality_weights"),
        parser.get_parsed_content("modality_names"),
        parser.get_parsed_content("meta_interval"),
    )
    recorder.attach(trainer)
    losses = LossRecorder()
    losses.attach(trainer)
    workflow.run()
    finite = all(bool(torch.isfinite(p).all()) for p in trainer.network.parameters())
    workflow.finalize()
    diverged = not finite or losses.maximum > 10.0 * losses.first
    return {"trajectory": recorder.points, "loss_curve": losses.curve, "first_loss": losses.first,
            "max_loss": losses.maximum, "parameters_finite": finite, "diverged": diverged}


def run_one(task: RunTask) -> dict[str, Any]:
    """Train and evaluate one run (in a worker process); return its record."""
    torch.set_num_threads(task.threads)
    start = time.perf_counter()
    common = {"bundle_root": task.run_dir, "seed": task.seed, **task.overrides}
    if task.bundle == "brats":
        common["data_list_file_path"] = task.dataset
        train_configs = [BRATS_CONFIGS / "train.json", BRATS_CONFIGS / "cpu_small.json"]
        training = _train(train_configs, common)
        evaluate = _workflow(
            [*train_configs, BRATS_CONFIGS / "evaluate.json"],
            None,
            {**common, "eval_list_key": "test", "ckpt_path": str(Path(task.run_dir) / "models" / "model_final.pt")},
        )
        paths = evaluate.run()[0]
        evaluate.finalize()
        summary = json.loads(Path(paths["json"]).read_text())
        dice = {s: {r: v["dice"] for r, v in regions.items()} for s, regions in summary["per_subset"].items()}
        record = {"dice": dice, "final_importance": summary["importance"], "num_test_cases": summary["num_cases"],
                  "modalities": BRATS_MODALITY_NAMES}
    else:
        common["dataset_dir"] = task.dataset
        train_configs = [AVMNIST_CONFIGS / "train.json"]
        training = _train(train_configs, common)
        evaluate = _workflow([*train_configs, AVMNIST_CONFIGS / "evaluate.json"], None, common)
        rows = evaluate.run()[0]
        evaluate.finalize()
        importance = json.loads((Path(task.run_dir) / "eval" / "importance.json").read_text())
        record = {"accuracy": {r["inputs"]: r["accuracy"] for r in rows}, "final_importance": importance,
                  "num_test_samples": max(r["num_samples"] for r in rows), "modalities": list(importance)}
    seconds = time.perf_counter() - start
    logger.info("%s %s seed %d done in %.0f s", task.bundle, task.arm, task.seed, seconds)
    return {"bundle": task.bundle, "arm": task.arm, "seed": task.seed, "seconds": seconds, **training, **record}


def _worker_init() -> None:
    """Quiet the per-iteration bundle logs of worker processes; keep this module's progress lines."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s: %(message)s", force=True)
    logger.setLevel(logging.INFO)


def prepare_brats(work: Path, budget: Budget) -> Path:
    """Write the synthetic cases and the study datalist (``training``, ``meta_validation``, ``test``; empty
    ``validation``, so no validation or model selection happens during training); return the datalist path."""
    from data_prep.brats import prepare_datalist
    from data_prep.synthetic_brats import write_dataset

    cases = work / "brats_cases"
    write_dataset(cases, budget.brats_cases, "brats2018", budget.brats_shape, seed=DATA_SEED)
    prepared = work / "brats_lists" / "prepared.json"
    prepare_datalist(cases, prepared, split=f"ratio:{budget.brats_test_ratio}", seed=DATA_SEED)
    lists = json.loads(prepared.read_text())
    lists["test"], lists["validation"] = lists["validation"], []
    return write_json_atomic(work / "brats_lists" / "study.json", lists)


def prepare_avmnist(work: Path, budget: Budget) -> str:
    """Build the offline AV-MNIST dataset of the budget (cached speech is reused); return its folder."""
    from data_prep.avmnist import OfflineOptions, ProtocolOptions, build_offline

    out = work / f"avmnist_audio{budget.audio_rate:g}"
    protocol = ProtocolOptions(audio_rate=budget.audio_rate, meta_val_fraction=budget.avmnist_meta_val_fraction,
                               seed=DATA_SEED)
    options = OfflineOptions(train_per_class=budget.avmnist_train_per_class,
                             test_per_class=budget.avmnist_test_per_class)
    build_offline(out, protocol, options)
    return str(out)


def _tasks(bundle: str, arms: dict[str, dict[str, Any]], seeds: Sequence[int], work: Path, dataset: str,
           overrides: dict[str, Any], threads: int) -> list[RunTask]:
    return [
        RunTask(bundle, arm, seed, str(work / "runs" / f"{bundle}_{arm}_seed{seed}"), dataset,
                {**overrides, **arm_overrides}, threads)
        for arm, arm_overrides in arms.items()
        for seed in seeds
    ]


def _order_brats(tasks: list[RunTask]) -> list[RunTask]:
    """The slowest arm (paper_exact encodes every modality) first, so the pool's tail is short."""
    return sorted(tasks, key=lambda t: (t.arm != "mckd_paper_exact", t.seed))


def run_study(budget: Budget, out: Path, work: Path, seeds: Sequence[int], jobs: int = 2, threads: int = 1) -> dict:
    """Prepare the data, run every arm and seed of both bundles (``jobs`` worker processes with ``threads`` torch
    threads each), and write the tables and the plot to ``out``; return the study record."""
    start = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_worker_init) as pool:
        avmnist_data: Future = pool.submit(prepare_avmnist, work, budget)
        datalist = prepare_brats(work, budget)
        logger.info("synthetic BraTS cases and datalist ready: %s", datalist)
        brats_tasks = _order_brats(
            _tasks("brats", BRATS_ARMS, seeds, work, str(datalist), budget.brats_overrides, threads)
        )
        futures = [pool.submit(run_one, task) for task in brats_tasks]
        avmnist_dir = avmnist_data.result()
        logger.info("AV-MNIST offline build ready: %s", avmnist_dir)
        futures += [pool.submit(run_one, task) for task in
                    _tasks("avmnist", AVMNIST_ARMS, seeds, work, avmnist_dir, budget.avmnist_overrides, threads)]
        runs = [f.result() for f in futures]
    wall = time.perf_counter() - start
    record = {
        "budget": asdict(budget),
        "seeds": list(seeds),
        "data_seed": DATA_SEED,
        "jobs": jobs,
        "threads_per_job": threads,
        "wall_seconds": wall,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                    "torch": torch.__version__},
        "arms": {arm: {"label": ARM_LABELS[arm], "overrides": BRATS_ARMS[arm]} for arm in BRATS_ARMS},
        "runs": runs,
    }
    write_outputs(record, out)
    logger.info("study finished in %.1f min; results in %s", wall / 60, out)
    return record


def single_subsets() -> list[str]:
    """Names of the four single-modality BraTS subsets, in the literature order (T2, T1ce, T1, FLAIR)."""
    return [subset_name(s, BRATS_MODALITY_NAMES) for s in literature_subset_order() if sum(s) == 1]


def subset_rows() -> list[str]:
    """All 15 BraTS subset names in the literature order."""
    order = [subset_name(s, BRATS_MODALITY_NAMES) for s in literature_subset_order()]
    return order + [n for n in (subset_name(s, BRATS_MODALITY_NAMES) for s in all_subsets(4)) if n not in order]


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _verdict_cell(c: dict[str, Any]) -> str:
    return (f"{100 * c['diff_mean']:+.2f} [{100 * c['ci_low']:+.2f}, {100 * c['ci_high']:+.2f}] {c['verdict']}"
            if not math.isnan(c["ci_low"]) else f"{100 * c['diff_mean']:+.2f} {c['verdict']}")


def markdown_report(
    record: dict[str, Any], brats: dict[str, Any], avmnist: dict[str, Any], converged: dict[str, Any]
) -> str:
    """The study's Markdown report: settings, stability, headline tables, paired comparisons (all runs and, when a
    run diverged, converged runs only), per-subset table, importance, AV-MNIST."""
    budget = record["budget"]
    seeds = ", ".join(map(str, record["seeds"]))
    arms = [a for a in BRATS_ARMS if a in brats["table"]]
    regions = ["ET", "TC", "WT"]
    lines = [
        f"# Accuracy study (budget `{budget['name']}`)",
        "",
        f"Seeds {seeds}; {record['jobs']} worker process(es) × {record['threads_per_job']} torch thread(s); "
        f"wall time {record['wall_seconds'] / 60:.1f} min on {record['machine']['cpus']} CPU(s).",
        "",
        f"BraTS: {budget['brats_cases']} synthetic BraTS 2018-format cases of {tuple(budget['brats_shape'])} voxels "
        f"(data seed {record['data_seed']}), split `ratio:{budget['brats_test_ratio']}`; overrides of "
        f"`train.json` + `cpu_small.json`: `{json.dumps(budget['brats_overrides'])}`. Final model evaluated on the "
        "held-out cases under all 15 subsets. Dice in %, mean ± sd over seeds.",
        "",
        "## BraTS: mean Dice over the 15 subsets and over the 4 single-modality subsets",
        "",
        "| arm | " + " | ".join(f"{r} (15 subsets)" for r in regions) + " | "
        + " | ".join(f"{r} (singles)" for r in regions) + " |",
        "|---|" + "---:|" * 6,
    ]
    lines += _headline_rows(brats, arms, regions)
    lines += ["", "## Training stability", "",
              "A run counts as diverged when a network parameter is not finite after training or the training loss "
              "exceeded 10 times its first value.", "",
              "| bundle | arm | seed | first loss | max loss | parameters finite | diverged | run time (s) |",
              "|---|---|---:|---:|---:|---|---|---:|"]
    for run in sorted(record["runs"], key=_run_key):
        lines.append(f"| {run['bundle']} | {ARM_LABELS[run['arm']]} | {run['seed']} | {run['first_loss']:.3g} | "
                     f"{run['max_loss']:.3g} | {run['parameters_finite']} | {run['diverged']} | {run['seconds']:.0f} |")
    if converged is not brats:
        converged_arms = [a for a in BRATS_ARMS if a in converged["table"]]
        lines += ["", "### BraTS headline over the converged runs only (n = number of seeds)", "",
                  "| arm | " + " | ".join(f"{r} (15 subsets)" for r in regions) + " | "
                  + " | ".join(f"{r} (singles)" for r in regions) + " | n |", "|---|" + "---:|" * 7]
        lines += _headline_rows(converged, converged_arms, regions, with_n=True)
        lines += ["", "MCKD minus each other arm on the seeds where both converged:", "",
                  "| compared with | row | " + " | ".join(regions) + " |", "|---|---|" + "---|" * 3]
        lines += _comparison_rows(converged, converged_arms, regions)
    lines += ["", "## BraTS: single-modality subsets", "",
              "| subset | arm | " + " | ".join(regions) + " |", "|---|---|" + "---:|" * 3]
    for subset in single_subsets():
        for arm in arms:
            t = brats["table"][arm][subset]
            lines.append(f"| {subset} | {ARM_LABELS[arm]} | "
                         + " | ".join(format_mean_sd(t[r]["mean"], t[r]["sd"]) for r in regions) + " |")
    lines += ["", "## BraTS: MCKD minus each other arm, paired by seed",
              "", "Mean difference in Dice points [95 % t-interval over seeds] and verdict.", "",
              "| compared with | row | " + " | ".join(regions) + " |", "|---|---|" + "---|" * 3]
    lines += _comparison_rows(brats, arms, regions)
    lines += ["", "## BraTS: Dice per subset (mean over seeds)", "",
              "| subset | " + " | ".join(f"{ARM_LABELS[a].split(' ')[0]} {r}" for a in arms for r in regions) + " |",
              "|---|" + "---:|" * (3 * len(arms))]
    for row in [*subset_rows(), MEAN_ROW]:
        lines.append(f"| {row} | " + " | ".join(f"{100 * brats['table'][a][row][r]['mean']:.2f}" for a in arms
                                                 for r in regions) + " |")
    lines += ["", "## Learned importance p after training (mean ± sd over seeds)", ""]
    lines += _importance_lines(record["runs"])
    lines += ["", "Trajectories: `importance_trajectory.png`, values in `importance_trajectory.csv`.", ""]
    lines += _avmnist_lines(record, avmnist)
    return "\n".join(lines) + "\n"


def _run_key(run: dict[str, Any]) -> tuple:
    return run["bundle"] != "brats", list(BRATS_ARMS).index(run["arm"]), run["seed"]


def _headline_rows(summary: dict[str, Any], arms: Sequence[str], regions: Sequence[str], with_n: bool = False) -> list[str]:
    rows = []
    for arm in arms:
        table = summary["table"][arm]
        cells = [format_mean_sd(table[row][r]["mean"], table[row][r]["sd"]) for row in (MEAN_ROW, SINGLES_ROW)
                 for r in regions]
        if with_n:
            cells.append(str(table[MEAN_ROW][regions[0]]["n"]))
        rows.append(f"| {ARM_LABELS[arm]} | " + " | ".join(cells) + " |")
    return rows


def _comparison_rows(summary: dict[str, Any], arms: Sequence[str], regions: Sequence[str]) -> list[str]:
    rows = []
    for other in arms:
        if other == REFERENCE_ARM or REFERENCE_ARM not in arms:
            continue
        for row in (MEAN_ROW, SINGLES_ROW, *single_subsets()):
            found = {c["region"]: c for c in summary["comparisons"] if c["other"] == other and c["row"] == row}
            if len(found) == len(regions):
                rows.append(f"| {ARM_LABELS[other]} | {row} | "
                            + " | ".join(_verdict_cell(found[r]) for r in regions) + " |")
    return rows


def _importance_lines(runs: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["| bundle | arm | p per modality |", "|---|---|---|"]
    groups: dict[tuple[str, str], list[dict[str, float]]] = {}
    for run in sorted(runs, key=_run_key):
        groups.setdefault((run["bundle"], run["arm"]), []).append(run["final_importance"])
    for (bundle, arm), values in groups.items():
        cells = ", ".join(f"{m} {format_mean_sd(*mean_sd([v[m] for v in values]), scale=1.0)}" for m in values[0])
        lines.append(f"| {bundle} | {ARM_LABELS[arm]} | {cells} |")
    return lines


def _avmnist_lines(record: dict[str, Any], avmnist: dict[str, Any]) -> list[str]:
    budget = record["budget"]
    runs = [r for r in record["runs"] if r["bundle"] == "avmnist"]
    test_samples = runs[0]["num_test_samples"] if runs else 0
    inputs = list(next(iter(avmnist["table"].values()))) if avmnist["table"] else []
    lines = [
        "## AV-MNIST (offline build): test accuracy (%), mean ± sd over seeds",
        "",
        f"Offline build, {budget['avmnist_train_per_class']} training / {budget['avmnist_test_per_class']} test pairs "
        f"per digit ({test_samples} test pairs), audio kept for {budget['audio_rate']:g} % of each class's training "
        f"samples, meta-validation fraction {budget['avmnist_meta_val_fraction']:g}, data seed {record['data_seed']}; "
        f"overrides of `train.json`: `{json.dumps(budget['avmnist_overrides'])}`.",
        "",
        "| arm | " + " | ".join(inputs) + " |",
        "|---|" + "---:|" * len(inputs),
    ]
    for arm in (a for a in AVMNIST_ARMS if a in avmnist["table"]):
        t = avmnist["table"][arm]
        lines.append(f"| {ARM_LABELS[arm]} | " + " | ".join(format_mean_sd(t[i]["mean"], t[i]["sd"]) for i in inputs)
                     + " |")
    lines += ["", "MCKD minus each other arm, paired by seed (accuracy points [95 % t-interval]):", "",
              "| compared with | " + " | ".join(inputs) + " |", "|---|" + "---|" * len(inputs)]
    for other in (a for a in AVMNIST_ARMS if a in avmnist["table"] and a != REFERENCE_ARM):
        found = {c["inputs"]: c for c in avmnist["comparisons"] if c["other"] == other}
        lines.append(f"| {ARM_LABELS[other]} | " + " | ".join(_verdict_cell(found[i]) for i in inputs) + " |")
    return lines


def write_outputs(record: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write ``accuracy_study.md``, the CSV tables, ``study.json`` and ``importance_trajectory.png`` into ``out``."""
    brats_runs = [r for r in record["runs"] if r["bundle"] == "brats"]
    av_runs = [r for r in record["runs"] if r["bundle"] == "avmnist"]
    brats = summarise_brats(brats_runs, single_subsets(), REFERENCE_ARM)
    stable = [r for r in brats_runs if not r["diverged"]]
    converged = brats if len(stable) == len(brats_runs) else summarise_brats(stable, single_subsets(), REFERENCE_ARM)
    avmnist = summarise_avmnist(av_runs, REFERENCE_ARM)
    paths = {name: out / name for name in ("accuracy_study.md", "brats_runs.csv", "brats_summary.csv",
                                           "avmnist_runs.csv", "avmnist_summary.csv", "importance_trajectory.csv",
                                           "importance_trajectory.png", "study.json")}
    write_text_atomic(paths["brats_runs.csv"], _csv(
        ["arm", "seed", "subset", "region", "dice"],
        [[r["arm"], r["seed"], s, region, v] for r in brats_runs for s, per in r["dice"].items()
         for region, v in per.items()]))
    write_text_atomic(paths["brats_summary.csv"], _csv(
        ["arm", "row", "region", "dice_mean", "dice_sd", "seeds"],
        [[arm, row, region, v["mean"], v["sd"], v["n"]] for arm, rows in brats["table"].items()
         for row, per in rows.items() for region, v in per.items()]))
    write_text_atomic(paths["avmnist_runs.csv"], _csv(
        ["arm", "seed", "inputs", "accuracy"],
        [[r["arm"], r["seed"], i, v] for r in av_runs for i, v in r["accuracy"].items()]))
    write_text_atomic(paths["avmnist_summary.csv"], _csv(
        ["arm", "inputs", "accuracy_mean", "accuracy_sd", "seeds"],
        [[arm, i, v["mean"], v["sd"], v["n"]] for arm, rows in avmnist["table"].items() for i, v in rows.items()]))
    write_text_atomic(paths["importance_trajectory.csv"], _csv(
        ["bundle", "arm", "seed", "iteration", "modality", "p"],
        [[r["bundle"], r["arm"], r["seed"], int(p[0]), m, p[k + 1]] for r in record["runs"] for p in r["trajectory"]
         for k, m in enumerate(r["modalities"])]))
    panels = []
    for bundle, arm in (("brats", "mckd"), ("brats", "mckd_paper_exact"), ("avmnist", "mckd")):
        trajectories = [{"modalities": r["modalities"], "points": r["trajectory"]} for r in record["runs"]
                        if r["bundle"] == bundle and r["arm"] == arm]
        panels.append((f"{'BraTS' if bundle == 'brats' else 'AV-MNIST'} {ARM_LABELS[arm]}", trajectories))
    plot_trajectories(panels, paths["importance_trajectory.png"])
    write_json_atomic(paths["study.json"], {**record, "brats_summary": brats, "avmnist_summary": avmnist,
                                            "brats_summary_converged_runs": converged})
    write_text_atomic(paths["accuracy_study.md"], markdown_report(record, brats, avmnist, converged))
    return paths


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Command line: run the study and print the Markdown report."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.accuracy_study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", choices=tuple(BUDGETS), default="cpu", help="training budget (default cpu)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "accuracy_study",
                        help="folder for the tables and the plot")
    parser.add_argument("--work-dir", type=Path, help="data and run folders (weights); default a temporary folder")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds (default 0 1 2)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    parser.add_argument("--from-json", type=Path, help="only re-write the tables and the plot from a saved study.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text())
        record = {k: v for k, v in saved.items()
                  if k not in ("brats_summary", "avmnist_summary", "brats_summary_converged_runs")}
        write_outputs(record, args.out)
    else:
        work = args.work_dir or Path(tempfile.gettempdir()) / f"mckd_accuracy_study_{args.budget}"
        record = run_study(BUDGETS[args.budget], args.out, work, args.seeds, args.jobs, args.threads)
    print((args.out / "accuracy_study.md").read_text())
    return record


if __name__ == "__main__":
    main()
