"""Run the whole benchmark suite and write ``benchmarks/RESULTS.md``.

``python -m benchmarks [--quick] [--threads 2] [--out benchmarks/RESULTS.md] [--checkpoint-crop D H W]``

Full run: about 15-20 minutes on 2 CPU cores; ``--quick``: about 3 minutes (fewer rounds, smaller volumes).
Every figure is a median of repeated runs; the variants of one ratio are interleaved in one process.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from benchmarks import data, inference, training
from benchmarks.common import fmt, machine_info, run_worker

TARGET_1_OF_4, TARGET_2_OF_4 = 0.35, 0.6


def _settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "rounds": 2,
            "resnet_crop": [32, 64, 64],
            "fwd_crop": [64, 64, 64],
            "volume": [64, 96, 96],
            "roi": [48, 48, 48],
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
        "data_cases": 8,
        "data_shape": [240, 240, 155],
        "data_epochs": 3,
        "trainer_iterations": 6,
        "checkpoint_crop": [48, 96, 96],
        "compile": True,
    }


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _verdict(value: float, target: float, lower_is_better: bool = True) -> str:
    met = value <= target if lower_is_better else value >= target
    return "met" if met else "missed"


def run(quick: bool, threads: int, checkpoint_crop: list[int] | None, out: Path) -> str:
    """All sections; the Markdown report is rewritten to ``out`` after each section and returned."""
    torch.set_num_threads(threads)
    s = _settings(quick)
    if checkpoint_crop:
        s["checkpoint_crop"] = checkpoint_crop
    started = time.time()
    lines = ["# Benchmark results", "", f"Command: `python -m benchmarks{' --quick' if quick else ''}`", ""]
    lines += ["## Machine", ""] + _table(["", ""], [[k, v] for k, v in machine_info(threads).items()]) + [""]
    lines += [
        "Method: medians over interleaved rounds (A B C A B C ...) in one process; ratios come from the same run. "
        f"Rounds per figure: {s['rounds']}. Peak memory: peak RSS (`VmHWM`, reset after the network is built) of a "
        "fresh subprocess per variant running two training steps (torch's CPU allocator is invisible to tracemalloc).",
        "",
    ]

    # conv peak and training steps
    peak = training.conv_peak(s["rounds"])
    peak_gflops = max(peak.values())
    lines += ["## Measured conv peak (float32, forward)", ""]
    lines += _table(["convolution", "GFLOP/s"], [[k, fmt(v, 1)] for k, v in peak.items()]) + [""]
    light = {"net": "light", "crop": [48, 48, 48], "batch": 2}
    resnet = {"net": "resnet50_aspp", "crop": s["resnet_crop"], "batch": 2}
    variants: dict[str, dict[str, Any]] = {}
    for label, base in (("light (cpu_small)", light), ("resnet50_aspp", resnet)):
        crop = "x".join(map(str, base["crop"]))
        variants[f"{label} {crop}, 4 modalities"] = dict(base, mode="all")
        variants[f"{label} {crop}, random subsets"] = dict(base, mode="random")
        variants[f"{label} {crop}, paper_exact, random subsets"] = dict(base, mode="random", paper_exact=True)
        for filters in (8, 16):
            variants[f"SegResNet init_filters={filters} {crop} (reference)"] = dict(base, net=f"segresnet{filters}")
    rows = training.train_step_table(variants, s["rounds"], threads)
    lines += ["## Training step (batch 2, SGD, Dice+BCE)", ""]
    lines += _table(
        ["variant", "step [s]", "GFLOP/step", "GFLOP/s", "of conv peak", "peak RSS [MiB]", "RSS before step [MiB]"],
        [
            [
                r["variant"],
                fmt(r["step_s"]),
                fmt(r["gflop_per_step"], 2),
                fmt(r["gflops"], 1),
                f"{r['gflops'] / peak_gflops:.0%}",
                fmt(r["peak_rss_mib"], 0),
                fmt(r["before_step_rss_mib"], 0),
            ]
            for r in rows
        ],
    ) + [""]
    light_full = next(r for r in rows if r["variant"].startswith("light") and r["variant"].endswith("4 modalities"))
    fraction = light_full["gflops"] / peak_gflops
    lines += [
        f"Training step of the CPU configuration at {fraction:.0%} of the measured conv peak (target >= 50 %: "
        f"{_verdict(fraction, 0.5, lower_is_better=False)}). See docs/performance.md for what bounds it.",
        "",
    ]

    out.write_text("\n".join(lines), encoding="utf-8")

    # engine overhead
    overhead = training.trainer_overhead(light, s["trainer_iterations"], s["rounds"])
    extra = overhead["trainer_iteration_s"] / overhead["bare_kd_iteration_s"] - 1
    lines += ["## MCKDTrainer iteration vs bare loops (CPU configuration, random subsets)", ""]
    lines += _table(
        ["loop", "iteration [s]"],
        [
            ["MCKDTrainer (KD on, no handlers, in-memory batches)", fmt(overhead["trainer_iteration_s"])],
            ["bare forward/backward/step, task loss + KD", fmt(overhead["bare_kd_iteration_s"])],
            ["bare forward/backward/step, task loss only", fmt(overhead["bare_iteration_s"])],
        ],
    ) + [
        "",
        f"Trainer over bare loop with the same losses: {extra:+.1%} (target <= +5 %: {_verdict(extra, 0.05)}); "
        f"the KD term itself costs {overhead['bare_kd_iteration_s'] / overhead['bare_iteration_s'] - 1:+.1%}.",
        "",
    ]

    out.write_text("\n".join(lines), encoding="utf-8")

    # inference ratios
    lines += ["## Inference time per number of available modalities (ratio to 4)", ""]
    for backbone, crop, volume, roi in (
        ("light", s["fwd_crop"], s["volume"], s["roi"]),
        ("resnet50_aspp", [32, 64, 64], [32, 128, 128], [32, 64, 64]),
    ):
        if backbone == "resnet50_aspp" and quick:
            continue
        table = inference.modality_ratios(backbone, crop, volume, roi, 0.25, s["rounds"])
        rows_inf = []
        for kind, per_k in table.items():
            size = "x".join(map(str, crop if kind.startswith("forward") else volume))
            full = per_k[4]
            rows_inf.append(
                [f"{kind} {size}", fmt(full)] + [fmt(per_k[k] / full) for k in (1, 2, 3)]
            )
        lines += [f"### {backbone} (sliding window: roi {'x'.join(map(str, roi))}, overlap 0.25, gaussian)", ""]
        lines += _table(["pass", "time with 4 [s]", "1 of 4", "2 of 4", "3 of 4"], rows_inf) + [""]
        if backbone == "light":
            for kind in ("forward", "sliding_window"):
                r1, r2 = table[kind][1] / table[kind][4], table[kind][2] / table[kind][4]
                lines.append(
                    f"- {kind}: 1 of 4 = {r1:.2f} (target <= {TARGET_1_OF_4}: {_verdict(r1, TARGET_1_OF_4)}), "
                    f"2 of 4 = {r2:.2f} (target <= {TARGET_2_OF_4}: {_verdict(r2, TARGET_2_OF_4)})"
                )
            lines.append("")

    out.write_text("\n".join(lines), encoding="utf-8")

    # inference options
    seconds, errors = inference.option_ratios("light", s["volume"], s["roi"], s["rounds"], s["compile"])
    default = next(iter(seconds.values()))
    lines += ["## Inference options (light, sliding window, all 4 modalities)", ""]
    lines += _table(
        ["option", "time [s]", "ratio to default", "max |prob. difference|"],
        [[k, fmt(v), fmt(v / default), f"{errors[k]:.1e}"] for k, v in seconds.items()],
    ) + [""]

    out.write_text("\n".join(lines), encoding="utf-8")

    # activation checkpointing
    ck_crop = s["checkpoint_crop"]
    ck = {"net": "resnet50_aspp", "crop": ck_crop, "batch": 1, "mode": "all"}
    plain = run_worker("benchmarks.training", ck, threads)
    chk = run_worker("benchmarks.training", dict(ck, activation_checkpointing=True), threads)
    cut = 1 - (chk["peak_rss_mib"] - chk["before_step_rss_mib"]) / max(
        plain["peak_rss_mib"] - plain["before_step_rss_mib"], 1e-9
    )
    cut_total = 1 - chk["peak_rss_mib"] / plain["peak_rss_mib"]
    lines += [f"## Activation checkpointing (resnet50_aspp, batch 1, {'x'.join(map(str, ck_crop))})", ""]
    lines += _table(
        ["encoder", "peak RSS [MiB]", "of which training step [MiB]", "step [s]"],
        [
            [
                name,
                fmt(r["peak_rss_mib"], 0),
                fmt(r["peak_rss_mib"] - r["before_step_rss_mib"], 0),
                fmt(r["last_step_s"]),
            ]
            for name, r in (("plain", plain), ("activation_checkpointing", chk))
        ],
    ) + [
        "",
        f"Peak memory of the step cut by {cut:.0%} (whole process: {cut_total:.0%}; target >= 40 %: "
        f"{_verdict(cut_total, 0.4, lower_is_better=False)}); "
        f"step time x{chk['last_step_s'] / plain['last_step_s']:.2f}.",
        "",
    ]

    out.write_text("\n".join(lines), encoding="utf-8")

    # data pipeline
    data_rows = data.pipeline_table(s["data_cases"], s["data_shape"], s["data_epochs"])
    lines += [
        f"## Data pipeline ({s['data_cases']} synthetic cases of {'x'.join(map(str, s['data_shape']))}, "
        "bundle chain of train.json + cpu_small.json)",
        "",
    ]
    lines += _table(
        ["dataset", "loader", "build [s]", "cases/s (after epoch 1)", "waiting for data", "iteration [s]"],
        [
            [
                r["dataset"],
                r["loader"],
                fmt(r["build_s"], 2),
                fmt(r["cases_per_s"], 2),
                f"{r['wait_fraction']:.1%}",
                fmt(r["iteration_s"], 2),
            ]
            for r in data_rows
        ],
    ) + ["", f"Total benchmark time: {(time.time() - started) / 60:.1f} min; load average at the end: "
         + " / ".join(f"{v:.2f}" for v in os.getloadavg()), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 3 minutes: fewer rounds, smaller volumes")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")), help="report to write")
    parser.add_argument(
        "--checkpoint-crop", type=int, nargs=3, default=None, metavar=("D", "H", "W"),
        help="crop of the activation-checkpointing memory figure (default 48 96 96; the paper's is 80 160 160)",
    )
    args = parser.parse_args(argv)
    report = run(args.quick, args.threads, args.checkpoint_crop, Path(args.out))
    Path(args.out).write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
