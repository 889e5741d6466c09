"""Forward time of ``MultiModalSegNet`` with 1, 2 and 3 of 4 modalities, as a ratio of the time with all 4.

Missing modalities are not encoded, so the encoder's share of the time should follow the number of available
inputs; the ``paper_exact`` rows (missing inputs zeroed and encoded, as published) show the cost without that.
Settings are interleaved round-robin and the minimum over rounds is reported, so that load from other processes
on a shared machine disturbs the ratios as little as possible.

Run ``python -m benchmarks.modality_scaling [--size 96] [--rounds 7] [--threads 2] [--backbone light]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable, Sequence

import torch

from mckd.brats.conventions import NUM_MODALITIES
from mckd.networks import MultiModalSegNet


def _forward_fn(net: MultiModalSegNet, image: torch.Tensor, num_available: int) -> Callable[[], None]:
    available = torch.zeros(image.shape[0], NUM_MODALITIES, dtype=torch.bool)
    available[:, :num_available] = True

    def run() -> None:
        with torch.inference_mode():
            net(image, available)

    return run


def measure(size: int, rounds: int, backbone: str, batch: int = 1) -> dict[str, float]:
    """Minimum forward time in seconds per setting (``"default k"`` and ``"paper_exact k"`` for k = 1..4)."""
    torch.manual_seed(0)
    default_net = MultiModalSegNet(NUM_MODALITIES, backbone=backbone).eval()
    paper_net = MultiModalSegNet(NUM_MODALITIES, backbone=backbone, paper_exact=True).eval()
    paper_net.load_state_dict(default_net.state_dict())
    image = torch.randn(batch, NUM_MODALITIES, size, size, size)
    settings: dict[str, Callable[[], None]] = {}
    for name, net in (("default", default_net), ("paper_exact", paper_net)):
        for k in range(NUM_MODALITIES, 0, -1):
            settings[f"{name} {k}"] = _forward_fn(net, image, k)
    for run in settings.values():
        run()
    best = {name: float("inf") for name in settings}
    for _ in range(rounds):
        for name, run in settings.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def report(best: dict[str, float]) -> str:
    """A table of times and ratios to the 4-modality time of the same mode."""
    lines = ["mode         available  time [s]  ratio to 4"]
    for mode in ("default", "paper_exact"):
        full = best[f"{mode} {NUM_MODALITIES}"]
        for k in range(1, NUM_MODALITIES + 1):
            t = best[f"{mode} {k}"]
            lines.append(f"{mode:<12} {k:>9}  {t:8.3f}  {t / full:10.3f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=96, help="cubic crop edge (multiple of the total stride)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per setting (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--backbone", default="light", choices=["light", "resnet50_aspp"])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    best = measure(args.size, args.rounds, args.backbone)
    print(f"MultiModalSegNet({args.backbone}) forward, CPU, {args.threads} threads, 4x{args.size}^3, batch 1")
    print(report(best))


if __name__ == "__main__":
    main()
