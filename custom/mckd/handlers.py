"""Ignite handler that meta-learns the modality importance on a held-out split (MCKD §1.5)."""

from __future__ import annotations

import logging
from collections.abc import Sized
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import torch
import torch.distributed as dist
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mckd.availability import read_available
from mckd.distillation import ModalityImportance

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
SummaryWriter, _ = optional_import("torch.utils.tensorboard", name="SummaryWriter")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["MetaImportanceUpdater"]


class MetaImportanceUpdater:
    """Every ``interval`` iterations, take ``steps`` optimiser steps on the importance logits ``w`` only.

    Each step draws the next batch of ``meta_loader`` (cycled), runs the network with every modality the batch
    provides and ``modality_scale=p`` (each modality's fused feature scaled by ``p_m``), computes the task loss and
    its gradient with respect to ``w`` alone (``torch.autograd.grad``), and steps ``optimizer``. The network's
    parameters, their ``.grad`` and its buffers are bit-identical before and after a round.

    When: the published code runs a round before training iteration ``i`` (0-based) whenever ``i % interval == 0``,
    so also before the very first one. Ignite counts iterations from 1, so this handler runs at
    ``Events.ITERATION_STARTED`` when ``(engine.state.iteration - 1) % interval == 0``: iterations 1, N + 1, 2N + 1, ...
    A run resumed after iteration ``k`` therefore runs a round first exactly when ``k % interval == 0``.

    Network mode: the meta forward runs in ``train()`` mode by default, as published: the objective rates the
    importance on the features the decoder is being trained with (batch statistics, not running estimates that lag
    behind early in training). Buffers (e.g. BatchNorm running statistics) are restored after the round, so training
    mode has no side effect on the network; the mode of every submodule is restored too. Stochastic layers
    (dropout) draw from the global random state. ``train_mode=False`` runs the meta forward in ``eval()`` mode.

    Logging: after each round ``p`` goes to the logger and to ``engine.state.metrics["<metric_prefix><name>"]`` (so
    MONAI's ``StatsHandler``/``TensorBoardStatsHandler``/``MLFlowHandler`` report it at their epoch events), and, when
    ``summary_writer`` is given, to TensorBoard at the current iteration.

    Distributed: with ``torch.distributed`` initialised the gradient of ``w`` is averaged over the ranks, so every
    rank keeps the same ``w``; a ``DistributedDataParallel`` network is called through its ``module``.

    Checkpoints: ``importance`` and ``optimizer`` are ordinary ``state_dict`` objects; add them to the ``save_dict``
    of MONAI's ``CheckpointSaver`` and the ``load_dict`` of ``CheckpointLoader``.

    Args:
        importance: the modality importance holding ``w``.
        optimizer: optimiser of ``importance``'s parameters only (published: ``Adam(lr=1e-2, weight_decay=5e-4)``).
        meta_loader: held-out meta-validation batches (published: augmented random crops, batch size 1).
        interval: iterations between rounds (``N``; published 100 during warm-up, 500 afterwards). Default 100.
        steps: optimiser steps per round (``K``; published 20). Default 20.
        network: the network; ``None`` (default) uses ``engine.network``.
        loss_function: the task loss ``loss_function(pred, label)``; ``None`` (default) uses ``engine.loss_function``.
        prepare_batch: MONAI ``prepare_batch`` callable for meta batches; ``None`` (default) uses
            ``engine.prepare_batch``. An ``available`` keyword it returns is the batch's availability.
        available_key: key of the data availability ``[B, M]`` in a dictionary batch; absent means all modalities.
        device: device of the meta batches; ``None`` (default) uses ``engine.state.device``.
        amp: run the meta forward under ``torch.autocast`` for the device's type. Default False. On CUDA (float16)
            the loss is scaled by the handler's own ``torch.amp.GradScaler`` before the gradient of ``w`` is taken
            (a per-voxel loss gradient is far below float16's normal range); on CPU autocast uses bfloat16 unscaled.
        train_mode: run the meta forward in ``train()`` mode (default) or ``eval()`` mode; see above.
        modality_names: names for logs and metrics; default ``m0, m1, ...``.
        metric_prefix: prefix of the ``engine.state.metrics`` keys. Default ``"importance/"``.
        summary_writer: optional TensorBoard ``SummaryWriter`` that receives ``p`` every round.
        name: logger name; ``None`` (default) uses ``engine.logger``.

    Raises:
        TypeError: when ``importance`` is not a ``ModalityImportance``, ``optimizer`` not a torch optimiser, or
            ``prepare_batch``/``loss_function`` not callable.
        ValueError: when ``optimizer`` holds parameters other than ``importance``'s, ``interval`` or ``steps`` < 1,
            or ``modality_names`` has the wrong length.
    """

    def __init__(
        self,
        importance: ModalityImportance,
        optimizer: torch.optim.Optimizer,
        meta_loader: Iterable,
        interval: int = 100,
        steps: int = 20,
        network: nn.Module | None = None,
        loss_function: Callable | None = None,
        prepare_batch: Callable | None = None,
        available_key: str = "available",
        device: torch.device | str | None = None,
        amp: bool = False,
        train_mode: bool = True,
        modality_names: Sequence[str] | None = None,
        metric_prefix: str = "importance/",
        summary_writer: SummaryWriter | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(importance, ModalityImportance):
            raise TypeError(f"importance must be a ModalityImportance, got {type(importance).__name__}.")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}.")
        own = {id(p) for p in importance.parameters()}
        if any(id(p) not in own for group in optimizer.param_groups for p in group["params"]):
            raise ValueError("optimizer must optimise only the parameters of importance (w), not the network's.")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"interval must be an int >= 1, got {interval!r}.")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {steps!r}.")
        if loss_function is not None and not callable(loss_function):
            raise TypeError(f"loss_function must be callable, got {type(loss_function).__name__}.")
        if prepare_batch is not None and not callable(prepare_batch):
            raise TypeError(f"prepare_batch must be callable, got {type(prepare_batch).__name__}.")
        names = [f"m{m}" for m in range(importance.num_modalities)] if modality_names is None else list(modality_names)
        if len(names) != importance.num_modalities:
            raise ValueError(f"modality_names must have {importance.num_modalities} entries, got {len(names)}.")
        self.importance = importance
        self.optimizer = optimizer
        self.meta_loader = meta_loader
        self.interval = interval
        self.steps = steps
        self.network = network
        self.loss_function = loss_function
        self.prepare_batch = prepare_batch
        self.available_key = available_key
        self.device = device
        self.amp = amp
        self.train_mode = train_mode
        self.modality_names = names
        self.metric_prefix = metric_prefix
        self.summary_writer = summary_writer
        self.logger = logging.getLogger(name)
        self._name = name
        self._batches: Iterator | None = None
        self._scaler: torch.amp.GradScaler | None = None

    def attach(self, engine: Engine) -> None:
        """
        Args:
            engine: the training engine (its ``network``, ``loss_function``, ``prepare_batch`` and ``state.device``
                serve as defaults).

        Raises:
            ValueError: when ``meta_loader`` has a length of 0. A loader without a length that yields nothing fails
                in the first round, which runs before the first training step.
        """
        if isinstance(self.meta_loader, Sized) and len(self.meta_loader) == 0:
            raise ValueError(
                "meta_loader is empty: the meta-update of the modality importance needs meta-validation batches."
            )
        if self._name is None:
            self.logger = engine.logger
        engine.add_event_handler(
            Events.ITERATION_STARTED(event_filter=lambda _, iteration: (iteration - 1) % self.interval == 0), self
        )

    def _cycle(self) -> Iterator:
        """Batches of ``meta_loader`` without end, starting it again when exhausted."""
        while True:
            empty = True
            for batch in self.meta_loader:
                empty = False
                yield batch
            if empty:
                raise ValueError("meta_loader yielded no batch: the meta-update needs meta-validation batches.")

    def _meta_step(self, engine: Engine, network: nn.Module, batchdata: Any, device: torch.device) -> float:
        """One optimiser step on ``w`` from one meta batch; returns the batch's task loss."""
        prepare_batch = engine.prepare_batch if self.prepare_batch is None else self.prepare_batch
        loss_function = engine.loss_function if self.loss_function is None else self.loss_function
        batch = prepare_batch(batchdata, device, False)
        inputs, targets, args, kwargs = (*batch, (), {}) if len(batch) == 2 else batch
        kwargs = dict(kwargs)
        available = read_available(
            batchdata, len(inputs), self.importance.num_modalities, self.available_key, kwargs.pop("available", None),
            device=device,
        )
        with torch.autocast(device.type, enabled=self.amp):
            pred = network(inputs, *args, available=available, modality_scale=self.importance.probabilities(), **kwargs)
            loss = loss_function(pred, targets).mean()
        (grad,) = torch.autograd.grad(self._scaler.scale(loss), [self.importance.w], allow_unused=True)
        if grad is None:
            raise RuntimeError("the meta loss does not depend on modality_scale: the network ignores it.")
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(grad)
            grad = grad / dist.get_world_size()
        self.optimizer.zero_grad(set_to_none=True)
        self.importance.w.grad = grad
        self._scaler.step(self.optimizer)  # unscales; skips the step when the scaled gradient overflowed
        self._scaler.update()
        return float(loss.detach())

    def __call__(self, engine: Engine) -> None:
        """
        Args:
            engine: the training engine.
        """
        network = engine.network if self.network is None else self.network
        network = network.module if isinstance(network, DistributedDataParallel) else network
        device = torch.device(engine.state.device if self.device is None else self.device)
        if self._batches is None:
            self._batches = self._cycle()
        if self._scaler is None:
            self._scaler = torch.amp.GradScaler(device.type, enabled=self.amp and device.type == "cuda")
        modes = [(module, module.training) for module in network.modules()]
        buffers = [buffer.detach().clone() for buffer in network.buffers()]
        network.train(self.train_mode)
        try:
            losses = [self._meta_step(engine, network, next(self._batches), device) for _ in range(self.steps)]
        finally:
            with torch.no_grad():
                for buffer, saved in zip(network.buffers(), buffers):
                    buffer.copy_(saved)
            for module, training in modes:
                module.training = training
        self._report(engine, sum(losses) / len(losses))

    def _report(self, engine: Engine, meta_loss: float) -> None:
        """Log ``p`` after a round: logger, ``engine.state.metrics`` and the optional ``summary_writer``."""
        probabilities = self.importance.probabilities().detach().cpu().tolist()
        iteration = engine.state.iteration
        self.logger.info(
            "Modality importance after the meta round at iteration %d (meta loss %.4f): %s",
            iteration,
            meta_loss,
            ", ".join(f"{n}={p:.4f}" for n, p in zip(self.modality_names, probabilities)),
        )
        for modality, value in zip(self.modality_names, probabilities):
            tag = f"{self.metric_prefix}{modality}"
            engine.state.metrics[tag] = value
            if self.summary_writer is not None:
                self.summary_writer.add_scalar(tag, value, iteration)
