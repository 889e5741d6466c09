"""What training shows while it runs: loss terms and learning rate, a validation slice, the importance trajectory.

MONAI's ``TensorBoardStatsHandler`` / ``StatsHandler`` / ``MLFlowHandler`` log what an ``output_transform`` returns
each iteration and ``engine.state.metrics`` each epoch (the key metric, the validation Dice per region, the importance
weights that :class:`~mckd.handlers.MetaImportanceUpdater` stores there). This module adds what they lack:

- :class:`TrainingScalars`: an ``output_transform`` giving those handlers the total loss, the task loss and the KD
  loss that :class:`~mckd.engines.MCKDTrainer` puts in ``engine.state.output``, and the learning rate;
- :class:`TensorBoardSliceHandler`: one axial slice of the first validation case as an image (each modality, the
  reference regions, the predicted regions side by side);
- :class:`ImportanceTrajectoryWriter`: the importance weights after every meta round as CSV and PNG in the output
  folder, kept across a resumed run.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.config import PathLike
from monai.utils import IgniteInfo, min_version, optional_import

from mckd.distillation import ModalityImportance
from mckd.engines import MCKDKeys
from mckd.fileio import atomic_path, write_text_atomic

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
SummaryWriter, _ = optional_import("torch.utils.tensorboard", name="SummaryWriter")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["TrainingScalars", "slice_mosaic", "TensorBoardSliceHandler", "ImportanceTrajectoryWriter"]

logger = logging.getLogger(__name__)

#: RGB colour of each region in the slice image, painted in this order (nested regions last; the resection cavity of
#: a post-treatment run lies outside the tumour regions).
REGION_COLOURS: Mapping[str, tuple[int, int, int]] = {
    "WT": (0, 170, 0), "TC": (255, 200, 0), "ET": (220, 0, 0), "RC": (40, 110, 255)
}


class TrainingScalars:
    """``output_transform`` for MONAI's stats handlers: loss, task loss, KD loss and learning rate of an iteration.

    Returns ``{"<prefix>loss", "<prefix>task_loss", "<prefix>kd_loss", "<prefix>lr"}`` from ``engine.state.output``
    of :class:`~mckd.engines.MCKDTrainer` and the first parameter group of ``optimizer``. MONAI's handlers call it at
    ``ITERATION_COMPLETED``, after an iteration-level ``LrScheduleHandler`` has stepped, so ``lr`` is the rate of
    the next iteration.

    Args:
        optimizer: the trainer's optimiser.
        prefix: prefix of every tag. Default ``"train_"``.

    Raises:
        TypeError: when ``optimizer`` is not a torch optimiser.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, prefix: str = "train_") -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}.")
        self.optimizer = optimizer
        self.prefix = prefix

    def __call__(self, output: Any) -> dict[str, float]:
        first = output[0] if isinstance(output, Sequence) else output
        keys = {"loss": "loss", "task_loss": MCKDKeys.TASK_LOSS, "kd_loss": MCKDKeys.KD_LOSS}
        scalars = {f"{self.prefix}{tag}": float(first[key]) for tag, key in keys.items() if key in first}
        scalars[f"{self.prefix}lr"] = float(self.optimizer.param_groups[0]["lr"])
        return scalars


def _grey(image: np.ndarray) -> np.ndarray:
    """A 2D slice scaled to 0..255 over its own range (all zero when constant), as RGB."""
    low, high = float(image.min()), float(image.max())
    scaled = np.zeros_like(image, dtype=np.float32) if high <= low else (image - low) / (high - low)
    return np.repeat((scaled * 255).astype(np.uint8)[..., None], 3, axis=-1)


def _regions(masks: np.ndarray, region_names: Sequence[str]) -> np.ndarray:
    """Region masks ``[R, H, W]`` painted in :data:`REGION_COLOURS` (WT, then TC, then ET) on black."""
    out = np.zeros((*masks.shape[1:], 3), dtype=np.uint8)
    for name, colour in REGION_COLOURS.items():
        if name in region_names:
            out[masks[list(region_names).index(name)] > 0.5] = colour
    return out


