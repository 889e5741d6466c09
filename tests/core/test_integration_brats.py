"""MCKDTrainer + MetaImportanceUpdater + MultiModalSegNet on synthetic BraTS-format cases (light backbone, CPU)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.engines.utils import IterationEvents
from monai.losses import DiceFocalLoss

from data_prep.synthetic_brats import case_rng, generate_case
from mckd.availability import ModalityDropout
from mckd.brats.conventions import MODALITIES, REGIONS
from mckd.distillation import ModalityImportance
from mckd.engines import MCKDTrainer
from mckd.handlers import MetaImportanceUpdater

# runs as soon as the segmentation network is part of the package
segnet = pytest.importorskip("mckd.networks.segnet", reason="mckd.networks.segnet not added yet")

SHAPE = (16, 16, 16)


def _cases(indices):
    items = []
    for index in indices:
        case = generate_case(SHAPE, case_rng(0, index), enhancing=True)
        image = np.stack([case.images[m] for m in MODALITIES]).astype(np.float32)
        for channel in image:  # z-score inside the brain, background 0 (NormalizeIntensityd(nonzero, channel_wise))
            inside = channel != 0
            channel[inside] = (channel[inside] - channel[inside].mean()) / (channel[inside].std() + 1e-8)
        label = np.stack([case.regions[r] for r in REGIONS]).astype(np.float32)
        items.append({"image": torch.from_numpy(image), "label": torch.from_numpy(label)})
    return items


def _run(paper_exact, policy, optimizer_fn, iterations, meta=None):
    torch.manual_seed(0)
    net = segnet.MultiModalSegNet(4, 3, paper_exact=paper_exact, filters=(4, 8, 16), subunits=1)
    importance = ModalityImportance(4, seed=0)
    handlers = []
    if meta is not None:
        handlers.append(MetaImportanceUpdater(
            importance, torch.optim.Adam(importance.parameters(), lr=1e-2, weight_decay=5e-4),
            torch.utils.data.DataLoader(meta, batch_size=1), interval=10, steps=2, modality_names=MODALITIES,
        ))
    data = _cases([0, 1])
    trainer = MCKDTrainer(
        device="cpu",
        max_epochs=iterations,
        train_data_loader=torch.utils.data.DataLoader(data, batch_size=2),
        network=net,
        optimizer=optimizer_fn(net.parameters()),
        loss_function=DiceFocalLoss(sigmoid=True, gamma=0.0, lambda_focal=3.0, smooth_nr=0, smooth_dr=1),
        importance=importance,
        modality_dropout=policy,
        train_handlers=handlers,
        decollate=False,
    )
    record = []
    trainer.add_event_handler(IterationEvents.MODEL_COMPLETED, lambda e: record.append(
        (float(e.state.output["task_loss"]), float(e.state.output["loss"]), e.state.output["available"].clone())))
    trainer.run()
    return trainer, record


def test_twenty_iterations_on_synthetic_brats_decrease_the_training_loss():
    trainer, record = _run(False, None, lambda p: torch.optim.Adam(p, lr=3e-3), 20, meta=_cases([2]))
    task = [r[0] for r in record]
    assert len(task) == 20 and task[-1] < 0.95 * task[0] and np.mean(task[-5:]) < np.mean(task[:5]), task
    assert any(r[1] > r[0] for r in record)  # the KD term contributes
    assert trainer.state.metrics["importance/flair"] != pytest.approx(0.25)


@pytest.mark.parametrize("paper_exact", [False, True])
def test_random_subsets_from_scratch_stay_finite(paper_exact):
    # published optimiser (SGD, momentum 0.99, Nesterov, lr 1e-2), no warm-up: single-modality steps from the start
    sgd = lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.99, nesterov=True)  # noqa: E731
    trainer, record = _run(paper_exact, ModalityDropout(4), sgd, 6)
    assert any((r[2].sum(dim=1) == 1).any() for r in record)  # single-modality samples were drawn
    assert all(math.isfinite(r[1]) for r in record)
    assert all(torch.isfinite(p).all() for p in trainer.network.parameters())
