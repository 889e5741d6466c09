"""MetaImportanceUpdater: w-only updates, schedule, checkpoint resume, and the informative-vs-noise toy problem."""

from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Events
from monai.handlers import CheckpointLoader, CheckpointSaver
from torch.utils.data import DataLoader

from mckd.availability import ModalityDropout
from mckd.distillation import ModalityImportance
from mckd.engines import MCKDTrainer
from mckd.handlers import MetaImportanceUpdater


def _setup(net, data, meta_data, interval=3, steps=2, max_epochs=1, batch_size=4, meta_batch_size=1, **handler_kwargs):
    num_modalities = getattr(net, "module", net).num_modalities  # through a DDP wrapper
    importance = ModalityImportance(num_modalities, seed=0)
    meta_optimizer = torch.optim.Adam(importance.parameters(), lr=1e-2, weight_decay=5e-4)
    updater = MetaImportanceUpdater(
        importance,
        meta_optimizer,
        DataLoader(meta_data, batch_size=meta_batch_size, shuffle=True),
        interval=interval,
        steps=steps,
        **handler_kwargs,
    )
    trainer = MCKDTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=DataLoader(data, batch_size=batch_size),
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9),
        loss_function=torch.nn.CrossEntropyLoss(),
        importance=importance,
        modality_dropout=ModalityDropout(num_modalities),
        train_handlers=[updater],
    )
    return trainer, updater


def _state(net):
    params = {n: p.detach().clone() for n, p in net.named_parameters()}
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    return params, grads, buffers


@pytest.mark.parametrize("amp", [False, True])
def test_meta_round_changes_w_only_and_leaves_network_bit_identical(toy_net_class, classification_data, amp):
    torch.manual_seed(0)
    net = toy_net_class(batch_norm=True)
    trainer, updater = _setup(net, classification_data(8), classification_data(4, seed=1), meta_batch_size=2, amp=amp)
    trainer.state.iteration = 1
    net.eval()
    torch.nn.CrossEntropyLoss()(net(torch.randn(4, 2, 4)), torch.tensor([0, 1, 2, 0])).backward()  # non-zero .grad
    before, w_before = _state(net), updater.importance.w.detach().clone()
    updater(trainer)
    after = _state(net)
    assert not torch.equal(updater.importance.w.detach(), w_before)
    for kind_before, kind_after in zip(before, after):
        assert kind_before.keys() == kind_after.keys()
        for name in kind_before:
            assert torch.equal(kind_before[name], kind_after[name]), name
    assert not net.training  # the mode of the network is restored
    assert all(torch.isfinite(torch.tensor(v)) for k, v in trainer.state.metrics.items() if k.startswith("importance/"))


def test_rounds_run_before_iterations_1_n_plus_1_and_so_on(toy_net_class, classification_data, caplog):
    torch.manual_seed(0)
    trainer, updater = _setup(toy_net_class(), classification_data(28), classification_data(3, seed=1), interval=3)
    rounds = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: rounds.append(
        (e.state.iteration, updater.optimizer.state[updater.importance.w]["step"].item())))
    with caplog.at_level(logging.INFO):
        trainer.run()  # 7 iterations: rounds before iterations 1, 4 and 7 (0-based 0, 3, 6), 2 steps each
    assert [steps for _, steps in rounds] == [2, 2, 2, 4, 4, 4, 6]
    assert sum("Modality importance" in r.getMessage() for r in caplog.records) == 3
    assert set(trainer.state.metrics) >= {"importance/m0", "importance/m1"}


def test_resume_restores_w_and_its_optimiser_state_exactly(tmp_path, toy_net_class, classification_data):
    torch.manual_seed(0)
    trainer, updater = _setup(toy_net_class(), classification_data(8), classification_data(3, seed=1), interval=1)
    save_dict = {"network": trainer.network, "optimizer": trainer.optimizer,
                 "importance": updater.importance, "importance_optimizer": updater.optimizer}
    CheckpointSaver(str(tmp_path), save_dict, save_final=True, final_filename="final.pt").attach(trainer)
    trainer.run()
    saved_w = updater.importance.w.detach().clone()
    saved_state = {k: v.clone() for k, v in updater.optimizer.state[updater.importance.w].items()}

    torch.manual_seed(1)
    resumed, resumed_updater = _setup(toy_net_class(), classification_data(8), classification_data(3, seed=1))
    load_dict = {"network": resumed.network, "optimizer": resumed.optimizer,
                 "importance": resumed_updater.importance, "importance_optimizer": resumed_updater.optimizer}
    CheckpointLoader(str(tmp_path / "final.pt"), load_dict).attach(resumed)
    resumed._fire_event(Events.STARTED)  # what CheckpointLoader listens to; the run itself is not needed
    assert torch.equal(resumed_updater.importance.w.detach(), saved_w)
    loaded_state = resumed_updater.optimizer.state[resumed_updater.importance.w]
    assert set(loaded_state) == set(saved_state) and saved_state["step"].item() == 4
    for key in saved_state:
        assert torch.equal(loaded_state[key], saved_state[key]), key
    assert resumed_updater.optimizer.param_groups[0]["weight_decay"] == 5e-4


