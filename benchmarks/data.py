"""Data-pipeline figures: cases/s of the bundle's training transform chain with and without MONAI caching, and the
fraction of a training step spent waiting for data after the first epoch.

The chain is the bundle's own (``train#preprocessing`` of ``train.json`` + ``cpu_small.json``: the deterministic
part, the cached padding and voxel indices the crop samples from, the random part), read with MONAI's
``ConfigParser`` on synthetic BraTS-format cases written by ``data_prep.synthetic_brats``. The last row is the
bundle's configured ``train#dataloader`` itself (its dataset class, ``cache_rate``, loader and workers); the others
put the same chain into other MONAI datasets and loaders for comparison.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from monai.bundle import ConfigParser
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset, ThreadDataLoader
from monai.losses import DiceFocalLoss

from benchmarks.common import median
from benchmarks.training import build
from mckd.availability import ModalityDropout

__all__ = ["write_cases", "bundle_parser", "pipeline_table", "gpu_loader_rates"]

BUNDLE = Path(__file__).resolve().parents[1] / "bundle" / "brats_mri_mckd_segmentation"
CONFIGS = ("train.json", "cpu_small.json")
GPU_CONFIGS = ("train.json",)  # the published configuration: 80 x 160 x 160 crops, batch 2, loader workers


def write_cases(root: Path, cases: int, shape: list[int]) -> list[dict[str, Any]]:
    """Synthetic cases on disk and their datalist items (all splits together)."""
    from data_prep import brats, synthetic_brats

    synthetic_brats.main(["--out", str(root / "cases"), "--cases", str(cases), "--shape", *map(str, shape)])
    brats.main(["--root", str(root / "cases"), "--out", str(root / "datalist.json"), "--split", "ratio:0.5"])
    datalist = json.loads((root / "datalist.json").read_text())
    items = [
        dict(item, image=[str(root / p) for p in item["image"]], label=str(root / item["label"]))
        for key in ("training", "meta_validation", "validation", "testing")
        for item in datalist.get(key, [])
    ]
    return items


def bundle_parser(root: Path, items: list[dict[str, Any]], configs: Sequence[str] = CONFIGS) -> ConfigParser:
    """The bundle's training config (by default the CPU configuration) with ``items`` as its training list."""
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / name) for name in configs])
    parser["bundle_root"] = str(BUNDLE)
    parser["dataset_dir"] = str(root)
    parser["train#dataset#data"] = items
    return parser


def _variants(parser: ConfigParser, cache_dir: Path) -> dict[str, Callable[[], tuple[Any, Any]]]:
    """name -> factory of ``(dataset, loader)``; the chain is the bundle's ``train#preprocessing``."""
    items, chain = parser["train#dataset#data"], parser.get_parsed_content("train#preprocessing")
    batch = int(parser.get_parsed_content("batch_size"))

    def loaders(dataset: Any, thread: bool = False) -> tuple[Any, Any]:
        if thread:
            return dataset, ThreadDataLoader(dataset, batch_size=batch, shuffle=True, buffer_size=1)
        return dataset, DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=0)

    def cached() -> CacheDataset:
        return _fully_cached(parser)

    def configured() -> tuple[Any, Any]:
        return parser.get_parsed_content("train#dataset"), parser.get_parsed_content("train#dataloader")

    return {
        "Dataset (no caching) | DataLoader": lambda: loaders(Dataset(items, chain)),
        "PersistentDataset | DataLoader": lambda: loaders(PersistentDataset(items, chain, cache_dir=cache_dir)),
        "CacheDataset (cache_rate 1, as configured otherwise) | DataLoader": lambda: loaders(cached()),
        "CacheDataset (cache_rate 1, as configured otherwise) | ThreadDataLoader": lambda: loaders(
            cached(), thread=True
        ),
        f"bundle: {parser['train#dataset#_target_']} (cache_rate {parser.get_parsed_content('cache_rate')}) | "
        f"{parser['train#dataloader#_target_']} ({parser.get_parsed_content('num_workers')} workers)": configured,
    }


