"""GPU check of the published configuration: a short AMP training run with a meta round, and one sliding window.

``python -m benchmarks.gpu_check [--iterations 40] [--datalist D --dataset-dir R] [--out report.json]``

On a CUDA machine this trains the BraTS bundle's ``train.json`` as it ships (``resnet50_aspp``, 80 x 160 x 160
crops, batch 2, AMP, SGD, KD 0.1, meta-update of the importance with its 20 Adam steps) for ``--iterations``
iterations: the first half with all modalities, the second half with random subsets, a meta round at iteration 1 and
one at the start of the second half. Without ``--datalist`` it first writes ``--cases`` synthetic BraTS-size cases
(``data_prep.synthetic_brats``, 240 x 240 x 155) and a datalist with the paper's split. Then it runs the inference
config's sliding-window inferer (80 x 160 x 160 windows, overlap 0.5, gaussian, float16) once on a 4 x 155 x 240 x 240
volume with all four modalities and once with one. It reports, as JSON on stdout (and in ``--out``):

- seconds per iteration (median, per phase, after ``--skip`` iterations; the meta rounds apart),
- seconds per meta round,
- the data-loader wait: time blocked on the next batch over the whole iteration time,
- peak GPU memory (allocated and reserved by PyTorch's caching allocator) of training and of inference,
- whether every loss (total, task, KD) stayed finite, with the first and last total loss.

Every timing synchronises the device first. Without CUDA the check stops after its arguments (status 2), so on a CPU
machine only its argument handling is exercised (``--dry-run`` prints the configuration overrides it would use).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch

BUNDLE = Path(__file__).resolve().parents[1] / "bundle" / "brats_mri_mckd_segmentation"
EXIT_NO_GPU = 2
LOSS_KEYS = ("loss", "task_loss", "kd_loss")

__all__ = ["parse_args", "overrides", "Timeline", "main"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=40, help="training iterations (default 40, at least 10)")
    parser.add_argument("--skip", type=int, default=3, help="first iterations of each phase left out of the median")
    parser.add_argument("--datalist", type=Path, default=None, help="a datalist of data_prep.brats (else synthetic)")
    parser.add_argument("--dataset-dir", type=Path, default=None, help="root the datalist's paths are relative to")
    parser.add_argument("--cases", type=int, default=8, help="synthetic cases when no --datalist (default 8)")
    parser.add_argument("--workers", type=int, default=None, help="data-loader workers (default: train.json's)")
    parser.add_argument("--bundle", type=Path, default=BUNDLE, help="bundle folder (default: the repository's)")
    parser.add_argument("--work-dir", type=Path, default=None, help="data and run folder (default: a temporary one)")
    parser.add_argument("--device", default="cuda:0", help="CUDA device (default cuda:0)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    parser.add_argument("--dry-run", action="store_true", help="print the configuration overrides and stop")
    args = parser.parse_args(argv)
    if args.iterations < 10:
        parser.error(f"--iterations must be at least 10 (two phases with a meta round each), got {args.iterations}")
    if not 0 <= args.skip < args.iterations // 2 - 1:
        parser.error(f"--skip must be between 0 and {args.iterations // 2 - 2} for {args.iterations} iterations")
    if args.cases < 6:
        parser.error(f"--cases must be at least 6 (5 meta-validation cases + training), got {args.cases}")
    if args.workers is not None and args.workers < 0:
        parser.error(f"--workers must be >= 0, got {args.workers}")
    if (args.datalist is None) != (args.dataset_dir is None):
        parser.error("--datalist and --dataset-dir go together")
    if args.datalist is not None and not args.datalist.is_file():
        parser.error(f"--datalist {args.datalist} is not a file")
    if not (args.bundle / "configs" / "train.json").is_file():
        parser.error(f"--bundle {args.bundle} has no configs/train.json")
    if not args.device.startswith("cuda"):
        parser.error(f"--device must be a CUDA device (cuda or cuda:N), got {args.device!r}")
    return args


def overrides(args: argparse.Namespace, run_root: Path, datalist: Path, dataset_dir: Path) -> dict[str, Any]:
    """What the check changes in ``train.json``: length, phases, meta interval, folders; nothing of the model."""
    half = args.iterations // 2
    values: dict[str, Any] = {
        "bundle_root": str(run_root),
        "data_list_file_path": str(datalist),
        "dataset_dir": str(dataset_dir),
        "device": f"$torch.device('{args.device}')",
        "num_iterations": args.iterations,
        "epoch_length": args.iterations,
        "warmup_iterations": half,
        "meta_interval": half,
        "val_interval": 10**6,
    }
    if args.workers is not None:
        values["num_workers"] = args.workers
    return values


class Timeline:
    """Per-iteration timestamps of a trainer (device-synchronised) and its losses.

    Ignite fires ``GET_BATCH_STARTED``, ``GET_BATCH_COMPLETED``, ``ITERATION_STARTED`` (the meta handler, attached
    earlier, runs first), the step, ``ITERATION_COMPLETED``: so the loader wait, the meta round and the step are the
    three intervals between them.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.rows: list[dict[str, float]] = []
        self.losses: list[dict[str, float]] = []
        self._stamp: dict[str, float] = {}

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        for event in ("GET_BATCH_STARTED", "GET_BATCH_COMPLETED", "ITERATION_STARTED"):
            engine.add_event_handler(getattr(Events, event), lambda _, e=event: self._stamp.__setitem__(e, self._now()))
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._completed)

    def _completed(self, engine: Any) -> None:
        end, s = self._now(), self._stamp
        self.rows.append(
            {
                "wait": s["GET_BATCH_COMPLETED"] - s["GET_BATCH_STARTED"],
                "meta": s["ITERATION_STARTED"] - s["GET_BATCH_COMPLETED"],
                "step": end - s["ITERATION_STARTED"],
                "total": end - s["GET_BATCH_STARTED"],
            }
        )
        output = engine.state.output
        output = output[0] if isinstance(output, list) else output  # decollated: every item holds the batch's losses
        losses = {k: float(output[k]) for k in LOSS_KEYS if k in output}
        if len(losses) != len(LOSS_KEYS):
            raise KeyError(f"the trainer's output lacks the losses {LOSS_KEYS}; it has {sorted(output)}.")
        self.losses.append(losses)

    def summary(self, warmup: int, skip: int) -> dict[str, Any]:
        """Medians per phase (iterations ``skip`` onwards of each), meta rounds, loader wait, losses.

        ``warmup`` is the length of the all-modalities phase and the meta interval: rounds run before iterations 1
        and ``warmup + 1``.
        """
        phases = {"all modalities": self.rows[:warmup], "random subsets": self.rows[warmup:]}
        step = {name: statistics.median(r["step"] for r in rows[skip:]) for name, rows in phases.items()}
        meta = [self.rows[i]["meta"] for i in range(0, len(self.rows), warmup)]
        timed = self.rows[1:]  # the first batch waits for the workers to start
        finite = all(math.isfinite(v) for loss in self.losses for v in loss.values())
        return {
            "seconds_per_iteration": step,
            "seconds_per_meta_round": meta,
            "loader_wait_fraction": sum(r["wait"] for r in timed) / sum(r["total"] for r in timed),
            "first_iteration_loader_wait_s": self.rows[0]["wait"],
            "losses_finite": finite,
            "loss_first_last": [self.losses[0].get("loss"), self.losses[-1].get("loss")],
        }