def test_learned_importance_ranks_the_informative_modality_first(toy_net_class, classification_data):
    for informative in (0, 1):  # the ranking follows the data, whichever modality carries the signal
        torch.manual_seed(0)
        net = toy_net_class()
        data = classification_data(96, informative=informative, seed=2)
        meta = classification_data(16, informative=informative, seed=3)
        trainer, updater = _setup(net, data, meta, interval=4, steps=5, max_epochs=3, batch_size=8)
        updater.importance.w.data.zero_()  # start from equal importance
        trainer.run()
        p = updater.importance.probabilities()
        assert p[informative] > p[1 - informative] + 0.05, p


def test_empty_meta_loader_fails_at_attach_with_a_clear_message(toy_net_class, classification_data):
    importance = ModalityImportance(2)
    updater = MetaImportanceUpdater(importance, torch.optim.Adam(importance.parameters()), DataLoader([]))
    trainer, _ = _setup(toy_net_class(), classification_data(4), classification_data(1))
    with pytest.raises(ValueError, match="meta_loader is empty"):
        updater.attach(trainer)


def test_empty_unsized_meta_loader_fails_before_the_first_training_step(toy_net_class, classification_data):
    class Unsized:
        def __iter__(self):
            return iter(())

    trainer, updater = _setup(toy_net_class(), classification_data(4), classification_data(1))
    updater.meta_loader = Unsized()
    with pytest.raises(ValueError, match="meta_loader yielded no batch"):
        trainer.run()
    assert trainer.state.iteration == 1 and trainer.state.output is None


def test_meta_updater_rejects_bad_arguments(toy_net_class):
    importance, net = ModalityImportance(2), toy_net_class()
    with pytest.raises(ValueError, match="only the parameters of importance"):
        MetaImportanceUpdater(importance, torch.optim.Adam([importance.w, *net.parameters()]), [1])
    with pytest.raises(ValueError, match="interval"):
        MetaImportanceUpdater(importance, torch.optim.Adam(importance.parameters()), [1], interval=0)
    with pytest.raises(ValueError, match="modality_names"):
        MetaImportanceUpdater(importance, torch.optim.Adam(importance.parameters()), [1], modality_names=["a"])
    with pytest.raises(TypeError, match="importance"):
        MetaImportanceUpdater(net, torch.optim.Adam(importance.parameters()), [1])


def test_resumed_training_matches_an_uninterrupted_run(tmp_path, toy_net_class, classification_data):
    # the availability draw depends only on (seed, iteration) and w + its Adam state travel in the checkpoint,
    # so stopping after epoch 1 and resuming gives the same network and w as running 2 epochs at once
    data, meta = classification_data(8), classification_data(2, seed=1)

    def build(max_epochs):
        torch.manual_seed(0)
        trainer, updater = _setup(toy_net_class(), data, meta, interval=1, steps=2, max_epochs=max_epochs)
        updater.meta_loader = DataLoader(meta, batch_size=1)  # one pass per round: the cycle restarts identically
        objects = {"trainer": trainer, "network": trainer.network, "optimizer": trainer.optimizer,
                   "importance": updater.importance, "importance_optimizer": updater.optimizer}
        return trainer, updater, objects

    straight, straight_updater, _ = build(2)
    straight.run()

    first, _, objects = build(1)
    CheckpointSaver(str(tmp_path), objects, save_final=True, final_filename="epoch1.pt").attach(first)
    first.run()
    resumed, resumed_updater, objects = build(2)
    CheckpointLoader(str(tmp_path / "epoch1.pt"), objects).attach(resumed)
    resumed.run()

    assert resumed.state.iteration == straight.state.iteration == 4
    assert torch.equal(resumed_updater.importance.w, straight_updater.importance.w)
    for a, b in zip(resumed.network.parameters(), straight.network.parameters()):
        assert torch.equal(a, b)


def test_meta_round_under_ddp_averages_the_gradient_and_calls_the_unwrapped_module(
    tmp_path, toy_net_class, classification_data
):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        net = toy_net_class()
        ddp = torch.nn.parallel.DistributedDataParallel(net)
        trainer, updater = _setup(ddp, classification_data(8), classification_data(2, seed=1), interval=2)
        calls = []
        ddp.register_forward_pre_hook(lambda module, args: calls.append("ddp"))
        before = [p.detach().clone() for p in net.parameters()]
        trainer.state.iteration = 1
        w_before = updater.importance.w.detach().clone()
        updater(trainer)
        assert calls == [] and not torch.equal(updater.importance.w.detach(), w_before)
        assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
        trainer.run()  # the training forward goes through DDP, the feature tap is found through the wrapper
        assert "ddp" in calls
    finally:
        torch.distributed.destroy_process_group()
