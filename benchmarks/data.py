"""Data-pipeline figures: cases/s of the bundle's training transform chain with and without MONAI caching, and the
fraction of a training step spent waiting for data after the first epoch.

The chain is the bundle's own (``train#preprocessing`` of ``train.json`` + ``cpu_small.json``), read with MONAI's
``ConfigParser`` on synthetic BraTS-format cases written by ``data_prep.synthetic_brats``.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from monai.losses import DiceFocalLoss
from monai.bundle import ConfigParser
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset, ThreadDataLoader
from monai.transforms import Compose, DeleteItemsd, FgBgToIndicesd, RandCropByPosNegLabeld, SpatialPadd

from benchmarks.common import median
from benchmarks.training import build
from mckd.availability import ModalityDropout

__all__ = ["write_cases", "bundle_chain", "indexed_chain", "pipeline_table"]

BUNDLE = Path(__file__).resolve().parents[1] / "bundle" / "brats_mri_mckd_segmentation"
FG, BG = "label_fg_indices", "label_bg_indices"


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


def _parser(root: Path) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / "cpu_small.json")])
    parser["bundle_root"] = str(BUNDLE)
    parser["dataset_dir"] = str(root)
    return parser


def bundle_chain(root: Path) -> tuple[list[Any], list[Any], list[int]]:
    """``(deterministic transforms, random transforms, crop size)`` of the bundle's training chain."""
    parser = _parser(root)
    return (
        parser.get_parsed_content("train#preprocessing_transforms"),
        parser.get_parsed_content("train#random_transforms"),
        list(parser.get_parsed_content("crop_size")),
    )


def indexed_chain(deterministic: list[Any], random: list[Any], crop: list[int]) -> Compose:
    """The chain with padding and the label's foreground/background voxel indices moved into the cached part.

    ``RandCropByPosNegLabeld`` otherwise searches the whole label volume for foreground voxels on every draw; with
    ``fg_indices_key``/``bg_indices_key`` it samples from the cached indices (same distribution of crop centres).
    """
    pad = [t for t in random if isinstance(t, SpatialPadd)]
    crop_t = next(t for t in random if isinstance(t, RandCropByPosNegLabeld))
    indices = FgBgToIndicesd(keys="label", image_key="image", image_threshold=0)
    rest: list[Any] = []
    for t in random:
        if isinstance(t, SpatialPadd):
            continue
        rest.append(t)
        if t is crop_t:
            rest.append(DeleteItemsd(keys=[FG, BG]))
    crop_with_indices = RandCropByPosNegLabeld(
        keys=["image", "label"],
        label_key="label",
        spatial_size=crop,
        pos=1,
        neg=1,
        num_samples=1,
        image_key="image",
        image_threshold=0,
        fg_indices_key=FG,
        bg_indices_key=BG,
    )
    rest = [crop_with_indices if t is crop_t else t for t in rest]
    return Compose(deterministic + pad + [indices] + rest)


def _datasets(items: list[dict[str, Any]], root: Path, cache_dir: Path) -> dict[str, Callable[[], Dataset]]:
    deterministic, random, crop = bundle_chain(root)
    plain = Compose(deterministic + random)
    indexed = indexed_chain(*bundle_chain(root))
    return {
        "Dataset (bundle default)": lambda: Dataset(items, plain),
        "PersistentDataset": lambda: PersistentDataset(items, plain, cache_dir=cache_dir),
        "CacheDataset": lambda: CacheDataset(items, plain, cache_rate=1.0, num_workers=1, progress=False),
        "CacheDataset + cached fg/bg indices": lambda: CacheDataset(
            items, indexed, cache_rate=1.0, num_workers=1, progress=False
        ),
    }


def pipeline_table(cases: int, shape: list[int], epochs: int, batch: int = 2) -> list[dict[str, Any]]:
    """Per dataset variant: build seconds, cases/s after the first epoch, and the data-wait fraction of training.

    Cases/s is the median over epochs 2..``epochs`` of iterating the dataset items. The wait fraction comes from a
    training loop (the CPU configuration's network and step, random subsets) over a ``DataLoader`` with the bundle's
    ``num_workers`` (0 in ``cpu_small.json``), and for the last variant also over MONAI's ``ThreadDataLoader``
    (transforms of the next batch run in a background thread during the step): time blocked in ``next(iterator)``
    divided by the total time, in epochs after the first.
    """
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        items = write_cases(root, cases, shape)
        net_spec = {"net": "light", "crop": bundle_chain(root)[2], "batch": batch, "mode": "random"}
        for name, factory in _datasets(items, root, root / "persistent").items():
            start = time.perf_counter()
            dataset = factory()
            built = time.perf_counter() - start
            rates = []
            for epoch in range(epochs):
                start = time.perf_counter()
                for i in range(len(dataset)):
                    dataset[i]
                if epoch > 0:
                    rates.append(len(dataset) / (time.perf_counter() - start))
            loaders = {"DataLoader": DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=0)}
            if name.startswith("CacheDataset +"):
                loaders["ThreadDataLoader"] = ThreadDataLoader(dataset, batch_size=batch, shuffle=True, buffer_size=1)
            for loader_name, loader in loaders.items():
                wait, total, iterations = _wait_fraction(loader, net_spec, epochs)
                rows.append(
                    {
                        "dataset": name,
                        "loader": loader_name,
                        "build_s": built,
                        "cases_per_s": median(rates),
                        "wait_fraction": wait / total,
                        "iteration_s": total / iterations,
                    }
                )
    return rows


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
