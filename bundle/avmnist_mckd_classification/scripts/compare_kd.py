"""MCKD (kd_weight 0.1) next to the same network trained without distillation (kd_weight 0), over several seeds.

Both arms use the bundle's ``configs/train.json`` unchanged except ``kd_weight`` and ``seed``: same modality dropout,
same meta-update schedule, same data. Each run is then scored by ``configs/evaluate.json`` (accuracy with image only,
audio only and both). The summary (mean +- sample standard deviation over seeds) is written as CSV and Markdown.

Run from the bundle folder (single-threaded torch is much faster on a shared CPU)::

    OMP_NUM_THREADS=1 python scripts/compare_kd.py --dataset_dir data/avmnist_offline --work_dir eval/compare_kd

Several ``--dataset_dir`` (e.g. builds with different ``--audio-rate``) give one block per training availability.
"""

from __future__ import annotations

import argparse
import logging
import statistics
from pathlib import Path
from typing import Any, Sequence

from monai.bundle import ConfigWorkflow

from mckd import tables
from mckd.avmnist.data import read_dataset_info
from mckd.fileio import write_text_atomic

logger = logging.getLogger("compare_kd")

BUNDLE = Path(__file__).resolve().parents[1]
ARMS = (("MCKD", 0.1), ("no KD", 0.0))
SUMMARY_COLUMNS = ("training availability", "method", "kd_weight", "inputs", "mean_accuracy", "sd_accuracy", "seeds")


def availability_label(dataset_dir: str) -> str:
    """Human-readable training availability of a build, e.g. ``"audio 10 %"`` or ``"all pairs"``."""
    protocol = read_dataset_info(dataset_dir).get("protocol", {})
    rates = [f"{m} {protocol[f'{m}_rate']:g} %" for m in ("image", "audio") if protocol.get(f"{m}_rate") is not None]
    return ", ".join(rates) if rates else "all pairs"


def train_and_evaluate(dataset_dir: str, run_dir: Path, seed: int, kd_weight: float, overrides: dict) -> list[dict]:
    """Train one arm with ``configs/train.json`` and score it with ``configs/evaluate.json``; return the rows."""
    common = {
        "dataset_dir": dataset_dir,
        "bundle_root": str(run_dir),
        "seed": seed,
        "kd_weight": kd_weight,
        **overrides,
    }
    configs = BUNDLE / "configs"
    train = ConfigWorkflow(config_file=str(configs / "train.json"), workflow_type="train", **common)
    train.initialize()
    train.run()
    train.finalize()
    evaluate = ConfigWorkflow(
        config_file=[str(configs / "train.json"), str(configs / "evaluate.json")], workflow_type=None, **common
    )
    evaluate.initialize()
    rows = evaluate.run()[0]
    evaluate.finalize()
    return rows


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The accuracies over seeds per (availability, method, inputs), their mean and sample standard deviation."""
    groups: dict[tuple, list[float]] = {}
    for r in results:
        groups.setdefault((r["training availability"], r["method"], r["kd_weight"], r["inputs"]), []).append(
            r["accuracy"]
        )
    return [
        {
            "training availability": key[0],
            "method": key[1],
            "kd_weight": key[2],
            "inputs": key[3],
            "accuracies": values,
            "mean_accuracy": statistics.mean(values),
            "sd_accuracy": statistics.stdev(values) if len(values) > 1 else 0.0,
            "seeds": len(values),
        }
        for key, values in groups.items()
    ]


def markdown(summary: list[dict[str, Any]], seeds: Sequence[int]) -> str:
    """One table: rows = availability x method, columns = input sets, cells = mean ± sd accuracy (%)."""
    inputs = list(dict.fromkeys(r["inputs"] for r in summary))
    rows: dict[tuple, dict[str, str]] = {}
    for r in summary:
        rows.setdefault((r["training availability"], f"{r['method']} (λ={r['kd_weight']:g})"), {})[r["inputs"]] = (
            tables.mean_sd_cell(r["mean_accuracy"], r["sd_accuracy"], scale=100.0)
        )
    table = tables.markdown_table(
        ["training availability", "method", *inputs],
        [[availability, method, *(cells.get(i, "") for i in inputs)] for (availability, method), cells in rows.items()],
    )
    return f"Test accuracy (%), mean ± sd over seeds {', '.join(map(str, seeds))}:\n\n{table}"


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_dir", nargs="+", required=True, help="AV-MNIST build(s) from data_prep.avmnist")
    parser.add_argument("--work_dir", default="eval/compare_kd", help="runs and the summary go here")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, help="override train.json's epochs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    overrides = {} if args.epochs is None else {"epochs": args.epochs}
    work = Path(args.work_dir)
    results = []
    for dataset_dir in args.dataset_dir:
        availability = availability_label(dataset_dir)
        for seed in args.seeds:
            for method, kd_weight in ARMS:
                run_dir = work / f"{Path(dataset_dir).name}_kd{kd_weight:g}_seed{seed}"
                for row in train_and_evaluate(dataset_dir, run_dir, seed, kd_weight, overrides):
                    results.append(
                        {
                            "training availability": availability,
                            "method": method,
                            "kd_weight": kd_weight,
                            "seed": seed,
                            **row,
                        }
                    )
                logger.info("done: %s, %s, seed %d", availability, method, seed)
    summary = summarise(results)
    for name, rows, columns in (("runs", results, list(results[0])), ("summary", summary, SUMMARY_COLUMNS)):
        write_text_atomic(
            work / f"kd_comparison_{name}.csv", tables.csv_text(columns, [[r[c] for c in columns] for r in rows])
        )
    table = markdown(summary, args.seeds)
    write_text_atomic(work / "kd_comparison.md", table)
    logger.info("summary written to %s\n%s", work / "kd_comparison.md", table)
    return summary


if __name__ == "__main__":
    main()
