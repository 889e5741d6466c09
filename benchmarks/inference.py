"""Inference figures: forward and sliding-window time per number of available modalities, and inference options."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from monai.inferers import SlidingWindowInferer

from benchmarks.common import interleaved, median
from mckd.availability import pack_available
from mckd.brats.conventions import NUM_MODALITIES, NUM_REGIONS
from mckd.networks import MultiModalSegNet

__all__ = ["modality_ratios", "option_ratios"]


def _net(backbone: str, paper_exact: bool = False) -> MultiModalSegNet:
    torch.manual_seed(0)
    return MultiModalSegNet(NUM_MODALITIES, NUM_REGIONS, backbone=backbone, paper_exact=paper_exact).eval()


def _packed(shape: list[int], k: int) -> torch.Tensor:
    image = torch.randn([1, NUM_MODALITIES] + shape, generator=torch.Generator().manual_seed(0))
    available = torch.zeros(1, NUM_MODALITIES, dtype=torch.bool)
    available[:, :k] = True
    return pack_available(image, available)


def modality_ratios(
    backbone: str, crop: list[int], volume: list[int], roi: list[int], overlap: float, rounds: int
) -> dict[str, dict[int, float]]:
    """Median seconds of a forward at ``crop`` and of a gaussian sliding-window pass over ``volume`` for k = 1..4.

    Keys: ``forward``, ``sliding_window``, ``forward paper_exact`` (missing inputs encoded as zeros, as published).
    """
    nets = {"": _net(backbone), " paper_exact": _net(backbone, paper_exact=True)}
    inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=1, overlap=overlap, mode="gaussian")
    runs: dict[str, Callable[[], Any]] = {}
    for k in range(NUM_MODALITIES, 0, -1):
        x_crop, x_volume = _packed(crop, k), _packed(volume, k)
        for suffix, net in nets.items():
            runs[f"forward{suffix}|{k}"] = _no_grad(lambda net=net, x=x_crop: net(x))
        runs[f"sliding_window|{k}"] = _no_grad(lambda x=x_volume: inferer(x, nets[""]))
    times = interleaved(runs, rounds)
    table: dict[str, dict[int, float]] = {}
    for name, values in times.items():
        kind, k = name.split("|")
        table.setdefault(kind, {})[int(k)] = median(values)
    return table


def _no_grad(fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with torch.inference_mode():
            return fn()

    return run


def option_ratios(
    backbone: str, volume: list[int], roi: list[int], rounds: int, with_compile: bool
) -> tuple[dict[str, float], dict[str, float]]:
    """Sliding-window time (all 4 modalities) of each inference option relative to a baseline, and output errors.

    Baseline: ``sw_batch_size=1``, ``overlap=0.25`` (the CPU overlay's; ``inference.json`` defaults to 0.5), gaussian
    blending, float32, eager. Each option changes one setting. Returns ``(median seconds per option, max |probability
    difference| to the baseline)``.
    """
    net = _net(backbone)
    x = _packed(volume, NUM_MODALITIES)
    settings: dict[str, Mapping[str, Any]] = {
        "baseline (sw_batch_size 1, overlap 0.25, gaussian, fp32)": {},
        "sw_batch_size 4": {"sw_batch_size": 4},
        "overlap 0.5": {"overlap": 0.5},
        "constant blending": {"mode": "constant"},
        "bfloat16 autocast": {"amp": True},
    }
    if with_compile:
        settings["torch.compile"] = {"compile": True}
    runs: dict[str, Callable[[], Any]] = {}
    outputs: dict[str, torch.Tensor] = {}
    for name, option in settings.items():
        inferer = SlidingWindowInferer(
            roi_size=roi,
            sw_batch_size=int(option.get("sw_batch_size", 1)),
            overlap=float(option.get("overlap", 0.25)),
            mode=str(option.get("mode", "gaussian")),
        )
        model = torch.compile(net) if option.get("compile") else net
        amp = bool(option.get("amp", False))

        def run(inferer: SlidingWindowInferer = inferer, model: Any = model, amp: bool = amp, name: str = name) -> None:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                outputs[name] = torch.sigmoid(inferer(x, model).float())

        runs[name] = run
    times = interleaved(runs, rounds)
    reference = outputs[next(iter(settings))]
    errors = {name: float((out - reference).abs().max()) for name, out in outputs.items()}
    return {name: median(values) for name, values in times.items()}, errors
