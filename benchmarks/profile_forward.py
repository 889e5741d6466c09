"""Where the time of one ``MultiModalSegNet`` inference forward goes: per kind of work, encoder vs decoder.

``python -m benchmarks.profile_forward [--backbone resnet50_aspp] [--crop 32 64 64] [--available 1 4] [--rounds 5]``

Every convolution, norm and activation module is timed with forward pre/post hooks (CPU execution is synchronous,
so a hook pair brackets exactly that module's work); the weight standardisation (``kernel()`` of the
weight-standardised convolutions), the skip projection of the decoder stages and the availability bookkeeping
(mask decoding, pair index, gather, scatter, mean fill) are timed by wrapping those functions for the duration of
the profile. What no category claims (Python, tensor bookkeeping, additions, the max-pool, the final upsample) is
"other". Medians over rounds, with the load average printed next to them: on a busy machine they are not
comparable. ``--operators`` adds the ``torch.profiler`` table of self CPU time per operator.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections import defaultdict
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

import mckd.networks.segnet as segnet_module
import mckd.networks.stages as stages_module
from benchmarks.common import load_average
from mckd.availability import pack_available
from mckd.networks import MultiModalSegNet
from mckd.networks.ws_conv import WeightStandardizedConv3d

__all__ = ["profile_parts", "operator_table"]

_KINDS: tuple[tuple[str, tuple[type, ...]], ...] = (
    ("convolutions", (nn.Conv3d, nn.ConvTranspose3d)),
    ("instance norms", (nn.InstanceNorm3d,)),
    ("activations", (nn.LeakyReLU, nn.PReLU, nn.ReLU)),
)
_BOOKKEEPING = (
    segnet_module,
    ("split_available", "unpack_available", "available_pairs", "gather_available", "scatter_available", "mean_fill"),
)


class _Clock:
    """Accumulates seconds per category during one forward; nested time is charged to the innermost category."""

    def __init__(self, now: Callable[[], float] = time.perf_counter) -> None:
        self.now = now
        self.seconds: dict[str, float] = defaultdict(float)
        self._stack: list[tuple[str, float, float]] = []  # (category, start, nested seconds)

    def start(self, category: str) -> None:
        self._stack.append((category, self.now(), 0.0))

    def stop(self) -> None:
        category, start, nested = self._stack.pop()
        elapsed = self.now() - start
        self.seconds[category] += elapsed - nested
        if self._stack:
            outer, outer_start, outer_nested = self._stack[-1]
            self._stack[-1] = (outer, outer_start, outer_nested + elapsed)

    def timed(self, category: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            self.start(category)
            try:
                return fn(*args, **kwargs)
            finally:
                self.stop()

        return run


@contextlib.contextmanager
def _instrumented(net: MultiModalSegNet, clock: _Clock) -> Iterator[None]:
    handles = []
    for name, module in net.named_modules():
        kind = next((k for k, types in _KINDS if isinstance(module, types)), None)
        if kind is None:
            continue
        category = f"{kind} ({name.split('.')[0]})"
        handles.append(module.register_forward_pre_hook(lambda m, i, c=category: clock.start(c)))
        handles.append(module.register_forward_hook(lambda m, i, o: clock.stop()))
    patched: list[tuple[Any, str, Any]] = [(WeightStandardizedConv3d, "kernel", WeightStandardizedConv3d.kernel)]
    patched.append((stages_module, "project_mean_filled", stages_module.project_mean_filled))
    owner, names = _BOOKKEEPING
    patched += [(owner, fn, getattr(owner, fn)) for fn in names if hasattr(owner, fn)]
    WeightStandardizedConv3d.kernel = clock.timed("weight standardisation", WeightStandardizedConv3d.kernel)
    stages_module.project_mean_filled = clock.timed("skip projections (folded)", stages_module.project_mean_filled)
    for _, fn, original in patched[2:]:
        setattr(owner, fn, clock.timed("availability: unpack, pairs, gather, scatter, fill", original))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for owner, attribute, original in patched:
            setattr(owner, attribute, original)


def _input(net: MultiModalSegNet, crop: Sequence[int], available: int) -> torch.Tensor:
    mask = torch.zeros(1, net.num_modalities, dtype=torch.bool)
    mask[0, :available] = True
    image = torch.randn([1, net.num_modalities] + list(crop), generator=torch.Generator().manual_seed(0))
    return pack_available(image, mask)


def profile_parts(
    net: MultiModalSegNet, inputs: dict[int, torch.Tensor], rounds: int, now: Callable[[], float] = time.perf_counter
) -> dict[int, dict[str, float]]:
    """Per input (key: number of available modalities), median seconds per category (module docstring).

    Each round runs every input once plain (``total``) and once instrumented, interleaved, so that load from other
    processes hits all settings alike; ``other`` is the instrumented time that no category claims. ``now`` is the
    clock: wall time by default, or ``time.thread_time`` (CPU time of this thread: with one torch thread, the work
    itself, whatever else runs on the machine).
    """
    samples: dict[int, dict[str, list[float]]] = {k: defaultdict(list) for k in inputs}
    with torch.inference_mode():
        for x in inputs.values():
            net(x)  # warm-up
        for _ in range(rounds):
            for k, x in inputs.items():
                start = now()
                net(x)
                samples[k]["total"].append(now() - start)
                clock = _Clock(now)
                with _instrumented(net, clock):
                    start = now()
                    net(x)
                    wall = now() - start
                for category, seconds in clock.seconds.items():
                    samples[k][category].append(seconds)
                samples[k]["other"].append(wall - sum(clock.seconds.values()))
    return {k: {c: statistics.median(v) for c, v in sorted(per.items())} for k, per in samples.items()}


def operator_table(net: MultiModalSegNet, x: torch.Tensor, rows: int = 15) -> str:
    """``torch.profiler`` self-CPU-time table of one forward (after a warm-up)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        net(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            net(x)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def report(results: dict[int, dict[str, float]], header: str) -> str:
    """Milliseconds and shares of the total per category, one column pair per number of available modalities."""
    ks = list(results)
    lines = [header, f"{'':<52}" + "".join(f"{f'{k} of 4 [ms]':>14}{'share':>7}" for k in ks)]
    categories = list(dict.fromkeys(c for k in ks for c in results[k]))
    categories = [c for c in categories if c != "total"] + ["total"]
    for category in categories:
        cells = ""
        for k in ks:
            value = results[k].get(category, 0.0)
            cells += f"{value * 1e3:>14.1f}{value / results[k]['total']:>7.0%}"
        lines.append(f"{category:<52}{cells}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="resnet50_aspp", choices=["light", "resnet50_aspp"])
    parser.add_argument("--crop", type=int, nargs=3, default=[32, 64, 64], metavar=("D", "H", "W"))
    parser.add_argument("--available", type=int, nargs="+", default=[1, 4], help="numbers of available modalities")
    parser.add_argument("--rounds", type=int, default=5, help="timed forwards per setting (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--operators", action="store_true", help="also print the torch.profiler operator table")
    parser.add_argument(
        "--cpu-time", action="store_true", help="time with the CPU time of the one torch thread (forces --threads 1)"
    )
    args = parser.parse_args(argv)
    if args.cpu_time:
        args.threads = 1
    if args.rounds < 1 or args.threads < 1 or not all(1 <= k <= 4 for k in args.available):
        parser.error("--rounds and --threads must be >= 1 and every --available between 1 and 4")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = MultiModalSegNet(4, 3, backbone=args.backbone).eval()
    before = load_average()
    now = time.thread_time if args.cpu_time else time.perf_counter
    results = profile_parts(net, {k: _input(net, args.crop, k) for k in args.available}, args.rounds, now)
    header = (
        f"{args.backbone} forward, batch 1, crop {'x'.join(map(str, args.crop))}, {args.threads} threads, "
        f"{'CPU time of the torch thread' if args.cpu_time else 'wall time'}, "
        f"median of {args.rounds}; load average {before} before, {load_average()} after"
    )
    print(report(results, header))
    if args.operators:
        for k in args.available:
            print(f"\noperators, {k} of 4:\n" + operator_table(net, _input(net, args.crop, k)))


if __name__ == "__main__":
    main()
