"""Where the meta-objective of the importance weights points, for a trained BraTS model (issue 15).

The meta-update (``mckd.handlers.MetaImportanceUpdater``) moves ``w`` down the gradient of the task loss of a
forward with every modality present and each modality's fused bottleneck feature scaled by ``p_m = softmax(w)_m``.
This probe evaluates that objective on a fixed set of meta-validation crops of a trained run (same loader, loss and
train-mode forward as the handler) for ``p`` uniform and for ``p`` tilted towards or away from each modality, and
takes its gradient with respect to ``w`` at uniform ``p``: the direction the next meta step would go. Nothing is
trained and the checkpoint is not changed.

Usage (from the repository root)::

    python -m benchmarks.importance_probe RUN_DIR [RUN_DIR ...] --datalist LIST.json [--crops 20] [--tilt 0.1]
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.utils import set_determinism

from mckd.checkpoints import load_objects

__all__ = ["tilted", "probe_run", "main"]

logger = logging.getLogger("importance_probe")

CONFIGS = Path(__file__).resolve().parents[1] / "bundle" / "brats_mri_mckd_segmentation" / "configs"


def tilted(num_modalities: int, modality: int, amount: float) -> torch.Tensor:
    """``p`` with ``p_modality = 1/M + amount`` and the others lowered equally (still summing to 1).

    Raises:
        ValueError: when a probability would leave ``[0, 1]``.
    """
    p = torch.full((num_modalities,), 1.0 / num_modalities)
    p[modality] += amount
    others = [m for m in range(num_modalities) if m != modality]
    p[others] -= amount / len(others)
    if bool((p < 0).any() or (p > 1).any()):
        raise ValueError(f"tilt {amount} takes p outside [0, 1]: {p.tolist()}.")
    return p


def _meta_loss(parts: dict[str, Any], batches: Sequence[dict[str, torch.Tensor]], scale: torch.Tensor) -> torch.Tensor:
    """Mean task loss over ``batches`` of the all-modality forward with bottlenecks scaled by ``scale``."""
    network, loss_function = parts["network"], parts["loss"]
    losses = []
    for batch in batches:
        available = torch.ones(batch["image"].shape[0], scale.numel(), dtype=torch.bool)
        losses.append(loss_function(network(batch["image"], available=available, modality_scale=scale), batch["label"]))
    return torch.stack(losses).mean()


def probe_run(run_dir: Path, datalist: Path, crops: int = 20, tilt: float = 0.1, seed: int = 0) -> dict[str, Any]:
    """The meta-objective of one trained run (``RUN_DIR/models/model_final.pt``) around uniform ``p``.

    Args:
        run_dir: the run's ``bundle_root`` (trained with ``train.json`` + ``cpu_small.json``).
        datalist: the run's datalist (its ``meta_validation`` list gives the crops).
        crops: number of meta-validation crops (batches of the bundle's meta loader), drawn once with ``seed``.
        tilt: how far ``p_m`` moves from ``1/M``.
        seed: seed of the crops.

    Returns:
        ``{"run", "modalities", "uniform": loss, "towards": {m: loss}, "away": {m: loss}, "gradient": {m: dL/dw_m}}``.
    """
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "cpu_small.json")])
    parser.update({"bundle_root": str(run_dir), "data_list_file_path": str(datalist), "device": "$'cpu'"})
    parts = {"network": parser.get_parsed_content("network"), "loss": parser.get_parsed_content("loss")}
    load_objects({"model": parts["network"]}, Path(run_dir) / "models" / "model_final.pt", map_location="cpu")
    parts["network"].train()  # as the meta handler runs it (published: train mode)
    names = list(parser.get_parsed_content("modality_names"))
    set_determinism(seed=seed)
    loader, batches = parser.get_parsed_content("train#meta_dataloader"), []
    while len(batches) < crops:
        batches += [
            {k: b[k].as_tensor() if hasattr(b[k], "as_tensor") else b[k] for k in ("image", "label")} for b in loader
        ][: crops - len(batches)]
    set_determinism(seed=None)
    uniform = torch.full((len(names),), 1.0 / len(names))
    with torch.no_grad():
        result = {
            "run": str(run_dir),
            "modalities": names,
            "uniform": float(_meta_loss(parts, batches, uniform)),
            "towards": {n: float(_meta_loss(parts, batches, tilted(len(names), m, tilt))) for m, n in enumerate(names)},
            "away": {n: float(_meta_loss(parts, batches, tilted(len(names), m, -tilt))) for m, n in enumerate(names)},
        }
    w = torch.zeros(len(names), requires_grad=True)
    (gradient,) = torch.autograd.grad(_meta_loss(parts, batches, torch.softmax(w, dim=0)), [w])
    result["gradient"] = dict(zip(names, gradient.tolist()))
    return result


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Command line: probe every run directory given and print one JSON object per run."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.importance_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (bundle_root of a training run)")
    parser.add_argument("--datalist", type=Path, required=True, help="the datalist the runs were trained with")
    parser.add_argument("--crops", type=int, default=20, help="meta-validation crops (default 20, as published)")
    parser.add_argument("--tilt", type=float, default=0.1, help="how far p_m moves from 1/M (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the crops (default 0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results = [probe_run(run, args.datalist, args.crops, args.tilt, args.seed) for run in args.runs]
    for result in results:
        print(json.dumps(result))
    return results


if __name__ == "__main__":
    main()
