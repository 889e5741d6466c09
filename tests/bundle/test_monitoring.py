"""Monitoring of a training run: TensorBoard scalars and the validation slice, MLflow, the importance trajectory."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mckd.brats.conventions import MODALITY_NAMES, REGIONS
from mckd.distillation import ModalityImportance
from mckd.monitoring import REGION_COLOURS, ImportanceTrajectoryWriter, TrainingScalars, slice_mosaic

SCALAR_TAGS = {
    "train_loss", "train_task_loss", "train_kd_loss", "train_lr", "train_mean_dice",
    *(f"importance/{name}" for name in MODALITY_NAMES),
    "val_mean_dice", *(f"val_mean_dice_{region.lower()}" for region in REGIONS),
}  # fmt: skip
IMAGE_TAG = "validation/slice"


@pytest.fixture(scope="module")
def tracked_run(bundle, brats_data, tmp_path_factory) -> SimpleNamespace:
    """A 4-iteration CPU training through the command line with ``--tracking mlflow`` (MONAI's default settings)."""
    root = tmp_path_factory.mktemp("tracked") / "run"
    configs = str(bundle.config_files("train.json", "cpu_small.json")).replace(" ", "")
    overrides = dict(bundle.small_run, bundle_root=str(root), data_list_file_path=str(brats_data.datalist))
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", configs, "--tracking", "mlflow"]
    command += [a for k, v in overrides.items() for a in (f"--{k}", str(v).replace(" ", ""))]
    result = subprocess.run(command, cwd=root.parent, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return SimpleNamespace(root=root, eval=root / "eval")


def _tensorboard_tags(folder: Path) -> tuple[set[str], dict[str, list]]:
    scalars, images = set(), {}
    for events in sorted(folder.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"images": 0, "scalars": 0})
        accumulator.Reload()
        scalars |= set(accumulator.Tags()["scalars"])
        images.update({tag: accumulator.Images(tag) for tag in accumulator.Tags()["images"]})
    return scalars, images


def test_tensorboard_has_loss_terms_learning_rate_importance_region_dice_and_a_validation_slice(tracked_run):
    scalars, images = _tensorboard_tags(tracked_run.eval)
    assert SCALAR_TAGS <= scalars, SCALAR_TAGS - scalars
    # one image per validation run (val_interval 1, 2 epochs): the trainer's epochs
    assert [event.step for event in images[IMAGE_TAG]] == [1, 2]
    width, height = images[IMAGE_TAG][0].width, images[IMAGE_TAG][0].height
    assert width == height * (len(MODALITY_NAMES) + 2)  # M modalities, reference, prediction side by side


def test_mlflow_records_the_run_in_its_sqlite_database(tracked_run):
    database = tracked_run.eval / "mlruns.db"
    assert database.is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{database}")
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    metrics = set(runs[0].data.metrics)
    assert {"train_loss", "val_mean_dice", *(f"importance/{name}" for name in MODALITY_NAMES)} <= metrics
    assert len(client.get_metric_history(runs[0].info.run_id, "train_loss")) == 4  # one value per iteration


def test_training_writes_the_importance_trajectory_after_every_meta_round(tracked_run):
    with (tracked_run.eval / "importance_trajectory.csv").open(newline="") as fp:
        rows = list(csv.reader(fp))
    assert rows[0] == ["iteration", *MODALITY_NAMES]
    assert [int(row[0]) for row in rows[1:]] == [1, 4]  # meta_interval 3: rounds before iterations 1 and 4
    assert all(abs(sum(float(p) for p in row[1:]) - 1) < 1e-4 for row in rows[1:])
    assert (tracked_run.eval / "importance_trajectory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_scalars_read_the_trainer_output_and_the_learning_rate():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.25)
    output = {"loss": torch.tensor(1.5), "task_loss": torch.tensor(1.0), "kd_loss": torch.tensor(5.0)}
    assert TrainingScalars(optimizer)(output) == {
        "train_loss": 1.5, "train_task_loss": 1.0, "train_kd_loss": 5.0, "train_lr": 0.25,
    }  # fmt: skip
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        TrainingScalars("sgd")


def test_the_slice_is_the_one_with_the_largest_tumour_and_shows_the_regions_in_their_colours():
    image = torch.rand(8, 6, 10, 12)
    label = torch.zeros(3, 6, 10, 12)
    label[REGIONS.index("WT"), 4, 2:8, 2:8] = 1  # slice 4 holds the tumour
    label[REGIONS.index("ET"), 4, 4:6, 4:6] = 1
    mosaic = slice_mosaic(image, label, torch.zeros_like(label), REGIONS, num_modalities=4)
    assert mosaic.shape == (10, 12 * 6, 3) and mosaic.dtype == np.uint8
    reference = mosaic[:, 4 * 12 : 5 * 12]
    assert tuple(reference[5, 5]) == REGION_COLOURS["ET"] and tuple(reference[2, 2]) == REGION_COLOURS["WT"]
    assert not mosaic[:, 5 * 12 :].any()  # empty prediction
    flair = image[0, 4].numpy()
    np.testing.assert_array_equal(
        mosaic[:, :12, 0], ((flair - flair.min()) / (flair.max() - flair.min()) * 255).astype(np.uint8)
    )


def test_a_resumed_run_keeps_the_trajectory_up_to_its_start(tmp_path):
    importance = ModalityImportance(2)
    writer = ImportanceTrajectoryWriter(importance, interval=2, output_dir=tmp_path, modality_names=["a", "b"])
    writer.rows = [[1.0, 0.5, 0.5], [3.0, 0.4, 0.6], [5.0, 0.3, 0.7]]
    writer.write()
    resumed = ImportanceTrajectoryWriter(importance, interval=2, output_dir=tmp_path, modality_names=["a", "b"])
    resumed._resume(SimpleNamespace(state=SimpleNamespace(iteration=3)))
    assert [row[0] for row in resumed.rows] == [1.0, 3.0]
    with pytest.raises(ValueError, match="modality_names must have 2 entries"):
        ImportanceTrajectoryWriter(importance, interval=2, output_dir=tmp_path, modality_names=["a"])