def _synthetic_datalist(work: Path, cases: int) -> tuple[Path, Path]:
    from data_prep.brats import prepare_datalist
    from data_prep.synthetic_brats import write_dataset

    root = work / "data" / "brats2018"
    write_dataset(root, cases, "brats2018", (240, 240, 155), seed=0)
    datalist = work / "lists" / "datalist.json"  # a folder of its own (see docs/gpu_reproduction.md)
    prepare_datalist(root, datalist, split="paper", seed=0)
    return datalist, root


def _train(args: argparse.Namespace, values: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from monai.bundle import ConfigWorkflow

    configs = args.bundle / "configs"
    workflow = ConfigWorkflow(config_file=str(configs / "train.json"), workflow_type=None, **values)
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    device = torch.device(args.device)
    timeline = Timeline(device)
    timeline.attach(trainer)
    torch.cuda.reset_peak_memory_stats(device)
    workflow.run()
    memory = _peak_memory(device)
    workflow.finalize()
    summary = timeline.summary(args.iterations // 2, args.skip)
    return workflow.parser.get_parsed_content("network"), dict(summary, peak_memory_gib=memory)


def _peak_memory(device: torch.device) -> dict[str, float]:
    return {
        "allocated": torch.cuda.max_memory_allocated(device) / 2**30,
        "reserved": torch.cuda.max_memory_reserved(device) / 2**30,
    }


def _sliding_window(args: argparse.Namespace, network: torch.nn.Module) -> dict[str, Any]:
    from monai.bundle import ConfigParser

    from mckd.availability import pack_available

    parser = ConfigParser()
    parser.read_config(str(args.bundle / "configs" / "inference.json"))
    inferer = parser.get_parsed_content("inferer")
    device = torch.device(args.device)
    image = torch.randn(1, 4, 155, 240, 240, device=device)
    network.eval()
    torch.cuda.reset_peak_memory_stats(device)
    seconds = {}
    for name, row in (("4 of 4", [True] * 4), ("1 of 4", [False, False, True, False])):
        x = pack_available(image, torch.tensor([row], device=device))
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
            torch.cuda.synchronize(device)
            start = time.perf_counter()
            pred = inferer(x, network)
            torch.cuda.synchronize(device)
        seconds[name] = time.perf_counter() - start
        if not bool(torch.isfinite(pred).all()):
            raise FloatingPointError(f"sliding-window output with {name} modalities is not finite")
    return {"seconds": seconds, "volume": [4, 155, 240, 240], "peak_memory_gib": _peak_memory(device)}


def run_check(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Data (given or synthetic), the training run and the sliding window; the report."""
    if args.datalist is None:
        datalist, dataset_dir = _synthetic_datalist(work, args.cases)
    else:
        datalist, dataset_dir = args.datalist, args.dataset_dir
    values = overrides(args, work / "run", datalist, dataset_dir)
    network, training = _train(args, values)
    return {
        "device": torch.cuda.get_device_name(torch.device(args.device)),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "iterations": args.iterations,
        "overrides": values,
        "training": training,
        "sliding_window": _sliding_window(args, network),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """0: the check ran and every loss stayed finite; 1: a loss or output did not; 2: no CUDA device or bad usage."""
    args = parse_args(argv)
    if args.dry_run:
        synthetic = Path("<synthetic>")
        values = overrides(args, Path("<work>/run"), args.datalist or synthetic, args.dataset_dir or synthetic)
        print(json.dumps(values, indent=1))
        return 0
    if not torch.cuda.is_available():
        print("gpu_check needs a CUDA device; torch.cuda.is_available() is False here.", file=sys.stderr)
        return EXIT_NO_GPU
    with tempfile.TemporaryDirectory() as tmp:
        try:
            report = run_check(args, args.work_dir or Path(tmp))
        except FloatingPointError as err:  # MCKDTrainer stops a diverged run; say so instead of a traceback
            print(f"losses not finite: {err}", file=sys.stderr)
            return 1
    text = json.dumps(report, indent=1)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0 if report["training"]["losses_finite"] else 1


if __name__ == "__main__":
    sys.exit(main())
