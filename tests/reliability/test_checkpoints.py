"""Checkpoint loading refuses corrupted, foreign-configuration and code-carrying files; saving is atomic."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from ignite.engine import Engine
from monai.handlers import CheckpointLoader

from mckd.checkpoints import (
    AtomicCheckpointSaver,
    CheckpointError,
    SafeCheckpointLoader,
    load_checkpoint,
    load_objects,
    save_checkpoint,
)


class CodeOnLoad:
    """Unpickling this object would run ``open(marker, "w")``: the payload of a malicious checkpoint."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _good(tmp_path, toy):
    _, save_dict = toy.build(1)
    return save_checkpoint({"model": save_dict["model"]}, tmp_path / "good.pt"), save_dict


def _truncated(tmp_path, toy):
    good, _ = _good(tmp_path, toy)
    data = good.read_bytes()
    (tmp_path / "ckpt.pt").write_bytes(data[: len(data) // 2])


def _text(tmp_path, toy):
    (tmp_path / "ckpt.pt").write_text("not a checkpoint at all")


def _empty(tmp_path, toy):
    (tmp_path / "ckpt.pt").write_bytes(b"")


def _random(tmp_path, toy):
    (tmp_path / "ckpt.pt").write_bytes(bytes(range(256)) * 4)


@pytest.mark.parametrize(
    "damage, cause",
    [
        (_truncated, "is truncated or corrupted: an incomplete or damaged PyTorch zip archive"),
        (_text, "is a text file, not a PyTorch checkpoint (it starts with 'not a checkpoint at all')"),
        (_empty, "is empty (0 bytes), e.g. left by a save that was interrupted"),
        (_random, "is not a PyTorch checkpoint (neither a zip archive nor a pickle)"),
    ],
    ids=["truncated", "text", "empty", "random"],
)
def test_unreadable_checkpoint_is_a_clear_error_naming_the_file_and_the_cause(tmp_path, toy, damage, cause):
    damage(tmp_path, toy)
    path = tmp_path / "ckpt.pt"
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    assert str(caught.value).startswith(f"checkpoint '{path}' {cause}")


def test_truncated_legacy_format_checkpoint_is_named_as_such(tmp_path, toy):
    _, save_dict = toy.build(1)
    torch.save(save_dict["model"].state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    (tmp_path / "cut.pt").write_bytes((tmp_path / "legacy.pt").read_bytes()[:300])
    with pytest.raises(CheckpointError, match="truncated or corrupted: an incomplete or damaged PyTorch file of the "
                                              "legacy format"):
        load_checkpoint(tmp_path / "cut.pt")


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(CheckpointError, match=f"checkpoint '{tmp_path / 'absent.pt'}' does not exist"):
        load_checkpoint(tmp_path / "absent.pt")


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
def test_malicious_checkpoint_is_refused_and_its_code_never_runs(tmp_path, toy, legacy):
    marker = tmp_path / "pwned"
    _, save_dict = toy.build(1)
    payload = {"model": save_dict["model"].state_dict(), "extra": CodeOnLoad(str(marker))}
    torch.save(payload, tmp_path / "evil.pt", _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointError, match=r"was refused: torch.load\(weights_only=True\) refused a non-tensor "
                                              r"object \(io.open\)"):
        load_objects({"model": save_dict["model"]}, tmp_path / "evil.pt")
    engine = Engine(lambda e, b: None)
    SafeCheckpointLoader(tmp_path / "evil.pt", {"model": save_dict["model"]}).attach(engine)
    with pytest.raises(CheckpointError, match="refused"):
        engine.run([0])
    # MONAI's own loader (used by model-zoo bundles) also loads with weights_only=True
    engine = Engine(lambda e, b: None)
    CheckpointLoader(str(tmp_path / "evil.pt"), {"model": save_dict["model"]}).attach(engine)
    with pytest.raises(Exception, match="Weights only load failed"):
        engine.run([0])
    assert not marker.exists()


def test_checkpoint_of_another_network_configuration_names_keys_shapes_and_cause(tmp_path, toy):
    _, wide = toy.build(1, features=16)
    save_checkpoint({"model": wide["model"]}, tmp_path / "wide.pt")
    _, narrow = toy.build(1, features=8)
    before = {k: v.clone() for k, v in narrow["model"].state_dict().items()}
    with pytest.raises(CheckpointError) as caught:
        load_objects({"model": narrow["model"]}, tmp_path / "wide.pt")
    message = str(caught.value)
    assert f"checkpoint '{tmp_path / 'wide.pt'}' does not fit 'model'" in message
    assert "encoder.weight (checkpoint [16, 4], network [8, 4])" in message
    assert "saved with another configuration (a different backbone" in message
    assert all(torch.equal(before[k], v) for k, v in narrow["model"].state_dict().items())  # nothing half-loaded


def test_checkpoint_without_an_expected_entry_lists_what_it_holds(tmp_path, toy):
    _, save_dict = toy.build(1)
    save_checkpoint({"model": save_dict["model"], "optimizer": save_dict["optimizer"]}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"has no entry modality_weights \(it holds model, optimizer\): it was "
                                              r"written for another use"):
        load_objects({key: save_dict[key] for key in ("model", "modality_weights")}, tmp_path / "c.pt")


def test_optimizer_state_of_another_configuration_is_refused(tmp_path, toy):
    _, save_dict = toy.build(1)
    save_checkpoint({"optimizer": save_dict["optimizer"]}, tmp_path / "c.pt")
    other = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(CheckpointError, match=r"does not fit 'optimizer': parameter groups of sizes \[4\], the "
                                              r"optimiser has \[1\]"):
        load_objects({"optimizer": other}, tmp_path / "c.pt")


def test_non_strict_loading_accepts_missing_keys_but_never_shape_mismatches(tmp_path, toy):
    _, save_dict = toy.build(1)
    state = save_dict["model"].state_dict()
    torch.save({"model": {"encoder.weight": state["encoder.weight"]}}, tmp_path / "partial.pt")
    load_objects({"model": save_dict["model"]}, tmp_path / "partial.pt", strict=False)
    with pytest.raises(CheckpointError, match="missing keys encoder.bias, head.weight, head.bias"):
        load_objects({"model": save_dict["model"]}, tmp_path / "partial.pt")


def test_single_entry_load_dict_accepts_a_bare_state_dict(tmp_path, toy):
    _, save_dict = toy.build(1)
    network = save_dict["model"]
    saved = {key: torch.full_like(value, 0.5) for key, value in network.state_dict().items()}
    torch.save(saved, tmp_path / "bare.pt")
    load_objects({"model": network}, tmp_path / "bare.pt")
    assert all(torch.equal(network.state_dict()[key], value) for key, value in saved.items())


def _crash_midway(monkeypatch):
    """Make ``torch.save`` write some bytes, then fail, as a full disk or a kill would."""
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as handle:
            handle.truncate(100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)


def test_a_crash_while_saving_leaves_no_file_under_the_final_name_and_no_temporary(tmp_path, toy, monkeypatch):
    _, save_dict = toy.build(1)
    _crash_midway(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(save_dict, tmp_path / "ckpt" / "model.pt")
    assert list((tmp_path / "ckpt").iterdir()) == []


def test_saver_keeps_the_previous_checkpoint_when_the_next_save_crashes(tmp_path, toy, monkeypatch):
    trainer, save_dict = toy.build(3)
    saver = AtomicCheckpointSaver(str(tmp_path), save_dict, file_prefix="last", save_interval=1, n_saved=1)
    saver.attach(trainer)
    trainer.state.max_epochs = 1
    trainer.run()
    assert [p.name for p in tmp_path.iterdir()] == ["last_checkpoint_epoch=1.pt"]
    _crash_midway(monkeypatch)
    trainer.state.max_epochs = 2
    with pytest.raises(OSError, match="No space left"):
        trainer.run()
    # MONAI's CheckpointSaver (atomic=False, old file removed first) would leave nothing usable here
    assert [p.name for p in tmp_path.iterdir()] == ["last_checkpoint_epoch=1.pt"]
    assert load_checkpoint(tmp_path / "last_checkpoint_epoch=1.pt")["trainer"]["iteration"] == 4


def test_saver_removes_partial_files_a_killed_save_left_and_nothing_else(tmp_path, toy):
    partial = tmp_path / ".last_checkpoint_epoch=2.pt.k3j_x9.part.pt"
    kept = [tmp_path / "last_checkpoint_epoch=1.pt", tmp_path / ".hidden_notes", tmp_path / "run.part"]
    for path in (partial, *kept):
        path.write_bytes(b"x")
    trainer, save_dict = toy.build(1)
    AtomicCheckpointSaver(str(tmp_path), save_dict, file_prefix="last", save_interval=1, n_saved=1).attach(trainer)
    assert not partial.exists() and all(path.exists() for path in kept)


def test_saver_replaces_the_previous_file_and_writes_files_readable_by_others(tmp_path, toy):
    trainer, save_dict = toy.build(2)
    AtomicCheckpointSaver(
        str(tmp_path), save_dict, file_prefix="last", save_interval=1, n_saved=1, save_final=True,
        final_filename="model_final.pt",
    ).attach(trainer)
    trainer.run()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint_epoch=2.pt", "model_final.pt"]
    assert os.stat(tmp_path / "model_final.pt").st_mode & stat.S_IROTH
    _, fresh = toy.build(2)
    load_objects(fresh, tmp_path / "model_final.pt")
    assert fresh["trainer"].state.iteration == 8


def test_safe_loader_resumes_a_trainer_and_keeps_its_max_epochs(tmp_path, toy):
    trainer, save_dict = toy.build(1)
    trainer.run()
    save_checkpoint(save_dict, tmp_path / "c.pt")
    resumed, objects = toy.build(3)
    SafeCheckpointLoader(tmp_path / "c.pt", objects).attach(resumed)
    resumed.run()
    assert (resumed.state.iteration, resumed.state.max_epochs) == (12, 3)
    beyond, objects = toy.build(1)
    beyond.state.max_epochs = 0
    with pytest.raises(CheckpointError, match="beyond the engine's max_epochs"):
        SafeCheckpointLoader(tmp_path / "c.pt", objects)(beyond)
