"""A diverging training stops with a message naming the iteration and the growth, and writes no final model."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine

from mckd.checkpoints import AtomicCheckpointSaver
from mckd.divergence import DivergenceStop, TrainingDivergedError


def _trainer(losses: list[float]) -> Engine:
    return Engine(lambda engine, batch: {"loss": torch.tensor(losses[engine.state.iteration - 1])})


def test_a_loss_far_above_its_starting_level_stops_the_run_naming_iteration_and_growth():
    losses = [3.0, 2.8, 2.9, 2.7, 2.6, 2.5, 4000.0, 1.0]
    trainer = _trainer(losses)
    DivergenceStop(factor=1000, reference_iterations=3).attach(trainer)
    with pytest.raises(TrainingDivergedError, match=r"iteration 7: the loss 4000 is 1.38e\+03 times its starting level 2.9"):
        trainer.run(range(len(losses)), max_epochs=1)


def test_a_noisy_but_falling_loss_trains_to_the_end():
    losses = [3.0, 2.0, 6.0, 1.0, 9.0, 0.5]
    trainer = _trainer(losses)
    DivergenceStop(factor=1000, reference_iterations=2).attach(trainer)
    trainer.run(range(len(losses)), max_epochs=1)
    assert trainer.state.iteration == len(losses)


def test_a_non_finite_loss_stops_the_run_at_once():
    trainer = _trainer([float("nan")])
    DivergenceStop().attach(trainer)
    with pytest.raises(TrainingDivergedError, match="iteration 1: the loss is nan"):
        trainer.run([0], max_epochs=1)


@pytest.mark.parametrize("factor, reference", [(1.0, 5), (10.0, 0)])
def test_unusable_settings_are_refused(factor, reference):
    with pytest.raises(ValueError):
        DivergenceStop(factor=factor, reference_iterations=reference)


def test_the_final_checkpoint_is_not_written_when_the_run_ends_in_an_exception(tmp_path):
    trainer = _trainer([float("nan")])
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": torch.nn.Linear(2, 2)}, save_final=True,
                                  final_filename="model_final.pt")
    saver.attach(trainer)
    DivergenceStop().attach(trainer)
    with pytest.raises(TrainingDivergedError):
        trainer.run([0], max_epochs=1)
    assert not (tmp_path / "model_final.pt").exists()
