"""A diverged run is never scored: non-finite checkpoints are refused at load, non-finite outputs during evaluation,
and the bundle's evaluation command stops before writing a report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.inferers import SimpleInferer

from data_prep.brats import prepare_datalist
from data_prep.synthetic_brats import write_dataset
from mckd.checkpoints import CheckpointError, load_deployable, non_finite_entries
from mckd.evaluation import DivergedNetworkError, SubsetEvaluator

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundle" / "brats_mri_mckd_segmentation"


def test_non_finite_entries_name_the_tensors_and_count_their_bad_values():
    state = {"model": {"w": torch.tensor([1.0, float("nan"), float("inf")]), "step": torch.tensor(3)}, "lr": 0.1}
    assert non_finite_entries(state) == ["model.w (2 of 3 values)"]
    assert non_finite_entries({"opt": {"state": [torch.ones(2)]}}) == []


def test_a_checkpoint_with_nan_weights_is_refused_naming_file_and_tensor(tmp_path):
    net = torch.nn.Linear(2, 2)
    good, bad = tmp_path / "good.pt", tmp_path / "diverged.pt"
    torch.save({"model": net.state_dict()}, good)
    state = net.state_dict()
    state["weight"][0, 0] = float("nan")
    torch.save({"model": state}, bad)
    assert "model" in load_deployable(torch.nn.Linear(2, 2), good)
    with pytest.raises(CheckpointError, match=r"diverged\.pt' holds NaN or infinite values in model\.weight \(1 of 4"):
        load_deployable(torch.nn.Linear(2, 2), bad)


class _NaNNet(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 3, *x.shape[2:]), float("nan"))


def test_non_finite_network_output_stops_the_evaluation_naming_case_and_subset():
    batch = {"image": torch.zeros(1, 4, 8, 8, 8), "label": torch.zeros(1, 3, 8, 8, 8), "case_id": ["Brats18_X_1"]}
    evaluator = SubsetEvaluator(_NaNNet(), [batch], SimpleInferer(), modality_names=["FLAIR", "T1", "T1ce", "T2"])
    with pytest.raises(DivergedNetworkError, match="case 'Brats18_X_1' under subset 'FLAIR': its weights come from"):
        evaluator.run()


def test_bundle_evaluation_refuses_a_nan_checkpoint_and_writes_no_report(tmp_path):
    write_dataset(tmp_path / "cases", 8, "brats2018", (32, 32, 32), seed=0)
    datalist = tmp_path / "lists" / "datalist.json"
    prepare_datalist(tmp_path / "cases", datalist, split="ratio:0.25", seed=0)
    configs = [str(BUNDLE / "configs" / name) for name in ("train.json", "cpu_small.json")]
    parser = ConfigParser()
    parser.read_config(configs)
    state = parser.get_parsed_content("network").state_dict()
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first].view(-1)[0] = float("nan")
    checkpoint = tmp_path / "models" / "model.pt"
    checkpoint.parent.mkdir()
    torch.save({"model": state, "modality_weights": parser.get_parsed_content("modality_weights").state_dict()},
               checkpoint)
    command = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", str([*configs, str(BUNDLE / "configs" / "evaluate.json")]),
        "--bundle_root", str(tmp_path), "--data_list_file_path", str(datalist), "--num_workers", "0",
        "--sw_roi_size", "[32, 32, 32]",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=BUNDLE, check=False)
    assert done.returncode != 0
    assert f"checkpoint '{checkpoint}' holds NaN or infinite values in model.{first} (1 of" in done.stderr
    assert "the run that wrote it diverged" in done.stderr
    assert not (tmp_path / "eval").exists() or not any((tmp_path / "eval").iterdir())
