"""Stop a training run whose loss has diverged, before it writes anything that looks like a result.

A non-finite loss is caught inside the trainer's step (:func:`check_finite_loss`); a loss that stays
finite but explodes (a learning rate far too high) is caught by :class:`DivergenceStop` after the iteration. Either
raises :class:`TrainingDivergedError`: the run ends with a non-zero exit status and that message as its last line
(``mckd.bundle_checks``), the last epoch checkpoint stays the resume point, and no final or deployable model is
written (``mckd.checkpoints`` writes those only when training completes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["TrainingDivergedError", "check_finite_loss", "iteration_loss", "DivergenceStop"]

#: What the messages advise.
ADVICE = "Lower the learning rate or set max_grad_norm (gradient clipping); resume from the last checkpoint."


class TrainingDivergedError(FloatingPointError):
    """The training loss became non-finite or grew far beyond its starting level; the message says where."""


def check_finite_loss(iteration: int, task_loss: torch.Tensor, kd_loss: torch.Tensor) -> None:
    """Stop a diverged run inside its step, before any weight is changed by a NaN or infinite loss.

    Raises:
        TrainingDivergedError: when either loss term is NaN or infinite, naming the iteration and both terms.
    """
    if not bool(torch.isfinite(task_loss).all() and torch.isfinite(kd_loss).all()):
        raise TrainingDivergedError(
            f"training diverged at iteration {iteration}: task loss {float(task_loss):.4g}, KD loss "
            f"{float(kd_loss):.4g}. {ADVICE}"
        )


def iteration_loss(output: Any, key: str = "loss") -> float | None:
    """The loss of an iteration from ``engine.state.output``: a dictionary, or (MONAI's ``decollate``) a list of
    per-sample dictionaries that all carry it; None when it is absent."""
    sample = output[0] if isinstance(output, list) and output else output
    value = sample.get(key) if isinstance(sample, Mapping) else None
    return None if value is None else float(value)


class DivergenceStop:
    """Ignite handler: stop training when the loss exceeds ``factor`` times its level at the run's first iterations.

    The starting level is the mean loss of the first ``reference_iterations`` iterations of this run (a resumed run
    measures its own). Dice + BCE starts near its largest value and falls, so a loss ``factor`` times higher means
    exploding weights, not a hard batch.

    Args:
        factor: how many times the starting level the loss may reach. Default 1000.
        reference_iterations: iterations that set the starting level. Default 5.
        output_key: the loss in ``engine.state.output``. Default ``"loss"``.

    Raises:
        ValueError: when ``factor`` <= 1 or ``reference_iterations`` < 1.
    """

    def __init__(self, factor: float = 1000.0, reference_iterations: int = 5, output_key: str = "loss") -> None:
        if not factor > 1:
            raise ValueError(f"factor must be > 1, got {factor}.")
        if reference_iterations < 1:
            raise ValueError(f"reference_iterations must be >= 1, got {reference_iterations}.")
        self.factor = float(factor)
        self.reference_iterations = reference_iterations
        self.output_key = output_key
        self._first: list[float] = []

    def attach(self, engine: Engine) -> None:
        """
        Args:
            engine: the trainer.
        """
        engine.add_event_handler(Events.STARTED, lambda _: self._first.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """
        Raises:
            TrainingDivergedError: when the loss is not finite or exceeds ``factor`` times its starting level.
        """
        loss = iteration_loss(engine.state.output, self.output_key)
        if loss is None:
            return
        iteration = engine.state.iteration
        if not math.isfinite(loss):
            raise TrainingDivergedError(f"training diverged at iteration {iteration}: the loss is {loss}. {ADVICE}")
        if len(self._first) < self.reference_iterations:
            self._first.append(loss)
            return
        start = sum(self._first) / len(self._first)
        if loss > self.factor * start:
            raise TrainingDivergedError(
                f"training diverged at iteration {iteration}: the loss {loss:.4g} is {loss / start:.3g} times its "
                f"starting level {start:.4g} (the limit is {self.factor:g} times, setting divergence_factor). {ADVICE}"
            )