def slice_mosaic(
    image: torch.Tensor, label: torch.Tensor, pred: torch.Tensor, region_names: Sequence[str], num_modalities: int
) -> np.ndarray:
    """One axial slice as a ``[H, W * (M + 2), 3]`` uint8 image: each modality, the reference, the prediction.

    The slice is the one along the first spatial axis (axial in the bundle's D, H, W layout) with the largest whole
    tumour in the reference (the middle one when there is none). ``image`` may be packed (``[2M, ...]``: the
    availability flags after the modalities are not drawn).
    """
    image, label, pred = (t.detach().float().cpu().numpy() for t in (image, label, pred))
    whole = label[list(region_names).index("WT")] if "WT" in region_names else label.max(axis=0)
    area = whole.reshape(whole.shape[0], -1).sum(axis=1)
    index = int(area.argmax()) if area.max() > 0 else whole.shape[0] // 2
    panels = [_grey(image[m, index]) for m in range(num_modalities)]
    panels += [_regions(label[:, index], region_names), _regions(pred[:, index], region_names)]
    return np.concatenate(panels, axis=1)


class TensorBoardSliceHandler:
    """At each validation run, write one slice of the first case to TensorBoard: modalities, reference, prediction.

    Why not MONAI's ``TensorBoardImageHandler``: it draws one tensor per tag, and a 3D volume as an animated GIF of
    its first channels; a missing-modality model is read from the modalities and both region maps side by side on
    the slice that holds the tumour (:func:`slice_mosaic`).

    Attach it to the validator (``validate#handlers``). At the first iteration of each run it takes the first item of
    the decollated ``engine.state.output`` (``image``, ``label`` and thresholded ``pred`` after postprocessing) and
    writes the image under ``tag`` at the validator's epoch (the trainer's epoch when run by ``ValidationHandler``).

    Args:
        log_dir: TensorBoard folder (a ``SummaryWriter`` is created on first use). Ignored with ``summary_writer``.
        region_names: region order of ``label``/``pred`` channels (e.g. ``["ET", "TC", "WT"]``).
        num_modalities: number of modality channels drawn from ``image``.
        tag: image tag. Default ``"validation/slice"``.
        keys: keys of the image, reference and prediction. Default ``("image", "label", "pred")``.
        summary_writer: an existing ``SummaryWriter`` to use instead of creating one.

    Raises:
        ValueError: when ``num_modalities`` < 1 or ``region_names`` is empty.
    """

    def __init__(
        self,
        log_dir: PathLike,
        region_names: Sequence[str],
        num_modalities: int,
        tag: str = "validation/slice",
        keys: Sequence[str] = ("image", "label", "pred"),
        summary_writer: SummaryWriter | None = None,
    ) -> None:
        if num_modalities < 1:
            raise ValueError(f"num_modalities must be >= 1, got {num_modalities}.")
        if not region_names:
            raise ValueError("region_names must name the label and prediction channels, got an empty list.")
        self.log_dir = str(log_dir)
        self.region_names = list(region_names)
        self.num_modalities = num_modalities
        self.tag = tag
        self.keys = tuple(keys)
        self.writer = summary_writer

    def attach(self, engine: Engine) -> None:
        """
        Args:
            engine: the validator.
        """
        engine.add_event_handler(Events.ITERATION_COMPLETED(event_filter=lambda _, i: i == 1), self)

    def __call__(self, engine: Engine) -> None:
        """
        Args:
            engine: the validator, right after its first iteration of a run.
        """
        output = engine.state.output
        item = output[0] if isinstance(output, Sequence) else output
        image_key, label_key, pred_key = self.keys
        mosaic = slice_mosaic(item[image_key], item[label_key], item[pred_key], self.region_names, self.num_modalities)
        if self.writer is None:
            self.writer = SummaryWriter(log_dir=self.log_dir)
        self.writer.add_image(self.tag, mosaic, engine.state.epoch, dataformats="HWC")
        self.writer.flush()


