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
``bundle_run/`` (a copy of the bundle that is trained: ``configs/``, ``models/`` with the deployable ``model.pt``,
``eval/`` with the report: CSV, Markdown, PNG heat map, JSON, and TensorBoard's events) and ``studies/`` (a 4D case
for MONAI Label). It ends with the commands that use the trained bundle next (:func:`next_steps`).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from monai.bundle import ConfigWorkflow

from data_prep.brats import PreparationError, prepare_datalist
from data_prep.synthetic_brats import write_dataset
from mckd.fileio import enclosing_folder

__all__ = ["DEFAULT_BUNDLE", "MONAILABEL_VENV", "DemoResult", "run_demo", "next_steps", "main"]

logger = logging.getLogger(__name__)

#: The BraTS bundle as seen from the repository root, where ``make demo`` runs; elsewhere pass ``--bundle``.
DEFAULT_BUNDLE = Path("bundle") / "brats_mri_mckd_segmentation"
#: A quarter of the cases held out for the evaluation: fold 0 of a 4-fold split, whose folds keep every stratum (grade,
#: enhancing tumour or not) in proportion. The ``ratio`` split picks round-robin over the strata, so with few cases the
#: rare stratum (cases without enhancing tumour) can end up entirely in validation and meta-validation.
_SPLIT = "kfold:4:0"
#: Where docs/monailabel.md installs MONAI Label (its own environment, never the project's).
MONAILABEL_VENV = "~/.cache/mckd-monailabel-venv"
#: What the trained copy of the bundle leaves out of the source bundle (outputs of earlier runs).
_NOT_COPIED = shutil.ignore_patterns("models", "eval", "runs", "logs", "__pycache__")


@dataclass
class DemoResult:
    """Where the demo wrote its outputs and how long each stage took (seconds).

    Attributes:
        out: the demo's output folder.
        report: written report files keyed ``csv``, ``summary_csv``, ``markdown``, ``heatmap``, ``json``.
        checkpoint: the checkpoint that was evaluated.
        bundle_run: the trained copy of the bundle (``configs/``, ``models/``, ``eval/``).
        example_case: a case folder of the demo's data, for the next steps' inference command.
        studies: the MONAI Label studies folder (one MSD-style 4D case).
        timings: seconds per stage (``data``, ``training``, ``evaluation``).
    """

    out: Path
    report: dict[str, Path] = field(default_factory=dict)
    checkpoint: Path | None = None
    bundle_run: Path | None = None
    example_case: Path | None = None
    studies: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _run_workflow(config_files: Sequence[Path], **override: Any) -> list[Any]:
    """Run one bundle workflow (initialize, run, finalize) in this process, as ``monai.bundle run`` does."""
    workflow = ConfigWorkflow(config_file=[str(p) for p in config_files], workflow_type=None, **override)
    workflow.initialize()
    try:
        return workflow.run()
    finally:
        workflow.finalize()


def _check_arguments(out: Path, bundle: Path, shape: Sequence[int], iterations: int | None) -> None:
    """Refuse an ``out`` inside the ``bundle`` (the demo copies the bundle into it), a ``bundle`` without
    ``configs/train.json``, a ``shape`` or ``iterations`` the demo cannot use."""
    if enclosing_folder(out, [bundle]) is not None:
        raise ValueError(f"--out '{out}' is, or lies inside, the bundle '{bundle}'; choose a folder outside it.")
    if not (bundle / "configs" / "train.json").is_file():
        raise FileNotFoundError(
            f"no bundle at '{bundle}' (configs/train.json is missing); run from the repository root or pass --bundle."
        )
    if len(shape) != 3 or any(s < 32 or s % 16 for s in shape):
        raise ValueError(f"shape must be 3 multiples of 16 of at least 32, got {list(shape)}.")
    if iterations is not None and iterations < 20:
        raise ValueError(f"iterations must be at least 20, got {iterations}.")


