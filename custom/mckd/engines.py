"""The MCKD training engine: a MONAI ``SupervisedTrainer`` whose step adds availability and distillation (§1.4-1.7).

One iteration: prepare the batch (any MONAI ``prepare_batch``), draw the per-sample availability
(:func:`draw_availability`), run the network with ``available=`` while capturing its per-modality features, compute
``task loss + kd_weight * KD(features, available, p)``, back-propagate and step. Everything else (validation,
checkpoints, LR schedules, stats, TensorBoard) is left to standard MONAI handlers.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys
from torch import nn

from mckd.availability import ModalityDropout, read_available
from mckd.distillation import ModalityImportance, PairwiseDistillationLoss
from mckd.divergence import check_finite_loss
from mckd.networks.feature_tap import capture_features

__all__ = ["MCKDKeys", "availability_generator", "draw_availability", "MCKDTrainer"]


class MCKDKeys:
    """Extra keys of ``engine.state.output`` written by :class:`MCKDTrainer` (besides MONAI's ``CommonKeys``)."""

    TASK_LOSS = "task_loss"
    KD_LOSS = "kd_loss"
    AVAILABLE = "available"


def availability_generator(seed: int, iteration: int, rank: int = 0) -> torch.Generator:
    """A CPU generator whose state is a pure function of ``(seed, rank, iteration)``.

    Deriving the state instead of carrying one along makes a resumed run draw exactly the subsets of an uninterrupted
    one, with nothing extra in the checkpoint; distinct ranks of a distributed run draw distinct subsets.
    """
    state = np.random.SeedSequence([seed, rank, iteration]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def draw_availability(
    num_modalities: int,
    batch_size: int,
    iteration: int,
    policy: ModalityDropout | None = None,
    data_available: torch.Tensor | None = None,
    seed: int = 0,
    rank: int = 0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The boolean availability ``[batch_size, num_modalities]`` of one training iteration.

    It is the policy's draw AND the availability the data provides (a case that lacks a modality never trains with
    it). A sample whose intersection is empty falls back to its data availability.

    Args:
        num_modalities: number of modalities ``M``.
        batch_size: number of samples ``B``.
        iteration: 1-based training iteration (``engine.state.iteration``), passed on to the policy.
        policy: the training-time draw; ``None`` keeps every modality the data provides.
        data_available: the batch's own availability ``[B, M]`` (any dtype, non-zero = present), or ``None`` when every
            case has every modality.
        seed: seed of the draw; with ``rank`` and ``iteration`` it fixes the draw (see :func:`availability_generator`).
        rank: distributed rank of this process.
        device: device of the returned mask.

    Raises:
        ValueError: when ``data_available`` has the wrong shape or a sample without any available modality.
    """
    data = read_available(None, batch_size, num_modalities, given=data_available, device=device)
    if policy is None:
        return data
    drawn = policy(batch_size, iteration, generator=availability_generator(seed, iteration, rank), device=device)
    drawn = drawn & data
    return torch.where(drawn.any(dim=1, keepdim=True), drawn, data)


class MCKDTrainer(SupervisedTrainer):
    """Supervised training with per-sample modality dropout and importance-weighted cross-modal distillation.

    Each iteration computes
    ``loss = loss_function(pred, label) + kd_weight * distillation_loss(features, available, p)``, where
    ``features`` are the per-modality features the network routes through its ``FeatureTap`` and
    ``p = importance.probabilities()`` (updated only by :class:`mckd.handlers.MetaImportanceUpdater`).
    The network is called as ``network(inputs, *args, available=available, **kwargs)`` through ``inferer``.

    ``engine.state.output`` holds ``CommonKeys`` ``image``, ``label``, ``pred``, ``loss`` (the total) and
    ``task_loss``, ``kd_loss``, ``available`` (:class:`MCKDKeys`), so ``from_engine(["loss"], first=True)`` works as
    usual in ``StatsHandler``/``TensorBoardStatsHandler``.

    The data availability comes from, in order: an ``available`` keyword returned by ``prepare_batch``, the
    ``available_key`` entry of a dictionary batch, or "all modalities".

    AMP: with ``amp=True`` the forward and the losses run under ``torch.autocast`` for the device's type (``amp_kwargs``
    passed on). On CUDA that is float16 with MONAI's ``GradScaler``; on CPU it is PyTorch's CPU autocast (bfloat16),
    and the scaler disables itself, so the step is unscaled. The distillation loss is computed in float32.

    Args:
        device: device of the network and data.
        max_epochs: total number of epochs.
        train_data_loader: the training data loader.
        network: a network following the MCKD contract (``available=`` keyword, exactly one ``FeatureTap``).
        optimizer: optimiser of the network's parameters (not of ``importance``).
        loss_function: task loss ``loss_function(pred, label)``; for BraTS regions
            ``DiceFocalLoss(sigmoid=True, gamma=0, lambda_focal=3, smooth_nr=0, smooth_dr=1)`` equals the published
            Dice + BCE (``DiceCELoss`` does not: it applies softmax cross-entropy to multi-channel input).
        importance: the modality importance whose ``p`` weights the distillation pairs; moved to ``device`` here.
        distillation_loss: the KD loss, called as ``distillation_loss(features, available, p)``. Default
            ``PairwiseDistillationLoss()`` (L1, as published).
        kd_weight: weight of the KD loss. Default 0.1 (published). With 0 the KD loss and the feature capture are
            skipped.
        modality_dropout: training-time availability policy; ``None`` keeps every modality the data provides.
        available_key: key of the data availability ``[B, M]`` in a dictionary batch. Default ``"available"``.
        seed: seed of the availability draw. The draw of an iteration is a function of ``(seed, rank, iteration)``,
            so runs are repeatable and a resumed run needs no extra checkpoint state. Default 0.
        max_grad_norm: when given, the network's gradients are clipped to this total L2 norm before each step
            (``torch.nn.utils.clip_grad_norm_``). Default ``None``: no clipping, as published.
        kwargs: further arguments of ``monai.engines.SupervisedTrainer`` (``epoch_length``, ``prepare_batch``,
            ``inferer``, ``train_handlers``, ``amp``, ``amp_kwargs``, ``key_train_metric``, ...).

    Raises:
        TypeError: when ``importance`` is not a ``ModalityImportance`` or ``modality_dropout`` not a
            ``ModalityDropout``.
        ValueError: when ``kd_weight`` is negative, ``max_grad_norm`` is not positive, the modality counts disagree,
            or ``accumulation_steps``/``compile`` are requested (not supported by this trainer).
        FloatingPointError: during training, when the loss of an iteration is not finite (the run has diverged);
            the message names the iteration and both loss terms, before any weight is changed.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Any,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Any,
        importance: ModalityImportance,
        distillation_loss: nn.Module | None = None,
        kd_weight: float = 0.1,
        modality_dropout: ModalityDropout | None = None,
        available_key: str = "available",
        seed: int = 0,
        max_grad_norm: float | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(importance, ModalityImportance):
            raise TypeError(f"importance must be a ModalityImportance, got {type(importance).__name__}.")
        if modality_dropout is not None and not isinstance(modality_dropout, ModalityDropout):
            raise TypeError(
                f"modality_dropout must be None or a ModalityDropout, got {type(modality_dropout).__name__}."
            )
        if modality_dropout is not None and modality_dropout.num_modalities != importance.num_modalities:
            raise ValueError(
                f"modality_dropout has {modality_dropout.num_modalities} modalities but importance has "
                f"{importance.num_modalities}."
            )
        if kd_weight < 0:
            raise ValueError(f"kd_weight must be >= 0, got {kd_weight}.")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be None or > 0, got {max_grad_norm}.")
        if kwargs.get("accumulation_steps", 1) != 1 or kwargs.get("compile", False):
            raise ValueError("MCKDTrainer supports neither accumulation_steps > 1 nor compile=True.")
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            **kwargs,
        )
        self.importance = importance.to(device)
        self.distillation_loss = PairwiseDistillationLoss() if distillation_loss is None else distillation_loss
        self.kd_weight = float(kd_weight)
        self.modality_dropout = modality_dropout
        self.available_key = available_key
        self.seed = seed
        self.max_grad_norm = max_grad_norm

    def draw_available(
        self, batch_size: int, data_available: torch.Tensor | None, batchdata: Any = None
    ) -> torch.Tensor:
        """This iteration's availability ``[B, M]`` (see :func:`draw_availability`).

        The data availability is ``data_available`` (e.g. returned by ``prepare_batch``), else the batch's
        ``available_key`` entry, else every modality; it is checked once, by :func:`draw_availability`.
        """
        if data_available is None and isinstance(batchdata, Mapping):
            data_available = batchdata.get(self.available_key)
        return draw_availability(
            num_modalities=self.importance.num_modalities,
            batch_size=batch_size,
            iteration=self.state.iteration,
            policy=self.modality_dropout,
            data_available=data_available,
            seed=self.seed,
            rank=self.state.rank,
            device=self.state.device,
        )

    def distill(self, features: torch.Tensor | None, available: torch.Tensor) -> torch.Tensor:
        """The weighted KD loss of the captured per-modality features.

        Raises:
            RuntimeError: when the network's ``FeatureTap`` saw no features during the forward pass.
        """
        if features is None:
            raise RuntimeError("the network's FeatureTap was not called in the forward pass; no features to distil.")
        return self.distillation_loss(features.float(), available, self.importance.probabilities())

    def clip_gradients(self) -> None:
        """Clip the network's gradients to ``max_grad_norm`` (unscaled first under a float16 ``GradScaler``)."""
        if self.max_grad_norm is None:
            return
        if self.scaler is not None and self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.max_grad_norm)

    def _iteration(self, engine: MCKDTrainer, batchdata: dict[str, torch.Tensor]) -> dict:  # type: ignore[override]
        """One training step: availability draw, forward with feature capture, task + KD loss, backward, step.

        Raises:
            ValueError: when ``batchdata`` is None.
        """
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        inputs, targets, args, kwargs = (*batch, (), {}) if len(batch) == 2 else batch
        kwargs = dict(kwargs)
        available = engine.draw_available(len(inputs), kwargs.pop("available", None), batchdata)
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets, MCKDKeys.AVAILABLE: available}

        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        autocast = torch.autocast(torch.device(engine.state.device).type, enabled=engine.amp, **engine.amp_kwargs)
        tap = capture_features(engine.network) if engine.kd_weight > 0 else nullcontext()
        with autocast, tap as capture:
            pred = engine.inferer(inputs, engine.network, *args, available=available, **kwargs)
            engine.state.output[Keys.PRED] = pred
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            task_loss = engine.loss_function(pred, targets).mean()
            kd_loss = torch.zeros_like(task_loss) if capture is None else engine.distill(capture.features, available)
            loss = task_loss + engine.kd_weight * kd_loss
        engine.state.output.update({Keys.LOSS: loss, MCKDKeys.TASK_LOSS: task_loss, MCKDKeys.KD_LOSS: kd_loss})
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        check_finite_loss(engine.state.iteration, task_loss, kd_loss)

        if engine.scaler is not None:
            engine.scaler.scale(loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.clip_gradients()
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.clip_gradients()
            engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
