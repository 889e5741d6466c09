"""Training survives interruption: SIGTERM/SIGINT save and exit cleanly; after SIGKILL a resume matches exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Events

from mckd.checkpoints import SafeCheckpointLoader, load_checkpoint, load_objects
from mckd.interrupt import GracefulInterrupt

from .conftest import HERE


def _start(ckpt_dir: Path, ready_at: int, *extra: str) -> tuple[subprocess.Popen, Path]:
    """Start the toy training script; it writes ``ready`` after iteration ``ready_at``."""
    ready = ckpt_dir.parent / "ready"
    command = [sys.executable, str(HERE / "toy_training.py"), "--ckpt-dir", str(ckpt_dir), "--epochs", "4",
               "--ready-at", str(ready_at), "--ready-file", str(ready), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), ready


def _wait_for(process: subprocess.Popen, ready: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the training script did not reach its ready point:\n{process.communicate()[0]}")
        time.sleep(0.02)


def _states(objects: dict) -> dict:
    """Everything a resume must restore, as comparable values."""
    return {
        "model": objects["model"].state_dict(),
        "optimizer": objects["optimizer"].state_dict(),
        "lr_scheduler": objects["lr_scheduler"].state_dict(),
        "modality_weights": objects["modality_weights"].state_dict(),
        "meta_optimizer": objects["meta_optimizer"].state_dict(),
        "iteration": objects["trainer"].state.iteration,
    }


def _assert_identical(a, b, where="state"):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _run_until(toy, iteration: int) -> dict:
    """An uninterrupted in-process run of the 4-epoch configuration, stopped after ``iteration``."""
    trainer, objects = toy.build(4)
    if iteration < 16:
        stop = Events.ITERATION_COMPLETED(once=iteration)
        trainer.add_event_handler(stop, lambda engine: engine.terminate(skip_completed=True))
    trainer.run()
    return objects


def test_sigterm_saves_a_checkpoint_at_the_end_of_the_iteration_and_exits_143(tmp_path, toy):
    process, ready = _start(tmp_path / "ckpt", 6, "--delay", "0.3")
    _wait_for(process, ready)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 128 + signal.SIGTERM == 143, output
    (line,) = [line for line in output.splitlines() if "received" in line]
    assert "SIGTERM received: stopped after iteration" in line and "interrupted.pt" in line
    assert "Traceback" not in output
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["interrupted.pt", "last_checkpoint_epoch=1.pt"]
    saved = load_checkpoint(tmp_path / "ckpt" / "interrupted.pt")
    stopped_at = saved["trainer"]["iteration"]
    assert 6 <= stopped_at < 16

    # the file holds exactly the state of an uninterrupted run after the same iteration
    _, restored = toy.build(4)
    load_objects(restored, tmp_path / "ckpt" / "interrupted.pt")
    _assert_identical(_states(restored), _states(_run_until(toy, stopped_at)))

    # and training resumes from it at the next iteration, to the end
    resumed, objects = toy.build(4)
    SafeCheckpointLoader(tmp_path / "ckpt" / "interrupted.pt", objects).attach(resumed)
    first = []
    resumed.add_event_handler(Events.ITERATION_STARTED(once=stopped_at + 1), lambda e: first.append(e.state.iteration))
    resumed.run()
    assert first == [stopped_at + 1] and resumed.state.iteration == 16


def test_sigkill_then_resume_from_the_last_checkpoint_matches_an_uninterrupted_run(tmp_path, toy):
    process, ready = _start(tmp_path / "ckpt", 10, "--delay", "0.5")
    _wait_for(process, ready)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    files = sorted((tmp_path / "ckpt").iterdir())
    assert [p.name for p in files] == ["last_checkpoint_epoch=2.pt"]  # no partial file, no temporary

    resumed, objects = toy.build(4)
    SafeCheckpointLoader(files[0], objects).attach(resumed)
    resumed.run()
    straight = _run_until(toy, 16)
    assert resumed.state.iteration == straight["trainer"].state.iteration == 16
    assert objects["lr_scheduler"].last_epoch == 16
    _assert_identical(_states(objects), _states(straight))


def test_sigint_in_process_stops_saves_and_exits_130_restoring_the_previous_handlers(tmp_path, toy):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    trainer, objects = toy.build(2)
    interrupt = GracefulInterrupt(objects, tmp_path)
    interrupt.attach(trainer)
    trainer.add_event_handler(Events.ITERATION_STARTED(once=3), lambda e: os.kill(os.getpid(), signal.SIGINT))
    trainer.run()
    assert trainer.state.iteration == 3
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert interrupt.saved_path == tmp_path / "interrupted.pt"
    assert load_checkpoint(interrupt.saved_path)["trainer"]["iteration"] == 3
    with pytest.raises(SystemExit) as caught:
        interrupt.exit_if_interrupted()
    assert caught.value.code == 130


def test_an_uninterrupted_run_writes_nothing_exits_0_and_restores_the_handlers(tmp_path, toy):
    before = signal.getsignal(signal.SIGTERM)
    trainer, objects = toy.build(1)
    interrupt = GracefulInterrupt(objects, tmp_path)
    interrupt.attach(trainer)
    trainer.run()
    interrupt.exit_if_interrupted()
    assert interrupt.exit_status == 0 and list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize(
    "kwargs, message",
    [({"save_dict": {}}, "save_dict"), ({"filename": "../x.pt"}, "plain file name"), ({"signals": ()}, "signals")],
)
def test_graceful_interrupt_rejects_bad_arguments_naming_them(tmp_path, toy, kwargs, message):
    arguments = {"save_dict": toy.build(1)[1], "save_dir": tmp_path, **kwargs}
    with pytest.raises(ValueError, match=message):
        GracefulInterrupt(**arguments)