class ImportanceTrajectoryWriter:
    """Write the modality-importance weights after every meta round: ``<prefix>.csv`` and ``<prefix>.png``.

    Records ``p = softmax(w)`` at ``ITERATION_COMPLETED`` of every iteration that started with a meta round
    (``(iteration - 1) % interval == 0``, :class:`~mckd.handlers.MetaImportanceUpdater`'s schedule) and rewrites both
    files atomically at every epoch end and at the end of training, so an interrupted run leaves them too. A resumed
    run keeps the rows of the existing CSV up to the iteration it resumes from.

    Args:
        importance: the modality importance holding ``w``.
        interval: iterations between meta rounds (the updater's ``interval``).
        output_dir: folder of the two files.
        modality_names: column names, in modality order; default ``m0, m1, ...``.
        prefix: file name without extension. Default ``"importance_trajectory"``.

    Raises:
        TypeError: when ``importance`` is not a ``ModalityImportance``.
        ValueError: when ``interval`` < 1 or ``modality_names`` has the wrong length.
    """

    def __init__(
        self,
        importance: ModalityImportance,
        interval: int,
        output_dir: PathLike,
        modality_names: Sequence[str] | None = None,
        prefix: str = "importance_trajectory",
    ) -> None:
        if not isinstance(importance, ModalityImportance):
            raise TypeError(f"importance must be a ModalityImportance, got {type(importance).__name__}.")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"interval must be an int >= 1, got {interval!r}.")
        names = [f"m{m}" for m in range(importance.num_modalities)] if modality_names is None else list(modality_names)
        if len(names) != importance.num_modalities:
            raise ValueError(f"modality_names must have {importance.num_modalities} entries, got {len(names)}.")
        self.importance = importance
        self.interval = interval
        self.names = names
        self.csv_path = Path(output_dir) / f"{prefix}.csv"
        self.png_path = Path(output_dir) / f"{prefix}.png"
        self.rows: list[list[float]] = []

    def attach(self, engine: Engine) -> None:
        """
        Args:
            engine: the trainer.
        """
        engine.add_event_handler(Events.STARTED, self._resume)
        engine.add_event_handler(
            Events.ITERATION_COMPLETED(event_filter=lambda _, i: (i - 1) % self.interval == 0), self
        )
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def _resume(self, engine: Engine) -> None:
        """Keep the rows of an existing CSV up to the iteration the run starts from (0 for a new run)."""
        self.rows = []
        if engine.state.iteration > 0 and self.csv_path.is_file():
            with self.csv_path.open(newline="") as fp:
                rows = [[float(v) for v in row] for row in list(csv.reader(fp))[1:] if row]
            self.rows = [row for row in rows if row[0] <= engine.state.iteration]

    def __call__(self, engine: Engine) -> None:
        """Record ``p`` after the meta round that started this iteration."""
        probabilities = self.importance.probabilities().detach().cpu().tolist()
        self.rows.append([float(engine.state.iteration), *probabilities])

    def write(self, engine: Engine | None = None) -> None:
        """Rewrite the CSV and the PNG from the recorded rows (nothing before the first round)."""
        if not self.rows:
            return
        text = io.StringIO()
        table = csv.writer(text, lineterminator="\n")
        table.writerow(["iteration", *self.names])
        table.writerows([[int(row[0]), *(f"{p:.6f}" for p in row[1:])] for row in self.rows])
        write_text_atomic(self.csv_path, text.getvalue())
        self._plot()

    def _plot(self) -> None:
        from matplotlib.figure import Figure  # noqa: PLC0415 - only when a trajectory is written

        values = np.asarray(self.rows)
        fig = Figure(figsize=(6, 3.5))
        ax = fig.subplots()
        for m, name in enumerate(self.names):
            ax.plot(values[:, 0], values[:, m + 1], marker="o" if len(values) < 30 else None, label=name)
        ax.set_xlabel("iteration")
        ax.set_ylabel("importance p = softmax(w)")
        ax.set_title("Modality importance after each meta round")
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        with atomic_path(self.png_path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
