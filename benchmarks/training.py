"""Training-step figures: step time, peak memory, FLOP throughput against the measured conv peak, engine overhead.

Also the memory worker: ``python -m benchmarks.training '<JSON spec>'`` builds one network, runs training steps and
prints its peak RSS (see :mod:`benchmarks.common`).
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from typing import Any, Callable, Mapping

import torch
from monai.losses import DiceFocalLoss
from monai.networks.nets import SegResNet
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import current_rss_mib, interleaved, median, peak_rss_mib, reset_peak_rss
from mckd.availability import ModalityDropout
from mckd.brats.conventions import NUM_MODALITIES, NUM_REGIONS
from mckd.distillation import ModalityImportance, PairwiseDistillationLoss
from mckd.networks import MultiModalSegNet, capture_features
from mckd.networks.conv import OneDNNConv3d

__all__ = ["Variant", "build", "conv_peak", "train_step_table", "trainer_overhead", "memory_worker"]


#: one training-step variant: network kind, availability mode ("all", "random"), crop, batch size
Variant = dict


def build(spec: Mapping[str, Any]) -> nn.Module:
    """The network of a variant spec (``net``: ``light``/``resnet50_aspp``/``segresnet8``/``segresnet16``)."""
    torch.manual_seed(0)
    net = spec["net"]
    if net.startswith("segresnet"):
        # MONAI's brats_mri_segmentation bundle network (init_filters 16 there)
        return SegResNet(
            blocks_down=(1, 2, 2, 4),
            blocks_up=(1, 1, 1),
            init_filters=int(net[len("segresnet") :]),
            in_channels=NUM_MODALITIES,
            out_channels=NUM_REGIONS,
            dropout_prob=0.2,
        )
    return MultiModalSegNet(
        NUM_MODALITIES,
        NUM_REGIONS,
        backbone=net,
        paper_exact=bool(spec.get("paper_exact", False)),
        activation_checkpointing=bool(spec.get("activation_checkpointing", False)),
    )


def _masks(spec: Mapping[str, Any], count: int) -> list[torch.Tensor]:
    batch = int(spec["batch"])
    if spec.get("mode", "all") == "all" or spec["net"].startswith("segresnet"):
        return [torch.ones(batch, NUM_MODALITIES, dtype=torch.bool)] * count
    policy = ModalityDropout(NUM_MODALITIES)
    generator = torch.Generator().manual_seed(1)
    return [policy(batch, 1, generator=generator) for _ in range(count)]


def make_step(spec: Mapping[str, Any], kd: bool = False) -> tuple[nn.Module, Callable[[], None]]:
    """A network and a closure running one SGD training step of it on a fixed random batch."""
    net = build(spec).train()
    crop = [int(c) for c in spec["crop"]]
    batch = int(spec["batch"])
    generator = torch.Generator().manual_seed(0)
    image = torch.randn([batch, NUM_MODALITIES] + crop, generator=generator)
    label = (torch.rand([batch, NUM_REGIONS] + crop, generator=generator) > 0.9).float()
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.99, nesterov=True)
    loss_fn = DiceFocalLoss(sigmoid=True, gamma=0.0, lambda_focal=3.0, smooth_nr=0, smooth_dr=1)
    masks = itertools.cycle(_masks(spec, 8))
    is_mckd = isinstance(net, MultiModalSegNet)
    kd_loss = PairwiseDistillationLoss()
    importance = ModalityImportance(NUM_MODALITIES)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        if not is_mckd:
            loss = loss_fn(net(image), label)
        elif kd:
            available = next(masks)
            with capture_features(net) as capture:
                pred = net(image, available)
            assert capture.features is not None
            loss = loss_fn(pred, label) + 0.1 * kd_loss(capture.features, available, importance.probabilities())
        else:
            loss = loss_fn(net(image, next(masks)), label)
        loss.backward()
        optimizer.step()

    return net, step


def step_flops(net: nn.Module, step: Callable[[], None], repeats: int = 1) -> float:
    """Mean FLOPs of one training step (forward + backward) counted by ``FlopCounterMode``.

    The direct oneDNN convolution call of :class:`~mckd.networks.conv.OneDNNConv3d` is not in the counter's table, so
    those layers run as ``F.conv3d`` (same arithmetic) while counting.
    """
    convs = [m for m in net.modules() if isinstance(m, OneDNNConv3d)]
    saved = [m.use_onednn for m in convs]
    for m in convs:
        m.use_onednn = False
    total = 0
    try:
        for _ in range(repeats):
            with FlopCounterMode(display=False) as counter:
                step()
            total += counter.get_total_flops()
    finally:
        for m, use in zip(convs, saved):
            m.use_onednn = use
    return total / repeats


def conv_peak(rounds: int) -> dict[str, float]:
    """The machine's float32 throughput for large 3D convolutions (forward), the best of a few shapes, in GFLOP/s."""
    best: dict[str, float] = {}
    for batch, channels, size in ((2, 64, 32), (1, 128, 24), (1, 32, 48)):
        x = torch.randn(batch, channels, size, size, size)
        conv = nn.Conv3d(channels, channels, 3, padding=1, bias=False)
        flops = 2.0 * channels * channels * 27 * batch * size**3

        def run(x: torch.Tensor = x, conv: nn.Conv3d = conv) -> None:
            with torch.no_grad():
                conv(x)

        seconds = median(interleaved({"conv": run}, rounds)["conv"])
        best[f"{batch}x{channels}x{size}^3 -> {channels}, k3"] = flops / seconds / 1e9
    return best