def _write_data(out: Path, cases: int, shape: Sequence[int], seed: int) -> tuple[Path, Path]:
    """Synthetic BraTS 2018 cases under ``out/data`` and their datalist under ``out/lists``; (datalist, a case)."""
    data = out / "data" / "brats2018"
    written = write_dataset(data, cases, "brats2018", shape, seed=seed)
    # the datalist gets a folder of its own: load_decathlon_datalist turns values naming sibling paths into paths
    datalist = out / "lists" / "datalist.json"
    try:
        prepare_datalist(data, datalist, split=_SPLIT, seed=seed)
    except PreparationError as err:
        raise ValueError(f"cannot split {cases} cases for the demo: {err}") from err
    return datalist, Path(written[0].images["flair"]).parent


def _write_studies(out: Path, shape: Sequence[int], seed: int) -> Path:
    """One MSD-style 4D case in ``out/studies``: the one-file-per-case form MONAI Label stores."""
    written = write_dataset(out / "msd", 1, "msd", shape, seed=seed + 1)
    studies = out / "studies"
    shutil.rmtree(studies, ignore_errors=True)
    shutil.copytree(Path(written[0].images["flair"]).parent, studies)
    return studies


def _copy_bundle(bundle: Path, target: Path) -> Path:
    """A fresh copy of ``bundle`` (configs, docs, licence) at ``target``, to be trained: a bundle MONAI Label serves."""
    if (target / "configs").is_dir():
        shutil.rmtree(target / "configs")
    shutil.copytree(bundle, target, ignore=_NOT_COPIED, dirs_exist_ok=True)
    return target


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
    out = Path(out)
    _check_arguments(out, Path(bundle), shape, iterations)
    result = DemoResult(out=out)

    start = time.perf_counter()
    datalist, result.example_case = _write_data(out, cases, shape, seed)
    result.studies = _write_studies(out, shape, seed)
    result.timings["data"] = time.perf_counter() - start

    run_root = result.bundle_run = _copy_bundle(Path(bundle), out / "bundle_run")
    configs = run_root / "configs"
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


def _shown(path: Path) -> str:
    """``path`` as typed in the current folder: relative where it lies below it, else absolute (links kept)."""
    absolute = Path(os.path.abspath(path.expanduser()))
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def _path(path: Path) -> str:
    """:func:`_shown`, quoted for the shell."""
    return shlex.quote(_shown(path))


def next_steps(result: DemoResult, bundle: str | Path = DEFAULT_BUNDLE) -> dict[str, str]:
    """Shell commands, typed in the current folder, that use the demo's trained bundle: ``infer`` (segment a case
    folder, here one of the demo's), ``tensorboard`` (the run's curves, importance and validation slices) and
    ``monailabel`` (serve the model with the repository's MONAI Label app, installed as docs/monailabel.md says).
    """
    python = _path(Path(sys.executable))
    configs = result.bundle_run / "configs"
    config_list = ",".join(f"'{_shown(configs / name)}'" for name in ("inference.json", "cpu_small.json"))
    app = Path(bundle).absolute().parent / "monailabel_app"
    return {
        "infer": (
            f"{python} -m monai.bundle run --config_file \"[{config_list}]\" "
            f"--bundle_root {_path(result.bundle_run)} --dataset_dir {_path(result.example_case)} "
            f"--output_dir {_path(result.out / 'predictions')}"
        ),
        "tensorboard": f"{python} -m tensorboard.main --logdir {_path(result.bundle_run / 'eval')} --host 127.0.0.1 "
        "--port 6006",
        "monailabel": (
            f"{MONAILABEL_VENV}/bin/python -m monailabel.main start_server --app {_path(app)} "
            f"--studies {_path(result.studies)} "
            f"--conf bundle {_path(result.bundle_run)} --conf bundle_configs inference.json,cpu_small.json "
            "--host 127.0.0.1 --port 8000"
        ),
    }


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
    steps = next_steps(result, args.bundle)
    print(
        "\nNext steps (type them in this folder):\n"
        "  Segment a case of your own: a folder of BraTS-named NIfTI files, any subset of the four modalities, or one\n"
        "  DICOM series folder per modality (here one of the demo's cases), with the deployable models/model.pt (the\n"
        "  best-validation network):\n"
        f"    {steps['infer']}\n"
        "  Open TensorBoard on the run (losses, importance weights, validation Dice and slices), then\n"
        "  http://127.0.0.1:6006:\n"
        f"    {steps['tensorboard']}\n"
        "  Serve the model in MONAI Label (installed in its own environment as docs/monailabel.md says):\n"
        f"    {steps['monailabel']}"
    )
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
