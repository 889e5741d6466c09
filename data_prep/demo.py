"""The demo: synthetic BraTS 2018 cases -> a few minutes of CPU training with the bundle -> all-subset evaluation.

It lives in ``data_prep`` because it drives the synthetic generator and the datalist preparation, which in turn use
``mckd``; the library itself never imports ``data_prep``.

Everything goes through the BraTS bundle (``bundle/brats_mri_mckd_segmentation``): the training is its
``configs/train.json`` with the CPU overlay ``configs/cpu_small.json``, the evaluation its ``configs/evaluate.json``,
both run in-process with MONAI's ``ConfigWorkflow`` exactly as ``python -m monai.bundle run`` would run them.

The demo scores the final model, as the published protocol does (no model selection): its evaluation cases are the
``validation`` list, and a checkpoint chosen on them (``model.pt``) would be scored on the cases that chose it.

Usage::

    python -m data_prep.demo [--out DIR] [--cases N] [--shape X Y Z] [--iterations N] [--seed S] [--bundle DIR]

Output under ``--out`` (default ``demo_output``): ``data/brats2018/`` (the cases), ``lists/datalist.json``,
``bundle_run/models/`` (checkpoints) and ``bundle_run/eval/`` (the report: CSV, Markdown, PNG heat map, JSON).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from monai.bundle import ConfigWorkflow

from data_prep.brats import PreparationError, prepare_datalist
from data_prep.synthetic_brats import write_dataset

__all__ = ["DEFAULT_BUNDLE", "DemoResult", "run_demo", "main"]

logger = logging.getLogger(__name__)

#: The BraTS bundle as seen from the repository root, where ``make demo`` runs; elsewhere pass ``--bundle``.
DEFAULT_BUNDLE = Path("bundle") / "brats_mri_mckd_segmentation"
#: A quarter of the cases held out for the evaluation: fold 0 of a 4-fold split, whose folds keep every stratum (grade,
#: enhancing tumour or not) in proportion. The ``ratio`` split picks round-robin over the strata, so with few cases the
#: rare stratum (cases without enhancing tumour) can end up entirely in validation and meta-validation.
_SPLIT = "kfold:4:0"


@dataclass
class DemoResult:
    """Where the demo wrote its outputs and how long each stage took (seconds).

    Attributes:
        out: the demo's output folder.
        report: written report files keyed ``csv``, ``summary_csv``, ``markdown``, ``heatmap``, ``json``.
        checkpoint: the checkpoint that was evaluated.
        timings: seconds per stage (``data``, ``training``, ``evaluation``).
    """

    out: Path
    report: dict[str, Path] = field(default_factory=dict)
    checkpoint: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _run_workflow(config_files: Sequence[Path], **override: Any) -> list[Any]:
    """Run one bundle workflow (initialize, run, finalize) in this process, as ``monai.bundle run`` does."""
    workflow = ConfigWorkflow(config_file=[str(p) for p in config_files], workflow_type=None, **override)
    workflow.initialize()
    try:
        return workflow.run()
    finally:
        workflow.finalize()


def _check_arguments(bundle: Path, shape: Sequence[int], iterations: int | None) -> Path:
    """The bundle's ``configs`` folder, once ``bundle``, ``shape`` and ``iterations`` are known to be usable."""
    configs = bundle / "configs"
    if not (configs / "train.json").is_file():
        raise FileNotFoundError(
            f"no bundle at '{bundle}' (configs/train.json is missing); run from the repository root or pass --bundle."
        )
    if len(shape) != 3 or any(s < 32 or s % 16 for s in shape):
        raise ValueError(f"shape must be 3 multiples of 16 of at least 32, got {list(shape)}.")
    if iterations is not None and iterations < 20:
        raise ValueError(f"iterations must be at least 20, got {iterations}.")
    return configs