def train_step_table(variants: Mapping[str, Variant], rounds: int, threads: int) -> list[dict[str, Any]]:
    """Median step time (interleaved in this process), FLOPs/step and peak RSS (one subprocess each) per variant."""
    from benchmarks.common import run_worker

    built = {name: make_step(spec) for name, spec in variants.items()}
    steps = {name: step for name, (_, step) in built.items()}
    flops = {
        name: step_flops(net, step, 1 if variants[name].get("mode") != "random" else 3)
        for name, (net, step) in built.items()
    }
    times = interleaved(steps, rounds)
    rows = []
    for name, spec in variants.items():
        memory = run_worker("benchmarks.training", spec, threads)
        seconds = median(times[name])
        rows.append(
            {
                "variant": name,
                "step_s": seconds,
                "gflop_per_step": flops[name] / 1e9,
                "gflops": flops[name] / seconds / 1e9,
                "peak_rss_mib": memory["peak_rss_mib"],
                "before_step_rss_mib": memory["before_step_rss_mib"],
            }
        )
    return rows


def _batches(spec: Variant, count: int) -> list[dict[str, torch.Tensor]]:
    crop = [int(c) for c in spec["crop"]]
    batch = int(spec["batch"])
    generator = torch.Generator().manual_seed(0)
    return [
        {
            "image": torch.randn([batch, NUM_MODALITIES] + crop, generator=generator),
            "label": (torch.rand([batch, NUM_REGIONS] + crop, generator=generator) > 0.9).float(),
        }
        for _ in range(count)
    ]


def _trainer_run(spec: Variant, iterations: int, intervals: list[float]) -> Callable[[], None]:
    """A closure running a fresh ``MCKDTrainer`` for ``iterations`` and appending its iteration intervals."""
    from ignite.engine import Events

    from mckd.engines import MCKDTrainer

    data = _batches(spec, 2)
    stamps: list[float] = []

    def run() -> None:
        # a fresh trainer per run: an ignite engine that finished its epochs does not iterate again
        trainer_net = build(spec)
        trainer = MCKDTrainer(
            device="cpu",
            max_epochs=1,
            epoch_length=iterations,
            train_data_loader=data * (iterations // 2 + 1),
            network=trainer_net,
            optimizer=torch.optim.SGD(trainer_net.parameters(), lr=1e-4, momentum=0.99, nesterov=True),
            loss_function=DiceFocalLoss(sigmoid=True, gamma=0.0, lambda_focal=3.0, smooth_nr=0, smooth_dr=1),
            importance=ModalityImportance(NUM_MODALITIES),
            modality_dropout=ModalityDropout(NUM_MODALITIES),
        )
        trainer.add_event_handler(Events.ITERATION_STARTED, lambda _: stamps.append(time.perf_counter()))
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: stamps.append(time.perf_counter()))
        stamps.clear()
        trainer.run()
        if len(stamps) != iterations + 1:
            raise RuntimeError(f"the trainer ran {len(stamps) - 1} iterations instead of {iterations}.")
        intervals.extend(b - a for a, b in zip(stamps[1:-1], stamps[2:]))

    return run


def trainer_overhead(spec: Variant, iterations: int, rounds: int) -> dict[str, float]:
    """Median iteration time of ``MCKDTrainer`` (KD on, random subsets) vs bare loops of the same network.

    The trainer gets pre-made batches from a list (no data loading) and no handlers; its iteration time is the
    interval between consecutive ``ITERATION_STARTED`` events (engine, events and the step). Bare loops: the same
    forward/loss/backward/step written out, with and without the KD term.
    """
    _, bare = make_step(dict(spec, mode="random"))
    _, bare_kd = make_step(dict(spec, mode="random"), kd=True)
    trainer_times: list[float] = []

    def loop(step: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(iterations):
                step()

        return run

    runs = {"trainer": _trainer_run(spec, iterations, trainer_times), "bare": loop(bare), "bare_kd": loop(bare_kd)}
    times = interleaved(runs, rounds)
    measured = trainer_times[iterations - 1 :]  # the warm-up round's intervals come first
    return {
        "trainer_iteration_s": median(measured),
        "bare_iteration_s": median(times["bare"]) / iterations,
        "bare_kd_iteration_s": median(times["bare_kd"]) / iterations,
    }


def memory_worker(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Peak RSS of a fresh process running ``spec['steps']`` (default 2) training steps; the last step's time."""
    torch.set_num_threads(int(spec.get("threads", 2)))
    _, step = make_step(spec)
    before = current_rss_mib()
    reset_peak_rss()
    seconds = 0.0
    for _ in range(int(spec.get("steps", 2))):
        start = time.perf_counter()
        step()
        seconds = time.perf_counter() - start
    return {"peak_rss_mib": peak_rss_mib(), "before_step_rss_mib": before, "last_step_s": seconds}


if __name__ == "__main__":
    print(json.dumps(memory_worker(json.loads(sys.argv[1]))))
