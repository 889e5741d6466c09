"""MCKDTrainer: availability draw, KD in the step, MONAI handlers, repeatability, AMP flag."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from monai.engines import SupervisedEvaluator
from monai.engines.utils import IterationEvents
from monai.handlers import (
    CheckpointSaver,
    LrScheduleHandler,
    StatsHandler,
    TensorBoardStatsHandler,
    ValidationHandler,
    from_engine,
)
from monai.losses import DiceCELoss, DiceFocalLoss
from torch.utils.data import DataLoader

from mckd.availability import ModalityDropout
from mckd.distillation import ModalityImportance
from mckd.engines import MCKDTrainer, availability_generator, draw_availability


def _trainer(net, data, seed=0, policy=None, max_epochs=1, **kwargs):
    torch.manual_seed(seed)
    loader = DataLoader(data, batch_size=4, shuffle=False)
    return MCKDTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9),
        loss_function=torch.nn.CrossEntropyLoss(),
        importance=ModalityImportance(net.num_modalities, seed=seed),
        modality_dropout=policy,
        seed=seed,
        **kwargs,
    )


def test_draw_is_all_modalities_in_warmup_then_per_sample_subsets():
    policy = ModalityDropout(4, warmup_iterations=3)
    assert draw_availability(4, 64, iteration=3, policy=policy).all()
    drawn = draw_availability(4, 64, iteration=4, policy=policy)
    assert drawn.any(dim=1).all() and not drawn.all()
    assert len({tuple(row.tolist()) for row in drawn}) > 4  # subsets differ between the samples of one batch


def test_draw_is_a_function_of_seed_rank_and_iteration():
    policy = ModalityDropout(4)
    draw = lambda **kw: draw_availability(4, 32, policy=policy, **kw)  # noqa: E731
    assert torch.equal(draw(iteration=5, seed=1), draw(iteration=5, seed=1))
    assert not torch.equal(draw(iteration=5, seed=1), draw(iteration=6, seed=1))
    assert not torch.equal(draw(iteration=5, seed=1), draw(iteration=5, seed=1, rank=1))
    assert not torch.equal(draw(iteration=5, seed=1), draw(iteration=4, seed=2))
    assert availability_generator(1, 5).initial_seed() == availability_generator(1, 5).initial_seed()


def test_draw_never_uses_a_modality_the_data_lacks_and_falls_back_to_the_data():
    data = torch.tensor([[True, False, False, True]] * 200)
    drawn = draw_availability(4, 200, iteration=1, policy=ModalityDropout(4), data_available=data)
    assert not (drawn & ~data).any() and drawn.any(dim=1).all()
    single = torch.tensor([[False, False, True, False]] * 50)
    assert torch.equal(draw_availability(4, 50, 1, policy=ModalityDropout(4), data_available=single), single)
    with pytest.raises(ValueError, match=r"samples \[1\] have none"):
        draw_availability(4, 2, 1, data_available=torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="shape"):
        draw_availability(4, 2, 1, data_available=torch.ones(2, 3))


def test_step_adds_weighted_kd_and_fires_monai_events(toy_net_class, classification_data):
    trainer = _trainer(toy_net_class(), classification_data(8), policy=ModalityDropout(2), decollate=False)
    fired, outputs = [], []
    for event in (IterationEvents.FORWARD_COMPLETED, IterationEvents.LOSS_COMPLETED,
                  IterationEvents.BACKWARD_COMPLETED, IterationEvents.MODEL_COMPLETED):
        trainer.add_event_handler(event, lambda e, ev=event: fired.append(ev))
    trainer.add_event_handler(IterationEvents.MODEL_COMPLETED, lambda e: outputs.append(dict(e.state.output)))
    w_before = trainer.importance.w.detach().clone()
    trainer.run()
    assert fired[:4] == [IterationEvents.FORWARD_COMPLETED, IterationEvents.LOSS_COMPLETED,
                         IterationEvents.BACKWARD_COMPLETED, IterationEvents.MODEL_COMPLETED]
    for out in outputs:
        assert set(out) >= {"image", "label", "pred", "loss", "task_loss", "kd_loss", "available"}
        assert torch.allclose(out["loss"], out["task_loss"] + 0.1 * out["kd_loss"])
    assert any(out["kd_loss"] > 0 for out in outputs)
    assert torch.equal(trainer.importance.w.detach(), w_before) and trainer.importance.w.grad is None


def test_trainer_respects_the_batch_availability(toy_net_class, classification_data):
    data = classification_data(8)
    for item in data:
        item["available"] = torch.tensor([True, False])
    trainer = _trainer(toy_net_class(), data, policy=ModalityDropout(2), decollate=False)
    seen = []
    trainer.add_event_handler(IterationEvents.MODEL_COMPLETED, lambda e: seen.append(e.state.output["available"]))
    trainer.run()
    assert all(torch.equal(a, torch.tensor([[True, False]] * 4)) for a in seen)


def test_trainer_runs_with_standard_monai_handlers(tmp_path, toy_net_class, classification_data, caplog):
    net = toy_net_class()
    data = classification_data(8)
    evaluator = SupervisedEvaluator(device="cpu", val_data_loader=DataLoader(data, batch_size=4), network=net)
    trainer = _trainer(net, data, policy=ModalityDropout(2, warmup_iterations=1), max_epochs=2)
    scheduler = torch.optim.lr_scheduler.StepLR(trainer.optimizer, step_size=1, gamma=0.5)
    handlers = [
        ValidationHandler(validator=evaluator, interval=1),
        LrScheduleHandler(scheduler, print_lr=False),
        StatsHandler(tag_name="train_loss", output_transform=from_engine(["loss"], first=True)),
        TensorBoardStatsHandler(log_dir=str(tmp_path / "tb"), tag_name="train_loss",
                                output_transform=from_engine(["loss"], first=True)),
        CheckpointSaver(save_dir=str(tmp_path / "ckpt"), save_dict={"network": net, "importance": trainer.importance},
                        save_final=True),
    ]
    for handler in handlers:
        handler.attach(trainer)
    with caplog.at_level(logging.INFO):
        trainer.run()
    assert trainer.state.iteration == 4 and evaluator.state.epoch == 2
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    assert any((tmp_path / "tb").iterdir()) and any((tmp_path / "ckpt").iterdir())
    assert math.isfinite(from_engine(["loss"], first=True)(trainer.state.output))


def test_same_seed_gives_the_same_weights(toy_net_class, classification_data):
    def train(seed):
        torch.manual_seed(seed)  # network initialisation; the trainer's seed fixes the availability draws
        trainer = _trainer(toy_net_class(), classification_data(16), seed=seed, policy=ModalityDropout(2), max_epochs=2)
        trainer.run()
        return torch.cat([p.detach().flatten() for p in trainer.network.parameters()])

    first = train(0)
    assert torch.equal(first, train(0))
    assert not torch.equal(first, train(1))


@pytest.mark.parametrize("amp, dtype", [(True, torch.bfloat16), (False, torch.float32)])
def test_amp_runs_the_forward_under_cpu_autocast(toy_net_class, classification_data, amp, dtype):
    network = toy_net_class()
    seen = []
    for module in network.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda _module, _inputs, output: seen.append(output.dtype))
    trainer = _trainer(network, classification_data(8), policy=ModalityDropout(2), amp=amp)
    trainer.run()
    assert seen and set(seen) == {dtype}
    assert math.isfinite(trainer.state.output[0]["loss"])


def test_unsupported_options_and_bad_arguments_are_rejected(toy_net_class, classification_data):
    with pytest.raises(ValueError, match="accumulation_steps"):
        _trainer(toy_net_class(), classification_data(4), accumulation_steps=2)
    with pytest.raises(ValueError, match="kd_weight"):
        _trainer(toy_net_class(), classification_data(4), kd_weight=-1.0)
    with pytest.raises(ValueError, match="modalities"):
        _trainer(toy_net_class(), classification_data(4), policy=ModalityDropout(3))


def test_dice_focal_loss_with_gamma_zero_equals_the_published_dice_plus_bce_and_dice_ce_does_not():
    # published: soft Dice 2*sum(pt) / (sum(p) + sum(t) + 1) per sample and channel, 1 - Dice averaged over batch and
    # channels, plus BCE-with-logits (mean over voxels) summed over the 3 region channels
    torch.manual_seed(0)
    logits, target = 4 * torch.randn(2, 3, 4, 5, 6), (torch.rand(2, 3, 4, 5, 6) > 0.7).float()
    prob = torch.sigmoid(logits)
    dims = (2, 3, 4)
    dice = 2 * (prob * target).sum(dims) / (prob.sum(dims) + target.sum(dims) + 1)  # [B, C]
    dice_loss = (1 - dice.mean(0)).mean()
    bce = sum(torch.nn.functional.binary_cross_entropy_with_logits(logits[:, c], target[:, c]) for c in range(3))
    published = (dice_loss + bce).item()
    monai_loss = DiceFocalLoss(sigmoid=True, gamma=0.0, lambda_focal=3.0, smooth_nr=0, smooth_dr=1)(logits, target)
    assert monai_loss.item() == pytest.approx(published, rel=1e-5)
    # MONAI 1.6 DiceCELoss applies softmax cross-entropy to multi-channel inputs even with sigmoid=True
    dice_ce = DiceCELoss(sigmoid=True, smooth_nr=0, smooth_dr=1, lambda_ce=3)(logits, target)
    assert dice_ce.item() != pytest.approx(published, rel=1e-2)


def test_trainer_keeps_all_modalities_during_warmup_then_draws_per_sample(toy_net_class, classification_data):
    trainer = _trainer(toy_net_class(), classification_data(16), policy=ModalityDropout(2, warmup_iterations=2),
                       max_epochs=2, decollate=False)
    seen = []
    trainer.add_event_handler(IterationEvents.MODEL_COMPLETED, lambda e: seen.append(e.state.output["available"]))
    trainer.run()
    assert len(seen) == 8 and all(a.all() for a in seen[:2])
    later = torch.cat(seen[2:])
    assert not later.all() and later.any(dim=1).all()
    assert len({tuple(row.tolist()) for row in later}) == 3  # {0}, {1} and {0, 1} all drawn, sample by sample


def test_gradients_are_clipped_to_max_grad_norm_before_the_step(toy_net_class, classification_data):
    net = toy_net_class()
    trainer = _trainer(net, classification_data(8), max_grad_norm=1e-3, decollate=False)
    norms = []
    trainer.add_event_handler(
        IterationEvents.MODEL_COMPLETED,
        lambda e: norms.append(torch.nn.utils.get_total_norm([p.grad for p in net.parameters() if p.grad is not None])),
    )
    trainer.run()
    assert norms and max(float(n) for n in norms) <= 1e-3 * (1 + 1e-4)


def test_max_grad_norm_must_be_positive(toy_net_class, classification_data):
    with pytest.raises(ValueError, match="max_grad_norm"):
        _trainer(toy_net_class(), classification_data(8), max_grad_norm=0.0)


def test_a_diverged_loss_stops_training_with_the_iteration_before_weights_change(toy_net_class, classification_data):
    net = toy_net_class()
    trainer = _trainer(net, classification_data(8), decollate=False)
    trainer.loss_function = lambda pred, target: torch.nn.functional.cross_entropy(pred, target) * float("nan")
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(FloatingPointError, match="diverged at iteration 1"):
        trainer.run()
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
