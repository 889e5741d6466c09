"""The GPU check on a CPU machine: its arguments, the overrides it applies to train.json, the timeline it reports.

No GPU is lent to this project's tests, so the training and inference path itself is not run here (see
docs/performance.md); what can be checked without one is.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser

import benchmarks.gpu_check as gpu_check


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--iterations", "8"], "--iterations must be at least 10"),
        (["--iterations", "20", "--skip", "9"], "--skip must be between 0 and 8"),
        (["--cases", "5"], "--cases must be at least 6"),
        (["--workers", "-1"], "--workers must be >= 0"),
        (["--datalist", "x.json"], "--datalist and --dataset-dir go together"),
        (["--datalist", "missing.json", "--dataset-dir", "."], "is not a file"),
        (["--bundle", "."], "has no configs/train.json"),
        (["--device", "cpu"], "must be a CUDA device"),
    ],
)
def test_bad_arguments_are_rejected_with_the_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_overrides_name_existing_train_json_keys_and_leave_the_published_model_alone(capsys):
    assert gpu_check.main(["--dry-run", "--iterations", "30", "--workers", "2"]) == 0
    values = json.loads(capsys.readouterr().out)
    parser = ConfigParser()
    parser.read_config(str(gpu_check.BUNDLE / "configs" / "train.json"))
    assert all(key in parser for key in values), [key for key in values if key not in parser]
    assert values["warmup_iterations"] == values["meta_interval"] == 15 and values["num_workers"] == 2
    assert not {"backbone", "crop_size", "batch_size", "amp", "kd_weight", "meta_steps"} & set(values)


def test_without_cuda_the_check_stops_after_its_arguments(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == gpu_check.EXIT_NO_GPU
    assert "needs a CUDA device" in capsys.readouterr().err


def _fake_training(iterations: int, loss: float = 1.0) -> gpu_check.Timeline:
    """An ignite engine with decollated outputs, as MCKDTrainer's, timed by the check's timeline on the CPU."""

    def step(engine: Engine, batch: int) -> list[dict[str, float]]:
        value = loss if engine.state.iteration < iterations else float("nan")
        return [{"loss": value, "task_loss": value, "kd_loss": 0.0}] * 2

    engine = Engine(step)
    timeline = gpu_check.Timeline(torch.device("cpu"))
    timeline.attach(engine)
    engine.run(range(iterations), max_epochs=1)
    return timeline


def test_timeline_reports_both_phases_the_meta_rounds_the_wait_and_non_finite_losses():
    timeline = _fake_training(10)
    summary = timeline.summary(warmup=5, skip=1)
    assert set(summary["seconds_per_iteration"]) == {"all modalities", "random subsets"}
    assert len(summary["seconds_per_meta_round"]) == 2  # before iterations 1 and 6
    assert 0 <= summary["loader_wait_fraction"] < 1
    assert not summary["losses_finite"] and math.isnan(summary["loss_first_last"][1])
    assert len(timeline.rows) == 10 and all(row["total"] >= row["step"] for row in timeline.rows)


def test_timeline_refuses_outputs_without_the_losses():
    engine = Engine(lambda engine, batch: {"pred": 0.0})
    gpu_check.Timeline(torch.device("cpu")).attach(engine)
    with pytest.raises(KeyError, match="lacks the losses"):
        engine.run(range(2), max_epochs=1)
