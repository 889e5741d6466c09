"""Run the benchmark suite and write ``benchmarks/RESULTS.md``.

``python -m benchmarks [--quick] [--threads 2] [--out benchmarks/RESULTS.md] [--only SECTION ...] [--allow-busy]``

Full run: about 20 minutes on 2 quiet CPU cores; ``--quick``: a few minutes (fewer rounds, smaller volumes), for
checking that everything runs. Every figure is a median of repeated runs; the variants of one ratio are interleaved in
one process. The load is sampled throughout (:mod:`benchmarks.load`): the run is refused when other processes
already keep the machine busy before it starts (``--allow-busy`` overrides), and every section measured while they
did is flagged in the report, which then exits with status 3.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from benchmarks import data, inference, training
from benchmarks.common import load_average, machine_info, run_worker
from benchmarks.load import LoadMonitor
from mckd.tables import markdown_table, number

TARGET_1_OF_4, TARGET_2_OF_4 = 0.35, 0.6
EXIT_REFUSED, EXIT_BUSY = 2, 3

#: The authors' code (billhhh/MCKD b0466a50) measured side by side with ours on one quiet 2-core machine, medians of
#: alternated processes, no data loading; from the text of issue 16 ("Performance: a data pipeline that keeps up ...").
#: Ours were measured before the weight-standardisation cache; they are not re-measured by this runner.
OFFICIAL_ANCHORS = [
    ["resnet50_aspp training step, 32x64x64, batch 2, all modalities", "3.12", "2.93 (0.94x)"],
    ["resnet50_aspp training step, 32x64x64, batch 2, random subsets", "3.2-3.4", "1.5-1.7 (about 0.5x)"],
    ["sliding window 4x64x128x128, tiles 32x64x64, overlap 1/3 (27 tiles): 4 of 4", "16.1", "17.0"],
    ["the same, 2 of 4", "16.1", "10.7"],
    ["the same, 1 of 4", "16.1", "8.4"],
]
RESNET_SW = {"crop": [32, 64, 64], "volume": [64, 128, 128], "roi": [32, 64, 64], "overlap": 1 / 3}


def _settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "rounds": 2,
            "resnet_crop": [32, 64, 64],
            "fwd_crop": [64, 64, 64],
            "volume": [64, 96, 96],
            "roi": [48, 48, 48],
            "resnet_volume": [32, 128, 128],
            "data_cases": 4,
            "data_shape": [120, 120, 80],
            "data_epochs": 2,
            "trainer_iterations": 3,
            "checkpoint_crop": [32, 64, 64],
            "compile": False,
        }
    return {
        "rounds": 5,
        "resnet_crop": [32, 64, 64],
        "fwd_crop": [96, 96, 96],
        "volume": [155, 240, 240],
        "roi": [80, 160, 160],
        "resnet_volume": RESNET_SW["volume"],
        "data_cases": 8,
        "data_shape": [240, 240, 155],
        "data_epochs": 3,
        "trainer_iterations": 6,
        "checkpoint_crop": [48, 96, 96],
        "compile": True,
    }


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return markdown_table(header, rows).splitlines()


def fmt(value: float, digits: int = 3) -> str:
    """A number for a table with ``digits`` decimals (three by default, the benchmarks' seconds)."""
    return number(value, digits=digits)


def _verdict(value: float, target: float, lower_is_better: bool = True) -> str:
    met = value <= target if lower_is_better else value >= target
    return "met" if met else "missed"


def _size(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def training_section(s: dict[str, Any], threads: int) -> list[str]:
    """Conv peak and training steps (time, FLOPs, peak RSS) of both backbones and MONAI's SegResNet."""
    peak = training.conv_peak(s["rounds"])
    peak_gflops = max(peak.values())
    lines = ["## Measured conv peak (float32, forward)", ""]
    lines += _table(["convolution", "GFLOP/s"], [[k, fmt(v, 1)] for k, v in peak.items()]) + [""]
    light = {"net": "light", "crop": [48, 48, 48], "batch": 2}
    resnet = {"net": "resnet50_aspp", "crop": s["resnet_crop"], "batch": 2}
    variants: dict[str, dict[str, Any]] = {}
    for label, base in (("light (cpu_small)", light), ("resnet50_aspp", resnet)):
        crop = _size(base["crop"])
        variants[f"{label} {crop}, 4 modalities"] = dict(base, mode="all")
        variants[f"{label} {crop}, random subsets"] = dict(base, mode="random")
        variants[f"{label} {crop}, paper_exact, random subsets"] = dict(base, mode="random", paper_exact=True)
        for filters in (8, 16):
            variants[f"SegResNet init_filters={filters} {crop} (reference)"] = dict(base, net=f"segresnet{filters}")
    rows = training.train_step_table(variants, s["rounds"], threads)
    lines += ["## Training step (batch 2, SGD, Dice+BCE)", ""]
    header = ["variant", "step [s]", "GFLOP/step", "GFLOP/s", "of conv peak", "peak RSS [MiB]", "RSS before step [MiB]"]
    lines += _table(
        header,
        [
            [r["variant"], fmt(r["step_s"]), fmt(r["gflop_per_step"], 2), fmt(r["gflops"], 1)]
            + [f"{r['gflops'] / peak_gflops:.0%}", fmt(r["peak_rss_mib"], 0), fmt(r["before_step_rss_mib"], 0)]
            for r in rows
        ],
    )
    light_full = next(r for r in rows if r["variant"].startswith("light") and r["variant"].endswith("4 modalities"))
    fraction = light_full["gflops"] / peak_gflops
    return lines + [
        "",
        f"Training step of the CPU configuration at {fraction:.0%} of the measured conv peak (target >= 50 %: "
        f"{_verdict(fraction, 0.5, lower_is_better=False)}). See docs/performance.md for what bounds it.",
        "",
    ]


def trainer_section(s: dict[str, Any], threads: int) -> list[str]:
    """``MCKDTrainer`` iteration against bare loops with the same network and losses."""
    light = {"net": "light", "crop": [48, 48, 48], "batch": 2}
    overhead = training.trainer_overhead(light, s["trainer_iterations"], s["rounds"])
    extra = overhead["trainer_iteration_s"] / overhead["bare_kd_iteration_s"] - 1
    lines = ["## MCKDTrainer iteration vs bare loops (CPU configuration, random subsets)", ""]
    lines += _table(
        ["loop", "iteration [s]"],
        [
            ["MCKDTrainer (KD on, no handlers, in-memory batches)", fmt(overhead["trainer_iteration_s"])],
            ["bare forward/backward/step, task loss + KD", fmt(overhead["bare_kd_iteration_s"])],
            ["bare forward/backward/step, task loss only", fmt(overhead["bare_iteration_s"])],
        ],
    )
    return lines + [
        "",
        f"Trainer over bare loop with the same losses: {extra:+.1%} (target <= +5 %: {_verdict(extra, 0.05)}); "
        f"the KD term itself costs {overhead['bare_kd_iteration_s'] / overhead['bare_iteration_s'] - 1:+.1%}.",
        "",
    ]


def _ratio_rows(table: dict[str, dict[int, float]], crop: list[int], volume: list[int]) -> list[list[str]]:
    rows = []
    for kind, per_k in table.items():
        size = _size(crop if kind.startswith("forward") else volume)
        rows.append([f"{kind} {size}", fmt(per_k[4])] + [fmt(per_k[k] / per_k[4]) for k in (1, 2, 3)])
    return rows


def inference_section(s: dict[str, Any], threads: int) -> list[str]:
    """Forward and sliding-window time per number of available modalities, with the targets of issue 16."""
    lines = ["## Inference time per number of available modalities (ratio to 4)", ""]
    header = ["pass", "time with 4 [s]", "1 of 4", "2 of 4", "3 of 4"]
    light = inference.modality_ratios("light", s["fwd_crop"], s["volume"], s["roi"], 0.25, s["rounds"])
    lines += [f"### light (sliding window: roi {_size(s['roi'])}, overlap 0.25, gaussian)", ""]
    lines += _table(header, _ratio_rows(light, s["fwd_crop"], s["volume"])) + [""]
    crop, roi, volume = RESNET_SW["crop"], RESNET_SW["roi"], s["resnet_volume"]
    resnet = inference.modality_ratios("resnet50_aspp", crop, volume, roi, RESNET_SW["overlap"], s["rounds"])
    lines += [f"### resnet50_aspp (sliding window: roi {_size(roi)}, overlap 1/3, gaussian)", ""]
    lines += _table(header, _ratio_rows(resnet, crop, volume)) + [""]
    sw = resnet["sliding_window"]
    r1, r2 = sw[1] / sw[4], sw[2] / sw[4]
    lines += [
        f"- sliding window, 1 of 4 = {r1:.2f}x of 4 of 4 (target <= {TARGET_1_OF_4}: {_verdict(r1, TARGET_1_OF_4)}), "
        f"2 of 4 = {r2:.2f}x (target <= {TARGET_2_OF_4}: {_verdict(r2, TARGET_2_OF_4)})",
    ]
    if volume == RESNET_SW["volume"]:
        lines.append(
            f"- 4 of 4: {sw[4]:.1f} s here; the anchor's 16.1 s (official) and 17.0 s (ours then) come from another "
            "run, and seconds of different runs are not comparable: docs/performance.md compares like with like"
        )
    return lines + [""]


def options_section(s: dict[str, Any], threads: int) -> list[str]:
    """Sliding-window inference options of the light network and their effect on the output."""
    seconds, errors = inference.option_ratios("light", s["volume"], s["roi"], s["rounds"], s["compile"])
    default = next(iter(seconds.values()))
    lines = ["## Inference options (light, sliding window, all 4 modalities)", ""]
    lines += _table(
        ["option", "time [s]", "ratio to default", "max |prob. difference|"],
        [[k, fmt(v), fmt(v / default), f"{errors[k]:.1e}"] for k, v in seconds.items()],
    )
    return lines + [""]


def checkpointing_section(s: dict[str, Any], threads: int) -> list[str]:
    """Peak memory and step time of ``resnet50_aspp`` with and without activation checkpointing (fresh processes)."""
    ck = {"net": "resnet50_aspp", "crop": s["checkpoint_crop"], "batch": 1, "mode": "all"}
    plain = run_worker("benchmarks.training", ck, threads)
    chk = run_worker("benchmarks.training", dict(ck, activation_checkpointing=True), threads)

    def step(r: dict[str, Any]) -> float:
        return r["peak_rss_mib"] - r["before_step_rss_mib"]

    cut = 1 - step(chk) / max(step(plain), 1e-9)
    cut_total = 1 - chk["peak_rss_mib"] / plain["peak_rss_mib"]
    lines = [f"## Activation checkpointing (resnet50_aspp, batch 1, {_size(s['checkpoint_crop'])})", ""]
    lines += _table(
        ["encoder", "peak RSS [MiB]", "of which training step [MiB]", "step [s]"],
        [
            [name, fmt(r["peak_rss_mib"], 0), fmt(step(r), 0), fmt(r["last_step_s"])]
            for name, r in (("plain", plain), ("activation_checkpointing", chk))
        ],
    )
    return lines + [
        "",
        f"Peak memory of the step cut by {cut:.0%} (whole process: {cut_total:.0%}; target >= 40 %: "
        f"{_verdict(cut_total, 0.4, lower_is_better=False)}); "
        f"step time x{chk['last_step_s'] / plain['last_step_s']:.2f}.",
        "",
    ]


def data_section(s: dict[str, Any], threads: int) -> list[str]:
    """Cases/s and data-wait fraction of the bundle's training chain with MONAI's caching variants."""
    rows = data.pipeline_table(s["data_cases"], s["data_shape"], s["data_epochs"])
    lines = [
        f"## Data pipeline ({s['data_cases']} synthetic cases of {_size(s['data_shape'])}, "
        "bundle chain of train.json + cpu_small.json)",
        "",
    ]
    header = ["dataset", "loader", "build [s]", "cases/s (after epoch 1)", "waiting for data", "iteration [s]"]
    lines += _table(
        header,
        [
            [r["dataset"], r["loader"], fmt(r["build_s"], 2), fmt(r["cases_per_s"], 2)]
            + [f"{r['wait_fraction']:.1%}", fmt(r["iteration_s"], 2)]
            for r in rows
        ],
    )
    return lines + [""] + _gpu_loader_lines(data.gpu_loader_rates(s["data_cases"], s["data_shape"], s["data_epochs"]))


def _gpu_loader_lines(r: dict[str, Any]) -> list[str]:
    """The published configuration's loader: what one worker delivers and the shortest step its workers can feed."""
    per_batch = r["batch"] * r["configured_s"]
    lines = [
        f"### Loader of the published configuration (train.json alone: {_size(r['crop'])} crops, batch {r['batch']}, "
        f"{r['workers']} workers, cache_rate {r['cache_rate']:g})",
        "",
    ]
    lines += _table(
        ["per worker", "s/case", "cases/s"],
        [
            [label, fmt(seconds, 2), fmt(1.0 / seconds, 2)]
            for label, seconds in (
                ("whole chain (uncached case)", r["uncached_s"]),
                ("random part (cached case)", r["cached_s"]),
                (f"average at cache_rate {r['cache_rate']:g}", r["configured_s"]),
            )
        ],
    )
    lines += [
        "",
        f"A batch takes one worker {per_batch:.2f} s on average; {r['workers']} workers keep up with any training step "
        f"of {per_batch / r['workers']:.2f} s or longer. The GPU step it has to feed is measured by "
        "`python -m benchmarks.gpu_check` (not run here: no GPU).",
        "",
    ]
    return lines


SECTIONS: dict[str, Callable[[dict[str, Any], int], list[str]]] = {
    "training": training_section,
    "trainer": trainer_section,
    "inference": inference_section,
    "options": options_section,
    "checkpointing": checkpointing_section,
    "data": data_section,
}


def header_lines(command: str, threads: int, rounds: int) -> list[str]:
    """Title, command, machine, method and the official anchor rows."""
    lines = ["# Benchmark results", "", f"Command: `{command}`", ""]
    lines += ["## Machine", ""] + _table(["", ""], [[k, v] for k, v in machine_info(threads).items()]) + [""]
    lines += [
        "Method: medians over interleaved rounds (A B C A B C ...) in one process; ratios come from the same run. "
        f"Rounds per figure: {rounds}. Peak memory: peak RSS (`VmHWM`, reset after the network is built) of a "
        "fresh subprocess per variant running two training steps (torch's CPU allocator is invisible to tracemalloc). "
        "Load: see the last section; a section measured while other processes kept the machine busy is flagged.",
        "",
        "## Anchor: the authors' code (from issue 16, another run; not re-measured here)",
        "",
        "Measured side by side with ours on one quiet 2-core machine (same crop, optimiser and loss, no data loading, "
        "medians of alternated processes), before this round's inference changes. The official forward encodes every "
        "modality whatever is missing, so its time does not depend on the subset.",
        "",
    ]
    return lines + _table(["figure", "official [s]", "ours then [s]"], OFFICIAL_ANCHORS) + [""]


def load_lines(monitor: LoadMonitor) -> list[str]:
    """Per section: 1-minute load average (start, max) and other processes' running threads; the verdict."""
    rows = []
    for section in monitor.sections:
        first, peak, foreign = section.samples[0], section.load1_max(), section.foreign_peak(monitor.window)
        mean = section.foreign_mean()
        duration = section.samples[-1].t - first.t
        rows.append(
            [section.name, f"{duration:.0f}", str(len(section.samples)), f"{first.load1:.2f}"]
            + ["?" if peak is None else f"{peak:.2f}"]
            + ["?" if mean is None else f"{mean:.2f}", "?" if foreign is None else f"{foreign:.2f}"]
            + ["**busy**" if monitor.busy(section) else "quiet"]
        )
    busy = monitor.busy_sections()
    verdict = (
        f"**FLAGGED: other processes kept the machine busy during {', '.join(busy)}; those figures are not "
        "comparable.**"
        if busy
        else "Quiet run: other processes stayed below the threshold in every section."
    )
    lines = ["## Load during the run", "", verdict, ""]
    lines += [
        f"{monitor.cores} cores, {monitor.threads} torch threads; busy = other processes' running threads, "
        f"averaged over {monitor.window:.0f} s, above {monitor.threshold:.2f} (cores - threads + "
        f"{monitor.tolerance}), sampled every {monitor.interval:.0f} s (benchmarks/load.py). The 1-minute load "
        "average includes the benchmark's own threads.",
        "",
    ]
    if monitor.errors:
        lines += [f"**{len(monitor.errors)} load samples failed** (first: `{monitor.errors[0]}`).", ""]
    header = ["section", "seconds", "samples", "load1 at start", "load1 max", "others: mean"]
    header += [f"others: max {monitor.window:.0f}-s mean", ""]
    return lines + _table(header, rows) + [""]


def run(args: argparse.Namespace, monitor: LoadMonitor) -> list[str]:
    """The selected sections; the report is rewritten to ``args.out`` after each one (a long run can be inspected)."""
    s = _settings(args.quick)
    if args.checkpoint_crop:
        s["checkpoint_crop"] = args.checkpoint_crop
    command = "python -m benchmarks" + (" --quick" if args.quick else "") + "".join(f" --only {o}" for o in args.only)
    lines = header_lines(command, args.threads, s["rounds"])
    started = time.time()
    out = Path(args.out)
    with monitor:
        for name in args.only or list(SECTIONS):
            with monitor.section(name):
                lines += SECTIONS[name](s, args.threads)
            out.write_text("\n".join(lines + load_lines(monitor)), encoding="utf-8")
    return lines + load_lines(monitor) + [f"Total benchmark time: {(time.time() - started) / 60:.1f} min.", ""]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few minutes: fewer rounds, smaller volumes")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")), help="report to write")
    parser.add_argument("--only", action="append", default=[], choices=list(SECTIONS), help="run only this section")
    parser.add_argument("--allow-busy", action="store_true", help="run even when the machine is busy at the start")
    parser.add_argument("--probe-seconds", type=float, default=10.0, help="load sampled before starting (default 10)")
    parser.add_argument(
        "--checkpoint-crop",
        type=int,
        nargs=3,
        default=None,
        metavar=("D", "H", "W"),
        help="crop of the activation-checkpointing memory figure (default 48 96 96; the paper's is 80 160 160)",
    )
    args = parser.parse_args(argv)
    if args.threads < 1 or args.probe_seconds < 0:
        parser.error("--threads must be >= 1 and --probe-seconds >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Refuse a busy machine, run, write the report; 0 = quiet run, 2 = refused, 3 = flagged as busy."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    monitor = LoadMonitor(args.threads)
    probe = monitor.probe(args.probe_seconds)
    if monitor.busy(probe) and not args.allow_busy:
        print(
            f"refused: other processes keep {probe.foreign_peak(monitor.window):.2f} threads running (threshold "
            f"{monitor.threshold:.2f}; load average {load_average()}). Wait for a quiet machine or pass --allow-busy.",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    report = "\n".join(run(args, monitor))
    Path(args.out).write_text(report, encoding="utf-8")
    print(report)
    return EXIT_BUSY if monitor.busy_sections() else 0


if __name__ == "__main__":
    sys.exit(main())
