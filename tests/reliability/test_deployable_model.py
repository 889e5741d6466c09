"""``models/model.pt`` is the deployable network's plain state dict, with the learned importance beside it."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events

from mckd.checkpoints import (
    IMPORTANCE_FILENAME,
    MODEL_FILENAME,
    CheckpointError,
    DeployableModelSaver,
    load_deployable,
)
from mckd.distillation import ModalityImportance


def _run_training(save_dir, network, importance, scores: list[float] | None, fail: bool = False) -> None:
    """One epoch per score, a validation after each (when ``scores`` is given) that sets the network to the epoch."""
    validator = None
    if scores is not None:
        validator = Engine(lambda engine, batch: None)
        validator.state.key_metric_name = "val_mean_dice"
        validator.add_event_handler(
            Events.EPOCH_COMPLETED, lambda engine: engine.state.metrics.update(val_mean_dice=scores.pop(0))
        )

    def _step(engine: Engine, batch: int) -> None:
        if fail:
            raise FloatingPointError("loss is NaN")
        with torch.no_grad():
            network.weight.fill_(float(engine.state.epoch))

    trainer = Engine(_step)
    if validator is not None:
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: validator.run([0], max_epochs=1))
    DeployableModelSaver(save_dir, network, importance, validator).attach(trainer)
    trainer.run([0], max_epochs=len(scores) if scores else 2)


def test_with_validation_model_pt_is_the_best_validation_network_as_a_plain_state_dict(tmp_path):
    network, importance = torch.nn.Linear(3, 2), ModalityImportance(4, seed=0)
    _run_training(tmp_path, network, importance, scores=[0.5, 0.7, 0.6])
    state = torch.load(tmp_path / MODEL_FILENAME, weights_only=True)
    assert set(state) == {"weight", "bias"}
    assert torch.all(state["weight"] == 2.0)  # epoch 2 scored best; the final network is epoch 3
    assert torch.equal(torch.load(tmp_path / IMPORTANCE_FILENAME, weights_only=True)["w"], importance.w.detach())


def test_without_validation_model_pt_is_the_final_network(tmp_path):
    network = torch.nn.Linear(3, 2)
    _run_training(tmp_path, network, ModalityImportance(2), scores=None)
    assert torch.all(torch.load(tmp_path / MODEL_FILENAME, weights_only=True)["weight"] == 2.0)
    assert (tmp_path / IMPORTANCE_FILENAME).is_file()


def test_a_failed_training_writes_no_model(tmp_path):
    with pytest.raises(FloatingPointError):
        _run_training(tmp_path, torch.nn.Linear(3, 2), None, scores=None, fail=True)
    assert not (tmp_path / MODEL_FILENAME).exists()


def test_load_deployable_reads_the_plain_state_dict_and_the_importance_beside_it(tmp_path):
    source, importance = torch.nn.Linear(3, 2), ModalityImportance(4, seed=1)
    torch.save(source.state_dict(), tmp_path / MODEL_FILENAME)
    torch.save(importance.state_dict(), tmp_path / IMPORTANCE_FILENAME)
    network, loaded_importance = torch.nn.Linear(3, 2), ModalityImportance(4, seed=2)
    load_deployable(network, tmp_path / MODEL_FILENAME, loaded_importance)
    assert torch.equal(network.weight, source.weight)
    assert torch.equal(loaded_importance.w, importance.w)


def test_load_deployable_reads_a_training_checkpoint_with_both_entries(tmp_path):
    source, importance = torch.nn.Linear(3, 2), ModalityImportance(4, seed=1)
    torch.save({"model": source.state_dict(), "modality_weights": importance.state_dict()}, tmp_path / "final.pt")
    network, loaded_importance = torch.nn.Linear(3, 2), ModalityImportance(4, seed=2)
    load_deployable(network, tmp_path / "final.pt", loaded_importance)
    assert torch.equal(network.bias, source.bias)
    assert torch.equal(loaded_importance.w, importance.w)


def test_load_deployable_without_the_importance_file_names_both_files(tmp_path):
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / MODEL_FILENAME)
    with pytest.raises(CheckpointError, match=f"{IMPORTANCE_FILENAME}' does not exist, and '.*{MODEL_FILENAME}' holds"):
        load_deployable(torch.nn.Linear(3, 2), tmp_path / MODEL_FILENAME, ModalityImportance(4))