def pipeline_table(cases: int, shape: list[int], epochs: int) -> list[dict[str, Any]]:
    """Per dataset/loader variant: build seconds, cases/s after the first epoch, and the data-wait fraction.

    Cases/s is the inverse of the median seconds per item over epochs 2..``epochs``. The wait fraction comes from a
    training loop (the CPU configuration's network, crop and batch, random subsets) over the variant's loader: time
    blocked in ``next(iterator)`` divided by the total time, in epochs after the first.
    """
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        parser = bundle_parser(root, write_cases(root, cases, shape))
        net_spec = {
            "net": parser.get_parsed_content("backbone"),
            "crop": parser.get_parsed_content("crop_size"),
            "batch": int(parser.get_parsed_content("batch_size")),
            "mode": "random",
        }
        for name, factory in _variants(parser, root / "persistent").items():
            start = time.perf_counter()
            dataset, loader = factory()
            built = time.perf_counter() - start
            cases_per_s = 1.0 / _seconds_per_case(dataset, epochs)
            wait, total, iterations = _wait_fraction(loader, net_spec, epochs)
            dataset_name, loader_name = name.split(" | ") if " | " in name else (name, "")
            rows.append(
                {
                    "dataset": dataset_name,
                    "loader": loader_name,
                    "build_s": built,
                    "cases_per_s": cases_per_s,
                    "wait_fraction": wait / total,
                    "iteration_s": total / iterations,
                }
            )
    return rows


def gpu_loader_rates(cases: int, shape: list[int], epochs: int) -> dict[str, Any]:
    """Cases/s of one loader worker for the published configuration's chain (``train.json`` alone).

    A worker runs the chain in one process, as ``num_workers=0`` does here: ``uncached`` is the whole chain (decode,
    normalise, indices, crop, augmentation) per case; ``cached`` only the random part, from items a ``CacheDataset``
    holds (median over epochs 2..``epochs``). With the configured ``cache_rate`` c a worker produces a case in
    ``c * t_cached + (1 - c) * t_uncached`` seconds on average.
    """
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        parser = bundle_parser(root, write_cases(root, cases, shape), GPU_CONFIGS)
        items, chain = parser["train#dataset#data"], parser.get_parsed_content("train#preprocessing")
        uncached = _seconds_per_case(Dataset(items, chain), epochs=1)
        cached = _seconds_per_case(_fully_cached(parser), epochs)
        cache_rate = float(parser.get_parsed_content("cache_rate"))
        return {
            "crop": parser.get_parsed_content("crop_size"),
            "batch": int(parser.get_parsed_content("batch_size")),
            "workers": int(parser.get_parsed_content("num_workers")),
            "cache_rate": cache_rate,
            "uncached_s": uncached,
            "cached_s": cached,
            "configured_s": cache_rate * cached + (1.0 - cache_rate) * uncached,
        }


def _fully_cached(parser: ConfigParser) -> CacheDataset:
    """The bundle's training dataset with every case cached (its other arguments, e.g. ``copy_cache``, as configured)."""
    return CacheDataset(
        parser["train#dataset#data"],
        parser.get_parsed_content("train#preprocessing"),
        cache_rate=1.0,
        num_workers=1,
        progress=False,
        copy_cache=bool(parser.get_parsed_content("train#dataset#copy_cache")),
    )


def _seconds_per_case(dataset: Any, epochs: int) -> float:
    """Median seconds per item over the epochs after the first (the only epoch when ``epochs`` is 1)."""
    per_case = []
    for _ in range(epochs):
        start = time.perf_counter()
        for i in range(len(dataset)):
            dataset[i]
        per_case.append((time.perf_counter() - start) / len(dataset))
    return median(per_case[1:] or per_case)


def _wait_fraction(loader: Any, net_spec: dict[str, Any], epochs: int) -> tuple[float, float, int]:
    """Seconds blocked on the loader, total seconds and iterations of training, over the epochs after the first."""
    net = build(net_spec).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.99, nesterov=True)
    loss_fn = DiceFocalLoss(sigmoid=True, gamma=0.0, lambda_focal=3.0, smooth_nr=0, smooth_dr=1)
    policy = ModalityDropout(4)
    generator = torch.Generator().manual_seed(0)
    wait = total = 0.0
    iterations = 0
    counter = itertools.count(1)
    for epoch in range(epochs):
        start = time.perf_counter()
        iterator = iter(loader)
        waited = 0.0
        while True:
            before = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                break
            waited += time.perf_counter() - before
            image, label = batch["image"].as_tensor(), batch["label"].as_tensor()
            optimizer.zero_grad(set_to_none=True)
            available = policy(image.shape[0], next(counter), generator=generator)
            loss_fn(net(image, available), label).backward()
            optimizer.step()
            iterations += int(epoch > 0)
        if epoch > 0:
            wait += waited
            total += time.perf_counter() - start
    return wait, total, iterations
