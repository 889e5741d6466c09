"""A tiny but complete MCKD training setup (network, SGD + LR schedule, importance + Adam, meta rounds, checkpoints).

Used in-process by the resume tests and as a script by the signal tests::

    python toy_training.py --ckpt-dir DIR --epochs 4 [--resume FILE] [--ready-at K --ready-file F] [--delay S]

The script trains on CPU with one thread, saves an epoch checkpoint (``AtomicCheckpointSaver``), catches SIGINT /
SIGTERM (``GracefulInterrupt``) and exits with its status. With ``--ready-at K`` it writes ``--ready-file`` after
iteration ``K`` so a test knows when to signal or kill it; ``--delay`` slows each iteration down.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from ignite.engine import Events
from monai.handlers import LrScheduleHandler
from torch import nn
from torch.utils.data import DataLoader

from mckd.availability import ModalityDropout
from mckd.checkpoints import AtomicCheckpointSaver, SafeCheckpointLoader
from mckd.distillation import ModalityImportance
from mckd.engines import MCKDTrainer
from mckd.handlers import MetaImportanceUpdater
from mckd.interrupt import GracefulInterrupt
from mckd.networks.feature_tap import FeatureTap

NUM_MODALITIES, IN_FEATURES, NUM_CLASSES = 3, 4, 3
#: Training samples and batch size: 4 iterations per epoch.
NUM_SAMPLES, BATCH_SIZE = 16, 4


class ToyNet(nn.Module):
    """Shared per-modality encoder -> FeatureTap -> mean fill of missing modalities -> optional scaling -> head."""

    def __init__(self, features: int = 8) -> None:
        super().__init__()
        self.encoder = nn.Linear(IN_FEATURES, features)
        self.tap = FeatureTap()
        self.head = nn.Linear(NUM_MODALITIES * features, NUM_CLASSES)

    def forward(
        self, x: torch.Tensor, available: torch.Tensor | None = None, modality_scale: torch.Tensor | None = None
    ) -> torch.Tensor:
        if available is None:
            available = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        mask = available.unsqueeze(-1)
        feats = self.tap(torch.where(mask, torch.relu(self.encoder(torch.where(mask, x, 0.0))), 0.0))
        fused = torch.where(mask, feats, feats.sum(1, keepdim=True) / mask.sum(1, keepdim=True))
        if modality_scale is not None:
            fused = fused * modality_scale.reshape(1, -1, 1).to(fused.dtype)
        return self.head(fused.flatten(1))


def samples(n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """``n`` samples whose first modality encodes the class."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    x = torch.randn(n, NUM_MODALITIES, IN_FEATURES, generator=g)
    x[torch.arange(n), 0, labels] += 2.0
    return [{"image": x[i], "label": labels[i]} for i in range(n)]


def build(max_epochs: int, features: int = 8) -> tuple[MCKDTrainer, dict[str, Any]]:
    """The trainer and its checkpoint dictionary, identical for every call (fixed seeds, no shuffling).

    Data order is a function of the epoch (no shuffling); the meta loader holds exactly ``steps`` batches, so every
    meta round reads the same batches whether or not the run was resumed.
    """
    torch.manual_seed(0)
    network = ToyNet(features)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=max_epochs * 4, power=0.9)
    importance = ModalityImportance(NUM_MODALITIES, seed=0)
    meta_optimizer = torch.optim.Adam(importance.parameters(), lr=1e-2, weight_decay=5e-4)
    handlers = [
        LrScheduleHandler(scheduler, epoch_level=False, print_lr=False),
        MetaImportanceUpdater(importance, meta_optimizer, DataLoader(samples(2, seed=1), batch_size=1), 3, 2),
    ]
    trainer = MCKDTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=DataLoader(samples(NUM_SAMPLES, seed=0), batch_size=BATCH_SIZE),
        network=network,
        optimizer=optimizer,
        loss_function=nn.CrossEntropyLoss(),
        importance=importance,
        modality_dropout=ModalityDropout(NUM_MODALITIES, warmup_iterations=2),
        seed=7,
        train_handlers=handlers,
    )
    save_dict = {
        "model": network,
        "optimizer": optimizer,
        "lr_scheduler": scheduler,
        "modality_weights": importance,
        "meta_optimizer": meta_optimizer,
        "trainer": trainer,
    }
    return trainer, save_dict


def main(argv: Sequence[str] | None = None) -> int:
    """Train (optionally resumed), with epoch checkpoints and graceful interruption; return the exit status."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt-dir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--resume", type=Path)
    parser.add_argument("--ready-at", type=int, default=0)
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    trainer, save_dict = build(args.epochs)
    AtomicCheckpointSaver(str(args.ckpt_dir), save_dict, file_prefix="last", save_interval=1, n_saved=1).attach(trainer)
    interrupt = GracefulInterrupt(save_dict, args.ckpt_dir)
    interrupt.attach(trainer)
    if args.resume:
        SafeCheckpointLoader(args.resume, save_dict).attach(trainer)

    @trainer.on(Events.ITERATION_COMPLETED)
    def _pace(engine: MCKDTrainer) -> None:
        if args.ready_file is not None and engine.state.iteration == args.ready_at:
            args.ready_file.write_text(str(engine.state.iteration))
        time.sleep(args.delay)

    trainer.run()
    return interrupt.exit_status


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
