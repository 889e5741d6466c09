"""The importance probe: tilted p stays a distribution, and its gradient is the gradient of the objective it evaluates."""

from __future__ import annotations

import math

import pytest
import torch
from monai.bundle import ConfigParser

from benchmarks.importance_probe import CONFIGS, probe_run, tilted
from data_prep.brats import prepare_datalist
from data_prep.synthetic_brats import write_dataset


def test_tilted_raises_one_probability_and_lowers_the_others_equally():
    p = tilted(4, 2, 0.15)
    assert p.tolist() == pytest.approx([0.2, 0.2, 0.4, 0.2])
    assert tilted(4, 0, -0.15).tolist() == pytest.approx([0.1, 0.3, 0.3, 0.3])
    with pytest.raises(ValueError, match="outside"):
        tilted(4, 1, 0.8)


def test_probe_gradient_predicts_the_change_of_the_meta_loss_under_a_small_tilt(tmp_path):
    write_dataset(tmp_path / "cases", 8, "brats2018", (32, 32, 32), seed=0)
    datalist = tmp_path / "lists" / "datalist.json"
    prepare_datalist(tmp_path / "cases", datalist, split="kfold:4:0", seed=0)
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "cpu_small.json")])
    torch.manual_seed(0)
    (tmp_path / "run" / "models").mkdir(parents=True)
    torch.save(
        {"model": parser.get_parsed_content("network").state_dict()}, tmp_path / "run" / "models" / "model_final.pt"
    )

    tilt = 0.02
    result = probe_run(tmp_path / "run", datalist, crops=2, tilt=tilt, seed=0)

    assert result["modalities"] == ["FLAIR", "T1", "T1ce", "T2"]
    assert math.isfinite(result["uniform"])
    assert sum(result["gradient"].values()) == pytest.approx(0.0, abs=1e-6)  # softmax: only differences of w count
    # p tilted by t towards m is, to first order, w moved by t * M^2 / (M - 1) along m
    name = max(result["gradient"], key=lambda m: abs(result["gradient"][m]))
    predicted = result["gradient"][name] * tilt * 16 / 3
    assert result["towards"][name] - result["uniform"] == pytest.approx(predicted, rel=0.3)
