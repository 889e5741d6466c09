"""Progress bars for the long loops (training, evaluation, synthetic data, AV-MNIST builds): tqdm, silent off a
terminal.

MONAI's own progress reporting is tqdm (``monai[tqdm]``, e.g. ``monai.apps.download_url``); ignite's ``ProgressBar``
(tqdm too) serves the engines, such as inference's evaluator. Loops outside an engine use :func:`progress_bar`,
which draws on ``stderr`` only when it is a terminal (tqdm's ``disable=None``), so logs, CI output and files
redirected from a command stay free of bar lines.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING

from monai.config import PathLike
from monai.utils import IgniteInfo, min_version, optional_import
from tqdm import tqdm

from mckd.divergence import iteration_loss

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["progress_bar", "TrainingProgress"]


def progress_bar(total: int | None, desc: str, unit: str = "it", file: IO[str] | None = None) -> tqdm:
    """A tqdm bar for ``total`` steps (``update(n)`` per step; a context manager that closes it).

    Args:
        total: number of steps, or None when unknown.
        desc: what is counted, shown before the bar (e.g. ``"synthetic cases"``).
        unit: name of one step. Default ``"it"``.
        file: where to draw; default ``sys.stderr``. Nothing is drawn unless it is a terminal.
    """
    return tqdm(total=total, desc=desc, unit=unit, file=file, disable=None, leave=False, dynamic_ncols=True)


class TrainingProgress:
    """One progress bar over the whole training on a terminal; the per-iteration log lines in a file.

    The training's ``StatsHandler`` (named ``logger_name``) writes a line per iteration. All of them go to
    ``log_dir/training.log``. On a terminal they go there only, and the console shows one bar over all iterations
    with the last loss instead (ignite's ``ProgressBar`` restarts every epoch); elsewhere (CI, a redirected run) the
    console keeps the lines and draws no bar.

    Args:
        log_dir: folder of ``training.log`` (created).
        logger_name: the ``name`` of the training's ``StatsHandler``. Default ``"mckd.training"``.
        stream: where the bar is drawn; default ``sys.stderr``.
    """

    def __init__(self, log_dir: PathLike, logger_name: str = "mckd.training", stream: IO[str] | None = None) -> None:
        self.log_file = Path(log_dir) / "training.log"
        self.logger = logging.getLogger(logger_name)
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty()
        self._bar: tqdm | None = None

    def attach(self, engine: Engine) -> None:
        """
        Args:
            engine: the trainer.
        """
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        for old in [h for h in self.logger.handlers if getattr(h, "mckd_training_log", False)]:
            self.logger.removeHandler(old)  # an earlier run in this process
            old.close()
        handler = logging.FileHandler(self.log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
        handler.mckd_training_log = True
        self.logger.addHandler(handler)
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = not self.terminal
        if not self.terminal:
            return
        engine.add_event_handler(Events.STARTED, self._open)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._step)
        engine.add_event_handler(Events.COMPLETED, self._close)
        engine.add_event_handler(Events.TERMINATE, self._close)

    def _open(self, engine: Engine) -> None:
        total = engine.state.max_epochs * engine.state.epoch_length
        self._bar = tqdm(
            total=total, initial=engine.state.iteration, desc="training", unit="it", file=self.stream,
            dynamic_ncols=True,
        )
        self._bar.write(f"per-iteration log: {self.log_file}")

    def _step(self, engine: Engine) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        loss = iteration_loss(engine.state.output)
        if loss is not None:
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def _close(self, engine: Engine) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
