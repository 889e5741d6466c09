"""Evaluation report of an AV-MNIST MCKD model: accuracy for every input set (image, audio, both) + importance.

Writes ``accuracy.csv``, ``accuracy.md`` and ``importance.json`` into ``output_dir`` (atomically) and logs each
accuracy. Used by the bundle's ``evaluate.json`` and by ``scripts/compare_kd.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from monai.data import DataLoader, Dataset
from torch import nn

from mckd import tables
from mckd.availability import all_subsets, read_available, subset_name, under_subsets
from mckd.checkpoints import CheckpointError, load_deployable
from mckd.distillation import ModalityImportance
from mckd.fileio import write_json_atomic, write_text_atomic

from .conventions import MODALITIES, MODALITY_DISPLAY_NAMES

__all__ = ["CSV_COLUMNS", "SubsetAccuracyReport", "load_checkpoint"]

logger = logging.getLogger(__name__)

CSV_COLUMNS: tuple[str, ...] = ("inputs", "accuracy", "correct", "num_samples")


def load_checkpoint(
    path: str | Path, network: nn.Module, importance: ModalityImportance | None, device: torch.device | str
) -> None:
    """Load the network (and its learned importance when ``importance`` is given) as the bundle's training wrote them.

    Goes through :func:`mckd.checkpoints.load_deployable`: ``path`` is ``models/model.pt`` (the network's state dict,
    with ``modality_weights.pt`` beside it) or a training checkpoint with ``model`` and ``modality_weights`` entries.

    Raises:
        CheckpointError: naming the file, when it does not exist (with the command that produces it), is corrupted,
            holds a pickled object, does not fit the network, or the importance is found in neither file.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            path, "does not exist: train first (python -m monai.bundle run --config_file configs/train.json)."
        )
    load_deployable(network, path, importance, map_location=device)


class SubsetAccuracyReport:
    """Classification accuracy of ``network`` on ``data`` for each non-empty subset of the modalities.

    For subset ``S``, a sample's availability is its own availability AND ``S``; samples left with no modality are
    not counted (``num_samples`` says how many were). Missing inputs are never read by MCKD networks.

    Args:
        network: the classifier, called as ``network(image, audio, available=...)``.
        data: sample dictionaries (``mckd.avmnist.data.load_split``).
        transform: the deterministic preprocessing applied to every sample.
        output_dir: folder of ``accuracy.csv``, ``accuracy.md`` and ``importance.json``.
        device: evaluation device.
        checkpoint: optional checkpoint to load first (see :func:`load_checkpoint`).
        importance: the modality importance to report (loaded from ``checkpoint`` when saved there).
        batch_size: evaluation batch size. Default 128.
        title: heading of the Markdown report.
        label_key: key of the class label. Default ``"label"``.
        available_key: key of the per-sample availability. Default ``"available"``.
    """

    def __init__(
        self,
        network: nn.Module,
        data: Sequence[dict],
        transform: Callable,
        output_dir: str | Path,
        device: torch.device | str = "cpu",
        checkpoint: str | Path | None = None,
        importance: ModalityImportance | None = None,
        batch_size: int = 128,
        title: str = "AV-MNIST accuracy by input modalities",
        label_key: str = "label",
        available_key: str = "available",
    ) -> None:
        self.network = network
        self.loader = DataLoader(Dataset(list(data), transform), batch_size=batch_size, shuffle=False)
        self.output_dir = Path(output_dir)
        self.device = torch.device(device)
        self.checkpoint = checkpoint
        self.importance = importance
        self.title = title
        self.label_key = label_key
        self.available_key = available_key

    @torch.no_grad()
    def evaluate(self) -> list[dict[str, Any]]:
        """One row per modality subset: ``inputs``, ``accuracy``, ``correct``, ``num_samples``."""
        self.network.to(self.device).eval()
        subsets = all_subsets(len(MODALITIES))
        correct, counted = [0] * len(subsets), [0] * len(subsets)
        for batch in self.loader:
            image, audio = (torch.as_tensor(batch[key]).to(self.device) for key in MODALITIES)
            labels = torch.as_tensor(batch[self.label_key]).to(self.device)
            data_available = read_available(batch, len(labels), len(MODALITIES), self.available_key, device=self.device)
            for s, available, rows in under_subsets(data_available, subsets):
                logits = self.network(image[rows], audio[rows], available=available[rows])
                correct[s] += int((logits.argmax(dim=1) == labels[rows]).sum())
                counted[s] += int(rows.sum())
        names = [MODALITY_DISPLAY_NAMES[m] for m in MODALITIES]
        return [
            {
                "inputs": subset_name(subset, names),
                "accuracy": correct[s] / counted[s] if counted[s] else float("nan"),
                "correct": correct[s],
                "num_samples": counted[s],
            }
            for s, subset in enumerate(subsets)
        ]

    def importance_weights(self) -> dict[str, float]:
        """``p = softmax(w)`` per modality (empty without ``importance``)."""
        if self.importance is None:
            return {}
        return dict(zip(MODALITIES, self.importance.probabilities().detach().cpu().tolist()))

    def run(self) -> list[dict[str, Any]]:
        """Load the checkpoint (if any), evaluate, log and write the report files; return the rows."""
        if self.checkpoint is not None:
            load_checkpoint(self.checkpoint, self.network, self.importance, self.device)
        rows = self.evaluate()
        importance = self.importance_weights()
        for row in rows:
            logger.info(
                "accuracy with %s: %.4f (%d/%d)", row["inputs"], row["accuracy"], row["correct"], row["num_samples"]
            )
        if importance:
            logger.info("modality importance p: %s", ", ".join(f"{k}={v:.4f}" for k, v in importance.items()))
        write_text_atomic(
            self.output_dir / "accuracy.csv", tables.csv_text(CSV_COLUMNS, [[r[c] for c in CSV_COLUMNS] for r in rows])
        )
        table = tables.markdown_table(
            ["inputs", "accuracy (%)", "correct / samples"],
            [[r["inputs"], tables.number(r["accuracy"], 100.0), f"{r['correct']} / {r['num_samples']}"] for r in rows],
        )
        text = f"# {self.title}\n\n{table}"
        if importance:
            weights = ", ".join(f"{MODALITY_DISPLAY_NAMES[k]} {v:.4f}" for k, v in importance.items())
            text += f"\nLearned modality importance p = softmax(w): {weights}\n"
        write_text_atomic(self.output_dir / "accuracy.md", text)
        write_json_atomic(self.output_dir / "importance.json", importance)
        return rows