def _write_data(out: Path, cases: int, shape: Sequence[int], seed: int) -> Path:
    """Synthetic BraTS 2018 cases under ``out/data`` and their datalist (returned) under ``out/lists``."""
    data = out / "data" / "brats2018"
    write_dataset(data, cases, "brats2018", shape, seed=seed)
    # the datalist gets a folder of its own: load_decathlon_datalist turns values naming sibling paths into paths
    datalist = out / "lists" / "datalist.json"
    try:
        prepare_datalist(data, datalist, split=_SPLIT, seed=seed)
    except PreparationError as err:
        raise ValueError(f"cannot split {cases} cases for the demo: {err}") from err
    return datalist


def run_demo(
    out: str | Path = "demo_output",
    cases: int = 32,
    shape: Sequence[int] = (48, 48, 48),
    iterations: int | None = None,
    seed: int = 0,
    bundle: str | Path = DEFAULT_BUNDLE,
) -> DemoResult:
    """Generate data, train the CPU configuration (``cpu_small.json``) and evaluate its final model on all 15 subsets.

    Args:
        out: output folder (created; files of an earlier demo run are replaced).
        cases: number of synthetic cases (25% held out for the evaluation, 5 meta-validation, the rest training).
            Default 32.
        shape: voxel shape (x, y, z) of the cases; multiples of 16 (the light backbone's stride). Default 48^3.
        iterations: training iterations, the first half with all modalities, the second with random subsets.
            Default ``None``: the schedule of ``cpu_small.json``.
        seed: seed of the data, the split and the training.
        bundle: the bundle folder.

    Raises:
        FileNotFoundError: when ``bundle`` has no ``configs/train.json``.
        ValueError: for a bad ``shape``, too few ``cases`` or ``iterations`` below 20.
    """
    out, configs = Path(out), _check_arguments(Path(bundle), shape, iterations)
    result = DemoResult(out=out)

    start = time.perf_counter()
    datalist = _write_data(out, cases, shape, seed)
    result.timings["data"] = time.perf_counter() - start

    run_root = out / "bundle_run"
    common = {
        "bundle_root": str(run_root),
        "data_list_file_path": str(datalist),
        "seed": seed,
    }
    schedule = {} if iterations is None else {"num_iterations": iterations, "warmup_iterations": iterations // 2}
    start = time.perf_counter()
    _run_workflow([configs / "train.json", configs / "cpu_small.json"], **schedule, **common)
    result.timings["training"] = time.perf_counter() - start

    result.checkpoint = run_root / "models" / "model_final.pt"
    start = time.perf_counter()
    (report,) = _run_workflow(
        [configs / "train.json", configs / "cpu_small.json", configs / "evaluate.json"],
        ckpt_path=str(result.checkpoint),
        **common,
    )
    result.timings["evaluation"] = time.perf_counter() - start
    result.report = {k: Path(v) for k, v in report.items()}
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.demo",
        description="Synthetic BraTS cases -> CPU training with the MCKD bundle -> evaluation under all 15 subsets.",
    )
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default demo_output)")
    parser.add_argument("--cases", type=int, default=32, help="number of synthetic cases (default 32)")
    parser.add_argument(
        "--shape", type=int, nargs=3, default=(48, 48, 48), metavar=("X", "Y", "Z"), help="case size (default 48^3)"
    )
    parser.add_argument("--iterations", type=int, default=None, help="training iterations (default: cpu_small.json's)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE, help=f"bundle folder (default {DEFAULT_BUNDLE})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; return 0 on success, 2 on a usage error."""
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    try:
        result = run_demo(args.out, args.cases, args.shape, args.iterations, args.seed, args.bundle)
    except (ValueError, FileNotFoundError, PermissionError) as err:
        logger.error("error: %s", err)
        return 2
    report = result.report["markdown"].read_text(encoding="utf-8")
    table = report.split("## Conventions")[0].strip()
    timings = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in result.timings.items())
    print(
        f"\n{table}\n\n"
        f"Evaluated checkpoint: {result.checkpoint}\n"
        f"Heat map (PNG):       {result.report['heatmap']}\n"
        f"Per-case CSV:         {result.report['csv']}\n"
        f"Summary CSV:          {result.report['summary_csv']}\n"
        f"Report (Markdown):    {result.report['markdown']}\n"
        f"Time: {timings}; total {time.perf_counter() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
